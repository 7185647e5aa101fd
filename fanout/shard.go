package fanout

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsgw/gateway/wsproto"
)

type opKind uint8

const (
	opDeliver     opKind = iota + 1 // frame for every subscriber of st in this shard
	opAdd                           // sub joins streams, then ack
	opDel                           // sub leaves streams, then ack
	opRemove                        // sub leaves everything; drain its queue
	opInterrupted                   // tell every subscriber its streams lost messages
	opRefuse                        // sub's subscribe request was refused: error frame and Refusal
	opDrop                          // st is gone (Redis refused it): every subscriber leaves, told why
	opDurable                       // a durable stream's live frame for subs (durablehub.go)
	opPush                          // a frame a stream reader pushed for sub (durablehub.go)
	opBacklog                       // try sub's backlog again (durablehub.go)
	opJoin                          // sub joins streams, answered by its loop already (Hub.JoinNow)
)

// shardOp is one unit of work for a shard. Data deliveries and
// membership changes share one channel so a subscriber's ack is always
// queued before the first data frame of the streams it acknowledges.
type shardOp struct {
	kind    opKind
	st      *stream
	frame   *wsproto.Frame // reference owned by the op
	sub     *Subscriber
	streams []*stream
	names   []string      // opRefuse: the channels the request would have added
	subs    []*Subscriber // opDurable: the frame's subscribers in this shard
	ps      *pushState    // opPush, opBacklog
}

// Refusal tells the event loop that its connection's subscriber does not
// follow Channels after all: the hub refused the subscribe request that
// added them (Redis refused a stream, or the gateway follows MaxStreams
// streams), or dropped a stream it followed (Redis refused it on a
// reconnect). The error frame that tells the client is queued for Sub.
type Refusal struct {
	Sub      *Subscriber
	Channels []string
}

// Shard owns the subscriber lists of the connections of one event loop
// (each stream's subs[idx], each Subscriber's members): only its goroutine
// touches them. That goroutine is the only producer of those connections'
// queues; the event loop is their only consumer until the connection is
// removed (Hub.Remove), after which the shard empties the queue itself.
// The ready queue has two producers, the shard goroutine and the loop
// (Requeue), and one consumer, the loop. Nothing on the delivery path
// takes a lock: frames go into the queues with atomics, and the loop is
// woken once per burst through the Waker.
type Shard struct {
	idx int
	hub *Hub
	in  chan shardOp

	ready      readyQueue
	scheduled  atomic.Bool // set by whoever calls Wake (shard or loop), cleared by BeginFlush
	wakeNeeded bool        // shard goroutine only: ready queue grew in this burst
	waker      Waker       // set by New

	// queues counts this shard's subscribers holding a ring: +1 when
	// the producer allocates one from nothing, -1 when the consumer
	// releases it or the subscriber is removed with one.
	queues atomic.Int64

	delivered atomic.Uint64 // frames written by the loop (counted by the loop)
	dropped   atomic.Uint64 // frames the shard's connections' full queues refused

	// Refusals for the event loop (TakeRefusals): appended by the shard
	// goroutine, taken by the loop. Rare, so a mutex; hasRefusals keeps
	// the loop's every flush off it.
	refMu       sync.Mutex
	refusals    []Refusal
	hasRefusals atomic.Bool

	// backlogs: frames of stream readers held back for subscribers
	// whose queue was full (durablehub.go). Shard goroutine only.
	backlogs map[*Subscriber]*backlog

	// Messages the hub could not hand to this shard (its channel was
	// full), per stream: noted by the pub/sub readers (handoffLost),
	// taken by the shard goroutine, which reports them to the stream's
	// subscribers here as messages_lost. Only when the shard falls
	// behind, so a mutex; hasLost keeps the shard's every burst off it.
	lostMu  sync.Mutex
	lost    map[*stream]*lostRun
	hasLost atomic.Bool
	kick    chan struct{} // capacity 1: wakes a shard that has nothing else to do
}

// BeginFlush must be called by the event loop at the start of each flush,
// before the first NextReady, so that a subscriber made ready during the
// flush schedules another one. Event-loop only.
func (sh *Shard) BeginFlush() { sh.scheduled.Store(false) }

