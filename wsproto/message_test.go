package wsproto

import (
	"bytes"
	"encoding/json"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

var timestampRE = regexp.MustCompile(`^"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z"$`)

// checkTimestamp checks the protocol's timestamp format and that it is
// want truncated to the millisecond, in UTC.
func checkTimestamp(tb testing.TB, raw json.RawMessage, want time.Time) {
	tb.Helper()
	if !timestampRE.Match(raw) {
		tb.Fatalf("timestamp %s: want RFC 3339 UTC with exactly 3 fractional digits and Z", raw)
	}
	got, err := time.Parse(time.RFC3339Nano, jsonString(tb, raw))
	if err != nil {
		tb.Fatal(err)
	}
	if w := want.Truncate(time.Millisecond); !got.Equal(w) || got.Location() != time.UTC {
		tb.Fatalf("timestamp %s, want %s", got, w.UTC())
	}
}

// checkTextFrame checks that b is one valid server text frame whose payload
// is valid UTF-8 with no raw control characters, and returns the payload.
func checkTextFrame(tb testing.TB, b []byte) []byte {
	tb.Helper()
	h, _, p := readServerFrame(tb, b)
	if h.OpCode != ws.OpText {
		tb.Fatalf("op %v, want text", h.OpCode)
	}
	if !utf8.Valid(p) {
		tb.Fatalf("payload is not valid UTF-8: %q", p)
	}
	// Raw tab, CR and LF are legal JSON whitespace around the tokens of a
	// payload embedded verbatim (json.Valid has checked they are not
	// inside a string); every other control character must be escaped.
	if i := bytes.IndexFunc(p, func(r rune) bool { return r < 0x20 && r != '\t' && r != '\n' && r != '\r' }); i >= 0 {
		tb.Fatalf("raw control character at %d in %q", i, p)
	}
	return p
}

func TestBuildData(t *testing.T) {
	zone := time.FixedZone("UTC+5:30", 5*3600+1800)
	received := time.Date(2024, 2, 29, 23, 59, 59, 999_999_999, zone)
	tests := []struct {
		name     string
		seq      uint64
		channel  string
		pattern  string
		payload  string
		wantJSON bool   // embedded verbatim
		wantStr  string // decoded string when !wantJSON
	}{
		{name: "object", seq: 1, channel: "orders", payload: `{"id":1,"s":"x"}`, wantJSON: true},
		{name: "array", seq: 2, channel: "orders", payload: `[1,2,{"a":null}]`, wantJSON: true},
		{name: "number", seq: 3, channel: "n", payload: `-12.5e3`, wantJSON: true},
		{name: "string literal", seq: 4, channel: "s", payload: `"quoted"`, wantJSON: true},
		{name: "true", seq: 5, channel: "b", payload: `true`, wantJSON: true},
		{name: "null", seq: 5, channel: "b", payload: `null`, wantJSON: true},
		{name: "json with whitespace", seq: 6, channel: "w", payload: " {\"a\" : [ 1 ]}\n", wantJSON: true},
		{name: "json unicode", seq: 7, channel: "u", payload: `{"é":"日本😀"}`, wantJSON: true},
		{name: "pattern", seq: 8, channel: "orders.eu", pattern: "orders.*", payload: `{}`, wantJSON: true},
		{name: "max seq", seq: ^uint64(0), channel: "m", payload: `0`, wantJSON: true},
		{name: "plain text", seq: 9, channel: "t", payload: "hello world", wantStr: "hello world"},
		{name: "empty", seq: 10, channel: "e", payload: "", wantStr: ""},
		{name: "truncated json", seq: 11, channel: "j", payload: `{"a":`, wantStr: `{"a":`},
		{name: "two values", seq: 12, channel: "j", payload: `1 2`, wantStr: `1 2`},
		{name: "quotes and backslashes", seq: 13, channel: "q", payload: `a"b\c`, wantStr: `a"b\c`},
		{name: "control chars", seq: 14, channel: "c", payload: "a\x00b\x01\x1f\t\r\n\x7f", wantStr: "a\x00b\x01\x1f\t\r\n\x7f"},
		{name: "invalid utf8", seq: 15, channel: "i", payload: "ok\xff\xfe\xc3(", wantStr: "ok\ufffd\ufffd\ufffd("},
		{name: "json with invalid utf8", seq: 16, channel: "i", payload: "{\"a\":\"\xff\"}", wantStr: "{\"a\":\"\ufffd\"}"},
		{name: "surrogate encoded", seq: 17, channel: "i", payload: "\xed\xa0\x80", wantStr: "\ufffd\ufffd\ufffd"},
		{name: "json with raw control char", seq: 18, channel: "c", payload: "\"a\x01\"", wantStr: "\"a\x01\""},
		{name: "html and U+2028", seq: 19, channel: "h", payload: "<b>&\u2028", wantStr: "<b>&\u2028"},
		{name: "channel escaping", seq: 20, channel: "we\"ird\\ch\x01", pattern: "p\xff", payload: "x", wantStr: "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := BuildData(tt.seq, tt.channel, tt.pattern, tt.payload, received)
			defer f.Release()
			if f.Len() != len(f.Bytes()) {
				t.Fatalf("Len %d != len(Bytes) %d", f.Len(), len(f.Bytes()))
			}
			p := checkTextFrame(t, f.Bytes())
			if !json.Valid(p) {
				t.Fatalf("payload is not valid JSON: %s", p)
			}
			keys, vals := objectKeys(t, p)
			wantKeys := []string{"type", "seq", "channel", "pattern", "data", "timestamp"}
			if tt.pattern == "" {
				wantKeys = slices.Delete(wantKeys, 3, 4)
			}
			if !slices.Equal(keys, wantKeys) {
				t.Fatalf("keys %q, want %q", keys, wantKeys)
			}
			if got := jsonString(t, vals["type"]); got != "data" {
				t.Errorf("type %q", got)
			}
			if got := string(vals["seq"]); got != strconv.FormatUint(tt.seq, 10) {
				t.Errorf("seq %s, want %d", got, tt.seq)
			}
			if f.Seq() != tt.seq {
				t.Errorf("Frame.Seq() = %d, want %d", f.Seq(), tt.seq)
			}
			if got := jsonString(t, vals["channel"]); got != string([]rune(tt.channel)) {
				t.Errorf("channel %q, want %q", got, tt.channel)
			}
			if tt.pattern != "" {
				if got := jsonString(t, vals["pattern"]); got != string([]rune(tt.pattern)) {
					t.Errorf("pattern %q, want %q", got, tt.pattern)
				}
			}
			data := vals["data"]
			if tt.wantJSON {
				// json.Decoder strips surrounding whitespace.
				if string(data) != strings.TrimSpace(tt.payload) {
					t.Errorf("data %s, want verbatim %s", data, tt.payload)
				}
			} else {
				if data[0] != '"' {
					t.Fatalf("data %s: want a JSON string", data)
				}
				if bytes.ContainsFunc(data, func(r rune) bool { return r < 0x20 }) {
					t.Fatalf("data %q: control characters must be escaped", data)
				}
				if got := jsonString(t, data); got != tt.wantStr {
					t.Errorf("data %q, want %q", got, tt.wantStr)
				}
				if got := jsonString(t, data); got != string([]rune(tt.payload)) {
					t.Errorf("data %q: want each invalid byte replaced by U+FFFD", got)
				}
			}
			checkTimestamp(t, vals["timestamp"], received)
		})
	}
}

