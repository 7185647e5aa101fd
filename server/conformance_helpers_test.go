package server_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/wsgw/gateway/server/servertest"
)

// The conformance tests talk to the gateway's /echo endpoint with
// confConn: servertest's raw WebSocket client (neither gobwas/ws, the
// server's, nor coder/websocket, which would refuse to send what these
// tests must send: reserved bits and opcodes, fragmented control frames,
// invalid UTF-8, half frames), fed in chunks the server reads one by one.

// How a conformance case ends (confCase.close).
const (
	// confAutoClose: the connection survives the case; the runner then
	// closes it with 1000 and expects 1000 echoed.
	confAutoClose = 0
	// confEmptyClose: the server's close frame has no body.
	confEmptyClose = -1
)

const (
	// confEverySplitMax: streams up to this many bytes are fed through
	// every split point and octet by octet; longer ones through the
	// header boundaries and a few random cuts.
	confEverySplitMax = 300
	confReadTimeout   = 30 * time.Second // generous: a failing read is a failing test, not a slow one
)

// startEcho starts a gateway with /echo on and no Redis: the echo path
// never touches it. EchoMaxMessageBytes is left at 0 so that the default
// (large enough for Autobahn's 16 MiB messages) is what is tested.
func startEcho(tb testing.TB, mutate ...func(*options)) *gateway {
	tb.Helper()
	return startGateway(tb, nil, append([]func(*options){func(o *options) { o.srv.Echo = true }}, mutate...)...)
}

// confSrv is one frame the server sent, or is expected to send.
type confSrv struct {
	op      byte
	payload []byte
}

func (f confSrv) String() string {
	return servertest.ServerFrame{Op: f.op, Payload: f.payload}.String()
}

func confWantText(p string) confSrv { return confSrv{servertest.OpText, []byte(p)} }
func confWantBin(p []byte) confSrv  { return confSrv{servertest.OpBinary, p} }
func confWantPong(p string) confSrv { return confSrv{servertest.OpPong, []byte(p)} }

func confText(p string) []byte { return servertest.DataFrame(servertest.OpText, true, 0, []byte(p)) }
func confBin(p []byte) []byte  { return servertest.DataFrame(servertest.OpBinary, true, 0, p) }
func confPing(p string) []byte { return servertest.DataFrame(servertest.OpPing, true, 0, []byte(p)) }
func confPong(p string) []byte { return servertest.DataFrame(servertest.OpPong, true, 0, []byte(p)) }

// confFrag is a data or continuation frame of a fragmented message.
func confFrag(op byte, fin bool, p string) []byte { return servertest.DataFrame(op, fin, 0, []byte(p)) }

// confClose is a close frame: code < 0 sends no body, otherwise the
// 2-byte code followed by reason (§5.5.1).
func confClose(code int, reason string) []byte {
	if code < 0 {
		return servertest.DataFrame(servertest.OpClose, true, 0, nil)
	}
	body := binary.BigEndian.AppendUint16(nil, uint16(code))
	return servertest.DataFrame(servertest.OpClose, true, 0, append(body, reason...))
}

func confCat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// confFragments splits p into frames of at most size bytes: the first
// with op, the rest continuations, FIN on the last (§5.4).
func confFragments(op byte, p []byte, size int) []byte {
	var out []byte
	for first := true; first || len(p) > 0; first = false {
		k := min(size, len(p))
		fop := servertest.OpCont
		if first {
			fop = op
		}
		out = append(out, servertest.DataFrame(fop, k == len(p), 0, p[:k])...)
		p = p[k:]
	}
	return out
}

