package fanout

import (
	"crypto/sha256"
	"fmt"
	"go/ast"
	"go/parser"
	"go/printer"
	"go/token"
	"go/types"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgw/gateway/wsproto"
)

// Review tests for the ring's release protocol (ring.go), written by an
// adversarial review of its first version: all three step-by-step
// scenarios below failed then (rings pinned by first, a drifting ring
// count, frames made unreachable by a late store to first) and led to the
// two-step release (slot, then sealing next). The step-by-step tests cannot
// pause the real push in the middle, so their producer replays push's
// `cur != nil` case up to q.link (pushUntilLink), split where the scheduler
// may preempt the shard goroutine, then calls the real link;
// TestReviewReplayMatchesPush fails when push no longer reads as replayed.

// ringsHeld walks every ring reachable from the queue's roots (first,
// rring, wring and their next links) and reports how many rings and slots
// the GC cannot take.
func ringsHeld(tb testing.TB, q *queue) (rings, slots int) {
	tb.Helper()
	seen := make(map[*ring]bool)
	for _, rg := range []*ring{q.first.Load(), q.rring, q.wring.Load()} {
		for ; rg != nil && !seen[rg]; rg = rg.next.Load() {
			seen[rg] = true
			rings++
			slots += len(rg.slots)
		}
	}
	return rings, slots
}

// TestReviewQueueFirstPinsOldRings: a connection that never stays idle
// long enough to be released, but whose consumer stalls now and then,
// grows its ring and shrinks it again after calmPushes. The rings it left
// must become garbage. Every ring links to the next, so a first that is
// set at the first push and only cleared by a successful release (the
// first protocol) keeps the whole chain of rings ever allocated alive:
// memory grew with every stall, without bound. The consumer now takes
// first with a swap.
func TestReviewQueueFirstPinsOldRings(t *testing.T) {
	for _, tc := range []struct {
		name   string
		max    int
		cycles int
	}{
		{"max64", 64, 20},
		{"max1024 (default SendQueue)", 1024, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			frames, _ := testFrames(t, 1)
			f := frames[0]
			var q queue
			for cycle := 0; cycle < tc.cycles; cycle++ {
				// A stall: the producer grows the ring up to max.
				for q.capacity() < tc.max {
					if !q.push(f, tc.max) {
						t.Fatalf("cycle %d: push refused at capacity %d", cycle, q.capacity())
					}
				}
				for q.pop() != nil {
				}
				// The consumer keeps up again: the ring shrinks.
				for i := 0; i <= calmPushes && q.capacity() != initialRing; i++ {
					q.push(f, tc.max)
					if q.pop() != f {
						t.Fatalf("cycle %d: calm push %d not popped", cycle, i)
					}
				}
				if q.capacity() != initialRing {
					t.Fatalf("cycle %d: capacity %d after %d calm pushes, want %d", cycle, q.capacity(), calmPushes, initialRing)
				}
			}
			// Everything is consumed and both sides are on the small ring:
			// at most the ring just left (its next is the live ring) may
			// still be referenced, never older ones.
			rings, slots := ringsHeld(t, &q)
			if limit := tc.max + 2*initialRing; slots > limit {
				t.Fatalf("after %d grow/shrink cycles the queue still references %d rings, %d slots (%d bytes); want at most %d slots: "+
					"first (set at the first push, never cleared by pop) leads through every ring ever linked",
					tc.cycles, rings, slots, slots*8, limit)
			}
		})
	}
}

// pushUntilLink replays push on a full ring that can grow, up to its call
// of link: the `cur != nil` case, where the shard goroutine may be
// preempted between finding the slot full and linking. pushLink is the
// rest of that push. TestReviewReplayMatchesPush holds them to ring.go.
func pushUntilLink(tb testing.TB, q *queue, max int) *ring {
	tb.Helper()
	rg := q.wring.Load()
	if rg == nil {
		tb.Fatal("setup: the queue holds no ring")
	}
	slot := &rg.slots[q.w]
	if cur := slot.Load(); cur == nil || cur == released {
		tb.Fatal("setup: the ring is not full")
	}
	q.calm = 0
	if len(rg.slots) >= max {
		tb.Fatal("setup: the ring cannot grow")
	}
	return rg
}

func pushLink(q *queue, rg *ring, f *wsproto.Frame, max int) {
	q.link(rg, min(2*len(rg.slots), max), f)
}

// replayedPushSum is the SHA-256 of what pushUntilLink and pushLink
// replay of push: its statements up to the switch on slot w, and the
// switch's `cur != nil` case, as go/printer prints them (without blank
// lines).
const replayedPushSum = "c8d929e045d2964c74d211d440dcf4fd2dfd910c512f301193a012654679db9f"

