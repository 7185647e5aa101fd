package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/sync/errgroup"

	"github.com/wsgw/gateway/fanout/redistest"
	"github.com/wsgw/gateway/server/servertest"
)

// closeRuns is how many connections each close-code case closes; they
// run closeWorkers at a time.
const (
	closeRuns    = 100
	closeWorkers = 8
)

// resetConn is a client's TCP connection that notes whether the peer
// reset it: what makes a browser report 1006 whatever it had received.
type resetConn struct {
	net.Conn
	reset atomic.Bool
}

func (c *resetConn) note(err error) {
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		c.reset.Store(true)
	}
}

func (c *resetConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.note(err)
	return n, err
}

func (c *resetConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.note(err)
	return n, err
}

// closeWhileWriting dials url and writes with write while a second
// goroutine reads, as a browser does; write gets a context cancelled once
// the reader has seen the connection end, and should keep writing until
// then (or until it has sent what it meant to). It returns the close code
// the reader ended with: -1 when the connection ended without a close
// frame or the gateway reset TCP on the way (a browser reports 1006 then,
// whatever it had received).
func closeWhileWriting(url string, write func(ctx context.Context, c *websocket.Conn)) (int, error) {
	var rc *resetConn
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			rc = &resetConn{Conn: c}
			return rc, nil
		},
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		return 0, err
	}
	defer c.CloseNow()
	wctx, ended := context.WithCancel(ctx)
	read := make(chan error, 1)
	go func() {
		var err error
		for err == nil {
			_, _, err = c.Read(ctx)
		}
		ended()
		read <- err
	}()
	write(wctx, c)
	err = <-read
	code := int(websocket.CloseStatus(err))
	if rc.reset.Load() {
		return -1, fmt.Errorf("TCP reset by the gateway (close code read: %d)", code)
	}
	if code == -1 {
		return -1, err
	}
	return code, nil
}

