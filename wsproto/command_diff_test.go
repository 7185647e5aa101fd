//go:build !goexperiment.jsonv2

package wsproto

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode"
)

// differentialSeeds are inputs where a hand-written JSON reader most easily
// parts from encoding/json. They seed FuzzParseCommandDifferential and are
// checked on every plain test run by TestParseCommandMatchesReference.
func differentialSeeds() []string {
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	many := func(n int, elem func(i int) string) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = elem(i)
		}
		return strings.Join(parts, ",")
	}
	long := strings.Repeat("x", 300)
	seeds := []string{
		// Valid commands.
		`{"action":"subscribe","channels":["a","b","a"],"requestId":"x"}`,
		`{"action":"unsubscribe","channels":["a.*"],"requestId":12}`,
		`{"action":"ping","requestId":null}`,
		`{}`, `{ }`, `{"action":"ping"}`,

		// Repeated keys: the last one wins, whatever came before.
		`{"action":"ping","action":"subscribe","channels":["a"]}`,
		`{"action":"subscribe","action":"ping","channels":7}`,
		`{"action":"subscribe","channels":["a"],"channels":null}`,
		`{"action":"subscribe","channels":null,"channels":["b"]}`,
		`{"action":"subscribe","channels":[1],"channels":["b"]}`,
		`{"requestId":{},"requestId":"r","action":"ping"}`,
		`{"requestId":"r","requestId":null,"action":"ping"}`,

		// Keys match fields without regard to case, after unescaping, with
		// Unicode simple folding (U+017F long s folds to s, U+212A Kelvin
		// to k); U+0130 and U+0131 do not fold to i.
		`{"Action":"ping"}`, `{"ACTION":"ping","REQUESTID":1}`, `{"aCtIoN":"ping"}`,
		`{"ACTION":"subscribe","CHANNELS":["a"],"SINCE":{"a":"1-0"}}`,
		`{"action":"subscribe","channel\u017f":["a"]}`,
		`{"action":"ping","reque\u017ftId":"x"}`,
		"{\"action\":\"ping\",\"reque\xc5\xbftId\":\"x\"}",
		`{"action":"subscribe","channels":["a"],"\u017fince":{"a":"1"}}`,
		`{"\u0061ction":"ping"}`, `{"act\u0130on":"ping"}`, `{"act\u0131on":"ping"}`,
		`{"action":"ping","\u212a":1}`, `{"actio\u006e":"ping"}`,
		`{"action\u0000":"ping"}`, `{"action ":"ping"}`, "{\"\xffaction\":\"ping\"}",
		`{"actionn":"ping"}`, `{"actio":"ping"}`,

		// Values to skip, nested and of every type.
		`{"x":{"y":[1,{"z":null}],"w":[]},"action":"ping","v":[true,false,null,-1.5e3,"s"]}`,
		`{"extra":{"action":"subscribe"},"action":"ping"}`,
		`{"a":{},"b":[],"c":[{}],"d":{"e":[[]]},"action":"ping"}`,

		// Numbers, as requestId and elsewhere.
		`{"action":"ping","requestId":0}`, `{"action":"ping","requestId":-0}`,
		`{"action":"ping","requestId":1e5}`, `{"action":"ping","requestId":1.5E+3}`,
		`{"action":"ping","requestId":-0.0e-0}`, `{"action":"ping","requestId":01}`,
		`{"action":"ping","requestId":-}`, `{"action":"ping","requestId":1.}`,
		`{"action":"ping","requestId":.5}`, `{"action":"ping","requestId":1e}`,
		`{"action":"ping","requestId":+1}`, `{"action":"ping","requestId":1e+}`,
		`{"action":"ping","requestId":` + strings.Repeat("9", 128) + `}`,
		`{"action":"ping","requestId":` + strings.Repeat("9", 129) + `}`,
		`{"action":"ping","requestId":true}`, `{"action":"ping","requestId":[]}`,

		// requestId strings: escapes, length counted after unescaping.
		`{"action":"ping","requestId":"\u0041\/b\"\\\b\f\n\r\t\u0001"}`,
		`{"action":"ping","requestId":"` + strings.Repeat("i", 127) + `\n"}`,
		`{"action":"ping","requestId":"` + strings.Repeat("i", 127) + `\u00e9"}`,
		`{"action":"ping","requestId":"` + strings.Repeat("\\u0041", 128) + `"}`,
		`{"action":"ping","requestId":"` + strings.Repeat("\xff", 42) + `"}`,
		`{"action":"ping","requestId":"` + strings.Repeat("\xff", 43) + `"}`,
		`{"action":"ping","requestId":"\ud800\udc00\u0000"}`,

		// Whitespace: JSON's four inside, Unicode's outside (trimmed).
		" \n\t{\"action\":\"ping\"}\r\n ",
		"{ \"action\" \t:\n\"ping\"\r, \"requestId\" : 1 }",
		"\v{\"action\":\"ping\"}\f", "\u00a0{\"action\":\"ping\"}\u3000",
		"{\"action\":\v\"ping\"}", "{\"action\":\"ping\"\u00a0}",
		"\x85{\"action\":\"ping\"}", "\xc2\x85{\"action\":\"ping\"}",

		// Not JSON, or not only JSON.
		``, ` `, `{`, `}`, `[1]`, `null`, `"ping"`, `subscribe a`,
		`{"action":"ping"`, `{"action":"ping",}`, `{,"action":"ping"}`,
		`{"action" "ping"}`, `{"action":"ping" "x":1}`, `{'action':'ping'}`,
		`{action:"ping"}`, `{"action":"ping"}{}`, `{"action":"ping"} x`,
		`{"action":"ping"} 1`, "{\"action\":\"ping\"}\x00", `{"action":"ping"}]`,
		`{"a":[1,]}`, `{"a":[,1]}`, `{"a":{"b"}}`, `{"a":{"b":}}`, `{"a":tru}`,
		`{"a":nul}`, `{"a":True}`, `{"a":NaN}`, `{"a":[1 2]}`, `{"a":{"b":1 "c":2}}`,
		`{"a":[}`, `{"a":{]}`, `{"a":"\x"}`, `{"a":"\u12"}`, `{"a":"\u12G4"}`,
		"{\"a\":\"\x01\"}", "{\"a\":\"\x7f\"}", "{\"a\":\"a\nb\"}", `{"a":"\'"}`,

		// action.
		`{"action":null,"channels":["a"]}`, `{"action":"","requestId":"r"}`,
		`{"action":1,"requestId":2}`, `{"action":["ping"]}`, `{"action":"\u0070ing"}`,
		`{"action":"Subscribe","channels":["a"]}`, `{"action":"ping\u0000"}`,
		"{\"action\":\"ping\xff\"}", `{"action":"unsubscribe2"}`,
		`{"channels":["a"],"requestId":"m"}`,

		// channels.
		`{"action":"subscribe","requestId":"c"}`, `{"action":"subscribe","channels":[]}`,
		`{"action":"subscribe","channels":"a"}`, `{"action":"subscribe","channels":{"a":1}}`,
		`{"action":"subscribe","channels":["a",1]}`, `{"action":"subscribe","channels":["a",null]}`,
		`{"action":"subscribe","channels":[null]}`, `{"action":"subscribe","channels":[["a"]]}`,
		`{"action":"subscribe","channels":[" x","ok","y\n"," x"],"requestId":"s"}`,
		`{"action":"subscribe","channels":["a b",2]}`, `{"action":"subscribe","channels":[true]}`,
		`{"action":"subscribe","channels":["\u0061b","ab","a\u0062"]}`,
		`{"action":"subscribe","channels":["\ud800","\udc00x","\ud800\u0041","\ud83d\ude00","\ud800\ud800\udc00"]}`,
		"{\"action\":\"subscribe\",\"channels\":[\"\xff\",\"\xed\xa0\x80\",\"\xc0\x80\",\"\xf4\x90\x80\x80\"]}",
		`{"action":"subscribe","channels":["a\u200bb","\ufeff","a\u00a0","a\u2028","\u0085"]}`,
		`{"action":"subscribe","channels":["` + strings.Repeat("n", 256) + `"]}`,
		`{"action":"subscribe","channels":["` + strings.Repeat("n", 257) + `"]}`,
		`{"action":"subscribe","channels":["` + strings.Repeat("\u00e9", 129) + `"]}`,
		`{"action":"subscribe","channels":["` + strings.Repeat("n", 255) + `\u00e9"]}`,
		`{"action":"subscribe","channels":["` + strings.Repeat("\\u0041", 257) + `"]}`,
		`{"action":"subscribe","channels":["` + strings.Repeat("\xff", 86) + `"]}`,
		`{"action":"subscribe","channels":["` + long + `","` + long + `y","ok"]}`,
		`{"action":"subscribe","channels":[` + many(40, func(i int) string { return fmt.Sprintf(`"c%d"`, i%23) }) + `]}`,
		`{"action":"subscribe","channels":[` + many(3000, func(i int) string { return fmt.Sprintf(`"c%d"`, i) }) + `]}`,

		// since.
		`{"action":"subscribe","channels":["a","b.*"],"since":{"a":"1-0","b.*":"2-5"}}`,
		`{"action":"subscribe","channels":["a"],"since":null}`,
		`{"action":"subscribe","channels":["a"],"since":{}}`,
		`{"action":"subscribe","channels":["a"],"since":[]}`,
		`{"action":"subscribe","channels":["a"],"since":"1-0"}`,
		`{"action":"subscribe","channels":["a"],"since":{"a":1}}`,
		`{"action":"subscribe","channels":["a"],"since":{"a":null}}`,
		`{"action":"subscribe","channels":["a"],"since":{"a":{"b":"1"}}}`,
		`{"action":"subscribe","channels":["a"],"since":{"a":["1"]}}`,
		`{"action":"subscribe","channels":["a","b"],"since":{"a":"1","b":"2","a":"3"}}`,
		`{"action":"subscribe","channels":["a"],"since":{"a":{},"a":"3"}}`,
		`{"action":"subscribe","channels":["a"],"since":{"b":"1","a":"2","c":"3","b":"4"},"requestId":7}`,
		`{"action":"subscribe","channels":["a"],"since":{"\u0061":"\u0031-\u0030"}}`,
		`{"action":"subscribe","channels":["a"],"since":{"a":"\ud800\xff"}}`,
		`{"action":"subscribe","channels":["a"],"since":{"a":""}}`,
		`{"action":"subscribe","channels":["a"],"since":{"` + long + `":"1"}}`,
		`{"action":"subscribe","channels":["a:*"],"since":{"a:b":"1","a:*":"2","c d":"3"}}`,
		`{"action":"subscribe","channels":["a:*"],"since":{"a:b":"1","a:\u0062":"2","a:*":"3","z":"4"}}`,
		`{"action":"subscribe","channels":["a:*"],"since":{` + many(40, func(i int) string { return fmt.Sprintf(`"k%d":"%d-0"`, i%23, i) }) + `}}`,
		`{"action":"subscribe","channels":["a:*"],"since":{` + many(MaxSinceEntries, func(i int) string { return fmt.Sprintf(`"k%d":"%d-0"`, i, i) }) + `}}`,
		`{"since":{"a":"1"},"action":"subscribe","channels":["a"]}`,
		`{"action":"subscribe","channels":["a"],"since":{"a":"1"},"since":null}`,
		`{"action":"subscribe","channels":["a b"],"since":{"a b":1}}`,
		`{"action":"unsubscribe","channels":["a"],"since":{"a":1}}`,
		`{"action":"ping","since":7}`,
		`{"action":"subscribe","channels":["a"],"since":{` + many(MaxSinceEntries, func(int) string { return `"a":"1"` }) + `}}`,
		`{"action":"subscribe","channels":["a"],"since":{` + many(MaxSinceEntries+1, func(int) string { return `"a":"1"` }) + `}}`,
		`{"action":"subscribe","channels":["a"],"since":{` + many(MaxSinceEntries+1, func(int) string { return `"a":"1"` }) + `,"a":2}}`,
		`{"action":"subscribe","channels":[` + many(40, func(i int) string { return fmt.Sprintf(`"c%d"`, i) }) +
			`],"since":{` + many(60, func(i int) string { return fmt.Sprintf(`"c%d":"%d-0"`, i%40, i) }) + `}}`,

		// Nesting: encoding/json allows 10000 open containers at once.
		`{"x":` + deep(9999) + `,"action":"ping"}`,
		`{"x":` + deep(10000) + `,"action":"ping"}`,
		`{"x":[{"y":` + deep(9997) + `}],"action":"ping"}`,
		`{"x":[{"y":` + deep(9998) + `}],"action":"ping"}`,
		`{"x":` + strings.Repeat("[", 20000),
	}
	return seeds
}

