package wsproto

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestParseCommand(t *testing.T) {
	name256 := strings.Repeat("n", 256)
	name257 := strings.Repeat("n", 257)
	id128 := strings.Repeat("i", 128)
	id129 := strings.Repeat("i", 129)
	const badName = "invalid channel name: names are 1 to 256 bytes with no whitespace or control characters"

	tests := []struct {
		name string
		in   string
		// success
		want Command
		// failure
		wantErr      ErrorCode
		wantMsg      string   // substring of the message, when set
		wantErrChans []string // offending channels
		wantErrReqID string   // requestId echoed in the error
	}{
		// Valid commands.
		{name: "subscribe", in: `{"action":"subscribe","channels":["a","b.c"]}`,
			want: Command{Action: ActionSubscribe, Channels: []string{"a", "b.c"}}},
		{name: "unsubscribe", in: `{"action":"unsubscribe","channels":["a"]}`,
			want: Command{Action: ActionUnsubscribe, Channels: []string{"a"}}},
		{name: "ping", in: `{"action":"ping"}`, want: Command{Action: ActionPing}},
		{name: "ping ignores channels", in: `{"action":"ping","channels":42}`, want: Command{Action: ActionPing}},
		{name: "surrounding whitespace", in: " \n\t{\"action\":\"ping\"}\r\n ", want: Command{Action: ActionPing}},
		{name: "unknown fields ignored", in: `{"action":"ping","extra":{"x":[1]}}`, want: Command{Action: ActionPing}},
		{name: "pattern and unicode", in: `{"action":"subscribe","channels":["orders.*","日本","é"]}`,
			want: Command{Action: ActionSubscribe, Channels: []string{"orders.*", "日本", "é"}}},
		{name: "escaped name", in: `{"action":"subscribe","channels":["\u0061b"]}`,
			want: Command{Action: ActionSubscribe, Channels: []string{"ab"}}},
		{name: "duplicates deduplicated", in: `{"action":"subscribe","channels":["a","b","a","c","b","a"]}`,
			want: Command{Action: ActionSubscribe, Channels: []string{"a", "b", "c"}}},
		{name: "256-byte name", in: `{"action":"subscribe","channels":["` + name256 + `"]}`,
			want: Command{Action: ActionSubscribe, Channels: []string{name256}}},

		// requestId.
		{name: "requestId string", in: `{"action":"ping","requestId":"r-1"}`,
			want: Command{Action: ActionPing, RequestID: []byte(`"r-1"`)}},
		{name: "requestId string re-encoded", in: `{"action":"ping","requestId":"\u0041\/b"}`,
			want: Command{Action: ActionPing, RequestID: []byte(`"A/b"`)}},
		{name: "requestId number", in: `{"action":"ping","requestId":42}`,
			want: Command{Action: ActionPing, RequestID: []byte(`42`)}},
		{name: "requestId negative float", in: `{"action":"ping","requestId":-1.5e3}`,
			want: Command{Action: ActionPing, RequestID: []byte(`-1.5e3`)}},
		{name: "requestId null", in: `{"action":"ping","requestId":null}`, want: Command{Action: ActionPing}},
		{name: "requestId absent", in: `{"action":"ping"}`, want: Command{Action: ActionPing}},
		{name: "requestId exactly 128", in: `{"action":"ping","requestId":"` + id128 + `"}`,
			want: Command{Action: ActionPing, RequestID: []byte(`"` + id128 + `"`)}},
		{name: "requestId 129", in: `{"action":"ping","requestId":"` + id129 + `"}`,
			wantErr: CodeBadRequest, wantMsg: "longer than 128"},
		{name: "requestId number too long", in: `{"action":"ping","requestId":` + strings.Repeat("1", 129) + `}`,
			wantErr: CodeBadRequest},
		{name: "requestId object", in: `{"action":"ping","requestId":{"a":1}}`, wantErr: CodeBadRequest, wantMsg: "requestId"},
		{name: "requestId array", in: `{"action":"ping","requestId":["a"]}`, wantErr: CodeBadRequest, wantMsg: "requestId"},
		{name: "requestId bool", in: `{"action":"ping","requestId":true}`, wantErr: CodeBadRequest, wantMsg: "requestId"},

		// Not a command object.
		{name: "empty", in: ``, wantErr: CodeBadRequest},
		{name: "whitespace", in: " \n ", wantErr: CodeBadRequest},
		{name: "not JSON", in: `subscribe a`, wantErr: CodeBadRequest},
		{name: "truncated object", in: `{"action":"ping"`, wantErr: CodeBadRequest},
		{name: "trailing garbage", in: `{"action":"ping"} x`, wantErr: CodeBadRequest},
		{name: "JSON array", in: `[{"action":"ping"}]`, wantErr: CodeBadRequest},
		{name: "JSON string", in: `"ping"`, wantErr: CodeBadRequest},
		{name: "JSON null", in: `null`, wantErr: CodeBadRequest},

		// action.
		{name: "action missing", in: `{"channels":["a"],"requestId":"m"}`, wantErr: CodeBadRequest, wantMsg: "action", wantErrReqID: `"m"`},
		{name: "action number", in: `{"action":1,"requestId":2}`, wantErr: CodeBadRequest, wantMsg: "action", wantErrReqID: `2`},
		{name: "action unknown", in: `{"action":"publish","channels":["a"],"requestId":"u"}`, wantErr: CodeUnknownAction, wantErrReqID: `"u"`},
		{name: "action wrong case", in: `{"action":"Subscribe","channels":["a"]}`, wantErr: CodeUnknownAction},

		// channels.
		{name: "channels missing", in: `{"action":"subscribe","requestId":"c"}`, wantErr: CodeBadRequest, wantMsg: "channels", wantErrReqID: `"c"`},
		{name: "channels null", in: `{"action":"unsubscribe","channels":null}`, wantErr: CodeBadRequest, wantMsg: "channels"},
		{name: "channels string", in: `{"action":"subscribe","channels":"a"}`, wantErr: CodeBadRequest, wantMsg: "channels"},
		{name: "channels object", in: `{"action":"subscribe","channels":{"a":1}}`, wantErr: CodeBadRequest, wantMsg: "channels"},
		{name: "channels with a number", in: `{"action":"subscribe","channels":["a",1]}`, wantErr: CodeBadRequest, wantMsg: "channels"},
		{name: "channels empty array", in: `{"action":"subscribe","channels":[]}`, wantErr: CodeBadRequest, wantMsg: "empty"},
		{name: "empty name", in: `{"action":"subscribe","channels":["a",""],"requestId":9}`,
			wantErr: CodeBadRequest, wantMsg: badName, wantErrChans: []string{""}, wantErrReqID: `9`},
		{name: "257-byte name", in: `{"action":"subscribe","channels":["` + name257 + `"]}`,
			wantErr: CodeBadRequest, wantMsg: badName, wantErrChans: []string{name256 + "…"}},
		{name: "name with space", in: `{"action":"subscribe","channels":["a b"]}`,
			wantErr: CodeBadRequest, wantErrChans: []string{"a b"}},
		{name: "name with tab", in: `{"action":"subscribe","channels":["a\tb"]}`,
			wantErr: CodeBadRequest, wantErrChans: []string{"a\tb"}},
		{name: "name with newline", in: `{"action":"subscribe","channels":["a\nb"]}`,
			wantErr: CodeBadRequest, wantErrChans: []string{"a\nb"}},
		{name: "name with NUL", in: `{"action":"subscribe","channels":["a\u0000b"]}`,
			wantErr: CodeBadRequest, wantErrChans: []string{"a\x00b"}},
		{name: "name with NBSP", in: `{"action":"unsubscribe","channels":["a\u00a0b"]}`,
			wantErr: CodeBadRequest, wantErrChans: []string{"a\u00a0b"}},
		{name: "name with U+2028", in: `{"action":"subscribe","channels":["a\u2028b"]}`,
			wantErr: CodeBadRequest, wantErrChans: []string{"a\u2028b"}},
		{name: "name with DEL", in: `{"action":"subscribe","channels":["a\u007fb"]}`,
			wantErr: CodeBadRequest, wantErrChans: []string{"a\x7fb"}},
		{name: "several bad names", in: `{"action":"subscribe","channels":["ok"," x","fine","y\n"],"requestId":"s"}`,
			wantErr: CodeBadRequest, wantErrChans: []string{" x", "y\n"}, wantErrReqID: `"s"`},
		{name: "null name", in: `{"action":"subscribe","channels":["a",null]}`,
			wantErr: CodeBadRequest, wantMsg: badName, wantErrChans: []string{""}},
		{name: "zero width space", in: `{"action":"subscribe","channels":["a\u200bb"]}`,
			wantErr: CodeBadRequest, wantErrChans: []string{"a\u200bb"}},

		// Field names match without regard to case, as encoding/json
		// matched them; the last of repeated fields wins.
		{name: "upper-case fields", in: `{"ACTION":"subscribe","Channels":["a"],"RequestId":1}`,
			want: Command{Action: ActionSubscribe, Channels: []string{"a"}, RequestID: []byte(`1`)}},
		{name: "repeated action", in: `{"action":"subscribe","action":"ping"}`, want: Command{Action: ActionPing}},
		{name: "lone surrogate", in: `{"action":"subscribe","channels":["a\ud800b"]}`,
			want: Command{Action: ActionSubscribe, Channels: []string{"a\ufffdb"}}},
		{name: "invalid UTF-8 name", in: "{\"action\":\"subscribe\",\"channels\":[\"a\xffb\"]}",
			want: Command{Action: ActionSubscribe, Channels: []string{"a\ufffdb"}}},

		// since.
		{name: "since", in: `{"action":"subscribe","channels":["e:s:*","m:t"],"since":{"e:s:*":"1764660000000-0"},"requestId":"r"}`,
			want: Command{Action: ActionSubscribe, Channels: []string{"e:s:*", "m:t"},
				Since: []SinceEntry{{"e:s:*", "1764660000000-0"}}, RequestID: []byte(`"r"`)}},
		{name: "since in key order, repeated key keeps its place and last ID",
			in: `{"action":"subscribe","channels":["a","b","c"],"since":{"b":"1","a":"2","b":"3"}}`,
			want: Command{Action: ActionSubscribe, Channels: []string{"a", "b", "c"},
				Since: []SinceEntry{{"b", "3"}, {"a", "2"}}}},
		{name: "since null", in: `{"action":"subscribe","channels":["a"],"since":null}`,
			want: Command{Action: ActionSubscribe, Channels: []string{"a"}}},
		{name: "since empty", in: `{"action":"subscribe","channels":["a"],"since":{}}`,
			want: Command{Action: ActionSubscribe, Channels: []string{"a"}}},
		{name: "since ignored by unsubscribe", in: `{"action":"unsubscribe","channels":["a"],"since":[1]}`,
			want: Command{Action: ActionUnsubscribe, Channels: []string{"a"}}},
		{name: "since IDs unchecked", in: `{"action":"subscribe","channels":["a"],"since":{"a":"99999999999999999999-0"}}`,
			want: Command{Action: ActionSubscribe, Channels: []string{"a"}, Since: []SinceEntry{{"a", "99999999999999999999-0"}}}},
		{name: "since array", in: `{"action":"subscribe","channels":["a"],"since":["a"],"requestId":3}`,
			wantErr: CodeBadRequest, wantMsg: `"since" must be an object of strings`, wantErrReqID: `3`},
		{name: "since number ID", in: `{"action":"subscribe","channels":["a"],"since":{"a":1}}`,
			wantErr: CodeBadRequest, wantMsg: `"since" must be an object of strings`},
		{name: "since null ID", in: `{"action":"subscribe","channels":["a"],"since":{"a":null}}`,
			wantErr: CodeBadRequest, wantMsg: `"since" must be an object of strings`},
		{name: "since names other channels, the server decides", in: `{"action":"subscribe","channels":["a:*"],"since":{"a:b":"1","a:*":"1","c":"2","a:b":"3"}}`,
			want: Command{Action: ActionSubscribe, Channels: []string{"a:*"},
				Since: []SinceEntry{{"a:b", "3"}, {"a:*", "1"}, {"c", "2"}}}},
		{name: "since keys past the linear lookup", in: `{"action":"subscribe","channels":["a:*"],"since":{` +
			func() string {
				var m []string
				for i := range 20 {
					m = append(m, fmt.Sprintf(`"a:%d":"%d-0"`, i%18, i))
				}
				return strings.Join(m, ",")
			}() + `}}`,
			want: Command{Action: ActionSubscribe, Channels: []string{"a:*"}, Since: func() []SinceEntry {
				var e []SinceEntry
				for i := range 18 {
					id := i
					if i < 2 {
						id += 18
					}
					e = append(e, SinceEntry{fmt.Sprintf("a:%d", i), fmt.Sprintf("%d-0", id)})
				}
				return e
			}()}},
		{name: "since key not a channel name", in: `{"action":"subscribe","channels":["a"],"since":{"b c":"1","a":"1","":"2"}}`,
			wantErr: CodeBadRequest, wantMsg: `invalid "since" key`, wantErrChans: []string{"b c", ""}},
		{name: "since too long", in: `{"action":"subscribe","channels":["a"],"since":{` +
			strings.Repeat(`"a":"1",`, MaxSinceEntries) + `"a":"2"}}`,
			wantErr: CodeBadRequest, wantMsg: "more than 1024 entries"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			orig := string(in)
			cmd, cerr := ParseCommand(in)
			if string(in) != orig {
				t.Fatal("ParseCommand modified its input")
			}
			if tt.wantErr == "" {
				if cerr != nil {
					t.Fatalf("error %v (%+v), want %+v", cerr, cerr, tt.want)
				}
				if cmd.Action != tt.want.Action || !slices.Equal(cmd.Channels, tt.want.Channels) ||
					!slices.Equal(cmd.Since, tt.want.Since) || (cmd.Since == nil) != (tt.want.Since == nil) ||
					string(cmd.RequestID) != string(tt.want.RequestID) || (cmd.RequestID == nil) != (tt.want.RequestID == nil) {
					t.Fatalf("got %v %q %q %s, want %v %q %q %s", cmd.Action, cmd.Channels, cmd.Since, cmd.RequestID,
						tt.want.Action, tt.want.Channels, tt.want.Since, tt.want.RequestID)
				}
				return
			}
			if cerr == nil {
				t.Fatalf("no error, got %+v; want %s", cmd, tt.wantErr)
			}
			if cmd.Action != 0 || cmd.Channels != nil || cmd.Since != nil || cmd.RequestID != nil {
				t.Errorf("failed parse returned a non-zero command %+v", cmd)
			}
			if cerr.Code != tt.wantErr {
				t.Errorf("code %s, want %s (%s)", cerr.Code, tt.wantErr, cerr.Message)
			}
			if cerr.Message == "" || !strings.Contains(cerr.Message, tt.wantMsg) {
				t.Errorf("message %q, want it to contain %q", cerr.Message, tt.wantMsg)
			}
			if !slices.Equal(cerr.Channels, tt.wantErrChans) {
				t.Errorf("error channels %q, want %q", cerr.Channels, tt.wantErrChans)
			}
			if string(cerr.RequestID) != tt.wantErrReqID {
				t.Errorf("error requestId %s, want %s", cerr.RequestID, tt.wantErrReqID)
			}
			var target *CommandError
			if !errors.As(error(cerr), &target) || !strings.Contains(cerr.Error(), string(tt.wantErr)) {
				t.Errorf("Error() = %q", cerr.Error())
			}
		})
	}
}

