package servertest

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestWaitFor(t *testing.T) {
	n := 0
	WaitFor(t, time.Second, "three polls", func() bool { n++; return n == 3 })
	msg := CatchFatal(t, func(tb testing.TB) {
		WaitFor(tb, 20*time.Millisecond, "godot", func() bool { return false })
	})
	if msg != "timed out after 20ms waiting for godot" {
		t.Fatalf("WaitFor failure message = %q", msg)
	}
	if msg := CatchFatal(t, func(testing.TB) {}); msg != "" {
		t.Fatalf("CatchFatal of a helper that passes = %q", msg)
	}
}

func TestLogRecorder(t *testing.T) {
	var r LogRecorder
	log := r.Logger().With("conn", 7).WithGroup("g")
	log.Debug("opened", "remote", "127.0.0.1:1", slog.Group("tok", "len", 3))
	r.Logger().Info("closed", "reason", "peer closed")
	want := []string{"opened conn=7 g.remote=127.0.0.1:1 g.tok.len=3", "closed reason=peer closed"}
	if got := r.Lines(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("lines %q, want %q", got, want)
	}
	if l, ok := r.Find("closed", "peer"); !ok || l != want[1] {
		t.Fatalf("Find = %q, %v", l, ok)
	}
	if _, ok := r.Find("closed", "nope"); ok {
		t.Fatal("Find matched a line without the substring")
	}
	if r.String() != want[0]+"\n"+want[1]+"\n" {
		t.Fatalf("String = %q", r.String())
	}
}

func TestSignAndClaims(t *testing.T) {
	now := time.Now()
	c := Claims("admin", now, map[string]any{"iss": "x"}, map[string]any{"sub": nil})
	if c["role"] != "admin" || c["iss"] != "x" || c["exp"] != now.Add(time.Hour).Unix() {
		t.Fatalf("claims %v", c)
	}
	if _, ok := c["sub"]; ok {
		t.Fatalf("a nil override kept sub: %v", c)
	}
	tok := Sign(t, jwt.SigningMethodEdDSA, EdKey(), c)
	parsed, err := jwt.Parse(tok, func(*jwt.Token) (any, error) { return EdKey().Public(), nil })
	if err != nil || !parsed.Valid {
		t.Fatalf("token does not verify: %v", err)
	}
	if p := PublicPEM(t, EdKey().Public()); !strings.HasPrefix(string(p), "-----BEGIN PUBLIC KEY-----") {
		t.Fatalf("PublicPEM = %q", p)
	}
}

// TestConnFrames runs Conn against a peer written here: an upgrade, a
// masked frame the peer unmasks, and the peer's frames read back.
func TestConnFrames(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			return
		}
		defer s.Close()
		br := bufio.NewReader(s)
		req, err := http.ReadRequest(br)
		if err != nil {
			got <- nil
			return
		}
		_, _ = fmt.Fprintf(s, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
			accept(req.Header.Get("Sec-WebSocket-Key")))
		frame := make([]byte, 2+4+5)
		_, _ = io.ReadFull(br, frame)
		got <- frame
		_, _ = s.Write([]byte{0x81, 2, 'h', 'i', 0x88, 2, 0x03, 0xe8})
	}()
	c := Upgrade(t, ln.Addr().String())
	c.SendText(t, "hello")
	frame := <-got
	if len(frame) != 2+4+5 || frame[0] != 0x81 || frame[1] != 0x80|5 {
		t.Fatalf("frame header % x", frame)
	}
	for i := range 5 {
		frame[6+i] ^= frame[2+i%4]
	}
	if string(frame[6:]) != "hello" {
		t.Fatalf("unmasked payload %q", frame[6:])
	}
	c.ExpectText(t, "hi")
	if texts := c.ExpectClose(t, 1000); len(texts) != 0 {
		t.Fatalf("texts before the close: %q", texts)
	}
}

func TestFrameLengths(t *testing.T) {
	for _, n := range []int{0, 125, 126, 0xffff, 0x10000} {
		f := Frame(0x82, make([]byte, n), true)
		var hdr int
		switch {
		case n <= 125:
			hdr = 2
		case n <= 0xffff:
			hdr = 4
		default:
			hdr = 10
		}
		if len(f) != hdr+n {
			t.Errorf("unmasked frame of %d bytes is %d long, want %d", n, len(f), hdr+n)
		}
		if m := Frame(0x82, make([]byte, n), false); len(m) != hdr+4+n || m[1]&0x80 == 0 {
			t.Errorf("masked frame of %d bytes: %d long, mask bit %v", n, len(m), m[1]&0x80 != 0)
		}
	}
	if CloseCode(ClosePayload(1013, "x")) != 1013 || CloseCode(nil) != 1005 {
		t.Fatal("ClosePayload/CloseCode do not round-trip")
	}
}
