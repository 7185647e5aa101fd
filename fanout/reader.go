package fanout

// A stream reader: one goroutine, its own blocking Redis connection, the
// cursors and subscribers of its durable streams (docs/DURABILITY.md,
// "Readers"). Everything of a reader is touched only by its goroutine,
// except its request list (mu) and its wake-up (cancel, kick).

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/wsgw/gateway/auth"
	"github.com/wsgw/gateway/wsproto"
)

// liveCount bounds the entries of one key one live XREAD returns. A
// replay page is larger, so a replay catches up with live reads. A
// variable for the tests, which shrink it with pageMax to exercise the
// seam over many turns.
var liveCount = 256

// Sizes of a reader's work.
const (
	// blockFor is how long an idle reader's XREAD waits; readTimeout
	// bounds the round trip, so that a silent dead link shows up.
	blockFor    = 10 * time.Second
	readTimeout = blockFor + 5*time.Second
	// scanCount is SCAN's COUNT.
	scanCount = 1000
	// linger keeps a stream nobody follows read for a moment, so that a
	// client that comes straight back finds its cursors.
	linger = time.Second
	// retryMin and retryMax bound the backoff after a link failure.
	retryMin = 100 * time.Millisecond
	retryMax = 5 * time.Second
)

type ropKind uint8

const (
	ropAdd    ropKind = iota + 1 // a new stream
	ropJoin                      // a subscriber joins (Streams.Join)
	ropLeave                     // a subscriber leaves a stream
	ropRemove                    // a subscriber leaves every stream
	ropKey                       // a pattern's possible new key (keyspace notification)
)

// rop is one request for a reader.
type rop struct {
	kind   ropKind
	st     *DurableStream
	sub    *Subscriber
	resume Resume
	reqID  []byte
	key    string // ropKey: the channel
}

// rkey is one stream key a reader reads: once per turn, from the lowest
// cursor of its tracks.
type rkey struct {
	key    string
	tracks []*track
	broken bool // not a stream (WRONGTYPE): not read until a probe says so
	more   bool // the last read returned a full COUNT: read again at once
	// idFor caches the formatted ID of the cursor last read from.
	idFor wsproto.StreamID
	idStr string
}

// track is one key as one stream reads it: its own cursor, the ID of the
// last entry the stream got (or its starting position).
type track struct {
	k       *rkey
	st      *DurableStream
	channel string
	cursor  wsproto.StreamID
	ready   bool // cursor known (an exact key waits for XINFO)
}

// scanState is a SCAN iteration in progress.
type scanState struct {
	cursor  uint64
	floor   wsproto.StreamID // a pattern's first scan: where found keys start
	started bool             // a first scan's floor is taken
}

// floorOf is the largest ID below Redis time ms: every entry added later
// (with an ID Redis generates) is above it.
func floorOf(ms uint64) wsproto.StreamID {
	if ms == 0 {
		return wsproto.StreamID{}
	}
	return wsproto.StreamID{Ms: ms - 1, Seq: ^uint64(0)}
}

type reader struct {
	s  *Streams
	id int

	mu     sync.Mutex
	ops    []rop
	kick   chan struct{}
	cancel atomic.Pointer[context.CancelFunc]
	// For Streams.readerFor: keys and streams held.
	nkeys, nstreams atomic.Int64

	// Reader goroutine only.
	keys      []*rkey
	byKey     map[string]*rkey
	streams   []*DurableStream
	resumes   []*resume // in progress, at most maxResumes
	waiting   []*resume // joined while maxResumes were in progress
	down      bool
	backoff   time.Duration
	sweep     *scanState // the periodic scan for new keys of patterns
	nextSweep time.Time
	nextProbe time.Time // of the broken keys
	probes    []probe   // keys to check with TYPE
	stall     time.Duration
	// runID is the run_id of the Redis server the cursors were read
	// from ("" until known). A link failure after which the same server
	// answers, with every cursor still within its stream, lost nothing:
	// reads go by cursor. Such failures are common and harmless: after
	// a restart of Redis, each idle connection of the client's blocking
	// pool fails once, when it is next used.
	runID string
	// untold: an outage began and its subscribers were not told yet;
	// they are told when the link is not back at once, or comes back
	// from another server or with entries lost (recover).
	untold bool
}

