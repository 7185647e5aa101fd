package wsproto

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/gobwas/ws"
)

// event is a comparable copy of an Event plus the bytes consumed.
type event struct {
	Kind    Kind
	Op      ws.OpCode
	Payload string
	Code    ws.StatusCode
	N       int
}

func (e event) String() string {
	return fmt.Sprintf("{kind %d op %v code %d n %d payload %q}", e.Kind, e.Op, e.Code, e.N, e.Payload)
}

func copyEvent(ev Event, n int) event {
	return event{Kind: ev.Kind, Op: ev.Op, Payload: string(ev.Payload), Code: ev.CloseCode, N: n}
}

// next calls r.Next and checks the invariants every call must keep.
func next(tb testing.TB, r *Reader, buf []byte) (event, int, error) {
	tb.Helper()
	ev, n, err := r.Next(buf)
	if n < 0 || n > len(buf) {
		tb.Fatalf("Next consumed %d of %d bytes", n, len(buf))
	}
	if err == nil && n == 0 && (ev.Kind != KindNone || ev.Payload != nil) {
		tb.Fatalf("Next returned event %+v with n == 0", ev)
	}
	if err != nil && ev.Kind != KindNone {
		tb.Fatalf("Next returned event %+v with error %v", ev, err)
	}
	return copyEvent(ev, n), n, err
}

// readWhole feeds the whole input at once (as one TCP read) and returns the
// events of every call that consumed bytes, and the error that stopped it.
func readWhole(tb testing.TB, maxMsg int, input []byte) ([]event, error) {
	tb.Helper()
	r := &Reader{MaxMessage: maxMsg}
	defer r.Reset()
	buf := bytes.Clone(input) // Next unmasks in place
	var evs []event
	for {
		ev, n, err := next(tb, r, buf)
		if err != nil {
			return evs, err
		}
		if n == 0 {
			return evs, nil
		}
		evs = append(evs, ev)
		buf = buf[n:]
	}
}

// readSplit feeds input to a fresh Reader as a TCP stream cut at the given
// ascending offsets: an accumulating buffer gets the next chunk, Next runs
// until it consumes nothing, and consumed bytes are dropped.
func readSplit(tb testing.TB, maxMsg int, input []byte, cuts []int) ([]event, error) {
	tb.Helper()
	r := &Reader{MaxMessage: maxMsg}
	defer r.Reset()
	var acc []byte
	var evs []event
	prev := 0
	for _, c := range append(slices.Clone(cuts), len(input)) {
		acc = append(acc, input[prev:c]...) // a copy: input is never unmasked
		prev = c
		for {
			ev, n, err := next(tb, r, acc)
			if err != nil {
				return evs, err
			}
			if n == 0 {
				break
			}
			evs = append(evs, ev)
			acc = append(acc[:0], acc[n:]...)
		}
	}
	return evs, nil
}

func randomCuts(rng *rand.Rand, n, maxCuts int) []int {
	if n < 2 {
		return nil
	}
	k := rng.IntN(min(maxCuts, n-1) + 1)
	cuts := make([]int, 0, k)
	for range k {
		cuts = append(cuts, 1+rng.IntN(n-1))
	}
	slices.Sort(cuts)
	return slices.Compact(cuts)
}

func sameResult(tb testing.TB, what string, wantEvs []event, wantErr error, gotEvs []event, gotErr error) {
	tb.Helper()
	if !slices.Equal(gotEvs, wantEvs) || gotErr != wantErr {
		tb.Fatalf("%s:\n got  %v, %v\n want %v, %v", what, gotEvs, gotErr, wantEvs, wantErr)
	}
}

