package fanout

// The durable side of the fanout (docs/DURABILITY.md): stream readers that
// read durable channels from Redis Streams, stamp and encode each entry
// once, and hand the frames to the delivery path through a Sink. Streams
// is safe for concurrent use; each reader's state belongs to its goroutine
// (reader.go), replays are in replay.go, Redis replies in xreply.go.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/wsgw/gateway/auth"
	"github.com/wsgw/gateway/wsproto"
)

// Sink is the delivery path as a stream reader sees it: the seam between
// the durable side and the connections' queues. A reader calls it from its
// own goroutine only, and a stream's frames always come from the same
// reader, so what a reader hands for a subscriber is queued in the order
// it was handed. Neither method may block.
//
// A reader may call either method for a subscriber until its next turn
// after Leave or Remove: the sink must take (and release) frames for
// subscribers whose connection is gone.
type Sink interface {
	// Deliver hands f, a live frame of st, to each of subs: the
	// subscribers attached to st (owned by the reader, valid during the
	// call only). It takes over the caller's reference. A full queue
	// drops f for that subscriber and counts it, as for pub/sub.
	Deliver(st *DurableStream, subs []*Subscriber, f *wsproto.Frame)
	// Push queues f for s alone (a replay frame, the "replayed" frame, a
	// replay_truncated or upstream_interrupted error) after everything
	// this reader queued for it before, and reports true, taking over the
	// reference; or, when s's queue has no room for it, reports false
	// and keeps nothing: the reader tries again on a later turn. Replay
	// frames are never dropped, they wait; a sink may refuse early (say,
	// past half its queue) to leave live frames room after the replay.
	Push(s *Subscriber, f *wsproto.Frame) bool
}

// DurableStream is one durable subscription target: an exact channel or a
// pattern, read by one reader. Its methods are safe for concurrent use.
type DurableStream struct {
	name    string
	pattern bool
	r       *reader

	// Reader goroutine only.
	seq    uint64        // last seq stamped
	tracks []*track      // its keys (a pattern's grow), append-only
	subs   []*Subscriber // attached: they get the live frames
	// subsChanged counts changes of subs; byShard is subs split by
	// shard as of byShardAt (hubSink.Deliver), rebuilt, never edited.
	subsChanged, byShardAt uint64
	byShard                [][]*Subscriber
	at                     map[*Subscriber]int
	resumes                int            // subscriptions replaying, not attached yet
	ready                  bool           // the exact key's cursor is known; a pattern's first scan is over
	scan                   *scanState     // a pattern's first scan, while it runs
	idle                   time.Time      // when it lost its last subscriber; zero while it has one
	byChan                 map[string]int // a pattern's track index by channel
}

// Name is the exact channel or the pattern.
func (st *DurableStream) Name() string { return st.name }

// Pattern reports whether the stream is a pattern subscription.
func (st *DurableStream) Pattern() bool { return st.pattern }

// StreamStats is a snapshot of the durable side's counters.
type StreamStats struct {
	Readers  int    `json:"readers"`
	Streams  int    `json:"streams"`
	Keys     int    `json:"keys"`
	Entries  uint64 `json:"entries"`  // live entries read, per stream
	Replayed uint64 `json:"replayed"` // replay frames pushed
	// Truncated counts replays that were incomplete (replay_truncated).
	Truncated uint64 `json:"truncated"`
	Wakes     uint64 `json:"wakes"`   // blocked reads cancelled to apply a request
	Outages   uint64 `json:"outages"` // reader link failures
	// Interrupted counts the outages told to subscribers
	// (upstream_interrupted): not those after which the same server
	// answered at once with every stream intact.
	Interrupted uint64 `json:"interrupted"`
	Reads       uint64 `json:"reads"` // round trips of the readers
}