// probe is a key to check with TYPE: a broken key, or a key a
// notification announced for a pattern stream (st).
type probe struct {
	key string
	st  *DurableStream
}

func newReader(s *Streams, id int) *reader {
	return &reader{s: s, id: id, kick: make(chan struct{}, 1), byKey: make(map[string]*rkey)}
}

// enqueue appends a request; the caller wakes the reader if it must act
// at once. Safe for concurrent use.
func (r *reader) enqueue(op rop) {
	r.mu.Lock()
	r.ops = append(r.ops, op)
	r.mu.Unlock()
}

// wake makes the reader start a turn: it cancels a blocked read (rueidis
// then sends CLIENT UNBLOCK and keeps the connection). At most one wake
// per turn does: the first swaps the cancel out. Safe for concurrent use.
func (r *reader) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
	if f := r.cancel.Swap(nil); f != nil {
		r.s.wakes.Add(1)
		(*f)()
	}
}

// hasOps reports whether requests wait. Safe for concurrent use.
func (r *reader) hasOps() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ops) > 0
}

// hasOpsFor reports whether a join of st waits. Safe for concurrent use.
func (r *reader) hasOpsFor(st *DurableStream) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, op := range r.ops {
		if op.st == st && op.kind == ropJoin {
			return true
		}
	}
	return false
}

func (r *reader) run() {
	defer r.s.wg.Done()
	defer r.shutdown()
	for {
		select {
		case <-r.s.done:
			return
		default:
		}
		if h := r.s.turnHook.Load(); h != nil {
			(*h)()
		}
		now := time.Now()
		r.applyOps(now)
		r.expire(now)
		if len(r.streams) == 0 {
			r.idle(0)
			continue
		}
		c, err := r.s.clientOf()
		if errors.Is(err, ErrStreamsClosed) {
			return
		}
		if err == nil && r.runID == "" && !r.down {
			if err = r.learnRunID(c); err != nil {
				r.outage(err)
			}
			continue
		}
		if err != nil || r.down {
			if err == nil {
				back, lost := r.recover(c)
				if back {
					if lost {
						r.tell(now)
					}
					r.untold = false
					continue
				}
			}
			if err != nil {
				r.outage(err)
			}
			r.tell(now)
			r.idle(r.backoff)
			r.backoff = min(2*r.backoff, retryMax)
			continue
		}
		t := r.plan(c, now)
		if t == nil {
			r.idle(r.untilSweep(now))
			continue
		}
		r.exec(c, t)
	}
}

// idle waits for a request, Close or d (0: no timer).
func (r *reader) idle(d time.Duration) {
	var timer <-chan time.Time
	if d > 0 {
		tm := time.NewTimer(d)
		defer tm.Stop()
		timer = tm.C
	}
	select {
	case <-r.kick:
	case <-r.s.done:
	case <-timer:
	}
}

// untilSweep is how long an idle reader (nothing to read) may wait: until
// its next sweep when it has patterns, else until a request.
func (r *reader) untilSweep(now time.Time) time.Duration {
	for _, st := range r.streams {
		if st.pattern {
			return max(r.nextSweep.Sub(now), time.Millisecond)
		}
	}
	return 0
}

// applyOps takes the waiting requests and applies them.
func (r *reader) applyOps(now time.Time) {
	r.mu.Lock()
	ops := r.ops
	r.ops = nil
	r.mu.Unlock()
	for _, op := range ops {
		switch op.kind {
		case ropAdd:
			r.addStream(op.st, now)
		case ropJoin:
			r.join(op.st, op.sub, op.resume, op.reqID)
		case ropLeave:
			r.leave(op.st, op.sub, now)
		case ropRemove:
			for _, st := range r.streams {
				r.leave(st, op.sub, now)
			}
		case ropKey:
			r.probes = append(r.probes, probe{key: r.s.keyOf(op.key), st: op.st})
		}
	}
}

