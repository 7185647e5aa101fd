package fanout

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/wsgw/gateway/auth"
	"github.com/wsgw/gateway/wsproto"
)

// Sentinel errors.
var (
	ErrConfig = errors.New("fanout: invalid configuration")
	ErrClosed = errors.New("fanout: hub closed")
	// ErrBusy refuses a subscribe or unsubscribe while Config.MaxPending
	// requests already wait for the control goroutine (Redis is slow or
	// the requests come faster than Redis answers): refused at once
	// rather than queued without bound.
	ErrBusy = errors.New("fanout: too many requests waiting for Redis")
)

// Config is the hub's part of the gateway configuration. Passed by value.
type Config struct {
	RedisAddr     string
	RedisUsername string
	RedisPassword string
	// RedisURL, when set, replaces the three fields above: a URL that
	// rueidis.ParseURL reads (redis://, rediss://, unix://; several
	// addr for a Cluster, master_set for Sentinel). The client mode
	// comes from the URL and the server's answer.
	RedisURL string
	// TLS: the CA to verify Redis's certificate with (empty: the
	// system's), a client certificate and its key, and the name to
	// verify (empty: each node's host). Read by LoadTLS. Any of them
	// turns TLS on for RedisAddr; with RedisURL they need rediss://.
	TLSCAFile, TLSCertFile, TLSKeyFile, TLSServerName string
	// ShardedChannels are globs naming the channels publishers send
	// with SPUBLISH: the hub follows them with SSUBSCRIBE, on the
	// Cluster node owning each one's slot. A pattern that can match one
	// of them is refused (SPUBLISH never reaches PSUBSCRIBE).
	ShardedChannels []string
	// RESP2 forces RESP2 (miniredis, the embedded mode, speaks no RESP3
	// pub/sub).
	RESP2 bool
	// Standalone makes the client a single-node one whatever the server
	// answers to CLUSTER SLOTS: miniredis, the embedded mode, answers it
	// with itself, and would be taken for a one-node Cluster.
	Standalone bool
	// SendQueue bounds each connection's queue, in frames (at most
	// 1048576).
	SendQueue int
	// Handoff bounds each shard's inbound channel, in operations; 0
	// means 8192.
	Handoff int
	// CoalesceDelay, when positive, holds the first message after a
	// quiet spell for this long before a shard wakes its event loop,
	// so that the messages arriving meanwhile go out with it: one wake
	// of the loop thread per delay rather than one per message when
	// messages come one at a time. It adds up to this much latency
	// (the runtime's timers wake in whole milliseconds when every thread
	// sleeps). 0 (the default) delivers at once; at most 10ms.
	CoalesceDelay time.Duration
	// Linger is how long a stream with no subscriber stays subscribed
	// upstream before it is unsubscribed (within a second, as the protocol promises).
	// It absorbs a client that leaves and comes straight back.
	Linger time.Duration
	// RetryMin and RetryMax bound the reconnect backoff.
	RetryMin, RetryMax time.Duration
	// CanaryInterval is how often a canary is published on the
	// gateway's private channel; when none has come back through the
	// subscription for 3 intervals the link is treated as broken (a live
	// TCP socket is no proof that pub/sub works, e.g. after a Sentinel
	// failover). 0 disables the canary.
	CanaryInterval time.Duration
	Logger         *slog.Logger

	// MaxStreams bounds the upstream subscriptions (exact channels plus
	// patterns, lingering ones included). A subscribe request that would
	// create more is refused whole with server_busy. 0 = unlimited.
	MaxStreams int
	// MaxPending bounds the subscribe and unsubscribe requests waiting
	// for the control goroutine; beyond it Subscribe and Unsubscribe
	// return ErrBusy. Closing connections are never refused. 0 =
	// unlimited.
	MaxPending int

	tls *tlsFiles // read from the TLS files by LoadTLS
}

// maxSendQueue bounds Config.SendQueue: a million frames owed to one
// connection is already far more than a reader that is alive needs.
const maxSendQueue = 1 << 20

// maxCoalesceDelay bounds Config.CoalesceDelay: beyond it the delay is
// felt in a UI.
const maxCoalesceDelay = 10 * time.Millisecond

