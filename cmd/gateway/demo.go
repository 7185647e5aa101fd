package main

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/redis/rueidis"
)

// demo publishes made-up ticks on market:tick:* twice a second, so that a
// newcomer running `make run` sees data flow. It talks to Redis like any
// other publisher would.
func demo(ctx context.Context, opt rueidis.ClientOption, log *slog.Logger) {
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
	log.Info("demo publisher: ticks on market:tick:BANKNIFTY, market:tick:NIFTY, market:tick:FINNIFTY")
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
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