// TestCloseCodeWhileClientWrites: a client still writing when the gateway
// closes reads the close frame, not a TCP reset. The gateway half-closes
// after its close frame and reads on until the client's close or EOF
// (lingering close), so bytes arriving after its decision never meet a
// closed socket: 1009 after a 2 MiB message on a 64 KiB limit, 1008
// after the rate limit, every time.
func TestCloseCodeWhileClientWrites(t *testing.T) {
	rs := redistest.Start(t)
	g := startGateway(t, rs, func(o *options) {
		o.srv.MaxMessageBytes = 64 << 10
		o.srv.MaxMessagesPerSecond = 10
		// The gateway waits for a client that makes no progress for
		// CLOSE_LINGER; under -race on a loaded machine a client can
		// stall for longer than the default 2 s, which is not what
		// this test is about.
		o.srv.CloseLinger = 10 * time.Second
	})
	big := []byte(strings.Repeat("x", 2<<20))
	tests := []struct {
		name  string
		want  int
		write func(ctx context.Context, c *websocket.Conn)
	}{
		{"1009 for a 2 MiB message", 1009, func(ctx context.Context, c *websocket.Conn) {
			_ = c.Write(ctx, websocket.MessageText, big)
		}},
		{"1008 after the rate limit", 1008, func(ctx context.Context, c *websocket.Conn) {
			// Far more than the 10 + 10 messages the gateway reads
			// before it gives up, without waiting for the replies,
			// until the close frame arrives.
			for i := 0; i < 100000 && ctx.Err() == nil; i++ {
				if c.Write(ctx, websocket.MessageText, []byte(`{"action":"ping","requestId":`+strconv.Itoa(i)+`}`)) != nil {
					return
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			codes := map[int]int{}
			var eg errgroup.Group
			eg.SetLimit(closeWorkers)
			for range closeRuns {
				eg.Go(func() error {
					code, err := closeWhileWriting(g.wsURL(""), tt.write)
					mu.Lock()
					codes[code]++
					mu.Unlock()
					if code != tt.want {
						return fmt.Errorf("close code %d (%v), want %d", code, err, tt.want)
					}
					return nil
				})
			}
			err := eg.Wait()
			t.Logf("close codes of %d connections: %v", closeRuns, codes)
			if err != nil {
				t.Fatal(err)
			}
		})
	}
	servertest.WaitFor(t, 10*time.Second, "every connection to be closed", func() bool { return g.srv.Connections() == 0 })
}

// TestSlowReaderResumesAndReads1013: five readers stop reading while
// 30,000 messages of 2 KB flow on their channel (fewer once the gateway
// has given up on all five: nobody follows the channel then). The
// gateway gives up on each once it has lost more than
// SLOW_CLIENT_MAX_DROPS (10,000) frames: the frames still queued are
// dropped, the close frame follows what gnet already holds for the
// reader, and the connection waits for the reader. The readers stay
// paused 3 s more (longer than the fixed grace the gateway used to give a
// close frame, well within CLOSE_LINGER) and then read what was on its
// way, 1013, then EOF: never a reset, never EOF without the close frame.
func TestSlowReaderResumesAndReads1013(t *testing.T) {
	const (
		readers = 5
		total   = 30000
		batch   = 500
		channel = "market:tick:FLOOD"
		pause   = 3 * time.Second
	)
	rs := redistest.Start(t)
	g := startGateway(t, rs, func(o *options) {
		// The command's defaults, but for a linger long enough that a
		// loaded machine running -race cannot make the pause outlast it.
		o.srv.MaxOutboundBytes = 256 << 10
		o.srv.SlowClientMaxDrops = 10000
		o.srv.SlowClientTimeout = 10 * time.Second
		o.srv.CloseLinger = 10 * time.Second
		o.hub.SendQueue = 1024
	})
	ps := make([]*pausedReader, readers)
	for i := range ps {
		ps[i] = &pausedReader{rc: servertest.Upgrade(t, g.addr), done: make(chan struct{})}
		rawSubscribe(t, ps[i].rc, channel)
	}
	payload := `{"pad":"` + strings.Repeat("x", 2040) + `"}`
	start := time.Now()
	gone := func() bool { return g.hub.Stats().Streams == 0 }
	published := 0
	for published < total && !gone() {
		first, last := published+1, published+batch
		rs.Do(t, "EVAL", publishScript, "1", channel, strconv.Itoa(first), strconv.Itoa(last), payload)
		published = last
		// Paced by what the gateway has received, so that its shards
		// keep up and every loss is the paused readers' own.
		servertest.WaitFor(t, 30*time.Second, "the gateway to receive the batch", func() bool {
			return g.hub.Stats().MessagesReceived >= uint64(last) || gone()
		})
	}
	if hd := g.hub.Stats().HandoffDropped; hd != 0 {
		t.Fatalf("%d messages lost at the shards' hand-off: the publisher outran the gateway", hd)
	}
	servertest.WaitFor(t, 30*time.Second, "the gateway to give up on the five readers", gone)
	t.Logf("published %d messages in %v; the gateway gave up on the readers", published, time.Since(start).Round(time.Millisecond))
	time.Sleep(pause) // the readers' pause, not a synchronisation
	for _, p := range ps {
		p.resume()
	}
	for i, p := range ps {
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			t.Fatalf("reader %d: not closed within 30 s", i)
		}
		frames, last, _, code, err := p.snapshot()
		t.Logf("reader %d: %d frames (last seq %d), close code %d, then %v", i, frames, last, code, err)
		if code != 1013 || !errors.Is(err, io.EOF) {
			t.Errorf("reader %d ended with close code %d, %v after %d frames; want 1013 then EOF", i, code, err, frames)
		}
	}
}

// TestLingerBounds: a closing connection does not outstay its bounds. A
// client that announces an oversized message and then does nothing (it
// neither reads nor closes) is closed CLOSE_LINGER after its last sign
// of life, and still finds the close frame, then EOF, in its socket; one
// that keeps sending after the close is cut off once it has sent the
// bytes bound, long before CLOSE_LINGER.
func TestLingerBounds(t *testing.T) {
	// A text frame header announcing 2 MiB, masked (RFC 6455 §5.2).
	header := []byte{0x81, 0x80 | 127, 0, 0, 0, 0, 0, 0x20, 0, 0, 1, 2, 3, 4}
	t.Run("silent client: closed after CLOSE_LINGER", func(t *testing.T) {
		const linger = time.Second
		rs := redistest.Start(t)
		g := startGateway(t, rs, func(o *options) { o.srv.CloseLinger = linger })
		rc := servertest.Upgrade(t, g.addr)
		start := time.Now()
		if _, err := rc.TCP.Write(header); err != nil {
			t.Fatal(err)
		}
		servertest.WaitFor(t, 10*time.Second, "the gateway to close the silent client", func() bool {
			return g.srv.Connections() == 0
		})
		// The decision came after start; the gateway's deadline is on
		// the wall clock, hence the small allowance.
		if d := time.Since(start); d < linger-10*time.Millisecond {
			t.Fatalf("closed after %v, before CLOSE_LINGER (%v)", d, linger)
		}
		f, err := rc.ReadFrame(5 * time.Second)
		if err != nil || f.Op != servertest.OpClose || servertest.CloseCode(f.Payload) != 1009 {
			t.Fatalf("read %v, %v; want the close frame with 1009", f, err)
		}
		if _, err := rc.ReadFrame(5 * time.Second); !errors.Is(err, io.EOF) {
			t.Fatalf("after the close frame: %v, want EOF", err)
		}
	})
	t.Run("1,000 silent clients: no goroutine each, all closed", func(t *testing.T) {
		const (
			n      = 1000
			linger = time.Second
		)
		rs := redistest.Start(t)
		g := startGateway(t, rs, func(o *options) { o.srv.CloseLinger = linger })
		goroutines := runtime.NumGoroutine()
		heap := heapInuse()
		rcs := make([]*servertest.Conn, n)
		for i := range rcs {
			rcs[i] = servertest.Upgrade(t, g.addr)
			if _, err := rcs[i].TCP.Write(header); err != nil {
				t.Fatal(err)
			}
		}
		// All closing at once: the raw clients use no goroutine, so
		// any growth is the gateway's.
		if d := runtime.NumGoroutine() - goroutines; d > 50 {
			t.Fatalf("%d more goroutines with %d connections closing", d, n)
		}
		t.Logf("heap with %d connections closing: +%d KiB", n, (int64(heapInuse())-int64(heap))>>10)
		servertest.WaitFor(t, 30*time.Second, "every silent client to be closed", func() bool {
			return g.srv.Connections() == 0
		})
		for _, rc := range rcs[:10] {
			if f, err := rc.ReadFrame(5 * time.Second); err != nil || f.Op != servertest.OpClose || servertest.CloseCode(f.Payload) != 1009 {
				t.Fatalf("read %v, %v; want the close frame with 1009", f, err)
			}
		}
	})
	t.Run("client that keeps sending: cut off past the bytes bound", func(t *testing.T) {
		rs := redistest.Start(t)
		g := startGateway(t, rs, func(o *options) { o.srv.CloseLinger = time.Minute })
		rc := servertest.Upgrade(t, g.addr)
		sent := make(chan int64, 1)
		go func() {
			n, _ := rc.TCP.Write(header)
			chunk := make([]byte, 64<<10)
			for total := int64(n); ; {
				_ = rc.TCP.SetWriteDeadline(time.Now().Add(20 * time.Second))
				m, err := rc.TCP.Write(chunk)
				total += int64(m)
				if err != nil || total > 64<<20 {
					sent <- total
					return
				}
			}
		}()
		servertest.WaitFor(t, 20*time.Second, "the gateway to cut the client off", func() bool {
			return g.srv.Connections() == 0
		})
		select {
		case n := <-sent:
			t.Logf("the client sent %d bytes before its writes failed", n)
			if n > 64<<20 {
				t.Fatalf("the gateway read %d bytes from a closing connection", n)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the client's writes never failed")
		}
	})
}
