package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/textproto"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wsgw/gateway/fanout/redistest"
)

// WebSocket opcodes the raw client deals with (RFC 6455 §5.2).
const (
	opText  byte = 0x1
	opClose byte = 0x8
	opPing  byte = 0x9
	opPong  byte = 0xA
)

// rawClient is a WebSocket client written on a bare TCP socket, for the
// peers a library client cannot play: one that stops reading, one that
// never answers pings, one that drops TCP without a close frame. It reads
// only when the test tells it to. Its methods that can fail the test take
// the testing.TB of the test or subtest using it.
type rawClient struct {
	c net.Conn
	r *bufio.Reader
}

// dialRaw connects to addr and completes the upgrade. rcvbuf > 0 sets
// SO_RCVBUF before the connect (so that it also bounds the TCP window the
// gateway sees), which makes a paused reader's kernel buffer small.
func dialRaw(tb testing.TB, addr string, rcvbuf int) *rawClient {
	tb.Helper()
	rc, err := dialRawErr(addr, rcvbuf)
	if err != nil {
		tb.Fatalf("raw dial %s: %v", addr, err)
	}
	tb.Cleanup(func() { _ = rc.c.Close() })
	return rc
}

// dialRawErr is dialRaw without a testing.TB, for helper goroutines. The
// caller closes the connection.
func dialRawErr(addr string, rcvbuf int) (*rawClient, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	if rcvbuf > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
			})
			return errors.Join(err, serr)
		}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	rc := &rawClient{c: c, r: bufio.NewReaderSize(c, 4096)}
	if err := rc.upgrade(); err != nil {
		_ = c.Close()
		return nil, err
	}
	return rc, nil
}

func (rc *rawClient) upgrade() error {
	_ = rc.c.SetDeadline(time.Now().Add(10 * time.Second))
	defer rc.c.SetDeadline(time.Time{})
	req := "GET /ws HTTP/1.1\r\nHost: gateway\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(rc.c, req); err != nil {
		return err
	}
	tp := textproto.NewReader(rc.r)
	status, err := tp.ReadLine()
	if err != nil {
		return fmt.Errorf("upgrade response: %w", err)
	}
	if !strings.HasPrefix(status, "HTTP/1.1 101 ") {
		return fmt.Errorf("upgrade refused: %q", status)
	}
	if _, err := tp.ReadMIMEHeader(); err != nil {
		return fmt.Errorf("upgrade response headers: %w", err)
	}
	return nil
}

