package fanout

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/wsgw/gateway/wsproto"
)

// testFrames returns n distinct frame pointers. The queue only moves
// pointers around, so zero frames (never released) are enough, and an
// index map lets a consumer tell which frame it got.
func testFrames(tb testing.TB, n int) ([]*wsproto.Frame, map[*wsproto.Frame]int) {
	tb.Helper()
	backing := make([]wsproto.Frame, n)
	frames := make([]*wsproto.Frame, n)
	index := make(map[*wsproto.Frame]int, n)
	for i := range backing {
		frames[i] = &backing[i]
		index[frames[i]] = i
	}
	return frames, index
}

// ringSizes is the sequence of ring sizes a queue bounded by max goes
// through: 4, 8, ... capped at max.
func ringSizes(max int) []int {
	sizes := []int{min(initialRing, max)}
	for last := sizes[0]; last < max; {
		last = min(2*last, max)
		sizes = append(sizes, last)
	}
	return sizes
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

// mustPop pops one frame and checks it is want.
func mustPop(tb testing.TB, q *queue, want *wsproto.Frame, index map[*wsproto.Frame]int) {
	tb.Helper()
	got := q.pop()
	if got != want {
		tb.Fatalf("pop = frame %d (%p), want frame %d (%p)", frameIdx(index, got), got, frameIdx(index, want), want)
	}
}

func frameIdx(index map[*wsproto.Frame]int, f *wsproto.Frame) int {
	if f == nil {
		return -1
	}
	if i, ok := index[f]; ok {
		return i
	}
	return -2
}

func TestQueueEmpty(t *testing.T) {
	var q queue
	if f := q.pop(); f != nil {
		t.Fatalf("pop on a new queue = %p, want nil", f)
	}
	if c := q.capacity(); c != 0 {
		t.Fatalf("capacity before the first push = %d, want 0 (no ring for an idle socket)", c)
	}
	frames, index := testFrames(t, 1)
	if !q.push(frames[0], 16) {
		t.Fatal("push on an empty queue refused")
	}
	mustPop(t, &q, frames[0], index)
	for range 3 {
		if f := q.pop(); f != nil {
			t.Fatalf("pop on a drained queue = %p, want nil", f)
		}
	}
}

// TestQueueGrowthOrder fills a queue without popping until it refuses,
// then drains it: every ring in the chain is still owed, in order.
func TestQueueGrowthOrder(t *testing.T) {
	for _, tc := range []struct {
		name string
		max  int
	}{
		{"max1", 1},
		{"max3", 3},
		{"max4", 4},
		{"max5", 5},
		{"max16", 16},
		{"max64", 64},
		{"max100", 100},
		{"max1000", 1000},
		{"max1024", 1024},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sizes := ringSizes(tc.max)
			total := sum(sizes)
			frames, index := testFrames(t, total+1)
			var q queue
			for i := 0; i < total; i++ {
				if !q.push(frames[i], tc.max) {
					t.Fatalf("push %d refused; want %d accepted (rings %v)", i, total, sizes)
				}
			}
			if got := q.capacity(); got != tc.max {
				t.Fatalf("capacity after filling = %d, want %d", got, tc.max)
			}
			for range 3 {
				if q.push(frames[total], tc.max) {
					t.Fatalf("push beyond %d queued frames (rings %v) accepted", total, sizes)
				}
			}
			// Every ring but the newest may still be undrained: the
			// queue holds less than 2*max frames when max is a power
			// of two (4+8+...+max), less than 3*max otherwise.
			if bound := queueBound(tc.max); total >= bound {
				t.Fatalf("queued %d frames, want < %d", total, bound)
			}
			for i := 0; i < total; i++ {
				mustPop(t, &q, frames[i], index)
			}
			if f := q.pop(); f != nil {
				t.Fatalf("pop after draining = frame %d", frameIdx(index, f))
			}
			// Drained: the newest ring takes max frames again and
			// no more, and order holds across its wrap-around.
			for i := 0; i < tc.max; i++ {
				if !q.push(frames[i], tc.max) {
					t.Fatalf("push %d into a drained queue refused", i)
				}
			}
			if q.push(frames[total], tc.max) {
				t.Fatal("push beyond max into the newest ring accepted")
			}
			if got := q.capacity(); got != tc.max {
				t.Fatalf("capacity after refill = %d, want %d (rings never shrink)", got, tc.max)
			}
			for i := 0; i < tc.max; i++ {
				mustPop(t, &q, frames[i], index)
			}
			if f := q.pop(); f != nil {
				t.Fatalf("pop after second drain = frame %d", frameIdx(index, f))
			}
		})
	}
}

