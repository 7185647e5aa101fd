package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// config is every setting of the gateway, read once at start from the
// environment and the command line (a flag wins over its variable) and
// then passed down by value. Nothing reads the environment afterwards.
type config struct {
	RedisHost, RedisUsername, RedisPassword string
	RedisPort                               int
	Host                                    string
	Port                                    int
	EventLoops                              int

	MaxChannels, MaxWildcards, MaxMessagesPerSecond int
	MaxMessageBytes                                 int
	EchoMaxMessageBytes                             int // only with Echo
	MaxConnections, MaxConnectionsPerIP             int
	HandshakeTimeout                                time.Duration
	AllowedOrigins                                  []string

	RequireAuth                                   bool
	APIKey, DefaultRole                           string
	JWTSecret, JWTPublicKeyFile                   string
	JWTIssuer, JWTAudience, JWTRoleClaim, ACLFile string

	SendQueueSize    int
	MaxOutboundBytes int
	PingInterval     time.Duration
	PingTimeout      time.Duration
	ShutdownTimeout  time.Duration

	SlowClientTimeout       time.Duration
	SlowClientMaxDrops      int
	MaxConnectionsPerSecond int
	CanaryInterval          time.Duration

	EmbeddedRedis bool
	Demo          bool
	Echo          bool
	LogLevel      string
	LogFormat     string
	AdminAddr     string
}

// setting binds one configuration field to its environment variable and
// flag. The table below is the single source of the names, defaults and
// help text.
type setting struct {
	env, flag, def, help string
	bind                 func(c *config) any // pointer to the field
}

// emptyMeans reports whether an empty value is a choice for s rather than
// no value: its help says what empty means, "(empty: disabled)". Such a
// variable set to "" overrides the default (ADMIN_ADDR= turns the admin
// listener off); any other variable set to "" is ignored, as if unset.
func (s setting) emptyMeans() bool { return strings.Contains(s.help, "(empty: ") }

