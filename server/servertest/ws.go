package servertest

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Opcodes (RFC 6455 §5.2, §11.8).
const (
	OpCont   byte = 0x0
	OpText   byte = 0x1
	OpBinary byte = 0x2
	OpClose  byte = 0x8
	OpPing   byte = 0x9
	OpPong   byte = 0xA
)

const (
	ioTimeout = 10 * time.Second // per dial, upgrade, write and Expect* read
	// maxFrame bounds what ReadFrame allocates for one server frame
	// (the echo's limit is 16 MiB).
	maxFrame = 64 << 20
	wsGUID   = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
	// SampleKey is the Sec-WebSocket-Key of RFC 6455 §1.3, used by
	// UpgradeRequest; its Sec-WebSocket-Accept is SampleAccept.
	SampleKey    = "dGhlIHNhbXBsZSBub25jZQ=="
	SampleAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
)

// Conn is a WebSocket client written from RFC 6455 on a bare TCP socket:
// neither the gobwas/ws the server uses nor a client library, which would
// refuse to send what hostile and conformance tests must send (unmasked
// frames, reserved bits and opcodes, bad UTF-8, half frames, garbage
// instead of HTTP), or to be the peer a reliability test needs (one that
// stops reading, never answers pings, drops TCP without a close frame).
// It reads only when told to.
type Conn struct {
	// TCP is the socket, for deadlines, addresses and writes by hand.
	TCP *net.TCPConn
	// R buffers the reads from TCP; read through it only.
	R *bufio.Reader
}

// DialOption sets up the socket before it connects.
type DialOption func(*net.Dialer)

// LocalIP binds the socket to ip (another loopback address, say).
func LocalIP(ip string) DialOption {
	return func(d *net.Dialer) { d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(ip)} }
}

// SocketOption sets an integer socket option before the connect: SO_RCVBUF
// (so that it also bounds the window the peer is offered), SO_SNDBUF (so
// that autotuning does not grow it), TCP_MAXSEG. Options accumulate.
func SocketOption(level, opt, value int) DialOption {
	return func(d *net.Dialer) {
		prev := d.Control
		d.Control = func(network, address string, rc syscall.RawConn) error {
			if prev != nil {
				if err := prev(network, address, rc); err != nil {
					return err
				}
			}
			var serr error
			err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), level, opt, value) })
			return errors.Join(err, serr)
		}
	}
}

// RcvBuf is SocketOption(SOL_SOCKET, SO_RCVBUF, n): a small one makes a
// paused reader's kernel buffer, and the window the server sees, small.
func RcvBuf(n int) DialOption { return SocketOption(syscall.SOL_SOCKET, syscall.SO_RCVBUF, n) }

// SndBuf is SocketOption(SOL_SOCKET, SO_SNDBUF, n).
func SndBuf(n int) DialOption { return SocketOption(syscall.SOL_SOCKET, syscall.SO_SNDBUF, n) }

// Dial opens a TCP connection to addr and nothing more; a tb.Cleanup closes
// it.
func Dial(tb testing.TB, addr string, opts ...DialOption) *Conn {
	tb.Helper()
	c, err := DialErr(addr, opts...)
	if err != nil {
		tb.Fatalf("dial %s: %v", addr, err)
	}
	tb.Cleanup(func() { _ = c.TCP.Close() })
	return c
}