// checkSplits feeds input through every single split point, byte by byte,
// and a few random multi-split patterns, and checks that each yields
// exactly what feeding it whole does. It returns the whole-input result.
func checkSplits(tb testing.TB, maxMsg int, input []byte) ([]event, error) {
	tb.Helper()
	wantEvs, wantErr := readWhole(tb, maxMsg, input)
	if len(input) <= 4096 {
		for i := 1; i < len(input); i++ {
			evs, err := readSplit(tb, maxMsg, input, []int{i})
			sameResult(tb, fmt.Sprintf("split at %d", i), wantEvs, wantErr, evs, err)
		}
		all := make([]int, 0, len(input))
		for i := 1; i < len(input); i++ {
			all = append(all, i)
		}
		evs, err := readSplit(tb, maxMsg, input, all)
		sameResult(tb, "byte by byte", wantEvs, wantErr, evs, err)
	}
	rng := rand.New(rand.NewPCG(uint64(len(input)), 0x5eed))
	for range 32 {
		cuts := randomCuts(rng, len(input), 40)
		evs, err := readSplit(tb, maxMsg, input, cuts)
		sameResult(tb, fmt.Sprintf("cuts %v", cuts), wantEvs, wantErr, evs, err)
	}
	return wantEvs, wantErr
}

// Frame builders for the tables.
func textFrame(tb testing.TB, fin bool, p string) []byte {
	return clientFrame(tb, ws.OpText, fin, []byte(p))
}
func binFrame(tb testing.TB, fin bool, p string) []byte {
	return clientFrame(tb, ws.OpBinary, fin, []byte(p))
}
func contFrame(tb testing.TB, fin bool, p string) []byte {
	return clientFrame(tb, ws.OpContinuation, fin, []byte(p))
}
func pingFrame(tb testing.TB, p string) []byte { return clientFrame(tb, ws.OpPing, true, []byte(p)) }
func pongFrame(tb testing.TB, p string) []byte { return clientFrame(tb, ws.OpPong, true, []byte(p)) }
func closeFrame(tb testing.TB, code ws.StatusCode, reason string) []byte {
	return clientFrame(tb, ws.OpClose, true, ws.NewCloseFrameBody(code, reason))
}

// Expected events (N is checked separately against the frame size).
var fragment = event{}

func msgEv(op ws.OpCode, p string) event { return event{Kind: KindMessage, Op: op, Payload: p} }
func pingEv(p string) event              { return event{Kind: KindPing, Op: ws.OpPing, Payload: p} }
func pongEv(p string) event              { return event{Kind: KindPong, Op: ws.OpPong, Payload: p} }
func closeEv(code ws.StatusCode, reason string) event {
	return event{Kind: KindClose, Op: ws.OpClose, Payload: reason, Code: code}
}

type readerCase struct {
	name     string
	maxMsg   int
	frames   [][]byte
	want     []event // one per frame before the error
	wantErr  error
	errFrame int // index of the frame whose arrival must produce wantErr
}

// runReaderCase delivers the frames one at a time (each alone in the
// buffer), so an error must come on the frame that causes it (fail fast),
// then checks the concatenated stream through every split.
func runReaderCase(t *testing.T, tc readerCase) {
	t.Helper()
	r := &Reader{MaxMessage: tc.maxMsg}
	defer r.Reset()
	var got []event
	for i, f := range tc.frames {
		ev, n, err := next(t, r, bytes.Clone(f))
		if err != nil {
			if tc.wantErr == nil || err != tc.wantErr || i != tc.errFrame {
				t.Fatalf("frame %d: error %v; want error %v on frame %d (events so far %v)", i, err, tc.wantErr, tc.errFrame, got)
			}
			if cr, ok := err.(CloseReason); !ok || cr.Code != tc.wantErr.(CloseReason).Code {
				t.Fatalf("error %#v is not the CloseReason %#v", err, tc.wantErr)
			}
			break
		}
		if n != len(f) {
			t.Fatalf("frame %d: consumed %d of %d bytes", i, n, len(f))
		}
		ev.N = 0
		got = append(got, ev)
		if tc.wantErr != nil && i >= tc.errFrame {
			t.Fatalf("frame %d: no error, want %v on frame %d", i, tc.wantErr, tc.errFrame)
		}
	}
	want := tc.want
	if want == nil {
		want = []event{}
	}
	if got == nil {
		got = []event{}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("events\n got  %v\n want %v", got, want)
	}
	evs, err := checkSplits(t, tc.maxMsg, concat(tc.frames...))
	if err != tc.wantErr || len(evs) != len(want) {
		t.Fatalf("whole stream: %v, %v; want %d events and %v", evs, err, len(want), tc.wantErr)
	}
}