func TestParseCommandRequestIDIsCopied(t *testing.T) {
	in := []byte(`{"action":"ping","requestId":12345}`)
	cmd, cerr := ParseCommand(in)
	if cerr != nil {
		t.Fatal(cerr)
	}
	for i := range in {
		in[i] = 'X'
	}
	if string(cmd.RequestID) != "12345" {
		t.Fatalf("RequestID aliases the input: %q", cmd.RequestID)
	}
}

// TestParseCommandAllocs: a command allocates what it keeps and nothing
// else (the parser runs on the event loop for every connecting socket).
func TestParseCommandAllocs(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want float64
	}{
		{"subscribe one channel", `{"action":"subscribe","channels":["market:tick:NIFTY"]}`, 2},            // slice, name
		{"with requestId", `{"action":"subscribe","channels":["market:tick:NIFTY"],"requestId":"r-1"}`, 3}, // + requestId
		{"numeric requestId", `{"action":"subscribe","channels":["orders"],"requestId":12}`, 3},
		{"escaped name", `{"action":"subscribe","channels":["market:tick:\u004eIFTY"]}`, 2},
		{"repeated name", `{"action":"subscribe","channels":["aa","aa","bb","aa"]}`, 3}, // slice, aa, bb
		{"ping", `{"action":"ping","requestId":"\u0072-1"}`, 1},
		{"since", `{"action":"subscribe","channels":["s:*"],"since":{"s:*":"1-0"}}`, 4},                      // + since slice, ID
		{"since of a matched channel", `{"action":"subscribe","channels":["s:*"],"since":{"s:a":"1-0"}}`, 5}, // + its name
		{"skipped values", `{"action":"ping","x":{"y":[1,2,{"z":"\u00e9"}]},"Since":{"a":1}}`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			if _, cerr := ParseCommand(in); cerr != nil {
				t.Fatal(cerr)
			}
			if got := testing.AllocsPerRun(1000, func() { ParseCommand(in) }); got != tt.want {
				t.Fatalf("ParseCommand allocates %v times, want %v", got, tt.want)
			}
		})
	}
}

