package fanout

// A subscription joining a durable stream: its replay, from the client's
// positions to the reader's cursors, and the seam where it is attached to
// live delivery (docs/DURABILITY.md, "The seam" and "The replay plan").
// Reader goroutine only.

import (
	"slices"

	"github.com/redis/rueidis"

	"github.com/wsgw/gateway/auth"
	"github.com/wsgw/gateway/wsproto"
)

const (
	// maxResumes bounds the replays a reader runs at once; later joins
	// wait in order (not attached yet, they lose nothing by waiting).
	maxResumes = 64
	// pushBudget bounds the replay frames a reader pushes per turn, so
	// that live delivery of its other keys waits one turn at most.
	pushBudget = 1024
	// pageBudget bounds the entries of one replay's pages in one turn.
	pageBudget = 64 << 10
)

// pageMax is the largest replay page per key; a pattern over many keys
// takes smaller ones (pageFor), so a turn's pages stay bounded. A variable
// for the tests (see liveCount).
var pageMax = 1000

type phase uint8

const (
	phaseWait  phase = iota // the stream's cursors are not known yet
	phasePlan               // XINFO: trimmed or reset positions
	phaseCount              // backwards from the cursors: the MAX_REPLAY cut
	phasePage               // forwards in pages up to the cursors, then the seam
)

// resume is one subscription joining a stream, until it is attached.
type resume struct {
	sub     *Subscriber
	st      *DurableStream
	spec    Resume
	reqID   []byte
	phase   phase
	started bool // positions set (start)
	// probed: the keys of the client's channel positions were asked
	// for (probeChannels); probesLeft answers are awaited.
	probed     bool
	probesLeft int
	done       bool // attached (or given up): the reader drops it

	// Per track of st, by index (a pattern's grow: grow).
	pos      []wsproto.StreamID // what the subscriber has, or will have once pending is pushed
	explicit []bool             // pos came from a position the client gave for that channel
	byChan   map[string]wsproto.StreamID

	// phasePlan: XINFO replies still awaited this turn.
	planLeft int
	// phaseCount: bound is the cursor when counting began; back holds
	// IDs fetched backwards and not counted yet, newest first; backEnd
	// the end of the next backward page (inclusive while !backStarted).
	bound       []wsproto.StreamID
	back        [][]wsproto.StreamID
	backEnd     []wsproto.StreamID
	backStarted []bool
	exhausted   []bool
	counted     int

	// phasePage: this turn's pages, and whether the seam may be crossed.
	pages     [][]entry
	paged     []bool
	pageSize  int  // the COUNT of this turn's pages
	turnReady bool // pages and checks went out this turn, with nothing pending
	ahead     bool // an entry lies between a cursor and a position ahead of it

	pending  []*wsproto.Frame // built, not pushed yet (no room)
	stalled  bool             // the sink refused a frame: poll for room
	replayed uint64           // replay frames pushed
	// truncFrame is the replay_truncated error among pending, which is
	// not a replayed entry.
	truncFrame *wsproto.Frame

	trunc       wsproto.Truncation
	truncated   bool
	truncQueued bool
}

// waitsForRoom reports whether the subscriber's queue refused a frame of
// the replay (or its "replayed" frame).
func (res *resume) waitsForRoom() bool { return res.stalled }

// release gives back the frames the resume holds.
func (res *resume) release() {
	for _, f := range res.pending {
		f.Release()
	}
	res.pending = nil
}

// probeChannels makes sure a pattern stream reads the keys the client
// has positions for: a key this reader has not found yet (another gateway
// had) would otherwise be found later and read from its first entry,
// which the client has. It sends TYPE for each such channel, once, and
// reports whether the resume must wait for the answers; the keys that are
// streams join the stream (addPatternKey), read from 0-0.
func (res *resume) probeChannels(r *reader, t *turn, b rueidis.Builder) bool {
	if !res.st.pattern || res.probed {
		return res.probesLeft > 0
	}
	res.probed = true
	for _, c := range res.spec.Channels {
		if _, ok := res.st.byChan[c.Channel]; ok || !auth.GlobMatch(res.st.name, c.Channel) {
			continue
		}
		ch := c.Channel
		res.probesLeft++
		t.add(b.Type().Key(r.s.keyOf(ch)).Build(), func(reply rueidis.RedisResult) {
			typ, err := reply.ToString()
			if t.linkErr(err) {
				res.probed = false // asked again after the outage
				res.probesLeft = 0
				return
			}
			if typ == "stream" {
				r.addPatternKey(res.st, ch, wsproto.StreamID{})
			}
			res.probesLeft--
		})
	}
	return res.probesLeft > 0
}

