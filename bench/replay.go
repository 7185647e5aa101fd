package main

import (
	"context"
	"fmt"
	"html"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"
)

// -scenario replay measures the durable channels' replays (docs/
// DURABILITY.md):
//
//   (a) one stream filled with -replay-entries entries of -size bytes
//       (pipelined XADD), then one client subscribes with since 0-0: the
//       entries per second replayed to it, from the subscribe to its
//       "replayed" frame, and whether it got each entry once, in order;
//   (b) N clients subscribed to one durable channel, reading live while
//       the publisher adds -rate entries per second; the gateway is
//       restarted (-storm-mode restart: SIGTERM, then started again on the
//       same port; kill: SIGKILL) while the publisher goes on, and every
//       client comes back at once (a new dial every replayRetry) and
//       resumes with since = the last ID it saw: the time until every
//       client has its "replayed" frame, the replayed entries per second,
//       and every client's IDs checked against the stream (no gap, no
//       duplicate).
//
// The gateway is started with -stream-channels '<prefix>:durable:*' and a
// -max-replay that holds part (a)'s stream whole.

// replayRetry is how often a client whose connection was lost dials again
// (plus as much jitter): "at once", without a browser's backoff.
const replayRetry = 50 * time.Millisecond

// ReplayWhole is part (a).
type ReplayWhole struct {
	Entries        int     `json:"entries"`
	EntryBytes     int     `json:"entry_bytes"`
	FillSeconds    float64 `json:"fill_s"`
	FillPerSec     float64 `json:"fill_per_s"`
	Seconds        float64 `json:"seconds"` // the subscribe to the replayed frame
	Received       int64   `json:"received"`
	ReplayedCount  int64   `json:"replayed_count"` // the replayed frame's count
	PerSec         float64 `json:"entries_per_s"`
	MBPerSec       float64 `json:"mb_per_s"` // payload bytes
	Truncated      int64   `json:"truncated"`
	Missing        int64   `json:"missing"`
	Dups           int64   `json:"dups"`
	Unknown        int64   `json:"unknown"`
	Exact          bool    `json:"exact"`
	GwCPUSeconds   float64 `json:"gateway_cpu_s"`
	GwCPUPerEntry  float64 `json:"gateway_cpu_us_per_entry"`
	RedisCPUSecond float64 `json:"redis_cpu_s"`
	Error          string  `json:"error,omitempty"`
}

// ReplayResume is part (b).
type ReplayResume struct {
	Clients             int     `json:"clients"`
	Subscribed          int     `json:"subscribed"` // before the event
	Rate                float64 `json:"rate_per_s"`
	Mode                string  `json:"mode"` // restart or kill
	HoldSeconds         float64 `json:"hold_s"`
	GatewayExitSeconds  float64 `json:"gateway_exit_s,omitempty"`
	GatewayStartSeconds float64 `json:"gateway_start_s"`
	AllResumed          bool    `json:"all_resumed"`
	NotResumed          int     `json:"not_resumed"`
	// From the event (the signal), and from the gateway healthy again,
	// to the last client's replayed frame.
	AllResumedSeconds     float64 `json:"all_resumed_s"`
	AllResumedFromUpS     float64 `json:"all_resumed_from_up_s"`
	Resume                Latency `json:"resume"` // the event to each client's replayed frame
	Attempts              int64   `json:"attempts"`
	Refused               int64   `json:"refused"`
	ReplayedEntries       int64   `json:"replayed_entries"` // the resume's replayed frames' counts, summed
	ReplayFramesReceived  int64   `json:"replay_frames"`    // replayed entries received
	ReplayedPerSec        float64 `json:"replayed_per_s"`   // over the gateway up to the last replayed frame
	Truncated             int64   `json:"truncated"`        // replay_truncated errors
	Published             int64   `json:"published"`        // entries added
	StreamEntries         int64   `json:"stream_entries"`   // in the stream at the end
	Missing               int64   `json:"missing"`          // gaps: entries a client was owed and never received
	Dups                  int64   `json:"dups"`             // duplicates or out of order
	Unknown               int64   `json:"unknown"`          // IDs not in the stream
	ExactClients          int     `json:"exact_clients"`    // clients with every entry once, in order
	GwCPUSeconds          float64 `json:"gateway_cpu_s"`    // the event to all resumed, both processes
	GwCPUPerReplayedEntry float64 `json:"gateway_cpu_us_per_replayed_entry"`
	OtherErrors           int64   `json:"other_errors"`
	LastError             string  `json:"last_error,omitempty"`
}

