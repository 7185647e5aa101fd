package server_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/wsgw/gateway/server"
	"github.com/wsgw/gateway/server/servertest"
)

// RFC 6455 conformance of the framing layer, against the /echo
// endpoint, which shares the gateway's Reader, buffering and close code.
// The cases follow the Autobahn testsuite's fuzzingclient case list
// (their numbers are in each case's name) plus a few RFC requirements
// Autobahn does not exercise; docs/CONFORMANCE.md maps them to RFC
// sections. Each stream is fed whole, through every split point and octet
// by octet (a few cuts for large ones), each chunk in a read of its own on
// the server (see confConn.drained).

// The messages Autobahn uses.
const (
	confHello   = "Hello, world!"
	confKosme   = "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5" // κόσμε
	confBadUTF8 = confKosme + "\xed\xa0\x80" + "edited"          // a UTF-16 surrogate in the middle (6.3.1)
)

func TestConformance(t *testing.T) {
	g := startEcho(t)
	sections := []struct {
		name  string
		cases []confCase
	}{
		{"1 framing", confFraming()},
		{"2 pings and pongs", confPingPong()},
		{"3 reserved bits", confReservedBits()},
		{"4 opcodes", confOpcodes()},
		{"5 fragmentation", confFragmentation()},
		{"6 UTF-8", confUTF8()},
		{"7 close", confCloseCases()},
		{"10 auto-fragmentation", confAutoFragmentation()},
	}
	for _, sec := range sections {
		t.Run(sec.name, func(t *testing.T) {
			for _, c := range sec.cases {
				t.Run(c.name(), func(t *testing.T) {
					t.Parallel()
					confRun(t, g, c)
				})
			}
		})
	}
}

// confFraming: Autobahn 1.*, RFC 6455 §5.2 (payload length encodings at
// their boundaries), §5.6 (text and binary), §5.1 (client masking).
func confFraming() []confCase {
	var cs []confCase
	kinds := []struct {
		id, name string
		op       byte
		payload  func(int) []byte
	}{
		{"1.1", "text", servertest.OpText, func(n int) []byte { return bytes.Repeat([]byte("*"), n) }},
		{"1.2", "binary", servertest.OpBinary, func(n int) []byte { return bytes.Repeat([]byte{0xfe}, n) }},
	}
	for _, k := range kinds {
		for i, n := range []int{0, 125, 126, 127, 128, 65535, 65536} {
			p := k.payload(n)
			cs = append(cs, confCase{
				id: fmt.Sprintf("%s.%d", k.id, i+1), what: fmt.Sprintf("%s of %d bytes", k.name, n),
				send: servertest.DataFrame(k.op, true, 0, p), want: []confSrv{{k.op, p}},
			})
		}
		p := k.payload(65536)
		cs = append(cs, confCase{
			id: k.id + ".8", what: k.name + " of 65536 bytes in chops of 997",
			send: servertest.DataFrame(k.op, true, 0, p), want: []confSrv{{k.op, p}}, chop: 997,
		})
	}
	mixed := confTextPayload(70000)
	cs = append(cs,
		confCase{id: "§5.6", what: "text and binary back to back in one write",
			send: confCat(confText("a"), confBin([]byte{0, 1, 2}), confText(confKosme), confBin(nil)),
			want: []confSrv{confWantText("a"), confWantBin([]byte{0, 1, 2}), confWantText(confKosme), confWantBin([]byte{})}},
		confCase{id: "§5.6", what: "multi-byte text of 70000 bytes",
			send: servertest.DataFrame(servertest.OpText, true, 0, mixed), want: []confSrv{{servertest.OpText, mixed}}},
		confCase{id: "§5.1", what: "unmasked client frame",
			send: []byte{0x81, 0x05, 'h', 'e', 'l', 'l', 'o'}, close: 1002},
		confCase{id: "§5.1", what: "unmasked frame after a valid one",
			send: confCat(confText(confHello), []byte{0x82, 0x01, 0xff}), want: []confSrv{confWantText(confHello)}, close: 1002},
		// The bad frame is never cut (tail): its rest, arriving after
		// the server failed the connection on its first two bytes,
		// would draw a TCP reset that can discard the end of the
		// 100 KiB echo (no lingering close; see 7.1.6).
		confCase{id: "§5.2", what: "100 KiB frame, then a reserved opcode in the same stream",
			send: confCat(confBin(confBinPayload(100<<10)), servertest.DataFrame(3, true, 0, nil)), want: []confSrv{confWantBin(confBinPayload(100 << 10))}, close: 1002, tail: 6},
		confCase{id: "§5.2", what: "64-bit length with the most significant bit set",
			send: []byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4}, close: 1002},
	)
	return cs
}