// Check returns the first field whose value is out of its bounds and the
// rule it breaks ("SendQueue", "must be between 1 and 1048576"), or two
// empty strings. It is the one place these bounds are checked: Validate
// reports its answer as an error, and cmd/gateway under the name of the
// setting bound to the field.
func (c *Config) Check() (field, rule string) {
	if c.RedisURL != "" {
		if rule := checkURL(c.RedisURL); rule != "" {
			return "RedisURL", rule
		}
	}
	if field, rule := c.checkTLS(); field != "" {
		return field, rule
	}
	if rule := c.checkSharded(); rule != "" {
		return "ShardedChannels", rule
	}
	switch {
	case c.RedisAddr == "" && c.RedisURL == "":
		return "RedisAddr", "must not be empty"
	case c.SendQueue < 1 || c.SendQueue > maxSendQueue:
		return "SendQueue", "must be between 1 and 1048576"
	case c.Handoff < 0:
		return "Handoff", "must not be negative"
	case c.CoalesceDelay < 0 || c.CoalesceDelay > maxCoalesceDelay:
		return "CoalesceDelay", "must be between 0 and 10ms"
	case c.Linger < 0 || c.Linger > time.Second:
		return "Linger", "must be between 0 and 1s"
	case c.CanaryInterval < 0:
		return "CanaryInterval", "must not be negative"
	case c.MaxStreams < 0:
		return "MaxStreams", "must not be negative"
	case c.MaxPending < 0:
		return "MaxPending", "must not be negative"
	}
	return "", ""
}