func TestValidateChannel(t *testing.T) {
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"simple", "orders", true},
		{"pattern", "orders.*", true},
		{"punctuation", "a:b/c-d_e[1]?", true},
		{"unicode", "日本語", true},
		{"256 bytes", strings.Repeat("x", 256), true},
		{"256 bytes multibyte", strings.Repeat("é", 128), true},
		{"empty", "", false},
		{"257 bytes", strings.Repeat("x", 257), false},
		{"invalid utf8", "a\xffb", false},
		{"space", "a b", false},
		{"C0", "a\x1fb", false},
		{"DEL", "a\x7f", false},
		{"C1", "a\u0085", false},
		{"NBSP", "\u00a0", false},
		{"ogham space", "\u1680", false},
		{"em space", "a\u2003", false},
		{"zero width space", "a\u200b", false},
		{"line separator", "\u2028", false},
		{"paragraph separator", "\u2029", false},
		{"narrow nbsp", "\u202f", false},
		{"math space", "\u205f", false},
		{"ideographic space", "\u3000", false},
		{"BOM", "\ufeffa", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateChannel(tt.in)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidateChannel(%q) = %v, want ok=%v", tt.in, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrBadChannel) {
				t.Fatalf("error %v does not wrap ErrBadChannel", err)
			}
		})
	}
}