// confPingPong: Autobahn 2.*, RFC 6455 §5.5 (control frames), §5.5.2
// (ping), §5.5.3 (pong).
func confPingPong() []confCase {
	bin := "\x00\xff\xfe\xfd\xfc\xfb\x00\xff"
	p125, p126 := strings.Repeat("\xfe", 125), strings.Repeat("\xfe", 126)
	var ten []byte
	var tenPongs []confSrv
	for i := range 10 {
		p := fmt.Sprintf("payload-%d", i)
		ten = append(ten, confPing(p)...)
		tenPongs = append(tenPongs, confWantPong(p))
	}
	return []confCase{
		{id: "2.1", what: "ping without payload", send: confPing(""), want: []confSrv{confWantPong("")}},
		{id: "2.2", what: "ping with text payload", send: confPing(confHello), want: []confSrv{confWantPong(confHello)}},
		{id: "2.3", what: "ping with binary payload", send: confPing(bin), want: []confSrv{confWantPong(bin)}},
		{id: "2.4, 2.6", what: "ping with 125-byte payload", send: confPing(p125), want: []confSrv{confWantPong(p125)}},
		{id: "2.5", what: "ping with 126-byte payload", send: confPing(p126), close: 1002},
		{id: "2.7", what: "unsolicited pong without payload", send: confPong("")},
		{id: "2.8", what: "unsolicited pong with payload", send: confPong("unsolicited pong payload")},
		{id: "2.9", what: "unsolicited pong, then ping",
			send: confCat(confPong("unsolicited pong payload"), confPing("ping payload")), want: []confSrv{confWantPong("ping payload")}},
		{id: "2.10, 2.11", what: "10 pings", send: ten, want: tenPongs},
		{id: "§5.5", what: "ping between two messages",
			send: confCat(confText("a"), confPing("p"), confText("b")),
			want: []confSrv{confWantText("a"), confWantPong("p"), confWantText("b")}},
	}
}

// confReservedBits: Autobahn 3.*, RFC 6455 §5.2 (RSV1-3 must be 0 unless
// an extension defines them; none is negotiated).
func confReservedBits() []confCase {
	hello := confText(confHello)
	echo := []confSrv{confWantText(confHello)}
	rsvText := func(rsv byte) []byte {
		return confCat(hello, servertest.DataFrame(servertest.OpText, true, rsv, []byte(confHello)), confPing(""))
	}
	return []confCase{
		{id: "3.1", what: "text with RSV1", send: servertest.DataFrame(servertest.OpText, true, 1, []byte(confHello)), close: 1002},
		{id: "3.2", what: "text, then text with RSV2, then ping", send: rsvText(2), want: echo, close: 1002},
		{id: "3.3", what: "text, then text with RSV3, then ping", send: rsvText(3), want: echo, close: 1002},
		{id: "3.4", what: "text, then text with RSV4, then ping", send: rsvText(4), want: echo, close: 1002},
		{id: "3.5", what: "binary with RSV5", send: servertest.DataFrame(servertest.OpBinary, true, 5, bytes.Repeat([]byte{0xff}, 8)), close: 1002},
		{id: "3.6", what: "ping with RSV6", send: servertest.DataFrame(servertest.OpPing, true, 6, []byte(confHello)), close: 1002},
		{id: "3.7", what: "close with RSV7", send: servertest.DataFrame(servertest.OpClose, true, 7, []byte{0x03, 0xe8}), close: 1002},
		{id: "§5.2", what: "continuation with RSV1", send: confCat(confFrag(servertest.OpText, false, "a"), servertest.DataFrame(servertest.OpCont, true, 1, []byte("b"))), close: 1002},
	}
}

// confOpcodes: Autobahn 4.*, RFC 6455 §5.2 and §11.8 (reserved opcodes
// 3-7 and 11-15 fail the connection).
func confOpcodes() []confCase {
	hello := confText(confHello)
	echo := []confSrv{confWantText(confHello)}
	op := func(o byte, p string) []byte { return servertest.DataFrame(o, true, 0, []byte(p)) }
	const rp = "reserved opcode payload"
	return []confCase{
		{id: "4.1.1", what: "opcode 3", send: op(3, ""), close: 1002},
		{id: "4.1.2", what: "opcode 4 with payload", send: op(4, rp), close: 1002},
		{id: "4.1.3", what: "text, opcode 5, ping", send: confCat(hello, op(5, ""), confPing("")), want: echo, close: 1002},
		{id: "4.1.4", what: "text, opcode 6 with payload, ping", send: confCat(hello, op(6, rp), confPing("")), want: echo, close: 1002},
		{id: "4.1.5", what: "text, opcode 7 with payload, ping", send: confCat(hello, op(7, rp), confPing("")), want: echo, close: 1002},
		{id: "4.2.1", what: "opcode 11", send: op(11, ""), close: 1002},
		{id: "4.2.2", what: "opcode 12 with payload", send: op(12, rp), close: 1002},
		{id: "4.2.3", what: "text, opcode 13, ping", send: confCat(hello, op(13, ""), confPing("")), want: echo, close: 1002},
		{id: "4.2.4", what: "text, opcode 14 with payload, ping", send: confCat(hello, op(14, rp), confPing("")), want: echo, close: 1002},
		{id: "4.2.5", what: "text, opcode 15 with payload, ping", send: confCat(hello, op(15, rp), confPing("")), want: echo, close: 1002},
	}
}

