package server_test

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/wsgw/gateway/server/servertest"
)

// TestWebAssets checks that the demo page and the client are served from
// the binary with the right types, and that nothing else under web/ is.
func TestWebAssets(t *testing.T) {
	g := startGateway(t, nil)
	tests := []struct {
		path, file, ctype string
	}{
		{"/", "web/index.html", "text/html; charset=utf-8"},
		{"/index.html", "web/index.html", "text/html; charset=utf-8"},
		{"/gateway-client.js", "web/gateway-client.js", "text/javascript; charset=utf-8"},
		{"/gateway-client.d.ts", "web/gateway-client.d.ts", "text/plain; charset=utf-8"},
		{"/demo.js", "web/demo.js", "text/javascript; charset=utf-8"},
		{"/demo.css", "web/demo.css", "text/css; charset=utf-8"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			want, err := os.ReadFile(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.Get("http://" + g.addr + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != tt.ctype || !bytes.Equal(body, want) {
				t.Fatalf("GET %s = %d %q, %d bytes; want 200 %q with the %d bytes of %s",
					tt.path, resp.StatusCode, resp.Header.Get("Content-Type"), len(body), tt.ctype, len(want), tt.file)
			}
			if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("GET %s: no X-Content-Type-Options: nosniff", tt.path)
			}
		})
	}
	for _, p := range []string{"/web/index.html", "/package.json", "/test/run.mjs", "/test/package.json", "/gateway-client"} {
		t.Run("404 "+p, func(t *testing.T) {
			if code, body := g.get(t, p); code != 404 {
				t.Fatalf("GET %s = %d %.80s, want 404", p, code, body)
			}
		})
	}
	t.Run("whole body to a reader with a small window", func(t *testing.T) {
		// The socket does not take the whole response at once when
		// the peer's window and segments are small (as over a slow
		// link); the rest must be delivered before the gateway closes.
		want, err := os.ReadFile("web/gateway-client.js")
		if err != nil {
			t.Fatal(err)
		}
		got := getSmallWindow(t, g.addr, "/gateway-client.js", 2048)
		if !bytes.Equal(got, want) {
			t.Fatalf("got %d bytes of body, want %d", len(got), len(want))
		}
	})
}

// getSmallWindow GETs path over a socket whose receive buffer is rcvbuf
// bytes (set before connecting, so the advertised window is small too)
// and whose segments are small (TCP_MAXSEG), which keeps the gateway's
// send buffer for the connection small, and returns the body.
func getSmallWindow(tb testing.TB, addr, path string, rcvbuf int) []byte {
	tb.Helper()
	c := servertest.Dial(tb, addr, servertest.RcvBuf(rcvbuf), servertest.SocketOption(syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, 256))
	defer c.TCP.Close()
	_ = c.TCP.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c.TCP, "GET "+path+" HTTP/1.1\r\nHost: gateway\r\n\r\n"); err != nil {
		tb.Fatal(err)
	}
	resp, err := http.ReadResponse(c.R, nil)
	if err != nil {
		tb.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("GET %s: body after %d bytes: %v", path, len(body), err)
	}
	return body
}
