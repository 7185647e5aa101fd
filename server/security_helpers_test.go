package server_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/wsgw/gateway/fanout/redistest"
)

// Credentials of the security tests. The secret is longer than
// auth.MinSecretLen; the API key is distinctive so that a log search for it
// cannot match anything else.
var (
	secJWTSecret = []byte("security-test-hmac-secret-0123456789abcdef")
	secAPIKey    = "sec-api-key-7f3a9c1e5b2d8f4a6c0e"
)

// Keys are generated once per test binary: RSA generation is slow under
// -race.
var (
	secRSAKey = sync.OnceValue(func() *rsa.PrivateKey {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		return k
	})
	secECKey      = sync.OnceValue(newECKey)
	secOtherECKey = sync.OnceValue(newECKey)
	secEdKey      = sync.OnceValue(newEdKey)
	secOtherEdKey = sync.OnceValue(newEdKey) // signs tokens no gateway trusts
)

func newECKey() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

func newEdKey() ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

func secPublicPEM(tb testing.TB, pub any) []byte {
	tb.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// secSign signs claims with golang-jwt/jwt/v5.
func secSign(tb testing.TB, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	tb.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		tb.Fatalf("sign %s: %v", method.Alg(), err)
	}
	return s
}

// secClaims is a valid claim set for role, valid for an hour; a nil
// override deletes a claim.
func secClaims(role string, overrides map[string]any) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{
		"sub":  "client-7",
		"role": role,
		"iat":  now.Add(-time.Minute).Unix(),
		"exp":  now.Add(time.Hour).Unix(),
	}
	for k, v := range overrides {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// hsToken is an HS256 token for role signed with secJWTSecret.
func hsToken(tb testing.TB, role string, overrides map[string]any) string {
	tb.Helper()
	return secSign(tb, jwt.SigningMethodHS256, secJWTSecret, secClaims(role, overrides))
}

// bearer is the header set of a service client.
func bearer(token string) http.Header {
	return http.Header{"Authorization": {"Bearer " + token}}
}

// dialHdr connects a coder/websocket client with extra request headers.
func dialHdr(tb testing.TB, url string, hdr http.Header) *client {
	tb.Helper()
	c, err := dialErr(url, hdr)
	if err != nil {
		tb.Fatalf("dial %s: %v", redactURL(url), err)
	}
	tb.Cleanup(func() { _ = c.CloseNow() })
	return &client{c: c}
}

// waitClosed reads until the connection ends and returns the close status
// the server sent (-1 when there was no close frame).
func (cl *client) waitClosed(tb testing.TB, timeout time.Duration) (websocket.StatusCode, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		if _, _, err := cl.c.Read(ctx); err != nil {
			if ctx.Err() != nil {
				tb.Fatalf("connection still open after %v", timeout)
			}
			return websocket.CloseStatus(err), err
		}
	}
}

// bystander is a client that watches one channel while hostile clients do
// their worst on the same gateway; alive proves it still receives data.
type bystander struct {
	cl *client
	rs *redistest.Server
	ch string
	n  int
}

func newBystander(tb testing.TB, g *gateway, rs *redistest.Server) *bystander {
	tb.Helper()
	b := &bystander{cl: dial(tb, g.wsURL("")), rs: rs, ch: "market:tick:BYSTANDER"}
	b.cl.subscribe(tb, b.ch)
	return b
}

func (b *bystander) alive(tb testing.TB) {
	tb.Helper()
	b.n++
	want := strconv.Itoa(b.n)
	if got := b.rs.Publish(tb, b.ch, want); got != 1 {
		tb.Fatalf("bystander: PUBLISH reached %d subscribers, want 1", got)
	}
	// Read through readErr so that a failure is reported on tb (a
	// subtest), not on the test that created the bystander.
	m, err := b.cl.readErr(10 * time.Second)
	if err != nil {
		tb.Fatalf("bystander stopped receiving: %v", err)
	}
	if m.str("type") != "data" || fmt.Sprint(m["data"]) != want {
		tb.Fatalf("bystander got %v, want data %s", m, want)
	}
}

