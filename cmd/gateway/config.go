package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/wsgw/gateway/auth"
	"github.com/wsgw/gateway/fanout"
	"github.com/wsgw/gateway/server"
)

// config is every setting of the gateway, read once at start from the
// environment and the command line (a flag wins over its variable) and
// then passed down by value. Nothing reads the environment afterwards.
//
// The packages' configurations are held as they are: the settings table
// binds straight into Server, Fanout and Auth, and serve hands those on
// without copying a field. The fields below them are cmd's own.
type config struct {
	Server server.Config
	Fanout fanout.Config
	Auth   auth.Config // JWTPublicKeyPEM is read from JWTPublicKeyFile by serve
	// Streams configures durable channels (docs/DURABILITY.md): the
	// server's stream readers (server.EnableDurable).
	Streams fanout.StreamConfig

	RedisHost        string // with RedisPort: Fanout.RedisAddr (derive)
	RedisPort        int
	Host             string // with Port: Server.Addr (derive)
	Port             int
	ACLFile          string
	JWTPublicKeyFile string
	ShutdownTimeout  time.Duration
	EmbeddedRedis    bool
	// EmbeddedRedisFile keeps the embedded Redis's streams between runs
	// (loaded at start, saved at a graceful stop).
	EmbeddedRedisFile string
	Demo              bool
	LogLevel          string
	LogFormat         string
	AdminAddr         string
	// Procs is the GOMAXPROCS serve sets, or 0 to leave the runtime's
	// (the GOMAXPROCS environment variable was set). See procsFor.
	Procs int
}

// setting binds one configuration field to its environment variable and
// flag.
type setting struct {
	env, flag, def, help string
	bind                 func(c *config) any // pointer to the field
}

// emptyMeans reports whether an empty value is a choice for s rather than
// no value: its help says what empty means, "(empty: disabled)". Such a
// variable set to "" overrides the default (ADMIN_ADDR= turns the admin
// listener off); any other variable set to "" is ignored, as if unset.
func (s setting) emptyMeans() bool { return strings.Contains(s.help, "(empty: ") }