// addStream starts reading a new stream: an exact channel's key (its
// cursor from another stream reading it here, else from XINFO), or a
// pattern's first scan.
func (r *reader) addStream(st *DurableStream, now time.Time) {
	r.streams = append(r.streams, st)
	st.idle = now // until its first subscriber
	if st.pattern {
		st.byChan = make(map[string]int)
		st.scan = &scanState{}
		return
	}
	t := r.addTrack(st, st.name)
	for _, o := range t.k.tracks {
		if o != t && o.ready && (!t.ready || t.cursor.Less(o.cursor)) {
			t.cursor, t.ready = o.cursor, true
		}
	}
	st.ready = t.ready
}

// addTrack adds the key of channel to st, not ready.
func (r *reader) addTrack(st *DurableStream, channel string) *track {
	key := r.s.keyOf(channel)
	k := r.byKey[key]
	if k == nil {
		k = &rkey{key: key}
		r.byKey[key] = k
		r.keys = append(r.keys, k)
		r.nkeys.Add(1)
		r.s.nkeys.Add(1)
	}
	t := &track{k: k, st: st, channel: channel}
	k.tracks = append(k.tracks, t)
	if st.byChan != nil {
		st.byChan[channel] = len(st.tracks)
	}
	st.tracks = append(st.tracks, t)
	return t
}

// join queues a resume for sub; maxResumes are in progress at once.
func (r *reader) join(st *DurableStream, sub *Subscriber, spec Resume, reqID []byte) {
	st.resumes++
	st.idle = time.Time{}
	res := &resume{sub: sub, st: st, spec: spec, reqID: reqID}
	if len(r.resumes) < maxResumes {
		r.resumes = append(r.resumes, res)
	} else {
		r.waiting = append(r.waiting, res)
	}
}

// leave ends sub's subscription to st, attached or replaying.
func (r *reader) leave(st *DurableStream, sub *Subscriber, now time.Time) {
	if i, ok := st.at[sub]; ok {
		last := len(st.subs) - 1
		moved := st.subs[last]
		st.subs[i] = moved
		st.at[moved] = i
		st.subs[last] = nil
		st.subs = st.subs[:last]
		st.subsChanged++
		delete(st.at, sub)
	}
	r.dropResumes(func(res *resume) bool { return res.st == st && res.sub == sub })
	if len(st.subs) == 0 && st.resumes == 0 && st.idle.IsZero() {
		st.idle = now
	}
}

// dropResumes ends the resumes drop selects, releasing their frames, and
// lets waiting ones in.
func (r *reader) dropResumes(drop func(*resume) bool) {
	keep := func(list []*resume) []*resume {
		out := list[:0]
		for _, res := range list {
			if drop(res) {
				res.release()
				res.st.resumes--
				continue
			}
			out = append(out, res)
		}
		clear(list[len(out):])
		return out
	}
	r.resumes = keep(r.resumes)
	r.waiting = keep(r.waiting)
	r.admit()
}

// admit moves waiting resumes in while there is room.
func (r *reader) admit() {
	for len(r.resumes) < maxResumes && len(r.waiting) > 0 {
		r.resumes = append(r.resumes, r.waiting[0])
		r.waiting[0] = nil
		r.waiting = r.waiting[1:]
	}
	if len(r.waiting) == 0 {
		r.waiting = nil
	}
}

// attach makes sub a live subscriber of st.
func (st *DurableStream) attach(sub *Subscriber) {
	if _, ok := st.at[sub]; ok {
		return
	}
	st.at[sub] = len(st.subs)
	st.subs = append(st.subs, sub)
	st.subsChanged++
}

