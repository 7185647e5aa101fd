package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wsgw/gateway/fanout/redistest"
	"github.com/wsgw/gateway/server/servertest"
)

// TestRedisTLS runs the binary against redis-servers on TLS with
// certificates made here: with a client certificate (the server
// requires one) and a password in REDIS_URL, which the log, /stats,
// /health, /metrics and -help never show; with
// the CA only and REDIS_TLS_SERVER_NAME; and refused, with a log line
// saying why and /health 503, for a wrong CA or a missing client
// certificate.
func TestRedisTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	const password = "tls-s3cret-pw"
	bin := buildGateway(t)
	ca := redistest.NewCA(t, "redis CA")
	serverPair := ca.Issue(t, "redis", false, "redis.test")
	clientPair := ca.Issue(t, "gateway", true)
	mtls := redistest.Start(t, redistest.WithTLS(ca, serverPair, true))
	if r := mtls.Do(t, "ACL", "SETUSER", "gw", "on", ">"+password, "~*", "&*", "+@all"); r != "OK" {
		t.Fatalf("ACL SETUSER: %q", r)
	}
	caOnly := redistest.Start(t, redistest.WithTLS(ca, serverPair, false))
	wrongCA := redistest.NewCA(t, "another CA")

	common := []string{"REDIS_WS_GATEWAY_HOST=127.0.0.1", "REDIS_WS_GATEWAY_PORT=0", "ADMIN_ADDR=127.0.0.1:0", "CANARY_INTERVAL=200ms"}
	for _, tc := range []struct {
		name string
		rs   *redistest.Server
		env  []string
		// why: "" when the gateway must deliver, else what its log
		// must say while /health answers 503.
		why string
	}{
		{"client certificate and password", mtls, []string{
			"REDIS_URL=rediss://gw:" + password + "@" + mtls.TLSAddr(),
			"REDIS_TLS_CA_FILE=" + ca.File, "REDIS_TLS_CERT_FILE=" + clientPair.CertFile, "REDIS_TLS_KEY_FILE=" + clientPair.KeyFile,
		}, ""},
		// REDIS_HOST has no scheme: the TLS settings turn TLS on.
		{"CA and server name, with REDIS_HOST", caOnly, []string{
			"REDIS_HOST=127.0.0.1", "REDIS_PORT=" + tlsPort(t, caOnly), "REDIS_TLS_CA_FILE=" + ca.File, "REDIS_TLS_SERVER_NAME=redis.test",
		}, ""},
		{"wrong CA", caOnly, []string{
			"REDIS_URL=rediss://" + caOnly.TLSAddr(), "REDIS_TLS_CA_FILE=" + wrongCA.File,
		}, "certificate signed by unknown authority"},
		// TLS 1.3 sends the alert after the handshake: the client reads
		// "certificate required" or meets a reset, by a race.
		{"no client certificate", mtls, []string{
			"REDIS_URL=rediss://gw:" + password + "@" + mtls.TLSAddr(), "REDIS_TLS_CA_FILE=" + ca.File,
		}, "rediss://gw:xxxxx@"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startGatewayProc(t, bin, append(slices.Clone(common), tc.env...)...)
			if tc.why != "" {
				// rueidis gives up on a connection that answers nothing after
				// its write timeout (10 s): allow for one.
				servertest.WaitFor(t, 30*time.Second, "a log line saying "+tc.why, func() bool {
					return p.loggedWith("redis connect failed", tc.why)
				})
				if code := healthStatus(t, p.addr); code != http.StatusServiceUnavailable {
					t.Fatalf("/health answered %d, want 503", code)
				}
				if strings.Contains(p.logText(), password) {
					t.Fatalf("the log shows the password:\n%s", p.logText())
				}
				return
			}
			p.waitHealthy(t)
			c, err := dialSubscribe("ws://"+p.addr+"/ws", "market:tick:TLS")
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			servertest.WaitFor(t, 10*time.Second, "the upstream subscription", func() bool { return tc.rs.NumSub(t, "market:tick:TLS") == 1 })
			tc.rs.Publish(t, "market:tick:TLS", `"over TLS"`)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, b, err := c.Read(ctx); err != nil || !strings.Contains(string(b), `"data":"over TLS"`) {
				t.Fatalf("read %s, %v; want the message", b, err)
			}
			for _, url := range []string{"http://" + p.addr + "/stats", "http://" + p.addr + "/health", "http://" + adminAddr(t, p) + "/metrics"} {
				if body := get(t, url); strings.Contains(body, password) {
					t.Fatalf("%s shows the password: %s", url, body)
				}
			}
			cmd := exec.Command(bin, "-help")
			cmd.Env = append(os.Environ(), tc.env...)
			help, _ := cmd.CombinedOutput() // the usage's exit status is not the point
			if !strings.Contains(string(help), "REDIS_URL") || strings.Contains(string(help), password) {
				t.Fatalf("-help with the settings in the environment: no REDIS_URL, or the password:\n%s", help)
			}
			if strings.Contains(p.logText(), password) {
				t.Fatalf("the log shows the password:\n%s", p.logText())
			}
			if tc.rs == mtls && !p.loggedWith("gateway listening", "rediss://gw:xxxxx@") {
				t.Fatalf("the listening line does not show the masked URL:\n%s", p.logTail())
			}
		})
	}
}

// tlsPort is rs's TLS port, as REDIS_PORT wants it.
func tlsPort(tb testing.TB, rs *redistest.Server) string {
	tb.Helper()
	_, port, ok := strings.Cut(rs.TLSAddr(), "127.0.0.1:")
	if !ok || port == "" {
		tb.Fatalf("TLS address %q", rs.TLSAddr())
	}
	return port
}

func healthStatus(tb testing.TB, addr string) int {
	tb.Helper()
	resp, err := http.Get("http://" + addr + "/health")
	if err != nil {
		tb.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func get(tb testing.TB, url string) string {
	tb.Helper()
	resp, err := http.Get(url)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// adminAddr is the address the admin listener logged.
func adminAddr(tb testing.TB, p *gatewayProc) string {
	tb.Helper()
	var addr string
	servertest.WaitFor(tb, 10*time.Second, "the admin listener's address", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, l := range p.log {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal([]byte(l), &rec) == nil && rec.Msg == "admin listening" {
				addr = rec.Addr
				return true
			}
		}
		return false
	})
	return addr
}

// loggedWith reports whether a line with message msg that contains every
// substring of also was logged.
func (p *gatewayProc) loggedWith(msg string, also ...string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
next:
	for _, l := range p.log {
		if !strings.Contains(l, `"msg":"`+msg+`"`) {
			continue
		}
		for _, s := range also {
			if !strings.Contains(l, s) {
				continue next
			}
		}
		return true
	}
	return false
}

// logText is the whole log so far.
func (p *gatewayProc) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.log, "\n")
}