// settings is the single source of the settings' names, defaults and help
// texts: -help and docs/CONFIGURATION.md are made from it.
//
// To add a setting: add its field to the package's Config (server.Config,
// fanout.Config, auth.Config), check its bounds in that package's Check
// (server.Config.Check, fanout.Config.Check: the one place they are
// checked; the field at fault is reported under the setting's variable),
// and add one line here whose bind returns a pointer to the field. Nothing
// else: loadConfig fills the field, serve passes the package's Config on as
// it is. Only a setting that cmd itself uses gets a field in config above
// and a check in validate; a value computed from settings goes in derive.
// A help text with "(empty: ...)" makes an empty variable a value (see
// emptyMeans). Then regenerate docs/CONFIGURATION.md:
// go test ./cmd/gateway -run TestConfigurationDoc -update
var settings = []setting{
	{"REDIS_HOST", "redis-host", "localhost", "Redis host", func(c *config) any { return &c.RedisHost }},
	{"REDIS_PORT", "redis-port", "6379", "Redis port", func(c *config) any { return &c.RedisPort }},
	{"REDIS_USERNAME", "redis-username", "", "Redis ACL user name (empty: none)", func(c *config) any { return &c.Fanout.RedisUsername }},
	{"REDIS_PASSWORD", "redis-password", "", "Redis password (empty: none)", func(c *config) any { return &c.Fanout.RedisPassword }},
	{"REDIS_URL", "redis-url", "", "Redis URL, replacing REDIS_HOST, REDIS_PORT, REDIS_USERNAME and REDIS_PASSWORD: redis://[user:pass@]host:port, rediss:// (TLS), unix:///path, Sentinel redis://s1:26379?addr=s2:26379&master_set=mymaster, Cluster redis://n1:7000?addr=n2:7001 (logged with the password masked; empty: none)", func(c *config) any { return &c.Fanout.RedisURL }},
	{"REDIS_TLS_CA_FILE", "redis-tls-ca-file", "", "PEM CA certificates to verify Redis with; turns TLS on for REDIS_HOST, needs rediss:// in REDIS_URL (empty: the system's)", func(c *config) any { return &c.Fanout.TLSCAFile }},
	{"REDIS_TLS_CERT_FILE", "redis-tls-cert-file", "", "PEM client certificate for Redis, with REDIS_TLS_KEY_FILE (empty: none)", func(c *config) any { return &c.Fanout.TLSCertFile }},
	{"REDIS_TLS_KEY_FILE", "redis-tls-key-file", "", "PEM private key of REDIS_TLS_CERT_FILE (empty: none)", func(c *config) any { return &c.Fanout.TLSKeyFile }},
	{"REDIS_TLS_SERVER_NAME", "redis-tls-server-name", "", "name Redis certificates must carry (empty: each node's host)", func(c *config) any { return &c.Fanout.TLSServerName }},
	{"SHARDED_CHANNELS", "sharded-channels", "", "comma-separated globs of the channels publishers send with SPUBLISH: followed with SSUBSCRIBE on the Cluster shard owning each; a pattern that can match one is refused (empty: none)", func(c *config) any { return &c.Fanout.ShardedChannels }},
	{"REDIS_WS_GATEWAY_HOST", "host", "0.0.0.0", "address to listen on", func(c *config) any { return &c.Host }},
	{"REDIS_WS_GATEWAY_PORT", "port", "8889", "port to listen on (0 picks a free one)", func(c *config) any { return &c.Port }},
	{"ADMIN_ADDR", "admin-addr", "127.0.0.1:8890", "host:port of the private admin listener: /metrics (Prometheus) and /debug/pprof; keep it off the public network (empty: disabled)", func(c *config) any { return &c.AdminAddr }},
	{"COALESCE_DELAY", "coalesce-delay", "0s", "hold the first message after a quiet spell this long before waking an event loop, so that those right behind it are written in the same wake: less CPU per message when messages come one at a time to few sockets each, at up to this much latency (0: off; at most 10ms)", func(c *config) any { return &c.Fanout.CoalesceDelay }},
	{"EVENT_LOOPS", "event-loops", "0", "gnet event loops (0: one per CPU)", func(c *config) any { return &c.Server.Loops }},
	{"MAX_CHANNELS_PER_CLIENT", "max-channels-per-client", "50", "channels and patterns per connection", func(c *config) any { return &c.Server.MaxChannels }},
	{"MAX_WILDCARD_SUBSCRIPTIONS", "max-wildcard-subscriptions", "5", "pattern subscriptions per connection", func(c *config) any { return &c.Server.MaxWildcards }},
	{"MAX_MESSAGES_PER_SECOND", "max-messages-per-second", "1000", "inbound client messages per second per connection", func(c *config) any { return &c.Server.MaxMessagesPerSecond }},
	{"MAX_MESSAGE_BYTES", "max-message-bytes", "65536", "largest inbound client message, fragments included (1009 above)", func(c *config) any { return &c.Server.MaxMessageBytes }},
	{"MAX_CONNECTIONS", "max-connections", "0", "open WebSocket connections in all (0: unlimited; 503 above)", func(c *config) any { return &c.Server.MaxConnections }},
	{"MAX_CONNECTIONS_PER_IP", "max-connections-per-ip", "0", "open WebSocket connections per client address (0: unlimited; 503 above)", func(c *config) any { return &c.Server.MaxConnectionsPerIP }},
	{"HANDSHAKE_TIMEOUT", "handshake-timeout", "5s", "time from accept to a completed upgrade", func(c *config) any { return &c.Server.HandshakeTimeout }},
	{"ALLOWED_ORIGINS", "allowed-origins", "", "comma-separated Origins allowed to upgrade (empty: any)", func(c *config) any { return &c.Server.AllowedOrigins }},
	{"TRUSTED_PROXIES", "trusted-proxies", "", "comma-separated CIDRs of load balancers whose PROXY protocol header (v1, v2) and X-Forwarded-For give the client's address; the same headers from any other address are refused with 400 (empty: none)", func(c *config) any { return &c.Server.TrustedProxies }},
	{"REQUIRE_AUTH", "require-auth", "false", "refuse clients without a token", func(c *config) any { return &c.Auth.RequireAuth }},
	{"GATEWAY_API_KEY", "api-key", "", "API key granting role admin (empty: disabled)", func(c *config) any { return &c.Auth.APIKey }},
	{"DEFAULT_ROLE", "default-role", "user", "role of clients without a token when auth is not required", func(c *config) any { return &c.Auth.DefaultRole }},
	{"JWT_SECRET", "jwt-secret", "", "HMAC secret for HS256/384/512 tokens (empty: disabled)", func(c *config) any { return &c.Auth.JWTSecret }},
	{"JWT_PUBLIC_KEY_FILE", "jwt-public-key-file", "", "PEM public key for RS256, ES256 or EdDSA tokens (empty: disabled)", func(c *config) any { return &c.JWTPublicKeyFile }},
	{"JWT_ISSUER", "jwt-issuer", "", "required iss claim (empty: not checked)", func(c *config) any { return &c.Auth.Issuer }},
	{"JWT_AUDIENCE", "jwt-audience", "", "required aud claim (empty: not checked)", func(c *config) any { return &c.Auth.Audience }},
	{"JWT_ROLE_CLAIM", "jwt-role-claim", "role", "claim holding the role", func(c *config) any { return &c.Auth.RoleClaim }},
	{"ACL_FILE", "acl-file", "", "JSON file of role → allowed channel patterns (empty: built-in roles)", func(c *config) any { return &c.ACLFile }},
	{"SEND_QUEUE_SIZE", "send-queue-size", "1024", "frames queued per connection before drops", func(c *config) any { return &c.Fanout.SendQueue }},
	{"MAX_OUTBOUND_BYTES", "max-outbound-bytes", "262144", "bytes buffered per socket before its queue stops draining", func(c *config) any { return &c.Server.MaxOutboundBytes }},
	{"PING_INTERVAL", "ping-interval", "25s", "ping a connection silent for this long", func(c *config) any { return &c.Server.PingInterval }},
	{"PING_TIMEOUT", "ping-timeout", "60s", "close a pinged connection silent for this long", func(c *config) any { return &c.Server.PingTimeout }},
	{"SHUTDOWN_TIMEOUT", "shutdown-timeout", "10s", "time allowed for the whole shutdown: paced closes and their handshakes, then the upstream unsubscribe", func(c *config) any { return &c.ShutdownTimeout }},
	{"SLOW_CLIENT_TIMEOUT", "slow-client-timeout", "10s", "close with 1013 a connection whose queue keeps overflowing this long (0: never)", func(c *config) any { return &c.Server.SlowClientTimeout }},
	{"SLOW_CLIENT_MAX_DROPS", "slow-client-max-drops", "10000", "close with 1013 a connection that lost more frames than this (0: never)", func(c *config) any { return &c.Server.SlowClientMaxDrops }},
	{"CLOSE_LINGER", "close-linger", "2s", "how long a connection the gateway closes waits for the client to read the close frame and answer, what the client still sends being read and discarded (restarted while the client makes progress, at most five times in all)", func(c *config) any { return &c.Server.CloseLinger }},
	{"SHUTDOWN_CLOSE_RATE", "shutdown-close-rate", "5000", "closes (1001) per second during a shutdown, within the first half of SHUTDOWN_TIMEOUT (0: spread over that half whatever their number)", func(c *config) any { return &c.Server.ShutdownCloseRate }},
	{"MAX_CONNECTIONS_PER_SECOND", "max-connections-per-second", "0", "accepted upgrades per second, 503 with Retry-After beyond (0: unlimited)", func(c *config) any { return &c.Server.MaxConnectionsPerSecond }},
	{"CANARY_INTERVAL", "canary-interval", "2s", "period of the pub/sub canary; 3 missed means the link is broken (0: off)", func(c *config) any { return &c.Fanout.CanaryInterval }},
	{"MAX_NEW_STREAMS_PER_SECOND", "max-new-streams-per-second", "20", "channels a connection may newly subscribe to per second, granted or not, with a burst of MAX_CHANNELS_PER_CLIENT (stream_rate_limited beyond; 0: unlimited)", func(c *config) any { return &c.Server.MaxNewStreamsPerSecond }},
	{"MAX_STREAMS", "max-streams", "100000", "upstream subscriptions (channels plus patterns) in all; a subscribe that needs more is answered server_busy (0: unlimited)", func(c *config) any { return &c.Fanout.MaxStreams }},
	{"MAX_PENDING_REQUESTS", "max-pending-requests", "10000", "subscribe and unsubscribe requests waiting for Redis; beyond, requests are answered server_busy (0: unlimited)", func(c *config) any { return &c.Fanout.MaxPending }},
	{"PARTIAL_MESSAGE_TIMEOUT", "partial-message-timeout", "10s", "time an inbound message may take from its first byte to its last (fragments, or a frame still arriving); 1008 after it (0: unbounded)", func(c *config) any { return &c.Server.PartialMessageTimeout }},
	{"MAX_PARTIAL_MESSAGE_BYTES", "max-partial-message-bytes", "33554432", "bytes of unfinished inbound messages held across all connections; the connection that passes it is closed with 1009 (0: unbounded)", func(c *config) any { return &c.Server.MaxPartialBytes }},
	{"STATS_ADMIN_ONLY", "stats-admin-only", "false", "serve /stats on ADMIN_ADDR only (404 on the public port): its counters include admin-only channels", func(c *config) any { return &c.Server.StatsPrivate }},
	{"STREAM_CHANNELS", "stream-channels", "", "comma-separated globs of the durable channels, read from Redis Streams and resumable with since (docs/DURABILITY.md) (empty: none)", func(c *config) any { return &c.Streams.Channels }},
	{"STREAM_KEY_PREFIX", "stream-key-prefix", "stream:", "prefix of a durable channel's stream key: the key is prefix + channel (empty: the channel itself)", func(c *config) any { return &c.Streams.KeyPrefix }},
	{"STREAM_FIELD", "stream-field", "data", "field of a stream entry sent as the frame's data (an entry without it is sent with data null)", func(c *config) any { return &c.Streams.Field }},
	{"MAX_REPLAY", "max-replay", "1000", "most entries one durable subscription replays on resume, across the channels of a pattern; more missed gives replay_truncated and the newest ones", func(c *config) any { return &c.Streams.MaxReplay }},
	{"STREAM_READER_KEYS", "stream-reader-keys", "64", "most stream keys one reader (one blocking Redis connection) follows; a pattern's keys stay in one reader", func(c *config) any { return &c.Streams.ReaderKeys }},
	{"STREAM_DISCOVERY", "stream-discovery", "auto", "how a durable pattern finds keys created later: auto (SCAN, plus keyspace notifications when Redis has class Kn on) or scan", func(c *config) any { return &c.Streams.Discovery }},
	{"STREAM_SCAN_INTERVAL", "stream-scan-interval", "30s", "period of the SCAN sweep for stream keys created after a durable pattern was subscribed", func(c *config) any { return &c.Streams.ScanInterval }},
	{"EMBEDDED_REDIS", "embedded-redis", "false", "run an in-process Redis (miniredis) for trying the gateway out; never a fallback", func(c *config) any { return &c.EmbeddedRedis }},
	{"EMBEDDED_REDIS_FILE", "embedded-redis-file", "", "with EMBEDDED_REDIS: file where the embedded Redis keeps its streams between runs, loaded at start and saved at a graceful stop, so that durable channels resume across a restart (empty: nothing kept)", func(c *config) any { return &c.EmbeddedRedisFile }},
	{"DEMO", "demo", "false", "publish demo ticks on market:tick:* and durable demo signals (XADD) on indicators:signal:DEMO; with STREAM_CHANNELS empty, indicators:signal:* is made durable", func(c *config) any { return &c.Demo }},
	{"ECHO", "echo", "false", "serve /echo for RFC 6455 conformance testing (never in production)", func(c *config) any { return &c.Server.Echo }},
	{"ECHO_MAX_MESSAGE_BYTES", "echo-max-message-bytes", "17825792", "largest message on /echo, fragments included; only with -echo (Autobahn's 9.x cases send 16 MiB)", func(c *config) any { return &c.Server.EchoMaxMessageBytes }},
	{"LOG_LEVEL", "log-level", "info", "debug, info, warn or error", func(c *config) any { return &c.LogLevel }},
	{"LOG_FORMAT", "log-format", "text", "text or json", func(c *config) any { return &c.LogFormat }},
}

