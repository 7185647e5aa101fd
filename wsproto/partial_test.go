package wsproto

import "testing"

// TestReaderPartial: Partial counts the payload of an unfinished
// fragmented message, and nothing once it completes or is reset.
func TestReaderPartial(t *testing.T) {
	var r Reader
	steps := []struct {
		frame []byte
		want  int
	}{
		{textFrame(t, false, "hello "), 6},
		{pingFrame(t, "x"), 6},
		{contFrame(t, false, "wide "), 11},
		{contFrame(t, true, "world"), 0}, // completed: being returned
		{textFrame(t, true, "whole"), 0},
		{textFrame(t, false, "again"), 5},
	}
	for i, st := range steps {
		if _, n, err := r.Next(st.frame); err != nil || n != len(st.frame) {
			t.Fatalf("step %d: n=%d err=%v", i, n, err)
		}
		if got := r.Partial(); got != st.want {
			t.Fatalf("step %d: Partial() = %d, want %d", i, got, st.want)
		}
	}
	r.Reset()
	if got := r.Partial(); got != 0 {
		t.Fatalf("after Reset: Partial() = %d", got)
	}
}
