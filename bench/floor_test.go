package main

import (
	"reflect"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// socketPairs returns the two ends of n connected stream sockets, closed
// when the test ends.
func socketPairs(tb testing.TB, n int) (writers, readers []int) {
	tb.Helper()
	for range n {
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
		if err != nil {
			tb.Fatal(err)
		}
		writers, readers = append(writers, fds[0]), append(readers, fds[1])
		tb.Cleanup(func() { syscall.Close(fds[0]); syscall.Close(fds[1]) })
	}
	return writers, readers
}

// TestFloorWrite runs the floor writer over socket pairs and parses what
// each socket received: the gateway's frames, with the publisher's
// timestamp, seq rising, in the shape asked for.
func TestFloorWrite(t *testing.T) {
	for _, tc := range []struct {
		name string
		cmd  floorCmd
		// per socket: exact-channel frames, pattern frames
		want [3][2]int
	}{
		{"fanout adaptive", floorCmd{K: 0, Rate: 1000, Dur: 10 * time.Millisecond}, [3][2]int{{10, 0}, {10, 0}, {10, 0}}},
		{"fanout write", floorCmd{K: 1, Rate: 1000, Dur: 10 * time.Millisecond}, [3][2]int{{10, 0}, {10, 0}, {10, 0}}},
		// Ten messages, k = 4: two writevs, the last two are not sent.
		{"fanout writev", floorCmd{K: 4, Rate: 1000, Dur: 10 * time.Millisecond}, [3][2]int{{8, 0}, {8, 0}, {8, 0}}},
		// Messages 0, 4 and 8 go to every socket through the pattern,
		// the others to socket i mod 3: 3, 6, 9 to socket 0; 1, 7 to
		// socket 1; 2, 5 to socket 2.
		{"spread", floorCmd{K: 0, Rate: 1000, Dur: 10 * time.Millisecond, Spread: true, Every: 4}, [3][2]int{{3, 3}, {2, 3}, {2, 3}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			writers, readers := socketPairs(t, 3)
			c := tc.cmd
			c.Prefix, c.Size = "market:tick:bench", 100
			var seq uint64
			start := time.Now().UnixNano()
			m := floorWrite(writers, c, &seq)
			if m.Error != "" || m.Errors != 0 || m.Messages != 10 || seq != 10 {
				t.Fatalf("floorWrite: %+v, seq %d", m, seq)
			}
			var frames int64
			for i, fd := range readers {
				if err := syscall.SetNonblock(fd, true); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 1<<16)
				n, _ := syscall.Read(fd, buf)
				if n < 0 {
					n = 0
				}
				buf = buf[:n]
				var got [2]int
				var last uint64
				for len(buf) > 0 {
					op, _, p, size, err := nextFrame(buf)
					if err != nil || size == 0 || op != ws.OpText {
						t.Fatalf("socket %d: frame op %v size %d err %v", i, op, size, err)
					}
					buf = buf[size:]
					s, pat, ts, ok := scanData(p)
					if !ok || s <= last || ts < start {
						t.Fatalf("socket %d: %s", i, p)
					}
					last = s
					if pat {
						got[1]++
					} else {
						got[0]++
					}
					frames++
				}
				if got != tc.want[i] {
					t.Errorf("socket %d received %v (exact, pattern), want %v", i, got, tc.want[i])
				}
			}
			if frames != m.Frames {
				t.Errorf("received %d frames, the writer counted %d", frames, m.Frames)
			}
		})
	}
}

func TestFloorKs(t *testing.T) {
	for _, tc := range []struct {
		gwBatch float64
		floorK  int
		want    []int
	}{
		{0, 8, []int{1, 8}},
		{1.2, 8, []int{1, 8}},
		{2.6, 8, []int{1, 3, 8}},
		{8.1, 8, []int{1, 8}},
		{3, 1, []int{1, 3}},
		{12, 8, []int{1, 8, 12}},
	} {
		if got := floorKs(tc.gwBatch, tc.floorK); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("floorKs(%v, %d) = %v, want %v", tc.gwBatch, tc.floorK, got, tc.want)
		}
	}
}

func TestFloorCompare(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    FloorResult
		want [4]float64 // cpu, p50, p99, p99.9
	}{
		{"side by side", FloorResult{GwCPUPerFrameUS: 12, GwLatency: &Latency{Count: 1, P50: 200, P99: 1000, P999: 3000},
			Runs: []FloorRun{{Mode: "adaptive", Shape: "fanout", CPUPerFrameUS: 10, Latency: Latency{Count: 1, P50: 100, P99: 800, P999: 3000}}}},
			[4]float64{1.2, 2, 1.25, 1}},
		{"floor scenario", FloorResult{Runs: []FloorRun{{Mode: "adaptive", CPUPerFrameUS: 10, Latency: Latency{Count: 1, P50: 100}}}},
			[4]float64{}},
		{"no adaptive run", FloorResult{GwCPUPerFrameUS: 12, GwLatency: &Latency{Count: 1, P50: 200},
			Runs: []FloorRun{{Mode: "write", K: 1, CPUPerFrameUS: 10, Latency: Latency{Count: 1, P50: 100}}}},
			[4]float64{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.f.compare()
			if got := [4]float64{tc.f.CPURatio, tc.f.P50Ratio, tc.f.P99Ratio, tc.f.P999Ratio}; got != tc.want {
				t.Errorf("ratios %v, want %v", got, tc.want)
			}
			if len(tc.f.lines()) == 0 {
				t.Error("no summary lines")
			}
		})
	}
}