// errConfig is wrapped by every configuration error.
var errConfig = errors.New("config")

// fieldValue adapts a config field to flag.Value, so that environment
// values and flags go through the same parser and error messages.
type fieldValue struct {
	ptr any
}

func (v fieldValue) String() string {
	switch p := v.ptr.(type) {
	case *string:
		return *p
	case *int:
		return strconv.Itoa(*p)
	case *uint64:
		return strconv.FormatUint(*p, 10)
	case *[]byte:
		return string(*p)
	case *bool:
		return strconv.FormatBool(*p)
	case *time.Duration:
		return p.String()
	case *[]string:
		return strings.Join(*p, ",")
	}
	return ""
}

func (v fieldValue) Set(s string) error {
	switch p := v.ptr.(type) {
	case *string:
		*p = s
	case *int:
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("not an integer: %q", s)
		}
		*p = n
	case *uint64:
		n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
		if err != nil {
			return fmt.Errorf("not a non-negative integer: %q", s)
		}
		*p = n
	case *[]byte:
		*p = []byte(s)
	case *bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("not a boolean: %q", s)
		}
		*p = b
	case *time.Duration:
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("not a duration (like 5s or 250ms): %q", s)
		}
		*p = d
	case *[]string:
		*p = nil
		for _, part := range strings.Split(s, ",") {
			if part = strings.TrimSpace(part); part != "" {
				*p = append(*p, part)
			}
		}
	}
	return nil
}