func TestReaderRFC6455(t *testing.T) {
	unmasked := func(op ws.OpCode, p string) []byte {
		return rawFrame(t, ws.Header{Fin: true, OpCode: op}, []byte(p))
	}
	withRsv := func(rsv byte, op ws.OpCode, fin bool, p string) []byte {
		return rawFrame(t, ws.Header{Fin: fin, Rsv: rsv, OpCode: op, Masked: true, Mask: testMask}, []byte(p))
	}
	// A text frame claiming a 64-bit length with the most significant bit set.
	msb := []byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4, 'a', 'b', 'c', 'd', 'e'}
	big := strings.Repeat("b", 65536)
	const smile = "\xf0\x9f\x98\x80" // U+1F600

	tests := []readerCase{
		// §5.1: client frames must be masked.
		{name: "5.1 unmasked text", frames: [][]byte{unmasked(ws.OpText, "hi")}, wantErr: CloseUnmasked},
		{name: "5.1 unmasked ping", frames: [][]byte{unmasked(ws.OpPing, "")}, wantErr: CloseUnmasked},
		{name: "5.1 unmasked after valid", frames: [][]byte{textFrame(t, true, "ok"), unmasked(ws.OpText, "no")},
			want: []event{msgEv(ws.OpText, "ok")}, wantErr: CloseUnmasked, errFrame: 1},

		// §5.2: RSV bits without an extension.
		{name: "5.2 rsv1", frames: [][]byte{withRsv(ws.Rsv(true, false, false), ws.OpText, true, "x")}, wantErr: CloseReservedBits},
		{name: "5.2 rsv2", frames: [][]byte{withRsv(ws.Rsv(false, true, false), ws.OpBinary, true, "x")}, wantErr: CloseReservedBits},
		{name: "5.2 rsv3", frames: [][]byte{withRsv(ws.Rsv(false, false, true), ws.OpPing, true, "x")}, wantErr: CloseReservedBits},
		{name: "5.2 rsv on continuation", frames: [][]byte{textFrame(t, false, "a"), withRsv(ws.Rsv(true, true, true), ws.OpContinuation, true, "b")},
			want: []event{fragment}, wantErr: CloseReservedBits, errFrame: 1},

		// §5.2: payload length.
		{name: "5.2 64-bit length with MSB set", frames: [][]byte{msb}, wantErr: CloseBadLength},
		{name: "5.2 16-bit length", frames: [][]byte{textFrame(t, true, strings.Repeat("t", 126))},
			want: []event{msgEv(ws.OpText, strings.Repeat("t", 126))}},
		{name: "5.2 64-bit length", frames: [][]byte{binFrame(t, true, big)},
			want: []event{msgEv(ws.OpBinary, big)}},

		// §5.4: fragmentation.
		{name: "5.4 continuation with nothing started", frames: [][]byte{contFrame(t, true, "x")}, wantErr: CloseBadContinue},
		{name: "5.4 continuation after a whole message", frames: [][]byte{textFrame(t, true, "a"), contFrame(t, true, "b")},
			want: []event{msgEv(ws.OpText, "a")}, wantErr: CloseBadContinue, errFrame: 1},
		{name: "5.4 text inside a fragmented message", frames: [][]byte{textFrame(t, false, "a"), textFrame(t, true, "b")},
			want: []event{fragment}, wantErr: CloseBadFragment, errFrame: 1},
		{name: "5.4 binary inside a fragmented text", frames: [][]byte{textFrame(t, false, "a"), binFrame(t, false, "b")},
			want: []event{fragment}, wantErr: CloseBadFragment, errFrame: 1},
		{name: "5.4 text fragments with control frames interleaved",
			frames: [][]byte{textFrame(t, false, "Hel"), pingFrame(t, "p1"), contFrame(t, false, "lo "), pongFrame(t, ""), contFrame(t, true, "world")},
			want:   []event{fragment, pingEv("p1"), fragment, pongEv(""), msgEv(ws.OpText, "Hello world")}},
		{name: "5.4 close inside a fragmented message",
			frames: [][]byte{textFrame(t, false, "a"), closeFrame(t, ws.StatusNormalClosure, "")},
			want:   []event{fragment, closeEv(ws.StatusNormalClosure, "")}},
		{name: "5.4 messages after a fragmented one",
			frames: [][]byte{textFrame(t, false, "ab"), contFrame(t, true, "cd"), textFrame(t, true, "ef"), binFrame(t, false, "\xff"), contFrame(t, false, ""), contFrame(t, true, "\x00")},
			want:   []event{fragment, msgEv(ws.OpText, "abcd"), msgEv(ws.OpText, "ef"), fragment, fragment, msgEv(ws.OpBinary, "\xff\x00")}},
		{name: "5.4 empty fragments", frames: [][]byte{textFrame(t, false, ""), contFrame(t, false, ""), contFrame(t, true, "")},
			want: []event{fragment, fragment, msgEv(ws.OpText, "")}},
		{name: "5.4 empty text", frames: [][]byte{textFrame(t, true, "")}, want: []event{msgEv(ws.OpText, "")}},

		// §5.5: control frames.
		{name: "5.5 ping 125 bytes", frames: [][]byte{pingFrame(t, strings.Repeat("p", 125))}, want: []event{pingEv(strings.Repeat("p", 125))}},
		{name: "5.5 ping 126 bytes", frames: [][]byte{pingFrame(t, strings.Repeat("p", 126))}, wantErr: CloseBadControl},
		{name: "5.5 pong 126 bytes", frames: [][]byte{pongFrame(t, strings.Repeat("p", 126))}, wantErr: CloseBadControl},
		{name: "5.5 close 126 bytes", frames: [][]byte{clientFrame(t, ws.OpClose, true, append([]byte{3, 0xe8}, strings.Repeat("c", 124)...))}, wantErr: CloseBadControl},
		{name: "5.5 fragmented ping", frames: [][]byte{clientFrame(t, ws.OpPing, false, []byte("p"))}, wantErr: CloseBadControl},
		{name: "5.5 fragmented pong", frames: [][]byte{clientFrame(t, ws.OpPong, false, nil)}, wantErr: CloseBadControl},
		{name: "5.5 fragmented close", frames: [][]byte{clientFrame(t, ws.OpClose, false, nil)}, wantErr: CloseBadControl},

		// §5.5.1: close.
		{name: "5.5.1 empty close", frames: [][]byte{clientFrame(t, ws.OpClose, true, nil)}, want: []event{closeEv(ws.StatusNoStatusRcvd, "")}},
		{name: "5.5.1 close with 1-byte payload", frames: [][]byte{clientFrame(t, ws.OpClose, true, []byte{3})}, wantErr: CloseBadCloseCode},
		{name: "5.5.1 close with reason", frames: [][]byte{closeFrame(t, ws.StatusGoingAway, "bye "+smile)},
			want: []event{closeEv(ws.StatusGoingAway, "bye "+smile)}},
		{name: "5.5.1 close reason invalid UTF-8", frames: [][]byte{closeFrame(t, ws.StatusNormalClosure, "a\xff")}, wantErr: CloseBadUTF8},
		{name: "5.5.1 close reason truncated code point", frames: [][]byte{closeFrame(t, ws.StatusNormalClosure, "a\xf0\x9f")}, wantErr: CloseBadUTF8},

		// §5.6 / §8.1: UTF-8 in text messages.
		{name: "8.1 invalid UTF-8 text", frames: [][]byte{textFrame(t, true, "a\xffb")}, wantErr: CloseBadUTF8},
		{name: "8.1 overlong", frames: [][]byte{textFrame(t, true, "\xc0\xaf")}, wantErr: CloseBadUTF8},
		{name: "8.1 surrogate", frames: [][]byte{textFrame(t, true, "\xed\xa0\x80")}, wantErr: CloseBadUTF8},
		{name: "8.1 above U+10FFFF", frames: [][]byte{textFrame(t, true, "\xf4\x90\x80\x80")}, wantErr: CloseBadUTF8},
		{name: "8.1 text ends mid code point", frames: [][]byte{textFrame(t, true, "a\xe2\x82")}, wantErr: CloseBadUTF8},
		{name: "8.1 code point split 1/3", frames: [][]byte{textFrame(t, false, "a"+smile[:1]), contFrame(t, true, smile[1:]+"b")},
			want: []event{fragment, msgEv(ws.OpText, "a"+smile+"b")}},
		{name: "8.1 code point split 2/2", frames: [][]byte{textFrame(t, false, smile[:2]), contFrame(t, true, smile[2:])},
			want: []event{fragment, msgEv(ws.OpText, smile)}},
		{name: "8.1 code point split 3/1", frames: [][]byte{textFrame(t, false, smile[:3]), contFrame(t, true, smile[3:])},
			want: []event{fragment, msgEv(ws.OpText, smile)}},
		{name: "8.1 code point split 1/1/1/1 with a ping",
			frames: [][]byte{textFrame(t, false, smile[:1]), contFrame(t, false, smile[1:2]), pingFrame(t, ""), contFrame(t, false, smile[2:3]), contFrame(t, true, smile[3:])},
			want:   []event{fragment, fragment, pingEv(""), fragment, msgEv(ws.OpText, smile)}},
		{name: "8.1 invalid byte in first fragment fails fast", frames: [][]byte{textFrame(t, false, "ok\xff"), contFrame(t, true, "rest")},
			want: []event{}, wantErr: CloseBadUTF8, errFrame: 0},
		{name: "8.1 bad continuation inside first fragment", frames: [][]byte{textFrame(t, false, "\xf0\x28"), contFrame(t, true, "\x8c\x28")},
			wantErr: CloseBadUTF8, errFrame: 0},
		{name: "8.1 bad E0 second byte in first fragment", frames: [][]byte{textFrame(t, false, "\xe0\x80"), contFrame(t, true, "\x80")},
			wantErr: CloseBadUTF8, errFrame: 0},
		{name: "8.1 surrogate prefix in first fragment", frames: [][]byte{textFrame(t, false, "\xed\xa0"), contFrame(t, true, "\x80")},
			wantErr: CloseBadUTF8, errFrame: 0},
		{name: "8.1 F4 90 in first fragment", frames: [][]byte{textFrame(t, false, "\xf4\x90"), contFrame(t, true, "\x80\x80")},
			wantErr: CloseBadUTF8, errFrame: 0},
		{name: "8.1 bad byte in second fragment", frames: [][]byte{textFrame(t, false, smile[:2]), contFrame(t, false, "\x28"), contFrame(t, true, "x")},
			want: []event{fragment}, wantErr: CloseBadUTF8, errFrame: 1},
		{name: "8.1 message ends mid code point", frames: [][]byte{textFrame(t, false, "a"), contFrame(t, true, smile[:3])},
			want: []event{fragment}, wantErr: CloseBadUTF8, errFrame: 1},
		{name: "8.1 binary is not validated", frames: [][]byte{binFrame(t, true, "\xff\xfe\xc0")},
			want: []event{msgEv(ws.OpBinary, "\xff\xfe\xc0")}},
		{name: "8.1 fragmented binary is not validated", frames: [][]byte{binFrame(t, false, "\xf0\x9f"), contFrame(t, true, "\x28")},
			want: []event{fragment, msgEv(ws.OpBinary, "\xf0\x9f\x28")}},

		// MaxMessage.
		{name: "max single frame at limit", maxMsg: 10, frames: [][]byte{textFrame(t, true, "0123456789")},
			want: []event{msgEv(ws.OpText, "0123456789")}},
		{name: "max single frame over limit", maxMsg: 10, frames: [][]byte{textFrame(t, true, "0123456789a")}, wantErr: CloseTooBig},
		{name: "max binary over limit", maxMsg: 10, frames: [][]byte{binFrame(t, true, "0123456789a")}, wantErr: CloseTooBig},
		{name: "max fragments at limit", maxMsg: 10, frames: [][]byte{textFrame(t, false, "012345"), contFrame(t, true, "6789")},
			want: []event{fragment, msgEv(ws.OpText, "0123456789")}},
		{name: "max fragments crossing", maxMsg: 10, frames: [][]byte{textFrame(t, false, "012345"), contFrame(t, true, "6789a")},
			want: []event{fragment}, wantErr: CloseTooBig, errFrame: 1},
		{name: "max third fragment crossing", maxMsg: 10, frames: [][]byte{binFrame(t, false, "0123"), contFrame(t, false, "456"), contFrame(t, true, "789a")},
			want: []event{fragment, fragment}, wantErr: CloseTooBig, errFrame: 2},
		{name: "max control frames do not count", maxMsg: 10,
			frames: [][]byte{textFrame(t, false, "012345"), pingFrame(t, strings.Repeat("p", 125)), contFrame(t, true, "6789")},
			want:   []event{fragment, pingEv(strings.Repeat("p", 125)), msgEv(ws.OpText, "0123456789")}},
		{name: "max budget resets per message", maxMsg: 10,
			frames: [][]byte{textFrame(t, false, "01234"), contFrame(t, true, "56789"), textFrame(t, false, "01234"), contFrame(t, true, "56789")},
			want:   []event{fragment, msgEv(ws.OpText, "0123456789"), fragment, msgEv(ws.OpText, "0123456789")}},
	}

	// §5.2: reserved opcodes.
	for _, op := range []ws.OpCode{3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf} {
		tests = append(tests, readerCase{
			name:    fmt.Sprintf("5.2 reserved opcode %#x", byte(op)),
			frames:  [][]byte{clientFrame(t, op, true, []byte("x"))},
			wantErr: CloseBadOpcode,
		})
	}
	// §7.4: close codes a peer may and may not send.
	for _, code := range []ws.StatusCode{999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 0, 65535} {
		tests = append(tests, readerCase{
			name:    fmt.Sprintf("7.4 close code %d refused", code),
			frames:  [][]byte{closeFrame(t, code, "")},
			wantErr: CloseBadCloseCode,
		})
	}
	for _, code := range []ws.StatusCode{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4000, 4999} {
		tests = append(tests, readerCase{
			name:   fmt.Sprintf("7.4 close code %d accepted", code),
			frames: [][]byte{closeFrame(t, code, "r")},
			want:   []event{closeEv(code, "r")},
		})
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { runReaderCase(t, tc) })
	}
}

