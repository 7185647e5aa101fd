package main

import (
	"context"
	"math"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
)

// publisher sends PUBLISH commands at a fixed rate, pipelined through
// rueidis: every message due by now goes out in one DoMulti. Each payload
// carries its send time, {"t":<unix nanos>,"pad":"xxx"}, of Size bytes.
// With a stream key prefix set (durable channels) it sends
// XADD <prefix><channel> MAXLEN ~ streamMaxLen * data <payload> instead,
// as a durable channel's publisher does (docs/DURABILITY.md).
type publisher struct {
	client rueidis.Client
	size   int
	// streamPrefix is the gateway's STREAM_KEY_PREFIX while publishing
	// to durable channels, "" for pub/sub. Set between runs only.
	streamPrefix string

	// Counters by kind (0: to exact-channel subscribers, 1: to the shared
	// pattern), and how many of them Redis delivered to at least one
	// subscriber (the gateway).
	sent     [2]atomic.Int64
	received [2]atomic.Int64
	errors   atomic.Int64
	lastErr  atomic.Value
	batches  atomic.Int64
}

func newPublisher(redisAddr string, size int) (*publisher, error) {
	c, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress:  []string{redisAddr},
		DisableCache: true,
		// One connection, pipelining: the publisher is not the subject.
		BlockingPoolSize: 1,
	})
	if err != nil {
		return nil, err
	}
	return &publisher{client: c, size: size}, nil
}

func (p *publisher) close() { p.client.Close() }

// streamMaxLen is the retention of the durable publisher's XADD: far more
// than a window or a resume needs, bounded so that a long run does not
// fill Redis.
const streamMaxLen = "100000"

// setStream makes the publisher XADD to prefix+channel (durable channels)
// instead of PUBLISH; "" goes back to PUBLISH. Not while run is running.
func (p *publisher) setStream(prefix string) { p.streamPrefix = prefix }

// command is the command that sends payload on ch.
func (p *publisher) command(ch, payload string) rueidis.Completed {
	if p.streamPrefix != "" {
		return p.client.B().Xadd().Key(p.streamPrefix+ch).Maxlen().Almost().Threshold(streamMaxLen).Id("*").
			FieldValue().FieldValue("data", payload).Build()
	}
	return p.client.B().Publish().Channel(ch).Message(payload).Build()
}

// published is the number of PUBLISH commands answered, and expected the
// deliveries they imply given subs sockets per pattern message and one
// socket per exact message (spread) or subs per exact message (fanout).
func (p *publisher) published() int64 { return p.sent[0].Load() + p.sent[1].Load() }

// target picks the channel of message i and its kind.
type target func(i int64) (channel string, kind int)

// run publishes at rate messages per second for d, or until ctx ends.
func (p *publisher) run(ctx context.Context, rate float64, d time.Duration, pick target) {
	if rate <= 0 || d <= 0 {
		return
	}
	const maxBatch = 512
	// Exactly rate×d messages; message i is due at start + i/rate. When
	// the publisher falls behind (a busy machine), it catches up in
	// bigger batches and ends late rather than sending fewer.
	total := int64(math.Round(rate * d.Seconds()))
	start := time.Now()
	var i int64
	cmds := make(rueidis.Commands, 0, maxBatch)
	kinds := make([]int, 0, maxBatch)
	buf := make([]byte, 0, p.size+32)
	for i < total && ctx.Err() == nil {
		el := time.Since(start)
		due := min(int64(el.Seconds()*rate)+1, total) - i
		if due <= 0 {
			next := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
			if w := time.Until(next); w > 0 {
				sleepCtx(ctx, w)
			}
			continue
		}
		due = min(due, maxBatch)
		cmds, kinds = cmds[:0], kinds[:0]
		for range due {
			ch, kind := pick(i)
			buf = benchPayload(buf[:0], time.Now().UnixNano(), p.size)
			cmds = append(cmds, p.command(ch, string(buf)))
			kinds = append(kinds, kind)
			i++
		}
		// A batch once sent is waited for even when ctx ends: every
		// message counted is one Redis published, and no other.
		for k, r := range p.client.DoMulti(context.WithoutCancel(ctx), cmds...) {
			var n int64
			var err error
			if p.streamPrefix != "" {
				// An entry added reaches every reader of the stream,
				// whenever it reads: XADD has no receiver count.
				_, err = r.ToString()
				n = 1
			} else {
				n, err = r.AsInt64()
			}
			if err != nil {
				p.errors.Add(1)
				p.lastErr.Store(err.Error())
				continue
			}
			p.sent[kinds[k]].Add(1)
			if n > 0 {
				p.received[kinds[k]].Add(1)
			}
		}
		p.batches.Add(1)
	}
	// The last message is due at (total-1)/rate: the window is d long.
	if w := time.Until(start.Add(d)); w > 0 {
		sleepCtx(ctx, w)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
