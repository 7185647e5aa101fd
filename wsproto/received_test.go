package wsproto

import (
	"testing"
	"time"
)

// TestFrameReceived: a data frame carries its Redis receipt time for the
// delivery latency metric; every other frame reports 0, even when it
// reuses a pooled Frame that last held a data message (the server skips
// frames with 0 when it measures latency).
func TestFrameReceived(t *testing.T) {
	received := time.Date(2026, 1, 9, 10, 30, 0, 123456789, time.UTC)
	now := received.Add(time.Second)
	tests := []struct {
		name  string
		build func() *Frame
		want  int64
	}{
		{"data", func() *Frame { return BuildData(1, "ch", "", `{"a":1}`, received) }, received.UnixNano()},
		{"data with pattern", func() *Frame { return BuildData(2, "ch", "c*", "text", received) }, received.UnixNano()},
		{"ack", func() *Frame { return NewSubscribed([]string{"ch"}, nil, now) }, 0},
		{"pong", func() *Frame { return NewPong(nil, now) }, 0},
		{"error", func() *Frame { return NewError(CodeForbidden, "no", nil, nil, now) }, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Recycle data frames first so that a stale receipt
			// time would show if newFrame did not reset it.
			for range 8 {
				BuildData(9, "x", "", "1", received.Add(-time.Hour)).Release()
			}
			f := tt.build()
			defer f.Release()
			if got := f.Received(); got != tt.want {
				t.Fatalf("Received() = %d, want %d", got, tt.want)
			}
		})
	}
}