func TestReaderTooBigOnHeader(t *testing.T) {
	tests := []struct {
		name   string
		maxMsg int
		frame  []byte
	}{
		{"7-bit length", 10, textFrame(t, true, "0123456789a")},
		{"16-bit length", 200, binFrame(t, true, strings.Repeat("x", 201))},
		{"64-bit length", 65535, textFrame(t, true, strings.Repeat("x", 65536))},
		{"64-bit huge", 1 << 20, []byte{0x82, 0xff, 0, 0, 1, 0, 0, 0, 0, 0, 1, 2, 3, 4}},
		{"continuation crossing", 10, contFrame(t, true, "6789a")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Reader{MaxMessage: tt.maxMsg}
			defer r.Reset()
			if tt.frame[0]&0x0f == byte(ws.OpContinuation) {
				// Start a fragmented message of 6 bytes first.
				f := textFrame(t, false, "012345")
				if _, n, err := next(t, r, f); n != len(f) || err != nil {
					t.Fatalf("first fragment: %d, %v", n, err)
				}
			}
			hl := 2 + 4
			switch tt.frame[1] & 0x7f {
			case 126:
				hl += 2
			case 127:
				hl += 8
			}
			// Only the header (mask key included) has arrived.
			_, n, err := next(t, r, bytes.Clone(tt.frame[:hl]))
			if err != CloseTooBig || n != 0 {
				t.Fatalf("header only: n %d err %v, want CloseTooBig", n, err)
			}
		})
	}
}