// ReplayResult is the replay scenario's outcome.
type ReplayResult struct {
	Whole  *ReplayWhole  `json:"whole,omitempty"`
	Resume *ReplayResume `json:"resume,omitempty"`
}

// redisClient is a rueidis client for the harness's own commands.
func (r *runner) redisClient() (rueidis.Client, error) {
	return rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{r.redisAddr}, DisableCache: true})
}

// xaddFill adds n entries of size bytes to key, pipelined, and returns
// their IDs in order.
func xaddFill(ctx context.Context, c rueidis.Client, key string, n, size int) ([]streamID, error) {
	ids := make([]streamID, 0, n)
	buf := make([]byte, 0, size+32)
	const batch = 1000
	for done := 0; done < n; {
		k := min(batch, n-done)
		cmds := make(rueidis.Commands, 0, k)
		for range k {
			buf = benchPayload(buf[:0], time.Now().UnixNano(), size)
			cmds = append(cmds, c.B().Xadd().Key(key).Id("*").FieldValue().FieldValue("data", string(buf)).Build())
		}
		for _, res := range c.DoMulti(ctx, cmds...) {
			s, err := res.ToString()
			if err != nil {
				return ids, fmt.Errorf("XADD %s: %w", key, err)
			}
			id, err := parseStreamID(s)
			if err != nil {
				return ids, err
			}
			ids = append(ids, id)
		}
		done += k
	}
	return ids, nil
}

// streamIDs reads every entry ID of key after from (exclusive).
func streamIDs(ctx context.Context, c rueidis.Client, key string, from streamID) ([]streamID, error) {
	var out []streamID
	start := "(" + from.String()
	for {
		es, err := c.Do(ctx, c.B().Xrange().Key(key).Start(start).End("+").Count(10000).Build()).AsXRange()
		if err != nil {
			return out, fmt.Errorf("XRANGE %s: %w", key, err)
		}
		for _, e := range es {
			id, err := parseStreamID(e.ID)
			if err != nil {
				return out, err
			}
			out = append(out, id)
		}
		if len(es) < 10000 {
			return out, nil
		}
		start = "(" + es[len(es)-1].ID
	}
}

// lastStreamID is the newest entry's ID of key (0-0 when empty).
func lastStreamID(ctx context.Context, c rueidis.Client, key string) (streamID, error) {
	es, err := c.Do(ctx, c.B().Xrevrange().Key(key).End("+").Start("-").Count(1).Build()).AsXRange()
	if err != nil || len(es) == 0 {
		return streamID{}, err
	}
	return parseStreamID(es[0].ID)
}

func (r *runner) replay() error {
	cfg := r.cfg
	if len(r.gws) != 1 || r.gws[0].proc == nil {
		return fmt.Errorf("replay restarts the gateway: it must be one the harness starts")
	}
	rc, err := r.redisClient()
	if err != nil {
		return err
	}
	defer rc.Close()
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	keyPrefix := cfg.streamKeyPrefix()
	res := &ReplayResult{}
	r.rep.Replay = res
	var keys []string
	defer func() {
		// Only the keys this run created.
		for _, k := range keys {
			_ = rc.Do(context.Background(), rc.B().Del().Key(k).Build()).Error()
		}
	}()
	if cfg.ReplayEntries > 0 {
		ch := cfg.durablePrefix() + ":replay-a-" + run
		keys = append(keys, keyPrefix+ch)
		w, err := r.replayWhole(rc, ch, keyPrefix+ch)
		res.Whole = w
		if err != nil {
			return fmt.Errorf("replay (a): %w", err)
		}
	}
	ch := cfg.durablePrefix() + ":replay-b-" + run
	keys = append(keys, keyPrefix+ch)
	rs, err := r.replayResume(rc, ch, keyPrefix+ch)
	res.Resume = rs
	if err != nil {
		return fmt.Errorf("replay (b): %w", err)
	}
	return nil
}

