package wsproto

import (
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseStreamID(t *testing.T) {
	tests := []struct {
		in   string
		want StreamID
		ok   bool
	}{
		{"0-0", StreamID{}, true},
		{"1-0", StreamID{1, 0}, true},
		{"1764660000000-0", StreamID{1764660000000, 0}, true},
		{"1764660000123-4", StreamID{1764660000123, 4}, true},
		{"18446744073709551615-18446744073709551615", MaxStreamID, true},
		{"0-18446744073709551615", StreamID{0, math.MaxUint64}, true},
		// Overflow, by one and by a digit.
		{"18446744073709551616-0", StreamID{}, false},
		{"1-18446744073709551616", StreamID{}, false},
		{"99999999999999999999-0", StreamID{}, false},
		{"100000000000000000000-0", StreamID{}, false},
		// Redis takes these (strtoull, or a missing seq); the gateway does not.
		{"1", StreamID{}, false},
		{"01-0", StreamID{}, false},
		{"1-00", StreamID{}, false},
		{"00-0", StreamID{}, false},
		{"+1-0", StreamID{}, false},
		{" 1-0", StreamID{}, false},
		{"1-0 ", StreamID{}, false},
		{"1 -0", StreamID{}, false},
		{"-1-0", StreamID{}, false},
		{"1--0", StreamID{}, false},
		{"1-0-0", StreamID{}, false},
		{"1-", StreamID{}, false},
		{"-0", StreamID{}, false},
		{"-", StreamID{}, false},
		{"", StreamID{}, false},
		{"abc", StreamID{}, false},
		{"1-a", StreamID{}, false},
		{"1-*", StreamID{}, false},
		{"$", StreamID{}, false},
		{"+", StreamID{}, false},
		{"(1-0", StreamID{}, false},
		{"1.5-0", StreamID{}, false},
		{"1e3-0", StreamID{}, false},
		{"１-0", StreamID{}, false}, // a fullwidth digit
		{"1-0\x00", StreamID{}, false},
	}
	for _, tt := range tests {
		t.Run(strconv.Quote(tt.in), func(t *testing.T) {
			got, ok := ParseStreamID(tt.in)
			if ok != tt.ok || got != tt.want {
				t.Fatalf("ParseStreamID(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
			}
			if ok && got.String() != tt.in {
				t.Fatalf("String() = %q, want %q back", got.String(), tt.in)
			}
		})
	}
}

func TestStreamIDOrder(t *testing.T) {
	max := uint64(math.MaxUint64)
	ids := []StreamID{{0, 0}, {0, 1}, {0, max}, {1, 0}, {1, 1}, {2, 0}, {max, max - 1}, {max, max}}
	for i, a := range ids {
		for j, b := range ids {
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got := a.Compare(b); got != want {
				t.Errorf("%v.Compare(%v) = %d, want %d", a, b, got, want)
			}
			if got := a.Less(b); got != (want < 0) {
				t.Errorf("%v.Less(%v) = %v", a, b, got)
			}
		}
	}
	// Consecutive IDs: nothing lies between them.
	for _, p := range [][2]StreamID{{{0, 0}, {0, 1}}, {{0, max}, {1, 0}}, {{1, 0}, {1, 1}}, {{1, max}, {2, 0}}, {{max, max - 1}, {max, max}}} {
		if n, ok := p[0].Next(); !ok || n != p[1] {
			t.Errorf("%v.Next() = %v, %v; want %v", p[0], n, ok, p[1])
		}
		if pr, ok := p[1].Prev(); !ok || pr != p[0] {
			t.Errorf("%v.Prev() = %v, %v; want %v", p[1], pr, ok, p[0])
		}
	}
	if _, ok := MaxStreamID.Next(); ok {
		t.Error("MaxStreamID.Next() reported an ID above the maximum")
	}
	if _, ok := (StreamID{}).Prev(); ok {
		t.Error("0-0 .Prev() reported an ID below 0-0")
	}
	if !(StreamID{}).IsZero() || (StreamID{0, 1}).IsZero() {
		t.Error("IsZero")
	}
}

// FuzzParseStreamID: an ID is accepted exactly when it is two canonical
// decimal uint64 joined by '-' (checked against strconv), and accepted
// IDs read back from their String.
func FuzzParseStreamID(f *testing.F) {
	for _, s := range []string{"0-0", "1-0", "1764660000123-4", "18446744073709551615-18446744073709551615",
		"18446744073709551616-0", "99999999999999999999-0", "01-0", "+1-0", " 1-0", "1", "1-", "-1-0", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, ok := ParseStreamID(s)
		want := false
		if ms, seq, found := strings.Cut(s, "-"); found {
			a, errA := strconv.ParseUint(ms, 10, 64)
			b, errB := strconv.ParseUint(seq, 10, 64)
			// strconv takes leading zeros ("01") and nothing else we refuse.
			want = errA == nil && errB == nil && strconv.FormatUint(a, 10) == ms && strconv.FormatUint(b, 10) == seq
			if want && id != (StreamID{a, b}) {
				t.Fatalf("ParseStreamID(%q) = %v, want %d-%d", s, id, a, b)
			}
		}
		if ok != want {
			t.Fatalf("ParseStreamID(%q) ok = %v, want %v", s, ok, want)
		}
		if ok && id.String() != s {
			t.Fatalf("ParseStreamID(%q).String() = %q", s, id.String())
		}
	})
}

func TestParseStreamIDAllocs(t *testing.T) {
	var sink StreamID
	if a := testing.AllocsPerRun(1000, func() { sink, _ = ParseStreamID("1764660000123-4") }); a != 0 {
		t.Fatalf("ParseStreamID allocates %v times, want 0", a)
	}
	if sink.String() != "1764660000123-4" {
		t.Fatalf("parsed %v", sink)
	}
}

// durableFrame decodes a frame built by BuildEntry, BuildReplay or
// NewReplayed, checking it is one valid text frame, and returns its keys in
// order and their values.
func durableFrame(tb testing.TB, f *Frame) ([]string, map[string]json.RawMessage) {
	tb.Helper()
	p := checkTextFrame(tb, f.Bytes())
	if !json.Valid(p) {
		tb.Fatalf("payload is not valid JSON: %s", p)
	}
	return objectKeys(tb, p)
}

func TestBuildEntryAndReplay(t *testing.T) {
	received := time.Date(2026, 1, 9, 10, 30, 0, 123_456_789, time.UTC)
	id := StreamID{1764660000123, 4}
	tests := []struct {
		name     string
		build    func() *Frame
		wantKeys []string
		seq      uint64
		pattern  string
		data     string
	}{
		{"live exact", func() *Frame { return BuildEntry(7, "e:s:N", "", id, `{"side":"buy"}`, received) },
			[]string{"type", "seq", "channel", "id", "data", "timestamp"}, 7, "", `{"side":"buy"}`},
		{"live pattern", func() *Frame { return BuildEntry(8, "e:s:N", "e:s:*", id, `{"side":"buy"}`, received) },
			[]string{"type", "seq", "channel", "pattern", "id", "data", "timestamp"}, 8, "e:s:*", `{"side":"buy"}`},
		{"live without the field", func() *Frame { return BuildEntry(9, "e:s:N", "", id, "null", received) },
			[]string{"type", "seq", "channel", "id", "data", "timestamp"}, 9, "", `null`},
		{"replay exact", func() *Frame { return BuildReplay("e:s:N", "", id, "plain text", received) },
			[]string{"type", "channel", "id", "replay", "data", "timestamp"}, 0, "", `"plain text"`},
		{"replay pattern", func() *Frame { return BuildReplay("e:s:N", "e:s:*", id, `[1]`, received) },
			[]string{"type", "channel", "pattern", "id", "replay", "data", "timestamp"}, 0, "e:s:*", `[1]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.build()
			defer f.Release()
			keys, vals := durableFrame(t, f)
			if !slices.Equal(keys, tt.wantKeys) {
				t.Fatalf("keys %q, want %q", keys, tt.wantKeys)
			}
			if jsonString(t, vals["type"]) != "data" || jsonString(t, vals["channel"]) != "e:s:N" ||
				jsonString(t, vals["id"]) != "1764660000123-4" || string(vals["data"]) != tt.data {
				t.Fatalf("fields %s", f.Bytes()[2:])
			}
			if tt.pattern != "" && jsonString(t, vals["pattern"]) != tt.pattern {
				t.Fatalf("pattern %s", vals["pattern"])
			}
			if tt.seq != 0 && string(vals["seq"]) != strconv.FormatUint(tt.seq, 10) {
				t.Fatalf("seq %s, want %d", vals["seq"], tt.seq)
			}
			if r, ok := vals["replay"]; ok && string(r) != "true" {
				t.Fatalf("replay %s", r)
			}
			if f.Seq() != tt.seq || f.Received() != received.UnixNano() {
				t.Fatalf("Seq() %d Received() %d", f.Seq(), f.Received())
			}
			checkTimestamp(t, vals["timestamp"], received)
		})
	}
}

func TestNewReplayed(t *testing.T) {
	now := time.Date(2026, 1, 9, 10, 30, 0, 130_000_000, time.UTC)
	f := NewReplayed("e:s:*", 12, StreamID{1764660000122, math.MaxUint64}, []byte(`"r"`), now)
	defer f.Release()
	keys, vals := durableFrame(t, f)
	if want := []string{"type", "channel", "count", "lastId", "requestId", "timestamp"}; !slices.Equal(keys, want) {
		t.Fatalf("keys %q, want %q", keys, want)
	}
	if jsonString(t, vals["type"]) != "replayed" || jsonString(t, vals["channel"]) != "e:s:*" || string(vals["count"]) != "12" ||
		jsonString(t, vals["lastId"]) != "1764660000122-18446744073709551615" || jsonString(t, vals["requestId"]) != "r" {
		t.Fatalf("fields %s", f.Bytes()[2:])
	}
	checkTimestamp(t, vals["timestamp"], now)
}

func TestNewReplayTruncated(t *testing.T) {
	now := time.Date(2026, 1, 9, 10, 30, 0, 100_000_000, time.UTC)
	tests := []struct {
		name string
		tr   Truncation
		want string // the fields between "message" and "requestId"
	}{
		{"max_replay", Truncation{Stream: "e:s:*", Channels: []string{"e:s:N"}, Reason: ReasonMaxReplay,
			Since: StreamID{1764650000000, 0}, HasSince: true, From: StreamID{1764659990000, 7}, HasFrom: true},
			`"stream":"e:s:*","channels":["e:s:N"],"reason":"max_replay","since":"1764650000000-0","from":"1764659990000-7"`},
		{"trimmed to nothing, no since of its own", Truncation{Stream: "e:s:*", Channels: []string{"e:s:A", "e:s:B"}, Reason: ReasonTrimmed},
			`"stream":"e:s:*","channels":["e:s:A","e:s:B"],"reason":"trimmed","since":null,"from":null`},
		{"reset", Truncation{Stream: "e:s:N", Channels: []string{"e:s:N"}, Reason: ReasonReset, Since: StreamID{5, 0}, HasSince: true},
			`"stream":"e:s:N","channels":["e:s:N"],"reason":"reset","since":"5-0","from":null`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := NewReplayTruncated(tt.tr, []byte("7"), now)
			defer f.Release()
			keys, vals := durableFrame(t, f)
			if want := []string{"type", "code", "message", "stream", "channels", "reason", "since", "from", "requestId", "timestamp"}; !slices.Equal(keys, want) {
				t.Fatalf("keys %q, want %q", keys, want)
			}
			if jsonString(t, vals["type"]) != "error" || jsonString(t, vals["code"]) != string(CodeReplayTruncated) ||
				jsonString(t, vals["message"]) == "" || string(vals["requestId"]) != "7" {
				t.Fatalf("envelope %s", f.Bytes()[2:])
			}
			if p := string(checkTextFrame(t, f.Bytes())); !strings.Contains(p, tt.want) {
				t.Fatalf("frame %s\nwant it to contain %s", p, tt.want)
			}
		})
	}
}

// FuzzBuildEntry: whatever the channel, pattern, ID and payload, live and
// replay frames are valid text frames of valid JSON whose id reads back.
func FuzzBuildEntry(f *testing.F) {
	f.Add(uint64(1), uint64(1764660000123), uint64(4), "ch", "", `{"a":1}`)
	f.Add(uint64(2), uint64(math.MaxUint64), uint64(math.MaxUint64), "c\xff", "p\x00", "\xff\"\\\x01")
	now := time.Unix(1700000000, 123456789)
	f.Fuzz(func(t *testing.T, seq, ms, idSeq uint64, channel, pattern, payload string) {
		id := StreamID{ms, idSeq}
		for _, fr := range []*Frame{BuildEntry(seq, channel, pattern, id, payload, now), BuildReplay(channel, pattern, id, payload, now)} {
			_, vals := durableFrame(t, fr)
			if got, ok := ParseStreamID(jsonString(t, vals["id"])); !ok || got != id {
				t.Fatalf("id %s, want %v", vals["id"], id)
			}
			if got := jsonString(t, vals["channel"]); got != string([]rune(channel)) {
				t.Fatalf("channel %q, want %q", got, channel)
			}
			fr.Release()
		}
	})
}

func TestBuildEntryAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items on purpose under -race; make test runs this without -race")
	}
	now := time.Now()
	payload := jsonPayload(200)
	id := StreamID{1764660000123, 4}
	rid := []byte(`"r"`)
	tests := []struct {
		name string
		fn   func()
	}{
		{"BuildEntry", func() { BuildEntry(12345, "e:s:N", "e:s:*", id, payload, now).Release() }},
		{"BuildReplay", func() { BuildReplay("e:s:N", "e:s:*", id, payload, now).Release() }},
		{"NewReplayed", func() { NewReplayed("e:s:*", 12, id, rid, now).Release() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 10 {
				tt.fn()
			}
			if a := testing.AllocsPerRun(1000, tt.fn); a != 0 {
				t.Fatalf("%s allocates %v times per call in steady state, want 0", tt.name, a)
			}
		})
	}
}
