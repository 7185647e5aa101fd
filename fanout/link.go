package fanout

// The Redis link: upstream (un)subscribes on a link, streams Redis
// refuses, shutdown, and the canary that proves pub/sub works (links.go
// has the set of links). Everything here runs on the control goroutine
// except canary (its own goroutine) and the pub/sub callback (hub.go).

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/wsgw/gateway/wsproto"
)

// upstreamChunk bounds the streams named by one upstream command, so that
// no single command is huge.
const upstreamChunk = 512

// upstreamTimeout bounds one pipelined round trip of upstream.
const upstreamTimeout = 5 * time.Second

// streamError is a stream Redis refused with an error reply.
type streamError struct {
	st  *stream
	err error
}

// upstreamResult sorts the streams of an upstream subscribe that Redis
// did not take on the link; the others were subscribed.
type upstreamResult struct {
	refused []streamError // an error reply about the stream itself (NOPERM)
	moved   []*stream     // MOVED: their slot is on another node (h.owners updated)
	later   []*stream     // ASK, TRYAGAIN, CLUSTERDOWN: their slot cannot take them now
}

// upstream sends SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE (or their converses)
// for streams on link l, pipelined in one round trip of chunked commands:
// channels, patterns, and sharded channels one command per slot (Redis
// and rueidis refuse a command that spans slots). An error reply (NOPERM
// when the gateway's Redis user has channel ACLs, say; MOVED for a
// sharded channel asked of the wrong node) concerns the streams of its
// command only: they are sorted into the result, and the link is fine.
// err is non-nil only when the link itself failed (or timed out); the
// result is then incomplete. Control goroutine only.
func (h *Hub) upstream(ctx context.Context, l *link, streams []*stream, sub bool) (res upstreamResult, err error) {
	ctx, cancel := context.WithTimeout(ctx, upstreamTimeout)
	defer cancel()
	var chans, pats []*stream
	bySlot := make(map[uint16][]*stream)
	for _, st := range streams {
		switch {
		case st.pattern:
			pats = append(pats, st)
		case st.sharded:
			slot := h.slotOf(st)
			bySlot[slot] = append(bySlot[slot], st)
			if !sub {
				l.expect[st.name]++ // its sunsubscribe is ours
			}
		default:
			chans = append(chans, st)
		}
	}
	lists := [][]*stream{chans, pats}
	for _, slot := range slices.Sorted(maps.Keys(bySlot)) {
		lists = append(lists, bySlot[slot])
	}
	var groups [][]*stream
	for _, list := range lists {
		for len(list) > 0 {
			n := min(upstreamChunk, len(list))
			groups = append(groups, list[:n])
			list = list[n:]
		}
	}
	again, err := h.pipeline(ctx, l, groups, sub, &res)
	if err != nil || len(again) == 0 {
		return res, err
	}
	// Redis checks the channels of a command as a whole (ACLs), so one
	// refused name fails its chunk: ask again, one stream per command,
	// to learn which streams Redis refuses.
	groups = groups[:0]
	for _, g := range again {
		for i := range g {
			groups = append(groups, g[i:i+1])
		}
	}
	_, err = h.pipeline(ctx, l, groups, sub, &res)
	return res, err
}

// pipeline sends one command per group on l with a single DoMulti and
// sorts the error replies into res. Groups of several streams refused
// with an error about the streams go to again, to be asked one by one.
func (h *Hub) pipeline(ctx context.Context, l *link, groups [][]*stream, sub bool, res *upstreamResult) (again [][]*stream, err error) {
	if len(groups) == 0 {
		return nil, nil
	}
	cmds := make(rueidis.Commands, len(groups))
	names := make([]string, 0, upstreamChunk)
	for i, g := range groups {
		names = names[:0]
		for _, st := range g {
			names = append(names, st.name)
		}
		b := l.dc.B()
		switch {
		case g[0].pattern && sub:
			cmds[i] = b.Psubscribe().Pattern(names...).Build()
		case g[0].pattern:
			cmds[i] = b.Punsubscribe().Pattern(names...).Build()
		case g[0].sharded && sub:
			cmds[i] = b.Ssubscribe().Channel(names...).Build()
		case g[0].sharded:
			cmds[i] = b.Sunsubscribe().Channel(names...).Build()
		case sub:
			cmds[i] = b.Subscribe().Channel(names...).Build()
		default:
			cmds[i] = b.Unsubscribe().Channel(names...).Build()
		}
	}
	for i, r := range l.dc.DoMulti(ctx, cmds...) {
		e := r.Error()
		if e == nil {
			continue
		}
		re, ok := rueidis.IsRedisErr(e)
		if !ok {
			return nil, fmt.Errorf("fanout: upstream (un)subscribe on %s: %w", l.addr, e)
		}
		g := groups[i]
		if g[0].sharded && !sub {
			for _, st := range g {
				delete(l.expect, st.name) // no confirmation will come
			}
		}
		if addr, ok := re.IsMoved(); ok && g[0].sharded {
			h.owners[h.slotOf(g[0])] = addr
			res.moved = append(res.moved, g...)
			continue
		}
		if _, ok := re.IsAsk(); ok || re.IsTryAgain() || re.IsClusterDown() {
			res.later = append(res.later, g...)
			continue
		}
		if len(g) > 1 {
			again = append(again, g)
			continue
		}
		res.refused = append(res.refused, streamError{g[0], e})
	}
	return again, nil
}