// Validate checks the configuration (Check) and fills the defaults of
// fields left zero. New calls it.
func (c *Config) Validate() error {
	if field, rule := c.Check(); field != "" {
		return fmt.Errorf("%w: %s %s", ErrConfig, field, rule)
	}
	if c.tls == nil {
		if field, err := c.LoadTLS(); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrConfig, field, err)
		}
	}
	if c.Handoff == 0 {
		c.Handoff = 8192
	}
	if c.RetryMin <= 0 {
		c.RetryMin = 100 * time.Millisecond
	}
	if c.RetryMax < c.RetryMin {
		c.RetryMax = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// stream is one upstream subscription: an exact channel or a pattern.
type stream struct {
	name    string
	pattern bool
	// sharded: the channel matches Config.ShardedChannels, so it is
	// followed with SSUBSCRIBE.
	sharded bool
	seq     atomic.Uint64 // last seq stamped; bumped once per outage
	// refs counts local subscriptions. The control goroutine and
	// JoinNow (on an event loop) add, the shards subtract; the control
	// goroutine is the only one that removes a stream from the table,
	// and only by swapping refs from 0 to refsGone after the linger, so
	// that JoinNow, which adds only to a count that is not negative,
	// never revives a stream on its way out.
	refs atomic.Int64
	// confirmed: the control goroutine has answered a subscribe request
	// of the stream (Redis took it, or it waits for a link like every
	// stream then): JoinNow may join it without asking.
	confirmed atomic.Bool
	// dropped: Redis refused the stream and it left the table (drop).
	// Set before the control goroutine looks at shardSubs to tell the
	// shards, read by a shard after it counted a JoinNow subscriber in
	// shardSubs: one of the two sees the other (Shard.join).
	dropped atomic.Bool
	// subs[i] is owned by shard i's goroutine; shardSubs[i] mirrors its
	// length for the dispatcher, which skips shards with nobody.
	subs      [][]*Subscriber
	shardSubs []atomic.Int32

	// Control goroutine only.
	idleSince time.Time
	link      *link  // the link it is subscribed on; nil while none is (h.unplaced)
	slot      uint16 // its Cluster slot, once slotKnown (sharded only)
	slotKnown bool
}

// Stats is a snapshot of the hub's counters.
type Stats struct {
	Streams          int    `json:"streams"`
	MessagesReceived uint64 `json:"messages_received"`
	Delivered        uint64 `json:"messages_delivered"`
	// Dropped counts frames a connection's full queue refused (a slow
	// reader): one per connection and frame.
	Dropped    uint64 `json:"frames_dropped"`
	RedisUp    bool   `json:"redis_up"`
	Reconnects uint64 `json:"redis_reconnects"`
	// RedisMode is rueidis's client mode: "standalone", "sentinel" or
	// "cluster"; empty until the first connection.
	RedisMode string `json:"redis_mode"`
	// RedisLinks is the number of pub/sub connections open: the
	// classic link, plus one per Cluster node owning a followed sharded
	// channel.
	RedisLinks int `json:"redis_links"`
	// HandoffDropped counts messages a shard never received because its
	// hand-off channel was full (the Redis reader outpaced the shard):
	// one per shard and message, however many of the shard's
	// connections follow the stream. It is not part of Dropped.
	HandoffDropped uint64 `json:"handoff_dropped"`
	// CanaryRTT is the last round trip of the canary through Redis
	// pub/sub; 0 before the first.
	CanaryRTT time.Duration `json:"canary_rtt_ns"`
	// Queues is how many connections hold a queue ring right now; an
	// idle connection holds none (Subscriber.ReleaseIdle).
	Queues int64 `json:"queues"`
}

type reqKind uint8

const (
	reqSubscribe reqKind = iota + 1
	reqUnsubscribe
	reqRemove
	reqIdle
)

type request struct {
	kind    reqKind
	sub     *Subscriber
	changed []string // channels to join or leave
	all     []string // every channel named by the client, for the ack
	reqID   []byte
	st      *stream
	streams []*stream // reqSubscribe: the streams joined, set by join
	full    bool      // reqSubscribe: refused by join, MaxStreams reached
	// shardedPats: reqSubscribe refused by join, for these patterns
	// can match a sharded channel.
	shardedPats []string
	// then, when set, runs on the control goroutine right after the
	// request's operation went to the shard (not for a refused
	// subscribe): the durable side (durablehub.go) joins and leaves its
	// streams there, in request order and after the ack.
	then func()
}

// Hub subscribes to Redis on behalf of all connections and fans each
// message out to the shards. See the package documentation for its
// goroutines.
type Hub struct {
	cfg    Config
	log    *slog.Logger
	shards []*Shard

	// Lookup for the pub/sub callback: name → *stream. Written only by
	// the control goroutine.
	channels sync.Map
	patterns sync.Map

	// Control goroutine only.
	streams map[string]*stream
	idle    map[*stream]struct{}
	client  rueidis.Client
	mode    rueidis.ClientMode
	// The links (links.go): the classic one, and a Cluster's sharded
	// ones by node address.
	classic    *link
	shardLinks map[string]*link
	// unplaced holds the streams no link has subscribed: their link
	// broke, their slot's owner is not known or is down, or there is no
	// link yet.
	unplaced map[*stream]struct{}
	owners   map[uint16]string    // Cluster slot → the node that last owned it
	failed   map[string]time.Time // node → when a link to it last broke
	// retry fires the next reconcile. linkDown re-arms it, as it runs
	// on more paths than the linkErrs case (a failed upstream
	// (un)subscribe from subscribe or expire); retryArmed says it is
	// pending, backoff is the next delay after a failed reconcile.
	retry      *time.Timer
	retryArmed bool
	backoff    time.Duration

	// Events of the links: their wait channels (one goroutine each,
	// watch) and the sunsubscribes their hooks saw (under evMu, and a
	// kick).
	linkErrs chan linkEvent
	evMu     sync.Mutex
	unsubs   []unsubEvent

	// Requests from event loops: appended under mu, never blocking the
	// loop; signalled through kick.
	mu      sync.Mutex
	pending []request
	kick    chan struct{}

	received atomic.Uint64
	handoff  atomic.Uint64 // messages lost because a shard's channel was full
	// durable is the durable side, if the server made one
	// (NewDurableHub); shards forget its push states of closed
	// connections.
	durable    atomic.Pointer[DurableHub]
	nstreams   atomic.Int64
	up         atomic.Bool
	reconnects atomic.Uint64
	canaryChan string
	links      atomic.Int32                   // open links (Stats)
	modeName   atomic.Value                   // string: rueidis's mode, once known (Stats)
	publisher  atomic.Pointer[rueidis.Client] // set once the client exists
	canaryRTT  atomic.Int64                   // nanoseconds
	canaryLast atomic.Int64                   // unix nanos of the last canary received
	// canaryOK is the send time (unix nanos) of the oldest canary Redis
	// accepted that may not have come back yet (canaryLost); upSinceNs
	// is when the classic link came up (unix nanos).
	canaryOK  atomic.Int64
	upSinceNs atomic.Int64
	everUp    bool // control goroutine only

	// canaryOff: Redis refused the canary's SUBSCRIBE on this link (an
	// ACL without the canary channel), so its absence proves nothing.
	canaryOff atomic.Bool
	// The largest sizes of streams and idle since they were last
	// rebuilt (control goroutine only): see shrinkMaps.
	streamsPeak, idlePeak int

	// ctx bounds the control goroutine's Redis commands; Close cancels
	// it when its own deadline passes, so that a command a wedged Redis
	// never answers does not outlive the hub.
	ctx     context.Context
	cancel  context.CancelFunc
	started bool // by Start
	done    chan struct{}
	stopped chan struct{}
	once    sync.Once
}

// Waker wakes one event loop so that it drains its shard: the loop calls
// Shard.BeginFlush, then Shard.NextReady and Subscriber.Pop until
// NextReady returns nil. A shard calls Wake from its own goroutine (and
// from its loop, in Shard.Requeue) once per burst of subscribers made
// ready, never while a flush it asked for has not begun. Wake must not
// block.
type Waker interface {
	Wake()
}

// New validates cfg and builds a hub with one shard per waker: shard i
// serves the connections of one event loop and wakes it through
// wakers[i]. Nothing connects until Start.
func New(cfg Config, wakers []Waker) (*Hub, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(wakers) == 0 || slices.Contains(wakers, nil) {
		return nil, fmt.Errorf("%w: one waker per shard, none nil (got %d)", ErrConfig, len(wakers))
	}
	h := &Hub{
		cfg:        cfg,
		log:        cfg.Logger,
		streams:    make(map[string]*stream),
		idle:       make(map[*stream]struct{}),
		shardLinks: make(map[string]*link),
		unplaced:   make(map[*stream]struct{}),
		owners:     make(map[uint16]string),
		failed:     make(map[string]time.Time),
		linkErrs:   make(chan linkEvent),
		kick:       make(chan struct{}, 1),
		done:       make(chan struct{}),
		stopped:    make(chan struct{}),
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	h.canaryChan = "__ws_gateway:canary:" + hex.EncodeToString(id[:])
	h.ctx, h.cancel = context.WithCancel(context.Background())
	h.shards = make([]*Shard, len(wakers))
	for i := range h.shards {
		sh := &Shard{idx: i, hub: h, in: make(chan shardOp, cfg.Handoff), kick: make(chan struct{}, 1), waker: wakers[i]}
		sh.ready.init()
		h.shards[i] = sh
	}
	return h, nil
}

// Shard returns shard i. Safe for concurrent use.
func (h *Hub) Shard(i int) *Shard { return h.shards[i] }

// Start launches the shard goroutines and the control goroutine, which
// connects to Redis in the background (the gateway starts while Redis is
// down and delivers once it appears). Call it once, not concurrently with
// Close.
func (h *Hub) Start() {
	h.started = true
	for _, sh := range h.shards {
		go sh.run(h.done)
	}
	go h.control()
}

// Close stops the hub: the control goroutine finishes the Redis command
// in flight, unsubscribes every stream upstream and closes its Redis
// connections, and every goroutine of the hub returns. Close waits for
// that until ctx ends; then it cancels the command in flight (a wedged
// Redis never answers one) and returns ctx's error at once, leaving the
// control goroutine to close the connections.
func (h *Hub) Close(ctx context.Context) error {
	h.once.Do(func() { close(h.done) })
	if !h.started {
		return nil // no goroutine to wait for
	}
	select {
	case <-h.stopped:
		return nil
	case <-ctx.Done():
		h.cancel()
		return fmt.Errorf("fanout: close: %w", ctx.Err())
	}
}

// Healthy reports whether the pub/sub links to Redis are up and every
// stream is subscribed upstream. Safe for concurrent use.
func (h *Hub) Healthy() bool { return h.up.Load() }

// Stats returns the current counters. Safe for concurrent use.
func (h *Hub) Stats() Stats {
	st := Stats{
		Streams:          int(h.nstreams.Load()),
		MessagesReceived: h.received.Load(),
		RedisUp:          h.up.Load(),
		Reconnects:       h.reconnects.Load(),
		HandoffDropped:   h.handoff.Load(),
		CanaryRTT:        time.Duration(h.canaryRTT.Load()),
		RedisLinks:       int(h.links.Load()),
	}
	st.RedisMode, _ = h.modeName.Load().(string)
	for _, sh := range h.shards {
		st.Delivered += sh.delivered.Load()
		st.Queues += sh.queues.Load()
		st.Dropped += sh.dropped.Load()
	}
	return st
}

// Init prepares s, usually embedded in the owner's connection state, for
// a connection served by event loop (and so shard) shard. It allocates
// nothing: the queue's first ring comes with the first frame. Call it once,
// before s is used, on the goroutine that owns s.
func (h *Hub) Init(s *Subscriber, shard int) {
	*s = Subscriber{shard: h.shards[shard]}
}

// Subscribe joins s to the streams in add (channels it does not follow
// yet) and then queues a "subscribed" ack naming all, after any frame
// already queued for s. The request may still be refused as a whole, with
// an error frame instead of the ack and a Refusal for the event loop (see
// Shard.TakeRefusals): when it would take the hub past MaxStreams, or when
// Redis refuses one of its new streams. It returns ErrBusy, and queues
// nothing, while MaxPending requests are waiting. Safe for concurrent
// use; never blocks.
func (h *Hub) Subscribe(s *Subscriber, add, all []string, requestID []byte) error {
	return h.enqueue(request{kind: reqSubscribe, sub: s, changed: add, all: all, reqID: requestID}, true)
}

// Unsubscribe is Subscribe's converse, acked with "unsubscribed". It is
// refused only with ErrBusy, like Subscribe.
func (h *Hub) Unsubscribe(s *Subscriber, del, all []string, requestID []byte) error {
	return h.enqueue(request{kind: reqUnsubscribe, sub: s, changed: del, all: all, reqID: requestID}, true)
}

// Remove drops s from every stream and releases whatever is queued for
// it. The caller (the connection's event loop, on close) must not call
// s.Pop afterwards. Never refused: it only gives resources back. Safe for
// concurrent use; never blocks.
func (h *Hub) Remove(s *Subscriber) {
	_ = h.enqueue(request{kind: reqRemove, sub: s}, false)
}

// refsGone marks a stream's refs once the control goroutine has taken it
// off the table: no join may add to it.
const refsGone = math.MinInt64 / 2

// JoinNow joins s to the streams named by add at once, without the
// control goroutine or Redis, when every one of them is in the table and
// confirmed, none is being removed, and s's shard channel has room. It
// returns false, having changed nothing, otherwise; the caller then
// sends the request through Subscribe.
//
// On true the caller answers the request itself, before its event loop
// next drains s: the shard joins s to the streams after this returns, so
// no frame of theirs can be queued ahead of the answer. The caller must
// have no Subscribe or Unsubscribe of s still with the control goroutine
// (their operations could reach the shard after this one). A stream Redis
// refuses meanwhile (on a reconnect) is refused to s as to every other
// subscriber: an error frame and a Refusal.
//
// add names each stream once (a name twice would take two references
// and two memberships). Event-loop only (s's loop); never blocks.
func (h *Hub) JoinNow(s *Subscriber, add []string) bool {
	if len(add) == 0 || len(add) > 64 {
		return false
	}
	select {
	case <-h.done:
		return false
	default:
	}
	var buf [8]*stream
	streams := buf[:0]
	for _, name := range add {
		m := &h.channels
		if auth.IsPattern(name) {
			m = &h.patterns
		}
		v, ok := m.Load(name)
		if !ok || !h.take(v.(*stream)) {
			h.giveBack(streams)
			return false
		}
		streams = append(streams, v.(*stream))
	}
	// Counted for the dispatcher before the ack exists: from here on
	// onMessage hands every message of these streams to s's shard, behind
	// the opJoin, so none received after the ack is skipped while the
	// shard has yet to join s (as add's ack, queued after the join,
	// guarantees on the other path). It is also the count Shard.join's
	// read of dropped pairs with.
	idx := s.shard.idx
	for _, st := range streams {
		st.shardSubs[idx].Add(1)
	}
	select {
	case s.shard.in <- shardOp{kind: opJoin, sub: s, streams: slices.Clone(streams)}:
		return true
	case <-h.done:
	default:
	}
	for _, st := range streams {
		st.shardSubs[idx].Add(-1)
	}
	h.giveBack(streams)
	return false
}

// take adds a reference to st for JoinNow if st is confirmed and not on
// its way out of the table. Safe for concurrent use.
func (h *Hub) take(st *stream) bool {
	if !st.confirmed.Load() || st.dropped.Load() {
		return false
	}
	for {
		r := st.refs.Load()
		if r < 0 {
			return false
		}
		if st.refs.CompareAndSwap(r, r+1) {
			return true
		}
	}
}

// giveBack releases the references JoinNow took before it gave up.
func (h *Hub) giveBack(streams []*stream) {
	for _, st := range streams {
		h.release(st)
	}
}

// enqueue appends r to the requests of the control goroutine. A
// refusable request is refused with ErrBusy once MaxPending are waiting.
func (h *Hub) enqueue(r request, refusable bool) error {
	h.mu.Lock()
	if refusable && h.cfg.MaxPending > 0 && len(h.pending) >= h.cfg.MaxPending {
		h.mu.Unlock()
		return ErrBusy
	}
	h.pending = append(h.pending, r)
	h.mu.Unlock()
	select {
	case h.kick <- struct{}{}:
	default:
	}
	return nil
}

// release is called by a shard goroutine when a subscription of st ends.
func (h *Hub) release(st *stream) {
	if st.refs.Add(-1) == 0 {
		_ = h.enqueue(request{kind: reqIdle, st: st}, false)
	}
}

// onMessage is rueidis's pub/sub callback. It must never block: it
// stamps the message, encodes it once, and hands the frame to the shards
// with non-blocking sends.
//
// It runs on the reader goroutine of each link, so several run at once
// in a Cluster (links.go). That is safe: the stream lookup is a
// sync.Map, the seq and the counters are atomics, the frame pool is safe
// for concurrent use, and the shards' channels take several producers.
// Order within a stream holds, because a stream is subscribed on one
// link at a time. A stream's seq is also bumped by the control goroutine
// when its link breaks (interrupt): an atomic add, so it never takes
// back a seq a message got.
func (h *Hub) onMessage(m rueidis.PubSubMessage) {
	now := time.Now()
	if m.Channel == h.canaryChan {
		if sent, err := strconv.ParseInt(m.Message, 10, 64); err == nil {
			h.canaryRTT.Store(now.UnixNano() - sent)
		}
		h.canaryLast.Store(now.UnixNano())
		return
	}
	h.received.Add(1)
	var v any
	var ok bool
	if m.Pattern != "" {
		v, ok = h.patterns.Load(m.Pattern)
	} else {
		v, ok = h.channels.Load(m.Channel)
	}
	if !ok {
		return // a stream dropped a moment ago; nobody follows it
	}
	st := v.(*stream)
	// Every message received on the stream takes a seq, delivered or not,
	// so a loss anywhere after this point shows up as a gap.
	seq := st.seq.Add(1)
	var f *wsproto.Frame
	for i, sh := range h.shards {
		if st.shardSubs[i].Load() == 0 {
			continue
		}
		if f == nil {
			f = wsproto.BuildData(seq, m.Channel, m.Pattern, m.Message, now)
		}
		f.Retain(1)
		select {
		case sh.in <- shardOp{kind: opDeliver, st: st, frame: f}:
		default:
			f.Release()
			h.handoff.Add(1)
			sh.handoffLost(st, seq)
		}
	}
	if f != nil {
		f.Release()
	}
}

// control is the hub's control goroutine: it owns the stream table and
// the Redis connection, and is the only goroutine that issues blocking
// Redis commands.
func (h *Hub) control() {
	defer close(h.stopped)
	defer h.cancel()
	ctx := h.ctx
	h.backoff = h.cfg.RetryMin
	retry := time.NewTimer(0)
	defer retry.Stop()
	h.retry, h.retryArmed = retry, true // linkDown and armRetry re-arm it
	lingerTick := time.NewTicker(100 * time.Millisecond)
	defer lingerTick.Stop()
	if h.cfg.CanaryInterval > 0 {
		go h.canary()
	}
	for {
		select {
		case <-h.done:
			h.shutdown(ctx)
			return
		case <-retry.C:
			h.retryArmed = false
			if err := h.reconcile(ctx); err != nil {
				h.log.Warn("redis connect failed", "redis", h.cfg.Target(), "err", err, "retry_in", h.backoff)
				if !h.retryArmed {
					retry.Reset(h.backoff)
					h.retryArmed = true
				}
				h.backoff = min(2*h.backoff, h.cfg.RetryMax)
			} else {
				h.backoff = h.cfg.RetryMin
			}
		case ev := <-h.linkErrs:
			h.linkDown(ev.l, ev.err) // re-arms h.retry
		case <-h.kick:
			h.process(ctx)
			h.movedAway(ctx)
		case now := <-lingerTick.C:
			h.expire(ctx, now)
			h.checkLinks(now)
		}
	}
}

func (h *Hub) process(ctx context.Context) {
	h.mu.Lock()
	batch := h.pending
	h.pending = nil
	h.mu.Unlock()
	// Every stream new in this batch is subscribed upstream in one
	// pipelined round trip (chunked commands), not one round trip per
	// request: thousands of clients each on their own channel connect at
	// once (the spread scenario). The shard operations then go out in
	// request order, each after the upstream subscription of its streams.
	var fresh []*stream
	for i := range batch {
		if batch[i].kind == reqSubscribe {
			fresh = h.join(&batch[i], fresh)
		}
	}
	var refused map[*stream]struct{}
	if len(fresh) > 0 {
		defer func() {
			// After their requests' operations went to the shards:
			// from now on JoinNow may join them.
			for _, st := range fresh {
				if _, bad := refused[st]; !bad {
					st.confirmed.Store(true)
				}
			}
		}()
		// Streams no link can take now stay in the table; they are
		// subscribed when a link is back (place).
		bad := h.place(ctx, fresh)
		if len(bad) > 0 {
			// Refused by Redis, not broken: those streams (never
			// acked) are dropped and their requests fail; the link
			// and every other stream carry on.
			refused = make(map[*stream]struct{}, len(bad))
			for _, b := range bad {
				refused[b.st] = struct{}{}
				h.drop(b.st)
			}
			h.log.Warn("redis refused subscriptions", "streams", len(bad), "first", bad[0].st.name, "err", bad[0].err)
		}
	}
	now := time.Now()
	for i := range batch {
		r := &batch[i]
		switch r.kind {
		case reqSubscribe:
			if f := h.refusal(r, refused, now); f != nil {
				h.unjoin(r, refused, now)
				h.toShard(r.sub.shard, shardOp{kind: opRefuse, sub: r.sub, names: r.changed, frame: f})
				continue
			}
			ack := wsproto.NewSubscribed(r.all, r.reqID, now)
			h.toShard(r.sub.shard, shardOp{kind: opAdd, sub: r.sub, streams: r.streams, frame: ack})
		case reqUnsubscribe:
			streams := make([]*stream, 0, len(r.changed))
			for _, name := range r.changed {
				if st := h.streams[name]; st != nil {
					streams = append(streams, st)
				}
			}
			ack := wsproto.NewUnsubscribed(r.all, r.reqID, now)
			h.toShard(r.sub.shard, shardOp{kind: opDel, sub: r.sub, streams: streams, frame: ack})
		case reqRemove:
			h.toShard(r.sub.shard, shardOp{kind: opRemove, sub: r.sub})
		case reqIdle:
			if r.st.refs.Load() == 0 && h.streams[r.st.name] == r.st {
				h.setIdle(r.st, now)
			}
		}
		if r.then != nil {
			r.then() // after the operation went to the shard
		}
	}
}

// refusal returns the error frame that refuses subscribe request r, or nil
// when r goes ahead: r was refused by join (MaxStreams), or names a stream
// Redis refused. Control goroutine only.
func (h *Hub) refusal(r *request, refused map[*stream]struct{}, now time.Time) *wsproto.Frame {
	if r.full {
		return wsproto.NewStreamCapReached(h.cfg.MaxStreams, r.changed, r.reqID, now)
	}
	if r.shardedPats != nil {
		return wsproto.NewError(wsproto.CodeUpstreamRefused,
			"these patterns can match sharded channels, published with SPUBLISH, which Redis never delivers to a pattern: subscribe to those channels by name; nothing of the request was subscribed",
			r.shardedPats, r.reqID, now)
	}
	var names []string
	for _, st := range r.streams {
		if _, ok := refused[st]; ok {
			names = append(names, st.name)
		}
	}
	if names == nil {
		return nil
	}
	return wsproto.NewUpstreamRefused(names, r.reqID, now)
}

// unjoin gives back the references join took for a request that is
// refused after all; a stream left without one lingers as usual. Streams
// in dropped are gone already. Control goroutine only.
func (h *Hub) unjoin(r *request, dropped map[*stream]struct{}, now time.Time) {
	for _, st := range r.streams {
		if _, ok := dropped[st]; ok {
			continue
		}
		if st.refs.Add(-1) == 0 && h.streams[st.name] == st {
			h.setIdle(st, now)
		}
	}
	r.streams = nil
}

// setIdle starts st's linger. Control goroutine only.
func (h *Hub) setIdle(st *stream, now time.Time) {
	st.idleSince = now
	h.idle[st] = struct{}{}
	h.idlePeak = max(h.idlePeak, len(h.idle))
}

// drop removes st from the stream table without an upstream unsubscribe:
// Redis refused it, so it was never subscribed. Control goroutine only.
func (h *Hub) drop(st *stream) {
	if h.streams[st.name] != st {
		return
	}
	st.dropped.Store(true) // before refusedOnConnect reads shardSubs
	delete(h.streams, st.name)
	delete(h.idle, st)
	delete(h.unplaced, st)
	if st.link != nil {
		delete(st.link.streams, st)
		st.link = nil
	}
	if st.pattern {
		h.patterns.Delete(st.name)
	} else {
		h.channels.Delete(st.name)
	}
	h.nstreams.Add(-1)
}

// toShard hands op to sh from the control goroutine. It waits while the
// shard's channel is full (a shard always makes progress), but not past
// Close: a shard goroutine that has returned on done would never take it,
// and Close would wait for this goroutine forever.
func (h *Hub) toShard(sh *Shard, op shardOp) {
	select {
	case sh.in <- op:
	case <-h.done:
	}
}

// join takes a reference on each stream r names, creating the missing
// ones, and appends the created ones to fresh. Control goroutine only.
func (h *Hub) join(r *request, fresh []*stream) []*stream {
	if len(h.cfg.ShardedChannels) > 0 {
		for _, name := range r.changed {
			if h.streams[name] == nil && auth.IsPattern(name) && h.hitsSharded(name) {
				r.shardedPats = append(r.shardedPats, name)
			}
		}
		if r.shardedPats != nil {
			return fresh
		}
	}
	if h.cfg.MaxStreams > 0 {
		n := 0
		for _, name := range r.changed {
			if h.streams[name] == nil {
				n++
			}
		}
		if n > 0 && len(h.streams)+n > h.cfg.MaxStreams {
			r.full = true
			return fresh
		}
	}
	streams := make([]*stream, 0, len(r.changed))
	for _, name := range r.changed {
		st := h.streams[name]
		if st == nil {
			pattern := auth.IsPattern(name)
			st = &stream{
				name:      name,
				pattern:   pattern,
				sharded:   !pattern && h.isSharded(name),
				subs:      make([][]*Subscriber, len(h.shards)),
				shardSubs: make([]atomic.Int32, len(h.shards)),
			}
			h.streams[name] = st
			h.streamsPeak = max(h.streamsPeak, len(h.streams))
			if st.pattern {
				h.patterns.Store(name, st)
			} else {
				h.channels.Store(name, st)
			}
			h.nstreams.Add(1)
			fresh = append(fresh, st)
		}
		st.refs.Add(1)
		delete(h.idle, st)
		streams = append(streams, st)
	}
	r.streams = streams
	return fresh
}

// expire unsubscribes upstream the streams idle for longer than Linger.
func (h *Hub) expire(ctx context.Context, now time.Time) {
	if len(h.idle) == 0 {
		return
	}
	var gone []*stream
	for st := range h.idle {
		if now.Sub(st.idleSince) < h.cfg.Linger {
			continue
		}
		delete(h.idle, st)
		if !st.refs.CompareAndSwap(0, refsGone) {
			continue // joined again meanwhile (JoinNow)
		}
		delete(h.streams, st.name)
		if st.pattern {
			h.patterns.Delete(st.name)
		} else {
			h.channels.Delete(st.name)
		}
		h.nstreams.Add(-1)
		gone = append(gone, st)
	}
	if len(gone) > 0 {
		h.unsubscribe(ctx, gone)
	}
	h.shrinkMaps()
}

// shrinkMaps rebuilds the stream table and the idle set once they hold
// less than a quarter of their peak: Go maps never give buckets back, so
// the memory of a burst of streams (thousands of clients on channels of
// their own, or churn) would otherwise stay for the process's life.
// Control goroutine only.
func (h *Hub) shrinkMaps() {
	const floor = 1024 // below this, a rebuild saves too little to bother
	if h.streamsPeak > floor && len(h.streams) < h.streamsPeak/4 {
		h.streams = rebuilt(h.streams)
		h.streamsPeak = len(h.streams)
	}
	if h.idlePeak > floor && len(h.idle) < h.idlePeak/4 {
		h.idle = rebuilt(h.idle)
		h.idlePeak = len(h.idle)
	}
}

// rebuilt copies m into a map sized for its current length (maps.Clone
// may keep the source's capacity).
func rebuilt[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	maps.Copy(out, m)
	return out
}

// unsubscribe takes streams, gone from the table, off their links:
// one pipelined round trip per link. Control goroutine only.
func (h *Hub) unsubscribe(ctx context.Context, gone []*stream) {
	byLink := make(map[*link][]*stream)
	for _, st := range gone {
		delete(h.unplaced, st)
		if l := st.link; l != nil {
			delete(l.streams, st)
			st.link = nil
			byLink[l] = append(byLink[l], st)
		}
	}
	for l, streams := range byLink {
		if l.dead {
			continue
		}
		res, err := h.upstream(ctx, l, streams, false)
		if err != nil {
			h.linkDown(l, err)
		} else if len(res.refused) > 0 {
			// The stream is gone from the table whatever Redis
			// says: its messages, if any, find no subscriber.
			h.log.Warn("redis refused unsubscribes", "streams", len(res.refused), "first", res.refused[0].st.name, "err", res.refused[0].err)
		}
	}
	h.closeIdleShardLinks()
	h.updateHealth()
}

// isSharded reports whether channel is one of Config.ShardedChannels.
func (h *Hub) isSharded(channel string) bool {
	for _, g := range h.cfg.ShardedChannels {
		if auth.GlobMatch(g, channel) {
			return true
		}
	}
	return false
}

// hitsSharded reports whether pattern can match a channel of
// Config.ShardedChannels.
func (h *Hub) hitsSharded(pattern string) bool {
	for _, g := range h.cfg.ShardedChannels {
		if auth.PatternsOverlap(g, pattern) {
			return true
		}
	}
	return false
}