func isPow2(n int) bool { return n > 0 && n&(n-1) == 0 }

// queueBound is the documented bound on frames held by a queue bounded by
// max.
func queueBound(max int) int {
	if max <= initialRing {
		return max + 1
	}
	if isPow2(max) {
		return 2 * max
	}
	return 3 * max
}

// TestQueueInterleaved mixes pushes and pops so that the rings wrap
// around and the queue grows while the consumer is in the middle of an
// older ring. A model FIFO says what must come out.
func TestQueueInterleaved(t *testing.T) {
	for _, tc := range []struct {
		name   string
		max    int
		pushes int // per round
		pops   int // per round
	}{
		{"balanced", 64, 3, 3},
		{"grow slowly", 64, 3, 2},
		{"grow fast", 64, 7, 1},
		{"non power of two", 100, 5, 3},
		{"tiny", 2, 3, 1},
		{"drain fast", 16, 2, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 5000
			frames, index := testFrames(t, n)
			var q queue
			var model []*wsproto.Frame
			next := 0
			accepted, refused := 0, 0
			for round := 0; next < n; round++ {
				for i := 0; i < tc.pushes && next < n; i++ {
					f := frames[next]
					next++
					if q.push(f, tc.max) {
						model = append(model, f)
						accepted++
					} else {
						refused++
					}
				}
				for i := 0; i < tc.pops; i++ {
					var want *wsproto.Frame
					if len(model) > 0 {
						want, model = model[0], model[1:]
					}
					mustPop(t, &q, want, index)
				}
				if c := q.capacity(); c > tc.max {
					t.Fatalf("round %d: capacity %d > max %d", round, c, tc.max)
				}
				if len(model) >= queueBound(tc.max) {
					t.Fatalf("round %d: %d frames queued, bound is < %d", round, len(model), queueBound(tc.max))
				}
			}
			for len(model) > 0 {
				mustPop(t, &q, model[0], index)
				model = model[1:]
			}
			if f := q.pop(); f != nil {
				t.Fatalf("pop after draining = frame %d", frameIdx(index, f))
			}
			if tc.pushes > tc.pops && refused == 0 {
				t.Fatalf("producer outran consumer but nothing was refused (accepted %d)", accepted)
			}
			if tc.pushes <= tc.pops && refused != 0 {
				t.Fatalf("consumer kept up but %d pushes were refused", refused)
			}
		})
	}
}