func TestBuildDataHeaderLengths(t *testing.T) {
	now := time.Now()
	// The envelope around an empty non-JSON payload (data is "").
	f := BuildData(7, "ch", "", "", now)
	_, _, p := readServerFrame(t, f.Bytes())
	overhead := len(p)
	f.Release()

	tests := []struct {
		payloadLen int
		wantHL     int
	}{
		{125, 2}, {126, 4}, {65535, 4}, {65536, 10}, {1 << 20, 10}, {1<<20 + 1000, 10},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.payloadLen), func(t *testing.T) {
			data := strings.Repeat("a", tt.payloadLen-overhead)
			f := BuildData(7, "ch", "", data, now)
			defer f.Release()
			h, hl, p := readServerFrame(t, f.Bytes())
			if len(p) != tt.payloadLen || hl != tt.wantHL || h.OpCode != ws.OpText {
				t.Fatalf("payload %d bytes with %d-byte header, want %d with %d", len(p), hl, tt.payloadLen, tt.wantHL)
			}
			if !utf8.Valid(p) || !json.Valid(p) {
				t.Fatal("payload is not valid UTF-8 JSON")
			}
		})
	}
}

func TestAppendTimestamp(t *testing.T) {
	tests := []struct {
		in   time.Time
		want string
	}{
		{time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), `"2025-01-02T03:04:05.000Z"`},
		{time.Date(2025, 1, 2, 3, 4, 5, 120_000_000, time.UTC), `"2025-01-02T03:04:05.120Z"`},
		{time.Date(2025, 1, 2, 3, 4, 5, 999_999_999, time.UTC), `"2025-01-02T03:04:05.999Z"`},
		{time.Date(2025, 1, 1, 1, 0, 0, 1_000_000, time.FixedZone("", 2*3600)), `"2024-12-31T23:00:00.001Z"`},
		{time.Date(2025, 6, 1, 12, 0, 0, 0, time.FixedZone("", -7*3600)), `"2025-06-01T19:00:00.000Z"`},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := string(AppendTimestamp([]byte("p"), tt.in)); got != "p"+tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestReplies(t *testing.T) {
	now := time.Date(2025, 3, 4, 5, 6, 7, 891_234_567, time.FixedZone("", -3600))
	type reply struct {
		name      string
		build     func() *Frame
		wantKeys  []string
		wantType  string
		wantChans []string // nil: no channels key expected
		wantReqID string   // "" when absent
		check     func(t *testing.T, vals map[string]json.RawMessage)
	}
	tests := []reply{
		{
			name:     "subscribed with string id",
			build:    func() *Frame { return NewSubscribed([]string{"a", "b.c"}, []byte(`"r-1"`), now) },
			wantKeys: []string{"type", "channels", "requestId", "timestamp"}, wantType: "subscribed",
			wantChans: []string{"a", "b.c"}, wantReqID: `"r-1"`,
		},
		{
			name:     "unsubscribed with number id",
			build:    func() *Frame { return NewUnsubscribed([]string{"x"}, []byte(`42`), now) },
			wantKeys: []string{"type", "channels", "requestId", "timestamp"}, wantType: "unsubscribed",
			wantChans: []string{"x"}, wantReqID: `42`,
		},
		{
			name:     "ack without id",
			build:    func() *Frame { return NewSubscribed([]string{"é\"q"}, nil, now) },
			wantKeys: []string{"type", "channels", "timestamp"}, wantType: "subscribed",
			wantChans: []string{"é\"q"},
		},
		{
			name:     "ack with empty channels",
			build:    func() *Frame { return NewUnsubscribed([]string{}, nil, now) },
			wantKeys: []string{"type", "channels", "timestamp"}, wantType: "unsubscribed",
			wantChans: []string{},
		},
		{
			name:     "pong without id",
			build:    func() *Frame { return NewPong(nil, now) },
			wantKeys: []string{"type", "timestamp"}, wantType: "pong",
		},
		{
			name:     "pong with string id",
			build:    func() *Frame { return NewPong([]byte(`"abc"`), now) },
			wantKeys: []string{"type", "requestId", "timestamp"}, wantType: "pong", wantReqID: `"abc"`,
		},
		{
			name:     "pong with number id",
			build:    func() *Frame { return NewPong([]byte(`-1.5e3`), now) },
			wantKeys: []string{"type", "requestId", "timestamp"}, wantType: "pong", wantReqID: `-1.5e3`,
		},
		{
			name: "error without channels",
			build: func() *Frame {
				return NewError(CodeUnknownAction, "unknown \"action\"\n", nil, []byte(`7`), now)
			},
			wantKeys: []string{"type", "code", "message", "requestId", "timestamp"}, wantType: "error", wantReqID: `7`,
			check: func(t *testing.T, vals map[string]json.RawMessage) {
				if c := jsonString(t, vals["code"]); c != string(CodeUnknownAction) {
					t.Errorf("code %q", c)
				}
				if m := jsonString(t, vals["message"]); m != "unknown \"action\"\n" {
					t.Errorf("message %q", m)
				}
			},
		},
		{
			name: "error with channels and no id",
			build: func() *Frame {
				return NewError(CodeForbidden, "nope", []string{"secret", "bad\xffname"}, nil, now)
			},
			wantKeys: []string{"type", "code", "message", "channels", "timestamp"}, wantType: "error",
			wantChans: []string{"secret", "bad\ufffdname"},
			check: func(t *testing.T, vals map[string]json.RawMessage) {
				if c := jsonString(t, vals["code"]); c != string(CodeForbidden) {
					t.Errorf("code %q", c)
				}
			},
		},
		{
			name:     "upstream interrupted",
			build:    func() *Frame { return NewUpstreamInterrupted([]string{"a", "b:*"}, now) },
			wantKeys: []string{"type", "code", "message", "channels", "timestamp"}, wantType: "error",
			wantChans: []string{"a", "b:*"},
			check: func(t *testing.T, vals map[string]json.RawMessage) {
				if c := jsonString(t, vals["code"]); c != string(CodeUpstreamInterrupted) {
					t.Errorf("code %q", c)
				}
			},
		},
		{
			name: "error with empty non-nil channels",
			build: func() *Frame {
				return NewError(CodeTooManyChannels, "too many", []string{}, []byte(`"id"`), now)
			},
			wantKeys: []string{"type", "code", "message", "channels", "requestId", "timestamp"}, wantType: "error",
			wantChans: []string{}, wantReqID: `"id"`,
		},
		{
			name: "messages_lost",
			build: func() *Frame {
				return NewMessagesLost([]LostStream{{"orders", 41, 3}, {"tick:*\xff", 0, 1 << 40}}, now)
			},
			wantKeys: []string{"type", "code", "message", "streams", "timestamp"}, wantType: "error",
			check: func(t *testing.T, vals map[string]json.RawMessage) {
				if c := jsonString(t, vals["code"]); c != string(CodeMessagesLost) {
					t.Errorf("code %q", c)
				}
				type lost struct {
					Stream  string `json:"stream"`
					LastSeq uint64 `json:"lastSeq"`
					Lost    uint64 `json:"lost"`
				}
				var got []lost
				dec := json.NewDecoder(bytes.NewReader(vals["streams"]))
				dec.DisallowUnknownFields()
				if err := dec.Decode(&got); err != nil {
					t.Fatalf("streams %s: %v", vals["streams"], err)
				}
				want := []lost{{"orders", 41, 3}, {"tick:*\ufffd", 0, 1 << 40}}
				if !slices.Equal(got, want) {
					t.Errorf("streams %+v, want %+v", got, want)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.build()
			defer f.Release()
			p := checkTextFrame(t, f.Bytes())
			keys, vals := objectKeys(t, p)
			if !slices.Equal(keys, tt.wantKeys) {
				t.Fatalf("keys %q, want %q (%s)", keys, tt.wantKeys, p)
			}
			if typ := jsonString(t, vals["type"]); typ != tt.wantType {
				t.Errorf("type %q, want %q", typ, tt.wantType)
			}
			if tt.wantChans != nil {
				var chans []string
				if err := json.Unmarshal(vals["channels"], &chans); err != nil {
					t.Fatalf("channels %s: %v", vals["channels"], err)
				}
				if !slices.Equal(chans, tt.wantChans) || chans == nil {
					t.Errorf("channels %q, want %q", chans, tt.wantChans)
				}
			}
			if got := string(vals["requestId"]); got != tt.wantReqID {
				t.Errorf("requestId %s, want %s", got, tt.wantReqID)
			}
			checkTimestamp(t, vals["timestamp"], now)
			if tt.check != nil {
				tt.check(t, vals)
			}
		})
	}
}

func TestAppendJSONString(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"", `""`},
		{"abc", `"abc"`},
		{`"\`, `"\"\\"`},
		{"\n\r\t", `"\n\r\t"`},
		{"\x00\x01\x1f", `"\u0000\u0001\u001f"`},
		{"\x7f", "\"\x7f\""},
		{"é日😀", `"é日😀"`},
		{"\ufffd", "\"\ufffd\""},
		{"a\xffb", `"a\ufffdb"`},
		{"\xe6\x97", `"\ufffd\ufffd"`},
		{"\xf4\x90\x80\x80", `"\ufffd\ufffd\ufffd\ufffd"`},
	}
	for _, tt := range tests {
		t.Run(strconv.Quote(tt.in), func(t *testing.T) {
			got := AppendJSONString([]byte("p"), tt.in)
			if string(got) != "p"+tt.want {
				t.Fatalf("got %s, want %s", got[1:], tt.want)
			}
		})
	}
}

// FuzzBuildData: whatever the channel, pattern and payload, the frame is one
// valid text frame carrying valid UTF-8 JSON with the right fields, and the
// data round-trips.
func FuzzBuildData(f *testing.F) {
	f.Add(uint64(1), "ch", "", `{"a":1}`)
	f.Add(uint64(2), "ch", "c*", "plain")
	f.Add(uint64(3), "c\xff", "p\x00", "\xff\"\\\x01")
	f.Add(uint64(4), "ch", "", `"\ud800"`)
	f.Add(uint64(5), "ch", "", "[1,2,\n3]")
	now := time.Unix(1700000000, 123456789)
	f.Fuzz(func(t *testing.T, seq uint64, channel, pattern, payload string) {
		fr := BuildData(seq, channel, pattern, payload, now)
		defer fr.Release()
		p := checkTextFrame(t, fr.Bytes())
		var m struct {
			Type      string          `json:"type"`
			Seq       uint64          `json:"seq"`
			Channel   string          `json:"channel"`
			Pattern   *string         `json:"pattern"`
			Data      json.RawMessage `json:"data"`
			Timestamp string          `json:"timestamp"`
		}
		if err := json.Unmarshal(p, &m); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if m.Type != "data" || m.Seq != seq || m.Channel != string([]rune(channel)) {
			t.Fatalf("envelope %+v", m)
		}
		if (m.Pattern != nil) != (pattern != "") || (m.Pattern != nil && *m.Pattern != string([]rune(pattern))) {
			t.Fatalf("pattern %v, want %q", m.Pattern, pattern)
		}
		if utf8.ValidString(payload) && json.Valid([]byte(payload)) {
			if string(m.Data) != strings.TrimSpace(payload) {
				t.Fatalf("data %s, want %s verbatim", m.Data, payload)
			}
		} else {
			if bytes.ContainsFunc(m.Data, func(r rune) bool { return r < 0x20 }) {
				t.Fatalf("data %q: control characters must be escaped", m.Data)
			}
			var s string
			if err := json.Unmarshal(m.Data, &s); err != nil || s != string([]rune(payload)) {
				t.Fatalf("data %s: want JSON string of %q (%v)", m.Data, payload, err)
			}
		}
	})
}

func TestBuildDataAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items on purpose under -race; make test runs this without -race")
	}
	now := time.Now()
	payload := jsonPayload(200)
	tests := []struct {
		name    string
		pattern string
		payload string
		// gap > 0 is a known gap: up to gap allocations per call are
		// reported, more fail.
		gap float64
	}{
		{name: "json 200B", payload: payload},
		{name: "json 200B with pattern", pattern: "orders.*", payload: payload},
		{name: "json 2KB", payload: jsonPayload(2048)},
		// Plain text is told from JSON by its first byte: no json.Valid.
		{name: "text 200B", payload: strings.Repeat("plain text ", 18)},
		{name: "escapes and invalid UTF-8", payload: strings.Repeat("a\"b\\c\nd\x01\xff", 20)},
		// Known gap: a payload that starts like JSON but is not goes
		// through encoding/json.Valid, which allocates the *SyntaxError
		// (and its message) it then discards: 4 allocations per call.
		// Bounded so that it cannot grow unnoticed, reported until
		// isJSON uses an allocation-free validator.
		{name: "brace then text", payload: "{" + strings.Repeat("x", 199), gap: 4},
		{name: "digit then text", payload: "1" + strings.Repeat("z", 199), gap: 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 10 {
				BuildData(1, "orders.eu", tt.pattern, tt.payload, now).Release()
			}
			allocs := testing.AllocsPerRun(1000, func() {
				BuildData(12345, "orders.eu", tt.pattern, tt.payload, now).Release()
			})
			switch {
			case allocs > tt.gap:
				t.Fatalf("BuildData allocates %v times per call in steady state, want at most %v", allocs, tt.gap)
			case allocs != 0:
				t.Logf("known gap: BuildData allocates %v times per call for a payload that starts like JSON but is not (json.Valid's SyntaxError)", allocs)
			}
		})
	}
	t.Run("replies", func(t *testing.T) {
		id := []byte(`"req-1"`)
		chans := []string{"a", "b"}
		allocs := testing.AllocsPerRun(1000, func() {
			NewPong(id, now).Release()
			NewSubscribed(chans, id, now).Release()
			NewError(CodeForbidden, "no", chans, id, now).Release()
		})
		if allocs != 0 {
			t.Fatalf("reply builders allocate %v times in steady state, want 0", allocs)
		}
	})
}

// jsonPayload returns a JSON object of exactly n bytes (n >= 16).
func jsonPayload(n int) string {
	const head = `{"id":123,"v":"`
	const tail = `"}`
	return head + strings.Repeat("x", n-len(head)-len(tail)) + tail
}