// An unlimited Reader (MaxMessage 0) must not overflow int computing the
// end of a frame whose declared length is close to 2^63.
func TestReaderUnlimitedHugeLength(t *testing.T) {
	for _, length := range []uint64{1<<63 - 1, 1<<63 - 14, 1<<63 - 15, 1 << 62} {
		t.Run(fmt.Sprint(length), func(t *testing.T) {
			hdr := []byte{0x82, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 'x'}
			binary.BigEndian.PutUint64(hdr[2:10], length)
			var r Reader
			_, n, err := next(t, &r, hdr)
			if n != 0 || (err != nil && err != CloseTooBig) {
				t.Fatalf("n %d err %v; want to wait for more or CloseTooBig", n, err)
			}
		})
	}
}

func TestReaderUnmasksInPlace(t *testing.T) {
	f := textFrame(t, true, "hello")
	var r Reader
	ev, n, err := r.Next(f)
	if err != nil || n != len(f) || string(ev.Payload) != "hello" {
		t.Fatalf("Next = %+v %d %v", ev, n, err)
	}
	if &ev.Payload[0] != &f[6] {
		t.Fatal("a single-frame message should alias the caller's buffer, not be copied")
	}
}

func TestReaderReset(t *testing.T) {
	var r Reader
	if _, _, err := r.Next(textFrame(t, false, "a\xf0")); err != nil {
		t.Fatalf("before Reset: %v", err)
	}
	r.Reset()
	// After Reset the partial message (and its UTF-8 state) is gone.
	f := textFrame(t, true, "fresh")
	ev, n, err := r.Next(f)
	if err != nil || n != len(f) || ev.Kind != KindMessage || string(ev.Payload) != "fresh" {
		t.Fatalf("after Reset: %+v %d %v", ev, n, err)
	}
	if _, _, err := r.Next(contFrame(t, true, "x")); err != CloseBadContinue {
		t.Fatalf("continuation after Reset: %v, want CloseBadContinue", err)
	}
}