// TestQueueSPSC runs one producer and one consumer goroutine against each
// other (meaningful under -race). With room for everything, every frame
// arrives in order; with a small bound, what arrives is an in-order
// subsequence and exactly the accepted pushes arrive; a producer that
// retries refused pushes loses nothing even with a tiny queue.
func TestQueueSPSC(t *testing.T) {
	const n = 200_000
	frames, index := testFrames(t, n)
	for _, tc := range []struct {
		name    string
		max     int
		retry   bool // the producer retries a refused push until it is taken
		release bool // the consumer releases the ring whenever it finds the queue empty
	}{
		{"unbounded", 1 << 18, false, false},
		{"small", 8, false, false},
		{"small non power of two", 6, false, false},
		{"max1", 1, false, false},
		{"small retry", 8, true, false},
		{"non power of two retry", 12, true, false},
		{"unbounded releasing", 1 << 18, false, true},
		{"small retry releasing", 8, true, true},
		{"max1 retry releasing", 1, true, true},
		{"non power of two releasing", 12, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var (
				q        queue
				done     atomic.Bool
				accepted int
				wg       sync.WaitGroup
			)
			wg.Add(1)
			go func() { // producer
				defer wg.Done()
				defer done.Store(true)
				for i := 0; i < n; i++ {
					for {
						if q.push(frames[i], tc.max) {
							accepted++
							break
						}
						if !tc.retry {
							break
						}
						runtime.Gosched()
					}
					if c := q.capacity(); c > tc.max {
						panic("capacity above max") // not t.Fatal: wrong goroutine
					}
					if !tc.retry && i%16 == 0 {
						// Let the consumer catch up now and then, so
						// a bounded queue sees more than one burst.
						runtime.Gosched()
					}
				}
			}()

			// Consumer: this goroutine.
			received, last := 0, -1
			var bad string
			for {
				f := q.pop()
				if f == nil {
					if done.Load() {
						// Every push happened before done was set:
						// one more drain empties the queue.
						if f = q.pop(); f == nil {
							break
						}
					} else {
						if tc.release {
							q.release(0)
						}
						runtime.Gosched()
						continue
					}
				}
				i, ok := index[f]
				switch {
				case !ok:
					bad = "popped a frame that was never pushed"
				case i <= last:
					bad = "frames out of order"
				case (tc.retry || tc.max >= n) && i != last+1:
					bad = "frame lost"
				}
				if bad != "" {
					wg.Wait()
					t.Fatalf("%s: got frame %d after frame %d", bad, i, last)
				}
				last = i
				received++
			}
			wg.Wait()
			if received != accepted {
				t.Fatalf("received %d frames, producer had %d pushes accepted", received, accepted)
			}
			if (tc.retry || tc.max >= n) && received != n {
				t.Fatalf("received %d of %d frames", received, n)
			}
			if received == 0 {
				t.Fatal("nothing received")
			}
			t.Logf("max %d: %d of %d frames accepted and received", tc.max, received, n)
		})
	}
}

// TestQueueAllocs: once the rings have grown, push and pop allocate
// nothing.
func TestQueueAllocs(t *testing.T) {
	frames, _ := testFrames(t, 64)
	var q queue
	for _, f := range frames {
		q.push(f, 64)
	}
	for q.pop() != nil {
	}
	allocs := testing.AllocsPerRun(1000, func() {
		for _, f := range frames[:32] {
			q.push(f, 64)
		}
		for q.pop() != nil {
		}
	})
	if allocs != 0 {
		t.Fatalf("push/pop of 32 frames allocates %.1f times, want 0", allocs)
	}
}

// TestQueueShrinksWhenCalm: a ring grown by a stall goes back to the
// initial size once the consumer has kept up for calmPushes pushes, and
// a queue that keeps lagging keeps its grown ring.
func TestQueueShrinksWhenCalm(t *testing.T) {
	frames, _ := testFrames(t, 2)
	tests := []struct {
		name    string
		lagging bool
		want    int
	}{
		{"calm consumer shrinks", false, initialRing},
		{"lagging consumer keeps ring", true, 64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var q queue
			for i := 0; i < 64; i++ { // stall: grow to 64
				if !q.push(frames[0], 64) {
					t.Fatalf("push %d refused", i)
				}
			}
			if q.capacity() != 64 {
				t.Fatalf("capacity after stall = %d, want 64", q.capacity())
			}
			for q.pop() != nil {
			}
			for i := 0; i < 2*calmPushes; i++ {
				if !q.push(frames[1], 64) {
					t.Fatalf("calm push %d refused", i)
				}
				if !tt.lagging {
					if q.pop() != frames[1] {
						t.Fatalf("pop %d: wrong frame", i)
					}
				} else if i%32 == 31 {
					for j := 0; j < 31; j++ {
						q.pop()
					}
				}
			}
			if got := q.capacity(); got != tt.want {
				t.Fatalf("capacity = %d, want %d", got, tt.want)
			}
		})
	}
}

