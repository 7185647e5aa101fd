package main

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// trimEvery and trimAbove govern trimMemory.
const (
	trimEvery = 30 * time.Second
	trimAbove = 4 << 20
)

// trimMemory hands free heap memory back to the OS when a lot of it has
// piled up, typically after a burst of connects: each upgrade parses an
// HTTP request and leaves a few KiB of garbage, the heap grows to twice
// its live size before the collector runs, and the runtime's background
// scavenger keeps most of that in RSS. An idle gateway then shows about
// twice the memory its sockets need (issue 2 targets 1 KiB per idle
// socket). Checking costs one runtime/metrics read per interval; the trim
// itself is a forced collection, at most once per interval.
func trimMemory(ctx context.Context) {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}}
	t := time.NewTicker(trimEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		metrics.Read(sample)
		if sample[0].Value.Kind() == metrics.KindUint64 && sample[0].Value.Uint64() > trimAbove {
			debug.FreeOSMemory()
		}
	}
}
