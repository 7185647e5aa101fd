package fanout

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/wsgw/gateway/fanout/redistest"
	"github.com/wsgw/gateway/server/servertest"
)

// failoverTimeout bounds a failover as the tests see it: detection
// (about 1 s), election, promotion, the hub's reconnect with backoff.
const failoverTimeout = 30 * time.Second

// tracker reads one client's frames and checks them stream by stream
// (a stream is the channel of an exact subscription, or the pattern):
// seq rises by exactly one, and so does the publisher's counter in the
// payload, except across an upstream_interrupted naming the stream,
// which must come once per outage and be followed by a seq jump of at
// least two. From the first message after the jump on, every message
// must arrive again.
type tracker struct {
	c       *client
	streams map[string]*trackedStream
	// outages is how many upstream_interrupted errors named each
	// stream.
	outages map[string]int
	// busBorne names the streams whose messages cross a Redis Cluster
	// bus link on their way to the gateway (published on another node).
	// Redis sends a PUBLISH over the bus links that are up at that
	// moment; one being made again misses it (a node that answers no
	// ping for half the node timeout, as on a loaded machine, has its
	// link closed): their publisher's counter may jump with no fault of
	// the gateway, but their seq must still rise by one. busLost counts
	// what was skipped.
	busBorne map[string]bool
	busLost  map[string]int
}

type trackedStream struct {
	seq     uint64
	val     int
	n       int  // messages received
	waiting bool // interrupted, the seq jump not seen yet
	since   int  // messages received since the last recovery
}

func newTracker(c *client) *tracker {
	return &tracker{c: c, streams: make(map[string]*trackedStream), outages: make(map[string]int),
		busBorne: make(map[string]bool), busLost: make(map[string]int)}
}

func (tr *tracker) stream(name string) *trackedStream {
	s := tr.streams[name]
	if s == nil {
		s = &trackedStream{}
		tr.streams[name] = s
	}
	return s
}

// readUntil reads frames until cond holds, failing on any frame that
// breaks the rules above or when timeout passes.
func (tr *tracker) readUntil(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.After(timeout)
	for !cond() {
		var b []byte
		select {
		case b = <-tr.c.frames:
		case <-deadline:
			tb.Fatalf("%s: timed out after %v waiting for %s; streams %s; outages %v", tr.c.name, timeout, what, tr.dump(), tr.outages)
		}
		m := decodeFrame(tb, b)
		switch {
		case m.Type == "data":
			name := m.Channel
			if m.Pattern != "" {
				name = m.Pattern
			}
			v, err := strconv.Atoi(string(m.Data))
			if err != nil {
				tb.Fatalf("%s: payload %s", tr.c.name, m.Data)
			}
			s := tr.stream(name)
			switch {
			case s.n == 0:
			case s.waiting:
				if m.Seq < s.seq+2 {
					tb.Fatalf("%s: %s: first seq after the outage %d, last before %d: no jump", tr.c.name, name, m.Seq, s.seq)
				}
				s.waiting, s.since = false, 0
			case m.Seq == s.seq+1 && v > s.val+1 && tr.busBorne[name]:
				tr.busLost[name] += v - s.val - 1
				tb.Logf("%s: %s: publishes %d to %d lost on the cluster bus (seq %d follows %d)", tr.c.name, name, s.val+1, v-1, m.Seq, s.seq)
			case m.Seq != s.seq+1 || v != s.val+1:
				tb.Fatalf("%s: %s: seq %d value %d after seq %d value %d, with no interruption", tr.c.name, name, m.Seq, v, s.seq, s.val)
			}
			s.seq, s.val = m.Seq, v
			s.n++
			s.since++
		case m.Type == "error" && m.Code == "upstream_interrupted":
			for _, name := range m.Channels {
				tr.outages[name]++
				if tr.outages[name] > 1 {
					tb.Fatalf("%s: %s interrupted %d times", tr.c.name, name, tr.outages[name])
				}
				tr.stream(name).waiting = true
			}
		default:
			tb.Fatalf("%s: unexpected frame %+v", tr.c.name, m)
		}
	}
}