// expire gives up the streams nobody has followed for the linger.
func (r *reader) expire(now time.Time) {
	out := r.streams[:0]
	for _, st := range r.streams {
		if st.idle.IsZero() || now.Sub(st.idle) < linger || !r.s.dropStream(st) {
			out = append(out, st)
			continue
		}
		for _, t := range st.tracks {
			r.removeTrack(t)
		}
		st.tracks = nil
	}
	clear(r.streams[len(out):])
	r.streams = out
}

// removeTrack takes t off its key, and the key off the reader once no
// track reads it.
func (r *reader) removeTrack(t *track) {
	k := t.k
	for i, o := range k.tracks {
		if o == t {
			k.tracks = append(k.tracks[:i], k.tracks[i+1:]...)
			break
		}
	}
	if len(k.tracks) > 0 {
		return
	}
	delete(r.byKey, k.key)
	for i, o := range r.keys {
		if o == k {
			r.keys = append(r.keys[:i], r.keys[i+1:]...)
			break
		}
	}
	r.nkeys.Add(-1)
	r.s.nkeys.Add(-1)
}

// shutdown releases what the reader holds when it stops.
func (r *reader) shutdown() {
	for _, res := range r.resumes {
		res.release()
	}
	for _, res := range r.waiting {
		res.release()
	}
	r.resumes, r.waiting = nil, nil
}

// turn is one round trip of a reader: the commands, what handles each
// reply, and the live read.
type turn struct {
	now      time.Time
	cmds     rueidis.Commands
	handlers []func(rueidis.RedisResult) // cmds[i]'s, nil for the live read
	xread    int                         // index of the live read; -1: none
	xkeys    []*rkey                     // the keys it reads, in order
	block    time.Duration               // > 0: the live read blocks, alone
	timeMs   uint64                      // Redis time, when TIME was sent
	hasTime  bool
	budget   int // replay frames this turn may still push
	// stallOnly: nothing to send, only replays to push once the room
	// poll's period has passed.
	stallOnly bool
	// outage is the link failure seen by a handler, if any.
	outage error
}

// add appends a command and its handler.
func (t *turn) add(cmd rueidis.Completed, h func(rueidis.RedisResult)) {
	t.cmds = append(t.cmds, cmd)
	t.handlers = append(t.handlers, h)
}

// linkErr records err when it is a link failure (not a Redis error
// reply), for the turn to end in an outage; it reports whether it was.
func (t *turn) linkErr(err error) bool {
	if err == nil || rueidis.IsRedisNil(err) {
		return false
	}
	if _, ok := rueidis.IsRedisErr(err); ok {
		return false
	}
	if t.outage == nil {
		t.outage = err
	}
	return true
}

