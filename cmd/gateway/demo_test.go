package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgw/gateway/wsproto"
)

// demoFrame is what TestDemoDurableRestart reads of a frame.
type demoFrame struct {
	Type, Channel, ID, LastID, Code string
	Count                           int
	Replay                          bool
}

// readDemo subscribes to the demo's durable channel on the gateway at addr
// (resuming after since when set) and returns its frames until stop says
// so.
func readDemo(tb testing.TB, addr, since string, stop func([]demoFrame) bool) []demoFrame {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+addr+"/ws", nil)
	if err != nil {
		tb.Fatal(err)
	}
	defer ws.CloseNow()
	const ch = "indicators:signal:DEMO"
	req := map[string]any{"action": "subscribe", "channels": []string{ch}, "requestId": "r"}
	if since != "" {
		req["since"] = map[string]string{ch: since}
	}
	p, _ := json.Marshal(req)
	if err := ws.Write(ctx, websocket.MessageText, p); err != nil {
		tb.Fatal(err)
	}
	var got []demoFrame
	for !stop(got) {
		_, p, err := ws.Read(ctx)
		if err != nil {
			tb.Fatalf("after %v: %v", got, err)
		}
		var f demoFrame
		if err := json.Unmarshal(p, &f); err != nil {
			tb.Fatal(err)
		}
		if f.Type == "error" {
			tb.Fatalf("error frame %s after %v", p, got)
		}
		if f.Type != "subscribed" {
			got = append(got, f)
		}
	}
	return got
}

// TestDemoDurableRestart: `make run`'s mode (embedded Redis, -demo, a
// streams file). The demo's durable channel gets an entry a second; after
// a graceful restart of the gateway, whose embedded Redis keeps its
// streams in the file, a client resuming from an ID it saw before gets
// every entry after it, those of the first run included, complete (no
// replay_truncated, no reset), in order: what the demo page shows as
// "recovered N".
func TestDemoDurableRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	bin := buildGateway(t)
	file := filepath.Join(t.TempDir(), "streams.json")
	env := []string{"EMBEDDED_REDIS=true", "DEMO=true", "EMBEDDED_REDIS_FILE=" + file,
		"REDIS_WS_GATEWAY_HOST=127.0.0.1", "REDIS_WS_GATEWAY_PORT=0", "ADMIN_ADDR=", "SHUTDOWN_TIMEOUT=2s"}
	p1 := startGatewayProc(t, bin, env...)
	p1.waitHealthy(t)
	// Two live entries: the channel is durable and carries ids.
	first := readDemo(t, p1.addr, "", func(fs []demoFrame) bool {
		n := 0
		for _, f := range fs {
			if f.Type == "data" && !f.Replay {
				n++
			}
		}
		return n == 2
	})
	// The client resumes from the first of them: the replay starts with
	// the second, kept only in the file across the restart.
	from, last := first[len(first)-2], first[len(first)-1]
	if from.ID == "" || last.ID == "" {
		t.Fatalf("demo frames %v carry no id: the channel is not durable", first)
	}
	if err := p1.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-p1.exited
	if p1.err != nil || !p1.logged("embedded Redis: streams saved") {
		t.Fatalf("gateway exit %v\n%s", p1.err, p1.logTail())
	}
	if _, err := os.Stat(file); err != nil {
		t.Fatal(err)
	}

	p2 := startGatewayProc(t, bin, env...)
	p2.waitHealthy(t)
	// Wait for an entry added by the new run: then there is something to
	// recover.
	fresh := readDemo(t, p2.addr, "", func(fs []demoFrame) bool {
		return len(fs) > 0 && fs[len(fs)-1].Type == "data"
	})
	newest := fresh[len(fresh)-1].ID
	got := readDemo(t, p2.addr, from.ID, func(fs []demoFrame) bool {
		return len(fs) > 0 && fs[len(fs)-1].Type == "replayed"
	})
	end := got[len(got)-1]
	replayed := got[:len(got)-1]
	if end.Count != len(replayed) || len(replayed) == 0 {
		t.Fatalf("replay %v ends with count %d", replayed, end.Count)
	}
	if replayed[0].ID != last.ID {
		t.Fatalf("replay %v does not start with %s, the entry after the resume position", replayed, last.ID)
	}
	prev, _ := wsproto.ParseStreamID(from.ID)
	sawNewest := false
	for _, f := range replayed {
		id, ok := wsproto.ParseStreamID(f.ID)
		if !f.Replay || !ok || !prev.Less(id) {
			t.Fatalf("replayed %v: not a replay in ID order after %s", f, prev)
		}
		prev = id
		sawNewest = sawNewest || f.ID == newest
	}
	if !sawNewest {
		t.Fatalf("replay %v misses %s, added after the restart", replayed, newest)
	}
}
