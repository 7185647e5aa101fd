package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/wsgw/gateway/fanout"
)

var update = flag.Bool("update", false, "rewrite docs/CONFIGURATION.md from the settings table")

const configDocPath = "../../docs/CONFIGURATION.md"

// configDoc renders docs/CONFIGURATION.md from the settings table, so the
// document cannot drift from the code: TestConfigurationDoc fails until
// it is regenerated.
func configDoc() []byte {
	var b bytes.Buffer
	b.WriteString(`# Configuration

<!-- Generated from the settings table in cmd/gateway/config.go by
     go test ./cmd/gateway -run TestConfigurationDoc -update
     Do not edit by hand: TestConfigurationDoc fails when this file and the code differ. -->

Every setting is an environment variable and a command-line flag; a flag
wins over its variable. Settings are read once at start. ` + "`gateway -help`" + `
prints the same list with the defaults, ` + "`gateway -version`" + ` the version,
and ` + "`gateway -healthcheck`" + ` probes ` + "`/health`" + ` on the configured port (exit 0
when it answers 200; the container image has no curl for its health check).

Types: *duration* is Go's syntax (` + "`250ms`, `5s`, `1m30s`" + `); *boolean* is
` + "`true`/`false` (also `1`/`0`); a boolean flag may be given bare (`-demo`)" + `;
*list* is comma-separated. An invalid value stops the gateway at start with
an error naming the variable.

| variable | flag | type | default | meaning |
|---|---|---|---|---|
`)
	for _, s := range settings {
		def := "`" + s.def + "`"
		if s.def == "" {
			def = "*(empty)*"
		}
		fmt.Fprintf(&b, "| `%s` | `-%s` | %s | %s | %s |\n",
			s.env, s.flag, settingType(s), def, strings.ReplaceAll(s.help, "|", `\|`))
	}
	b.WriteString(`
Operations: the metrics on ` + "`ADMIN_ADDR`" + ` and sizing for 50,000+ sockets are in
[TUNING.md](TUNING.md); service files are in [deploy/](deploy/).
`)
	return b.Bytes()
}

func settingType(s setting) string {
	switch s.bind(new(config)).(type) {
	case *int, *uint64:
		return "integer"
	case *bool:
		return "boolean"
	case *time.Duration:
		return "duration"
	case *[]string:
		return "list"
	}
	return "string"
}

