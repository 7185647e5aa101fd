package fanout

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

func newReadyQueue(tb testing.TB) *readyQueue {
	tb.Helper()
	q := new(readyQueue)
	q.init()
	return q
}

func newSubs(tb testing.TB, n int) []*Subscriber {
	tb.Helper()
	subs := make([]*Subscriber, n)
	for i := range subs {
		subs[i] = &Subscriber{Tag: int32(i)}
	}
	return subs
}

func subName(s *Subscriber) any {
	if s == nil {
		return "<nil>"
	}
	return s.Tag
}

func mustPopReady(tb testing.TB, q *readyQueue, want *Subscriber) {
	tb.Helper()
	if got := q.pop(); got != want {
		tb.Fatalf("pop = subscriber %v, want %v", subName(got), subName(want))
	}
}

func TestReadyQueueFIFO(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rounds [][2]int // pushes, then pops, per round
	}{
		{"one", [][2]int{{1, 1}}},
		{"one at a time", [][2]int{{1, 1}, {1, 1}, {1, 1}, {1, 1}}},
		{"burst", [][2]int{{8, 8}}},
		{"interleaved", [][2]int{{3, 1}, {2, 2}, {1, 3}, {4, 2}, {0, 2}}},
		{"drain to empty twice", [][2]int{{5, 5}, {5, 5}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := newReadyQueue(t)
			mustPopReady(t, q, nil)
			subs := newSubs(t, 64)
			var model []*Subscriber
			next := 0
			for _, r := range tc.rounds {
				for range r[0] {
					s := subs[next]
					next++
					q.push(s)
					model = append(model, s)
				}
				for range r[1] {
					mustPopReady(t, q, model[0])
					model = model[1:]
				}
			}
			if len(model) != 0 {
				t.Fatalf("bad table: %d left", len(model))
			}
			for range 3 {
				mustPopReady(t, q, nil)
			}
			// A popped subscriber may be pushed again.
			q.push(subs[0])
			mustPopReady(t, q, subs[0])
			mustPopReady(t, q, nil)
		})
	}
}

// TestReadyQueueStub covers the path where the consumer reaches the last
// element: the stub is pushed back behind it so that the element can be
// handed out while the queue stays non-empty.
func TestReadyQueueStub(t *testing.T) {
	q := newReadyQueue(t)
	a, b := &Subscriber{Tag: 1}, &Subscriber{Tag: 2}

	q.push(a)
	mustPopReady(t, q, a) // last element: goes through the stub re-insertion
	if q.tail != &q.stub || q.head.Load() != &q.stub {
		t.Fatalf("after popping the only element, tail=%v head=%v; want both at the stub", subName(q.tail), subName(q.head.Load()))
	}
	mustPopReady(t, q, nil)

	// Same again with the stub already behind the tail.
	q.push(b)
	q.push(a)
	mustPopReady(t, q, b)
	mustPopReady(t, q, a)
	mustPopReady(t, q, nil)

	// A producer between its swap and its link: the consumer sees
	// nothing yet (the producer schedules another flush), then the
	// element once linked.
	q.push(a)
	mustPopReady(t, q, a)
	b.readyNext.Store(nil)
	prev := q.head.Swap(b) // first half of push
	mustPopReady(t, q, nil)
	prev.readyNext.Store(b) // second half
	mustPopReady(t, q, b)
	mustPopReady(t, q, nil)

	// Half-pushed behind an element that is still queued: the element
	// before it is not handed out until the link is there, since the
	// consumer cannot tell it is not the last one.
	q.push(a)
	b.readyNext.Store(nil)
	prev = q.head.Swap(b)
	mustPopReady(t, q, nil)
	prev.readyNext.Store(b)
	mustPopReady(t, q, a)
	mustPopReady(t, q, b)
	mustPopReady(t, q, nil)
}

// TestReadyQueueConcurrent runs two producers (the shard and the event
// loop's Requeue) against one consumer, with the pending flag used as the
// real code uses it: a producer pushes a subscriber only when it wins the
// false→true transition, the consumer clears it after popping. Every
// subscriber pushed must be popped exactly once per push.
func TestReadyQueueConcurrent(t *testing.T) {
	for _, tc := range []struct {
		name  string
		subs  int
		iters int // per producer
	}{
		{"few subscribers, contended", 4, 100_000},
		{"many subscribers", 256, 100_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := newReadyQueue(t)
			subs := newSubs(t, tc.subs)
			const producers = 2
			pushed := make([][]int, producers) // per producer, per subscriber
			var wg sync.WaitGroup
			var running atomic.Int32
			running.Store(producers)
			for p := range producers {
				pushed[p] = make([]int, tc.subs)
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer running.Add(-1)
					for i := range tc.iters {
						// Different strides, so the producers collide
						// on the same subscribers now and then.
						s := subs[(i*(2*p+1))%tc.subs]
						if !s.pending.Load() && s.pending.CompareAndSwap(false, true) {
							q.push(s)
							pushed[p][s.Tag]++
						}
						if i%64 == 0 {
							runtime.Gosched()
						}
					}
				}()
			}

			popped := make([]int, tc.subs)
			var bad *Subscriber
			consume := func() bool {
				s := q.pop()
				if s == nil {
					return false
				}
				if !s.pending.Load() {
					bad = s
				}
				popped[s.Tag]++
				s.pending.Store(false)
				return true
			}
			for running.Load() > 0 {
				if !consume() {
					runtime.Gosched()
				}
			}
			wg.Wait()
			// All pushes are complete and visible: one drain empties it.
			for consume() {
			}
			if bad != nil {
				t.Fatalf("subscriber %v popped while not pending", bad.Tag)
			}
			total := 0
			for i, s := range subs {
				want := pushed[0][i] + pushed[1][i]
				total += want
				if popped[i] != want {
					t.Errorf("subscriber %d: pushed %d times, popped %d", i, want, popped[i])
				}
				if s.pending.Load() {
					t.Errorf("subscriber %d still pending after the drain", i)
				}
			}
			if q.pop() != nil {
				t.Fatal("queue not empty after the drain")
			}
			if total == 0 {
				t.Fatal("nothing was pushed")
			}
			t.Logf("%d pushes, all popped", total)
		})
	}
}

func TestReadyQueueAllocs(t *testing.T) {
	q := newReadyQueue(t)
	subs := newSubs(t, 16)
	allocs := testing.AllocsPerRun(1000, func() {
		for _, s := range subs {
			q.push(s)
		}
		for q.pop() != nil {
		}
	})
	if allocs != 0 {
		t.Fatalf("push/pop of 16 subscribers allocates %.1f times, want 0", allocs)
	}
}