// start sets the positions once the stream's cursors are known.
func (res *resume) start() {
	if len(res.spec.Channels) > 0 {
		res.byChan = make(map[string]wsproto.StreamID, len(res.spec.Channels))
		for _, c := range res.spec.Channels {
			res.byChan[c.Channel] = c.ID
		}
	}
	res.started = true
	res.grow()
	if res.spec.Resuming() {
		res.phase = phasePlan
	} else {
		res.phase = phasePage
	}
}

// grow gives the tracks st gained since start their positions: the one
// the client gave for the channel, else the pattern's, else the track's
// cursor (nothing to replay).
func (res *resume) grow() {
	if !res.started {
		return // start will
	}
	for i := len(res.pos); i < len(res.st.tracks); i++ {
		tr := res.st.tracks[i]
		p, explicit, ok := res.positionOf(tr.channel)
		if !ok {
			p = tr.cursor
		}
		res.pos = append(res.pos, p)
		res.explicit = append(res.explicit, explicit)
		if res.bound != nil {
			// Counting is under way: a new key has nothing to count.
			res.bound = append(res.bound, tr.cursor)
			res.back = append(res.back, nil)
			res.backEnd = append(res.backEnd, tr.cursor)
			res.backStarted = append(res.backStarted, true)
			res.exhausted = append(res.exhausted, true)
		}
	}
}

// positionOf is the client's position for channel.
func (res *resume) positionOf(channel string) (id wsproto.StreamID, explicit, ok bool) {
	if !res.st.pattern {
		return res.spec.Since, true, res.spec.HasSince
	}
	if id, ok := res.byChan[channel]; ok {
		return id, true, true
	}
	return res.spec.Since, false, res.spec.HasSince
}

// truncate notes why the replay is incomplete and which channel: reset
// wins over max_replay, which wins over trimmed.
func (res *resume) truncate(reason, channel string) {
	rank := map[string]int{wsproto.ReasonTrimmed: 1, wsproto.ReasonMaxReplay: 2, wsproto.ReasonReset: 3}
	if !res.truncated || rank[reason] > rank[res.trunc.Reason] {
		res.trunc.Reason = reason
	}
	res.truncated = true
	if !slices.Contains(res.trunc.Channels, channel) {
		res.trunc.Channels = append(res.trunc.Channels, channel)
	}
}

// plan adds the resume's commands to the turn.
func (res *resume) plan(r *reader, t *turn, b rueidis.Builder) {
	res.turnReady = false
	if res.phase == phaseWait {
		if !res.st.ready || res.probeChannels(r, t, b) {
			return
		}
		res.start()
	}
	if res.phase == phasePlan {
		res.planPositions(r, t, b)
		if res.planLeft > 0 {
			return
		}
		res.phase = phaseCount
	}
	if res.phase == phaseCount {
		if res.bound == nil {
			res.startCount()
		}
		res.planCount(r, t, b)
		return
	}
	res.planPages(r, t, b)
}

// planPositions sends XINFO for each key whose position may be trimmed
// or reset: a position the client gave for it, or the pattern's below the
// cursor.
func (res *resume) planPositions(r *reader, t *turn, b rueidis.Builder) {
	res.planLeft = 0
	for i, tr := range res.st.tracks {
		if tr.k.broken || (!res.explicit[i] && !res.pos[i].Less(tr.cursor)) {
			continue
		}
		res.planLeft++
		t.add(b.XinfoStream().Key(tr.k.key).Build(), func(reply rueidis.RedisResult) {
			in, err := parseXInfo(reply)
			if t.linkErr(err) {
				return
			}
			if err == nil {
				res.checkPosition(i, &in)
			}
			if res.planLeft--; res.planLeft == 0 {
				res.phase = phaseCount
			}
		})
	}
}

