package fanout

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/wsgw/gateway/wsproto"
)

// TestCoalesceDelay runs a shard goroutine against a stand-in event loop
// (this goroutine) and checks when it is woken. With a CoalesceDelay the
// first message after a quiet spell is held that long, and the messages
// that come meanwhile go out in the same wake; without one each message
// wakes the loop at once.
func TestCoalesceDelay(t *testing.T) {
	// Far above the setting's bound, so that the lower bound on the
	// wake's time holds however slow the machine; the hub reads the
	// field when its shards start.
	const hold = 300 * time.Millisecond
	tests := []struct {
		name  string
		delay time.Duration
	}{
		{"off: each message wakes the loop", 0},
		{"held: one wake for the burst, not before the delay", hold},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wakes := make(chan time.Time, 16)
			h, err := New(Config{
				RedisAddr: "127.0.0.1:1",
				SendQueue: 64,
				Handoff:   64,
				Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
			}, []Waker{wakeFunc(func() { wakes <- time.Now() })})
			if err != nil {
				t.Fatal(err)
			}
			h.cfg.CoalesceDelay = tc.delay
			sh := h.Shard(0)
			st := newOfflineStream(h, "ticks")
			addOffline(t, h, st, 1)
			done := make(chan struct{})
			stopped := make(chan struct{})
			go func() { defer close(stopped); sh.run(done) }()
			t.Cleanup(func() { close(done); <-stopped })

			var seq uint64
			send := func() {
				seq++
				sh.in <- shardOp{kind: opDeliver, st: st, frame: wsproto.BuildData(seq, "ticks", "", benchPayload, time.Now())}
			}
			wake := func() time.Time {
				t.Helper()
				select {
				case at := <-wakes:
					return at
				case <-time.After(10 * time.Second):
					t.Fatal("the loop was never woken")
					return time.Time{}
				}
			}
			if tc.delay == 0 {
				// One at a time: each is written before the next
				// is sent, each with its own wake.
				for range 3 {
					send()
					wake()
					if n := drainShard(sh); n != 1 {
						t.Fatalf("flush wrote %d frames, want 1", n)
					}
				}
				return
			}
			start := time.Now()
			for range 3 {
				send()
			}
			at := wake()
			if d := at.Sub(start); d < tc.delay {
				t.Fatalf("loop woken %v after the first message, want at least the delay %v", d, tc.delay)
			}
			if n := drainShard(sh); n != 3 {
				t.Fatalf("the held wake's flush wrote %d frames, want all 3", n)
			}
			select {
			case <-wakes:
				t.Fatal("woken again for messages already written")
			default:
			}
		})
	}
}