// IsBoolFlag lets boolean flags be given without a value.
func (v fieldValue) IsBoolFlag() bool { _, ok := v.ptr.(*bool); return ok }

// loadConfig reads defaults, then the environment, then args.
//
// Flags are registered while each field still holds its default, so
// -help shows the defaults rather than the environment's values; and args
// are parsed before a bad environment value is reported, so -help and
// -version work whatever the environment holds. flag.ErrHelp is wrapped.
// lookupEnv is os.LookupEnv: a variable set to "" is told from an unset
// one (see setting.emptyMeans).
func loadConfig(args []string, lookupEnv func(string) (string, bool), fs *flag.FlagSet) (config, error) {
	var c config
	for _, s := range settings {
		v := fieldValue{s.bind(&c)}
		if err := v.Set(s.def); err != nil {
			panic("bad default for " + s.env + ": " + err.Error())
		}
		fs.Var(v, s.flag, s.help+" (env "+s.env+")")
	}
	var envErr error
	for _, s := range settings {
		if e, ok := lookupEnv(s.env); ok && (e != "" || s.emptyMeans()) {
			if err := (fieldValue{s.bind(&c)}).Set(e); err != nil && envErr == nil {
				envErr = fmt.Errorf("%w: %s: %v", errConfig, s.env, err)
			}
		}
	}
	if err := fs.Parse(args); err != nil {
		return c, fmt.Errorf("%w: %w", errConfig, err)
	}
	if envErr != nil {
		return c, envErr
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("%w: unexpected arguments %q", errConfig, fs.Args())
	}
	c.derive()
	if _, set := lookupEnv("GOMAXPROCS"); !set {
		c.Procs = procsFor(runtime.GOMAXPROCS(0), c.Server.Loops)
	}
	return c, c.validate()
}