// checkPosition applies the stream's XINFO to the position of track i.
func (res *resume) checkPosition(i int, in *streamInfo) {
	p, ch := res.pos[i], res.st.tracks[i].channel
	switch {
	case in.lastGen.Less(p) && res.explicit[i]:
		// The client saw entries the stream no longer has: it was
		// recreated, or Redis lost data. Replay its newest entries.
		res.truncate(wsproto.ReasonReset, ch)
		res.pos[i] = wsproto.StreamID{}
	case in.lastGen.Less(p):
		// The pattern's floor is a time, not an entry seen: above a
		// quiet key's last entry it just means nothing to replay.
		res.pos[i] = in.lastGen
	case in.trimmedAfter(p):
		res.truncate(wsproto.ReasonTrimmed, ch)
	}
}

// startCount fixes the count's bounds at the cursors.
func (res *resume) startCount() {
	n := len(res.st.tracks)
	res.bound = make([]wsproto.StreamID, n)
	res.back = make([][]wsproto.StreamID, n)
	res.backEnd = make([]wsproto.StreamID, n)
	res.backStarted = make([]bool, n)
	res.exhausted = make([]bool, n)
	for i, tr := range res.st.tracks {
		res.bound[i], res.backEnd[i] = tr.cursor, tr.cursor
		res.exhausted[i] = tr.k.broken || !res.pos[i].Less(tr.cursor)
	}
}

// pageFor is the page size of a stream over n keys.
func pageFor(n int) int { return max(16, min(pageMax, pageBudget/max(n, 1))) }

// planCount sends a backward page for each key whose fetched IDs are all
// counted.
func (res *resume) planCount(r *reader, t *turn, b rueidis.Builder) {
	maxReplay := r.s.cfg.MaxReplay
	n := int64(min(maxReplay+1, pageFor(len(res.st.tracks))))
	for i, tr := range res.st.tracks {
		if res.exhausted[i] || len(res.back[i]) > 0 {
			continue
		}
		end := res.backEnd[i].String()
		if res.backStarted[i] {
			end = "(" + end
		}
		t.add(b.Xrevrange().Key(tr.k.key).End(end).Start("("+res.pos[i].String()).Count(n).Build(), func(reply rueidis.RedisResult) {
			m, err := reply.ToMessage()
			if t.linkErr(err) {
				return
			}
			var ids []wsproto.StreamID
			got, err := walkEntries(&m, "", func(e entry) bool {
				ids = append(ids, e.id)
				return true
			})
			if err != nil {
				r.s.log.Warn("durable replay: XREVRANGE failed", "key", tr.k.key, "err", err)
				res.exhausted[i] = true // counted as far as it went
				return
			}
			res.back[i] = ids
			res.backStarted[i] = true
			if len(ids) > 0 {
				res.backEnd[i] = ids[len(ids)-1]
			}
			res.exhausted[i] = int64(got) < n
		})
	}
}

// countBack merges the fetched IDs newest first, across keys in (ID, channel)
// order, until MAX_REPLAY + 1 are counted (the cut: the newest MAX_REPLAY
// are replayed) or every key reached its position (everything is). It
// stops where a key still has IDs to fetch.
func (res *resume) countBack(r *reader) {
	tracks := res.st.tracks
	for {
		best := -1
		for i := range res.back {
			if len(res.back[i]) == 0 {
				if !res.exhausted[i] {
					return // the next turn fetches its next page
				}
				continue
			}
			if best < 0 || above(res.back[i][0], tracks[i].channel, res.back[best][0], tracks[best].channel) {
				best = i
			}
		}
		if best < 0 {
			break // everything fits
		}
		id := res.back[best][0]
		res.back[best] = res.back[best][1:]
		if res.counted++; res.counted > r.s.cfg.MaxReplay {
			res.cut(best, id)
			break
		}
	}
	res.back, res.backEnd, res.backStarted, res.exhausted, res.bound = nil, nil, nil, nil, nil
	res.phase = phasePage
}

