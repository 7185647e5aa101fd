package fanout

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsgw/gateway/fanout/redistest"
	"github.com/wsgw/gateway/server/servertest"
)

// TestHandoffBoundedAndCounted: with its only shard stalled, the hub goes
// on reading its Redis subscription. Redis is started with a pub/sub
// output buffer limit far below what is published, so a callback that
// blocked (and stopped rueidis reading) would get the connection killed by
// Redis. Instead the hand-off stays bounded at Handoff operations and every
// message beyond it is counted as dropped.
func TestHandoffBoundedAndCounted(t *testing.T) {
	const (
		handoff = 16
		total   = 2000
		batch   = 25 // 100 KB of output per EVAL, under the limit when read promptly
	)
	payload := strings.Repeat("p", 4096) // 8 MB in all, against a 256 KB limit
	srv := redistest.Start(t, redistest.WithArgs("--client-output-buffer-limit", "pubsub 256kb 128kb 1"))
	cfg := testConfig(srv.Addr())
	cfg.Handoff = handoff
	logs := &logRecorder{}
	cfg.Logger = slog.New(logs)
	// The shard goroutine blocks in its first wake-up (the subscribe
	// ack) until the test ends: a shard that has stopped consuming.
	stalled := make(chan struct{}, 1)
	release := make(chan struct{})
	var once sync.Once
	h, err := New(cfg, []Waker{wakeFunc(func() {
		select {
		case stalled <- struct{}{}:
		default:
		}
		<-release
	})})
	if err != nil {
		t.Fatal(err)
	}
	h.Start()
	t.Cleanup(func() {
		once.Do(func() { close(release) })
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	waitHealthy(t, h, true)
	sub := newSubscriber(h, 0)
	h.Subscribe(sub, []string{"flood"}, []string{"flood"}, nil)
	select {
	case <-stalled:
	case <-time.After(waitTimeout):
		t.Fatal("the shard never woke its loop for the ack")
	}
	if n := srv.NumSub(t, "flood"); n != 1 {
		t.Fatalf("NUMSUB flood = %d, want 1", n)
	}
	before := pubsubClient(t, srv)

	const script = `for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do redis.call('PUBLISH', KEYS[1], ARGV[3]) end return 0`
	for first := 1; first <= total; first += batch {
		last := first + batch - 1
		srv.Do(t, "EVAL", script, "1", "flood", strconv.Itoa(first), strconv.Itoa(last), payload)
		// Paced by what the hub has read, so that Redis's buffer holds
		// at most one batch if the callback keeps reading (a -race
		// build reads slower than a tight EVAL loop publishes). A
		// blocking hand-off would stop the count here.
		servertest.WaitFor(t, 10*time.Second, "batch "+strconv.Itoa(last)+" to be read from Redis", func() bool {
			return h.Stats().MessagesReceived == uint64(last)
		})
	}
	st := h.Stats()
	if st.HandoffDropped != total-handoff || st.Dropped != 0 {
		t.Fatalf("Stats() = %+v, want %d hand-off drops (all but the %d the channel holds) and no queue drop", st, total-handoff, handoff)
	}
	if st.Reconnects != 0 || !st.RedisUp || logs.count("redis link down") != 0 {
		t.Fatalf("the pub/sub link broke under the flood: %+v, logs %q", st, logs.msgs)
	}
	if after := pubsubClient(t, srv); after != before {
		t.Fatalf("pub/sub client before the flood %q, after %q: want the same connection", before, after)
	}

	// The shard resumes: the connection gets the ack, the messages the
	// channel held, then, with nothing more published, the notice of
	// what the shard missed. It is not counted as the connection's drops.
	once.Do(func() { close(release) })
	var data []uint64
	var lost []lostStream
	servertest.WaitFor(t, waitTimeout, "the messages_lost notice", func() bool {
		for f := sub.Pop(); f != nil; f = sub.Pop() {
			if seq := f.Seq(); seq > 0 {
				data = append(data, seq)
			}
			f.Release()
		}
		if f := sub.TakeLoss(); f != nil {
			lost = decodeLoss(t, f.Bytes())
			f.Release()
			return true
		}
		return false
	})
	want := []lostStream{{Stream: "flood", LastSeq: handoff, Lost: total - handoff}}
	if len(data) != handoff || data[handoff-1] != handoff || !slices.Equal(lost, want) {
		t.Fatalf("after the stall: data seqs %v, notice %+v; want 1…%d then %+v", data, lost, handoff, want)
	}
	if d := sub.Dropped(); d != 0 {
		t.Fatalf("the connection's drops: %d, want 0 (the shard missed them)", d)
	}
}

// pubsubClient is the id of the only pub/sub client Redis has.
func pubsubClient(tb testing.TB, srv *redistest.Server) string {
	tb.Helper()
	list := strings.TrimSpace(srv.Do(tb, "CLIENT", "LIST", "TYPE", "pubsub"))
	if list == "" || strings.Contains(list, "\n") {
		tb.Fatalf("CLIENT LIST TYPE pubsub = %q, want one client", list)
	}
	id, _, _ := strings.Cut(list, " ")
	return id
}

// wakeFunc adapts a function to Waker.
type wakeFunc func()

func (f wakeFunc) Wake() { f() }