// confFragmentation: Autobahn 5.*, RFC 6455 §5.4 (fragmentation), §5.5
// (control frames are never fragmented, may come between fragments).
func confFragmentation() []confCase {
	f := confFrag
	const c, tx, bn = servertest.OpCont, servertest.OpText, servertest.OpBinary
	twice := func(p []byte) []byte { return confCat(p, p) }
	return []confCase{
		{id: "5.1", what: "ping in 2 fragments", send: confCat(servertest.DataFrame(servertest.OpPing, false, 0, []byte("fragment1")), f(c, true, "fragment2")), close: 1002},
		{id: "5.2", what: "pong in 2 fragments", send: confCat(servertest.DataFrame(servertest.OpPong, false, 0, []byte("fragment1")), f(c, true, "fragment2")), close: 1002},
		{id: "5.3, 5.4, 5.5", what: "text in 2 fragments", send: confCat(f(tx, false, "fragment1"), f(c, true, "fragment2")),
			want: []confSrv{confWantText("fragment1fragment2")}},
		{id: "5.6, 5.7, 5.8", what: "text in 2 fragments with a ping between", send: confCat(f(tx, false, "fragment1"), confPing("ping payload"), f(c, true, "fragment2")),
			want: []confSrv{confWantPong("ping payload"), confWantText("fragment1fragment2")}},
		{id: "5.9, 5.10, 5.11", what: "continuation (FIN) with nothing to continue, then text",
			send: confCat(f(c, true, "non-continuation payload"), confText(confHello)), close: 1002},
		{id: "5.12, 5.13, 5.14", what: "continuation (no FIN) with nothing to continue, then text",
			send: confCat(f(c, false, "non-continuation payload"), confText(confHello)), close: 1002},
		{id: "5.15", what: "text in 2 fragments, then continuation with nothing to continue, then text",
			send: confCat(f(tx, false, "fragment1"), f(c, true, "fragment2"), f(c, false, "fragment3"), f(tx, true, "fragment4")),
			want: []confSrv{confWantText("fragment1fragment2")}, close: 1002},
		{id: "5.16", what: "twice: continuation, text fragment, continuation",
			send: twice(confCat(f(c, false, "fragment1"), f(tx, false, "fragment2"), f(c, true, "fragment3"))), close: 1002},
		{id: "5.17", what: "twice: final continuation, text fragment, continuation",
			send: twice(confCat(f(c, true, "fragment1"), f(tx, false, "fragment2"), f(c, true, "fragment3"))), close: 1002},
		{id: "5.18", what: "text fragment followed by a new text frame", send: confCat(f(tx, false, "fragment1"), f(tx, true, "fragment2")), close: 1002},
		{id: "§5.4", what: "binary fragment followed by a new text frame", send: confCat(f(bn, false, "a"), f(tx, true, "b")), close: 1002},
		{id: "§5.4", what: "binary in 3 fragments with a pong and a ping between",
			send: confCat(f(bn, false, "\x00\x01"), confPong("x"), f(c, false, "\x02"), confPing("y"), f(c, true, "\xff")),
			want: []confSrv{confWantPong("y"), confWantBin([]byte{0, 1, 2, 0xff})}},
		{id: "§5.4", what: "text in one-byte fragments", send: confFragments(tx, []byte("fragmented"), 1),
			want: []confSrv{confWantText("fragmented")}},
		{id: "§5.4", what: "fragmented message then an unfragmented one",
			send: confCat(f(tx, false, "a"), f(c, true, "b"), confBin([]byte("c"))),
			want: []confSrv{confWantText("ab"), confWantBin([]byte("c"))}},
		{id: "§5.5", what: "close (no FIN)", send: servertest.DataFrame(servertest.OpClose, false, 0, []byte{0x03, 0xe8}), close: 1002},
	}
}

// confUTF8: Autobahn 6.*, RFC 6455 §5.6 and §8.1 (text must be UTF-8;
// invalid UTF-8 fails the connection with 1007), with the test vectors
// of Markus Kuhn's UTF-8-test.txt that Autobahn uses.
func confUTF8() []confCase {
	f := confFrag
	const c, tx = servertest.OpCont, servertest.OpText
	const uni = "Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!" // Hello-µ@ßöäüàá-UTF-8!!
	cut := strings.Index(uni, "\xc3\xbc")
	cs := []confCase{
		{id: "6.1.1", what: "empty text", send: confText(""), want: []confSrv{confWantText("")}},
		{id: "6.1.2", what: "3 empty fragments", send: confCat(f(tx, false, ""), f(c, false, ""), f(c, true, "")), want: []confSrv{confWantText("")}},
		{id: "6.1.3", what: "empty, non-empty, empty fragments", send: confCat(f(tx, false, ""), f(c, false, "middle frame payload"), f(c, true, "")),
			want: []confSrv{confWantText("middle frame payload")}},
		{id: "6.2.1", what: "valid UTF-8 in one frame", send: confText(uni), want: []confSrv{confWantText(uni)}},
		{id: "6.2.2", what: "valid UTF-8 in 2 fragments cut on a code point", send: confCat(f(tx, false, uni[:cut]), f(c, true, uni[cut:])),
			want: []confSrv{confWantText(uni)}},
		{id: "6.2.3", what: "valid UTF-8 in one-byte fragments", send: confFragments(tx, []byte(uni), 1), want: []confSrv{confWantText(uni)}},
		{id: "6.2.4", what: "κόσμε in one-byte fragments", send: confFragments(tx, []byte(confKosme), 1), want: []confSrv{confWantText(confKosme)}},
		{id: "6.3.1", what: "invalid UTF-8 in one frame", send: confText(confBadUTF8), close: 1007},
		{id: "6.3.2", what: "invalid UTF-8 in one-byte fragments", send: confFragments(tx, []byte(confBadUTF8), 1), close: 1007},
		{id: "§8.1", what: "code point split across fragments, completed by an invalid byte",
			send: confCat(f(tx, false, "a\xf0\x9f"), f(c, true, "A")), close: 1007},
		{id: "§8.1", what: "fragmented message ending inside a code point",
			send: confCat(f(tx, false, "a\xf0\x9f"), f(c, true, "\x98")), close: 1007},
		{id: "§8.1", what: "binary is not checked for UTF-8", send: confBin([]byte(confBadUTF8)), want: []confSrv{confWantBin([]byte(confBadUTF8))}},
	}
	for _, cat := range confUTF8Sequences() {
		for j, v := range cat.vectors {
			id := fmt.Sprintf("%s.%d", cat.id, j+1)
			if v.valid {
				cs = append(cs, confCase{id: id, what: fmt.Sprintf("%s: valid %x", cat.name, v.p),
					send: confText(v.p), want: []confSrv{confWantText(v.p)}})
				continue
			}
			cs = append(cs,
				confCase{id: id, what: fmt.Sprintf("%s: invalid %x", cat.name, v.p), send: confText(v.p), close: 1007},
				// Not in Autobahn: the same bytes one per fragment, so
				// that the invalid byte ends a code point begun in
				// earlier frames.
				confCase{id: id + "/frag", what: fmt.Sprintf("%s: invalid %x in one-byte fragments", cat.name, v.p),
					send: confFragments(tx, []byte(v.p), 1), close: 1007, wholeOnly: true},
			)
		}
	}
	return cs
}