// replayWhole is part (a).
func (r *runner) replayWhole(rc rueidis.Client, ch, key string) (*ReplayWhole, error) {
	cfg := r.cfg
	w := &ReplayWhole{Entries: cfg.ReplayEntries, EntryBytes: cfg.Size}
	r.logf("replay (a): filling %s with %d entries of %d bytes", key, cfg.ReplayEntries, cfg.Size)
	t := time.Now()
	truth, err := xaddFill(r.ctx, rc, key, cfg.ReplayEntries, cfg.Size)
	if err != nil {
		return w, err
	}
	w.FillSeconds = round3(time.Since(t).Seconds())
	w.FillPerSec = perUnit(float64(len(truth)), time.Since(t).Seconds())
	c := &durClient{addr: r.gws[0].addr, ch: ch}
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	m0 := r.mark()
	zero := streamID{}
	go c.run(ctx, &zero, replayRetry)
	// Bounded: 100 µs per entry, at least a minute.
	err = r.wait("replay-a", time.Minute+time.Duration(cfg.ReplayEntries)*100*time.Microsecond, func(poolStats) bool {
		return c.replayed.Load() > 0
	})
	m1 := r.mark()
	cancel()
	if err != nil {
		return w, err
	}
	if c.replayed.Load() == 0 {
		e, _ := c.lastErr.Load().(string)
		w.Error = "no replayed frame within the budget: " + e
		return w, fmt.Errorf("%s", w.Error)
	}
	// The subscribe was sent just after m0 (the dial and upgrade are
	// part of it: a few hundred µs against seconds of replay).
	secs := float64(c.replayedAt.Load()-m0.t.UnixNano()) / 1e9
	got, _ := c.received()
	w.Seconds = round3(secs)
	w.Received = c.replayFrames.Load()
	w.ReplayedCount = c.lastCount.Load()
	w.PerSec = perUnit(float64(w.Received), secs)
	w.MBPerSec = perUnit(float64(w.Received)*float64(cfg.Size)/1e6, secs)
	w.Truncated = c.truncated.Load()
	w.Missing, w.Dups, w.Unknown = exactness(truth, got)
	w.Exact = w.Missing == 0 && w.Dups == 0 && w.Unknown == 0 && w.Truncated == 0 && w.ReplayedCount == int64(len(truth))
	if r.measured() {
		gw := (m1.gwCPU - m0.gwCPU).Seconds()
		w.GwCPUSeconds = round3(gw)
		w.GwCPUPerEntry = perUnit(gw*1e6, float64(w.Received))
	}
	w.RedisCPUSecond = round3((m1.redisCPU - m0.redisCPU).Seconds())
	r.logf("replay (a): %d entries replayed in %.2fs = %.0f/s; replayed count %d, missing %d, dups %d, truncated %d",
		w.Received, secs, w.PerSec, w.ReplayedCount, w.Missing, w.Dups, w.Truncated)
	return w, nil
}

