package main

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wsgw/gateway/auth"
	"github.com/wsgw/gateway/fanout"
	"github.com/wsgw/gateway/server"
)

// newIdleServer builds a gateway server that is never started, which is
// enough for its metrics (they read counters only). No Redis is needed:
// the hub is never started either.
func newIdleServer(tb testing.TB) *server.Server {
	tb.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	acl := auth.DefaultACL()
	authn, err := auth.NewAuthenticator(auth.Config{DefaultRole: "user", RoleClaim: "role"}, acl)
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := server.New(server.Config{
		Addr: "127.0.0.1:0", Loops: 1, MaxMessageBytes: 1024, MaxChannels: 1, MaxMessagesPerSecond: 1,
		MaxOutboundBytes: 4096, HandshakeTimeout: time.Second, PingInterval: time.Second, PingTimeout: 2 * time.Second,
		Version: "test-version", Logger: log,
	}, fanout.Config{RedisAddr: "127.0.0.1:1", SendQueue: 16, Logger: log}, authn, acl)
	if err != nil {
		tb.Fatal(err)
	}
	return srv
}

func TestAdminListener(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := startAdmin("127.0.0.1:0", newIdleServer(t), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.close)
	tests := []struct {
		path string
		code int
		want []string
	}{
		{"/metrics", 200, []string{
			"gateway_connections 0",
			`gateway_build_info{goversion="go`,
			`version="test-version"`,
			`gateway_upgrades_refused_total{reason="unauthorized"} 0`,
			`gateway_commands_total{action="subscribe",result="ok"} 0`,
			"gateway_delivery_latency_seconds_bucket",
			"go_goroutines",
			"process_open_fds",
		}},
		{"/debug/pprof/", 200, []string{"goroutine"}},
		{"/debug/pprof/goroutine?debug=1", 200, []string{"goroutine profile"}},
		// The command line may hold secrets: not served.
		{"/debug/pprof/cmdline", 404, nil},
		{"/", 404, nil},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, err := http.Get("http://" + a.addr + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.code {
				t.Fatalf("GET %s = %d, want %d: %s", tt.path, resp.StatusCode, tt.code, body)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(body), w) {
					t.Errorf("GET %s lacks %q", tt.path, w)
				}
			}
		})
	}
	t.Run("port taken", func(t *testing.T) {
		_, err := startAdmin(a.addr, newIdleServer(t), log)
		if !errors.Is(err, errAdmin) {
			t.Fatalf("second listener on %s: err = %v, want errAdmin", a.addr, err)
		}
	})
}

// TestStatsAdminOnly: STATS_ADMIN_ONLY needs an admin listener, which
// serves /stats (the public port then answers 404: server tests).
func TestStatsAdminOnly(t *testing.T) {
	if _, err := load([]string{"-admin-addr", ""}, map[string]string{"STATS_ADMIN_ONLY": "true"}); err == nil ||
		!strings.Contains(err.Error(), "STATS_ADMIN_ONLY") {
		t.Fatalf("STATS_ADMIN_ONLY without ADMIN_ADDR: %v, want an error naming it", err)
	}
	cfg, err := load(nil, map[string]string{"STATS_ADMIN_ONLY": "true"})
	if err != nil || !cfg.Server.StatsPrivate {
		t.Fatalf("STATS_ADMIN_ONLY=true: %+v, %v", cfg.Server.StatsPrivate, err)
	}
	a, err := startAdmin("127.0.0.1:0", newIdleServer(t), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.close)
	resp, err := http.Get("http://" + a.addr + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"connections":0`) || !strings.Contains(string(body), `"version":"test-version"`) {
		t.Fatalf("admin /stats: %d %s", resp.StatusCode, body)
	}
}
