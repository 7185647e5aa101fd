package fanout

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/wsgw/gateway/wsproto"
)

// lostStream is one entry of a messages_lost notice's "streams".
type lostStream struct {
	Stream  string `json:"stream"`
	LastSeq uint64 `json:"lastSeq"`
	Lost    uint64 `json:"lost"`
}

// decodeLoss checks that b is a messages_lost notice and returns its
// streams.
func decodeLoss(tb testing.TB, b []byte) []lostStream {
	tb.Helper()
	if m := decodeFrame(tb, b); m.Type != "error" || m.Code != string(wsproto.CodeMessagesLost) {
		tb.Fatalf("got %+v, want a messages_lost error", m)
	}
	var v struct {
		Streams []lostStream `json:"streams"`
	}
	if err := json.Unmarshal(b[bytesHeader(b):], &v); err != nil {
		tb.Fatal(err)
	}
	return v.Streams
}

// bytesHeader is the header length of the server frame b.
func bytesHeader(b []byte) int {
	switch b[1] & 0x7f {
	case 126:
		return 4
	case 127:
		return 10
	}
	return 2
}

// expectLoss reads the next frame and checks it is the loss notice want.
func (c *client) expectLoss(tb testing.TB, want []lostStream) {
	tb.Helper()
	select {
	case b := <-c.frames:
		if got := decodeLoss(tb, b); !slices.Equal(got, want) {
			tb.Fatalf("%s: loss notice %+v, want %+v", c.name, got, want)
		}
	case <-time.After(waitTimeout):
		tb.Fatalf("%s: no loss notice within %v", c.name, waitTimeout)
	}
}

// TestLossReport: what the notice says after a sequence of drops. Each
// case drops data frames of the given seqs, in order, on streams a and b.
func TestLossReport(t *testing.T) {
	a, b := &stream{name: "a"}, &stream{name: "b:*"}
	type drop struct {
		st  *stream
		seq uint64
	}
	tests := []struct {
		name  string
		drops []drop
		want  []lostStream
	}{
		{"nothing dropped", nil, nil},
		{"one", []drop{{a, 7}}, []lostStream{{"a", 6, 1}}},
		{"a run", []drop{{a, 7}, {a, 8}, {a, 9}}, []lostStream{{"a", 6, 3}}},
		{"from the first message", []drop{{a, 1}, {a, 2}}, []lostStream{{"a", 0, 2}}},
		{
			// 10 and 11 were queued: the client sees 7-9 missing from
			// their seq; the notice is about what followed them.
			"a later run replaces an earlier one", []drop{{a, 7}, {a, 8}, {a, 9}, {a, 12}, {a, 13}},
			[]lostStream{{"a", 11, 2}},
		},
		{
			"two streams, interleaved", []drop{{a, 3}, {b, 40}, {a, 4}, {b, 41}, {b, 42}},
			[]lostStream{{"a", 2, 2}, {"b:*", 39, 3}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := New(testConfig("127.0.0.1:1"), []Waker{nopWaker{}})
			if err != nil {
				t.Fatal(err)
			}
			s := new(Subscriber)
			h.Init(s, 0)
			for _, d := range tt.drops {
				f := wsproto.BuildData(d.seq, d.st.name, "", "1", time.Now())
				s.drop(d.st, f)
				f.Release()
			}
			// A dropped reply is counted, never reported.
			ack := wsproto.NewSubscribed([]string{"a"}, nil, time.Now())
			s.drop(nil, ack)
			ack.Release()
			if got := s.Dropped(); got != uint64(len(tt.drops)+1) {
				t.Errorf("Dropped() = %d, want %d", got, len(tt.drops)+1)
			}
			f := s.TakeLoss()
			if tt.want == nil {
				if f != nil {
					t.Fatalf("a notice without data lost: %s", f.Bytes())
				}
				return
			}
			if f == nil {
				t.Fatal("no notice")
			}
			got := decodeLoss(t, f.Bytes())
			f.Release()
			if !slices.Equal(got, tt.want) {
				t.Fatalf("notice %+v, want %+v", got, tt.want)
			}
			if f := s.TakeLoss(); f != nil {
				t.Fatalf("a second notice for the same loss: %s", f.Bytes())
			}
		})
	}
}

// TestLossHandOff: a producer dropping frames while the consumer claims
// notices, as fast as both can go. Every drop is told exactly once, the
// runs of successive notices join up, and the race detector sees the
// report change hands only through the slot's swaps.
func TestLossHandOff(t *testing.T) {
	const n = 20000
	h, err := New(testConfig("127.0.0.1:1"), []Waker{nopWaker{}})
	if err != nil {
		t.Fatal(err)
	}
	s := new(Subscriber)
	h.Init(s, 0)
	st := &stream{name: "firehose"}
	frames := make([]*wsproto.Frame, n)
	for i := range frames {
		frames[i] = wsproto.BuildData(uint64(i+1), st.name, "", "1", time.Now())
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, f := range frames {
			s.drop(st, f)
		}
	}()
	var notices [][]lostStream
	claim := func() bool {
		f := s.TakeLoss()
		if f == nil {
			return false
		}
		got := decodeLoss(t, f.Bytes())
		f.Release()
		notices = append(notices, got)
		return true
	}
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
			claim()
		}
	}
	claim() // what the producer stored after the last claim
	for _, f := range frames {
		f.Release()
	}
	next := uint64(0)
	for i, ls := range notices {
		if len(ls) != 1 || ls[0].Stream != st.name || ls[0].LastSeq != next || ls[0].Lost == 0 {
			t.Fatalf("notice %d: %+v, want firehose from lastSeq %d", i, ls, next)
		}
		next += ls[0].Lost
	}
	if next != n {
		t.Fatalf("%d notices told of %d lost frames, want %d", len(notices), next, n)
	}
	t.Logf("%d drops told in %d notices", n, len(notices))
}

// TestTakeLossAllocs: the consumer's check after every drained batch
// costs no allocation while nothing was lost, nor after a notice was
// claimed.
func TestTakeLossAllocs(t *testing.T) {
	h, err := New(testConfig("127.0.0.1:1"), []Waker{nopWaker{}})
	if err != nil {
		t.Fatal(err)
	}
	s := new(Subscriber)
	h.Init(s, 0)
	check := func(when string) {
		t.Helper()
		if a := testing.AllocsPerRun(1000, func() {
			if s.TakeLoss() != nil {
				t.Fatal("a notice without a loss")
			}
		}); a != 0 {
			t.Fatalf("%s: TakeLoss allocates %v times", when, a)
		}
	}
	check("never dropped")
	f := wsproto.BuildData(1, "a", "", "1", time.Now())
	s.drop(&stream{name: "a"}, f)
	f.Release()
	if n := s.TakeLoss(); n == nil {
		t.Fatal("no notice")
	} else {
		n.Release()
	}
	check("after a notice")
}