// procsFor is the GOMAXPROCS for loops event loops where the runtime's
// default is def: at least one more than the loops. A gnet loop waits in
// a blocking epoll_wait(2) made as an ordinary system call, so an idle
// loop holds its P the whole time. With as many Ps as loops, the Redis
// readers and the shards find no P free whenever the loops are idle: each
// message then waits for the runtime's monitor to take a P back from a
// loop's system call (it polls every 20 us while it keeps doing so) and
// the loop, woken, waits to get one back. One spare P lets them run at
// once; more than one only adds spinning threads (measured in
// docs/BENCHMARKS.md, "Many channels, few readers each").
func procsFor(def, loops int) int {
	return max(def, loops+1)
}

// derive computes, in this one place, the values that no setting holds as
// such, and the fixed ones.
func (c *config) derive() {
	if c.Server.Loops == 0 {
		c.Server.Loops = runtime.NumCPU()
	}
	c.Server.Addr = net.JoinHostPort(c.Host, strconv.Itoa(c.Port))
	c.Server.Version = version
	c.Fanout.RedisAddr = net.JoinHostPort(c.RedisHost, strconv.Itoa(c.RedisPort))
	c.Fanout.RESP2 = c.EmbeddedRedis      // miniredis speaks no RESP3 pub/sub
	c.Fanout.Standalone = c.EmbeddedRedis // nor is it a Cluster, though it answers CLUSTER SLOTS
	if c.Demo && len(c.Streams.Channels) == 0 {
		c.Streams.Channels = []string{demoDurable}
	}
	// A client that leaves and comes straight back keeps the upstream
	// subscription.
	c.Fanout.Linger = 500 * time.Millisecond
	c.Auth.Leeway = 5 * time.Second
}