// TestReviewReplayMatchesPush reads push in ring.go and checks that the
// part the step-by-step tests replay is unchanged: when it fails, it
// prints that part as it is now; bring pushUntilLink and pushLink in step
// with it, check that the review tests still test what they say, and
// update replayedPushSum.
func TestReviewReplayMatchesPush(t *testing.T) {
	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, "ring.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var push *ast.FuncDecl
	for _, d := range file.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == "push" && fd.Recv != nil {
			push = fd
		}
	}
	if push == nil {
		t.Fatal("no method push in ring.go")
	}
	var b strings.Builder
	emit := func(n any) {
		if err := printer.Fprint(&b, fset, n); err != nil {
			t.Fatal(err)
		}
		b.WriteByte('\n')
	}
	found := false
	for _, st := range push.Body.List {
		sw, ok := st.(*ast.SwitchStmt)
		if !ok {
			emit(st)
			continue
		}
		// The switch with only the case that is replayed.
		for _, c := range sw.Body.List {
			cc := c.(*ast.CaseClause)
			if len(cc.List) == 1 && types.ExprString(cc.List[0]) == "cur != nil" {
				emit(&ast.SwitchStmt{Init: sw.Init, Body: &ast.BlockStmt{List: []ast.Stmt{cc}}})
				found = true
			}
		}
		break
	}
	// Positions taken from ring.go leave blank lines where cases were cut.
	var lines []string
	for l := range strings.Lines(b.String()) {
		if l = strings.TrimRight(l, "\n"); strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	got := strings.Join(lines, "\n")
	if sum := fmt.Sprintf("%x", sha256.Sum256([]byte(got))); !found || sum != replayedPushSum {
		t.Fatalf("push in ring.go changed since the review tests were written to replay it; it now reads (SHA-256 %s):\n%s", sum, got)
	}
}

// countAfterRemove applies Shard.remove's correction (-1 when wring !=
// nil) to count, a queue's share of Shard.queues: +1 for each push that
// allocated a ring from nothing (fresh), -1 for each successful release.
// After a remove it must be back to zero.
func countAfterRemove(q *queue, count int) int {
	if q.wring.Load() != nil {
		count--
	}
	return count
}

// TestReviewQueueReleaseDuringGrow: the consumer empties and releases the
// producer's ring while the producer is between finding it full and
// linking the next one. release reports success (ReleaseIdle: -1), so the
// producer must count its new ring as a fresh one (+1): now its link finds
// rg sealed and does. The first protocol (diagram below) kept the frames
// (a post-link check published the new ring in first) but counted no +1
// while the queue held a ring: the per-shard queues counter drifted by
// -1, and Shard.remove took one more.
//
//	producer (first protocol)         consumer
//	rg := wring; slot w full
//	                                  pop ×len(rg) (empties rg, r == w)
//	                                  release: CAS slot w → released,
//	                                           rg.next == nil → true (-1)
//	link(rg → nr holding f)
//	slot.Load() == released → first = nr
//	(fresh stays false: no +1)
func TestReviewQueueReleaseDuringGrow(t *testing.T) {
	for _, max := range []int{5, 8, 64} {
		t.Run(fmt.Sprintf("max%d", max), func(t *testing.T) {
			frames, index := testFrames(t, initialRing+2)
			var q queue
			count := 0
			push := func(f *wsproto.Frame) {
				t.Helper()
				if !q.push(f, max) {
					t.Fatal("push refused")
				}
				if q.fresh {
					q.fresh = false
					count++
				}
			}
			for _, f := range frames[:initialRing] {
				push(f)
			}

			// Producer: push(frames[initialRing]) up to its link.
			rg := pushUntilLink(t, &q, max)

			// Consumer: empties rg and releases it.
			for _, f := range frames[:initialRing] {
				mustPop(t, &q, f, index)
			}
			if !q.release(0) {
				t.Fatal("setup: release refused")
			}
			count--

			// Producer: the rest of the same push. Its link finds rg
			// sealed and starts from the new ring as from a fresh one.
			pushLink(&q, rg, frames[initialRing], max)
			if q.fresh {
				q.fresh = false
				count++
			}

			// No frame is lost, and the ring held is counted once.
			mustPop(t, &q, frames[initialRing], index)
			push(frames[initialRing+1])
			mustPop(t, &q, frames[initialRing+1], index)
			if q.wring.Load() == nil {
				t.Fatal("the producer holds no ring")
			}
			if count != 1 {
				t.Errorf("queues count = %d while the queue holds a ring, want 1 (release counted -1, no restart counted +1)", count)
			}
			if got := countAfterRemove(&q, count); got != 0 {
				t.Errorf("queues count after Shard.remove = %d, want 0", got)
			}
		})
	}
}