func (tr *tracker) dump() string {
	out := ""
	for _, k := range slices.Sorted(maps.Keys(tr.streams)) {
		s := tr.streams[k]
		out += fmt.Sprintf("[%s seq %d val %d n %d waiting %v since %d] ", k, s.seq, s.val, s.n, s.waiting, s.since)
	}
	return out
}

// flowing reports whether every stream of names received at least n
// messages since its last recovery (or since the start).
func (tr *tracker) flowing(n int, names ...string) func() bool {
	return func() bool {
		for _, name := range names {
			if s := tr.streams[name]; s == nil || s.waiting || s.since < n {
				return false
			}
		}
		return true
	}
}

// recovered reports whether every stream of names was interrupted once
// and has received n messages since.
func (tr *tracker) recovered(n int, names ...string) func() bool {
	flowing := tr.flowing(n, names...)
	return func() bool {
		for _, name := range names {
			if tr.outages[name] != 1 {
				return false
			}
		}
		return flowing()
	}
}

// publisher publishes an increasing counter on each of its channels
// every period through its own client (c: a publisher like any other),
// counting per channel only the publishes Redis acknowledged, so that a
// failed one leaves no hole in the sequence.
type publisher struct {
	stop chan struct{}
	done chan struct{}
	sent atomic.Int64
}

func startPublisher(tb testing.TB, c rueidis.Client, sharded bool, channels ...string) *publisher {
	tb.Helper()
	p := &publisher{stop: make(chan struct{}), done: make(chan struct{})}
	next := make(map[string]int)
	go func() {
		defer close(p.done)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
			}
			for _, ch := range channels {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				cmd := c.B().Publish().Channel(ch).Message(strconv.Itoa(next[ch] + 1)).Build()
				if sharded {
					cmd = c.B().Spublish().Channel(ch).Message(strconv.Itoa(next[ch] + 1)).Build()
				}
				if c.Do(ctx, cmd).Error() == nil {
					next[ch]++
					p.sent.Add(1)
				}
				cancel()
			}
		}
	}()
	tb.Cleanup(p.halt)
	return p
}

func (p *publisher) halt() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

func urlClient(tb testing.TB, url string) rueidis.Client {
	tb.Helper()
	opt, err := rueidis.ParseURL(url)
	if err != nil {
		tb.Fatal(err)
	}
	opt.DisableCache = true
	c, err := rueidis.NewClient(opt)
	if err != nil {
		tb.Fatalf("publisher client: %v", err)
	}
	tb.Cleanup(c.Close)
	return c
}

// TestHubSentinel: on a Sentinel setup (1 master, 1 replica, 3
// sentinels) under a steady publish, the hub follows the promoted
// master, after a crash of the master (SIGKILL) and after a graceful
// SENTINEL FAILOVER, which leaves the old master up and silent: Healthy
// is false meanwhile, every client gets one upstream_interrupted for its
// streams, their seq jumps, and every message published after the
// recovery arrives.
func TestHubSentinel(t *testing.T) {
	for _, tc := range []struct {
		name     string
		failover func(tb testing.TB, st *redistest.Sentinel)
		canary   time.Duration
		// why the link went down, as logged
		why string
	}{
		{"SIGKILL of the master", func(tb testing.TB, st *redistest.Sentinel) { st.Master.Kill(tb) }, 200 * time.Millisecond, "EOF"},
		// No canary: the hub must see the new master in rueidis's map,
		// not wait for a silent link's canary (or the old master's
		// demotion, seconds later).
		{"SENTINEL FAILOVER", func(tb testing.TB, st *redistest.Sentinel) {
			st.Sentinels[0].Do(tb, "SENTINEL", "FAILOVER", redistest.MasterSet)
		}, 0, errMasterMoved.Error()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := redistest.StartSentinel(t, time.Second)
			cfg := testConfig("")
			cfg.RedisURL = st.URL()
			cfg.CanaryInterval = tc.canary
			hs := startHub(t, cfg)
			waitHealthy(t, hs.h, true)
			if m := hs.h.Stats().RedisMode; m != "sentinel" {
				t.Fatalf("RedisMode %q, want sentinel", m)
			}
			a, b := hs.newClient(t, "a", 0), hs.newClient(t, "b", 1)
			hs.subscribe(t, a, []string{"alerts", "news"}, "")
			hs.subscribe(t, b, []string{"news.*"}, "")
			trA, trB := newTracker(a), newTracker(b)
			startPublisher(t, urlClient(t, st.URL()), false, "news", "alerts", "news.eu")
			trA.readUntil(t, failoverTimeout, "steady delivery", trA.flowing(5, "news", "alerts"))
			trB.readUntil(t, failoverTimeout, "steady delivery", trB.flowing(5, "news.*"))

			old := st.MasterAddr()
			tc.failover(t, st)
			servertest.WaitFor(t, failoverTimeout, "Healthy() false during the failover", func() bool { return !hs.h.Healthy() })
			trA.readUntil(t, failoverTimeout, "recovery", trA.recovered(20, "news", "alerts"))
			trB.readUntil(t, failoverTimeout, "recovery", trB.recovered(20, "news.*"))
			waitHealthy(t, hs.h, true)
			if now := st.MasterAddr(); now == old {
				t.Fatalf("the sentinels still name %s", old)
			}
			if errs := hs.logs.errsOf("redis link down"); len(errs) != 1 || !strings.Contains(errs[0], tc.why) {
				t.Fatalf("redis link down logged with %q, want once with %q", errs, tc.why)
			}
		})
	}
}