// plan builds the turn's commands, or returns nil when the reader has
// nothing to read and nothing to do.
func (r *reader) plan(c rueidis.Client, now time.Time) *turn {
	t := &turn{now: now, xread: -1, budget: pushBudget}
	b := c.B()
	needTime := false
	for _, st := range r.streams {
		if st.scan != nil && !st.scan.started {
			needTime = true
		}
	}
	for _, res := range r.resumes {
		if res.st.pattern && res.phase == phasePage {
			needTime = true
		}
	}
	if needTime {
		t.add(b.Time().Build(), func(res rueidis.RedisResult) {
			ms, err := parseTime(res)
			if t.linkErr(err) || err != nil {
				return
			}
			t.timeMs, t.hasTime = ms, true
		})
	}
	r.planKeys(t, b)
	r.planScans(t, b, now)
	for _, res := range r.resumes {
		res.plan(r, t, b)
	}
	// The live read, over every key with a ready track.
	var keys, ids []string
	more := false
	for _, k := range r.keys {
		if k.broken {
			continue
		}
		from, ok := k.readFrom()
		if !ok {
			continue
		}
		if k.idStr == "" || k.idFor != from {
			k.idFor, k.idStr = from, from.String()
		}
		keys = append(keys, k.key)
		ids = append(ids, k.idStr)
		t.xkeys = append(t.xkeys, k)
		more = more || k.more
	}
	pending, progressNow := false, false
	for _, res := range r.resumes {
		// A replay that is not waiting for room moves on every turn
		// (a count step, a page, the seam): it must not wait for a
		// blocked read.
		pending = pending || res.waitsForRoom()
		progressNow = progressNow || !res.waitsForRoom()
	}
	if pending {
		// Replays wait for room in their subscribers' queues: poll for
		// it, backing off while none comes.
		r.stall = min(max(2*r.stall, 5*time.Millisecond), 100*time.Millisecond)
	} else {
		r.stall = 0
	}
	switch {
	case len(t.cmds) == 0 && len(keys) == 0 && !pending:
		return nil
	case len(keys) == 0:
		t.stallOnly = len(t.cmds) == 0
		return t
	}
	x := b.Xread().Count(int64(liveCount))
	if len(t.cmds) == 0 && !more && !progressNow {
		// Nothing else this turn: block, for long unless a replay waits
		// for room.
		t.block = blockFor
		if pending {
			t.block = r.stall
		}
		if d := r.untilSweep(now); d > 0 && d < t.block {
			// A pattern's sweep for new keys is due first.
			t.block = d
		}
		t.xread = 0
		t.add(x.Block(t.block.Milliseconds()).Streams().Key(keys...).Id(ids...).Build().UnblockOnCancel(), nil)
		return t
	}
	t.xread = len(t.cmds)
	t.add(x.Streams().Key(keys...).Id(ids...).Build(), nil)
	return t
}

// readFrom is where a key is read from: the lowest cursor of its ready
// tracks (the others skip what they have).
func (k *rkey) readFrom() (wsproto.StreamID, bool) {
	var from wsproto.StreamID
	ok := false
	for _, t := range k.tracks {
		if t.ready && (!ok || t.cursor.Less(from)) {
			from, ok = t.cursor, true
		}
	}
	return from, ok
}

// planKeys adds XINFO for exact keys whose cursor is not known yet, and
// TYPE for keys to probe.
func (r *reader) planKeys(t *turn, b rueidis.Builder) {
	for _, st := range r.streams {
		if st.pattern || st.ready || len(st.tracks) == 0 {
			continue
		}
		tr := st.tracks[0]
		t.add(b.XinfoStream().Key(tr.k.key).Build(), func(res rueidis.RedisResult) {
			in, err := parseXInfo(res)
			if t.linkErr(err) {
				return
			}
			if err != nil {
				r.s.log.Warn("durable stream: XINFO failed", "key", tr.k.key, "err", err)
				// A key that is not a stream: read from 0-0 once it is.
				tr.k.broken = isWrongType(err)
			}
			tr.cursor, tr.ready = in.lastGen, true
			st.ready = true
		})
	}
	for _, p := range r.probes {
		t.add(b.Type().Key(p.key).Build(), func(res rueidis.RedisResult) {
			typ, err := res.ToString()
			if t.linkErr(err) || err != nil {
				return
			}
			r.probed(p, typ)
		})
	}
	r.probes = nil
}

// probed applies a TYPE answer: a broken key that is a stream again (or
// gone) is read again; a pattern's announced key that is a stream joins it.
func (r *reader) probed(p probe, typ string) {
	if p.st == nil {
		if k := r.byKey[p.key]; k != nil && (typ == "stream" || typ == "none") {
			k.broken = false
		}
		return
	}
	if typ != "stream" || p.st.scan != nil || !r.hasStream(p.st) {
		return // not a stream, or the first scan will find it
	}
	r.addPatternKey(p.st, strings.TrimPrefix(p.key, r.s.cfg.KeyPrefix), wsproto.StreamID{})
}

func (r *reader) hasStream(st *DurableStream) bool {
	for _, o := range r.streams {
		if o == st {
			return true
		}
	}
	return false
}