// TestQueueRelease: the consumer gives an idle queue's ring back, only
// when nothing is queued and only after idleRounds quiet calls, and the
// queue goes on in order afterwards.
func TestQueueRelease(t *testing.T) {
	frames, index := testFrames(t, 16)
	tests := []struct {
		name string
		run  func(t *testing.T, q *queue)
	}{
		{"never used: nothing to release", func(t *testing.T, q *queue) {
			if q.release(0) {
				t.Fatal("released a queue that has no ring")
			}
		}},
		{"idle rounds first, then released", func(t *testing.T, q *queue) {
			q.push(frames[0], 64)
			mustPop(t, q, frames[0], index)
			for i := 0; i < 3; i++ {
				if q.release(3) {
					t.Fatalf("released after %d quiet rounds, want 3", i)
				}
			}
			if !q.release(3) {
				t.Fatal("not released after 3 quiet rounds")
			}
			if q.rring != nil || q.first.Load() != nil || q.wring.Load() != nil {
				t.Fatal("the released ring is still referenced: the GC cannot take it")
			}
			mustPop(t, q, nil, index)
			q.push(frames[1], 64)
			q.push(frames[2], 64)
			mustPop(t, q, frames[1], index)
			mustPop(t, q, frames[2], index)
		}},
		{"a pop restarts the idle count", func(t *testing.T, q *queue) {
			q.push(frames[0], 64)
			q.release(1)
			mustPop(t, q, frames[0], index)
			if q.release(1) {
				t.Fatal("released right after a pop")
			}
			if !q.release(1) {
				t.Fatal("not released after a quiet round")
			}
		}},
		{"a queued frame keeps the ring", func(t *testing.T, q *queue) {
			q.push(frames[0], 64)
			if q.release(0) {
				t.Fatal("released a ring holding a frame")
			}
			mustPop(t, q, frames[0], index)
			mustPop(t, q, nil, index)
		}},
		{"grown rings, released, order kept", func(t *testing.T, q *queue) {
			for _, f := range frames[:10] {
				q.push(f, 64)
			}
			for _, f := range frames[:10] {
				mustPop(t, q, f, index)
			}
			if !q.release(0) {
				t.Fatal("not released")
			}
			for _, f := range frames[10:] {
				q.push(f, 64)
			}
			if got := q.capacity(); got != initialRing*2 {
				t.Fatalf("capacity after release and 6 pushes = %d, want %d", got, initialRing*2)
			}
			for _, f := range frames[10:] {
				mustPop(t, q, f, index)
			}
		}},
		{"producer already on a newer ring", func(t *testing.T, q *queue) {
			// Fill the first ring, then one more: the producer links
			// a second ring. The consumer empties the first and
			// stands on its (free) slot 0 without having seen the
			// link yet.
			for _, f := range frames[:initialRing+1] {
				q.push(f, 64)
			}
			first := q.rring
			if first == nil {
				first = q.first.Load()
			}
			for _, f := range frames[:initialRing] {
				q.rring = first
				got := first.slots[q.r].Swap(nil)
				if got != f {
					t.Fatalf("slot %d holds frame %d, want %d", q.r, frameIdx(index, got), frameIdx(index, f))
				}
				q.r = (q.r + 1) % int32(len(first.slots))
			}
			if q.release(0) {
				t.Fatal("released a ring the producer has left: the frames after it would be lost")
			}
			mustPop(t, q, frames[initialRing], index)
			mustPop(t, q, nil, index)
		}},
		{"released ring met by a shrinking producer", func(t *testing.T, q *queue) {
			for _, f := range frames[:16] { // grow to 16
				q.push(f, 16)
			}
			for _, f := range frames[:16] {
				mustPop(t, q, f, index)
			}
			// Calm pushes up to the one that would shrink.
			for i := 0; i < calmPushes-1; i++ {
				q.push(frames[0], 16)
				mustPop(t, q, frames[0], index)
			}
			if !q.release(0) {
				t.Fatal("not released")
			}
			q.push(frames[1], 16) // finds released, not free: restarts
			mustPop(t, q, frames[1], index)
			if got := q.capacity(); got != initialRing {
				t.Fatalf("capacity = %d, want %d", got, initialRing)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var q queue
			tt.run(t, &q)
		})
	}
}