// confTextPayload is n bytes of valid UTF-8 mixing ASCII and multi-byte
// code points, so that UTF-8 validation across reads and fragments is
// exercised by the large cases too.
func confTextPayload(n int) []byte {
	const unit = "BAsd7&jh23κόσμε€𤭢"
	p := []byte(strings.Repeat(unit, n/len(unit)+1))[:n]
	// Never end inside a code point: pad the cut one with ASCII.
	for i := len(p) - 1; i >= 0 && i >= len(p)-utf8.UTFMax; i-- {
		if utf8.RuneStart(p[i]) {
			if !utf8.FullRune(p[i:]) {
				for j := i; j < len(p); j++ {
					p[j] = '*'
				}
			}
			break
		}
	}
	return p
}

// confBinPayload is n bytes covering every byte value.
func confBinPayload(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*31 + 7)
	}
	return p
}

// confConn is one client connection.
type confConn struct {
	tb   testing.TB
	c    *servertest.Conn
	feed string // how the current stream is being fed, for failure messages
}

// confDial connects to path and upgrades. extra holds additional request
// header lines, each ending in \r\n. A refused upgrade returns a nil
// confConn and the response (its body read into the returned string).
func confDial(tb testing.TB, addr, path, extra string) (*confConn, *http.Response, string) {
	tb.Helper()
	c := servertest.Dial(tb, addr)
	resp, body, err := c.Upgrade(path, extra)
	if err != nil {
		tb.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return nil, resp, string(body)
	}
	return &confConn{tb: tb, c: c}, resp, ""
}

// confOpen is confDial for an upgrade that must succeed.
func confOpen(tb testing.TB, g *gateway) *confConn {
	tb.Helper()
	w, resp, body := confDial(tb, g.addr, "/echo", "")
	if w == nil {
		tb.Fatalf("upgrade /echo: %d %s", resp.StatusCode, body)
	}
	return w
}

func (w *confConn) fatalf(format string, args ...any) {
	w.tb.Helper()
	if w.feed != "" {
		format += " [fed %s]"
		args = append(args, w.feed)
	}
	w.tb.Fatalf(format, args...)
}

// drained waits until the server has read every byte sent so far: its
// socket's receive queue is empty, or the socket is gone. The next write
// then necessarily arrives in a later read on the server, which two
// back-to-back writes alone would not guarantee.
func (w *confConn) drained() {
	w.tb.Helper()
	if !confBarrierSupported {
		return
	}
	srv, cli := w.c.TCP.RemoteAddr().(*net.TCPAddr), w.c.TCP.LocalAddr().(*net.TCPAddr)
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		n, found, err := confUnread(srv, cli)
		if err != nil {
			w.fatalf("%v", err)
		}
		if !found || n == 0 {
			return
		}
		if time.Now().After(deadline) {
			w.fatalf("the server left %d bytes unread for 10s", n)
		}
		if i < 8 {
			runtime.Gosched()
		} else {
			time.Sleep(50 * time.Microsecond) // polling interval, not synchronisation
		}
	}
}

// write sends p in chunks cut at the ascending offsets cuts, waiting after
// each chunk until the server has read it, so that each chunk reaches the
// server in a read of its own. When tolerant, a write refused because the
// server has already failed the connection is not an error (the test then
// reads what the server sent before closing).
func (w *confConn) write(p []byte, cuts []int, tolerant bool) {
	w.tb.Helper()
	prev := 0
	for i := 0; i <= len(cuts); i++ {
		end := len(p)
		if i < len(cuts) {
			end = cuts[i]
		}
		if end <= prev {
			continue
		}
		_ = w.c.TCP.SetWriteDeadline(time.Now().Add(confReadTimeout))
		if _, err := w.c.TCP.Write(p[prev:end]); err != nil {
			if tolerant && (errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)) {
				return
			}
			w.fatalf("write: %v", err)
		}
		prev = end
		if end < len(p) {
			w.drained()
		}
	}
}