// addPatternKey adds channel's key to pattern stream st at from, ready,
// unless st has it already.
func (r *reader) addPatternKey(st *DurableStream, channel string, from wsproto.StreamID) {
	if _, ok := st.byChan[channel]; ok || !auth.GlobMatch(st.name, channel) {
		return
	}
	tr := r.addTrack(st, channel)
	tr.cursor, tr.ready = from, true
	for _, res := range r.resumes {
		if res.st == st {
			res.grow()
		}
	}
}

// planScans adds the SCAN steps of the patterns' first scans and of the
// periodic sweep for new keys.
func (r *reader) planScans(t *turn, b rueidis.Builder, now time.Time) {
	hasPattern := false
	for _, st := range r.streams {
		if !st.pattern {
			continue
		}
		hasPattern = true
		sc := st.scan
		if sc == nil {
			continue
		}
		st := st
		t.add(b.Scan().Cursor(sc.cursor).Match(r.keyGlob(st.name)).Count(scanCount).Type("stream").Build(), func(res rueidis.RedisResult) {
			cursor, keys, err := parseScan(res)
			if t.linkErr(err) {
				return
			}
			if !sc.started {
				// The floor comes from this turn's TIME, which ran
				// before this first SCAN step.
				if !t.hasTime {
					return // tried again next turn
				}
				sc.floor, sc.started = floorOf(t.timeMs), true
			}
			if err != nil {
				r.s.log.Warn("durable pattern: SCAN failed", "pattern", st.name, "err", err)
				return
			}
			for _, key := range keys {
				r.addPatternKey(st, strings.TrimPrefix(key, r.s.cfg.KeyPrefix), sc.floor)
			}
			if sc.cursor, err = strconv.ParseUint(cursor, 10, 64); err != nil || sc.cursor == 0 {
				st.scan = nil
				st.ready = true
			}
		})
	}
	if !now.Before(r.nextProbe) {
		r.nextProbe = now.Add(r.s.cfg.ScanInterval)
		for _, k := range r.keys {
			if k.broken {
				r.probes = append(r.probes, probe{key: k.key})
			}
		}
	}
	if !hasPattern {
		r.sweep = nil
		return
	}
	if r.sweep == nil {
		if now.Before(r.nextSweep) {
			return
		}
		r.sweep = &scanState{}
	}
	sw := r.sweep
	t.add(b.Scan().Cursor(sw.cursor).Match(escapeGlob(r.s.cfg.KeyPrefix)+"*").Count(scanCount).Type("stream").Build(), func(res rueidis.RedisResult) {
		cursor, keys, err := parseScan(res)
		if t.linkErr(err) {
			return
		}
		if err == nil {
			for _, key := range keys {
				ch := strings.TrimPrefix(key, r.s.cfg.KeyPrefix)
				for _, st := range r.streams {
					if st.pattern && st.scan == nil {
						r.addPatternKey(st, ch, wsproto.StreamID{})
					}
				}
			}
			sw.cursor, err = strconv.ParseUint(cursor, 10, 64)
		}
		if err != nil || sw.cursor == 0 {
			if err != nil {
				r.s.log.Warn("durable patterns: SCAN failed", "err", err)
			}
			r.sweep = nil
			r.nextSweep = t.now.Add(r.s.cfg.ScanInterval)
		}
	})
}

// keyGlob is the SCAN pattern of a durable pattern's keys.
func (r *reader) keyGlob(pattern string) string { return escapeGlob(r.s.cfg.KeyPrefix) + pattern }