// replayResume is part (b).
func (r *runner) replayResume(rc rueidis.Client, ch, key string) (*ReplayResume, error) {
	cfg := r.cfg
	g := r.gws[0]
	res := &ReplayResume{Clients: cfg.N, Rate: cfg.Rate, Mode: cfg.StormMode, HoldSeconds: cfg.StormHold.Seconds()}
	if err := r.ensurePublisher(); err != nil {
		return res, err
	}
	r.pub.setStream(cfg.streamKeyPrefix())
	defer r.pub.setStream("")
	ctx, cancel := context.WithCancel(r.ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	clients := make([]*durClient, cfg.N)
	r.logf("replay (b): %d clients subscribing to %s", cfg.N, ch)
	for i := range clients {
		c := &durClient{addr: g.addr, ch: ch}
		clients[i] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.run(ctx, nil, replayRetry)
		}()
	}
	count := func(pred func(*durClient) bool) int {
		n := 0
		for _, c := range clients {
			if pred(c) {
				n++
			}
		}
		return n
	}
	if err := r.wait("subscribe", 30*time.Second+time.Duration(cfg.N)*time.Millisecond, func(poolStats) bool {
		return count(func(c *durClient) bool { return c.replayed.Load() > 0 }) == cfg.N
	}); err != nil {
		return res, err
	}
	res.Subscribed = count(func(c *durClient) bool { return c.replayed.Load() > 0 })
	if res.Subscribed < cfg.N {
		return res, fmt.Errorf("only %d of %d clients subscribed", res.Subscribed, cfg.N)
	}

	pubCtx, stopPub := context.WithCancel(ctx)
	defer stopPub()
	pubDone := make(chan struct{})
	pick := func(int64) (string, int) { return ch, 0 }
	go func() {
		defer close(pubDone)
		r.pub.run(pubCtx, cfg.Rate, cfg.StormHold+cfg.Duration+3*time.Minute, pick)
	}()
	if err := r.wait("live", cfg.StormHold, nil); err != nil {
		return res, err
	}
	mE := r.mark()
	at := time.Now()
	var storm StormResult
	if err := r.restartGateway(g, &storm, at, func() {}); err != nil {
		return res, err
	}
	up := time.Now()
	res.GatewayExitSeconds, res.GatewayStartSeconds = storm.GatewayExitSeconds, storm.GatewayStartSeconds
	// Resumed: subscribed again once the old process had exited (with
	// SIGTERM a client may still reach it while it shuts down).
	exited := at.Add(time.Duration(storm.GatewayExitSeconds * float64(time.Second))).UnixNano()
	resumed := func(c *durClient) bool { return c.replayed.Load() >= 2 && c.replayedAt.Load() > exited }
	r.logf("replay (b): waiting for %d clients to resume", cfg.N)
	err := r.wait("resume", cfg.Duration, func(poolStats) bool { return count(resumed) == cfg.N })
	mB := r.mark()
	if err != nil {
		return res, err
	}
	hist := newHist()
	var lastAt int64
	for _, c := range clients {
		if !resumed(c) {
			res.NotResumed++
			continue
		}
		t := c.replayedAt.Load()
		lastAt = max(lastAt, t)
		recordUS(hist, (t-at.UnixNano())/1000)
		res.ReplayedEntries += c.lastCount.Load()
	}
	res.AllResumed = res.NotResumed == 0
	res.Resume = summarize(hist)
	if lastAt > 0 {
		res.AllResumedSeconds = round3(float64(lastAt-at.UnixNano()) / 1e9)
		res.AllResumedFromUpS = round3(float64(lastAt-up.UnixNano()) / 1e9)
		res.ReplayedPerSec = perUnit(float64(res.ReplayedEntries), float64(lastAt-up.UnixNano())/1e9)
	}
	if r.measured() {
		cpu := (mB.gwCPU - mE.gwCPU).Seconds()
		res.GwCPUSeconds = round3(cpu)
		res.GwCPUPerReplayedEntry = perUnit(cpu*1e6, float64(res.ReplayedEntries))
	}
	r.rep.Noise = r.noise(mE, mB)

	// A second of live entries after everyone is back, then every client
	// must reach the stream's last entry.
	if err := r.wait("after", stormAfter, nil); err != nil {
		return res, err
	}
	stopPub()
	<-pubDone
	res.Published = r.pub.published()
	last, err := lastStreamID(r.ctx, rc, key)
	if err != nil {
		return res, err
	}
	_ = r.wait("drain", 10*time.Second, func(poolStats) bool {
		return count(func(c *durClient) bool { p, _ := c.position(); return !p.less(last) }) == cfg.N
	})
	cancel()
	wg.Wait()
	truth, err := streamIDs(r.ctx, rc, key, streamID{})
	if err != nil {
		return res, err
	}
	res.StreamEntries = int64(len(truth))
	for _, c := range clients {
		got, start := c.received()
		// The entries owed: those after the first subscription's seam.
		from := sort.Search(len(truth), func(i int) bool { return start.less(truth[i]) })
		m, d, u := exactness(truth[from:], got)
		res.Missing += m
		res.Dups += d
		res.Unknown += u
		if m == 0 && d == 0 && u == 0 {
			res.ExactClients++
		}
		res.Attempts += c.attempts.Load()
		res.Refused += c.refused.Load()
		res.Truncated += c.truncated.Load()
		res.OtherErrors += c.otherErrors.Load()
		res.ReplayFramesReceived += c.replayFrames.Load()
		if e, ok := c.lastErr.Load().(string); ok && res.LastError == "" && strings.HasPrefix(e, "error frame") {
			res.LastError = e
		}
	}
	return res, nil
}