var settings = []setting{
	{"REDIS_HOST", "redis-host", "localhost", "Redis host", func(c *config) any { return &c.RedisHost }},
	{"REDIS_PORT", "redis-port", "6379", "Redis port", func(c *config) any { return &c.RedisPort }},
	{"REDIS_USERNAME", "redis-username", "", "Redis ACL user name (empty: none)", func(c *config) any { return &c.RedisUsername }},
	{"REDIS_PASSWORD", "redis-password", "", "Redis password (empty: none)", func(c *config) any { return &c.RedisPassword }},
	{"REDIS_WS_GATEWAY_HOST", "host", "0.0.0.0", "address to listen on", func(c *config) any { return &c.Host }},
	{"REDIS_WS_GATEWAY_PORT", "port", "8889", "port to listen on (0 picks a free one)", func(c *config) any { return &c.Port }},
	{"ADMIN_ADDR", "admin-addr", "127.0.0.1:8890", "host:port of the private admin listener: /metrics (Prometheus) and /debug/pprof; keep it off the public network (empty: disabled)", func(c *config) any { return &c.AdminAddr }},
	{"EVENT_LOOPS", "event-loops", "0", "gnet event loops (0: one per CPU)", func(c *config) any { return &c.EventLoops }},
	{"MAX_CHANNELS_PER_CLIENT", "max-channels-per-client", "50", "channels and patterns per connection", func(c *config) any { return &c.MaxChannels }},
	{"MAX_WILDCARD_SUBSCRIPTIONS", "max-wildcard-subscriptions", "5", "pattern subscriptions per connection", func(c *config) any { return &c.MaxWildcards }},
	{"MAX_MESSAGES_PER_SECOND", "max-messages-per-second", "1000", "inbound client messages per second per connection", func(c *config) any { return &c.MaxMessagesPerSecond }},
	{"MAX_MESSAGE_BYTES", "max-message-bytes", "65536", "largest inbound client message, fragments included (1009 above)", func(c *config) any { return &c.MaxMessageBytes }},
	{"MAX_CONNECTIONS", "max-connections", "0", "open WebSocket connections in all (0: unlimited; 503 above)", func(c *config) any { return &c.MaxConnections }},
	{"MAX_CONNECTIONS_PER_IP", "max-connections-per-ip", "0", "open WebSocket connections per client address (0: unlimited; 503 above)", func(c *config) any { return &c.MaxConnectionsPerIP }},
	{"HANDSHAKE_TIMEOUT", "handshake-timeout", "5s", "time from accept to a completed upgrade", func(c *config) any { return &c.HandshakeTimeout }},
	{"ALLOWED_ORIGINS", "allowed-origins", "", "comma-separated Origins allowed to upgrade (empty: any)", func(c *config) any { return &c.AllowedOrigins }},
	{"REQUIRE_AUTH", "require-auth", "false", "refuse clients without a token", func(c *config) any { return &c.RequireAuth }},
	{"GATEWAY_API_KEY", "api-key", "", "API key granting role admin (empty: disabled)", func(c *config) any { return &c.APIKey }},
	{"DEFAULT_ROLE", "default-role", "user", "role of clients without a token when auth is not required", func(c *config) any { return &c.DefaultRole }},
	{"JWT_SECRET", "jwt-secret", "", "HMAC secret for HS256/384/512 tokens (empty: disabled)", func(c *config) any { return &c.JWTSecret }},
	{"JWT_PUBLIC_KEY_FILE", "jwt-public-key-file", "", "PEM public key for RS256, ES256 or EdDSA tokens (empty: disabled)", func(c *config) any { return &c.JWTPublicKeyFile }},
	{"JWT_ISSUER", "jwt-issuer", "", "required iss claim (empty: not checked)", func(c *config) any { return &c.JWTIssuer }},
	{"JWT_AUDIENCE", "jwt-audience", "", "required aud claim (empty: not checked)", func(c *config) any { return &c.JWTAudience }},
	{"JWT_ROLE_CLAIM", "jwt-role-claim", "role", "claim holding the role", func(c *config) any { return &c.JWTRoleClaim }},
	{"ACL_FILE", "acl-file", "", "JSON file of role → allowed channel patterns (empty: built-in roles)", func(c *config) any { return &c.ACLFile }},
	{"SEND_QUEUE_SIZE", "send-queue-size", "1024", "frames queued per connection before drops", func(c *config) any { return &c.SendQueueSize }},
	{"MAX_OUTBOUND_BYTES", "max-outbound-bytes", "262144", "bytes buffered per socket before its queue stops draining", func(c *config) any { return &c.MaxOutboundBytes }},
	{"PING_INTERVAL", "ping-interval", "25s", "ping a connection silent for this long", func(c *config) any { return &c.PingInterval }},
	{"PING_TIMEOUT", "ping-timeout", "60s", "close a pinged connection silent for this long", func(c *config) any { return &c.PingTimeout }},
	{"SHUTDOWN_TIMEOUT", "shutdown-timeout", "10s", "time allowed for close handshakes at shutdown", func(c *config) any { return &c.ShutdownTimeout }},
	{"SLOW_CLIENT_TIMEOUT", "slow-client-timeout", "10s", "close with 1013 a connection whose queue keeps overflowing this long (0: never)", func(c *config) any { return &c.SlowClientTimeout }},
	{"SLOW_CLIENT_MAX_DROPS", "slow-client-max-drops", "10000", "close with 1013 a connection that lost more frames than this (0: never)", func(c *config) any { return &c.SlowClientMaxDrops }},
	{"MAX_CONNECTIONS_PER_SECOND", "max-connections-per-second", "0", "accepted upgrades per second, 503 with Retry-After beyond (0: unlimited)", func(c *config) any { return &c.MaxConnectionsPerSecond }},
	{"CANARY_INTERVAL", "canary-interval", "2s", "period of the pub/sub canary; 3 missed means the link is broken (0: off)", func(c *config) any { return &c.CanaryInterval }},
	{"EMBEDDED_REDIS", "embedded-redis", "false", "run an in-process Redis (miniredis) for trying the gateway out; never a fallback", func(c *config) any { return &c.EmbeddedRedis }},
	{"DEMO", "demo", "false", "publish demo ticks on market:tick:*", func(c *config) any { return &c.Demo }},
	{"ECHO", "echo", "false", "serve /echo for RFC 6455 conformance testing (never in production)", func(c *config) any { return &c.Echo }},
	{"ECHO_MAX_MESSAGE_BYTES", "echo-max-message-bytes", "17825792", "largest message on /echo, fragments included; only with -echo (Autobahn's 9.x cases send 16 MiB)", func(c *config) any { return &c.EchoMaxMessageBytes }},
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
	return c, c.validate()
}

