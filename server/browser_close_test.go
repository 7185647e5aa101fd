//go:build unix

package server_test

import (
	"strings"
	"testing"
	"time"

	"github.com/wsgw/gateway/fanout/redistest"
)

// TestBrowserCloseCodes: headless Chromium (web/test/closes.mjs) opens
// connections that are still sending when the gateway closes them, 100
// per case, and each ws.onclose reports the gateway's code: 1009 after a
// 2 MiB message on a 64 KiB limit, 1008 after the rate limit; never 1006,
// which is what a browser reports when TCP is reset under it.
func TestBrowserCloseCodes(t *testing.T) {
	chromium := requireTool(t, "chromium", "the browser whose close codes are checked")
	node := requireTool(t, "node", "runs playwright-core")
	requireNodeModules(t)

	rs := redistest.Start(t)
	g := startGateway(t, rs, func(o *options) {
		o.srv.MaxMessageBytes = 64 << 10
		o.srv.MaxMessagesPerSecond = 10
		o.srv.CloseLinger = 10 * time.Second // see TestCloseCodeWhileClientWrites
	})
	run := startNode(t, node, "closes.mjs",
		"GATEWAY_URL=http://"+g.addr, "CHROMIUM="+chromium, "RUNS=100", "CONCURRENCY=10")
	deadline := time.After(4 * time.Minute)
	results := 0
	for done := false; !done; {
		select {
		case line, ok := <-run.lines:
			if !ok {
				done = true
				break
			}
			t.Log(line)
			if strings.HasPrefix(line, "RESULT ") {
				results++
			}
		case <-deadline:
			t.Fatalf("closes.mjs did not finish within 4 minutes\nstderr:\n%s", run.stderr())
		}
	}
	if err := run.wait(); err != nil {
		t.Fatalf("closes.mjs: %v\nstderr:\n%s", err, run.stderr())
	}
	if results != 2 {
		t.Fatalf("closes.mjs reported %d cases, want 2\nstderr:\n%s", results, run.stderr())
	}
}