// lines is the replay part of the summary.
func (p *ReplayResult) lines() []string {
	var out []string
	add := func(f string, a ...any) { out = append(out, fmt.Sprintf(f, a...)) }
	if w := p.Whole; w != nil {
		add("replay (a): %d entries of %d bytes (filled in %.2fs, %.0f/s), replayed to one client (since 0-0) in %.3fs = %.0f entries/s (%.1f MB/s of payload); gateway %.2fs CPU = %.2f µs per entry; replayed count %d, received %d, missing %d, duplicates %d, unknown %d, truncated %d: exact %v",
			w.Entries, w.EntryBytes, w.FillSeconds, w.FillPerSec, w.Seconds, w.PerSec, w.MBPerSec, w.GwCPUSeconds, w.GwCPUPerEntry,
			w.ReplayedCount, w.Received, w.Missing, w.Dups, w.Unknown, w.Truncated, w.Exact)
	}
	if s := p.Resume; s != nil {
		how := fmt.Sprintf("SIGTERM: exited in %.2fs, up again %.2fs later", s.GatewayExitSeconds, s.GatewayStartSeconds)
		if s.Mode == "kill" {
			how = fmt.Sprintf("SIGKILL: up again %.2fs later", s.GatewayStartSeconds)
		}
		add("replay (b): %d clients on one durable channel, %.0f entries/s; the gateway restarted after %.1fs (%s)", s.Clients, s.Rate, s.HoldSeconds, how)
		back := fmt.Sprintf("all resumed %.2fs after the event (%.2fs after the gateway was up)", s.AllResumedSeconds, s.AllResumedFromUpS)
		if !s.AllResumed {
			back = fmt.Sprintf("NOT ALL RESUMED: %d of %d missing at the end of the budget (-duration)", s.NotResumed, s.Clients)
		}
		add("replay (b): %s; each client's replayed frame after p50 %s p99 %s max %s; %d dials (%d refused)",
			back, fmtUS(s.Resume.P50), fmtUS(s.Resume.P99), fmtUS(s.Resume.Max), s.Attempts, s.Refused)
		add("replay (b): replayed %d entries in all (%d received) = %.0f entries/s from the gateway up; gateway %.2fs CPU from the event = %.2f µs per replayed entry; replay_truncated %d",
			s.ReplayedEntries, s.ReplayFramesReceived, s.ReplayedPerSec, s.GwCPUSeconds, s.GwCPUPerReplayedEntry, s.Truncated)
		add("replay (b) exactness: %d entries published, %d in the stream; against it the clients missed %d, got %d duplicates or out of order and %d unknown; %d of %d clients exact; other error frames %d %s",
			s.Published, s.StreamEntries, s.Missing, s.Dups, s.Unknown, s.ExactClients, s.Clients, s.OtherErrors, s.LastError)
	}
	return out
}

// replayHTML is the replay scenario's tables.
func replayHTML(p *ReplayResult) string {
	var b strings.Builder
	if w := p.Whole; w != nil {
		fmt.Fprintf(&b, "<h2>Replay (a): %d entries to one client</h2>\n<table><tr><th>entries</th><th>bytes</th><th>seconds</th><th>entries/s</th><th>MB/s</th><th>gw µs/entry</th><th>replayed count</th><th>missing</th><th>dups</th><th>truncated</th><th>exact</th></tr>\n", w.Entries)
		fmt.Fprintf(&b, "<tr><td>%d</td><td>%d</td><td>%.3f</td><td>%.0f</td><td>%.1f</td><td>%.2f</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%v</td></tr>\n</table>\n",
			w.Entries, w.EntryBytes, w.Seconds, w.PerSec, w.MBPerSec, w.GwCPUPerEntry, w.ReplayedCount, w.Missing, w.Dups, w.Truncated, w.Exact)
	}
	if s := p.Resume; s != nil {
		fmt.Fprintf(&b, "<h2>Replay (b): %d clients resume after a gateway %s</h2>\n<table><tr><th>all resumed</th><th>from up</th><th>resume p50</th><th>p99</th><th>max</th><th>replayed</th><th>replayed/s</th><th>gw µs/replayed</th><th>missing</th><th>dups</th><th>exact clients</th><th>truncated</th></tr>\n",
			s.Clients, html.EscapeString(s.Mode))
		all := fmt.Sprintf("%.2fs", s.AllResumedSeconds)
		if !s.AllResumed {
			all = fmt.Sprintf("no: %d missing", s.NotResumed)
		}
		fmt.Fprintf(&b, "<tr><td>%s</td><td>%.2fs</td><td>%s</td><td>%s</td><td>%s</td><td>%d</td><td>%.0f</td><td>%.2f</td><td>%d</td><td>%d</td><td>%d/%d</td><td>%d</td></tr>\n</table>\n",
			all, s.AllResumedFromUpS, fmtUS(s.Resume.P50), fmtUS(s.Resume.P99), fmtUS(s.Resume.Max), s.ReplayedEntries, s.ReplayedPerSec,
			s.GwCPUPerReplayedEntry, s.Missing, s.Dups, s.ExactClients, s.Clients, s.Truncated)
	}
	return b.String()
}
