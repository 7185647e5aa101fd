package wsproto

import (
	"bytes"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// TestHeaderLengths: putHeader writes the shortest length encoding
// (RFC 6455 §5.2) that gobwas/ws reads back.
func TestHeaderLengths(t *testing.T) {
	tests := []struct {
		n      int
		wantHL int
	}{
		{0, 2}, {125, 2}, {126, 4}, {65535, 4}, {65536, 10}, {1 << 20, 10},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.n), func(t *testing.T) {
			var buf [ws.MaxHeaderSize]byte
			hdr := buf[:putHeader(buf[:], ws.OpText, tt.n)]
			if len(hdr) != tt.wantHL {
				t.Fatalf("header is %d bytes, want %d", len(hdr), tt.wantHL)
			}
			h, err := ws.ReadHeader(bytes.NewReader(hdr))
			if err != nil {
				t.Fatal(err)
			}
			if !h.Fin || h.Masked || h.Rsv != 0 || h.OpCode != ws.OpText || h.Length != int64(tt.n) {
				t.Fatalf("header %+v, want FIN text unmasked length %d", h, tt.n)
			}
		})
	}
}

func TestAppendControlTruncation(t *testing.T) {
	tests := []struct {
		name    string
		op      ws.OpCode
		payload []byte
		want    []byte
	}{
		{"empty ping", ws.OpPing, nil, nil},
		{"pong 125", ws.OpPong, bytes.Repeat([]byte{'a'}, 125), bytes.Repeat([]byte{'a'}, 125)},
		{"ping 126 truncated", ws.OpPing, bytes.Repeat([]byte{'b'}, 126), bytes.Repeat([]byte{'b'}, 125)},
		{"pong 1000 truncated", ws.OpPong, bytes.Repeat([]byte{'c'}, 1000), bytes.Repeat([]byte{'c'}, 125)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := AppendControl([]byte{0xAA}, tt.op, tt.payload)
			if out[0] != 0xAA {
				t.Fatal("dst prefix clobbered")
			}
			h, hl, p := readServerFrame(t, out[1:])
			if h.OpCode != tt.op || hl != 2 || !bytes.Equal(p, tt.want) {
				t.Fatalf("got op %v hl %d payload %d bytes, want op %v hl 2 payload %d bytes", h.OpCode, hl, len(p), tt.op, len(tt.want))
			}
		})
	}
}

func TestAppendClose(t *testing.T) {
	tests := []struct {
		name       string
		code       ws.StatusCode
		reason     string
		wantReason string
	}{
		{"no reason", ws.StatusNormalClosure, "", ""},
		{"short", ws.StatusGoingAway, "bye", "bye"},
		{"exactly 123", ws.StatusPolicyViolation, strings.Repeat("r", 123), strings.Repeat("r", 123)},
		{"124 truncated", ws.StatusPolicyViolation, strings.Repeat("r", 124), strings.Repeat("r", 123)},
		{"500 truncated", ws.StatusMessageTooBig, strings.Repeat("s", 500), strings.Repeat("s", 123)},
		// A cut through a multi-byte code point must not leave invalid
		// UTF-8: the peer would fail the connection with 1007.
		{"cut in code point", StatusTryAgainLater, strings.Repeat("a", 122) + "é", strings.Repeat("a", 122)},
		{"cut in 4-byte code point", StatusTryAgainLater, strings.Repeat("a", 121) + "😀", strings.Repeat("a", 121)},
		{"code point fits", StatusTryAgainLater, strings.Repeat("a", 121) + "é", strings.Repeat("a", 121) + "é"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := AppendClose([]byte("x"), tt.code, tt.reason)
			if out[0] != 'x' {
				t.Fatal("dst prefix clobbered")
			}
			h, _, p := readServerFrame(t, out[1:])
			if h.OpCode != ws.OpClose {
				t.Fatalf("op %v, want close", h.OpCode)
			}
			if len(p) > 125 {
				t.Fatalf("close payload %d bytes > 125", len(p))
			}
			code, reason := ws.ParseCloseFrameData(p)
			if code != tt.code || reason != tt.wantReason {
				t.Fatalf("got %d %q, want %d %q", code, reason, tt.code, tt.wantReason)
			}
			if !utf8.ValidString(reason) {
				t.Fatalf("reason is not valid UTF-8: %q", reason)
			}
		})
	}
}

func TestAppendCloseReasonsAreValid(t *testing.T) {
	for _, cr := range []CloseReason{
		CloseNormal, CloseGoingAway, CloseProtocol, CloseUnmasked, CloseReservedBits,
		CloseBadOpcode, CloseBadControl, CloseBadContinue, CloseBadFragment,
		CloseBadCloseCode, CloseBadLength, CloseBadUTF8, CloseBinary, ClosePolicy,
		CloseRateLimited, CloseTokenExpired, CloseTooBig, CloseSlowConsumer, CloseIdle,
		CloseInternalError,
	} {
		t.Run(cr.Text, func(t *testing.T) {
			if !ValidCloseCode(cr.Code) {
				t.Fatalf("close code %d may not be sent", cr.Code)
			}
			// The gateway's own close frames must pass its own reader.
			in := AppendClose(nil, cr.Code, cr.Text)
			in = maskServerFrame(t, in)
			var r Reader
			ev, n, err := r.Next(in)
			if err != nil || n != len(in) || ev.Kind != KindClose || ev.CloseCode != cr.Code || string(ev.Payload) != cr.Text {
				t.Fatalf("Next = %+v, %d, %v", ev, n, err)
			}
		})
	}
}

// maskServerFrame turns a server frame into the equivalent client frame.
func maskServerFrame(tb testing.TB, b []byte) []byte {
	tb.Helper()
	h, _, p := readServerFrame(tb, b)
	h.Masked = true
	h.Mask = testMask
	return rawFrame(tb, h, p)
}

func TestFrameRefcount(t *testing.T) {
	now := time.Now()
	t.Run("retain release", func(t *testing.T) {
		f := NewPong(nil, now)
		want := bytes.Clone(f.Bytes())
		f.Retain(2)
		f.Release()
		f.Release()
		if !bytes.Equal(f.Bytes(), want) {
			t.Fatal("frame bytes changed while a reference was held")
		}
		f.Release()
	})
	t.Run("release past zero panics", func(t *testing.T) {
		f := NewPong(nil, now)
		f.Retain(1)
		f.Release()
		f.Release()
		mustPanic(t, "third Release of a frame with two references", f.Release)
	})
	t.Run("single reference", func(t *testing.T) {
		f := NewPong(nil, now)
		f.Release()
		mustPanic(t, "second Release", f.Release)
	})
	t.Run("concurrent", func(t *testing.T) {
		const holders = 64
		f := BuildData(1, "ch", "", `{"a":1}`, now)
		want := bytes.Clone(f.Bytes())
		f.Retain(holders)
		var wg sync.WaitGroup
		for range holders {
			wg.Go(func() {
				if !bytes.Equal(f.Bytes(), want) {
					t.Error("frame bytes changed while a reference was held")
				}
				f.Release()
			})
		}
		wg.Wait()
		if !bytes.Equal(f.Bytes(), want) {
			t.Fatal("frame bytes changed while the builder's reference was held")
		}
		f.Release()
	})
}