// splitStream is a stream of many frame shapes for the split tests.
func splitStream(tb testing.TB) []byte {
	const smile = "\xf0\x9f\x98\x80"
	return concat(
		textFrame(tb, true, "hello"),
		textFrame(tb, false, "a"+smile[:2]),
		pingFrame(tb, "p"),
		contFrame(tb, false, smile[2:]),
		contFrame(tb, true, "z"),
		binFrame(tb, true, strings.Repeat("\xab", 300)),
		pongFrame(tb, ""),
		textFrame(tb, true, ""),
		binFrame(tb, false, "\x00\x01"),
		contFrame(tb, true, strings.Repeat("q", 130)),
		closeFrame(tb, ws.StatusNormalClosure, "bye"),
	)
}

func TestReaderSplits(t *testing.T) {
	tests := []struct {
		name    string
		maxMsg  int
		input   []byte
		wantN   int // events
		wantErr error
	}{
		{"mixed stream", 0, splitStream(t), 11, nil},
		{"mixed stream with limit", 1 << 10, splitStream(t), 11, nil},
		{"mixed stream over limit", 200, splitStream(t), 5, CloseTooBig},
		{"stream then bad utf8", 0, concat(splitStream(t), textFrame(t, false, "ok"), contFrame(t, true, "\xff")), 12, CloseBadUTF8},
		{"stream then unmasked", 0, concat(splitStream(t), rawFrame(t, ws.Header{Fin: true, OpCode: ws.OpText}, []byte("x"))), 11, CloseUnmasked},
		{"stream then trailing partial frame", 0, concat(splitStream(t), textFrame(t, true, "partial")[:5]), 11, nil},
		{"64-bit frames", 0, concat(textFrame(t, true, "a"), binFrame(t, true, strings.Repeat("B", 70000)), textFrame(t, false, "x"), contFrame(t, true, strings.Repeat("y", 65536))), 4, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, err := checkSplits(t, tt.maxMsg, tt.input)
			if len(evs) != tt.wantN || err != tt.wantErr {
				t.Fatalf("%d events, %v; want %d, %v: %v", len(evs), err, tt.wantN, tt.wantErr, evs)
			}
		})
	}
}