// Streams is the durable side: it decides which names are durable, and
// runs the readers that serve them. Safe for concurrent use; Join, Leave
// and Remove never block.
type Streams struct {
	cfg  StreamConfig
	dur  *Durability
	opt  rueidis.ClientOption
	sink Sink
	log  *slog.Logger

	mu       sync.Mutex
	byName   map[string]*DurableStream
	patterns map[string]*DurableStream // the pattern streams of byName
	readers  []*reader
	client   rueidis.Client // made by the first reader that needs it (clientOf)
	closed   bool

	done chan struct{}
	wg   sync.WaitGroup
	disc *discovery // nil unless Discovery is auto

	// turnHook, when set (tests only), runs at the start of every
	// reader turn.
	turnHook atomic.Pointer[func()]

	entries, replayed, truncated, wakes, outages, interrupted, reads atomic.Uint64
	nstreams, nkeys                                                  atomic.Int64
}

// ErrStreamsClosed is returned by clientOf once Close was called.
var ErrStreamsClosed = errors.New("fanout: durable streams closed")

// NewStreams builds the durable side for cfg (checked with Check; zero
// fields take their defaults). opt is the Redis connection of the readers
// (address, credentials, Sentinel...); NewStreams overrides what the
// readers need: RESP2 (replies are walked without maps), no retry (a
// broken link must reach the reader, which then checks continuity), no
// client-side cache. Nothing connects until the first Join.
func NewStreams(cfg StreamConfig, opt rueidis.ClientOption, sink Sink, log *slog.Logger) (*Streams, error) {
	cfg = cfg.withDefaults()
	if field, rule := cfg.Check(); field != "" {
		return nil, fmt.Errorf("%w: %s %s", ErrConfig, field, rule)
	}
	if sink == nil {
		return nil, fmt.Errorf("%w: a durable side needs a sink", ErrConfig)
	}
	dur, err := NewDurability(cfg.Channels)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	opt.AlwaysRESP2 = true
	opt.DisableRetry = true
	opt.DisableCache = true
	if opt.ClientName == "" {
		opt.ClientName = "ws-gateway-streams"
	}
	// Each blocked reader holds a connection of the blocking pool, plus
	// one for a moment during a wake-up; replies of replay pages are
	// large, but a connection's buffers need not be.
	if opt.ReadBufferEachConn == 0 {
		opt.ReadBufferEachConn = 64 << 10
	}
	if opt.WriteBufferEachConn == 0 {
		opt.WriteBufferEachConn = 64 << 10
	}
	s := &Streams{cfg: cfg, dur: dur, opt: opt, sink: sink, log: log,
		byName: make(map[string]*DurableStream), patterns: make(map[string]*DurableStream), done: make(chan struct{})}
	if cfg.Discovery == DiscoveryAuto {
		s.disc = newDiscovery(s)
	}
	return s, nil
}

// Durable reports whether name (an exact channel or a pattern) is durable.
// Safe for concurrent use.
func (s *Streams) Durable(name string) bool { return s.dur.Durable(name) }

// Join starts sub's subscription to the durable name r.Name, resuming
// from r's positions: the reader replays what sub missed (preceded by a
// replay_truncated error when incomplete), then pushes the "replayed"
// frame and attaches it to live delivery. requestID is echoed in those
// frames. The caller has queued the subscribe ack for sub before calling
// Join. Never blocks; safe for concurrent use.
func (s *Streams) Join(sub *Subscriber, r Resume, requestID []byte) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	st := s.byName[r.Name]
	if st == nil {
		st = &DurableStream{name: r.Name, pattern: auth.IsPattern(r.Name), at: make(map[*Subscriber]int)}
		st.r = s.readerFor(st)
		s.byName[r.Name] = st
		s.nstreams.Add(1)
		st.r.enqueue(rop{kind: ropAdd, st: st})
		if st.pattern {
			s.patterns[r.Name] = st
			if s.disc != nil {
				s.disc.watch(st.name)
			}
		}
	}
	st.r.enqueue(rop{kind: ropJoin, st: st, sub: sub, resume: r, reqID: requestID})
	s.mu.Unlock()
	st.r.wake()
}

// Leave ends sub's subscription to the durable name, attached or still
// replaying. It takes effect at the reader's next turn (it does not wake
// it): until then frames for sub may still reach the sink. Never blocks.
func (s *Streams) Leave(sub *Subscriber, name string) {
	s.mu.Lock()
	if st := s.byName[name]; st != nil {
		st.r.enqueue(rop{kind: ropLeave, st: st, sub: sub})
	}
	s.mu.Unlock()
}