type confUTF8Vector struct {
	valid bool
	p     string
}

// confUTF8Sequences are Autobahn's 6.5-6.23 categories, in its order.
func confUTF8Sequences() []struct {
	id, name string
	vectors  []confUTF8Vector
} {
	ok := func(ps ...string) []confUTF8Vector {
		vs := make([]confUTF8Vector, len(ps))
		for i, p := range ps {
			vs[i] = confUTF8Vector{true, p}
		}
		return vs
	}
	bad := func(ps ...string) []confUTF8Vector {
		vs := make([]confUTF8Vector, len(ps))
		for i, p := range ps {
			vs[i] = confUTF8Vector{false, p}
		}
		return vs
	}
	var prefixes []confUTF8Vector
	for i := 1; i <= len(confKosme); i++ {
		prefixes = append(prefixes, confUTF8Vector{utf8.ValidString(confKosme[:i]), confKosme[:i]})
	}
	var cont strings.Builder
	for b := 0x80; b < 0xbf; b++ {
		cont.WriteByte(byte(b))
	}
	var lonely []string
	for _, r := range [][2]int{{0xc0, 0xdf}, {0xe0, 0xef}, {0xf0, 0xf7}, {0xf8, 0xfb}, {0xfc, 0xfd}} {
		var s strings.Builder
		for b := r[0]; b < r[1]; b++ {
			s.WriteByte(byte(b))
			s.WriteByte(' ')
		}
		lonely = append(lonely, s.String())
	}
	missing := []string{"\xc0", "\xe0\x80", "\xf0\x80\x80", "\xf8\x80\x80\x80", "\xfc\x80\x80\x80\x80",
		"\xdf", "\xef\xbf", "\xf7\xbf\xbf", "\xfb\xbf\xbf\xbf", "\xfd\xbf\xbf\xbf\xbf"}
	nonchars := []string{"\xef\xbf\xbe", "\xef\xbf\xbf"}
	for _, z1 := range []byte{0xf0, 0xf1, 0xf2, 0xf3, 0xf4} {
		for _, z2 := range []byte{0x8f, 0x9f, 0xaf, 0xbf} {
			if z1 == 0xf4 && z2 != 0x8f {
				continue // above U+10FFFF
			}
			for _, z3 := range []byte{0xbe, 0xbf} {
				if z1 == 0xf0 && z2 == 0x8f {
					continue // overlong
				}
				nonchars = append(nonchars, string([]byte{z1, z2, 0xbf, z3}))
			}
		}
	}
	type cat = struct {
		id, name string
		vectors  []confUTF8Vector
	}
	return []cat{
		{"6.5", "valid sequences", ok("hello\x24world", "hello\xc2\xa2world", "hello\xe2\x82\xacworld", "hello\xf0\xa4\xad\xa2world", confKosme)},
		{"6.6", "prefixes of κόσμε", prefixes},
		{"6.7", "first sequence of each length", ok("\x00", "\xc2\x80", "\xe0\xa0\x80", "\xf0\x90\x80\x80")},
		{"6.8", "first 5- and 6-byte sequences", bad("\xf8\x88\x80\x80\x80", "\xfc\x84\x80\x80\x80\x80")},
		{"6.9", "last sequence of each length", ok("\x7f", "\xdf\xbf", "\xef\xbf\xbf", "\xf4\x8f\xbf\xbf")},
		{"6.10", "last 4-, 5- and 6-byte sequences", bad("\xf7\xbf\xbf\xbf", "\xfb\xbf\xbf\xbf\xbf", "\xfd\xbf\xbf\xbf\xbf\xbf")},
		{"6.11", "other boundaries", append(ok("\xed\x9f\xbf", "\xee\x80\x80", "\xef\xbf\xbd", "\xf4\x8f\xbf\xbf"), bad("\xf4\x90\x80\x80")...)},
		{"6.12", "unexpected continuation bytes", bad("\x80", "\xbf", "\x80\xbf", "\x80\xbf\x80", "\x80\xbf\x80\xbf",
			"\x80\xbf\x80\xbf\x80", "\x80\xbf\x80\xbf\x80\xbf", cont.String())},
		{"6.13", "lonely start bytes", bad(lonely...)},
		{"6.14", "last continuation byte missing", bad(missing...)},
		{"6.15", "concatenated incomplete sequences", bad(strings.Join(missing, ""))},
		{"6.16", "impossible bytes", bad("\xfe", "\xff", "\xfe\xfe\xff\xff")},
		{"6.17", "overlong ASCII", bad("\xc0\xaf", "\xe0\x80\xaf", "\xf0\x80\x80\xaf", "\xf8\x80\x80\x80\xaf", "\xfc\x80\x80\x80\x80\xaf")},
		{"6.18", "maximum overlong sequences", bad("\xc1\xbf", "\xe0\x9f\xbf", "\xf0\x8f\xbf\xbf", "\xf8\x87\xbf\xbf\xbf", "\xfc\x83\xbf\xbf\xbf\xbf")},
		{"6.19", "overlong NUL", bad("\xc0\x80", "\xe0\x80\x80", "\xf0\x80\x80\x80", "\xf8\x80\x80\x80\x80", "\xfc\x80\x80\x80\x80\x80")},
		{"6.20", "single UTF-16 surrogates", bad("\xed\xa0\x80", "\xed\xad\xbf", "\xed\xae\x80", "\xed\xaf\xbf", "\xed\xb0\x80", "\xed\xbe\x80", "\xed\xbf\xbf")},
		{"6.21", "paired UTF-16 surrogates", bad("\xed\xa0\x80\xed\xb0\x80", "\xed\xa0\x80\xed\xbf\xbf", "\xed\xad\xbf\xed\xb0\x80", "\xed\xad\xbf\xed\xbf\xbf",
			"\xed\xae\x80\xed\xb0\x80", "\xed\xae\x80\xed\xbf\xbf", "\xed\xaf\xbf\xed\xb0\x80", "\xed\xaf\xbf\xed\xbf\xbf")},
		{"6.22", "non-characters (valid UTF-8)", ok(nonchars...)},
		{"6.23", "specials", ok("\xef\xbf\xb9", "\xef\xbf\xba", "\xef\xbf\xbb", "\xef\xbf\xbc", "\xef\xbf\xbd", "\xef\xbf\xbe", "\xef\xbf\xbf")},
	}
}

