package server_test

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsgw/gateway/fanout/redistest"
	"github.com/wsgw/gateway/server/servertest"
)

// lossNotice is a messages_lost error frame.
type lossNotice struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Streams []struct {
		Stream  string `json:"stream"`
		LastSeq uint64 `json:"lastSeq"`
		Lost    uint64 `json:"lost"`
	} `json:"streams"`
	Timestamp string `json:"timestamp"`
}

// TestLossNotice: with the slow-client closes off, a reader pauses while
// thousands of 2 KB messages flow on two of its three streams (an exact
// channel and a pattern), then resumes. What it reads accounts for every
// seq up to the last one published, without any further message: each
// loss is either a seq jump it sees itself (frames queued after a burst
// of drops) or named in a messages_lost notice sent as soon as the
// connection caught up, with the last seq the reader got on that stream
// and how many came after it. The stream that lost nothing is never
// named, and the next message on each stream follows the last lost one.
func TestLossNotice(t *testing.T) {
	const (
		total   = 3000 // per stream
		batch   = 250
		channel = "market:tick:LOSS"
		pattern = "indicators:*"
		inPat   = "indicators:rsi"
		quiet   = "market:tick:QUIET"
	)
	rs := redistest.Start(t)
	g := startGateway(t, rs, func(o *options) {
		o.srv.Loops = 1 // one shard: the barrier below orders after every delivery
		o.srv.MaxOutboundBytes = 32 << 10
		o.srv.SlowClientMaxDrops = 0
		o.srv.SlowClientTimeout = 0
		o.hub.SendQueue = 64
	})
	slow := servertest.Upgrade(t, g.addr, servertest.RcvBuf(4096))
	rawSubscribe(t, slow, channel, pattern, quiet)
	rs.Publish(t, quiet, `"before the pause"`)
	slow.ExpectText(t, `"before the pause"`)

	// From here on it reads nothing.
	payload := `{"pad":"` + strings.Repeat("x", 2040) + `"}`
	published := 0
	for first := 1; first <= total; first += batch {
		last := first + batch - 1
		for _, ch := range []string{channel, inPat} {
			rs.Do(t, "EVAL", publishScript, "1", ch, strconv.Itoa(first), strconv.Itoa(last), payload)
		}
		published += 2 * batch
		servertest.WaitFor(t, 10*time.Second, "the gateway to receive the batch", func() bool {
			return g.hub.Stats().MessagesReceived >= uint64(published+1)
		})
	}
	if hd := g.hub.Stats().HandoffDropped; hd != 0 {
		t.Fatalf("%d messages lost at the shard's hand-off: the publisher outran the gateway", hd)
	}
	// A subscribe on the same shard is acknowledged after every delivery
	// handed to the shard before it: the paused reader's drops are all
	// noted once this ack arrives.
	barrier := dial(t, g.wsURL(""))
	barrier.subscribe(t, "market:tick:BARRIER")
	if d := g.srv.Stats().MessagesDropped; d < total {
		t.Fatalf("only %d frames dropped for the paused reader: the test did not overflow it", d)
	}

	// known is the seq up to which the reader knows what happened on a
	// stream: received, or lost as a notice or a jump told it.
	known := map[string]uint64{}
	received := map[string]uint64{}
	notices, jumps := 0, 0
	for known[channel] < total || known[pattern] < total {
		f, err := slow.ReadFrame(10 * time.Second)
		if err != nil {
			t.Fatalf("the reader knows of seq %v of %d and hears nothing more: %v", known, total, err)
		}
		if f.Op != servertest.OpText {
			continue
		}
		p := f.Payload
		var m struct {
			Type    string `json:"type"`
			Seq     uint64 `json:"seq"`
			Channel string `json:"channel"`
			Pattern string `json:"pattern"`
		}
		if err := json.Unmarshal(p, &m); err != nil {
			t.Fatalf("%v: %.200s", err, p)
		}
		switch m.Type {
		case "data":
			stream := m.Channel
			if m.Pattern != "" {
				stream = m.Pattern
			}
			switch {
			case m.Seq <= known[stream]:
				t.Fatalf("%s: seq %d, but the reader was told it was lost (known up to %d)", stream, m.Seq, known[stream])
			case m.Seq > known[stream]+1:
				jumps++
			}
			known[stream] = m.Seq
			received[stream]++
		case "error":
			var n lossNotice
			if err := json.Unmarshal(p, &n); err != nil {
				t.Fatal(err)
			}
			if n.Code != "messages_lost" || n.Message == "" || n.Timestamp == "" || len(n.Streams) == 0 {
				t.Fatalf("got %s, want a messages_lost notice", p)
			}
			notices++
			for _, st := range n.Streams {
				switch {
				case st.Stream != channel && st.Stream != pattern:
					t.Fatalf("notice names %q, which lost nothing: %s", st.Stream, p)
				case st.Lost == 0:
					t.Fatalf("notice names %q with nothing lost: %s", st.Stream, p)
				case st.LastSeq == known[st.Stream]:
					// News: the loss after the last frame read.
					known[st.Stream] = st.LastSeq + st.Lost
				case st.LastSeq+st.Lost >= known[st.Stream]:
					t.Fatalf("notice says %s lost %d after seq %d, but the reader is at %d: %s",
						st.Stream, st.Lost, st.LastSeq, known[st.Stream], p)
				}
				// Else a loss the reader saw as a jump already.
			}
		default:
			t.Fatalf("unexpected frame %.200s", p)
		}
	}
	t.Logf("the reader got %v frames of %d per stream, saw %d seq jumps and %d notices", received, total, jumps, notices)
	if known[channel] != total || known[pattern] != total {
		t.Fatalf("the reader knows of seq %v, beyond the %d published", known, total)
	}
	if notices == 0 {
		t.Fatal("no loss notice")
	}
	missed := 2*total - received[channel] - received[pattern]
	if dropped := g.srv.Stats().MessagesDropped; dropped != missed {
		t.Errorf("/stats messages_dropped %d, the reader missed %d", dropped, missed)
	}

	// The streams go on right after the loss, without a gap the reader
	// does not know of.
	rs.Publish(t, channel, `"after"`)
	rs.Publish(t, inPat, `"after"`)
	for range 2 {
		p := slow.ExpectText(t, `"after"`)
		if seq := seqOf(p); seq != total+1 {
			t.Fatalf("next message has seq %d, want %d: %s", seq, total+1, p)
		}
	}
}
