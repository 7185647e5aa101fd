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

// MaxLoops is the most event loops gnet runs (its connection ids hold a
// loop index of 8 bits); the server makes one loop state and one fanout
// shard per loop.
const MaxLoops = 256

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
	if c.Loops > MaxLoops {
		return fmt.Errorf("%w: loops must be at most %d (got %d)", ErrConfig, MaxLoops, c.Loops)
	}
	for _, p := range positive {
		if p.v < 1 {
			return fmt.Errorf("%w: %s must be at least 1 (got %d)", ErrConfig, p.name, p.v)
		}
	}
	switch {
	case c.MaxWildcards < 0:
		return fmt.Errorf("%w: max wildcard subscriptions must not be negative", ErrConfig)
	case c.MaxConnections < 0 || c.MaxConnectionsPerIP < 0:
		return fmt.Errorf("%w: connection limits must not be negative", ErrConfig)
	case c.HandshakeTimeout <= 0:
		return fmt.Errorf("%w: handshake timeout must be positive", ErrConfig)
	case c.PingInterval <= 0 || c.PingTimeout <= 0:
		return fmt.Errorf("%w: ping interval and timeout must be positive", ErrConfig)
	case c.EchoMaxMessageBytes < 0:
		return fmt.Errorf("%w: echo max message bytes must not be negative", ErrConfig)
	}
	if c.Echo && c.EchoMaxMessageBytes == 0 {
		c.EchoMaxMessageBytes = DefaultEchoMaxMessageBytes
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = 8 << 10
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}