// readFrame reads one server frame and checks what every server frame
// must be: unmasked (§5.1, checked by ReadFrame), no RSV bits (no
// extension is negotiated, §5.2), control frames unfragmented and at most
// 125 bytes (§5.5). The server never fragments, so data frames have FIN
// set.
func (w *confConn) readFrame() (confSrv, error) {
	w.tb.Helper()
	f, err := w.c.ReadFrame(confReadTimeout)
	if err != nil {
		return confSrv{}, err
	}
	switch {
	case f.RSV != 0:
		w.fatalf("server frame has RSV bits %#x without a negotiated extension (§5.2)", f.RSV<<4)
	case !f.Fin:
		w.fatalf("server frame op %#x without FIN: the echo must send whole messages", f.Op)
	case f.Op >= servertest.OpClose && len(f.Payload) > 125:
		w.fatalf("server control frame of %d bytes (§5.5)", len(f.Payload))
	}
	return confSrv{op: f.Op, payload: f.Payload}, nil
}

// expect reads the next frames and compares them with want, in order.
func (w *confConn) expect(want ...confSrv) {
	w.tb.Helper()
	for i, wf := range want {
		f, err := w.readFrame()
		if err != nil {
			w.fatalf("frame %d of %d: %v; want %v", i+1, len(want), err, wf)
		}
		if f.op != wf.op || string(f.payload) != string(wf.payload) {
			w.fatalf("frame %d of %d: got %v, want %v", i+1, len(want), f, wf)
		}
	}
}

// expectClose reads the server's close frame, checks its code (or that
// it has no body, for confEmptyClose) and that the server then closes
// the TCP connection without sending anything more (§5.5.1, §7.1.1).
func (w *confConn) expectClose(code int) {
	w.tb.Helper()
	f, err := w.readFrame()
	if err != nil {
		w.fatalf("want a close frame with %d, got %v", code, err)
	}
	if f.op != servertest.OpClose {
		w.fatalf("want a close frame with %d, got %v", code, f)
	}
	switch {
	case code == confEmptyClose:
		if len(f.payload) != 0 {
			w.fatalf("want an empty close frame, got %v", f)
		}
	case len(f.payload) < 2:
		w.fatalf("want close code %d, got a close frame without one: %v", code, f)
	default:
		if got := int(binary.BigEndian.Uint16(f.payload)); got != code {
			w.fatalf("close code %d (%q), want %d", got, f.payload[2:], code)
		}
		if !utf8.Valid(f.payload[2:]) {
			w.fatalf("close reason is not UTF-8: %q", f.payload[2:])
		}
	}
	w.expectEOF()
}

// expectEOF checks that the server closes the TCP connection and sends
// nothing more.
func (w *confConn) expectEOF() {
	w.tb.Helper()
	if rest := w.c.ExpectEOF(w.tb, confReadTimeout); len(rest) > 0 {
		w.fatalf("data after the server's close frame: %q", rest)
	}
}

// confCase is one conformance case: the client's bytes, the frames the
// server must answer with, and how the connection must end.
type confCase struct {
	id    string // Autobahn case(s), or a section of RFC 6455 for cases Autobahn lacks
	what  string
	send  []byte
	want  []confSrv
	close int // confAutoClose, confEmptyClose or the code of the server's close frame
	// wholeOnly: fed whole and octet by octet only (cases whose frames
	// already are the split being tested, such as one-octet fragments).
	wholeOnly bool
	chop      int // also fed in chops of this many bytes
	// tail: the last tail bytes are never cut from the byte before them
	// (bytes that must reach the server with the frame they follow).
	tail int
}

func (c confCase) name() string { return c.id + " " + c.what }

