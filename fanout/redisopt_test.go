package fanout

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/rueidis"
	"github.com/wsgw/gateway/fanout/redistest"
)

// TestCheckRedisURL: REDIS_URL is checked before rueidis.ParseURL reads
// it, and no error quotes the password.
func TestCheckRedisURL(t *testing.T) {
	const pw = "hunter2"
	for _, tc := range []struct {
		url, want string // want: "" for valid, else a part of the rule
	}{
		{"redis://127.0.0.1:6380", ""},
		{"redis://alice:" + pw + "@127.0.0.1:6380/2", ""},
		{"rediss://:" + pw + "@redis.example.com:6380", ""},
		{"unix:///run/redis/redis.sock", ""},
		{"unix://alice:" + pw + "@/run/redis/redis.sock?db=3", ""},
		{"redis://s1:26379?addr=s2:26379&addr=s3:26379&master_set=mymaster", ""},
		{"redis://n1:7000?addr=n2:7001&addr=n3:7002", ""},
		{"redis://h:1?protocol=2&client_name=gw&dial_timeout=2s&max_retries=0", ""},
		{"redis://bob:" + pw + "@host:badport", "does not parse"},
		{"redis://bob:" + pw + "%zz@host:1", "does not parse"},
		{"redis://host:badport", `invalid port ":badport"`},
		{"http://host:6379", "invalid URL scheme: http"},
		{"redis://host/1/2", "invalid URL path"},
		{"redis://host?dial_timeout=abc", "invalid dial timeout"},
		{"redis://:" + pw + "@s1:26379?master_Set=mymaster", `unknown parameter "master_Set"`},
		{"redis://n1:7000?addr=n2", "addr=n2 must be host:port"},
		{"redis://s1:26379?master_set=", "master_set must name"},
		{"unix:///r.sock?addr=h:1", "unix:// takes no addr"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			rule := checkURL(tc.url)
			if (rule == "") != (tc.want == "") || !strings.Contains(rule, tc.want) {
				t.Fatalf("checkURL = %q, want %q", rule, tc.want)
			}
			if strings.Contains(rule, pw) {
				t.Fatalf("the rule quotes the password: %q", rule)
			}
			if r := RedactURL(tc.url); strings.Contains(r, pw) {
				t.Fatalf("RedactURL = %q", r)
			}
		})
	}
	if got := RedactURL("rediss://alice:s3cr%40t@host1:6380/2"); got != "rediss://alice:xxxxx@host1:6380/2" {
		t.Fatalf("RedactURL = %q", got)
	}
	c := Config{RedisURL: "redis://:" + pw + "@h:1", SendQueue: 1}
	if tgt := c.Target(); strings.Contains(tgt, pw) || !strings.Contains(tgt, "h:1") {
		t.Fatalf("Target() = %q", tgt)
	}
}

// TestLoadTLS: each bad TLS setting is reported under its field.
func TestLoadTLS(t *testing.T) {
	ca := redistest.NewCA(t, "ca")
	pair := ca.Issue(t, "gw", true)
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	other := redistest.NewCA(t, "other").Issue(t, "x", true)
	for _, tc := range []struct {
		name             string
		caf, cert, key   string
		field, wantError string
	}{
		{"none", "", "", "", "", ""},
		{"all good", ca.File, pair.CertFile, pair.KeyFile, "", ""},
		{"missing CA", filepath.Join(dir, "nope.pem"), "", "", "TLSCAFile", "no such file"},
		{"garbage CA", garbage, "", "", "TLSCAFile", "no PEM certificate"},
		{"missing key", "", pair.CertFile, filepath.Join(dir, "nope.key"), "TLSKeyFile", "no such file"},
		{"missing cert", "", filepath.Join(dir, "nope.crt"), pair.KeyFile, "TLSCertFile", "no such file"},
		{"swapped", "", pair.KeyFile, pair.CertFile, "TLSCertFile", "PEM inputs may have been switched"},
		{"another cert's key", "", pair.CertFile, other.KeyFile, "TLSCertFile", "private key does not match"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{RedisAddr: "127.0.0.1:1", SendQueue: 1, TLSCAFile: tc.caf, TLSCertFile: tc.cert, TLSKeyFile: tc.key}
			field, err := c.LoadTLS()
			if field != tc.field || (err == nil) != (tc.wantError == "") || err != nil && !strings.Contains(err.Error(), tc.wantError) {
				t.Fatalf("LoadTLS = %q, %v; want %q, %q", field, err, tc.field, tc.wantError)
			}
		})
	}
}

