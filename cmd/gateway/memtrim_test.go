package main

import "testing"

func TestShouldTrim(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name                           string
		free, objects, live, allocated uint64
		want                           bool
	}{
		{"idle, little to give back", mib / 2, 20 * mib, 20*mib - mib/4, 0, false},
		{"free heap piled up, quiet", 12 * mib, 20 * mib, 20 * mib, 1 * mib, true},
		{"uncollected garbage after a connect burst, quiet", 1 * mib, 40 * mib, 20 * mib, 0, true},
		{"in the middle of a burst", 8 * mib, 40 * mib, 20 * mib, 200 * mib, false},
		{"live above objects (collection in progress)", 5 * mib, 18 * mib, 20 * mib, 0, true},
		{"exactly the threshold", 1 * mib, 10 * mib, 10 * mib, 0, false},
		{"a few MiB after a small attack, quiet", 3 * mib, 10 * mib, 10 * mib, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := shouldTrim(tc.free, tc.objects, tc.live, tc.allocated); got != tc.want {
				t.Errorf("shouldTrim(free %d, objects %d, live %d, allocated %d) = %v, want %v",
					tc.free, tc.objects, tc.live, tc.allocated, got, tc.want)
			}
		})
	}
}
