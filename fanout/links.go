package fanout

// The set of Redis links: which dedicated pub/sub connection each stream
// is subscribed on, and how streams find one again after a failure.
//
// One rueidis client serves every mode (standalone, Sentinel, Cluster:
// rueidis.ParseURL and the server's answer decide). On it the hub keeps:
//   - the classic link, one connection taken from a node of
//     client.Nodes(): SUBSCRIBE and PSUBSCRIBE of every stream that is not
//     sharded, and the canary. In a Cluster any node will do, since a
//     PUBLISH reaches every node; with Sentinel, Nodes() is the master.
//     Sharded streams ride on it too, with SSUBSCRIBE, outside a Cluster;
//   - in a Cluster, one sharded link per node owning the slot of a
//     sharded stream (Config.ShardedChannels): SSUBSCRIBE, one command per
//     slot (rueidis refuses several slots in one). A stream is placed by
//     the server's answer: tried on the node last known to own its slot
//     (or any node), it follows MOVED to the owner.
//
// Each link has a reader goroutine of its own in rueidis, so
// Hub.onMessage runs on several goroutines at once in a Cluster. A link
// that breaks (its wait channel, the canary, a Sentinel master that moved,
// a failed command) interrupts exactly its own streams: their seq skips
// one, their subscribers get upstream_interrupted, and they are unplaced
// until a link takes them again. A slot that Redis moves away sends an
// unasked sunsubscribe, which does the same for that stream only.
// /health is 200 only while the classic link is up and no stream waits.
//
// Everything here runs on the control goroutine, except the hooks
// (noteUnsub, on a link's reader goroutine, which only appends and
// signals) and the waiter goroutine of each link (watch).

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/redis/rueidis"
)

// slotMask keeps the slot of a command built by a builder that does not
// route (rueidis marks it with a high bit).
const slotMask = 1<<14 - 1

// failedFor is how long a node whose link broke is tried last.
const failedFor = 10 * time.Second

// placeRounds bounds the MOVED answers followed in one placement: a
// stream guessed wrong needs one, a slot moving at that moment two.
const placeRounds = 4

var errMasterMoved = errors.New("fanout: Sentinel promoted another master")

// link is one dedicated pub/sub connection to one Redis node.
type link struct {
	addr    string
	dc      rueidis.DedicatedClient
	sharded bool // a Cluster's sharded link; false: the classic link
	since   time.Time
	// Control goroutine only.
	streams map[*stream]struct{} // subscribed on this link
	// expect counts the sunsubscribe confirmations the hub asked for
	// and has not seen yet, per channel: any other is Redis moving the
	// slot away.
	expect map[string]int
	dead   bool // down or closed: its events are stale
}

// linkEvent is a link's wait channel firing.
type linkEvent struct {
	l   *link
	err error
}

// unsubEvent is an sunsubscribe a link's hook saw.
type unsubEvent struct {
	l       *link
	channel string
}

// openLink dedicates a connection of node client nc (at addr) to pub/sub
// and checks it with a PING. Control goroutine only.
func (h *Hub) openLink(ctx context.Context, addr string, nc rueidis.Client, sharded bool) (*link, error) {
	dc, _ := nc.Dedicate() // never handed back: see linkDown
	l := &link{addr: addr, dc: dc, sharded: sharded, streams: make(map[*stream]struct{}), expect: make(map[string]int)}
	hooks := rueidis.PubSubHooks{OnMessage: h.onMessage}
	if sharded {
		hooks.OnSubscription = func(s rueidis.PubSubSubscription) {
			if s.Kind == "sunsubscribe" {
				h.noteUnsub(l, s.Channel)
			}
		}
	}
	wait := dc.SetPubSubHooks(hooks)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := dc.Do(pctx, dc.B().Ping().Build()).Error()
	cancel()
	if err != nil {
		dc.Close() // closed, not recycled: see linkDown
		return nil, fmt.Errorf("fanout: pub/sub connection to %s: %w", addr, err)
	}
	l.since = time.Now()
	h.links.Add(1)
	go h.watch(l, wait)
	return l, nil
}

// watch hands the link's wait channel to the control goroutine: it
// yields at most one error, then closes, when the connection is gone (or
// the hub closed it). Its own goroutine, one per link.
func (h *Hub) watch(l *link, wait <-chan error) {
	select {
	case err, ok := <-wait:
		if !ok || err == nil {
			err = errors.New("fanout: pub/sub connection closed")
		}
		select {
		case h.linkErrs <- linkEvent{l, err}:
		case <-h.done:
		}
	case <-h.done:
	}
}