// Remove ends every durable subscription of sub (its connection closed),
// at each reader's next turn. Never blocks.
func (s *Streams) Remove(sub *Subscriber) {
	s.mu.Lock()
	for _, r := range s.readers {
		r.enqueue(rop{kind: ropRemove, sub: sub})
	}
	s.mu.Unlock()
}

// readerFor picks the reader of a new stream: the first with room for a
// key (a pattern's keys all go to its reader, however many), or a new one.
// Called with s.mu held.
func (s *Streams) readerFor(st *DurableStream) *reader {
	for _, r := range s.readers {
		if int(max(r.nkeys.Load(), r.nstreams.Load())) < s.cfg.ReaderKeys {
			r.nstreams.Add(1)
			return r
		}
	}
	r := newReader(s, len(s.readers))
	r.nstreams.Add(1)
	s.readers = append(s.readers, r)
	s.wg.Add(1)
	go r.run()
	return r
}

// dropStream forgets st once its reader has given it up (no subscriber
// for the linger, and no request for it waiting): it returns false, and
// keeps st, when a join for it was queued meanwhile. Reader goroutine.
func (s *Streams) dropStream(st *DurableStream) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.r.hasOpsFor(st) {
		return false
	}
	if s.byName[st.name] == st {
		delete(s.byName, st.name)
		s.nstreams.Add(-1)
		if st.pattern {
			delete(s.patterns, st.name)
			if s.disc != nil {
				s.disc.unwatch(st.name)
			}
		}
	}
	st.r.nstreams.Add(-1)
	return true
}

// patternsMatching returns the pattern streams that match channel, for
// keyspace notifications. Safe for concurrent use.
func (s *Streams) patternsMatching(channel string) []*DurableStream {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*DurableStream
	for _, st := range s.patterns {
		if auth.GlobMatch(st.name, channel) {
			out = append(out, st)
		}
	}
	return out
}

// clientOf returns the readers' Redis client, connecting it on first use.
// Safe for concurrent use.
func (s *Streams) clientOf() (rueidis.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrStreamsClosed
	}
	if s.client != nil {
		return s.client, nil
	}
	c, err := rueidis.NewClient(s.opt)
	if err != nil {
		return nil, fmt.Errorf("fanout: streams: connect: %w", err)
	}
	s.client = c
	if s.disc != nil {
		s.disc.start(c)
	}
	return c, nil
}

// Close stops every reader and closes the Redis client; frames readers
// hold are released. It waits for the readers until ctx ends.
func (s *Streams) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	for _, r := range s.readers {
		r.wake()
	}
	s.mu.Unlock()
	if s.disc != nil {
		s.disc.stop()
	}
	waited := make(chan struct{})
	go func() { s.wg.Wait(); close(waited) }()
	var err error
	select {
	case <-waited:
	case <-ctx.Done():
		err = fmt.Errorf("fanout: streams close: %w", ctx.Err())
	}
	s.mu.Lock()
	c := s.client
	s.mu.Unlock()
	if c != nil {
		c.Close() // fails a read still in flight: its reader returns
	}
	return err
}

// Stats returns the current counters. Safe for concurrent use.
func (s *Streams) Stats() StreamStats {
	s.mu.Lock()
	readers := len(s.readers)
	s.mu.Unlock()
	return StreamStats{
		Readers:     readers,
		Streams:     int(s.nstreams.Load()),
		Keys:        int(s.nkeys.Load()),
		Entries:     s.entries.Load(),
		Replayed:    s.replayed.Load(),
		Truncated:   s.truncated.Load(),
		Wakes:       s.wakes.Load(),
		Outages:     s.outages.Load(),
		Interrupted: s.interrupted.Load(),
		Reads:       s.reads.Load(),
	}
}

// keyOf is the stream key of a channel.
func (s *Streams) keyOf(channel string) string { return s.cfg.KeyPrefix + channel }
