package fanout

// The Redis link: the pub/sub connection, upstream (un)subscribes, the
// handling of a broken link, and the canary that proves pub/sub works.
// Everything here runs on the control goroutine except canary (its own
// goroutine) and the pub/sub callback (hub.go).

import (
	"context"
	"errors"
	"fmt"
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

// upstream sends SUBSCRIBE/PSUBSCRIBE (or their converses) for streams,
// pipelined in one round trip of chunked commands. An error reply (NOPERM
// when the gateway's Redis user has channel ACLs, say) concerns the
// streams of its command only: they are returned in refused, and the link
// is fine. err is non-nil only when the link itself failed (or timed out);
// refused is then incomplete. Control goroutine only.
func (h *Hub) upstream(ctx context.Context, streams []*stream, sub bool) (refused []streamError, err error) {
	ctx, cancel := context.WithTimeout(ctx, upstreamTimeout)
	defer cancel()
	var chans, pats []*stream
	for _, st := range streams {
		if st.pattern {
			pats = append(pats, st)
		} else {
			chans = append(chans, st)
		}
	}
	var groups [][]*stream
	for _, list := range [][]*stream{chans, pats} {
		for len(list) > 0 {
			n := min(upstreamChunk, len(list))
			groups = append(groups, list[:n])
			list = list[n:]
		}
	}
	again, refused, err := h.pipeline(ctx, groups, sub)
	if err != nil || len(again) == 0 {
		return refused, err
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
	_, more, err := h.pipeline(ctx, groups, sub)
	return append(refused, more...), err
}

// pipeline sends one command per group with a single DoMulti. Groups of
// one stream that Redis refuses go to refused, larger ones to again.
func (h *Hub) pipeline(ctx context.Context, groups [][]*stream, sub bool) (again [][]*stream, refused []streamError, err error) {
	if len(groups) == 0 {
		return nil, nil, nil
	}
	cmds := make(rueidis.Commands, len(groups))
	names := make([]string, 0, upstreamChunk)
	for i, g := range groups {
		names = names[:0]
		for _, st := range g {
			names = append(names, st.name)
		}
		b := h.dc.B()
		switch {
		case !g[0].pattern && sub:
			cmds[i] = b.Subscribe().Channel(names...).Build()
		case !g[0].pattern:
			cmds[i] = b.Unsubscribe().Channel(names...).Build()
		case sub:
			cmds[i] = b.Psubscribe().Pattern(names...).Build()
		default:
			cmds[i] = b.Punsubscribe().Pattern(names...).Build()
		}
	}
	for i, res := range h.dc.DoMulti(ctx, cmds...) {
		e := res.Error()
		if e == nil {
			continue
		}
		if _, ok := rueidis.IsRedisErr(e); !ok {
			return nil, nil, fmt.Errorf("fanout: upstream (un)subscribe: %w", e)
		}
		if len(groups[i]) > 1 {
			again = append(again, groups[i])
			continue
		}
		refused = append(refused, streamError{groups[i][0], e})
	}
	return again, refused, nil
}

// connect opens the pub/sub connection and subscribes every stream in
// the table. Control goroutine only.
func (h *Hub) connect(ctx context.Context) error {
	if h.client == nil {
		c, err := rueidis.NewClient(rueidis.ClientOption{
			InitAddress:  []string{h.cfg.RedisAddr},
			Username:     h.cfg.RedisUsername,
			Password:     h.cfg.RedisPassword,
			AlwaysRESP2:  h.cfg.RESP2,
			DisableCache: true,
			ClientName:   "ws-gateway",
		})
		if err != nil {
			return fmt.Errorf("fanout: connect %s: %w", h.cfg.RedisAddr, err)
		}
		h.client = c
		h.publisher.Store(&c)
	}
	dc, _ := h.client.Dedicate() // never handed back: see linkDown
	wait := dc.SetPubSubHooks(rueidis.PubSubHooks{OnMessage: h.onMessage})
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := dc.Do(pctx, dc.B().Ping().Build()).Error()
	cancel()
	var refused []streamError
	if err == nil {
		h.dc = dc
		all := make([]*stream, 0, len(h.streams))
		for _, st := range h.streams {
			all = append(all, st)
		}
		if h.cfg.CanaryInterval > 0 {
			all = append(all, &stream{name: h.canaryChan})
		}
		refused, err = h.upstream(ctx, all, true)
	}
	if err != nil {
		h.dc = nil
		// Closed, not recycled: see linkDown.
		dc.Close()
		return err
	}
	h.dc, h.dcWait = dc, wait
	if h.reconnects.Load() > 0 || h.everUp {
		h.log.Info("redis link restored", "addr", h.cfg.RedisAddr, "streams", len(h.streams))
	} else {
		h.log.Info("redis link up", "addr", h.cfg.RedisAddr)
	}
	h.everUp = true
	h.upSince = time.Now()
	h.up.Store(true)
	h.canaryOff.Store(false)
	h.refusedOnConnect(refused)
	return nil
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

// linkDown handles a broken pub/sub link: health goes red, every stream's
// seq skips one so the first message after recovery shows the gap, and
// every subscriber is told which of its channels were interrupted.
func (h *Hub) linkDown(err error) {
	if h.dc == nil {
		return
	}
	h.log.Warn("redis link down", "addr", h.cfg.RedisAddr, "err", err)
	h.up.Store(false)
	h.reconnects.Add(1)
	dc := h.dc
	h.dc, h.dcWait = nil, nil
	h.retry.Reset(h.cfg.RetryMin)
	// Every shard gets the same snapshot of the streams, read-only: a
	// shard reads only its own st.subs[idx] (see Shard.interrupted).
	all := make([]*stream, 0, len(h.streams))
	for _, st := range h.streams {
		st.seq.Add(1)
		all = append(all, st)
	}
	for _, sh := range h.shards {
		h.toShard(sh, shardOp{kind: opInterrupted, streams: all})
	}
	// Close the connection rather than hand it back to rueidis's pool:
	// recycling sends UNSUBSCRIBE without a deadline, which on a wedged
	// link (the canary's case) blocks this goroutine until rueidis's own
	// keepalive gives up, about 10 s. Close is bounded (1 s).
	dc.Close()
}

func (h *Hub) shutdown(ctx context.Context) {
	if h.dc != nil {
		all := make([]*stream, 0, len(h.streams))
		for _, st := range h.streams {
			all = append(all, st)
		}
		if _, err := h.upstream(ctx, all, false); err != nil {
			h.log.Warn("upstream unsubscribe at shutdown", "err", err)
		}
		// Closed, not recycled, as in linkDown: the unsubscribe above was
		// bounded by Close's deadline, rueidis's clean-up would not be.
		h.dc.Close()
		h.dc = nil
	}
	if h.client != nil {
		h.client.Close()
	}
	h.up.Store(false)
}

var errCanaryLost = errors.New("fanout: canary did not come back through pub/sub")

// canaryLost reports whether the link is up but no canary has come back
// for three intervals. Control goroutine only.
func (h *Hub) canaryLost(now time.Time) bool {
	iv := h.cfg.CanaryInterval
	if iv <= 0 || h.dc == nil || h.canaryOff.Load() || now.Sub(h.upSince) < 3*iv {
		return false
	}
	last := time.Unix(0, h.canaryLast.Load())
	if last.Before(h.upSince) {
		last = h.upSince
	}
	return now.Sub(last) > 3*iv
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
		err := cl.Do(ctx, cl.B().Publish().Channel(h.canaryChan).Message(strconv.FormatInt(time.Now().UnixNano(), 10)).Build()).Error()
		cancel()
		if err != nil {
			h.log.Debug("canary publish failed", "err", err)
		}
	}
}