// TestReviewQueueStaleFirst: a release that fails on rg because the
// producer has linked behind it leaves released in slot w of rg; the
// consumer must then go on through nr and the rings after it, whatever
// the producer does. In the first protocol the producer re-read slot w
// after linking and, seeing that mark, stored first = nr; preempted before
// that store, it could publish nr after the consumer had already taken
// nr's frame and released nr. The consumer then adopted nr (r = 0, empty,
// no next) and never read first again, so the producer's restart ring and
// every frame after it were unreachable; its next release "succeeded" on
// nr and cleared first: the frames were lost for good (seen with the real
// push in TestReviewQueueSPSCCounted, about once in a thousand runs
// without -race). Now only a link that finds rg sealed publishes in first.
//
//	producer (first protocol)         consumer
//	rg := wring; slot w full
//	                                  pop ×len(rg)
//	link(rg → nr holding f4)
//	                                  release: CAS slot w → released,
//	                                           rg.next != nil → false
//	slot.Load() == released (true)
//	  …preempted…
//	                                  pop → f4 (moves to nr)
//	                                  release: nr slot 1 → released, true
//	                                           wring CAS nr → nil
//	first.Store(nr)   (stale)
//	                                  pop → nil (adopts nr from first)
//	push f5: wring nil → restart R,
//	first = R
//	                                  pop → nil: f5 never arrives
func TestReviewQueueStaleFirst(t *testing.T) {
	for _, max := range []int{5, 8, 64} {
		t.Run(fmt.Sprintf("max%d", max), func(t *testing.T) {
			frames, index := testFrames(t, initialRing+2)
			var q queue
			for _, f := range frames[:initialRing] {
				if !q.push(f, max) {
					t.Fatal("push refused")
				}
			}

			// Producer: push(frames[initialRing]) up to its link.
			rg := pushUntilLink(t, &q, max)
			slot := &rg.slots[q.w]
			// Consumer empties rg.
			for _, f := range frames[:initialRing] {
				mustPop(t, &q, f, index)
			}
			pushLink(&q, rg, frames[initialRing], max)
			// Consumer: release fails, the link is visible; its mark
			// stays in slot w of rg, which nobody but pop reads now.
			if q.release(0) {
				t.Fatal("setup: released a ring the producer has left")
			}
			if slot.Load() != released {
				t.Fatal("setup: the consumer's mark is not in slot w")
			}

			// Consumer (where the first protocol's producer was preempted
			// before its late store): take f4 from nr and release nr.
			mustPop(t, &q, frames[initialRing], index)
			if !q.release(0) {
				t.Fatal("setup: nr not released")
			}

			mustPop(t, &q, nil, index) // the first protocol adopted nr here
			if !q.push(frames[initialRing+1], max) {
				t.Fatal("push refused")
			}
			if got := q.pop(); got != frames[initialRing+1] {
				t.Errorf("pop after the restart = frame %d, want frame %d: the consumer stands on the released ring nr (r=%d), the producer's ring is only in first",
					frameIdx(index, got), initialRing+1, q.r)
			}
			q.release(0)
			for f := q.pop(); f != nil; f = q.pop() {
			}
			if q.rring == nil && q.first.Load() == nil && q.wring.Load() != nil {
				t.Errorf("the producer's ring (holding frame %d) is reachable from neither rring nor first: lost for good", initialRing+1)
			}
		})
	}
}

// TestReviewQueueSPSCCounted runs the real push and pop/release against
// each other with small bounds (max < initialRing gives smaller first
// rings; 5 grows once and shrinks back), checking order and loss like
// TestQueueSPSC, and the ring count the Subscriber keeps: after both
// sides stop and Shard.remove's correction, it must be zero.
func TestReviewQueueSPSCCounted(t *testing.T) {
	const budget = 400 * time.Millisecond // per case
	for _, max := range []int{1, 2, 3, 4, 5, 6, 8} {
		t.Run(fmt.Sprintf("max%d", max), func(t *testing.T) {
			const n = 1 << 16
			frames, index := testFrames(t, n)
			var (
				q        queue
				count    atomic.Int64
				done     atomic.Bool
				stop     atomic.Bool
				pushed   int
				wg       sync.WaitGroup
				deadline = time.Now().Add(budget)
			)
			wg.Add(1)
			go func() { // producer: retries, so nothing may be lost
				defer wg.Done()
				defer done.Store(true)
				for i := 0; i < n && !stop.Load(); i++ {
					for !q.push(frames[i], max) {
						if stop.Load() {
							return
						}
						runtime.Gosched()
					}
					if q.fresh {
						q.fresh = false
						count.Add(1)
					}
					pushed++
					if i%64 == 0 && time.Now().After(deadline) {
						return
					}
				}
			}()

			// The producer stops on its own after the budget; a consumer
			// still waiting long after that can no longer reach the
			// producer's frames.
			last, bad := consumeInOrder(&q, index, &done, deadline.Add(5*time.Second),
				func() bool { return q.release(0) }, &count, nil)
			stop.Store(true)
			wg.Wait()
			checkStress(t, &q, last, bad, pushed, count.Load())
		})
	}
}

