package server_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgw/gateway/fanout/redistest"
	"github.com/wsgw/gateway/server/servertest"
)

// TestCloseLogFramesSent: the "connection closed" log line counts the
// messages written to the connection, on /ws (acks, data, replies) and on
// the echo alike.
func TestCloseLogFramesSent(t *testing.T) {
	rs := redistest.Start(t)
	logs := &servertest.LogRecorder{}
	g := startGateway(t, rs, func(o *options) {
		o.srv.Echo = true
		o.srv.Logger = logs.Logger()
	})
	tests := []struct {
		name, path string
		use        func(t *testing.T, cl *client)
	}{
		{"/ws: an ack, a message and a pong", "/ws", func(t *testing.T, cl *client) {
			cl.subscribe(t, "market:tick:LOG")
			rs.Publish(t, "market:tick:LOG", "1")
			cl.expect(t, "data")
			cl.send(t, map[string]any{"action": "ping"})
			cl.expect(t, "pong")
		}},
		{"/echo: three messages echoed", "/echo", func(t *testing.T, cl *client) {
			for range 3 {
				cl.send(t, `"ping"`)
				if m, err := cl.readEcho(); err != nil || m != `"ping"` {
					t.Fatalf("echo: %q, %v", m, err)
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(closedLines(logs))
			cl := dial(t, "ws://"+g.addr+tt.path)
			tt.use(t, cl)
			_ = cl.c.Close(websocket.StatusNormalClosure, "")
			var lines []string
			servertest.WaitFor(t, 10*time.Second, "the close log line", func() bool {
				lines = closedLines(logs)
				return len(lines) > before
			})
			if line := lines[len(lines)-1]; !strings.Contains(line, " frames_sent=3 ") {
				t.Fatalf("%s: want frames_sent=3", line)
			}
		})
	}
}

// closedLines are the "connection closed" lines logged so far.
func closedLines(logs *servertest.LogRecorder) []string {
	var out []string
	for _, l := range logs.Lines() {
		if strings.HasPrefix(l, "connection closed ") {
			out = append(out, l)
		}
	}
	return out
}

// readEcho reads one message as it came.
func (cl *client) readEcho() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, p, err := cl.c.Read(ctx)
	return string(p), err
}
