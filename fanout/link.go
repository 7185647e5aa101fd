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
)

// upstream sends SUBSCRIBE/PSUBSCRIBE (or their converses) for streams,
// in chunks so that no single command is huge.
func (h *Hub) upstream(ctx context.Context, streams []*stream, sub bool) error {
	const chunk = 512
	var chans, pats []string
	for _, st := range streams {
		if st.pattern {
			pats = append(pats, st.name)
		} else {
			chans = append(chans, st.name)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for len(chans) > 0 || len(pats) > 0 {
		var cmd rueidis.Completed
		b := h.dc.B()
		switch {
		case len(chans) > 0:
			n := min(chunk, len(chans))
			if sub {
				cmd = b.Subscribe().Channel(chans[:n]...).Build()
			} else {
				cmd = b.Unsubscribe().Channel(chans[:n]...).Build()
			}
			chans = chans[n:]
		default:
			n := min(chunk, len(pats))
			if sub {
				cmd = b.Psubscribe().Pattern(pats[:n]...).Build()
			} else {
				cmd = b.Punsubscribe().Pattern(pats[:n]...).Build()
			}
			pats = pats[n:]
		}
		if err := h.dc.Do(ctx, cmd).Error(); err != nil {
			return fmt.Errorf("fanout: upstream (un)subscribe: %w", err)
		}
	}
	return nil
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
	if err == nil {
		h.dc = dc
		all := make([]*stream, 0, len(h.streams))
		for _, st := range h.streams {
			all = append(all, st)
		}
		if h.cfg.CanaryInterval > 0 {
			all = append(all, &stream{name: h.canaryChan})
		}
		err = h.upstream(ctx, all, true)
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
	return nil
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
		if err := h.upstream(ctx, all, false); err != nil {
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
	if iv <= 0 || h.dc == nil || now.Sub(h.upSince) < 3*iv {
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
		if c == nil || !h.up.Load() {
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