// TestReviewQueueShrinkRacesRelease races the calm shrink against a
// release of the same ring, which TestQueueSPSC and
// TestReviewQueueSPSCCounted never reach (their consumer releases a ring
// long before calmPushes calm pushes). The producer grows the ring with a
// burst, waits until the consumer has caught up, and makes the push that
// shrinks it while the consumer tries release in a loop: the release may
// come before the push's slot load (restart), between that load and its
// link (the link finds the ring sealed and starts afresh), or after the
// link (the release fails and pop follows the link). Order, loss and the
// ring count are checked as in TestReviewQueueSPSCCounted.
func TestReviewQueueShrinkRacesRelease(t *testing.T) {
	const budget = 300 * time.Millisecond // per case
	for _, max := range []int{5, 6, 8, 16} {
		t.Run(fmt.Sprintf("max%d", max), func(t *testing.T) {
			const n = 1 << 17
			frames, index := testFrames(t, n)
			var (
				q            queue
				count        atomic.Int64
				popped       atomic.Int64
				allowRelease atomic.Bool
				done, stop   atomic.Bool
				pushed       int
				wg           sync.WaitGroup
				deadline     = time.Now().Add(budget)
			)
			burst := sum(ringSizes(max))
			wg.Add(1)
			go func() { // producer
				defer wg.Done()
				defer done.Store(true)
				push := func(i int) bool {
					for !q.push(frames[i], max) {
						if stop.Load() {
							return false
						}
						runtime.Gosched()
					}
					if q.fresh {
						q.fresh = false
						count.Add(1)
					}
					pushed++
					return true
				}
				for i := 0; i < n && !stop.Load() && time.Now().Before(deadline); {
					for end := min(i+burst, n); i < end; i++ {
						if !push(i) {
							return
						}
					}
					for popped.Load() != int64(pushed) {
						if stop.Load() {
							return
						}
						runtime.Gosched()
					}
					if i < n && q.capacity() > initialRing {
						// The state calmPushes-1 calm pushes leave, set
						// directly: a handoff per calm push would make
						// each shrink cost 255 of them.
						q.calm = calmPushes - 1
						allowRelease.Store(true)
						if !push(i) {
							return
						}
						i++
					}
					allowRelease.Store(false)
				}
			}()

			last, bad := consumeInOrder(&q, index, &done, deadline.Add(5*time.Second),
				func() bool { return allowRelease.Load() && q.release(0) }, &count, &popped)
			stop.Store(true)
			wg.Wait()
			checkStress(t, &q, last, bad, pushed, count.Load())
		})
	}
}

// consumeInOrder is the consumer of the review stress tests: it pops until
// done is set and the queue is empty, checking that frames arrive in push
// order without loss, tries release when the queue is empty (subtracting
// each success from count), and counts pops in popped (when not nil). It
// returns the last frame index and what went wrong, if anything; after
// stuck, a queue that stays empty while the producer runs means its frames
// are unreachable.
func consumeInOrder(q *queue, index map[*wsproto.Frame]int, done *atomic.Bool, stuck time.Time,
	release func() bool, count, popped *atomic.Int64) (last int, bad string) {
	last = -1
	for bad == "" {
		f := q.pop()
		if f == nil {
			if done.Load() {
				if f = q.pop(); f == nil {
					break
				}
			} else {
				if release() {
					count.Add(-1)
				}
				if time.Now().After(stuck) {
					bad = fmt.Sprintf("stuck after frame %d: the producer's frames are unreachable (rring %p, first %p, wring %p)",
						last, q.rring, q.first.Load(), q.wring.Load())
				}
				continue
			}
		}
		switch i, ok := index[f]; {
		case !ok:
			bad = "popped a frame that was never pushed"
		case i != last+1:
			bad = fmt.Sprintf("got frame %d after frame %d", i, last)
		default:
			last = i
		}
		if popped != nil {
			popped.Add(1)
		}
	}
	return last, bad
}

// checkStress fails the test if the consumer reported a problem, lost a
// frame, or the ring count is not back to zero after Shard.remove's
// correction. Call it once both sides have stopped.
func checkStress(tb testing.TB, q *queue, last int, bad string, pushed int, count int64) {
	tb.Helper()
	if bad != "" {
		tb.Fatal(bad)
	}
	if last+1 != pushed {
		tb.Fatalf("received %d frames, %d pushed", last+1, pushed)
	}
	if got := countAfterRemove(q, int(count)); got != 0 {
		tb.Fatalf("ring count after remove = %d, want 0 (count %d, wring held %v)", got, count, q.wring.Load() != nil)
	}
	tb.Logf("%d frames", pushed)
}