// logSink collects a gateway's log output; safe for concurrent use.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

func (s *logSink) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(s, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Raw HTTP and frames, for what a well-behaved client library refuses to
// send.

const testWSKey = "dGhlIHNhbXBsZSBub25jZQ=="

// upgradeRequest is a complete upgrade request for target; extra header
// lines end in \r\n.
func upgradeRequest(target, extra string) string {
	return "GET " + target + " HTTP/1.1\r\nHost: gateway\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + testWSKey + "\r\nSec-WebSocket-Version: 13\r\n" + extra + "\r\n"
}

// rawConn is a TCP connection driven by hand.
type rawConn struct {
	net.Conn
	br *bufio.Reader
}

// rawDial connects from localIP ("" for the default).
func rawDial(tb testing.TB, addr, localIP string) *rawConn {
	tb.Helper()
	d := net.Dialer{Timeout: 10 * time.Second}
	if localIP != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(localIP)}
	}
	return rawDialWith(tb, addr, &d)
}

// setsockopt is a net.Dialer Control setting the SOL_SOCKET option opt
// (SO_RCVBUF, SO_SNDBUF) before the connect, so that a receive buffer
// also bounds the window the peer is offered, and a send buffer does not
// grow by autotuning.
func setsockopt(opt, value int) func(_, _ string, rc syscall.RawConn) error {
	return func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, opt, value)
		})
		return errors.Join(err, serr)
	}
}

// rawUpgradeRcvbuf upgrades with a socket receive buffer of rcvbuf bytes,
// set before connecting so that the advertised window stays small.
func rawUpgradeRcvbuf(tb testing.TB, addr string, rcvbuf int) *rawConn {
	tb.Helper()
	d := net.Dialer{Timeout: 10 * time.Second, Control: setsockopt(syscall.SO_RCVBUF, rcvbuf)}
	rc := rawDialWith(tb, addr, &d)
	rc.write(tb, []byte(upgradeRequest("/ws", "")))
	if code, head := rc.readHead(tb); code != http.StatusSwitchingProtocols {
		tb.Fatalf("upgrade answered %d: %q", code, head)
	}
	return rc
}