// escapeGlob escapes s so that a Redis glob matches it literally.
func escapeGlob(s string) string {
	if !strings.ContainsAny(s, `*?[]\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(`*?[]\`, s[i]) >= 0 {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// exec runs the turn's round trip and applies the replies: the handlers,
// then the replays (pushes and attaches), then the live entries.
func (r *reader) exec(c rueidis.Client, t *turn) {
	var results []rueidis.RedisResult
	switch {
	case t.stallOnly:
		r.idle(r.stall)
	case t.block > 0:
		r.s.reads.Add(1)
		ctx, cancel := context.WithTimeout(context.Background(), t.block+5*time.Second)
		r.cancel.Store(&cancel)
		// A request that came after applyOps must not wait for the
		// whole block: either wake sees the cancel, or this sees it.
		if r.hasOps() || r.closing() {
			if f := r.cancel.Swap(nil); f != nil {
				(*f)()
			}
		}
		res := c.Do(ctx, t.cmds[0])
		if f := r.cancel.Swap(nil); f != nil {
			(*f)()
		}
		if errors.Is(res.Error(), context.Canceled) {
			return // woken: nothing was read, the cursors stand
		}
		results = []rueidis.RedisResult{res}
	default:
		r.s.reads.Add(1)
		ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
		results = c.DoMulti(ctx, t.cmds...)
		cancel()
	}
	for i, h := range t.handlers {
		if h != nil {
			h(results[i])
		}
	}
	if t.xread >= 0 {
		t.linkErr(results[t.xread].Error())
	}
	if t.outage != nil {
		r.outage(t.outage)
		return
	}
	for _, res := range r.resumes {
		res.progress(r, t)
	}
	r.dropResumes(func(res *resume) bool { return res.done })
	if t.xread >= 0 {
		r.deliver(t, results[t.xread])
	}
}

// closing reports whether Close was called.
func (r *reader) closing() bool {
	select {
	case <-r.s.done:
		return true
	default:
		return false
	}
}

// deliver applies the live read: per entry and stream, seq + 1 and one
// frame for every attached subscriber, and the cursors move on.
func (r *reader) deliver(t *turn, res rueidis.RedisResult) {
	i := 0
	err := xreadKeys(res, func(key string, entries *rueidis.RedisMessage) error {
		for i < len(t.xkeys) && t.xkeys[i].key != key {
			i++
		}
		if i == len(t.xkeys) {
			return errReply
		}
		k := t.xkeys[i]
		n, err := walkEntries(entries, r.s.cfg.Field, func(e entry) bool {
			for _, tr := range k.tracks {
				if tr.ready && tr.cursor.Less(e.id) {
					tr.cursor = e.id
					r.live(tr, e, t.now)
				}
			}
			return true
		})
		k.more = n >= liveCount
		return err
	})
	switch {
	case err == nil:
	case isWrongType(err):
		// One key is not a stream: find it, and read the others.
		for _, k := range t.xkeys {
			r.probes = append(r.probes, probe{key: k.key})
			k.broken = true
		}
		r.s.log.Warn("durable streams: a key is not a stream (WRONGTYPE); probing the reader's keys", "reader", r.id)
	default:
		r.s.log.Warn("durable streams: reading failed", "reader", r.id, "err", err)
	}
}

// live stamps and encodes one entry for tr's stream and hands the frame to
// its attached subscribers.
func (r *reader) live(tr *track, e entry, now time.Time) {
	st := tr.st
	st.seq++
	r.s.entries.Add(1)
	if len(st.subs) == 0 {
		return
	}
	pattern := ""
	if st.pattern {
		pattern = st.name
	}
	r.s.sink.Deliver(st, st.subs, wsproto.BuildEntry(st.seq, tr.channel, pattern, e.id, e.payload, now))
}

// outage handles a failed link: the reader checks continuity (recover)
// at once, then after each backoff, before reading again; tell informs
// the subscribers unless the link came back at once with nothing lost.
func (r *reader) outage(err error) {
	if r.down {
		return
	}
	r.down = true
	r.backoff = retryMin
	r.s.log.Warn("durable streams: link to Redis failed", "reader", r.id, "err", err)
	// Scans start again: a restarted Redis has other cursors.
	for _, st := range r.streams {
		if st.scan != nil {
			st.scan.cursor = 0
		}
	}
	r.sweep = nil
	r.untold = true
	r.s.outages.Add(1)
}

// tell, once per outage, queues upstream_interrupted to every subscriber
// of the reader's streams (attached or replaying), and each stream's seq
// jumps.
func (r *reader) tell(now time.Time) {
	if !r.untold {
		return
	}
	r.untold = false
	r.s.interrupted.Add(1)
	names := make(map[*Subscriber][]string)
	var order []*Subscriber
	note := func(sub *Subscriber, name string) {
		if _, ok := names[sub]; !ok {
			order = append(order, sub)
		}
		names[sub] = append(names[sub], name)
	}
	for _, st := range r.streams {
		st.seq++
		for _, sub := range st.subs {
			note(sub, st.name)
		}
	}
	for _, res := range r.resumes {
		note(res.sub, res.st.name)
	}
	for _, sub := range order {
		f := wsproto.NewUpstreamInterrupted(names[sub], now)
		if !r.s.sink.Push(sub, f) {
			f.Release()
		}
	}
}

// recover checks, after an outage, that each key's stream did not go
// backwards (Redis restarted without its data, a failover lost entries):
// a cursor above the stream's last ID moves back to it, so that entries
// added since are read. It reports whether the link is back, and whether
// entries may have been lost meanwhile: another server answers (its
// run_id changed: a restart or a failover), a stream went backwards, or
// entries after a cursor were trimmed or deleted.
func (r *reader) recover(c rueidis.Client) (back, lost bool) {
	var keys []*rkey
	cmds := make(rueidis.Commands, 0, len(r.keys)+1)
	for _, k := range r.keys {
		keys = append(keys, k)
		cmds = append(cmds, c.B().XinfoStream().Key(k.key).Build())
	}
	cmds = append(cmds, c.B().Info().Section("server").Build())
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	results := c.DoMulti(ctx, cmds...)
	cancel()
	var t turn
	runID, err := runIDOf(results[len(results)-1])
	if t.linkErr(err) {
		return false, false
	}
	lost = runID == unknownRunID || runID != r.runID
	for i, k := range keys {
		in, err := parseXInfo(results[i])
		if t.linkErr(err) {
			return false, false
		}
		if err != nil {
			continue
		}
		for _, tr := range k.tracks {
			if !tr.ready {
				continue
			}
			if in.lastGen.Less(tr.cursor) {
				r.s.log.Warn("durable stream went backwards (Redis lost entries): reading from its last ID",
					"key", k.key, "cursor", tr.cursor.String(), "last", in.lastGen.String())
				tr.cursor = in.lastGen
				lost = true
			} else if in.trimmedAfter(tr.cursor) {
				lost = true // trimmed past the cursor while the link was down
			}
		}
	}
	r.runID = runID
	r.down = false
	r.backoff = retryMin
	r.nextSweep = time.Time{} // notifications may have been missed
	r.s.log.Info("durable streams: link to Redis is back", "reader", r.id, "lost", lost)
	return true, lost
}

// unknownRunID stands for a server that does not tell its run_id: every
// outage on it is told.
const unknownRunID = "?"

// learnRunID reads the run_id of the server the reader talks to, so that
// a link failure can tell a new server from a broken connection.
func (r *reader) learnRunID(c rueidis.Client) error {
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	id, err := runIDOf(c.Do(ctx, c.B().Info().Section("server").Build()))
	var t turn
	if t.linkErr(err) {
		return err
	}
	r.runID = id
	return nil
}

// runIDOf reads run_id from an INFO server reply: unknownRunID when the
// server refuses INFO or its reply has none; an error only for a failed
// link.
func runIDOf(res rueidis.RedisResult) (string, error) {
	info, err := res.ToString()
	if err != nil {
		if _, ok := rueidis.IsRedisErr(err); ok {
			return unknownRunID, nil
		}
		return "", err
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(line, "run_id:"); ok && strings.TrimSpace(v) != "" {
			return strings.TrimSpace(v), nil
		}
	}
	return unknownRunID, nil
}
