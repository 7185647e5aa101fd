package server

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"
)

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("server: invalid configuration")

// DefaultCloseLinger is Config.CloseLinger when none is set.
const DefaultCloseLinger = 2 * time.Second

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
	// CloseLinger bounds a connection's close once the gateway has
	// decided it (lingering close): its close frame waits behind what
	// gnet still buffers for the client, then the write side is shut
	// down and what the client still sends is read and discarded until
	// its close frame or EOF. The connection is closed CloseLinger after
	// the decision, after the client last read some of what it was owed,
	// or after the half-close, whichever is latest. 0 means
	// DefaultCloseLinger.
	CloseLinger time.Duration
	// MaxConnectionsPerSecond paces accepted upgrades; beyond it an
	// upgrade is answered 503 with Retry-After. 0 = unlimited.
	MaxConnectionsPerSecond int
	// ShutdownCloseRate bounds how fast Shutdown closes connections
	// (1001 frames per second over all loops): the closes are spread over
	// open/ShutdownCloseRate seconds, or over the first half of the
	// shutdown window when that is shorter. 0 spreads them over that half
	// whatever their number. A faster pace makes a restart shorter (the
	// process exits sooner, and clients find the next instance before
	// their backoff has grown); a slower one spares the peers behind a
	// load balancer a burst of reconnects.
	ShutdownCloseRate int
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

	// TrustedProxies are the addresses (CIDRs, or single IPs) whose
	// PROXY protocol header and X-Forwarded-For give the client's
	// address; the same headers from anyone else are refused (400).
	TrustedProxies []string

	// StatsPrivate keeps /stats off the public port (404 there): its
	// counters include admin-only channels' traffic. The caller serves
	// Server.Stats elsewhere (cmd on its admin listener).
	StatsPrivate bool

	Version string
	Logger  *slog.Logger
}

// Bounds checked by Check.
const (
	// maxLoops is the most event loops gnet runs (its connection ids hold
	// a loop index of 8 bits); the server makes one loop state and one
	// fanout shard per loop.
	maxLoops = 256
	// maxMessagesPerSecond: the rate limit counts whole nanoseconds per
	// message (GCRA).
	maxMessagesPerSecond = 1_000_000
	minMessageBytes      = 256
	maxMessageBytes      = 64 << 20
	maxEchoMessageBytes  = 1 << 30
	minOutboundBytes     = 4096
	maxCloseLinger       = time.Minute
)

// Check returns the first field whose value is out of its bounds and the
// rule it breaks ("MaxMessageBytes", "must be between 256 and 67108864"),
// or two empty strings. It is the one place these bounds are checked:
// Validate reports its answer as an error, and cmd/gateway under the name
// of the setting bound to the field.
func (c *Config) Check() (field, rule string) {
	for _, n := range []struct {
		field string
		v     int
	}{
		{"MaxHeaderBytes", c.MaxHeaderBytes},
		{"MaxWildcards", c.MaxWildcards},
		{"MaxConnections", c.MaxConnections},
		{"MaxConnectionsPerIP", c.MaxConnectionsPerIP},
		{"MaxConnectionsPerSecond", c.MaxConnectionsPerSecond},
		{"ShutdownCloseRate", c.ShutdownCloseRate},
		{"MaxSockets", c.MaxSockets},
		{"MaxNewStreamsPerSecond", c.MaxNewStreamsPerSecond},
		{"MaxPartialBytes", c.MaxPartialBytes},
	} {
		if n.v < 0 {
			return n.field, "must not be negative"
		}
	}
	switch {
	case c.Loops < 1 || c.Loops > maxLoops:
		return "Loops", "must be between 1 and 256"
	case c.MaxMessageBytes < minMessageBytes || c.MaxMessageBytes > maxMessageBytes:
		return "MaxMessageBytes", "must be between 256 and 67108864"
	case c.MaxChannels < 1:
		return "MaxChannels", "must be at least 1"
	case c.MaxMessagesPerSecond < 1 || c.MaxMessagesPerSecond > maxMessagesPerSecond:
		return "MaxMessagesPerSecond", "must be between 1 and 1000000"
	case c.HandshakeTimeout <= 0:
		return "HandshakeTimeout", "must be positive"
	case c.MaxOutboundBytes < minOutboundBytes:
		return "MaxOutboundBytes", "must be at least 4096"
	case c.PingInterval <= 0:
		return "PingInterval", "must be positive"
	case c.PingTimeout <= c.PingInterval:
		return "PingTimeout", "must be longer than PingInterval"
	case c.SlowClientTimeout < 0:
		return "SlowClientTimeout", "must not be negative"
	case c.EchoMaxMessageBytes != 0 && (c.EchoMaxMessageBytes < minMessageBytes || c.EchoMaxMessageBytes > maxEchoMessageBytes):
		return "EchoMaxMessageBytes", "must be between 256 and 1073741824"
	case c.MaxNewStreamsPerSecond > maxMessagesPerSecond:
		// The bucket counts in whole nanoseconds per stream.
		return "MaxNewStreamsPerSecond", "must be between 0 and 1000000"
	case c.PartialMessageTimeout < 0:
		return "PartialMessageTimeout", "must not be negative"
	case c.CloseLinger < 0 || c.CloseLinger > maxCloseLinger:
		return "CloseLinger", "must be between 0 and 1m"
	}
	for _, p := range c.TrustedProxies {
		if _, err := parseTrusted(p); err != nil {
			return "TrustedProxies", "must be CIDRs (10.0.0.0/8) or IP addresses"
		}
	}
	if c.MaxPartialBytes > 0 {
		// Partial messages are bounded in all, so the bound must hold
		// the largest single message or that message could never be
		// received.
		largest := c.MaxMessageBytes
		if c.Echo {
			largest = max(largest, cmp.Or(c.EchoMaxMessageBytes, DefaultEchoMaxMessageBytes))
		}
		if c.MaxPartialBytes < largest {
			return "MaxPartialBytes", "must be at least MaxMessageBytes (and EchoMaxMessageBytes when Echo is on)"
		}
	}
	return "", ""
}

// Validate checks the configuration (Check) and fills the defaults of
// fields left zero.
func (c *Config) Validate() error {
	if field, rule := c.Check(); field != "" {
		return fmt.Errorf("%w: %s %s", ErrConfig, field, rule)
	}
	if c.Echo && c.EchoMaxMessageBytes == 0 {
		c.EchoMaxMessageBytes = DefaultEchoMaxMessageBytes
	}
	if c.CloseLinger == 0 {
		c.CloseLinger = DefaultCloseLinger
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = 8 << 10
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// parseTrusted reads one TrustedProxies entry: a CIDR, or an IP address
// standing for itself alone.
func parseTrusted(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	ip = ip.Unmap()
	return netip.PrefixFrom(ip, ip.BitLen()), nil
}