func rawDialWith(tb testing.TB, addr string, d *net.Dialer) *rawConn {
	tb.Helper()
	c, err := d.Dial("tcp", addr)
	if err != nil {
		tb.Fatalf("dial %s: %v", addr, err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return &rawConn{Conn: c, br: bufio.NewReader(c)}
}

func (rc *rawConn) write(tb testing.TB, p []byte) {
	tb.Helper()
	_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := rc.Write(p); err != nil {
		tb.Fatalf("write: %v", err)
	}
}

// readHead reads an HTTP response head and returns its status code and
// the head's text.
func (rc *rawConn) readHead(tb testing.TB) (int, string) {
	tb.Helper()
	_ = rc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var head strings.Builder
	for {
		line, err := rc.br.ReadString('\n')
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

// expectEOF checks that the server closes the connection and sends
// nothing more; it returns what it read.
func (rc *rawConn) expectEOF(tb testing.TB, timeout time.Duration) []byte {
	tb.Helper()
	_ = rc.SetReadDeadline(time.Now().Add(timeout))
	rest, err := io.ReadAll(rc.br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		tb.Fatalf("server did not close the connection within %v (read %q)", timeout, rest)
	}
	// io.EOF (a FIN) is nil here; a reset (ECONNRESET) is also a close.
	return rest
}

// upgradeStatus sends an upgrade request from localIP ("" for the
// default) and returns the answer's status. Any answer but 101 must be
// followed by the server closing the TCP connection with no WebSocket
// frame: a refused client never holds an accepted WebSocket. A 101 is
// closed at once.
func upgradeStatus(tb testing.TB, addr, localIP, target, extra string) int {
	tb.Helper()
	rc := rawDial(tb, addr, localIP)
	rc.write(tb, []byte(upgradeRequest(target, extra)))
	code, head := rc.readHead(tb)
	if code == http.StatusSwitchingProtocols {
		_ = rc.Close()
		return code
	}
	body := rc.expectEOF(tb, 10*time.Second)
	if strings.Contains(string(body), "\x88") {
		tb.Fatalf("a WebSocket frame followed HTTP %d: %q%q", code, head, body)
	}
	return code
}

// rawUpgrade performs a raw upgrade and checks that it succeeded.
func rawUpgrade(tb testing.TB, addr string) *rawConn {
	tb.Helper()
	rc := rawDial(tb, addr, "")
	rc.write(tb, []byte(upgradeRequest("/ws", "")))
	if code, head := rc.readHead(tb); code != http.StatusSwitchingProtocols {
		tb.Fatalf("upgrade answered %d: %q", code, head)
	}
	return rc
}

// clientFrame builds a client frame with the given first byte (FIN, RSV
// bits, opcode), masked unless unmasked is set. A payload longer than 125
// bytes uses the 16- or 64-bit length form.
func clientFrame(b0 byte, payload []byte, unmasked bool) []byte {
	out := []byte{b0, 0}
	n := len(payload)
	switch {
	case n < 126:
		out[1] = byte(n)
	case n <= 0xffff:
		out[1] = 126
		out = binary.BigEndian.AppendUint16(out, uint16(n))
	default:
		out[1] = 127
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	if unmasked {
		return append(out, payload...)
	}
	out[1] |= 0x80
	mask := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	out = append(out, mask[:]...)
	for i, b := range payload {
		out = append(out, b^mask[i%4])
	}
	return out
}

// closePayload is a close frame body: a code and a reason.
func closePayload(code uint16, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, code), reason...)
}

// serverFrame is one frame read from the gateway (unmasked).
type serverFrame struct {
	fin     bool
	op      byte
	payload []byte
}

func (rc *rawConn) readFrame() (serverFrame, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(rc.br, hdr[:]); err != nil {
		return serverFrame{}, err
	}
	if hdr[1]&0x80 != 0 {
		return serverFrame{}, errors.New("server frame is masked")
	}
	n := uint64(hdr[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(rc.br, b[:]); err != nil {
			return serverFrame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(rc.br, b[:]); err != nil {
			return serverFrame{}, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if n > 16<<20 {
		return serverFrame{}, fmt.Errorf("server frame of %d bytes", n)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(rc.br, p); err != nil {
		return serverFrame{}, err
	}
	return serverFrame{fin: hdr[0]&0x80 != 0, op: hdr[0] & 0x0f, payload: p}, nil
}

// expectClose reads frames until the server's close frame, checks its
// status code, and then checks that the server closes TCP. Text frames on
// the way (error replies) are returned.
func (rc *rawConn) expectClose(tb testing.TB, want uint16) (texts []string) {
	tb.Helper()
	_ = rc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := rc.readFrame()
		if err != nil {
			tb.Fatalf("reading until a close frame %d: %v (texts so far: %q)", want, err, texts)
		}
		switch f.op {
		case 0x1:
			texts = append(texts, string(f.payload))
			continue
		case 0x9, 0xA:
			continue
		case 0x8:
		default:
			tb.Fatalf("unexpected frame opcode %#x", f.op)
		}
		if len(f.payload) < 2 {
			tb.Fatalf("close frame without a status code, want %d", want)
		}
		if got := binary.BigEndian.Uint16(f.payload); got != want {
			tb.Fatalf("close code %d (%q), want %d", got, f.payload[2:], want)
		}
		rc.expectEOF(tb, 10*time.Second)
		return texts
	}
}

// expectText reads the next data frame, which must be a text frame
// containing want.
func (rc *rawConn) expectText(tb testing.TB, want string) string {
	tb.Helper()
	_ = rc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := rc.readFrame()
		if err != nil {
			tb.Fatalf("reading a text frame: %v", err)
		}
		if f.op == 0x9 || f.op == 0xA {
			continue
		}
		if f.op != 0x1 || !strings.Contains(string(f.payload), want) {
			tb.Fatalf("got frame op %#x %q, want text containing %q", f.op, f.payload, want)
		}
		return string(f.payload)
	}
}