// noteUnsub records an sunsubscribe seen by l's hook and wakes the
// control goroutine. On the link's reader goroutine: never blocks.
func (h *Hub) noteUnsub(l *link, channel string) {
	h.evMu.Lock()
	h.unsubs = append(h.unsubs, unsubEvent{l, channel})
	h.evMu.Unlock()
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// ensureClient makes the rueidis client on first use. Control goroutine
// only.
func (h *Hub) ensureClient() error {
	if h.client != nil {
		return nil
	}
	c, err := rueidis.NewClient(h.cfg.ClientOption())
	if err != nil {
		return fmt.Errorf("fanout: connect %s: %w", h.cfg.Target(), err)
	}
	h.client = c
	h.mode = c.Mode()
	h.modeName.Store(string(h.mode))
	h.publisher.Store(&c)
	return nil
}

// pickNode returns a node for the classic link, or for a guess at a slot's
// owner: any node of the client's map, at random so that gateways spread
// over a Cluster, nodes whose link broke lately last. Control goroutine
// only.
func (h *Hub) pickNode() (string, rueidis.Client) {
	nodes := h.client.Nodes()
	addrs := make([]string, 0, len(nodes))
	now := time.Now()
	for a := range nodes {
		if t, ok := h.failed[a]; !ok || now.Sub(t) > failedFor {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		for a := range nodes {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return "", nil
	}
	slices.Sort(addrs) // map order is random but not uniform
	a := addrs[rand.IntN(len(addrs))]
	return a, nodes[a]
}

// openClassic opens the classic link and subscribes the canary on it.
// Control goroutine only.
func (h *Hub) openClassic(ctx context.Context) error {
	addr, nc := h.pickNode()
	if nc == nil {
		return errors.New("fanout: the Redis client knows no node")
	}
	l, err := h.openLink(ctx, addr, nc, false)
	if err != nil {
		h.failed[addr] = time.Now()
		return err
	}
	var refused []streamError
	if h.cfg.CanaryInterval > 0 {
		res, err := h.upstream(ctx, l, []*stream{{name: h.canaryChan}}, true)
		if err != nil {
			h.closeLink(l)
			return err
		}
		refused = res.refused
	}
	h.classic = l
	if h.everUp {
		h.log.Info("redis link restored", "addr", addr, "mode", h.mode, "streams", len(h.unplaced))
	} else {
		h.log.Info("redis link up", "addr", addr, "mode", h.mode)
	}
	h.everUp = true
	h.upSinceNs.Store(l.since.UnixNano())
	h.canaryOff.Store(false)
	h.refusedOnConnect(refused)
	return nil
}

// shardLink returns the sharded link to addr, opening it if needed.
// Control goroutine only.
func (h *Hub) shardLink(ctx context.Context, addr string) (*link, error) {
	if l := h.shardLinks[addr]; l != nil {
		return l, nil
	}
	nc, ok := h.client.Nodes()[addr]
	if !ok {
		// A promoted replica shows up in the map after rueidis's next
		// refresh of the slots.
		return nil, fmt.Errorf("fanout: node %s is not in the cluster's map yet", addr)
	}
	l, err := h.openLink(ctx, addr, nc, true)
	if err != nil {
		return nil, err
	}
	h.shardLinks[addr] = l
	h.log.Info("redis sharded link up", "addr", addr)
	return l, nil
}

// closeLink closes l without interrupting anything (it holds no stream,
// or the hub is shutting down). Control goroutine only.
func (h *Hub) closeLink(l *link) {
	if l.dead {
		return
	}
	l.dead = true
	h.links.Add(-1)
	if l == h.classic {
		h.classic = nil
	} else if h.shardLinks[l.addr] == l {
		delete(h.shardLinks, l.addr)
	}
	l.dc.Close()
}

// closeIdleShardLinks closes the sharded links left without a stream:
// one connection per node that owns a followed sharded channel, no more.
func (h *Hub) closeIdleShardLinks() {
	for _, l := range h.shardLinks {
		if len(l.streams) == 0 {
			h.closeLink(l)
		}
	}
}

// slotOf returns the Cluster slot of a sharded stream's channel, as
// rueidis computes it for the command. Control goroutine only, once a
// client exists.
func (h *Hub) slotOf(st *stream) uint16 {
	if !st.slotKnown {
		cmd := h.client.B().Ssubscribe().Channel(st.name).Build()
		st.slot, st.slotKnown = cmd.Slot()&slotMask, true
	}
	return st.slot
}

// place subscribes streams upstream on the link each belongs on and
// returns the ones Redis refused (for the caller to drop). A stream that
// no link can take now (the link broke, its slot's owner is unknown or
// down) stays in h.unplaced and the retry timer is armed. Control
// goroutine only.
func (h *Hub) place(ctx context.Context, streams []*stream) (refused []streamError) {
	for _, st := range streams {
		h.unplaced[st] = struct{}{}
	}
	defer h.updateHealth()
	if h.client == nil || h.classic == nil {
		h.armRetry()
		return nil
	}
	var classic, sharded []*stream
	for _, st := range streams {
		if st.sharded && h.mode == rueidis.ClientModeCluster {
			sharded = append(sharded, st)
		} else {
			classic = append(classic, st)
		}
	}
	if len(classic) > 0 {
		l := h.classic
		res, err := h.upstream(ctx, l, classic, true)
		if err != nil {
			h.linkDown(l, err)
		} else {
			h.settle(l, classic, &res)
			refused = append(refused, res.refused...)
		}
	}
	if len(sharded) > 0 {
		refused = append(refused, h.placeSharded(ctx, sharded)...)
		h.closeIdleShardLinks()
	}
	if len(h.unplaced) > 0 {
		h.armRetry()
	}
	return refused
}

// placeSharded is place for a Cluster's sharded streams: each goes to the
// node last known to own its slot, or any node, and follows MOVED.
func (h *Hub) placeSharded(ctx context.Context, streams []*stream) (refused []streamError) {
	pending := streams
	for round := 0; round < placeRounds && len(pending) > 0; round++ {
		byNode := make(map[string][]*stream)
		for _, st := range pending {
			addr := h.owners[h.slotOf(st)]
			if addr == "" {
				addr, _ = h.pickNode()
			}
			byNode[addr] = append(byNode[addr], st)
		}
		pending = pending[:0:0]
		for addr, sts := range byNode {
			l, err := h.shardLink(ctx, addr)
			if err != nil {
				h.log.Debug("sharded streams wait for their node", "addr", addr, "streams", len(sts), "err", err)
				h.forgetOwner(addr)
				h.failed[addr] = time.Now()
				continue
			}
			res, err := h.upstream(ctx, l, sts, true)
			if err != nil {
				h.linkDown(l, err)
				continue
			}
			h.settle(l, sts, &res)
			refused = append(refused, res.refused...)
			pending = append(pending, res.moved...)
		}
	}
	return refused
}

// settle records where streams went after an upstream subscribe on l:
// refused ones leave h.unplaced (the caller drops them), redirected or
// postponed ones stay there, the others are on l.
func (h *Hub) settle(l *link, streams []*stream, res *upstreamResult) {
	notHere := make(map[*stream]struct{}, len(res.moved)+len(res.later))
	for _, st := range res.moved {
		notHere[st] = struct{}{}
	}
	for _, st := range res.later {
		notHere[st] = struct{}{}
	}
	for _, r := range res.refused {
		notHere[r.st] = struct{}{}
		delete(h.unplaced, r.st)
	}
	for _, st := range streams {
		if _, ok := notHere[st]; ok {
			continue
		}
		st.link = l
		l.streams[st] = struct{}{}
		delete(h.unplaced, st)
		if st.sharded {
			h.owners[h.slotOf(st)] = l.addr
		}
	}
}

// forgetOwner drops what the hub believed about the slots of addr, so
// that their streams ask a live node again.
func (h *Hub) forgetOwner(addr string) {
	for slot, a := range h.owners {
		if a == addr {
			delete(h.owners, slot)
		}
	}
}

// interrupt tells the subscribers of streams, which were subscribed on a
// link that broke, that messages may have been lost: each stream's seq
// skips one, so the first message after recovery shows the gap, and each
// subscriber gets one upstream_interrupted naming those of its channels.
// The streams wait in h.unplaced for a link. Control goroutine only.
func (h *Hub) interrupt(streams []*stream) {
	if len(streams) == 0 {
		return
	}
	for _, st := range streams {
		st.seq.Add(1)
		st.link = nil
		h.unplaced[st] = struct{}{}
	}
	// Every shard gets the same slice, read-only: a shard reads only
	// its own st.subs[idx] (see Shard.interrupted).
	for _, sh := range h.shards {
		h.toShard(sh, shardOp{kind: opInterrupted, streams: streams})
	}
}

// linkDown handles a broken link: health goes red, its streams are
// interrupted (interrupt) and wait for a link, and a reconnect is due at
// once. Control goroutine only.
func (h *Hub) linkDown(l *link, err error) {
	if l == nil || l.dead {
		return
	}
	h.log.Warn("redis link down", "addr", l.addr, "sharded", l.sharded, "streams", len(l.streams), "err", err)
	h.reconnects.Add(1)
	h.failed[l.addr] = time.Now()
	h.forgetOwner(l.addr)
	streams := make([]*stream, 0, len(l.streams))
	for st := range l.streams {
		streams = append(streams, st)
	}
	l.streams = nil
	// Close the connection rather than hand it back to rueidis's pool:
	// recycling sends UNSUBSCRIBE without a deadline, which on a wedged
	// link (the canary's case) blocks this goroutine until rueidis's own
	// keepalive gives up, about 10 s. Close is bounded (1 s).
	h.closeLink(l)
	h.interrupt(streams)
	h.updateHealth()
	h.retry.Reset(h.cfg.RetryMin)
	h.retryArmed = true
}

// movedAway handles the sunsubscribes the links' hooks saw: one the hub
// did not ask for means Redis moved the channel's slot to another node
// (a resharding, or a failover seen by the old owner). The stream is
// interrupted and placed again. Control goroutine only.
func (h *Hub) movedAway(ctx context.Context) {
	h.evMu.Lock()
	evs := h.unsubs
	h.unsubs = nil
	h.evMu.Unlock()
	var hit []*stream
	for _, ev := range evs {
		l := ev.l
		if l.dead {
			continue
		}
		if n := l.expect[ev.channel]; n > 0 {
			if n == 1 {
				delete(l.expect, ev.channel)
			} else {
				l.expect[ev.channel] = n - 1
			}
			continue
		}
		st := h.streams[ev.channel]
		if st == nil || st.link != l {
			continue
		}
		delete(l.streams, st)
		delete(h.owners, h.slotOf(st))
		hit = append(hit, st)
	}
	if len(hit) == 0 {
		return
	}
	h.log.Warn("redis moved sharded channels away", "streams", len(hit), "first", hit[0].name)
	h.interrupt(hit)
	h.refusedOnConnect(h.place(ctx, hit))
}

// checkLinks runs on every control tick: a classic link whose canary has
// stopped coming back, or (Sentinel) that is not on the master any more,
// is taken down. A graceful SENTINEL FAILOVER leaves the old master up,
// as a master, for seconds before it is demoted: the link's connection
// lives on, silent, while publishers write to the new master. Control
// goroutine only.
func (h *Hub) checkLinks(now time.Time) {
	l := h.classic
	if l == nil {
		return
	}
	if h.canaryLost(now) {
		h.linkDown(l, errCanaryLost)
		return
	}
	if h.mode == rueidis.ClientModeSentinel {
		if _, ok := h.client.Nodes()[l.addr]; !ok {
			h.linkDown(l, errMasterMoved)
		}
	}
}

// updateHealth sets Healthy: the classic link is up and every stream is
// subscribed. Control goroutine only.
func (h *Hub) updateHealth() {
	h.up.Store(h.classic != nil && len(h.unplaced) == 0)
}

// armRetry schedules a reconcile unless one is due already. Control
// goroutine only.
func (h *Hub) armRetry() {
	if !h.retryArmed {
		h.retry.Reset(h.backoff)
		h.retryArmed = true
	}
}

// reconcile (re)establishes what is missing: the client, the classic
// link, then a link for every stream waiting for one. It fails while
// anything is still missing. Control goroutine only.
func (h *Hub) reconcile(ctx context.Context) error {
	if err := h.ensureClient(); err != nil {
		return err
	}
	if h.classic == nil {
		if err := h.openClassic(ctx); err != nil {
			return err
		}
	}
	if len(h.unplaced) > 0 {
		waiting := make([]*stream, 0, len(h.unplaced))
		for st := range h.unplaced {
			waiting = append(waiting, st)
		}
		h.refusedOnConnect(h.place(ctx, waiting))
	}
	h.updateHealth()
	if h.classic == nil {
		return errors.New("fanout: the pub/sub link broke while resubscribing")
	}
	if n := len(h.unplaced); n > 0 {
		return fmt.Errorf("fanout: %d streams wait for their Redis node", n)
	}
	return nil
}
