package server

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("server: invalid configuration")

// DefaultEchoMaxMessageBytes is the /echo message limit when none is set:
// Autobahn's largest messages (cases 9.1.6, 9.2.6) are 16 MiB, plus room.
const DefaultEchoMaxMessageBytes = 17 << 20

// Config is the server's part of the gateway configuration, validated
// once at start and passed by value.
type Config struct {
	// Addr is host:port to listen on; port 0 picks a free port (see
	// Server.Addr).
	Addr string
	// Loops is the number of gnet event loops (and fanout shards).
	Loops int

	MaxMessageBytes      int           // one inbound message, fragments included (1009 above)
	MaxHeaderBytes       int           // HTTP request head during the upgrade (431 above)
	MaxChannels          int           // per connection, exact plus patterns
	MaxWildcards         int           // patterns per connection
	MaxMessagesPerSecond int           // inbound commands per connection (token bucket)
	MaxConnections       int           // 0 = unlimited
	MaxConnectionsPerIP  int           // 0 = unlimited
	HandshakeTimeout     time.Duration // from accept to completed upgrade
	AllowedOrigins       []string      // empty allows any Origin
	// MaxOutboundBytes bounds what gnet buffers for one socket; beyond
	// it the loop stops draining the connection's queue, which then
	// fills and drops.
	MaxOutboundBytes int
	PingInterval     time.Duration
	PingTimeout      time.Duration
	// A connection whose queue keeps overflowing for SlowClientTimeout,
	// or that has lost more than SlowClientMaxDrops frames in all, is
	// closed with 1013. 0 disables either check.
	SlowClientTimeout  time.Duration
	SlowClientMaxDrops uint64
	// MaxConnectionsPerSecond paces accepted upgrades; beyond it an
	// upgrade is answered 503 with Retry-After. 0 = unlimited.
	MaxConnectionsPerSecond int
	// MaxSockets bounds accepted TCP connections, upgraded or not. It
	// keeps the process below its file-descriptor limit: gnet v2.10
	// treats an EMFILE from accept(2) as fatal and stops its engine, so
	// the gateway must never let accept run out of descriptors. cmd sets
	// it from RLIMIT_NOFILE minus a reserve; 0 = unlimited.
	MaxSockets int
	// Echo serves /echo (RFC 6455 conformance testing). Off by
	// default; never on in a normal start.
	Echo bool
	// EchoMaxMessageBytes replaces MaxMessageBytes on /echo connections:
	// Autobahn's 9.x cases send messages of up to 16 MiB, far above what
	// the gateway accepts from its clients. Used only when Echo is on;
	// 0 means DefaultEchoMaxMessageBytes.
	EchoMaxMessageBytes int

	// MaxNewStreamsPerSecond bounds the channels a connection newly
	// subscribes to per second, with a burst of MaxChannels (beyond it:
	// stream_rate_limited). Each may be a new upstream stream, so this
	// is what keeps subscribe/unsubscribe churn from flooding Redis.
	// 0 = unlimited.
	MaxNewStreamsPerSecond int

	// PartialMessageTimeout bounds the time from the first byte of an
	// inbound message to its last: a fragmented message, or a frame
	// still arriving. Past it the connection is closed with 1008. 0 =
	// unbounded.
	PartialMessageTimeout time.Duration
	// MaxPartialBytes bounds the bytes of unfinished inbound messages
	// held across all connections (reassembled fragments and frames
	// still arriving); the connection whose bytes pass it is closed with
	// 1009. 0 = unbounded. It must hold one largest message.
	MaxPartialBytes int

	// StatsPrivate keeps /stats off the public port (404 there): its
	// counters include admin-only channels' traffic. The caller serves
	// Server.Stats elsewhere (cmd on its admin listener).
	StatsPrivate bool

	Version string
	Logger  *slog.Logger
}

// Validate checks the configuration and fills derived defaults.
func (c *Config) Validate() error {
	positive := []struct {
		name string
		v    int
	}{
		{"loops", c.Loops},
		{"max message bytes", c.MaxMessageBytes},
		{"max channels per client", c.MaxChannels},
		{"max messages per second", c.MaxMessagesPerSecond},
		{"max outbound bytes", c.MaxOutboundBytes},
	}
	for _, p := range positive {
		if p.v < 1 {
			return fmt.Errorf("%w: %s must be at least 1 (got %d)", ErrConfig, p.name, p.v)
		}
	}
	switch {
	case c.MaxWildcards < 0:
		return fmt.Errorf("%w: max wildcard subscriptions must not be negative", ErrConfig)
	case c.MaxNewStreamsPerSecond < 0 || c.MaxNewStreamsPerSecond > 1_000_000:
		// The bucket counts in whole nanoseconds per stream.
		return fmt.Errorf("%w: max new streams per second must be between 0 and 1000000", ErrConfig)
	case c.MaxConnections < 0 || c.MaxConnectionsPerIP < 0:
		return fmt.Errorf("%w: connection limits must not be negative", ErrConfig)
	case c.HandshakeTimeout <= 0:
		return fmt.Errorf("%w: handshake timeout must be positive", ErrConfig)
	case c.PingInterval <= 0 || c.PingTimeout <= 0:
		return fmt.Errorf("%w: ping interval and timeout must be positive", ErrConfig)
	case c.EchoMaxMessageBytes < 0:
		return fmt.Errorf("%w: echo max message bytes must not be negative", ErrConfig)
	case c.PartialMessageTimeout < 0:
		return fmt.Errorf("%w: partial message timeout must not be negative", ErrConfig)
	case c.MaxPartialBytes < 0:
		return fmt.Errorf("%w: max partial message bytes must not be negative", ErrConfig)
	}
	if c.Echo && c.EchoMaxMessageBytes == 0 {
		c.EchoMaxMessageBytes = DefaultEchoMaxMessageBytes
	}
	if c.MaxPartialBytes > 0 {
		largest := c.MaxMessageBytes
		if c.Echo {
			largest = max(largest, c.EchoMaxMessageBytes)
		}
		if c.MaxPartialBytes < largest {
			return fmt.Errorf("%w: max partial message bytes (%d) must hold the largest message (%d)", ErrConfig, c.MaxPartialBytes, largest)
		}
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = 8 << 10
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}