// checkSameAsReference fails unless ParseCommand answers in exactly as the
// encoding/json reference does.
func checkSameAsReference(tb testing.TB, in []byte) {
	tb.Helper()
	orig := bytes.Clone(in)
	cmd, cerr := ParseCommand(in)
	if !bytes.Equal(in, orig) {
		tb.Fatal("ParseCommand modified its input")
	}
	want, wantErr := parseCommandReference(in)
	show := func() string {
		if len(in) > 300 {
			return fmt.Sprintf("%q… (%d bytes)", in[:300], len(in))
		}
		return fmt.Sprintf("%q", in)
	}
	if (cerr == nil) != (wantErr == nil) {
		tb.Fatalf("%s:\ngot  %+v, %+v\nwant %+v, %+v", show(), cmd, cerr, want, wantErr)
	}
	if cerr != nil {
		if cerr.Code != wantErr.Code || cerr.Message != wantErr.Message ||
			!sameStrings(cerr.Channels, wantErr.Channels) || !sameBytes(cerr.RequestID, wantErr.RequestID) {
			tb.Fatalf("%s:\ngot  error %s %q channels %q requestId %q\nwant error %s %q channels %q requestId %q",
				show(), cerr.Code, cerr.Message, cerr.Channels, cerr.RequestID,
				wantErr.Code, wantErr.Message, wantErr.Channels, wantErr.RequestID)
		}
		if cmd.Action != 0 || cmd.Channels != nil || cmd.Since != nil || cmd.RequestID != nil {
			tb.Fatalf("%s: failed parse returned %+v", show(), cmd)
		}
		return
	}
	if cmd.Action != want.Action || !sameStrings(cmd.Channels, want.Channels) ||
		!sameBytes(cmd.RequestID, want.RequestID) || !sameSince(cmd.Since, want.Since) {
		tb.Fatalf("%s:\ngot  %v %q since %q requestId %q\nwant %v %q since %q requestId %q", show(),
			cmd.Action, cmd.Channels, cmd.Since, cmd.RequestID, want.Action, want.Channels, want.Since, want.RequestID)
	}
}

