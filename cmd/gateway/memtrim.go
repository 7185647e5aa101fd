package main

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// trimEvery and trimAbove govern trimMemory. trimAbove is small: a trim
// of a calm gateway costs one forced collection per interval at most, and
// a few MiB kept after a burst is a tenth of a small gateway's RSS.
const (
	trimEvery = 10 * time.Second
	trimAbove = 1 << 20
)

// trimMemory hands free heap memory back to the OS once a burst is over,
// typically a burst of connects: each upgrade parses an HTTP request and
// leaves garbage, the heap grows to twice its live size before the
// collector runs, and the runtime's background scavenger keeps most of
// that in RSS. An idle gateway would then show about twice the memory its
// sockets need (the budget is 1 KiB per idle socket).
//
// Each check reads runtime/metrics; the trim itself is a forced
// collection plus a scavenge (debug.FreeOSMemory), at most once per
// interval and only when it pays (see shouldTrim).
func trimMemory(ctx context.Context) {
	samples := []metrics.Sample{
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/heap/allocs:bytes"},
	}
	t := time.NewTicker(trimEvery)
	defer t.Stop()
	var lastAllocs uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		metrics.Read(samples)
		var v [4]uint64
		for i, s := range samples {
			if s.Value.Kind() == metrics.KindUint64 {
				v[i] = s.Value.Uint64()
			}
		}
		if shouldTrim(v[0], v[1], v[2], v[3]-lastAllocs) {
			debug.FreeOSMemory()
		}
		lastAllocs = v[3]
	}
}

// shouldTrim decides from the heap's free bytes, its object bytes (live
// and not yet collected), the live bytes the last collection found, and
// the bytes allocated during the last interval. Worth it when more than
// trimAbove could go back to the OS; and only once allocation has calmed
// down (less allocated in the interval than would be reclaimed): in the
// middle of a burst, a trim would just be undone.
func shouldTrim(free, objects, live, allocated uint64) bool {
	garbage := uint64(0)
	if objects > live {
		garbage = objects - live
	}
	reclaimable := free + garbage
	return reclaimable > trimAbove && allocated < reclaimable
}