// validate checks cmd's own settings, then has each package check its
// fields (server.Config.Check, fanout.Config.Check, fanout.StreamConfig.Check), naming the setting
// bound to a field at fault. The authentication settings are
// checked against the ACL when serve builds the authenticator.
func (c *config) validate() error {
	checks := []struct {
		bad  bool
		name string
		msg  string
	}{
		{c.RedisPort < 1 || c.RedisPort > 65535, "REDIS_PORT", "must be a port number (1-65535)"},
		{c.Port < 0 || c.Port > 65535, "REDIS_WS_GATEWAY_PORT", "must be a port number (0-65535)"},
		{c.ShutdownTimeout <= 0, "SHUTDOWN_TIMEOUT", "must be positive"},
		{c.Auth.DefaultRole == "", "DEFAULT_ROLE", "must not be empty"},
		{c.LogLevel != "debug" && c.LogLevel != "info" && c.LogLevel != "warn" && c.LogLevel != "error", "LOG_LEVEL", "must be debug, info, warn or error"},
		{c.LogFormat != "text" && c.LogFormat != "json", "LOG_FORMAT", "must be text or json"},
		{c.AdminAddr != "" && !isHostPort(c.AdminAddr), "ADMIN_ADDR", "must be host:port with a port number (or empty)"},
		{c.Server.StatsPrivate && c.AdminAddr == "", "STATS_ADMIN_ONLY", "needs ADMIN_ADDR: /stats would be served nowhere"},
		{c.EmbeddedRedis && c.Fanout.RedisURL != "", "EMBEDDED_REDIS", "cannot be used with REDIS_URL"},
		{c.EmbeddedRedisFile != "" && !c.EmbeddedRedis, "EMBEDDED_REDIS_FILE", "needs EMBEDDED_REDIS"},
	}
	for _, k := range checks {
		if k.bad {
			return fmt.Errorf("%w: %s %s", errConfig, k.name, k.msg)
		}
	}
	if c.JWTPublicKeyFile != "" {
		if _, err := os.Stat(c.JWTPublicKeyFile); err != nil {
			return fmt.Errorf("%w: JWT_PUBLIC_KEY_FILE: %v", errConfig, err)
		}
	}
	if field, rule := c.Server.Check(); field != "" {
		return c.fieldError(&c.Server, field, rule)
	}
	if field, rule := c.Fanout.Check(); field != "" {
		return c.fieldError(&c.Fanout, field, rule)
	}
	if field, rule := c.Streams.Check(); field != "" {
		return c.fieldError(&c.Streams, field, rule)
	}
	// Read here, once, so that a bad file stops the start naming its
	// setting; the certificates travel in c.Fanout.
	if field, err := c.Fanout.LoadTLS(); err != nil {
		return fmt.Errorf("%w: %s: %v", errConfig, c.settingOf(&c.Fanout, field), err)
	}
	return nil
}

// fieldError reports a package's Check in settings' terms: the field, and
// any field the rule names ("must be longer than PingInterval"), by the
// variable of the setting bound to it.
func (c *config) fieldError(pkg any, field, rule string) error {
	words := strings.Fields(rule)
	for i, w := range words {
		words[i] = c.settingOf(pkg, w)
	}
	return fmt.Errorf("%w: %s %s", errConfig, c.settingOf(pkg, field), strings.Join(words, " "))
}

// settingOf names the variable of the setting bound to the field called
// field of *pkg (&c.Server, &c.Fanout or &c.Streams): the one whose bind returns that
// field's address. Any other word (a field no setting holds, such as one
// derive computes) is returned as it is.
func (c *config) settingOf(pkg any, field string) string {
	f := reflect.ValueOf(pkg).Elem().FieldByName(field)
	if !f.IsValid() || !f.CanInterface() {
		return field // no such field, or an unexported one no setting binds
	}
	ptr := f.Addr().Interface()
	for _, s := range settings {
		if s.bind(c) == ptr {
			return s.env
		}
	}
	return field
}

// isHostPort reports whether a is host:port with a numeric port (the host
// may be empty, meaning every interface).
func isHostPort(a string) bool {
	_, port, err := net.SplitHostPort(a)
	if err != nil {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 0 && n <= 65535
}