func TestConfigurationDoc(t *testing.T) {
	want := configDoc()
	if *update {
		if err := os.WriteFile(configDocPath, want, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", configDocPath)
		return
	}
	got, err := os.ReadFile(configDocPath)
	if err != nil {
		t.Fatalf("%v (generate it: go test ./cmd/gateway -run TestConfigurationDoc -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("docs/CONFIGURATION.md differs from the settings table in config.go; "+
			"regenerate it: go test ./cmd/gateway -run TestConfigurationDoc -update\n--- want ---\n%s", want)
	}
}

// TestSettingsTable: the table's names are unique and every default
// parses, so -help and the document list something loadConfig accepts.
func TestSettingsTable(t *testing.T) {
	envs, flags := map[string]bool{}, map[string]bool{}
	for _, s := range settings {
		t.Run(s.env, func(t *testing.T) {
			if envs[s.env] || flags[s.flag] {
				t.Fatalf("duplicate variable or flag: %s / -%s", s.env, s.flag)
			}
			envs[s.env], flags[s.flag] = true, true
			if s.help == "" {
				t.Fatal("no help text")
			}
			if err := (fieldValue{s.bind(new(config))}).Set(s.def); err != nil {
				t.Fatalf("default %q: %v", s.def, err)
			}
			if typ := settingType(s); s.emptyMeans() && typ != "string" && typ != "list" {
				t.Fatalf("the help says what empty means, but a %s cannot be empty", typ)
			}
		})
	}
}

// load runs loadConfig with env as the environment.
func load(args []string, env map[string]string) (config, error) {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return loadConfig(args, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, fs)
}

func TestLoadConfig(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(t *testing.T, c config)
	}{
		{"defaults", nil, nil, func(t *testing.T, c config) {
			want := []struct {
				name      string
				got, want any
			}{
				{"RedisHost", c.RedisHost, "localhost"},
				{"RedisPort", c.RedisPort, 6379},
				{"Host", c.Host, "0.0.0.0"},
				{"Port", c.Port, 8889},
				{"AdminAddr", c.AdminAddr, "127.0.0.1:8890"},
				{"EventLoops", c.Server.Loops, runtime.NumCPU()}, // 0 means one per CPU
				{"Procs", c.Procs, max(runtime.GOMAXPROCS(0), runtime.NumCPU()+1)},
				{"MaxChannels", c.Server.MaxChannels, 50},
				{"SendQueueSize", c.Fanout.SendQueue, 1024},
				{"PingTimeout", c.Server.PingTimeout, 60 * time.Second},
				{"RequireAuth", c.Auth.RequireAuth, false},
				{"AllowedOrigins", c.Server.AllowedOrigins, []string(nil)},
				{"LogLevel", c.LogLevel, "info"},
				{"LogFormat", c.LogFormat, "text"},
			}
			for _, w := range want {
				if !reflect.DeepEqual(w.got, w.want) {
					t.Errorf("%s = %#v, want %#v", w.name, w.got, w.want)
				}
			}
		}},
		{"environment", nil, map[string]string{
			"REDIS_HOST":        "redis.internal",
			"REDIS_PORT":        "6380",
			"ADMIN_ADDR":        "",
			"ALLOWED_ORIGINS":   "https://a.example, ,https://b.example",
			"REQUIRE_AUTH":      "true",
			"HANDSHAKE_TIMEOUT": "250ms",
			"EVENT_LOOPS":       "3",
			"LOG_FORMAT":        "json",
		}, func(t *testing.T, c config) {
			if c.RedisHost != "redis.internal" || c.RedisPort != 6380 || !c.Auth.RequireAuth ||
				c.Server.HandshakeTimeout != 250*time.Millisecond || c.Server.Loops != 3 || c.LogFormat != "json" {
				t.Errorf("environment not applied: %+v", c)
			}
			if want := []string{"https://a.example", "https://b.example"}; !reflect.DeepEqual(c.Server.AllowedOrigins, want) {
				t.Errorf("AllowedOrigins = %q, want %q", c.Server.AllowedOrigins, want)
			}
			// Empty means something for ADMIN_ADDR (disabled).
			if c.AdminAddr != "" {
				t.Errorf("AdminAddr = %q, want empty (disabled)", c.AdminAddr)
			}
		}},
		{"GOMAXPROCS set: left to the runtime", nil, map[string]string{"GOMAXPROCS": "1", "EVENT_LOOPS": "4"}, func(t *testing.T, c config) {
			if c.Procs != 0 {
				t.Errorf("Procs = %d with GOMAXPROCS set, want 0 (the runtime's)", c.Procs)
			}
		}},
		{"spare P beyond the event loops", nil, map[string]string{"EVENT_LOOPS": "64"}, func(t *testing.T, c config) {
			if c.Procs != 65 {
				t.Errorf("Procs = %d for 64 event loops, want 65", c.Procs)
			}
		}},
		{"empty variables", nil, map[string]string{
			"REDIS_PORT":     "", // no meaning when empty: the default
			"LOG_LEVEL":      "",
			"JWT_ROLE_CLAIM": "",
		}, func(t *testing.T, c config) {
			if c.RedisPort != 6379 || c.LogLevel != "info" || c.Auth.RoleClaim != "role" || c.AdminAddr != "127.0.0.1:8890" {
				t.Errorf("empty variables did not leave the defaults: port %d level %q claim %q admin %q",
					c.RedisPort, c.LogLevel, c.Auth.RoleClaim, c.AdminAddr)
			}
		}},
		{"flag overrides environment",
			[]string{"-redis-port", "6381", "-require-auth=false", "-admin-addr=", "-log-level", "debug"},
			map[string]string{"REDIS_PORT": "6380", "REQUIRE_AUTH": "true", "ADMIN_ADDR": "0.0.0.0:9000", "LOG_LEVEL": "warn"},
			func(t *testing.T, c config) {
				if c.RedisPort != 6381 || c.Auth.RequireAuth || c.AdminAddr != "" || c.LogLevel != "debug" {
					t.Errorf("flags did not win: port %d auth %v admin %q level %q", c.RedisPort, c.Auth.RequireAuth, c.AdminAddr, c.LogLevel)
				}
			}},
		{"durable channels", nil, map[string]string{
			"STREAM_CHANNELS":      "engine:signal:*, engine:decision:*",
			"STREAM_KEY_PREFIX":    "",
			"MAX_REPLAY":           "5000",
			"STREAM_SCAN_INTERVAL": "2s",
		}, func(t *testing.T, c config) {
			want := fanout.StreamConfig{
				Channels: []string{"engine:signal:*", "engine:decision:*"}, KeyPrefix: "", Field: "data",
				MaxReplay: 5000, ReaderKeys: 64, Discovery: "auto", ScanInterval: 2 * time.Second,
			}
			if !reflect.DeepEqual(c.Streams, want) {
				t.Errorf("Streams = %+v, want %+v", c.Streams, want)
			}
		}},
		{"bare boolean flag", []string{"-demo"}, nil, func(t *testing.T, c config) {
			if !c.Demo {
				t.Error("-demo did not set Demo")
			}
			// The demo's durable channel, unless STREAM_CHANNELS says.
			if want := []string{"indicators:signal:*"}; !reflect.DeepEqual(c.Streams.Channels, want) {
				t.Errorf("-demo durable channels %q, want %q", c.Streams.Channels, want)
			}
		}},
		{"demo with durable channels of its own", []string{"-demo"}, map[string]string{"STREAM_CHANNELS": "engine:signal:*"}, func(t *testing.T, c config) {
			if want := []string{"engine:signal:*"}; !reflect.DeepEqual(c.Streams.Channels, want) {
				t.Errorf("durable channels %q, want %q", c.Streams.Channels, want)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := load(tt.args, tt.env)
			if err != nil {
				t.Fatalf("loadConfig: %v", err)
			}
			tt.check(t, c)
		})
	}
}

// TestLoadConfigErrors: every bad value is refused with an error that
// names the variable (or, for a flag, the flag) that holds it.
func TestLoadConfigErrors(t *testing.T) {
	type bad struct {
		name string
		args []string
		env  map[string]string
		want string
	}
	tests := []bad{
		{"port range", nil, map[string]string{"REDIS_PORT": "0"}, "REDIS_PORT"},
		{"listen port range", nil, map[string]string{"REDIS_WS_GATEWAY_PORT": "70000"}, "REDIS_WS_GATEWAY_PORT"},
		{"event loops", nil, map[string]string{"EVENT_LOOPS": "-1"}, "EVENT_LOOPS"},
		{"max channels", nil, map[string]string{"MAX_CHANNELS_PER_CLIENT": "0"}, "MAX_CHANNELS_PER_CLIENT"},
		{"message rate above the GCRA resolution", nil, map[string]string{"MAX_MESSAGES_PER_SECOND": "2000000"}, "MAX_MESSAGES_PER_SECOND"},
		{"send queue", nil, map[string]string{"SEND_QUEUE_SIZE": "0"}, "SEND_QUEUE_SIZE"},
		// Bounds the packages check (server.Config.Check,
		// fanout.Config.Check), reported under the setting's name.
		{"message size below the bound", nil, map[string]string{"MAX_MESSAGE_BYTES": "100"}, "MAX_MESSAGE_BYTES must be between 256 and 67108864"},
		{"message size above the bound", []string{"-max-message-bytes", "67108865"}, nil, "MAX_MESSAGE_BYTES must be between 256 and 67108864"},
		{"send queue above the bound", nil, map[string]string{"SEND_QUEUE_SIZE": "1048577"}, "SEND_QUEUE_SIZE must be between 1 and 1048576"},
		{"outbound bytes", nil, map[string]string{"MAX_OUTBOUND_BYTES": "4095"}, "MAX_OUTBOUND_BYTES must be at least 4096"},
		{"echo message size", nil, map[string]string{"ECHO_MAX_MESSAGE_BYTES": "255"}, "ECHO_MAX_MESSAGE_BYTES must be between 256"},
		{"event loops above gnet's", nil, map[string]string{"EVENT_LOOPS": "257"}, "EVENT_LOOPS must be between 1 and 256"},
		{"negative canary interval", nil, map[string]string{"CANARY_INTERVAL": "-1s"}, "CANARY_INTERVAL must not be negative"},
		{"negative slow drops", nil, map[string]string{"SLOW_CLIENT_MAX_DROPS": "-1"}, "SLOW_CLIENT_MAX_DROPS"},
		{"ping timeout not above interval", nil, map[string]string{"PING_INTERVAL": "30s", "PING_TIMEOUT": "30s"}, "PING_TIMEOUT must be longer than PING_INTERVAL"},
		{"negative slow timeout", nil, map[string]string{"SLOW_CLIENT_TIMEOUT": "-1s"}, "SLOW_CLIENT_TIMEOUT"},
		{"empty default role", []string{"-default-role="}, nil, "DEFAULT_ROLE"},
		{"log level", nil, map[string]string{"LOG_LEVEL": "loud"}, "LOG_LEVEL"},
		{"log format", nil, map[string]string{"LOG_FORMAT": "xml"}, "LOG_FORMAT"},
		{"admin address without port", nil, map[string]string{"ADMIN_ADDR": "localhost"}, "ADMIN_ADDR"},
		{"admin address bad port", []string{"-admin-addr", "127.0.0.1:http"}, nil, "ADMIN_ADDR"},
		{"missing key file", nil, map[string]string{"JWT_PUBLIC_KEY_FILE": "/nonexistent/key.pem"}, "JWT_PUBLIC_KEY_FILE"},
		{"durable glob with a space", nil, map[string]string{"STREAM_CHANNELS": "engine:signal:*,a b"}, "STREAM_CHANNELS must be channel names or globs"},
		{"empty stream field", []string{"-stream-field="}, nil, "STREAM_FIELD must not be empty"},
		{"max replay 0", nil, map[string]string{"MAX_REPLAY": "0"}, "MAX_REPLAY must be between 1 and 1000000"},
		{"max replay above the bound", nil, map[string]string{"MAX_REPLAY": "1000001"}, "MAX_REPLAY must be between 1 and 1000000"},
		{"reader keys", nil, map[string]string{"STREAM_READER_KEYS": "4097"}, "STREAM_READER_KEYS must be between 1 and 4096"},
		{"discovery", nil, map[string]string{"STREAM_DISCOVERY": "notify"}, "STREAM_DISCOVERY must be auto or scan"},
		{"scan interval", nil, map[string]string{"STREAM_SCAN_INTERVAL": "500ms"}, "STREAM_SCAN_INTERVAL must be between 1s and 1h"},
		{"unknown flag", []string{"-no-such-flag"}, nil, "no-such-flag"},
		{"Redis URL scheme", nil, map[string]string{"REDIS_URL": "http://:" + testPassword + "@h:1"}, "REDIS_URL must be a Redis URL (redis://, rediss:// or unix://): invalid URL scheme: http"},
		{"Redis URL that does not parse", nil, map[string]string{"REDIS_URL": "redis://u:" + testPassword + "@h:port"}, "REDIS_URL must be a Redis URL"},
		{"Redis URL key", nil, map[string]string{"REDIS_URL": "redis://:" + testPassword + "@h:1?master_Set=m"}, `unknown parameter "master_Set"`},
		{"Redis URL addr without port", nil, map[string]string{"REDIS_URL": "redis://h:1?addr=b"}, "addr=b must be host:port"},
		{"TLS certificate without key", nil, map[string]string{"REDIS_TLS_CERT_FILE": "c.pem"}, "REDIS_TLS_CERT_FILE must be set together with REDIS_TLS_KEY_FILE"},
		{"TLS CA with redis://", nil, map[string]string{"REDIS_URL": "redis://h:1", "REDIS_TLS_CA_FILE": "ca.pem"}, "REDIS_TLS_CA_FILE is set but REDIS_URL is not rediss://"},
		{"missing TLS CA", nil, map[string]string{"REDIS_TLS_CA_FILE": "/nonexistent/ca.pem"}, "REDIS_TLS_CA_FILE: open /nonexistent/ca.pem"},
		{"missing TLS key", nil, map[string]string{"REDIS_URL": "rediss://h:1", "REDIS_TLS_CERT_FILE": "/nonexistent/c.pem", "REDIS_TLS_KEY_FILE": "/nonexistent/k.pem"}, "REDIS_TLS_CERT_FILE: open /nonexistent/c.pem"},
		{"long sharded glob", nil, map[string]string{"SHARDED_CHANNELS": "a.*," + strings.Repeat("b", 300)}, "SHARDED_CHANNELS must hold globs of 1 to 256 bytes"},
		{"trusted proxy", nil, map[string]string{"TRUSTED_PROXIES": "10.0.0.0/8,haproxy"}, "TRUSTED_PROXIES must be CIDRs"},
		{"embedded Redis and a URL", nil, map[string]string{"EMBEDDED_REDIS": "true", "REDIS_URL": "redis://h:1"}, "EMBEDDED_REDIS cannot be used with REDIS_URL"},
		{"embedded Redis file without the embedded Redis", nil, map[string]string{"EMBEDDED_REDIS_FILE": "x.json"}, "EMBEDDED_REDIS_FILE needs EMBEDDED_REDIS"},
		{"stray argument", []string{"serve"}, nil, "serve"},
	}
	// Every typed setting refuses garbage, from the environment and as
	// a flag.
	for _, s := range settings {
		if typ := settingType(s); typ != "string" && typ != "list" {
			tests = append(tests,
				bad{"env " + s.env, nil, map[string]string{s.env: "garbage"}, s.env},
				bad{"flag -" + s.flag, []string{"-" + s.flag + "=garbage"}, nil, "-" + s.flag})
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(tt.args, tt.env)
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, errConfig) {
				t.Errorf("error %v does not wrap errConfig", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not name %s", err, tt.want)
			}
			if strings.Contains(err.Error(), testPassword) {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}

// testPassword is a Redis password that must never be shown.
const testPassword = "hunter2-s3cret"

// TestSettingOf: every setting bound into a package's Config is found
// from the field's name, as Check gives it; a field no setting holds keeps
// its name.
func TestSettingOf(t *testing.T) {
	c := new(config)
	pkgs := []struct {
		name string
		cfg  any
	}{{"server", &c.Server}, {"fanout", &c.Fanout}, {"streams", &c.Streams}}
	bound := 0
	for _, p := range pkgs {
		v := reflect.ValueOf(p.cfg).Elem()
		for i := range v.NumField() {
			if !v.Type().Field(i).IsExported() {
				continue // state a package keeps in its Config, no setting's
			}
			field := v.Type().Field(i).Name
			ptr := v.Field(i).Addr().Interface()
			want := field
			for _, s := range settings {
				if s.bind(c) == ptr {
					want = s.env
					bound++
				}
			}
			if got := c.settingOf(p.cfg, field); got != want {
				t.Errorf("%s.%s: settingOf = %q, want %q", p.name, field, got, want)
			}
		}
	}
	if bound < 20 {
		t.Errorf("only %d settings found bound into server.Config and fanout.Config", bound)
	}
	if got := c.settingOf(&c.Server, "NoSuchField"); got != "NoSuchField" {
		t.Errorf("unknown field: %q", got)
	}
}

// TestRunHelpAndVersion: -help lists every setting with its default and
// exits 0; -version prints the version and exits 0 even when the
// environment holds an invalid value.
func TestRunHelpAndVersion(t *testing.T) {
	t.Setenv("LOG_LEVEL", "loud") // invalid on purpose
	t.Setenv("REDIS_HOST", "from-env")
	t.Setenv("REDIS_URL", "redis://gw:"+testPassword+"@from-env:6379")
	tests := []struct {
		name       string
		args       []string
		code       int
		stdout     []string
		stderr     []string
		notInHelps []string
	}{
		{name: "version", args: []string{"-version"}, code: 0, stdout: []string{"gateway " + version}},
		{name: "help", args: []string{"-help"}, code: 0, stderr: helpWants(),
			// The default, not the environment's value.
			notInHelps: []string{"from-env", "help requested", testPassword}},
		{name: "invalid environment", args: nil, code: 2, stderr: []string{"LOG_LEVEL"}, notInHelps: []string{testPassword}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run(tt.args, &out, &errb); code != tt.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tt.code, errb.String())
			}
			for _, w := range tt.stdout {
				if !strings.Contains(out.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, out.String())
				}
			}
			for _, w := range tt.stderr {
				if !strings.Contains(errb.String(), w) {
					t.Errorf("stderr lacks %q", w)
				}
			}
			for _, w := range tt.notInHelps {
				if strings.Contains(errb.String(), w) {
					t.Errorf("stderr contains %q:\n%s", w, errb.String())
				}
			}
		})
	}
}

// helpWants is what -help must show for every setting: the flag, the
// variable and, when not empty or zero, the default.
func helpWants() []string {
	var w []string
	for _, s := range settings {
		w = append(w, "-"+s.flag, "(env "+s.env+")")
		if s.def != "" && s.def != "0" && s.def != "false" {
			def := s.def
			if d, err := time.ParseDuration(def); err == nil {
				def = d.String() // flag prints 60s as 1m0s
			}
			w = append(w, "(default "+def+")")
		}
	}
	return w
}