// confCloseCases: Autobahn 7.*, RFC 6455 §5.5.1 (close frames), §7.1
// (closing handshake; data after a close is ignored), §7.4 (status
// codes; the IANA registry adds 1012-1014).
func confCloseCases() []confCase {
	big := bytes.Repeat([]byte("BAsd7&jh23"), 256<<10/10)
	cs := []confCase{
		{id: "7.1.1", what: "text then close", send: confCat(confText("Hello World!"), confClose(1000, "")),
			want: []confSrv{confWantText("Hello World!")}, close: 1000},
		{id: "7.1.2", what: "two closes", send: confCat(confClose(1000, ""), confClose(1000, "")), close: 1000},
		{id: "7.1.3", what: "ping after close", send: confCat(confClose(1000, ""), confPing("")), close: 1000},
		{id: "7.1.4", what: "text after close", send: confCat(confClose(1000, ""), confText("Hello World!")), close: 1000},
		{id: "7.1.5", what: "fragment, close, last fragment", send: confCat(confFrag(servertest.OpText, false, "fragment1"), confClose(1000, ""), confFrag(servertest.OpCont, true, "fragment2")), close: 1000},
		// The ping travels with the close: sent in a later TCP segment,
		// after the server has closed, it would draw a TCP reset that
		// discards whatever of the 256 KiB echo the server's kernel has
		// not sent yet (the server closes TCP right after its close
		// frame; it does no lingering close). Autobahn sends it all in
		// one write too.
		{id: "7.1.6", what: "256 KiB text, text, close, ping",
			send: confCat(servertest.DataFrame(servertest.OpText, true, 0, big), confText("Hello World!"), confClose(1000, ""), confPing("")),
			want: []confSrv{{servertest.OpText, big}, confWantText("Hello World!")}, close: 1000, tail: 6 + 8},
		{id: "7.3.1", what: "close without body", send: confClose(-1, ""), close: confEmptyClose},
		{id: "7.3.2", what: "close with a 1-byte body", send: servertest.DataFrame(servertest.OpClose, true, 0, []byte{0x03}), close: 1002},
		{id: "7.3.3", what: "close with code, no reason", send: confClose(1000, ""), close: 1000},
		{id: "7.3.4", what: "close with a short reason", send: confClose(1000, "Hello World!"), close: 1000},
		{id: "7.3.5", what: "close with a 123-byte reason", send: confClose(1000, strings.Repeat("*", 123)), close: 1000},
		{id: "7.3.6", what: "close with a 124-byte reason (126-byte frame)", send: confClose(1000, strings.Repeat("*", 124)), close: 1002},
		{id: "7.5.1", what: "close reason not UTF-8", send: confClose(1000, confBadUTF8), close: 1007},
		{id: "§5.5.1", what: "close reason ending inside a code point", send: confClose(1000, "ok\xe2\x82"), close: 1007},
	}
	// 7.7.*: valid codes are echoed. 1012-1014 are registered with IANA
	// (service restart, try again later, bad gateway): valid today.
	for i, code := range []int{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999} {
		cs = append(cs, confCase{id: fmt.Sprintf("7.7.%d", i+1), what: fmt.Sprintf("valid code %d", code), send: confClose(code, ""), close: code})
	}
	// 7.9.*, 7.13.*: codes that must never appear in a close frame fail
	// the connection with 1002. 1004-1006 and 1015 are reserved for
	// local use (§7.4.1); 1016-2999 are unassigned; 5000+ are undefined.
	for i, code := range []int{0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999} {
		cs = append(cs, confCase{id: fmt.Sprintf("7.9.%d", i+1), what: fmt.Sprintf("invalid code %d", code), send: confClose(code, ""), close: 1002})
	}
	for i, code := range []int{5000, 65535} {
		cs = append(cs, confCase{id: fmt.Sprintf("7.13.%d", i+1), what: fmt.Sprintf("undefined code %d", code), send: confClose(code, ""), close: 1002})
	}
	return cs
}

