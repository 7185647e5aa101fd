package fanout

// Keyspace notifications for durable patterns (STREAM_DISCOVERY=auto):
// when the operator has enabled class Kn, a key created for a pattern's
// channel is announced at once instead of at the next SCAN sweep. One
// goroutine owns a dedicated pub/sub connection; the notifications arrive
// on rueidis's reader goroutine, which hands each key to the readers of
// the matching patterns without blocking.

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"
)

type discovery struct {
	s      *Streams
	prefix string // "__keyspace@<db>__:"

	mu       sync.Mutex
	patterns map[string]bool // watched: true once PSUBSCRIBEd on the current connection
	kick     chan struct{}
	quit     chan struct{}
	started  bool
	stopped  chan struct{}
}

func newDiscovery(s *Streams) *discovery {
	return &discovery{
		s:        s,
		prefix:   "__keyspace@" + strconv.Itoa(s.opt.SelectDB) + "__:",
		patterns: make(map[string]bool),
		kick:     make(chan struct{}, 1),
		quit:     make(chan struct{}),
		stopped:  make(chan struct{}),
	}
}

// watch and unwatch add and remove a durable pattern. Safe for concurrent
// use; never block.
func (d *discovery) watch(pattern string) {
	d.mu.Lock()
	d.patterns[pattern] = false
	d.mu.Unlock()
	d.poke()
}

func (d *discovery) unwatch(pattern string) {
	d.mu.Lock()
	delete(d.patterns, pattern)
	d.mu.Unlock()
	d.poke()
}

func (d *discovery) poke() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// start runs the discovery goroutine on client c, once.
func (d *discovery) start(c rueidis.Client) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.started {
		return
	}
	d.started = true
	go d.run(c)
}

// stop ends the goroutine and waits for it.
func (d *discovery) stop() {
	d.mu.Lock()
	started := d.started
	d.mu.Unlock()
	close(d.quit)
	if started {
		<-d.stopped
	}
}

// run keeps a pub/sub connection subscribed to the notifications of the
// watched patterns while Redis has class Kn on, checking again every
// ScanInterval while it has not.
func (d *discovery) run(c rueidis.Client) {
	defer close(d.stopped)
	backoff := retryMin
	for {
		if !d.enabled(c) {
			if !d.sleep(d.s.cfg.ScanInterval) {
				return
			}
			continue
		}
		err := d.serve(c)
		if err == nil {
			return // quit
		}
		d.s.log.Warn("durable patterns: keyspace notifications interrupted", "err", err, "retry_in", backoff)
		if !d.sleep(backoff) {
			return
		}
		backoff = min(2*backoff, retryMax)
	}
}

// sleep waits for d or quit; false on quit.
func (d *discovery) sleep(dur time.Duration) bool {
	t := time.NewTimer(dur)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-d.quit:
		return false
	}
}

// enabled asks Redis whether new-key notifications are on (CONFIG GET,
// never SET: that is the operator's call). A refused CONFIG (managed
// Redis) counts as off: the SCAN sweep finds the keys.
func (d *discovery) enabled(c rueidis.Client) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := c.Do(ctx, c.B().ConfigGet().Parameter("notify-keyspace-events").Build()).AsStrSlice()
	if err != nil || len(v) < 2 {
		return false
	}
	return strings.ContainsRune(v[1], 'K') && strings.ContainsRune(v[1], 'n')
}

// serve subscribes the watched patterns on a dedicated connection and
// follows changes to them until the connection fails (its error) or quit
// (nil).
func (d *discovery) serve(c rueidis.Client) error {
	dc, release := c.Dedicate()
	defer release()
	wait := dc.SetPubSubHooks(rueidis.PubSubHooks{OnMessage: d.onMessage})
	d.mu.Lock()
	for p := range d.patterns {
		d.patterns[p] = false
	}
	d.mu.Unlock()
	tick := time.NewTicker(d.s.cfg.ScanInterval)
	defer tick.Stop()
	subscribed := map[string]bool{}
	for {
		// Bring the subscriptions in line with the watched patterns.
		d.mu.Lock()
		var add, del []string
		for p, done := range d.patterns {
			if !done {
				add = append(add, d.prefix+escapeGlob(d.s.cfg.KeyPrefix)+p)
				d.patterns[p] = true
			}
		}
		for ch := range subscribed {
			if _, ok := d.patterns[d.patternOf(ch)]; !ok {
				del = append(del, ch)
			}
		}
		d.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var err error
		if len(add) > 0 {
			err = dc.Do(ctx, dc.B().Psubscribe().Pattern(add...).Build()).Error()
			for _, ch := range add {
				subscribed[ch] = true
			}
		}
		if err == nil && len(del) > 0 {
			err = dc.Do(ctx, dc.B().Punsubscribe().Pattern(del...).Build()).Error()
			for _, ch := range del {
				delete(subscribed, ch)
			}
		}
		cancel()
		if err != nil {
			return err
		}
		select {
		case <-d.quit:
			return nil
		case err := <-wait:
			return err
		case <-d.kick:
		case <-tick.C:
			if !d.enabled(c) {
				return errNotificationsOff
			}
		}
	}
}

// errNotificationsOff ends serve when the operator turned them off.
var errNotificationsOff = errors.New("fanout: keyspace notifications were turned off")

// patternOf is the durable pattern of a PSUBSCRIBE channel.
func (d *discovery) patternOf(ch string) string {
	p := strings.TrimPrefix(ch, d.prefix)
	esc := escapeGlob(d.s.cfg.KeyPrefix)
	return strings.TrimPrefix(p, esc)
}

// onMessage runs on rueidis's reader goroutine: it hands a new key to the
// readers of the patterns it matches, without blocking.
func (d *discovery) onMessage(m rueidis.PubSubMessage) {
	if m.Message != "new" || !strings.HasPrefix(m.Channel, d.prefix) {
		return
	}
	key := strings.TrimPrefix(m.Channel, d.prefix)
	channel, ok := strings.CutPrefix(key, d.s.cfg.KeyPrefix)
	if !ok {
		return
	}
	for _, st := range d.s.patternsMatching(channel) {
		st.r.enqueue(rop{kind: ropKey, st: st, key: channel})
		st.r.wake()
	}
}