// above reports whether entry a of channel ca comes after entry b of
// channel cb in a pattern's replay order.
func above(a wsproto.StreamID, ca string, b wsproto.StreamID, cb string) bool {
	if c := a.Compare(b); c != 0 {
		return c > 0
	}
	return ca > cb
}

// cut moves every position past entry d of key kd, the newest entry left
// out: the replay holds what comes after d in (ID, channel) order. Keys
// that still had entries at or below d may miss some.
func (res *resume) cut(kd int, d wsproto.StreamID) {
	ckd := res.st.tracks[kd].channel
	for i, tr := range res.st.tracks {
		p := d
		if tr.channel > ckd {
			// Entries of this key with d's ID come after d.
			if prev, ok := d.Prev(); ok {
				p = prev
			}
		}
		if res.pos[i].Less(p) {
			res.pos[i] = p
		}
		if i == kd || len(res.back[i]) > 0 || !res.exhausted[i] {
			res.truncate(wsproto.ReasonMaxReplay, tr.channel)
		}
	}
}

// planPages sends, when nothing waits for room, a page for each key below
// its cursor and a check for each key whose position is ahead of it.
func (res *resume) planPages(r *reader, t *turn, b rueidis.Builder) {
	if len(res.pending) > 0 {
		return
	}
	res.turnReady, res.ahead = true, false
	n := len(res.st.tracks)
	if len(res.pages) < n {
		res.pages = make([][]entry, n)
		res.paged = make([]bool, n)
	}
	clear(res.pages)
	clear(res.paged)
	size := int64(pageFor(n))
	res.pageSize = int(size)
	for i, tr := range res.st.tracks {
		if tr.k.broken || !tr.ready {
			continue
		}
		c, p := tr.cursor, res.pos[i]
		switch c.Compare(p) {
		case 1:
			res.paged[i] = true
			t.add(b.Xrange().Key(tr.k.key).Start("("+p.String()).End(c.String()).Count(size).Build(), func(reply rueidis.RedisResult) {
				m, err := reply.ToMessage()
				if t.linkErr(err) {
					return
				}
				var page []entry
				if _, err := walkEntries(&m, r.s.cfg.Field, func(e entry) bool { page = append(page, e); return true }); err != nil {
					r.s.log.Warn("durable replay: XRANGE failed", "key", tr.k.key, "err", err)
					res.paged[i] = false // retried next turn
					res.turnReady = false
					return
				}
				res.pages[i] = page
			})
		case -1:
			// A client from a gateway ahead of this reader: it may be
			// attached only once nothing lies between the cursor and
			// its position.
			t.add(b.Xrange().Key(tr.k.key).Start("("+c.String()).End(p.String()).Count(1).Build(), func(reply rueidis.RedisResult) {
				m, err := reply.ToMessage()
				if t.linkErr(err) {
					return
				}
				if got, err := walkEntries(&m, "", func(entry) bool { return true }); err != nil || got > 0 {
					res.ahead = true
				}
			})
		}
	}
}

// progress applies the turn's replies: the count, the pages (frames in
// order, up to the first full page's end), the pushes, and the seam.
func (res *resume) progress(r *reader, t *turn) {
	switch res.phase {
	case phaseCount:
		if res.bound != nil { // counting began this turn or before
			res.countBack(r)
		}
		return
	case phasePage:
	default:
		return
	}
	if res.turnReady {
		res.queuePages(r, t)
	}
	res.push(r, t)
	if !res.turnReady || res.ahead || len(res.pending) > 0 || (res.st.pattern && !t.hasTime) {
		return
	}
	for i, tr := range res.st.tracks {
		if !tr.k.broken && tr.ready && res.pos[i].Less(tr.cursor) {
			return // a page did not reach the cursor
		}
	}
	res.attach(r, t)
}