// confAutoFragmentation: Autobahn 10.1.1: a 64 KiB message sent in
// 1300-byte fragments comes back whole.
func confAutoFragmentation() []confCase {
	p := bytes.Repeat([]byte("*"), 65536)
	return []confCase{{id: "10.1.1", what: "64 KiB text in 1300-byte fragments", send: confFragments(servertest.OpText, p, 1300),
		want: []confSrv{{servertest.OpText, p}}}}
}

// TestConformanceScripts covers the cases whose timing matters: a step
// is sent only after the server answered the previous one, and the steps
// after a failing one are never sent, which is what proves fail-fast.
func TestConformanceScripts(t *testing.T) {
	g := startEcho(t)
	const p3 = "edited"
	p2 := "\xf4\x90\x80\x80" // U+110000 in the UTF-8 scheme: out of range
	payload := confKosme + p2 + p3
	frame := confText(payload) // 6-byte header: 2 + mask
	const h = 6
	bigBad := confTextPayload(1 << 20)
	bigBad[100000] = 0xff
	bigFrame := servertest.DataFrame(servertest.OpText, true, 0, bigBad)
	bigH := len(bigFrame) - len(bigBad)
	good := confTextPayload(64 << 10)
	goodFrame := servertest.DataFrame(servertest.OpText, true, 0, good)
	goodH := len(goodFrame) - len(good)
	goodCut := 1000 // inside a code point
	for utf8.RuneStart(good[goodCut]) {
		goodCut++
	}
	tests := []struct {
		id, what string
		steps    []confStep
		close    int
	}{
		{"5.19, 5.20", "text in 5 fragments, pings between, each answered before the next fragment", []confStep{
			{confCat(confFrag(servertest.OpText, false, "fragment1"), confFrag(servertest.OpCont, false, "fragment2"), confPing("pongme 1!")), []confSrv{confWantPong("pongme 1!")}},
			{confCat(confFrag(servertest.OpCont, false, "fragment3"), confFrag(servertest.OpCont, false, "fragment4"), confPing("pongme 2!")), []confSrv{confWantPong("pongme 2!")}},
			{confFrag(servertest.OpCont, true, "fragment5"), []confSrv{confWantText("fragment1fragment2fragment3fragment4fragment5")}},
		}, confAutoClose},
		{"6.4.1", "invalid code point in the 2nd of 3 frames: fail before the 3rd", []confStep{
			{confCat(confFrag(servertest.OpText, false, confKosme), confPing("A")), []confSrv{confWantPong("A")}},
			{confFrag(servertest.OpCont, false, p2), nil},
		}, 1007},
		{"6.4.2", "2nd of 3 frames holds only the invalid byte", []confStep{
			{confCat(confFrag(servertest.OpText, false, payload[:12]), confPing("A")), []confSrv{confWantPong("A")}},
			{confFrag(servertest.OpCont, false, payload[12:13]), nil},
		}, 1007},
		{"6.4.3", "one frame in 3 chops: fail on the 2nd chop, before the frame is complete", []confStep{
			{frame[:h+len(confKosme)], nil},
			{frame[h+len(confKosme) : h+len(confKosme)+len(p2)], nil},
		}, 1007},
		{"6.4.4", "one frame, the 2nd chop only the invalid byte", []confStep{
			{frame[:h+12], nil},
			{frame[h+12 : h+13], nil},
		}, 1007},
		{"§8.1", "1 MiB text frame with an invalid byte at 100000: fail before the rest is sent", []confStep{
			{bigFrame[:bigH+100001], nil},
		}, 1007},
		{"§8.1", "invalid continuation of a code point begun in an earlier frame, in a partial frame", []confStep{
			{confCat(confFrag(servertest.OpText, false, "a\xf0\x9f"), confPing("A")), []confSrv{confWantPong("A")}},
			{confFrag(servertest.OpCont, true, "\x98A"+strings.Repeat("z", 1000))[:8+1+1], nil},
		}, 1007},
		{"§8.1", "valid text frame cut inside a code point, completed later", []confStep{
			{goodFrame[:goodH+goodCut], nil},
			{goodFrame[goodH+goodCut:], []confSrv{{servertest.OpText, good}}},
		}, confAutoClose},
	}
	for _, tt := range tests {
		for _, octets := range []bool{false, true} {
			total := 0
			for _, s := range tt.steps {
				total += len(s.send)
			}
			if octets && total > 4*confEverySplitMax {
				continue
			}
			name := tt.id + " " + tt.what
			if octets {
				name += " (octet by octet)"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				confScript(t, g, tt.steps, tt.close, octets)
			})
		}
	}
}