func (c *config) validate() error {
	if c.EventLoops == 0 {
		c.EventLoops = runtime.NumCPU()
	}
	checks := []struct {
		bad  bool
		name string
		msg  string
	}{
		{c.RedisPort < 1 || c.RedisPort > 65535, "REDIS_PORT", "must be a port number (1-65535)"},
		{c.Port < 0 || c.Port > 65535, "REDIS_WS_GATEWAY_PORT", "must be a port number (0-65535)"},
		{c.EventLoops < 1 || c.EventLoops > 256, "EVENT_LOOPS", "must be between 1 and 256"},
		{c.MaxChannels < 1, "MAX_CHANNELS_PER_CLIENT", "must be at least 1"},
		{c.MaxWildcards < 0, "MAX_WILDCARD_SUBSCRIPTIONS", "must not be negative"},
		// The rate limit counts in whole nanoseconds per message (GCRA).
		{c.MaxMessagesPerSecond < 1 || c.MaxMessagesPerSecond > 1_000_000, "MAX_MESSAGES_PER_SECOND", "must be between 1 and 1000000"},
		{c.MaxMessageBytes < 256 || c.MaxMessageBytes > 64<<20, "MAX_MESSAGE_BYTES", "must be between 256 and 67108864"},
		{c.EchoMaxMessageBytes < 256 || c.EchoMaxMessageBytes > 1<<30, "ECHO_MAX_MESSAGE_BYTES", "must be between 256 and 1073741824"},
		{c.MaxConnections < 0, "MAX_CONNECTIONS", "must not be negative"},
		{c.MaxConnectionsPerIP < 0, "MAX_CONNECTIONS_PER_IP", "must not be negative"},
		{c.HandshakeTimeout <= 0, "HANDSHAKE_TIMEOUT", "must be positive"},
		{c.SendQueueSize < 1 || c.SendQueueSize > 1<<20, "SEND_QUEUE_SIZE", "must be between 1 and 1048576"},
		{c.MaxOutboundBytes < 4096, "MAX_OUTBOUND_BYTES", "must be at least 4096"},
		{c.PingInterval <= 0, "PING_INTERVAL", "must be positive"},
		{c.PingTimeout <= c.PingInterval, "PING_TIMEOUT", "must be longer than PING_INTERVAL"},
		{c.ShutdownTimeout <= 0, "SHUTDOWN_TIMEOUT", "must be positive"},
		{c.SlowClientTimeout < 0, "SLOW_CLIENT_TIMEOUT", "must not be negative"},
		{c.SlowClientMaxDrops < 0, "SLOW_CLIENT_MAX_DROPS", "must not be negative"},
		{c.MaxConnectionsPerSecond < 0, "MAX_CONNECTIONS_PER_SECOND", "must not be negative"},
		{c.CanaryInterval < 0, "CANARY_INTERVAL", "must not be negative"},
		{c.DefaultRole == "", "DEFAULT_ROLE", "must not be empty"},
		{c.LogLevel != "debug" && c.LogLevel != "info" && c.LogLevel != "warn" && c.LogLevel != "error", "LOG_LEVEL", "must be debug, info, warn or error"},
		{c.LogFormat != "text" && c.LogFormat != "json", "LOG_FORMAT", "must be text or json"},
		{c.AdminAddr != "" && !isHostPort(c.AdminAddr), "ADMIN_ADDR", "must be host:port with a port number (or empty)"},
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
	return nil
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
