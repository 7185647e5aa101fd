package wsproto

import (
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

func BenchmarkBuildData(b *testing.B) {
	for _, tc := range []struct {
		name string
		size int
	}{{"200B", 200}, {"2KB", 2048}} {
		payload := jsonPayload(tc.size)
		now := time.Now()
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(tc.size))
			var seq uint64
			for b.Loop() {
				seq++
				BuildData(seq, "orders.eu", "", payload, now).Release()
			}
		})
		b.Run(tc.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(tc.size))
			b.RunParallel(func(pb *testing.PB) {
				var seq uint64
				for pb.Next() {
					seq++
					BuildData(seq, "orders.eu", "orders.*", payload, now).Release()
				}
			})
		})
	}
}

// BenchmarkBuildDataString: payloads that are not JSON are escaped as a
// JSON string. Plain text is told apart by its first byte; one that starts
// like JSON ("{…", "1…") pays for json.Valid's scan and the SyntaxError it
// allocates and discards (the known gap of TestBuildDataAllocs).
func BenchmarkBuildDataString(b *testing.B) {
	for _, tc := range []struct {
		name    string
		payload string
		valid   bool // reaches json.Valid
	}{
		{"text200B", strings.Repeat("plain text ", 20)[:200], false},
		{"escapes200B", strings.Repeat("a\"b\\c\nd\x01\xff", 20), false},
		{"brace200B", "{" + strings.Repeat("plain text ", 20)[:199], true},
		{"digit200B", "1" + strings.Repeat("plain text ", 20)[:199], true},
	} {
		if jsonStart(tc.payload) != tc.valid || isJSON(tc.payload) {
			b.Fatalf("%s: reaches json.Valid %v, want %v (and not JSON)", tc.name, jsonStart(tc.payload), tc.valid)
		}
		now := time.Now()
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(tc.payload)))
			for b.Loop() {
				BuildData(1, "logs", "", tc.payload, now).Release()
			}
		})
	}
}

// parseCommandCases are the commands BenchmarkParseCommand and, for the
// encoding/json figures to compare with, BenchmarkParseCommandReference
// parse.
var parseCommandCases = []struct{ name, in string }{
	{"subscribe1", `{"action":"subscribe","channels":["market:tick:NIFTY"],"requestId":"r1"}`},
	{"subscribe", `{"action":"subscribe","channels":["orders.eu","orders.us","prices.*"],"requestId":"req-42"}`},
	{"since", `{"action":"subscribe","channels":["engine:signal:*","market:tick:NIFTY"],"since":{"engine:signal:*":"1764660000000-0"},"requestId":"r"}`},
	{"ping", `{"action":"ping","requestId":7}`},
	{"bad channel", `{"action":"subscribe","channels":["ok","not ok"]}`},
}

func BenchmarkParseCommand(b *testing.B) {
	benchParseCommand(b, ParseCommand)
}

func benchParseCommand(b *testing.B, parse func([]byte) (Command, *CommandError)) {
	for _, tc := range parseCommandCases {
		in := []byte(tc.in)
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				parse(in)
			}
		})
	}
}

// BenchmarkReaderNext parses a masked 100-byte text frame. Next unmasks in
// place, so every iteration re-copies the frame from a template; the
// "copy only" sub-benchmark measures that copy to subtract it.
func BenchmarkReaderNext(b *testing.B) {
	tmpl := clientFrame(b, ws.OpText, true, []byte(jsonPayload(100)))
	buf := make([]byte, len(tmpl))
	b.Run("text100B", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(tmpl)))
		var r Reader
		r.MaxMessage = 1 << 16
		for b.Loop() {
			copy(buf, tmpl)
			if _, n, err := r.Next(buf); n != len(tmpl) || err != nil {
				b.Fatal(n, err)
			}
		}
	})
	b.Run("copy only", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(tmpl)))
		for b.Loop() {
			copy(buf, tmpl)
		}
	})
	frags := concat(clientFrame(b, ws.OpText, false, []byte(jsonPayload(50))), clientFrame(b, ws.OpContinuation, true, []byte(strings.Repeat("x", 50))))
	fbuf := make([]byte, len(frags))
	b.Run("fragmented2x50B", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(frags)))
		var r Reader
		for b.Loop() {
			copy(fbuf, frags)
			_, n1, err1 := r.Next(fbuf)
			_, n2, err2 := r.Next(fbuf[n1:])
			if n1+n2 != len(fbuf) || err1 != nil || err2 != nil {
				b.Fatal(n1, n2, err1, err2)
			}
		}
	})
}

// BenchmarkBuildEntry: a live entry of a durable channel costs BuildData
// plus its ID; a replayed one the same without seq.
func BenchmarkBuildEntry(b *testing.B) {
	payload := jsonPayload(200)
	now := time.Now()
	id := StreamID{1764660000123, 4}
	b.Run("live", func(b *testing.B) {
		b.ReportAllocs()
		var seq uint64
		for b.Loop() {
			seq++
			BuildEntry(seq, "engine:signal:NIFTY", "engine:signal:*", id, payload, now).Release()
		}
	})
	b.Run("replay", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			BuildReplay("engine:signal:NIFTY", "engine:signal:*", id, payload, now).Release()
		}
	})
}