// DialErr is Dial without a testing.TB, for helper goroutines; the caller
// closes the connection.
func DialErr(addr string, opts ...DialOption) (*Conn, error) {
	d := net.Dialer{Timeout: ioTimeout}
	for _, o := range opts {
		o(&d)
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	tc := nc.(*net.TCPConn)
	return &Conn{TCP: tc, R: bufio.NewReaderSize(tc, 64<<10)}, nil
}

// Upgrade dials addr and upgrades on /ws, which must succeed (101).
func Upgrade(tb testing.TB, addr string, opts ...DialOption) *Conn {
	tb.Helper()
	c := Dial(tb, addr, opts...)
	resp, body, err := c.Upgrade("/ws", "")
	if err != nil {
		tb.Fatalf("upgrade: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		tb.Fatalf("upgrade answered %d: %s", resp.StatusCode, body)
	}
	return c
}

// UpgradeErr is Upgrade without a testing.TB, for helper goroutines; the
// caller closes the connection.
func UpgradeErr(addr string, opts ...DialOption) (*Conn, error) {
	c, err := DialErr(addr, opts...)
	if err != nil {
		return nil, err
	}
	resp, body, err := c.Upgrade("/ws", "")
	if err == nil && resp.StatusCode != http.StatusSwitchingProtocols {
		err = fmt.Errorf("upgrade refused: %d %s", resp.StatusCode, body)
	}
	if err != nil {
		_ = c.TCP.Close()
		return nil, err
	}
	return c, nil
}

// UpgradeRequest is an upgrade request for target with SampleKey; extra
// header lines end in \r\n.
func UpgradeRequest(target, extra string) string {
	return "GET " + target + " HTTP/1.1\r\nHost: gateway\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + SampleKey + "\r\nSec-WebSocket-Version: 13\r\n" + extra + "\r\n"
}

// Upgrade sends an upgrade request for path with a fresh random key and
// the extra header lines (each ending in \r\n), and reads the answer. A
// 101 must carry the right Sec-WebSocket-Accept and Upgrade and Connection
// headers (RFC 6455 §4.2.2), else it is an error; any other answer comes
// with its body.
func (c *Conn) Upgrade(path, extra string) (*http.Response, []byte, error) {
	_ = c.TCP.SetDeadline(time.Now().Add(ioTimeout))
	defer c.TCP.SetDeadline(time.Time{})
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	key := base64.StdEncoding.EncodeToString(raw[:])
	req := "GET " + path + " HTTP/1.1\r\nHost: " + c.TCP.RemoteAddr().String() + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\n" + extra + "\r\n"
	if _, err := io.WriteString(c.TCP, req); err != nil {
		return nil, nil, fmt.Errorf("write upgrade request: %w", err)
	}
	resp, err := http.ReadResponse(c.R, &http.Request{Method: http.MethodGet})
	if err != nil {
		return nil, nil, fmt.Errorf("read upgrade response: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return resp, body, nil
	}
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"), accept(key); got != want {
		return resp, nil, fmt.Errorf("Sec-WebSocket-Accept = %q, want %q (RFC 6455 §4.2.2)", got, want)
	}
	if !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") || !strings.EqualFold(resp.Header.Get("Connection"), "upgrade") {
		return resp, nil, fmt.Errorf("101 without Upgrade: websocket / Connection: Upgrade: %v", resp.Header)
	}
	return resp, nil, nil
}

// Send writes p as it is.
func (c *Conn) Send(tb testing.TB, p []byte) {
	tb.Helper()
	_ = c.TCP.SetWriteDeadline(time.Now().Add(ioTimeout))
	if _, err := c.TCP.Write(p); err != nil {
		tb.Fatalf("write: %v", err)
	}
}

// ReadHead reads an HTTP/1.1 response head and returns its status code
// and text.
func (c *Conn) ReadHead(tb testing.TB) (int, string) {
	tb.Helper()
	_ = c.TCP.SetReadDeadline(time.Now().Add(ioTimeout))
	var head strings.Builder
	for {
		line, err := c.R.ReadString('\n')
		head.WriteString(line)
		if err != nil {
			tb.Fatalf("reading the response head: %v (got %q)", err, head.String())
		}
		if line == "\r\n" {
			break
		}
	}
	h := head.String()
	var proto string
	var code int
	if _, err := fmt.Sscanf(h, "%s %d", &proto, &code); err != nil || proto != "HTTP/1.1" {
		tb.Fatalf("not an HTTP/1.1 response: %q", h)
	}
	return code, h
}

// ExpectEOF checks that the server closes the connection (a FIN, or a
// reset) within timeout, and returns what it read before.
func (c *Conn) ExpectEOF(tb testing.TB, timeout time.Duration) []byte {
	tb.Helper()
	_ = c.TCP.SetReadDeadline(time.Now().Add(timeout))
	rest, err := io.ReadAll(c.R)
	if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
		tb.Fatalf("server did not close the connection within %v (read %q)", timeout, rest)
	}
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		tb.Fatalf("want the server to close TCP, got %v (read %q)", err, rest)
	}
	return rest
}

// maskKeys makes every frame's masking key different, so a server that
// unmasked with the wrong key or offset cannot pass by luck.
var maskKeys atomic.Uint64

// Frame builds one client frame with first byte b0 (FIN, RSV bits,
// opcode) and the shortest length encoding (§5.2), masked with a fresh key
// (§5.3) unless unmasked.
func Frame(b0 byte, payload []byte, unmasked bool) []byte {
	n := len(payload)
	out := make([]byte, 0, 14+n)
	out = append(out, b0)
	var m byte = 0x80
	if unmasked {
		m = 0
	}
	switch {
	case n <= 125:
		out = append(out, m|byte(n))
	case n <= 0xffff:
		out = append(out, m|126, byte(n>>8), byte(n))
	default:
		out = append(out, m|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	if unmasked {
		return append(out, payload...)
	}
	k := maskKeys.Add(0x9e3779b97f4a7c15)
	key := [4]byte{byte(k>>8) | 1, byte(k >> 16), byte(k>>24) | 0x80, byte(k >> 32)}
	out = append(out, key[:]...)
	start := len(out)
	out = append(out, payload...)
	// Eight bytes at a time: the 16 MiB cases are slow enough under -race
	// without a loop per byte.
	p := out[start:]
	k8 := binary.LittleEndian.Uint64([]byte{key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]})
	i := 0
	for ; i+8 <= len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], binary.LittleEndian.Uint64(p[i:])^k8)
	}
	for ; i < len(p); i++ {
		p[i] ^= key[i&3]
	}
	return out
}

// DataFrame is a masked frame with opcode op, FIN when fin, and rsv (0-7)
// in the RSV bits.
func DataFrame(op byte, fin bool, rsv byte, payload []byte) []byte {
	b0 := op&0x0f | (rsv&7)<<4
	if fin {
		b0 |= 0x80
	}
	return Frame(b0, payload, false)
}