// refusedOnConnect handles the streams Redis refused while the link was
// being (re)established: an ACL changed while the link was down, or the
// gateway's Redis user may not read the canary's channel. A refused
// stream is dropped and its subscribers get an error frame naming it (and
// a Refusal for their event loop); the link and the other streams carry
// on. Control goroutine only.
func (h *Hub) refusedOnConnect(refused []streamError) {
	now := time.Now()
	for _, r := range refused {
		if r.st.name == h.canaryChan {
			h.canaryOff.Store(true)
			h.log.Warn("redis refused the canary channel: grant the gateway's Redis user &__ws_gateway:canary:*; the canary is off on this link",
				"channel", h.canaryChan, "err", r.err)
			continue
		}
		h.log.Warn("redis refused a stream on reconnect", "stream", r.st.name, "err", r.err)
		h.drop(r.st)
		f := wsproto.NewUpstreamRefused([]string{r.st.name}, nil, now)
		for _, sh := range h.shards {
			if r.st.shardSubs[sh.idx].Load() == 0 {
				continue
			}
			f.Retain(1)
			h.toShard(sh, shardOp{kind: opDrop, st: r.st, frame: f})
		}
		f.Release()
	}
}

// shutdown unsubscribes every stream upstream and closes the links and
// the client. Control goroutine only.
func (h *Hub) shutdown(ctx context.Context) {
	links := slices.Collect(maps.Values(h.shardLinks))
	if h.classic != nil {
		links = append(links, h.classic)
	}
	for _, l := range links {
		streams := make([]*stream, 0, len(l.streams))
		for st := range l.streams {
			streams = append(streams, st)
		}
		if len(streams) > 0 {
			if _, err := h.upstream(ctx, l, streams, false); err != nil {
				h.log.Warn("upstream unsubscribe at shutdown", "addr", l.addr, "err", err)
			}
		}
		// Closed, not recycled, as in linkDown: the unsubscribe above
		// was bounded by Close's deadline, rueidis's clean-up would not
		// be.
		h.closeLink(l)
	}
	if h.client != nil {
		h.client.Close()
	}
	h.up.Store(false)
}

var errCanaryLost = errors.New("fanout: canary did not come back through pub/sub")

// canaryLost reports whether a canary that Redis accepted while the
// classic link was up has not come back through it for three intervals.
// A canary whose PUBLISH failed proves nothing about the link (in a
// Cluster it may have gone to a node that just died), so it does not
// count. Control goroutine only.
func (h *Hub) canaryLost(now time.Time) bool {
	iv := h.cfg.CanaryInterval
	if iv <= 0 || h.classic == nil || h.canaryOff.Load() {
		return false
	}
	sent := h.canaryOK.Load()
	if sent == 0 || sent < h.upSinceNs.Load() || h.canaryLast.Load() >= sent {
		return false
	}
	return now.UnixNano()-sent > int64(3*iv)
}

// canary publishes the current time on the private canary channel every
// interval, through the ordinary (non-pub/sub) connection; onMessage
// measures the round trip. Its own goroutine, so a slow PUBLISH never
// delays the control goroutine.
func (h *Hub) canary() {
	t := time.NewTicker(h.cfg.CanaryInterval)
	defer t.Stop()
	for {
		select {
		case <-h.done:
			return
		case <-t.C:
		}
		c := h.publisher.Load()
		if c == nil || !h.up.Load() || h.canaryOff.Load() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), h.cfg.CanaryInterval)
		cl := *c
		sent := time.Now().UnixNano()
		err := cl.Do(ctx, cl.B().Publish().Channel(h.canaryChan).Message(strconv.FormatInt(sent, 10)).Build()).Error()
		cancel()
		if err != nil {
			h.log.Debug("canary publish failed", "err", err)
			continue
		}
		// canaryOK is the oldest accepted canary not known to be back:
		// replaced once something came back after it, or once it
		// predates the link.
		if first := h.canaryOK.Load(); first == 0 || h.canaryLast.Load() >= first || first < h.upSinceNs.Load() {
			h.canaryOK.Store(sent)
		}
	}
}