// TestHubCluster: on a Redis Cluster of three masters and three
// replicas, classic channels and patterns are delivered from a PUBLISH
// on any node, and sharded channels (ShardedChannels) from SPUBLISH on
// their shard, each stream subscribed once upstream, sharded ones on the
// node owning their slot; a pattern that could match a sharded channel is
// refused. A SIGKILL of a master owning sharded slots interrupts exactly
// its streams, a SIGKILL of the node holding the classic link exactly
// the classic streams, and both resume (the one failed over, the other
// moved to another node). Once the clients leave, no subscription is
// left on any node.
func TestHubCluster(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t, 1000)
	cfg := testConfig("")
	cfg.RedisURL = cl.URL()
	cfg.ShardedChannels = []string{"orders.*", "prices.?"}
	cfg.CanaryInterval = 200 * time.Millisecond
	hs := startHub(t, cfg)
	waitHealthy(t, hs.h, true)
	if m := hs.h.Stats().RedisMode; m != "cluster" {
		t.Fatalf("RedisMode %q, want cluster", m)
	}

	// The classic streams first, to learn which node holds the link.
	a, a2 := hs.newClient(t, "a", 0), hs.newClient(t, "a2", 1)
	hs.subscribe(t, a, []string{"alerts.*", "news"}, "")
	hs.subscribe(t, a2, []string{"news"}, "")
	var classic *redistest.Server
	servertest.WaitFor(t, waitTimeout, "the classic link's node", func() bool {
		for _, n := range cl.Nodes {
			if n.NumSub(t, "news") == 1 {
				classic = n
				return true
			}
		}
		return false
	})
	for i, n := range cl.Nodes {
		n.Publish(t, "news", strconv.Itoa(i+1))
		n.Publish(t, "alerts.eu", strconv.Itoa(i+1))
	}
	// The nodes forward publishes over their bus links, one per pair
	// of nodes: they arrive in any order, each once, seq in order.
	got := map[string][]string{}
	seqs := map[string]uint64{}
	for range 2 * len(cl.Nodes) {
		m := a.next(t)
		name := m.Channel
		if m.Pattern != "" {
			name = m.Pattern
		}
		if m.Type != "data" || m.Seq != seqs[name]+1 {
			t.Fatalf("a: got %+v after seq %d, want the next data frame", m, seqs[name])
		}
		seqs[name] = m.Seq
		got[name] = append(got[name], string(m.Data))
	}
	for _, name := range []string{"news", "alerts.*"} {
		if slices.Sort(got[name]); !slices.Equal(got[name], []string{"1", "2", "3", "4", "5", "6"}) {
			t.Fatalf("%s: got %v, want the publish of every node", name, got[name])
		}
	}

	// Sharded channels on the two shards that neither hold the classic
	// link nor replicate to its node: killing one of them must leave
	// the classic link alone, and killing the classic node later must
	// not take a shard with no replica left.
	related := classic
	if r, _ := classic.Exec("ROLE"); strings.HasPrefix(r, "slave ") {
		for _, n := range cl.Nodes {
			if strings.Contains(r, " "+strconv.Itoa(n.Port())+" ") {
				related = n
			}
		}
	}
	byMaster := make(map[*redistest.Server][]string)
	for i := 0; len(byMaster) < 2 || minLen(byMaster) < 2; i++ {
		if i > 1000 {
			t.Fatalf("no channels found on two shards: %v", byMaster)
		}
		ch := "orders." + strconv.Itoa(i)
		if m := cl.MasterOf(t, ch); m != related && len(byMaster[m]) < 2 {
			byMaster[m] = append(byMaster[m], ch)
		}
	}
	var victim, other *redistest.Server
	for m := range byMaster {
		if victim == nil {
			victim = m
		} else {
			other = m
		}
	}
	sharded := append(slices.Clone(byMaster[victim]), byMaster[other]...)
	b := hs.newClient(t, "b", 1)
	hs.subscribe(t, b, sharded, "")
	for _, ch := range sharded {
		servertest.WaitFor(t, waitTimeout, "SSUBSCRIBE "+ch+" on its owner", func() bool {
			return cl.MasterOf(t, ch).Do(t, "PUBSUB", "SHARDNUMSUB", ch) == ch+" 1"
		})
		if n := cl.Sum(t, "PUBSUB", "SHARDNUMSUB", ch); n != 1 {
			t.Fatalf("%s: %d sharded subscriptions over the nodes, want 1", ch, n)
		}
	}
	if n := cl.Sum(t, "PUBSUB", "NUMSUB", "news"); n != 1 {
		t.Fatalf("news: %d subscriptions over the nodes for two clients, want 1", n)
	}
	if n := cl.Sum(t, "PUBSUB", "NUMPAT"); n != 1 {
		t.Fatalf("%d patterns over the nodes, want 1", n)
	}
	if n := hs.h.Stats().RedisLinks; n != 3 {
		t.Fatalf("RedisLinks %d, want 3 (classic, two shards)", n)
	}

	// A pattern that can match a sharded channel would never see its
	// messages: refused whole, with the loop told.
	c := hs.newClient(t, "c", 0)
	hs.h.Subscribe(c.sub, []string{"ord*", "x"}, []string{"ord*", "x"}, []byte(`"r1"`))
	if m := c.next(t); m.Code != "upstream_refused" || !slices.Equal(m.Channels, []string{"ord*"}) || !strings.Contains(m.Message, "SPUBLISH") {
		t.Fatalf("pattern over sharded channels: got %+v, want upstream_refused naming ord*", m)
	}
	select {
	case r := <-hs.loops[0].refusals:
		if r.Sub != c.sub || !slices.Equal(r.Channels, []string{"ord*", "x"}) {
			t.Fatalf("refusal %+v", r)
		}
	case <-time.After(waitTimeout):
		t.Fatal("no Refusal for the loop")
	}

	// The publishers count from 1 again: new trackers.
	trA, trB := newTracker(a), newTracker(b)
	// Classic publishes through one node that lives, as publishes
	// through different nodes reach the others in any order; they
	// reach the gateway over the cluster bus.
	trA.busBorne["news"], trA.busBorne["alerts.*"] = true, true
	oc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{other.Addr()}, ForceSingleClient: true, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(oc.Close)
	startPublisher(t, oc, false, "news", "alerts.eu")
	startPublisher(t, cl.Client(t), true, sharded...)
	trA.readUntil(t, failoverTimeout, "steady classic delivery", trA.flowing(5, "news", "alerts.*"))
	trB.readUntil(t, failoverTimeout, "steady sharded delivery", trB.flowing(5, sharded...))

	// A shard's master dies: its replica is promoted, its streams
	// move there; nothing else is interrupted.
	victim.Kill(t)
	servertest.WaitFor(t, failoverTimeout, "Healthy() false", func() bool { return !hs.h.Healthy() })
	trB.readUntil(t, failoverTimeout, "the killed shard's streams to resume", trB.recovered(20, byMaster[victim]...))
	trB.readUntil(t, failoverTimeout, "the other shard's streams to flow", trB.flowing(20, byMaster[other]...))
	trA.readUntil(t, failoverTimeout, "the classic streams to flow", trA.flowing(20, "news", "alerts.*"))
	waitHealthy(t, hs.h, true)
	for _, ch := range byMaster[other] {
		if trB.outages[ch] != 0 {
			t.Fatalf("%s interrupted by the death of another shard's master", ch)
		}
	}
	if len(trA.outages) != 0 {
		t.Fatalf("classic streams interrupted by a shard's failover: %v", trA.outages)
	}

	// A slot moves (resharding): its old owner tells the hub with an
	// sunsubscribe it did not ask for; the stream follows its slot.
	moved := byMaster[other][0]
	slot := other.Do(t, "CLUSTER", "KEYSLOT", moved)
	dst := cl.MasterOf(t, byMaster[victim][0]) // the promoted replica
	dstID := dst.Do(t, "CLUSTER", "MYID")
	dst.Do(t, "CLUSTER", "SETSLOT", slot, "NODE", dstID)
	other.Do(t, "CLUSTER", "SETSLOT", slot, "NODE", dstID)
	trB.readUntil(t, failoverTimeout, "the moved channel to resume", trB.recovered(20, moved))
	if dst.Do(t, "PUBSUB", "SHARDNUMSUB", moved) != moved+" 1" || cl.Sum(t, "PUBSUB", "SHARDNUMSUB", moved) != 1 {
		t.Fatalf("%s not subscribed on its new owner alone", moved)
	}
	waitHealthy(t, hs.h, true)
	if n := trB.outages[byMaster[other][1]]; n != 0 {
		t.Fatalf("%s interrupted by the move of another slot", byMaster[other][1])
	}

	// The node holding the classic link dies: the link moves to
	// another node at once, the classic streams only are interrupted.
	classic.Kill(t)
	trA.readUntil(t, failoverTimeout, "the classic streams to resume", trA.recovered(20, "news", "alerts.*"))
	trB.readUntil(t, failoverTimeout, "the sharded streams to flow", trB.flowing(20, sharded...))
	waitHealthy(t, hs.h, true)
	if n := trB.outages[byMaster[other][1]]; n != 0 {
		t.Fatalf("%s interrupted by the death of the classic link's node", byMaster[other][1])
	}
	if n := cl.Sum(t, "PUBSUB", "NUMSUB", "news"); n != 1 {
		t.Fatalf("news: %d subscriptions over the nodes after the move, want 1", n)
	}
	// The bus drops a publish only while one of its links is being
	// made again: rarely, never most of them.
	for _, name := range []string{"news", "alerts.*"} {
		if lost, n := trA.busLost[name], trA.streams[name].n; lost*10 > n {
			t.Fatalf("%s: %d publishes lost on the cluster bus, %d received", name, lost, n)
		}
	}

	// Everyone leaves: after the linger, nothing is subscribed, and the
	// sharded links are closed.
	for _, c := range []*client{a, a2, b, c} {
		hs.remove(t, c)
	}
	servertest.WaitFor(t, waitTimeout, "no subscription left on any node", func() bool {
		n := cl.Sum(t, "PUBSUB", "NUMSUB", "news") + cl.Sum(t, "PUBSUB", "NUMPAT")
		for _, ch := range sharded {
			n += cl.Sum(t, "PUBSUB", "SHARDNUMSUB", ch)
		}
		return n == 0
	})
	servertest.WaitFor(t, waitTimeout, "the sharded links closed", func() bool { return hs.h.Stats().RedisLinks == 1 })
}

func minLen[K comparable, V any](m map[K][]V) int {
	n := -1
	for _, v := range m {
		if n < 0 || len(v) < n {
			n = len(v)
		}
	}
	return n
}
