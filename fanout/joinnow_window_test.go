package fanout

import (
	"testing"

	"github.com/redis/rueidis"
)

// TestJoinNowAckedThenMissed: once JoinNow has returned true the loop
// writes the "subscribed" ack, so a message the hub receives from then on
// must reach the subscriber, as it does after an ack that went through
// the shard. The shard has not run the opJoin yet (it is behind) and has
// no other subscriber of the stream.
func TestJoinNowAckedThenMissed(t *testing.T) {
	h := newOfflineHub(t, 1, 64)
	sh := h.Shard(0)
	st := newOfflineStream(h, "news")
	st.confirmed.Store(true)
	h.channels.Store("news", st)

	s := newSubscriber(h, 0)
	if !h.JoinNow(s, []string{"news"}) {
		t.Fatal("JoinNow refused a confirmed stream")
	}
	// The loop has written the ack; the client has it and a publisher
	// publishes. The shard goroutine gets to the opJoin only now.
	h.onMessage(rueidis.PubSubMessage{Channel: "news", Message: "1"})
	for len(sh.in) > 0 {
		sh.handle(<-sh.in)
	}
	if n := drainShard(sh); n != 1 {
		t.Fatalf("subscriber got %d frames after its ack, want the 1 message published after it", n)
	}
}