// writeFrame sends one masked frame (clients must mask, RFC 6455 §5.3).
func (rc *rawClient) writeFrame(op byte, payload []byte) error {
	mask := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	out := []byte{0x80 | op}
	switch n := len(payload); {
	case n < 126:
		out = append(out, 0x80|byte(n))
	case n <= 0xffff:
		out = append(out, 0x80|126, byte(n>>8), byte(n))
	default:
		out = append(out, 0x80|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	out = append(out, mask[:]...)
	for i, b := range payload {
		out = append(out, b^mask[i%4])
	}
	_ = rc.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := rc.c.Write(out)
	return err
}

// send writes a text frame; test goroutine only.
func (rc *rawClient) send(tb testing.TB, s string) {
	tb.Helper()
	if err := rc.writeFrame(opText, []byte(s)); err != nil {
		tb.Fatalf("raw write: %v", err)
	}
}

// readFrame reads one unfragmented server frame (the gateway never
// fragments). timeout 0 means no deadline.
func (rc *rawClient) readFrame(timeout time.Duration) (op byte, payload []byte, err error) {
	if timeout > 0 {
		_ = rc.c.SetReadDeadline(time.Now().Add(timeout))
	} else {
		_ = rc.c.SetReadDeadline(time.Time{})
	}
	var h [2]byte
	if _, err := io.ReadFull(rc.r, h[:]); err != nil {
		return 0, nil, err
	}
	if h[0]&0x80 == 0 || h[1]&0x80 != 0 {
		return 0, nil, fmt.Errorf("unexpected frame header %#x %#x (fragmented or masked)", h[0], h[1])
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var ext [2]byte
		if _, err := io.ReadFull(rc.r, ext[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(ext[:]))
	case 127:
		var ext [8]byte
		if _, err := io.ReadFull(rc.r, ext[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(ext[:])
	}
	if n > 16<<20 {
		return 0, nil, fmt.Errorf("frame of %d bytes", n)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(rc.r, payload); err != nil {
		return 0, nil, err
	}
	return h[0] & 0x0f, payload, nil
}

// expectText reads frames until a text frame arrives (skipping pings) and
// checks it contains want; test goroutine only.
func (rc *rawClient) expectText(tb testing.TB, want string) []byte {
	tb.Helper()
	for {
		op, p, err := rc.readFrame(10 * time.Second)
		if err != nil {
			tb.Fatalf("raw read while waiting for %s: %v", want, err)
		}
		if op == opPing {
			continue
		}
		if op != opText || !bytes.Contains(p, []byte(want)) {
			tb.Fatalf("raw read: opcode %#x %q, want a text frame with %s", op, p, want)
		}
		return p
	}
}

// subscribe subscribes and waits for the ack; test goroutine only.
func (rc *rawClient) subscribe(tb testing.TB, channels ...string) {
	tb.Helper()
	rc.send(tb, `{"action":"subscribe","channels":["`+strings.Join(channels, `","`)+`"]}`)
	rc.expectText(tb, `"type":"subscribed"`)
}

// closeCode is the status code of a close frame's payload (1005 when
// absent, as RFC 6455 §7.1.5 says).
func closeCode(p []byte) int {
	if len(p) < 2 {
		return 1005
	}
	return int(binary.BigEndian.Uint16(p))
}

// seqOf extracts "seq" from a data frame's JSON without decoding the rest
// (the paused reader reads thousands of 2 KB frames); 0 when absent.
func seqOf(p []byte) uint64 {
	i := bytes.Index(p, []byte(`"seq":`))
	if i < 0 {
		return 0
	}
	p = p[i+len(`"seq":`):]
	j := 0
	for j < len(p) && p[j] >= '0' && p[j] <= '9' {
		j++
	}
	n, _ := strconv.ParseUint(string(p[:j]), 10, 64)
	return n
}

// heapInuse is the gateway process's live heap after a full collection.
// The gateway runs in-process in these tests, so this (not RSS) is what
// bounded memory is checked against; it includes the test's own clients.
func heapInuse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// logRecorder is a slog.Handler keeping each record as "msg k=v k=v", for
// tests that check why something happened.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Message)
	rec.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	r.mu.Lock()
	r.lines = append(r.lines, b.String())
	r.mu.Unlock()
	return nil
}

// find returns the first line that starts with msg and contains every
// substring of also.
func (r *logRecorder) find(msg string, also ...string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
next:
	for _, l := range r.lines {
		if !strings.HasPrefix(l, msg) {
			continue
		}
		for _, s := range also {
			if !strings.Contains(l, s) {
				continue next
			}
		}
		return l, true
	}
	return "", false
}

// wedgeProxy is a TCP proxy between the gateway and Redis that can wedge
// the pub/sub link: it stops forwarding Redis → gateway bytes on the
// connections that subscribed, while keeping both sockets open. That is
// what a subscriber stranded on a live socket (after a Sentinel failover,
// say) looks like from the gateway: TCP up, no messages.
type wedgeProxy struct {
	ln      net.Listener
	backend string

	mu    sync.Mutex
	pairs []*proxyPair
	wg    sync.WaitGroup
}

type proxyPair struct {
	front, back net.Conn
	pubsub      atomic.Bool // the gateway sent a SUBSCRIBE on it
	wedged      atomic.Bool
	closed      chan struct{}
	once        sync.Once
}

func (p *proxyPair) close() {
	p.once.Do(func() {
		close(p.closed)
		_ = p.front.Close()
		_ = p.back.Close()
	})
}

func startWedgeProxy(tb testing.TB, backend string) *wedgeProxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("proxy listen: %v", err)
	}
	p := &wedgeProxy{ln: ln, backend: backend}
	p.wg.Add(1)
	go p.accept()
	tb.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		for _, pr := range p.pairs {
			pr.close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *wedgeProxy) Addr() string { return p.ln.Addr().String() }

func (p *wedgeProxy) accept() {
	defer p.wg.Done()
	for {
		front, err := p.ln.Accept()
		if err != nil {
			return
		}
		back, err := net.DialTimeout("tcp", p.backend, 5*time.Second)
		if err != nil {
			_ = front.Close()
			continue
		}
		pr := &proxyPair{front: front, back: back, closed: make(chan struct{})}
		p.mu.Lock()
		p.pairs = append(p.pairs, pr)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.upstream(pr)
		go p.downstream(pr)
	}
}

// upstream copies gateway → Redis and notes a connection that subscribes.
func (p *wedgeProxy) upstream(pr *proxyPair) {
	defer p.wg.Done()
	defer pr.close()
	buf := make([]byte, 32<<10)
	var tail []byte // the end of the previous read, for a word split in two
	for {
		n, err := pr.front.Read(buf)
		if n > 0 {
			seen := append(tail, buf[:n]...)
			if bytes.Contains(bytes.ToUpper(seen), []byte("SUBSCRIBE")) {
				pr.pubsub.Store(true)
			}
			tail = append(tail[:0], seen[max(0, len(seen)-16):]...)
			if _, werr := pr.back.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// downstream copies Redis → gateway until the pair is wedged; then it
// holds whatever it read and forwards nothing more, without closing.
func (p *wedgeProxy) downstream(pr *proxyPair) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := pr.back.Read(buf)
		if pr.wedged.Load() {
			<-pr.closed
			return
		}
		if n > 0 {
			if _, werr := pr.front.Write(buf[:n]); werr != nil {
				pr.close()
				return
			}
		}
		if err != nil {
			pr.close()
			return
		}
	}
}

// wedgePubSub wedges every open connection that has subscribed and
// returns how many. Connections opened later are not wedged, so the
// gateway can recover by reconnecting, as it would to a new master.
func (p *wedgeProxy) wedgePubSub() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, pr := range p.pairs {
		select {
		case <-pr.closed:
			continue
		default:
		}
		if pr.pubsub.Load() {
			pr.wedged.Store(true)
			n++
		}
	}
	return n
}

// numWedgedOpen is the number of wedged pairs the gateway has not closed.
func (p *wedgeProxy) numWedgedOpen() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, pr := range p.pairs {
		select {
		case <-pr.closed:
		default:
			if pr.wedged.Load() {
				n++
			}
		}
	}
	return n
}

// numsub is PUBSUB NUMSUB for one channel.
func numsub(tb testing.TB, rs *redistest.Server, channel string) int {
	tb.Helper()
	f := strings.Fields(rs.Do(tb, "PUBSUB", "NUMSUB", channel))
	if len(f) != 2 {
		tb.Fatalf("PUBSUB NUMSUB %s: %q", channel, f)
	}
	n, err := strconv.Atoi(f[1])
	if err != nil {
		tb.Fatalf("PUBSUB NUMSUB %s: %q", channel, f)
	}
	return n
}

// health is the status code of GET /health.
func (g *gateway) health(tb testing.TB) int {
	tb.Helper()
	code, _ := g.get(tb, "/health")
	return code
}