// TestConfigCheckRedis: the Redis settings' rules in Check.
func TestConfigCheckRedis(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		field  string
	}{
		{"URL alone", func(c *Config) { c.RedisAddr, c.RedisURL = "", "redis://h:1" }, ""},
		{"bad URL", func(c *Config) { c.RedisURL = "http://h:1" }, "RedisURL"},
		{"cert without key", func(c *Config) { c.TLSCertFile = "c.pem" }, "TLSCertFile"},
		{"key without cert", func(c *Config) { c.TLSKeyFile = "k.pem" }, "TLSKeyFile"},
		{"CA with redis://", func(c *Config) { c.RedisURL, c.TLSCAFile = "redis://h:1", "ca.pem" }, "TLSCAFile"},
		{"server name with rediss://", func(c *Config) { c.RedisURL, c.TLSServerName = "rediss://h:1", "x" }, ""},
		{"server name with REDIS_HOST", func(c *Config) { c.TLSServerName = "x" }, ""},
		{"empty sharded glob", func(c *Config) { c.ShardedChannels = []string{"a.*", ""} }, "ShardedChannels"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig("127.0.0.1:1")
			tc.mutate(&c)
			if field, rule := c.Check(); field != tc.field {
				t.Fatalf("Check = %q %q, want field %q", field, rule, tc.field)
			}
		})
	}
}

// TestClientOption: what the hub's rueidis client is built with.
func TestClientOption(t *testing.T) {
	t.Run("host and port with TLS", func(t *testing.T) {
		c := testConfig("redis.internal:6380")
		c.RedisUsername, c.RedisPassword, c.TLSServerName = "gw", "pw", "redis.test"
		opt := c.ClientOption()
		if opt.TLSConfig == nil || opt.TLSConfig.ServerName != "redis.test" || opt.DialCtxFn == nil {
			t.Fatalf("TLS not set up: %+v", opt.TLSConfig)
		}
		if opt.Username != "gw" || opt.Password != "pw" || !opt.DisableCache || opt.ClientName != "ws-gateway" {
			t.Fatalf("options %+v", opt)
		}
	})
	t.Run("sentinel", func(t *testing.T) {
		c := testConfig("")
		c.RedisURL = "rediss://:pw@s1:26379?addr=s2:26379&master_set=mymaster&protocol=2"
		opt := c.ClientOption()
		s := opt.Sentinel
		if s.MasterSet != "mymaster" || s.Password != "pw" || s.Username != "default" || s.TLSConfig == nil ||
			s.Dialer.Timeout == 0 || s.TopologyRefreshInterval == 0 {
			t.Fatalf("sentinel options %+v", s)
		}
	})
	t.Run("unix keeps its dialer, no TLS", func(t *testing.T) {
		c := testConfig("")
		c.RedisURL = "unix:///run/redis.sock"
		if opt := c.ClientOption(); opt.TLSConfig != nil || opt.DialCtxFn == nil || opt.InitAddress[0] != "/run/redis.sock" {
			t.Fatalf("options %+v", opt)
		}
	})
}

// TestClientOptionStandalone: miniredis (the embedded mode) answers
// CLUSTER SLOTS with itself, so rueidis would make a one-node Cluster
// client of it; Standalone keeps it a single-node one.
func TestClientOptionStandalone(t *testing.T) {
	mr := miniredis.RunT(t)
	for _, tc := range []struct {
		standalone bool
		want       rueidis.ClientMode
	}{
		{false, rueidis.ClientModeCluster},
		{true, rueidis.ClientModeStandalone},
	} {
		t.Run(string(tc.want), func(t *testing.T) {
			c := testConfig(mr.Addr())
			c.RESP2, c.Standalone = true, tc.standalone
			client, err := rueidis.NewClient(c.ClientOption())
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			if got := client.Mode(); got != tc.want {
				t.Fatalf("mode %s, want %s", got, tc.want)
			}
		})
	}
}