// queuePages merges the turn's pages in (ID, channel) order into replay
// frames. A key whose page was full bounds what may go this turn: the
// other keys' entries above its last one are fetched again, so the order
// holds across turns.
func (res *resume) queuePages(r *reader, t *turn) {
	tracks := res.st.tracks
	type kentry struct {
		i int
		e entry
	}
	var all []kentry
	limit, limited := -1, false
	var limitID wsproto.StreamID
	size := res.pageSize // the plan's: tracks may have grown since
	for i, page := range res.pages {
		if !res.paged[i] {
			continue
		}
		for _, e := range page {
			all = append(all, kentry{i, e})
		}
		if len(page) >= size {
			if last := page[len(page)-1].id; !limited || above(limitID, tracks[limit].channel, last, tracks[i].channel) {
				limit, limited, limitID = i, true, last
			}
		}
	}
	slices.SortFunc(all, func(a, b kentry) int {
		if c := a.e.id.Compare(b.e.id); c != 0 {
			return c
		}
		switch {
		case tracks[a.i].channel < tracks[b.i].channel:
			return -1
		case tracks[a.i].channel > tracks[b.i].channel:
			return 1
		}
		return 0
	})
	took := make([]int, len(tracks))
	pattern := ""
	if res.st.pattern {
		pattern = res.st.name
	}
	for _, ke := range all {
		if limited && above(ke.e.id, tracks[ke.i].channel, limitID, tracks[limit].channel) {
			break
		}
		if !res.truncQueued && res.truncated {
			res.queueTruncation(ke.e.id, true, t)
		}
		res.pending = append(res.pending, wsproto.BuildReplay(tracks[ke.i].channel, pattern, ke.e.id, ke.e.payload, t.now))
		res.pos[ke.i] = ke.e.id
		took[ke.i]++
	}
	// Over the pages planned, not the tracks: a pattern may have gained
	// a key in this turn (a scan or a notification), after the plan.
	for i := range res.pages {
		if res.paged[i] && len(res.pages[i]) < size && took[i] == len(res.pages[i]) {
			// The whole page went and it was the last one: the key is
			// replayed up to this turn's cursor.
			res.pos[i] = tracks[i].cursor
		}
		res.pages[i] = nil
	}
}

// queueTruncation queues the replay_truncated error, before any replay
// frame: from is the first replayed entry, if any.
func (res *resume) queueTruncation(from wsproto.StreamID, hasFrom bool, t *turn) {
	tr := res.trunc
	slices.Sort(tr.Channels)
	tr.Stream = res.st.name
	tr.Since, tr.HasSince = res.spec.Since, res.spec.HasSince
	tr.From, tr.HasFrom = from, hasFrom
	res.truncFrame = wsproto.NewReplayTruncated(tr, res.reqID, t.now)
	res.pending = append(res.pending, res.truncFrame)
	res.truncQueued = true
}

// push hands the pending frames to the sink while it takes them and the
// turn's budget lasts.
func (res *resume) push(r *reader, t *turn) {
	n, replayed := 0, 0
	res.stalled = false
	for n < len(res.pending) && t.budget > 0 {
		f := res.pending[n]
		if !r.s.sink.Push(res.sub, f) {
			res.stalled = true
			break
		}
		if f == res.truncFrame {
			res.truncFrame = nil // the sink owns it now
		} else {
			replayed++
		}
		n++
		t.budget--
	}
	res.replayed += uint64(replayed)
	r.s.replayed.Add(uint64(replayed))
	res.pending = append(res.pending[:0], res.pending[n:]...)
	if len(res.pending) == 0 {
		res.pending = nil
	}
}

// attach crosses the seam: the replay_truncated error if it is still
// owed, the "replayed" frame, and from now on the live frames.
func (res *resume) attach(r *reader, t *turn) {
	if res.truncated && !res.truncQueued {
		res.queueTruncation(wsproto.StreamID{}, false, t)
		res.push(r, t)
		if len(res.pending) > 0 {
			return
		}
	}
	var last wsproto.StreamID
	if res.st.pattern {
		last = floorOf(t.timeMs)
	} else if len(res.pos) > 0 {
		last = res.pos[0]
	}
	f := wsproto.NewReplayed(res.st.name, res.replayed, last, res.reqID, t.now)
	if !r.s.sink.Push(res.sub, f) {
		f.Release()
		res.stalled = true
		return
	}
	if res.truncated {
		r.s.truncated.Add(1)
	}
	res.st.attach(res.sub)
	res.done = true
}
