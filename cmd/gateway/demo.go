package main

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// demoDurable is the durable channel of the demo: -demo makes it durable
// when STREAM_CHANNELS is empty.
const demoDurable = "indicators:signal:*"

// demo publishes made-up ticks on market:tick:* twice a second, and a
// signal a second on the durable channel indicators:signal:DEMO (an XADD
// to its stream, keyPrefix + channel), so that a newcomer running `make
// run` sees data flow, and sees a reconnect recover what it missed. It
// talks to Redis like any other publisher would.
func demo(ctx context.Context, opt rueidis.ClientOption, keyPrefix string, log *slog.Logger) {
	instruments := []struct {
		name  string
		price float64
	}{{"BANKNIFTY", 48000}, {"NIFTY", 22000}, {"FINNIFTY", 21000}}
	var client rueidis.Client
	for client == nil {
		c, err := rueidis.NewClient(opt)
		if err == nil {
			client = c
			break
		}
		log.Warn("demo publisher: waiting for redis", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	defer client.Close()
	signalKey := keyPrefix + "indicators:signal:DEMO"
	backfillSignals(ctx, client, signalKey, instruments[0].name, instruments[0].price, log)
	log.Info("demo publisher: ticks on market:tick:BANKNIFTY, market:tick:NIFTY, market:tick:FINNIFTY; durable signals on indicators:signal:DEMO",
		"stream", signalKey)
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for tick := 0; ; tick++ {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if tick%2 == 0 {
				in := instruments[rand.IntN(len(instruments))]
				if err := addSignal(ctx, client, signalKey, "*", in.name, in.price, now); err != nil && ctx.Err() == nil {
					log.Warn("demo publisher", "err", err)
				}
			}
			for i := range instruments {
				in := &instruments[i]
				in.price *= 1 + (rand.Float64()-0.5)/500
				msg := fmt.Sprintf(`{"instrument":%q,"ltp":%.2f,"volume":%d,"ts":%d}`,
					in.name, in.price, rand.IntN(500)+1, now.UnixMilli())
				cmd := client.B().Publish().Channel("market:tick:" + in.name).Message(msg).Build()
				if err := client.Do(ctx, cmd).Error(); err != nil && ctx.Err() == nil {
					log.Warn("demo publisher", "err", err)
				}
			}
		}
	}
}

// addSignal XADDs one made-up signal to key with entry ID id ("*": the
// server's clock). The retention is the publisher's: about the last 1,000.
func addSignal(ctx context.Context, client rueidis.Client, key, id, instrument string, price float64, at time.Time) error {
	side := [2]string{"buy", "sell"}[rand.IntN(2)]
	msg := fmt.Sprintf(`{"instrument":%q,"side":%q,"price":%.2f,"ts":%d}`, instrument, side, price, at.UnixMilli())
	cmd := client.B().Xadd().Key(key).Maxlen().Almost().Threshold("1000").Id(id).
		FieldValue().FieldValue("data", msg).Build()
	return client.Do(ctx, cmd).Error()
}

// backfillSignals adds, with their past IDs, the signals of the seconds
// since the stream's last entry (at most two minutes of them): in the
// demo the publisher lives in the gateway's process, so it stands in for
// a signal engine that kept running while the gateway was restarted, and
// the page has something to recover.
func backfillSignals(ctx context.Context, client rueidis.Client, key, instrument string, price float64, log *slog.Logger) {
	last, err := client.Do(ctx, client.B().Xrevrange().Key(key).End("+").Start("-").Count(1).Build()).AsXRange()
	if err != nil || len(last) == 0 {
		return
	}
	ms, _, _ := strings.Cut(last[0].ID, "-")
	lastMs, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return
	}
	now := time.Now()
	from := time.UnixMilli(lastMs).Add(time.Second)
	if earliest := now.Add(-2 * time.Minute); from.Before(earliest) {
		from = earliest
	}
	n := 0
	for at := from; at.Before(now.Add(-time.Second)); at = at.Add(time.Second) {
		if err := addSignal(ctx, client, key, strconv.FormatInt(at.UnixMilli(), 10)+"-0", instrument, price, at); err != nil {
			log.Warn("demo publisher: backfill", "err", err)
			return
		}
		n++
	}
	if n > 0 {
		log.Info("demo publisher: added the signals of the seconds the gateway was down, as a publisher that kept running would have", "entries", n)
	}
}
