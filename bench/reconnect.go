package main

import (
	"container/heap"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Reconnecting clients (storm): a socket that loses its connection, or
// fails to get one, dials again after the browser client's backoff and
// subscribes again, as server/web/gateway-client.js does. One retry
// goroutine per pool holds the pending attempts in a heap ordered by due
// time: no timer or goroutine per socket.

// backoff is the browser client's reconnect policy: defaultReconnect and
// backoffDelay in server/web/gateway-client.js.
type backoff struct {
	Initial     time.Duration `json:"initial_delay"`
	Max         time.Duration `json:"max_delay"`
	Factor      float64       `json:"factor"`
	Jitter      float64       `json:"jitter"`
	StableAfter time.Duration `json:"stable_after"` // a connection up this long resets the attempts
}

// browserBackoff mirrors the browser client's defaults (maxAttempts is
// unlimited there too: a client never gives up).
var browserBackoff = backoff{Initial: 500 * time.Millisecond, Max: 15 * time.Second, Factor: 2, Jitter: 0.5, StableAfter: 10 * time.Second}

// delay is the wait before attempt number attempt (0 for the first):
// the exponential step min(Max, Initial·Factor^attempt), less a random
// share of up to Jitter of it; random is uniform in [0, 1). Rounded to the
// millisecond, as the browser's timer is.
func (b backoff) delay(attempt int, random float64) time.Duration {
	step := math.Min(float64(b.Max), float64(b.Initial)*math.Pow(b.Factor, float64(max(0, attempt))))
	jitter := math.Min(1, math.Max(0, b.Jitter))
	return time.Duration(step * (1 - jitter*random)).Round(time.Millisecond)
}

// retryItem is a socket index due to be dialed again at due (unix nanos).
type retryItem struct {
	due int64
	idx int32
}

type retryHeap []retryItem

func (h retryHeap) Len() int           { return len(h) }
func (h retryHeap) Less(i, j int) bool { return h[i].due < h[j].due }
func (h retryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *retryHeap) Push(x any)        { *h = append(*h, x.(retryItem)) }
func (h *retryHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

// retries is a pool's pending attempts.
type retries struct {
	mu   sync.Mutex
	h    retryHeap
	wake chan struct{} // capacity 1: the earliest due time may have moved
}

func newRetries() *retries { return &retries{wake: make(chan struct{}, 1)} }

func (r *retries) push(due int64, idx int32) {
	r.mu.Lock()
	heap.Push(&r.h, retryItem{due, idx})
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// popDue removes the items due by now; wait is how long until the next
// one (-1: none pending).
func (r *retries) popDue(now int64, out []int32) (due []int32, wait time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(r.h) > 0 && r.h[0].due <= now {
		out = append(out, heap.Pop(&r.h).(retryItem).idx)
	}
	if len(r.h) == 0 {
		return out, -1
	}
	return out, time.Duration(r.h[0].due - now)
}

// retrier hands the attempts that are due to the dialers.
func (p *pool) retrier() {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	var due []int32
	for {
		var wait time.Duration
		due, wait = p.retry.popDue(time.Now().UnixNano(), due[:0])
		for _, idx := range due {
			p.dialQ <- idx // each socket is in one place at a time: never full
		}
		if wait < 0 {
			wait = time.Hour
		}
		t.Reset(wait)
		select {
		case <-p.closed:
			return
		case <-p.retry.wake:
		case <-t.C:
		}
	}
}

// reconnects reports whether this pool's sockets come back by themselves.
func (p *pool) reconnects() bool { return p.spec.Reconnect != nil && !p.stopping.Load() }

// again schedules s's next attempt after the backoff and counts it.
func (p *pool) again(s *sock, now int64) {
	d := p.spec.Reconnect.delay(s.attempt, rand.Float64())
	s.attempt++
	p.retried.Add(1)
	maxInt64(&p.maxAttempt, int64(s.attempt))
	p.retry.push(now+int64(d), s.idx)
}

// lost handles an open socket's connection ending while reconnecting is
// on: as the browser, a connection that was up long enough starts the
// backoff over. Connections open before the storm's event stand for a
// population that has been up for long (the harness only connected them
// a moment ago): they start over too.
func (p *pool) lost(s *sock, now int64) {
	p.lostOpen.Add(1)
	if at := p.eventAt.Load(); now-s.openedAt >= int64(p.spec.Reconnect.StableAfter) || (at > 0 && s.openedAt < at) {
		s.attempt = 0
	}
	s.lostAt = now
	p.again(s, now)
}

// failedAttempt counts an attempt that did not get to the subscribe ack
// (refused, reset, timed out) and schedules the next one.
func (p *pool) failedAttempt(s *sock, kind string, now int64) {
	p.mu.Lock()
	p.retryKinds[kind]++
	p.mu.Unlock()
	p.again(s, now)
}

// inherit carries what the browser keeps across attempts from the
// socket's previous connection to the next: the attempt count, when it
// was lost, and (same gateway) the last seq of each stream.
func (p *pool) inherit(s, old *sock) {
	s.attempt, s.lostAt = old.attempt, old.lostAt
	if p.spec.KeepSeq {
		s.last = old.last
		s.fresh = [2]bool{true, true}
	}
}

// back records a socket subscribed again after a loss. Loop only, under
// the loop's stats lock.
func (p *pool) back(s *sock, now int64) {
	s.openedAt = now
	if s.lostAt == 0 || p.spec.Reconnect == nil {
		return
	}
	recordUS(s.ls.outage, (now-s.lostAt)/1000)
	if at := p.eventAt.Load(); at > 0 && now > at {
		recordUS(s.ls.back, (now-at)/1000)
	}
	s.lostAt = 0
	maxInt64(&p.lastBack, now)
}

// storm marks the event (at, unix nanos) from which the time until each
// socket is back counts and, with drop, closes every open socket at once
// (reset, as a network failure would), which then come back by
// themselves.
func (p *pool) storm(at int64, drop bool) {
	p.eventAt.Store(at)
	if !drop {
		return
	}
	for i := range p.socks {
		if s := p.socks[i].Load(); s != nil && s.state.Load() == stOpen && s.gc != nil {
			_ = s.gc.Close()
		}
	}
}

func maxInt64(a *atomic.Int64, v int64) {
	for {
		cur := a.Load()
		if v <= cur || a.CompareAndSwap(cur, v) {
			return
		}
	}
}