// NextReady returns the next subscriber with frames waiting, or nil.
// Event-loop only.
func (sh *Shard) NextReady() *Subscriber {
	s := sh.ready.pop()
	if s != nil {
		// Cleared before the caller drains, so a frame pushed after
		// the drain re-queues the subscriber.
		s.pending.Store(false)
	}
	return s
}

// Requeue puts s back in the ready queue because its queue still holds
// frames after a bounded drain, and makes sure a flush is scheduled.
// Event-loop only (the ready queue accepts several producers).
func (sh *Shard) Requeue(s *Subscriber) {
	if s.pending.CompareAndSwap(false, true) {
		sh.ready.push(s)
	}
	if sh.scheduled.CompareAndSwap(false, true) {
		sh.waker.Wake()
	}
}

// TakeRefusals returns the refusals recorded since the last call, or nil.
// A Refusal is recorded before its error frame is queued, so once the loop
// has popped that frame, TakeRefusals returns it (or returned it before).
// The loop calls it at the start of each flush and before it acts on a
// client's command, and removes the channels from its view of each
// connection that is still open. One atomic load when there is none.
// Event-loop only.
func (sh *Shard) TakeRefusals() []Refusal {
	if !sh.hasRefusals.Load() {
		return nil
	}
	sh.refMu.Lock()
	r := sh.refusals
	sh.refusals = nil
	sh.hasRefusals.Store(false)
	sh.refMu.Unlock()
	return r
}

// AddDelivered counts frames written to sockets. Event-loop only (one
// uncontended atomic per flush, not per frame).
func (sh *Shard) AddDelivered(n int) { sh.delivered.Add(uint64(n)) }

func (sh *Shard) run(done <-chan struct{}) {
	retry := time.NewTimer(backlogRetry)
	retry.Stop()
	armed := false
	delay := sh.hub.cfg.CoalesceDelay
	var hold *time.Timer
	if delay > 0 {
		hold = time.NewTimer(delay)
		hold.Stop()
	}
	quiet := true // the last burst emptied the channel
	for {
		if len(sh.backlogs) > 0 && !armed {
			retry.Reset(backlogRetry)
			armed = true
		}
		select {
		case <-done:
			return
		case op := <-sh.in:
			sh.handle(op)
			if hold != nil && quiet && sh.wakeNeeded {
				// The first message after a quiet spell: let the
				// ones right behind it gather in the channel. The
				// shard waits on the timer alone, so their sends
				// wake no thread.
				hold.Reset(delay)
				select {
				case <-done:
					return
				case <-hold.C:
				}
			}
		case <-sh.kick:
		case <-retry.C:
			armed = false
			sh.retryBacklogs(nil)
		}
		// Drain the burst before waking the loop once for all of it.
		quiet = false
	burst:
		for i := 0; i < 1024; i++ {
			select {
			case op := <-sh.in:
				sh.handle(op)
			default:
				quiet = true
				break burst
			}
		}
		if sh.hasLost.Load() {
			sh.tellLost()
		}
		if sh.wakeNeeded {
			sh.wakeNeeded = false
			if sh.scheduled.CompareAndSwap(false, true) {
				sh.waker.Wake()
			}
		}
	}
}

func (sh *Shard) handle(op shardOp) {
	switch op.kind {
	case opDeliver:
		sh.deliver(op.st, op.frame)
	case opAdd:
		sh.add(op.sub, op.streams, op.frame)
	case opDel:
		sh.del(op.sub, op.streams, op.frame)
	case opRemove:
		sh.remove(op.sub)
	case opInterrupted:
		sh.interrupted(op.streams)
	case opRefuse:
		sh.refuse(op.sub, op.names, op.frame)
	case opDrop:
		sh.drop(op.st, op.frame)
	case opDurable:
		sh.durable(op.subs, op.frame)
	case opPush:
		sh.push(op.sub, op.frame, op.ps)
	case opBacklog:
		sh.retryBacklogs(op.sub)
	case opJoin:
		sh.join(op.sub, op.streams)
	}
}

