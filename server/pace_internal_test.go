package server

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/wsgw/gateway/auth"
	"github.com/wsgw/gateway/fanout"
	"github.com/wsgw/gateway/fanout/redistest"
	"github.com/wsgw/gateway/server/servertest"
)

// startInternal starts a real gateway (one event loop) against rs for the
// tests that look at a loop's state.
func startInternal(tb testing.TB, rs *redistest.Server, cfg Config, sendQueue int) *Server {
	tb.Helper()
	hubCfg := fanout.Config{
		RedisAddr: rs.Addr(), SendQueue: sendQueue,
		Linger: 100 * time.Millisecond, RetryMin: 50 * time.Millisecond, RetryMax: 500 * time.Millisecond,
		Logger: cfg.Logger,
	}
	acl := auth.DefaultACL()
	authn, err := auth.NewAuthenticator(auth.Config{DefaultRole: "user", RoleClaim: "role"}, acl)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := New(cfg, hubCfg, authn, acl)
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	servertest.WaitFor(tb, 10*time.Second, "the Redis link", s.hub.Healthy)
	return s
}

// dialPaused opens a WebSocket on addr with a 4 KiB receive buffer,
// subscribes to channel and never reads again: a reader that has stopped.
func dialPaused(tb testing.TB, addr, channel string) net.Conn {
	tb.Helper()
	d := net.Dialer{Timeout: 10 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		return errors.Join(err, serr)
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: gateway\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		tb.Fatalf("upgrade: %v %v", resp, err)
	}
	// One masked text frame (RFC 6455 §5.3), a zero mask for brevity.
	cmd := `{"action":"subscribe","channels":["` + channel + `"]}`
	frame := append([]byte{0x81, 0x80 | byte(len(cmd)), 0, 0, 0, 0}, cmd...)
	if _, err := c.Write(frame); err != nil {
		tb.Fatal(err)
	}
	_ = c.SetDeadline(time.Time{})
	return c
}

// onLoop runs fn on l's event loop and waits for it.
func onLoop(tb testing.TB, l *loopState, fn func()) {
	tb.Helper()
	done := make(chan struct{})
	err := l.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		fn()
		close(done)
		return nil
	}))
	if err != nil {
		tb.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		tb.Fatal("event loop stuck")
	}
}

// parkingConfig is a one-loop gateway whose outbound buffer (32 KiB) a
// reader that has stopped fills quickly.
func parkingConfig() Config {
	return Config{
		Addr: "127.0.0.1:0", Loops: 1, MaxMessageBytes: 64 << 10, MaxChannels: 50, MaxWildcards: 5,
		MaxMessagesPerSecond: 1000, HandshakeTimeout: 5 * time.Second, MaxOutboundBytes: 32 << 10,
		PingInterval: time.Minute, PingTimeout: 2 * time.Minute,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// publishUntilParked publishes on channel until l's one open connection,
// a reader that has stopped, is parked on a full outbound buffer with a
// full queue (it has dropped frames), and returns it.
func publishUntilParked(tb testing.TB, rs *redistest.Server, l *loopState, channel string) *conn {
	tb.Helper()
	payload := `"` + strings.Repeat("x", 2040) + `"`
	var cn *conn
	servertest.WaitFor(tb, 20*time.Second, "the connection to be parked with a full queue", func() bool {
		for range 20 {
			rs.Publish(tb, channel, payload)
		}
		parked := false
		onLoop(tb, l, func() {
			for _, c := range l.conns {
				if c.state == stateOpen {
					cn = c
					parked = c.is(flagBlocked) && c.sub.Dropped() > 0
				}
			}
		})
		return parked
	})
	return cn
}

// TestPaceCloseParked: a shutdown's paced close sends a connection parked
// on a full outbound buffer (MAX_OUTBOUND_BYTES) its 1001 without draining
// its queue into gnet's buffer first, and lists it among the blocked
// connections once, not twice.
func TestPaceCloseParked(t *testing.T) {
	const channel = "market:tick:PARKED"
	rs := redistest.Start(t)
	s := startInternal(t, rs, parkingConfig(), 64)
	dialPaused(t, s.Addr(), channel)
	servertest.WaitFor(t, 10*time.Second, "the subscription upstream", func() bool {
		return strings.HasSuffix(rs.Do(t, "PUBSUB", "NUMSUB", channel), " 1")
	})
	s.loopsMu.Lock()
	l := s.loops[0]
	s.loopsMu.Unlock()

	cn := publishUntilParked(t, rs, l, channel)

	var sentBefore, sentAfter uint64
	var listed int
	var state uint8
	onLoop(t, l, func() {
		sentBefore = cn.sent
		now := time.Now()
		l.paceClose(now, now.UnixNano()) // due now: every open connection
		sentAfter = cn.sent
		state = cn.state
		for _, c := range l.blocked {
			if c == cn {
				listed++
			}
		}
	})
	if state != stateClosing {
		t.Errorf("state %d after paceClose, want closing (%d)", state, stateClosing)
	}
	if sentAfter != sentBefore {
		t.Errorf("paceClose wrote %d more frames to a connection parked on a full outbound buffer", sentAfter-sentBefore)
	}
	if listed != 1 {
		t.Errorf("the parked connection is listed %d times in blocked, want once", listed)
	}
}

// TestLoopBusy: between sweeps OnTick wakes only a busy loop, so a loop
// must be marked busy when a connection parks on a full outbound buffer
// (or it would be resumed only at the next sweep), and unmarked once
// nothing is blocked or closing (or idle loops would be woken forever).
func TestLoopBusy(t *testing.T) {
	const channel = "market:tick:BUSY"
	rs := redistest.Start(t)
	cfg := parkingConfig()
	cfg.CloseLinger = 100 * time.Millisecond
	s := startInternal(t, rs, cfg, 64)
	c := dialPaused(t, s.Addr(), channel)
	servertest.WaitFor(t, 10*time.Second, "the subscription upstream", func() bool {
		return strings.HasSuffix(rs.Do(t, "PUBSUB", "NUMSUB", channel), " 1")
	})
	s.loopsMu.Lock()
	l := s.loops[0]
	s.loopsMu.Unlock()
	if l.busy.Load() {
		t.Fatal("loop busy with one open, unblocked connection")
	}

	publishUntilParked(t, rs, l, channel)
	if !l.busy.Load() {
		t.Fatal("a connection is parked on a full outbound buffer, but the loop is not busy: only sweeps would resume it")
	}

	// The reader goes away: the loop is neither blocked nor closing any
	// more, and ticks stop between sweeps.
	_ = c.Close()
	servertest.WaitFor(t, 10*time.Second, "the loop to be idle again", func() bool {
		return !l.busy.Load()
	})
}
