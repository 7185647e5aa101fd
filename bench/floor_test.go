package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"reflect"
	"strconv"
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

func TestWholeFrame(t *testing.T) {
	frame := clientFrame(ws.OpText, []byte(`{"action":"subscribe","channels":["a"]}`))
	big := clientFrame(ws.OpText, make([]byte, 300)) // 16-bit length
	for _, tc := range []struct {
		name string
		b    []byte
		want bool
	}{
		{"empty", nil, false},
		{"one byte", frame[:1], false},
		{"header only", frame[:6], false},
		{"all but one", frame[:len(frame)-1], false},
		{"whole", frame, true},
		{"whole and more", append(append([]byte(nil), frame...), 0x81), true},
		{"16-bit length, partial header", big[:3], false},
		{"16-bit length, whole", big, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := wholeFrame(tc.b)
			if err != nil || got != tc.want {
				t.Errorf("wholeFrame = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

// TestConnFloor lets plain sockets through the connect floor's handshake:
// the upgrade request (in two pieces for one of them), the 101 with the
// right Sec-WebSocket-Accept, the subscribe frame and the one small frame
// back.
func TestConnFloor(t *testing.T) {
	cf, port, err := listenConnFloor()
	if err != nil {
		t.Fatal(err)
	}
	const n = 3
	allDone := make(chan struct{})
	served := make(chan error, 1)
	go func() { served <- cf.serve(n, func() { close(allDone) }) }()
	t.Cleanup(func() {
		cf.stop.Store(true)
		if err := <-served; err != nil {
			t.Error(err)
		}
		cf.close()
	})
	addr := "127.0.0.1:" + strconv.Itoa(port)
	for i := range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		req, accept := upgradeRequest(addr)
		if i == 0 {
			// Split inside the request: the floor waits for the rest.
			if _, err := c.Write(req[:20]); err != nil {
				t.Fatal(err)
			}
			req = req[20:]
		}
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		var head []byte
		for !bytes.HasSuffix(head, crlfcrlf) {
			line, err := br.ReadBytes('\n')
			if err != nil {
				t.Fatalf("socket %d: reading the upgrade answer: %v", i, err)
			}
			head = append(head, line...)
		}
		if status, ok := checkUpgrade(head, accept[:]); !ok {
			t.Fatalf("socket %d: upgrade answer %d:\n%s", i, status, head)
		}
		if _, err := c.Write(subscribeFrame(subPlan{Prefix: "market:tick:bench", Channels: 1}, i, strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
		h, err := ws.ReadHeader(br)
		if err != nil || h.OpCode != ws.OpText || h.Length > 1024 {
			t.Fatalf("socket %d: ack header %+v, %v", i, h, err)
		}
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(br, payload); err != nil || !bytes.HasPrefix(payload, subscribedPfx) {
			t.Fatalf("socket %d: ack %q, %v", i, payload, err)
		}
	}
	select {
	case <-allDone:
	case <-time.After(10 * time.Second):
		t.Fatalf("the floor counted %d of %d sockets done", cf.done.Load(), n)
	}
}