// handoffLost notes that the message seq of st could not be handed to
// the shard. A drop that does not follow the stream's last one starts a
// new run, as in lossReport.add. Safe for concurrent use (the readers of
// several links); never blocks.
func (sh *Shard) handoffLost(st *stream, seq uint64) {
	sh.lostMu.Lock()
	if sh.lost == nil {
		sh.lost = make(map[*stream]*lostRun)
	}
	r := sh.lost[st]
	switch {
	case r == nil:
		sh.lost[st] = &lostRun{st: st, lastSeq: seq - 1, lost: 1}
	case seq == r.lastSeq+r.lost+1:
		r.lost++
	default:
		r.lastSeq, r.lost = seq-1, 1
	}
	sh.lostMu.Unlock()
	sh.hasLost.Store(true)
	select {
	case sh.kick <- struct{}{}:
	default:
	}
}

// tellLost reports the messages the shard missed to the subscribers of
// their streams here, once the shard has caught up with its channel:
// each connection gets a messages_lost notice once it has drained its
// queue (Subscriber.TakeLoss), even if its streams stay quiet. Shard
// goroutine only.
func (sh *Shard) tellLost() {
	sh.lostMu.Lock()
	lost := sh.lost
	sh.lost = nil
	sh.hasLost.Store(false)
	sh.lostMu.Unlock()
	for _, r := range lost {
		for _, s := range r.st.subs[sh.idx] {
			s.lostUpstream(r.st, r.lastSeq, r.lost)
		}
	}
}

// refuse records the Refusal for the loop and queues the error frame of a
// refused subscribe request. Nothing was joined. The Refusal comes first:
// a loop that has written the frame (and so may read the client's next
// command) is then sure to find it in TakeRefusals.
func (sh *Shard) refuse(s *Subscriber, names []string, f *wsproto.Frame) {
	if s.q.removed {
		f.Release()
		return
	}
	if len(names) > 0 {
		sh.record(Refusal{Sub: s, Channels: names})
	}
	sh.reply(s, f)
}

// drop takes every subscriber of this shard off st, which the hub has
// dropped, and tells each with a share of f.
func (sh *Shard) drop(st *stream, f *wsproto.Frame) {
	subs := slices.Clone(st.subs[sh.idx])
	for _, s := range subs {
		sh.leave(s, st)
		sh.record(Refusal{Sub: s, Channels: []string{st.name}}) // before the frame, as in refuse
		f.Retain(1)
		sh.reply(s, f)
	}
	f.Release()
}

// record hands r to the loop and makes sure it is woken even if the
// subscriber's queue was full. Shard goroutine only.
func (sh *Shard) record(r Refusal) {
	sh.refMu.Lock()
	sh.refusals = append(sh.refusals, r)
	sh.hasRefusals.Store(true)
	sh.refMu.Unlock()
	sh.wakeNeeded = true
}

// deliver hands f to every subscriber of st in this shard. The op's
// reference is released at the end; each queued copy holds its own.
func (sh *Shard) deliver(st *stream, f *wsproto.Frame) {
	subs := st.subs[sh.idx]
	if n := len(subs); n > 0 {
		// One atomic add for the whole shard rather than one per
		// subscriber; refused pushes give theirs back.
		f.Retain(int32(n))
		for _, s := range subs {
			if !s.enqueue(f, st) {
				f.Release()
			}
		}
	}
	f.Release()
}

func (sh *Shard) reply(s *Subscriber, f *wsproto.Frame) {
	if s.q.removed || !s.enqueue(f, nil) {
		f.Release()
	}
}

func (sh *Shard) add(s *Subscriber, streams []*stream, ack *wsproto.Frame) {
	if s.q.removed {
		// The connection closed while its subscribe was in flight.
		for _, st := range streams {
			sh.hub.release(st)
		}
		ack.Release()
		return
	}
	for _, st := range streams {
		subs := st.subs[sh.idx]
		s.members = append(s.members, membership{st: st, idx: int32(len(subs))})
		st.subs[sh.idx] = append(subs, s)
		st.shardSubs[sh.idx].Add(1)
	}
	sh.reply(s, ack)
}

