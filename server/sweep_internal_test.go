package server

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/wsgw/gateway/fanout/redistest"
	"github.com/wsgw/gateway/server/servertest"
)

// TestLoopPassSurvivesFailedWrites: the once-a-second sweep and a
// shutdown's paced close write to every connection of the loop (a ping, a
// close frame); when those writes fail because the peers have reset, gnet
// closes each connection at once and OnClose removes it from the loop's
// list in the middle of the pass. The pass must neither crash on the
// emptied slots nor skip a connection: every one is written to, so every
// one is gone afterwards.
func TestLoopPassSurvivesFailedWrites(t *testing.T) {
	const conns = 5
	cases := []struct {
		name string
		pass func(l *loopState)
	}{
		{"sweep", func(l *loopState) {
			// Past the ping interval: every connection is pinged.
			l.sweep(time.Now().Add(2 * time.Minute))
		}},
		{"paceClose", func(l *loopState) {
			now := time.Now()
			l.paceClose(now, now.UnixNano()) // due now: every open connection
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rs := redistest.Start(t)
			s := startInternal(t, rs, Config{
				Addr: "127.0.0.1:0", Loops: 1, MaxMessageBytes: 64 << 10, MaxChannels: 50, MaxWildcards: 5,
				MaxMessagesPerSecond: 1000, HandshakeTimeout: 5 * time.Second, MaxOutboundBytes: 256 << 10,
				PingInterval: time.Minute, PingTimeout: 2 * time.Minute,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			}, 64)
			clients := make([]net.Conn, conns)
			for i := range clients {
				ch := fmt.Sprintf("market:tick:RESET%d", i)
				clients[i] = dialPaused(t, s.Addr(), ch)
				servertest.WaitFor(t, 10*time.Second, "the subscription upstream", func() bool {
					return strings.HasSuffix(rs.Do(t, "PUBSUB", "NUMSUB", ch), " 1")
				})
			}
			s.loopsMu.Lock()
			l := s.loops[0]
			s.loopsMu.Unlock()

			var before, after int
			var panicked any
			onLoop(t, l, func() {
				defer func() { panicked = recover() }()
				before = len(l.conns)
				// Reset every peer from the loop itself, so that the
				// loop cannot see the resets before the pass: the
				// pass's writes are the first to fail.
				for _, c := range clients {
					_ = c.(*net.TCPConn).SetLinger(0)
					_ = c.Close()
				}
				tc.pass(l)
				after = len(l.conns)
			})
			if panicked != nil {
				t.Fatalf("the pass panicked: %v", panicked)
			}
			if before != conns {
				t.Fatalf("%d connections on the loop before the pass, want %d", before, conns)
			}
			if after != 0 {
				t.Errorf("%d connections left on the loop after the pass over reset peers, want 0 (skipped)", after)
			}
		})
	}
}

// TestSweepAfterLateTick: an idle loop is woken between sweeps only for
// the sweep's tick, so a sweep tick that runs late (its loop was busy with
// other work when the tick was due) must not make the next sweep tick,
// which then comes less than a sweep period later, skip its sweep: that
// would leave handshake timeouts, pings, idle peers and expired tokens
// unchecked for nearly two sweep periods. The sweeps are seen from
// outside: a peer that answers every ping at once is pinged at each one.
func TestSweepAfterLateTick(t *testing.T) {
	rs := redistest.Start(t)
	s := startInternal(t, rs, Config{
		Addr: "127.0.0.1:0", Loops: 1, MaxMessageBytes: 64 << 10, MaxChannels: 50, MaxWildcards: 5,
		MaxMessagesPerSecond: 1000, HandshakeTimeout: 5 * time.Second, MaxOutboundBytes: 256 << 10,
		PingInterval: 100 * time.Millisecond, PingTimeout: time.Minute,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, 64)
	rc := servertest.Upgrade(t, s.Addr())
	// pinged returns when the next ping has arrived (a sweep), answered.
	pinged := func() time.Time {
		t.Helper()
		for {
			f, err := rc.ReadFrame(10 * time.Second)
			if err != nil {
				t.Fatalf("waiting for a ping: %v", err)
			}
			if f.Op == servertest.OpPing {
				at := time.Now()
				if err := rc.WriteFrame(servertest.OpPong, f.Payload); err != nil {
					t.Fatal(err)
				}
				return at
			}
		}
	}
	pinged() // in step with the sweeps
	s.loopsMu.Lock()
	l := s.loops[0]
	s.loopsMu.Unlock()
	// The loop is held for a little more than a sweep period, as a long
	// burst of work would: the sweep tick due meanwhile runs about 200 ms
	// late, when the hold ends. (Time passing on the loop is what is
	// simulated here, not a wait for anything.)
	onLoop(t, l, func() { time.Sleep(sweepEvery + 2*tickEvery) })
	// From the end of the hold on, a sweep (a ping) comes at least once
	// a sweep period, give or take the ticker's drift.
	const bound = sweepEvery + 4*tickEvery
	prev := time.Now()
	for i := range 3 {
		at := pinged()
		if gap := at.Sub(prev); gap > bound {
			t.Fatalf("ping %d after the late sweep tick came %v after the previous one, want within %v",
				i+1, gap.Round(time.Millisecond), bound)
		}
		prev = at
	}
}