// ClosePayload is a close frame body: a code and a reason (§5.5.1).
func ClosePayload(code uint16, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, code), reason...)
}

// CloseCode is the status code of a close frame's payload, 1005 when it
// has none (§7.1.5).
func CloseCode(payload []byte) int {
	if len(payload) < 2 {
		return 1005
	}
	return int(binary.BigEndian.Uint16(payload))
}

// WriteFrame sends one masked, final frame of opcode op.
func (c *Conn) WriteFrame(op byte, payload []byte) error {
	_ = c.TCP.SetWriteDeadline(time.Now().Add(ioTimeout))
	_, err := c.TCP.Write(DataFrame(op, true, 0, payload))
	return err
}

// SendText sends one text frame.
func (c *Conn) SendText(tb testing.TB, s string) {
	tb.Helper()
	if err := c.WriteFrame(OpText, []byte(s)); err != nil {
		tb.Fatalf("write: %v", err)
	}
}

// ServerFrame is one frame read from the server.
type ServerFrame struct {
	Fin     bool
	RSV     byte // the three RSV bits, 0-7
	Op      byte
	Payload []byte
}

func (f ServerFrame) String() string {
	p := f.Payload
	if len(p) > 48 {
		return fmt.Sprintf("{op %#x, %d bytes: %q...}", f.Op, len(p), p[:48])
	}
	return fmt.Sprintf("{op %#x, %q}", f.Op, p)
}

// ReadFrame reads one frame within timeout (0: no deadline). A masked
// frame (§5.1) or one over 64 MiB is an error; anything else is returned
// as it came (fragments, RSV bits, oversized control frames), for the
// caller to judge.
func (c *Conn) ReadFrame(timeout time.Duration) (ServerFrame, error) {
	if timeout > 0 {
		_ = c.TCP.SetReadDeadline(time.Now().Add(timeout))
	} else {
		_ = c.TCP.SetReadDeadline(time.Time{})
	}
	var h [2]byte
	if _, err := io.ReadFull(c.R, h[:]); err != nil {
		return ServerFrame{}, err
	}
	if h[1]&0x80 != 0 {
		return ServerFrame{}, errors.New("server frame is masked (RFC 6455 §5.1)")
	}
	f := ServerFrame{Fin: h[0]&0x80 != 0, RSV: h[0] >> 4 & 7, Op: h[0] & 0x0f}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var e [2]byte
		if _, err := io.ReadFull(c.R, e[:]); err != nil {
			return ServerFrame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(e[:]))
	case 127:
		var e [8]byte
		if _, err := io.ReadFull(c.R, e[:]); err != nil {
			return ServerFrame{}, err
		}
		n = binary.BigEndian.Uint64(e[:])
	}
	if n > maxFrame {
		return ServerFrame{}, fmt.Errorf("server frame of %d bytes", n)
	}
	f.Payload = make([]byte, n)
	if _, err := io.ReadFull(c.R, f.Payload); err != nil {
		return ServerFrame{}, fmt.Errorf("payload of %d bytes: %w", n, err)
	}
	return f, nil
}

// ExpectText reads frames, skipping pings and pongs, until a text frame,
// which must contain want; it returns its payload.
func (c *Conn) ExpectText(tb testing.TB, want string) []byte {
	tb.Helper()
	for {
		f, err := c.ReadFrame(ioTimeout)
		if err != nil {
			tb.Fatalf("reading a text frame with %s: %v", want, err)
		}
		if f.Op == OpPing || f.Op == OpPong {
			continue
		}
		if f.Op != OpText || !f.Fin || !bytes.Contains(f.Payload, []byte(want)) {
			tb.Fatalf("got %v, want a text frame with %s", f, want)
		}
		return f.Payload
	}
}

// ExpectClose reads frames until the server's close frame, checks its
// status code and that the server then closes TCP. The text frames on the
// way (error replies) are returned; pings and pongs are skipped.
func (c *Conn) ExpectClose(tb testing.TB, code int) (texts []string) {
	tb.Helper()
	for {
		f, err := c.ReadFrame(ioTimeout)
		if err != nil {
			tb.Fatalf("reading until a close frame %d: %v (texts so far: %q)", code, err, texts)
		}
		switch f.Op {
		case OpText:
			texts = append(texts, string(f.Payload))
			continue
		case OpPing, OpPong:
			continue
		case OpClose:
		default:
			tb.Fatalf("unexpected frame %v", f)
		}
		if len(f.Payload) < 2 {
			tb.Fatalf("close frame without a status code, want %d", code)
		}
		if got := CloseCode(f.Payload); got != code {
			tb.Fatalf("close code %d (%q), want %d", got, f.Payload[2:], code)
		}
		c.ExpectEOF(tb, ioTimeout)
		return texts
	}
}

// accept is the Sec-WebSocket-Accept of key (§4.2.2).
func accept(key string) string {
	sum := sha1.Sum([]byte(key + wsGUID))
	return base64.StdEncoding.EncodeToString(sum[:])
}