func sameStrings(a, b []string) bool   { return (a == nil) == (b == nil) && slices.Equal(a, b) }
func sameBytes(a, b []byte) bool       { return (a == nil) == (b == nil) && bytes.Equal(a, b) }
func sameSince(a, b []SinceEntry) bool { return (a == nil) == (b == nil) && slices.Equal(a, b) }

func TestParseCommandMatchesReference(t *testing.T) {
	for i, s := range differentialSeeds() {
		name := s
		if len(name) > 60 {
			name = fmt.Sprintf("%s…(%d)", name[:60], len(s))
		}
		t.Run(fmt.Sprintf("%d/%s", i, name), func(t *testing.T) {
			checkSameAsReference(t, []byte(s))
			// Every prefix: truncations are where a scanner's bounds
			// checks are tested.
			if len(s) <= 400 {
				for n := range len(s) {
					checkSameAsReference(t, []byte(s[:n]))
				}
			}
		})
	}
}

// TestParseCommandKeyFolding puts, in place of each letter of each field
// name, every printable ASCII byte and every rune whose case-folding orbit
// reaches ASCII (plus a few that look as if they might): only those
// encoding/json folds to that letter may name the field.
func TestParseCommandKeyFolding(t *testing.T) {
	candidates := []rune{0xdf, 0x130, 0x131, 0x1e9e, 0x2c6f, 0xff21, 0xff41}
	for r := rune(0x20); r < 0x7f; r++ {
		if r != '"' && r != '\\' {
			candidates = append(candidates, r)
		}
	}
	for r := rune(0x80); r <= unicode.MaxRune; r++ {
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			if f < 0x80 {
				candidates = append(candidates, r)
				break
			}
		}
	}
	if !slices.Contains(candidates, 0x17f) || !slices.Contains(candidates, 0x212a) {
		t.Fatalf("candidates %U miss the long s or the Kelvin sign", candidates)
	}
	for _, tc := range []struct{ field, tmpl string }{
		{"action", `{"%s":"ping"}`},
		{"channels", `{"action":"subscribe","%s":["a"]}`},
		{"requestId", `{"action":"ping","%s":"r"}`},
		{"since", `{"action":"subscribe","channels":["a"],"%s":{"a":"1"}}`},
	} {
		t.Run(tc.field, func(t *testing.T) {
			for pos := range len(tc.field) {
				for _, r := range candidates {
					key := tc.field[:pos] + string(r) + tc.field[pos+1:]
					checkSameAsReference(t, fmt.Appendf(nil, tc.tmpl, key))
					// The same rune escaped.
					key = fmt.Sprintf(`%s\u%04x%s`, tc.field[:pos], r, tc.field[pos+1:])
					if r < 0x10000 {
						checkSameAsReference(t, fmt.Appendf(nil, tc.tmpl, key))
					}
				}
			}
		})
	}
}

// FuzzParseCommandDifferential holds ParseCommand to the encoding/json
// reference on every input: same command, or same error code, message,
// channels and requestId.
func FuzzParseCommandDifferential(f *testing.F) {
	for _, s := range differentialSeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		checkSameAsReference(t, in)
	})
}

// BenchmarkParseCommandReference is the encoding/json parser's cost on
// BenchmarkParseCommand's commands: the figures ParseCommand replaced.
func BenchmarkParseCommandReference(b *testing.B) {
	benchParseCommand(b, parseCommandReference)
}
