package server_test

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/wsgw/gateway/fanout"
	"github.com/wsgw/gateway/fanout/redistest"
)

// TestBrowserDurable runs web/test/durable.mjs: the browser client in
// headless Chromium on a durable channel, live, then resuming by itself
// after a gateway restart during which entries were added: exactly the
// missed entries, a 'recovered' event, no gap.
func TestBrowserDurable(t *testing.T) {
	chromium := requireTool(t, "chromium", "the browser the client is tested in")
	node := requireTool(t, "node", "runs playwright-core")
	requireNodeModules(t)

	rs := redistest.Start(t)
	cfg := fanout.StreamConfig{Channels: []string{"indicators:signal:*"}}
	g := startStreamGateway(t, rs, cfg)
	addr := g.addr
	run := startNode(t, node, "durable.mjs", "GATEWAY_URL=http://"+addr, "CHROMIUM="+chromium)
	run.serve(t, "durable.mjs", 3*time.Minute, func(verb string, args []byte, line string) any {
		var a struct {
			Channel, Data string
			Add, From     int
		}
		if err := json.Unmarshal(args, &a); err != nil {
			t.Fatalf("durable.mjs: %s: %v", line, err)
		}
		var reply any
		switch verb {
		case "xadd":
			reply = map[string]string{"id": rs.Do(t, "XADD", "stream:"+a.Channel, "*", "data", a.Data)}
		case "restart-gateway":
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := g.srv.Shutdown(ctx); err != nil {
				t.Fatalf("shutdown: %v", err)
			}
			cancel()
			var ids []string
			for i := range a.Add {
				ids = append(ids, rs.Do(t, "XADD", "stream:"+a.Channel, "*", "data", strconv.Itoa(a.From+i)))
			}
			g = startStreamGateway(t, rs, cfg, func(o *options) { o.srv.Addr = addr })
			reply = map[string][]string{"ids": ids}
		default:
			t.Fatalf("durable.mjs asked for %q", line)
		}
		return reply
	})
}