// TestConformanceLimits: Autobahn 9.* (large messages, many messages) at
// the echo's default limit, and the limit itself (§10.4: 1009 beyond it).
func TestConformanceLimits(t *testing.T) {
	g := startEcho(t)
	const (
		KiB = 1 << 10
		MiB = 1 << 20
	)
	type large struct {
		id, what string
		op       byte
		n        int // message size
		frag     int // fragment size, 0: one frame
		chop     int // written in chops of this size, 0: whole (plus a few random cuts)
	}
	var cases []large
	for _, k := range []struct {
		id   string
		op   byte
		name string
	}{{"9.1", servertest.OpText, "text"}, {"9.2", servertest.OpBinary, "binary"}} {
		for _, n := range []struct {
			sub  string
			size int
		}{{"1", 64 * KiB}, {"3", 1 * MiB}, {"4", 4 * MiB}, {"6", 16 * MiB}} {
			cases = append(cases, large{k.id + "." + n.sub, fmt.Sprintf("%s of %d KiB in one frame", k.name, n.size/KiB), k.op, n.size, 0, 0})
		}
	}
	cases = append(cases,
		large{"9.3.1", "text of 4 MiB in 64-byte fragments", servertest.OpText, 4 * MiB, 64, 0},
		large{"9.4.6", "binary of 4 MiB in 64 KiB fragments", servertest.OpBinary, 4 * MiB, 64 * KiB, 0},
		large{"9.3", "text of 16 MiB in 64 KiB fragments", servertest.OpText, 16 * MiB, 64 * KiB, 0},
		large{"9.4", "binary of 16 MiB in 64 KiB fragments", servertest.OpBinary, 16 * MiB, 64 * KiB, 0},
		large{"9.5.6", "text of 1 MiB written in chops of 2 KiB", servertest.OpText, 1 * MiB, 0, 2 * KiB},
		large{"9.6.6", "binary of 1 MiB written in chops of 2 KiB", servertest.OpBinary, 1 * MiB, 0, 2 * KiB},
	)
	for _, c := range cases {
		t.Run(c.id+" "+c.what, func(t *testing.T) {
			p := confBinPayload(c.n)
			if c.op == servertest.OpText {
				p = confTextPayload(c.n)
			}
			send := servertest.DataFrame(c.op, true, 0, p)
			if c.frag > 0 {
				send = confFragments(c.op, p, c.frag)
			}
			feeds := [][]int{nil}
			if c.chop > 0 {
				feeds = [][]int{confChops(len(send), c.chop)}
			} else if c.n == 4*MiB && c.frag == 0 && c.op == servertest.OpText {
				// A few random cuts (Autobahn's chops, and the
				// cut UTF-8 of a large frame).
				feeds = confFeeds(confCase{send: send})[12:]
			}
			w := confOpen(t, g)
			for _, cuts := range feeds {
				w.feed = confDescribe(cuts, len(send))
				w.write(send, cuts, false)
				f, err := w.readFrame()
				if err != nil {
					w.fatalf("echo of %d bytes: %v", c.n, err)
				}
				if f.op != c.op || !bytes.Equal(f.payload, p) {
					w.fatalf("echo: op %#x, %d bytes, want op %#x, %d bytes (equal: %v)", f.op, len(f.payload), c.op, len(p), bytes.Equal(f.payload, p))
				}
			}
			w.feed = ""
			w.write(confClose(1000, ""), nil, false)
			w.expectClose(1000)
		})
	}
	// 9.7.*, 9.8.*: many messages pipelined, echoed in order.
	for _, n := range []int{0, 256, 4096} {
		for _, op := range []byte{servertest.OpText, servertest.OpBinary} {
			t.Run(fmt.Sprintf("9.7, 9.8 1000 messages of %d bytes op %d", n, op), func(t *testing.T) {
				p := confBinPayload(n)
				if op == servertest.OpText {
					p = confTextPayload(n)
				}
				var send []byte
				want := make([]confSrv, 1000)
				for i := range want {
					send = append(send, servertest.DataFrame(op, true, 0, p)...)
					want[i] = confSrv{op, p}
				}
				w := confOpen(t, g)
				w.write(send, nil, false)
				w.expect(want...)
				w.write(confClose(1000, ""), nil, false)
				w.expectClose(1000)
			})
		}
	}
}