func FuzzReader(f *testing.F) {
	f.Add(splitStream(f), uint64(1), uint16(0))
	f.Add(splitStream(f), uint64(7), uint16(64))
	zero := [4]byte{}
	z := func(h ws.Header, p string) []byte {
		h.Masked, h.Mask = true, zero
		return rawFrame(f, h, []byte(p))
	}
	// Zero mask keys let mutations of the payload reach the validators
	// unchanged.
	f.Add(concat(
		z(ws.Header{OpCode: ws.OpText}, "a\xf0\x9f"),
		z(ws.Header{Fin: true, OpCode: ws.OpPing}, "p"),
		z(ws.Header{Fin: true, OpCode: ws.OpContinuation}, "\x98\x80"),
		z(ws.Header{Fin: true, OpCode: ws.OpClose}, "\x03\xe8ok"),
	), uint64(3), uint16(0))
	f.Add(z(ws.Header{Fin: true, OpCode: ws.OpText}, strings.Repeat("x", 200)), uint64(4), uint16(100))
	f.Add([]byte{0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}, uint64(5), uint16(0))
	f.Add([]byte{0x81, 0x80}, uint64(6), uint16(1))
	f.Fuzz(func(t *testing.T, data []byte, seed uint64, maxMsg uint16) {
		wantEvs, wantErr := readWhole(t, int(maxMsg), data)
		rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
		for range 4 {
			cuts := randomCuts(rng, len(data), 16)
			evs, err := readSplit(t, int(maxMsg), data, cuts)
			sameResult(t, fmt.Sprintf("cuts %v", cuts), wantEvs, wantErr, evs, err)
		}
		if len(data) <= 512 {
			all := make([]int, 0, len(data))
			for i := 1; i < len(data); i++ {
				all = append(all, i)
			}
			evs, err := readSplit(t, int(maxMsg), data, all)
			sameResult(t, "byte by byte", wantEvs, wantErr, evs, err)
		}
	})
}

func TestReaderNextAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items on purpose under -race")
	}
	single := textFrame(t, true, jsonPayload(100))
	frags := concat(textFrame(t, false, "{\"a\":"), pingFrame(t, "x"), contFrame(t, true, "1}"))
	tests := []struct {
		name  string
		input []byte
	}{
		{"single frame text", single},
		{"fragmented text with ping", frags},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Reader
			buf := make([]byte, len(tt.input))
			run := func() {
				copy(buf, tt.input)
				for b := buf; len(b) > 0; {
					_, n, err := r.Next(b)
					if err != nil || n == 0 {
						t.Fatalf("n %d err %v", n, err)
					}
					b = b[n:]
				}
			}
			for range 10 {
				run()
			}
			if allocs := testing.AllocsPerRun(1000, run); allocs != 0 {
				t.Fatalf("Reader.Next allocates %v times per message in steady state, want 0", allocs)
			}
		})
	}
}