// confFeeds returns the ways to feed c.send: whole (nil), every single
// split point and octet by octet when it is small; the header
// boundaries, the middle, the last byte and a few random multi-cuts
// otherwise; in chops of c.chop bytes when set.
func confFeeds(c confCase) [][]int {
	n := len(c.send)
	feeds := [][]int{nil}
	if c.chop > 0 {
		feeds = append(feeds, confChops(n, c.chop))
	}
	if n < 2 {
		return feeds
	}
	switch {
	case c.wholeOnly:
		if n <= 4*confEverySplitMax {
			feeds = append(feeds, confChops(n, 1))
		}
	case n <= confEverySplitMax:
		for i := 1; i < n; i++ {
			feeds = append(feeds, []int{i})
		}
		feeds = append(feeds, confChops(n, 1))
	default:
		for _, i := range []int{1, 2, 3, 4, 6, 9, 10, 13, 14, n / 2, n - 1} {
			feeds = append(feeds, []int{i})
		}
		rng := mrand.New(mrand.NewPCG(uint64(n), 0xa0)) // seeded: a failure reproduces
		for range 3 {
			cuts := make([]int, 0, 8)
			for range 8 {
				cuts = append(cuts, 1+rng.IntN(n-1))
			}
			feeds = append(feeds, confSorted(cuts))
		}
	}
	return feeds
}

// confChops cuts n bytes every k bytes (Autobahn's "chopsize").
func confChops(n, k int) []int {
	cuts := make([]int, 0, n/k)
	for i := k; i < n; i += k {
		cuts = append(cuts, i)
	}
	return cuts
}

func confSorted(cuts []int) []int {
	for i := 1; i < len(cuts); i++ {
		for j := i; j > 0 && cuts[j] < cuts[j-1]; j-- {
			cuts[j], cuts[j-1] = cuts[j-1], cuts[j]
		}
	}
	return cuts
}

func confDescribe(cuts []int, n int) string {
	switch {
	case cuts == nil:
		return "whole"
	case len(cuts) == n-1 && n > 2:
		return "octet by octet"
	case len(cuts) > 16:
		return fmt.Sprintf("in %d chunks of about %d bytes", len(cuts)+1, n/(len(cuts)+1))
	}
	return fmt.Sprintf("cut at %v of %d", cuts, n)
}

// confRun runs c through every feed of confFeeds. A case whose
// connection survives runs all its feeds on one connection, then closes
// it; any other case opens a connection per feed.
func confRun(t *testing.T, g *gateway, c confCase) {
	t.Helper()
	feeds := confFeeds(c)
	if c.tail > 0 {
		for i, cuts := range feeds {
			keep := cuts[:0:0]
			for _, x := range cuts {
				if x <= len(c.send)-c.tail {
					keep = append(keep, x)
				}
			}
			if cuts != nil {
				feeds[i] = keep
			}
		}
	}
	if c.close == confAutoClose {
		w := confOpen(t, g)
		for _, cuts := range feeds {
			w.feed = confDescribe(cuts, len(c.send))
			w.write(c.send, cuts, false)
			w.expect(c.want...)
		}
		w.feed = "then a normal close"
		w.write(confClose(1000, ""), nil, false)
		w.expectClose(1000)
		return
	}
	for _, cuts := range feeds {
		w := confOpen(t, g)
		w.feed = confDescribe(cuts, len(c.send))
		w.write(c.send, cuts, true)
		w.expect(c.want...)
		w.expectClose(c.close)
		_ = w.c.TCP.Close()
	}
}

// confStep is one step of a scripted case: bytes to send, then the frames
// that must come back before the next step is sent.
type confStep struct {
	send []byte
	want []confSrv
}

// confScript runs scripted steps on one connection, each step's bytes fed
// whole or octet by octet, then expects close (confAutoClose: the client
// closes normally). The steps after a failing one are never sent: that is
// how fail-fast is proved.
func confScript(t *testing.T, g *gateway, steps []confStep, close int, octets bool) {
	t.Helper()
	w := confOpen(t, g)
	for i, s := range steps {
		var cuts []int
		w.feed = fmt.Sprintf("step %d whole", i+1)
		if octets && len(s.send) > 1 {
			cuts = confChops(len(s.send), 1)
			w.feed = fmt.Sprintf("step %d octet by octet", i+1)
		}
		w.write(s.send, cuts, close != confAutoClose)
		w.expect(s.want...)
	}
	w.feed = "end of script"
	if close == confAutoClose {
		w.write(confClose(1000, ""), nil, false)
		close = 1000
	}
	w.expectClose(close)
}