func TestActionString(t *testing.T) {
	for a, want := range map[Action]string{
		ActionSubscribe: "subscribe", ActionUnsubscribe: "unsubscribe", ActionPing: "ping", 0: "unknown", 99: "unknown",
	} {
		if got := a.String(); got != want {
			t.Errorf("Action(%d).String() = %q, want %q", a, got, want)
		}
	}
}

func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{
		`{"action":"subscribe","channels":["a","b","a"],"requestId":"x"}`,
		`{"action":"unsubscribe","channels":["a.*"],"requestId":12}`,
		`{"action":"ping","requestId":null}`,
		`{"action":"subscribe","channels":["a b","\u0000",""]}`,
		`{"action":"subscribe","channels":[1]}`,
		`{"action":7}`,
		`{"action":"ping","requestId":"\ud800\udc00\u0000"}`,
		`{"action":"ping","requestId":-0.0e-0}`,
		`{"action":"subscribe","channels":["` + strings.Repeat("\u00e9", 200) + `"]}`,
		"{\"action\":\"subscribe\",\"channels\":[\"\xff\"]}",
		`{"action":"subscribe","channels":["a","b"],"since":{"a":"1-0","b":"2","a":"3"}}`,
		`{"action":"subscribe","channels":["a"],"since":{"c":"1"}}`,
		`[1]`, `{`, ``, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		cmd, cerr := ParseCommand(in)
		if cerr != nil {
			if cerr.Code == "" || cerr.Message == "" {
				t.Fatalf("error without code or message: %+v", cerr)
			}
			if cerr.RequestID != nil && !json.Valid(cerr.RequestID) {
				t.Fatalf("error requestId %q is not valid JSON", cerr.RequestID)
			}
			if cmd.Action != 0 || cmd.Channels != nil || cmd.Since != nil || cmd.RequestID != nil {
				t.Fatalf("failed parse returned %+v", cmd)
			}
			for _, c := range cerr.Channels {
				if len(c) > MaxChannelLen+len("…") {
					t.Fatalf("offending channel of %d bytes is not truncated", len(c))
				}
			}
			return
		}
		if cmd.RequestID != nil {
			if !json.Valid(cmd.RequestID) {
				t.Fatalf("RequestID %q is not valid JSON", cmd.RequestID)
			}
			if c := cmd.RequestID[0]; c != '"' && c != '-' && (c < '0' || c > '9') {
				t.Fatalf("RequestID %q is neither a string nor a number", cmd.RequestID)
			}
		}
		switch cmd.Action {
		case ActionPing:
			if cmd.Channels != nil {
				t.Fatalf("ping with channels %q", cmd.Channels)
			}
		case ActionSubscribe, ActionUnsubscribe:
			if cmd.Since != nil && (cmd.Action != ActionSubscribe || len(cmd.Since) == 0 || len(cmd.Since) > MaxSinceEntries) {
				t.Fatalf("%v with since %q for channels %q", cmd.Action, cmd.Since, cmd.Channels)
			}
			for i, e := range cmd.Since {
				if ValidateChannel(e.Channel) != nil || slices.ContainsFunc(cmd.Since[:i], func(o SinceEntry) bool { return o.Channel == e.Channel }) {
					t.Fatalf("since %q: entry %q not one per valid channel name", cmd.Since, e.Channel)
				}
			}
			if len(cmd.Channels) == 0 {
				t.Fatal("subscribe/unsubscribe without channels")
			}
			seen := map[string]bool{}
			for _, c := range cmd.Channels {
				if err := ValidateChannel(c); err != nil {
					t.Fatalf("accepted channel %q: %v", c, err)
				}
				if seen[c] {
					t.Fatalf("duplicate channel %q", c)
				}
				seen[c] = true
			}
		default:
			t.Fatalf("accepted action %d", cmd.Action)
		}
	})
}