// join is add for Hub.JoinNow: the loop has acked the request, and the
// streams were not asked of the control goroutine, so one of them may
// have been dropped since (Redis refused it on a reconnect). JoinNow
// counted s in shardSubs before this reads dropped, and Hub.drop sets
// dropped before refusedOnConnect reads shardSubs: one of the two sees
// the other. Either this finds dropped set and refuses s the stream
// itself (an opDrop sent because of that count, arriving first or
// after, finds s not a member), or it joins s and the control goroutine,
// having seen the count, sends the opDrop that takes s off after this.
// Shard goroutine only.
func (sh *Shard) join(s *Subscriber, streams []*stream) {
	if s.q.removed {
		for _, st := range streams {
			st.shardSubs[sh.idx].Add(-1)
			sh.hub.release(st)
		}
		return
	}
	var gone []string
	for _, st := range streams {
		// JoinNow counted s in shardSubs already.
		if st.dropped.Load() {
			st.shardSubs[sh.idx].Add(-1)
			sh.hub.release(st)
			gone = append(gone, st.name)
			continue
		}
		subs := st.subs[sh.idx]
		s.members = append(s.members, membership{st: st, idx: int32(len(subs))})
		st.subs[sh.idx] = append(subs, s)
	}
	if gone != nil {
		sh.record(Refusal{Sub: s, Channels: gone})
		sh.reply(s, wsproto.NewUpstreamRefused(gone, nil, time.Now()))
	}
}

func (sh *Shard) del(s *Subscriber, streams []*stream, ack *wsproto.Frame) {
	for _, st := range streams {
		sh.leave(s, st)
	}
	sh.reply(s, ack)
}

// leave removes s from st by swapping the last subscriber into its slot.
func (sh *Shard) leave(s *Subscriber, st *stream) {
	mi := -1
	for i, m := range s.members {
		if m.st == st {
			mi = i
			break
		}
	}
	if mi < 0 {
		return
	}
	idx := s.members[mi].idx
	s.members[mi] = s.members[len(s.members)-1]
	s.members = s.members[:len(s.members)-1]

	subs := st.subs[sh.idx]
	last := len(subs) - 1
	if moved := subs[last]; int(idx) != last {
		subs[idx] = moved
		for i := range moved.members {
			if moved.members[i].st == st {
				moved.members[i].idx = idx
				break
			}
		}
	}
	subs[last] = nil
	st.subs[sh.idx] = subs[:last]
	st.shardSubs[sh.idx].Add(-1)
	sh.hub.release(st)
}

func (sh *Shard) remove(s *Subscriber) {
	for len(s.members) > 0 {
		sh.leave(s, s.members[len(s.members)-1].st)
	}
	s.members = nil
	s.q.removed = true
	sh.forget(s)
	if s.q.wring.Load() != nil {
		// Not released: it held a ring until now. (A release clears
		// wring, or the restart that follows it re-counts.)
		s.shard.queues.Add(-1)
	}
	// The event loop stopped consuming before Remove was called (and
	// Remove's hand-off orders its last Pop before this), so the shard
	// may act as consumer now and give the frames back.
	for f := s.q.pop(); f != nil; f = s.q.pop() {
		f.Release()
	}
}

// interrupted queues one upstream_interrupted error to each subscriber of
// streams (those of a link that broke), naming the ones it follows. The
// shard keeps no set of its subscribers for this rare event (at most
// 1 KiB per idle socket): a subscriber of several streams is told once
// thanks to a set built here.
func (sh *Shard) interrupted(streams []*stream) {
	now := time.Now()
	hit := make(map[*stream]struct{}, len(streams))
	for _, st := range streams {
		hit[st] = struct{}{}
	}
	told := make(map[*Subscriber]struct{})
	for _, st := range streams {
		for _, s := range st.subs[sh.idx] {
			if _, ok := told[s]; ok {
				continue
			}
			told[s] = struct{}{}
			names := make([]string, 0, len(s.members))
			for _, m := range s.members {
				if _, ok := hit[m.st]; ok {
					names = append(names, m.st.name)
				}
			}
			f := wsproto.NewUpstreamInterrupted(names, now)
			if !s.enqueue(f, nil) {
				f.Release()
			}
		}
	}
}
