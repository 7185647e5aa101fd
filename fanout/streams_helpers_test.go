package fanout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/wsgw/gateway/fanout/redistest"
	"github.com/wsgw/gateway/server/servertest"
	"github.com/wsgw/gateway/wsproto"
)

// dmsg is a decoded frame of the durable side.
type dmsg struct {
	Type      string          `json:"type"`
	Seq       uint64          `json:"seq"`
	Channel   string          `json:"channel"`
	Pattern   string          `json:"pattern"`
	ID        string          `json:"id"`
	Replay    bool            `json:"replay"`
	Data      json.RawMessage `json:"data"`
	Count     uint64          `json:"count"`
	LastID    string          `json:"lastId"`
	Code      string          `json:"code"`
	Reason    string          `json:"reason"`
	Stream    string          `json:"stream"`
	Since     *string         `json:"since"`
	From      *string         `json:"from"`
	Channels  []string        `json:"channels"`
	RequestID json.RawMessage `json:"requestId"`
}

func (m dmsg) String() string {
	switch m.Type {
	case "data":
		if m.Replay {
			return fmt.Sprintf("replay %s %s %s", m.Channel, m.ID, m.Data)
		}
		return fmt.Sprintf("data #%d %s %s %s", m.Seq, m.Channel, m.ID, m.Data)
	case "replayed":
		return fmt.Sprintf("replayed %s count %d lastId %s", m.Channel, m.Count, m.LastID)
	case "error":
		from := "null"
		if m.From != nil {
			from = *m.From
		}
		return fmt.Sprintf("error %s %s %s %v from %s", m.Code, m.Reason, m.Stream, m.Channels, from)
	}
	return m.Type
}

// payloadOf strips the unmasked header of one server text frame (the
// hub tests' decodeFrame uses it too).
func payloadOf(b []byte) ([]byte, error) {
	if len(b) < 2 || b[0] != 0x81 || b[1]&0x80 != 0 {
		return nil, fmt.Errorf("not one unmasked text frame: % x", b[:min(len(b), 4)])
	}
	hl, n := 2, int(b[1]&0x7f)
	switch n {
	case 126:
		hl, n = 4, int(b[2])<<8|int(b[3])
	case 127:
		hl, n = 10, 0
		for _, c := range b[2:10] {
			n = n<<8 | int(c)
		}
	}
	if len(b)-hl != n {
		return nil, fmt.Errorf("header says %d payload bytes, frame has %d", n, len(b)-hl)
	}
	return b[hl:], nil
}

// sinkSub is what the test sink holds for one subscriber: the frames it
// got, decoded, and the room of its queue.
type sinkSub struct {
	mu     sync.Mutex
	frames []dmsg
	// room is how many more frames Push accepts; -1: any number. Live
	// frames (Deliver) always go, as into a queue with room to spare.
	room int
	// gone: the connection closed; frames are released, not kept.
	gone bool
}

func (ss *sinkSub) snapshot() []dmsg {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return append([]dmsg(nil), ss.frames...)
}

func (ss *sinkSub) len() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.frames)
}

func (ss *sinkSub) setRoom(n int) {
	ss.mu.Lock()
	ss.room = n
	ss.mu.Unlock()
}

func (ss *sinkSub) close() {
	ss.mu.Lock()
	ss.gone = true
	ss.mu.Unlock()
}

// testSink is a Sink that decodes what the readers hand it.
type testSink struct {
	mu   sync.Mutex
	subs map[*Subscriber]*sinkSub
	errs []error
	// live counts frames handed by Deliver (references taken).
	live int
}

func newTestSink() *testSink { return &testSink{subs: make(map[*Subscriber]*sinkSub)} }

// newSub makes a subscriber for the sink, with unlimited room.
func (ts *testSink) newSub() (*Subscriber, *sinkSub) {
	s := new(Subscriber)
	ss := &sinkSub{room: -1}
	ts.mu.Lock()
	ts.subs[s] = ss
	ts.mu.Unlock()
	return s, ss
}

func (ts *testSink) of(s *Subscriber) *sinkSub {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ss := ts.subs[s]
	if ss == nil {
		ts.errs = append(ts.errs, errors.New("frame for an unknown subscriber"))
		ss = &sinkSub{room: -1, gone: true}
		ts.subs[s] = ss
	}
	return ss
}

func (ts *testSink) record(ss *sinkSub, f *wsproto.Frame) {
	p, err := payloadOf(f.Bytes())
	var m dmsg
	if err == nil {
		err = json.Unmarshal(p, &m)
	}
	if err != nil {
		ts.mu.Lock()
		ts.errs = append(ts.errs, err)
		ts.mu.Unlock()
		return
	}
	ss.frames = append(ss.frames, m)
}

func (ts *testSink) Deliver(st *DurableStream, subs []*Subscriber, f *wsproto.Frame) {
	ts.mu.Lock()
	ts.live++
	ts.mu.Unlock()
	for _, s := range subs {
		ss := ts.of(s)
		ss.mu.Lock()
		if !ss.gone {
			ts.record(ss, f)
		}
		ss.mu.Unlock()
	}
	f.Release()
}

func (ts *testSink) Push(s *Subscriber, f *wsproto.Frame) bool {
	ss := ts.of(s)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	switch {
	case ss.gone:
	case ss.room == 0:
		return false
	default:
		if ss.room > 0 {
			ss.room--
		}
		ts.record(ss, f)
	}
	f.Release()
	return true
}

func (ts *testSink) check(tb testing.TB) {
	tb.Helper()
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if len(ts.errs) > 0 {
		tb.Fatalf("sink: %v", ts.errs)
	}
}

// startStreams builds a durable side on rs, closed when the test ends.
// An empty KeyPrefix is the setting's default, "stream:".
func startStreams(tb testing.TB, rs *redistest.Server, cfg StreamConfig, sink Sink) *Streams {
	tb.Helper()
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = "stream:"
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.Default()
	}
	s, err := NewStreams(cfg, rueidis.ClientOption{InitAddress: []string{rs.Addr()}}, sink, log)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			tb.Errorf("Streams.Close: %v", err)
		}
	})
	return s
}

// xadd appends an entry whose data field is v and returns its ID.
func xadd(tb testing.TB, rs *redistest.Server, key, v string) string {
	tb.Helper()
	return rs.Do(tb, "XADD", key, "*", "data", v)
}

// waitFrames waits until ss holds at least n frames and returns them.
func waitFrames(tb testing.TB, ss *sinkSub, n int) []dmsg {
	tb.Helper()
	servertest.WaitFor(tb, 20*time.Second, strconv.Itoa(n)+" frames", func() bool { return ss.len() >= n })
	return ss.snapshot()
}

// id parses an entry ID the test knows to be valid.
func id(tb testing.TB, s string) wsproto.StreamID {
	tb.Helper()
	v, ok := wsproto.ParseStreamID(s)
	if !ok {
		tb.Fatalf("bad entry ID %q", s)
	}
	return v
}
