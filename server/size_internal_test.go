package server

import (
	"testing"
	"unsafe"

	"github.com/wsgw/gateway/fanout"
)

// TestConnSize pins the per-socket structures to their size classes: an
// idle subscribed socket must cost at most 1 KiB of gateway RSS,
// gnet's own connection takes about 400 B of it, and one more field can
// push conn into the next class (240 → 256 B) for every socket. Grow these
// limits only with a measurement (docs/BENCHMARKS.md, idle scenario).
func TestConnSize(t *testing.T) {
	for _, tc := range []struct {
		name      string
		size, max uintptr
	}{
		{"conn (embeds the Subscriber)", unsafe.Sizeof(conn{}), 240},
		{"fanout.Subscriber", unsafe.Sizeof(fanout.Subscriber{}), 96},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.size > tc.max {
				t.Errorf("%s is %d B, more than its budget of %d B", tc.name, tc.size, tc.max)
			}
		})
	}
}