// TestConformanceEchoLimit: /echo has its own message limit, /ws keeps
// MaxMessageBytes; beyond a limit the connection is closed with 1009
// (§7.4.1) as soon as a frame header announces it, before its payload.
func TestConformanceEchoLimit(t *testing.T) {
	const limit = 256 << 10
	g := startEcho(t, func(o *options) { o.srv.EchoMaxMessageBytes = limit })
	max := confTextPayload(limit)
	half := max[:limit/2]
	tests := []struct {
		name, path string
		steps      []confStep
		close      int
	}{
		{"echo: a message of exactly the limit", "/echo", []confStep{{servertest.DataFrame(servertest.OpText, true, 0, max), []confSrv{{servertest.OpText, max}}}}, confAutoClose},
		{"echo: a message over the gateway's own limit", "/echo", []confStep{{confBin(make([]byte, 100<<10)), []confSrv{confWantBin(make([]byte, 100<<10))}}}, confAutoClose},
		{"echo: one frame over the limit, header only", "/echo", []confStep{{servertest.DataFrame(servertest.OpBinary, true, 0, make([]byte, limit+1))[:14], nil}}, 1009},
		{"echo: fragments adding up to more than the limit", "/echo", []confStep{{confCat(
			servertest.DataFrame(servertest.OpText, false, 0, half), servertest.DataFrame(servertest.OpCont, false, 0, half), servertest.DataFrame(servertest.OpCont, true, 0, []byte("x"))), nil}}, 1009},
		{"ws: a message over MaxMessageBytes, header only", "/ws", []confStep{{servertest.DataFrame(servertest.OpText, true, 0, make([]byte, 64<<10+1))[:14], nil}}, 1009},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, resp, body := confDial(t, g.addr, tt.path, "")
			if w == nil {
				t.Fatalf("upgrade %s: %d %s", tt.path, resp.StatusCode, body)
			}
			for _, s := range tt.steps {
				w.write(s.send, nil, false)
				w.expect(s.want...)
			}
			close := tt.close
			if close == confAutoClose {
				w.write(confClose(1000, ""), nil, false)
				close = 1000
			}
			w.expectClose(close)
		})
	}
}

// TestConformanceHandshake: §4.2.2 (the server's answer), §9.1
// (extensions: permessage-deflate, RFC 7692, is not negotiated), §1.9
// (no subprotocol), and /echo is off unless configured.
func TestConformanceHandshake(t *testing.T) {
	g := startEcho(t)
	tests := []struct {
		name, extra, absent string
	}{
		{"permessage-deflate offered", "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n", "Sec-WebSocket-Extensions"},
		{"two extensions offered", "Sec-WebSocket-Extensions: permessage-deflate, x-webkit-deflate-frame\r\n", "Sec-WebSocket-Extensions"},
		{"subprotocol offered", "Sec-WebSocket-Protocol: chat, superchat\r\n", "Sec-WebSocket-Protocol"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, resp, body := confDial(t, g.addr, "/echo", tt.extra)
			if w == nil {
				t.Fatalf("upgrade refused: %d %s", resp.StatusCode, body)
			}
			if v, ok := resp.Header[tt.absent]; ok {
				t.Fatalf("response has %s: %q; nothing may be negotiated", tt.absent, v)
			}
			// A compressed message sets RSV1 (RFC 7692 §6); without
			// the extension that is a protocol error.
			w.write(confCat(confText(confHello), servertest.DataFrame(servertest.OpText, true, 4, []byte{0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00})), nil, true)
			w.expect(confWantText(confHello))
			w.expectClose(1002)
		})
	}
	t.Run("echo is off by default", func(t *testing.T) {
		plain := startGateway(t, nil)
		w, resp, body := confDial(t, plain.addr, "/echo", "")
		if w != nil || resp.StatusCode != 404 {
			t.Fatalf("/echo without Echo: %d %q, want 404", resp.StatusCode, body)
		}
	})
}

func TestConformanceEchoConfig(t *testing.T) {
	base := defaultOptions("127.0.0.1:1").srv
	tests := []struct {
		name    string
		echo    bool
		limit   int
		want    int
		wantErr bool
	}{
		{"echo on, limit unset: the default", true, 0, server.DefaultEchoMaxMessageBytes, false},
		{"echo on, limit set", true, 1 << 20, 1 << 20, false},
		{"echo off: untouched", false, 0, 0, false},
		{"negative", true, -1, 0, true},
	}
	if server.DefaultEchoMaxMessageBytes < 16<<20 {
		t.Fatalf("DefaultEchoMaxMessageBytes %d is below Autobahn's 16 MiB messages", server.DefaultEchoMaxMessageBytes)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			c.Echo, c.EchoMaxMessageBytes = tt.echo, tt.limit
			err := c.Validate()
			if tt.wantErr {
				if !errors.Is(err, server.ErrConfig) {
					t.Fatalf("Validate = %v, want ErrConfig", err)
				}
				return
			}
			if err != nil || c.EchoMaxMessageBytes != tt.want {
				t.Fatalf("Validate = %v, EchoMaxMessageBytes %d; want nil, %d", err, c.EchoMaxMessageBytes, tt.want)
			}
		})
	}
}
