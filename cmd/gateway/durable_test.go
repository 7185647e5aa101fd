package main

import (
	"context"
	"encoding/json"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgw/gateway/fanout/redistest"
	"github.com/wsgw/gateway/server/servertest"
)

// durableClient is a client of a durable channel that keeps what it got.
type durableClient struct {
	vals   []int
	lastID string
	floor  string            // a pattern's lastId from "replayed"
	pos    map[string]string // a pattern's positions per channel
}

type durableFrame struct {
	Type, Channel, ID, LastID, Code string
	Data                            json.RawMessage
	Replay                          bool
}

// session subscribes to name on the gateway at addr, resuming from what
// c has, and reads until stop says so or the connection fails.
func (c *durableClient) session(tb testing.TB, addr, name string, pattern bool, stop func() bool) error {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+addr+"/ws", nil)
	if err != nil {
		return err
	}
	defer ws.CloseNow()
	req := map[string]any{"action": "subscribe", "channels": []string{name}, "requestId": "r"}
	since := map[string]string{}
	if pattern {
		if c.floor != "" {
			since[name] = c.floor
		}
		for ch, id := range c.pos {
			since[ch] = id
		}
	} else if c.lastID != "" {
		since[name] = c.lastID
	}
	if len(since) > 0 {
		req["since"] = since
	}
	p, _ := json.Marshal(req)
	if err := ws.Write(ctx, websocket.MessageText, p); err != nil {
		return err
	}
	for !stop() {
		_, p, err := ws.Read(ctx)
		if err != nil {
			return err
		}
		var f durableFrame
		if err := json.Unmarshal(p, &f); err != nil {
			tb.Fatalf("frame %s: %v", p, err)
		}
		switch f.Type {
		case "subscribed":
		case "replayed":
			if pattern {
				c.floor = f.LastID
			}
		case "data":
			v, err := strconv.Atoi(string(f.Data))
			if err != nil {
				tb.Fatalf("data %s: %v", p, err)
			}
			c.vals = append(c.vals, v)
			c.lastID = f.ID
			if pattern {
				if c.pos == nil {
					c.pos = map[string]string{}
				}
				c.pos[f.Channel] = f.ID
			}
		default:
			tb.Fatalf("unexpected frame %s", p)
		}
	}
	return nil
}

// TestDurableGatewayKill: a gateway is killed (SIGKILL) while entries keep
// coming; its clients resume with since on a new gateway process and end
// with exactly the published sequence from their first entry on: nothing
// lost, nothing twice.
func TestDurableGatewayKill(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	bin := buildGateway(t)
	rs := redistest.Start(t)
	env := []string{"REDIS_HOST=" + rs.Host(), "REDIS_PORT=" + strconv.Itoa(rs.Port()),
		"REDIS_WS_GATEWAY_HOST=127.0.0.1", "REDIS_WS_GATEWAY_PORT=0", "ADMIN_ADDR=",
		"STREAM_CHANNELS=market:tick:D*", "MAX_REPLAY=5000"}
	p1 := startGatewayProc(t, bin, env...)
	p1.waitHealthy(t)

	const total = 1500
	var published atomic.Int64
	pubDone := make(chan error, 1)
	// The stream exists before the pattern subscribes: its first scan
	// finds it (a key created later waits for the next sweep).
	rs.Do(t, "XADD", "stream:market:tick:DUR", "*", "data", "0")
	go func() {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for i := 1; i <= total; i++ {
			<-tick.C
			if _, err := rs.Exec("XADD", "stream:market:tick:DUR", "*", "data", strconv.Itoa(i)); err != nil {
				pubDone <- err
				return
			}
			published.Store(int64(i))
		}
		pubDone <- nil
	}()

	exact, pat := &durableClient{}, &durableClient{}
	errs := make(chan error, 2)
	for _, cl := range []struct {
		c       *durableClient
		name    string
		pattern bool
	}{{exact, "market:tick:DUR", false}, {pat, "market:tick:D*", true}} {
		go func() {
			// Until the gateway dies under it.
			errs <- cl.c.session(t, p1.addr, cl.name, cl.pattern, func() bool { return false })
		}()
	}
	servertest.WaitFor(t, time.Minute, "a third of the entries", func() bool { return published.Load() >= total/3 })
	if err := p1.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p1.exited
	for range 2 {
		if err := <-errs; err == nil {
			t.Fatal("a session ended without its gateway dying")
		}
	}
	gotBefore := [2]int{len(exact.vals), len(pat.vals)}
	if gotBefore[0] == 0 || gotBefore[1] == 0 {
		t.Fatalf("the clients got %v entries before the kill, want some", gotBefore)
	}

	p2 := startGatewayProc(t, bin, env...)
	p2.waitHealthy(t)
	if err := <-pubDone; err != nil {
		t.Fatal(err)
	}
	for _, cl := range []struct {
		c       *durableClient
		name    string
		pattern bool
	}{{exact, "market:tick:DUR", false}, {pat, "market:tick:D*", true}} {
		done := func() bool { return len(cl.c.vals) > 0 && cl.c.vals[len(cl.c.vals)-1] == total }
		if err := cl.c.session(t, p2.addr, cl.name, cl.pattern, done); err != nil {
			t.Fatalf("%s after the restart: %v", cl.name, err)
		}
		// From the first entry it got live, every one once, in order.
		first := cl.c.vals[0]
		for i, v := range cl.c.vals {
			if v != first+i {
				t.Fatalf("%s: entry %d is %d, want %d", cl.name, i, v, first+i)
			}
		}
	}
	t.Logf("entries before the kill: exact %d, pattern %d, of %d", gotBefore[0], gotBefore[1], total)
}
