package wsproto

import (
	"fmt"
	"testing"
	"unicode/utf8"
)

// validPrefix reports whether p can be extended into valid UTF-8: whole
// valid code points followed by at most one incomplete but so far valid
// one. It is the oracle for fail-fast: feed must reject exactly the inputs
// that are not valid prefixes.
func validPrefix(p []byte) bool {
	for len(p) > 0 {
		if !utf8.FullRune(p) {
			return true // a proper prefix of a valid encoding
		}
		r, size := utf8.DecodeRune(p)
		if r == utf8.RuneError && size == 1 {
			return false
		}
		p = p[size:]
	}
	return true
}

// checkUTF8 checks the validator against the standard library on seq fed
// whole, byte by byte and split at every point.
func checkUTF8(tb testing.TB, seq []byte) {
	tb.Helper()
	if msg := utf8Mismatch(seq); msg != "" {
		tb.Fatal(msg)
	}
}

// utf8Mismatch is checkUTF8 without testing.TB calls (t.Helper is too slow
// for 16.7M calls); it returns a description of the first disagreement.
func utf8Mismatch(seq []byte) string {
	want := utf8.Valid(seq)

	var whole utf8Validator
	if ok := whole.feed(seq); ok != validPrefix(seq) || (ok && whole.complete()) != want {
		return fmt.Sprintf("% x fed whole: ok %v complete %v, want valid %v prefix %v", seq, ok, whole.complete(), want, validPrefix(seq))
	}

	var v utf8Validator
	ok := true
	for i := range seq {
		ok = v.feed(seq[i : i+1])
		if ok != validPrefix(seq[:i+1]) {
			return fmt.Sprintf("% x fed byte by byte: feed of byte %d = %v, want %v (fail fast)", seq, i, ok, !ok)
		}
		if !ok {
			break
		}
	}
	if got := ok && v.complete(); got != want {
		return fmt.Sprintf("% x fed byte by byte: %v, want %v", seq, got, want)
	}

	for k := 1; k < len(seq); k++ {
		var s utf8Validator
		ok := s.feed(seq[:k])
		if ok != validPrefix(seq[:k]) {
			return fmt.Sprintf("% x split at %d: first feed %v", seq, k, ok)
		}
		ok = ok && s.feed(seq[k:])
		if got := ok && s.complete(); got != want {
			return fmt.Sprintf("% x split at %d: %v, want %v", seq, k, got, want)
		}
	}
	return ""
}

func TestUTF8Exhaustive(t *testing.T) {
	t.Run("1 byte", func(t *testing.T) {
		for a := range 256 {
			checkUTF8(t, []byte{byte(a)})
		}
	})
	t.Run("2 bytes", func(t *testing.T) {
		for a := range 256 {
			for b := range 256 {
				checkUTF8(t, []byte{byte(a), byte(b)})
			}
		}
	})
	t.Run("3 bytes", func(t *testing.T) {
		// All 16.7M sequences, with the validator states after the first
		// one and two bytes hoisted out of the inner loop (the same
		// checks as utf8Mismatch, about 1s of CPU). Under -race or -short
		// every 13th third byte plus every range boundary keeps it quick.
		step := 1
		if raceEnabled || testing.Short() {
			step = 13
		}
		thirds := make([]byte, 0, 256+len(boundaryBytes))
		for c := 0; c < 256; c += step {
			thirds = append(thirds, byte(c))
		}
		if step > 1 {
			thirds = append(thirds, boundaryBytes...)
		}
		seq := make([]byte, 3)
		for a := range 256 {
			seq[0] = byte(a)
			var va utf8Validator
			okA := va.feed(seq[:1])
			for b := range 256 {
				seq[1] = byte(b)
				vab := va
				okAB := okA && vab.feed(seq[1:2])
				if okAB != validPrefix(seq[:2]) {
					t.Fatalf("% x fed byte by byte: %v after two bytes (fail fast)", seq[:2], okAB)
				}
				for _, c := range thirds {
					seq[2] = c
					want, prefix := utf8.Valid(seq), validPrefix(seq)
					var w utf8Validator
					if ok := w.feed(seq); ok != prefix || (ok && w.complete()) != want {
						t.Fatalf("% x fed whole: %v, want valid %v prefix %v", seq, ok, want, prefix)
					}
					// Byte by byte, which is also the 2/1 split.
					v := vab
					if ok := okAB && v.feed(seq[2:]); ok != prefix || (ok && v.complete()) != want {
						t.Fatalf("% x fed byte by byte: %v, want valid %v prefix %v", seq, ok, want, prefix)
					}
					// The 1/2 split.
					v = va
					if ok := okA && v.feed(seq[1:]); ok != prefix || (ok && v.complete()) != want {
						t.Fatalf("% x split 1/2: %v, want valid %v prefix %v", seq, ok, want, prefix)
					}
				}
			}
		}
	})
	t.Run("4 bytes at range boundaries", func(t *testing.T) {
		seq := make([]byte, 4)
		for _, a := range boundaryBytes {
			for _, b := range boundaryBytes {
				for _, c := range boundaryBytes {
					for _, d := range boundaryBytes {
						seq[0], seq[1], seq[2], seq[3] = a, b, c, d
						if msg := utf8Mismatch(seq); msg != "" {
							t.Fatal(msg)
						}
					}
				}
			}
		}
	})
}

// boundaryBytes are the edges of every byte range in Unicode Table 3-7.
var boundaryBytes = []byte{
	0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2,
	0xdf, 0xe0, 0xe1, 0xec, 0xed, 0xee, 0xef, 0xf0, 0xf1, 0xf3, 0xf4, 0xf5, 0xff,
}

func TestUTF8Validator(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string
		want   bool
	}{
		{"empty", nil, true},
		{"empty chunks", []string{"", "", ""}, true},
		{"ascii", []string{"hello"}, true},
		{"all widths", []string{"a\u00e9\u65e5\U0001F600"}, true},
		{"max code point", []string{"\U0010FFFF"}, true},
		{"U+FFFD itself", []string{"\ufffd"}, true},
		{"split 4-byte 1/3", []string{"\xf0", "\x9f\x98\x80"}, true},
		{"split 4-byte 2/2", []string{"\xf0\x9f", "\x98\x80"}, true},
		{"split 4-byte 3/1", []string{"\xf0\x9f\x98", "\x80"}, true},
		{"split 4-byte 1/1/1/1", []string{"\xf0", "\x9f", "\x98", "\x80"}, true},
		{"split with empty chunk", []string{"\xe6", "", "\x97\xa5"}, true},
		{"truncated", []string{"a\xe6\x97"}, false},
		{"overlong 2-byte", []string{"\xc1\xbf"}, false},
		{"overlong 3-byte", []string{"\xe0\x9f\xbf"}, false},
		{"overlong 4-byte", []string{"\xf0\x8f\xbf\xbf"}, false},
		{"surrogate", []string{"\xed", "\xa0\x80"}, false},
		{"above max", []string{"\xf4\x90\x80\x80"}, false},
		{"F5 lead", []string{"\xf5\x80\x80\x80"}, false},
		{"lone continuation", []string{"a", "\x80"}, false},
		{"after reject stays rejected", []string{"\xff", "a", ""}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v utf8Validator
			ok := true
			var all []byte
			for _, c := range tt.chunks {
				all = append(all, c...)
				ok = v.feed([]byte(c)) && ok
			}
			if got := ok && v.complete(); got != tt.want || got != utf8.Valid(all) {
				t.Fatalf("got %v, want %v (utf8.Valid %v)", got, tt.want, utf8.Valid(all))
			}
			v.reset()
			if !v.complete() || !v.feed([]byte("x")) {
				t.Fatal("reset did not restore the initial state")
			}
		})
	}
}

func FuzzUTF8(f *testing.F) {
	for _, s := range []string{"", "a", "\xf0\x9f\x98\x80", "\xed\xa0\x80", "a\xe6\x97\xa5b", "\xf4\x8f\xbf\xbf", "\xc0\x80", "\xe0\xa0"} {
		f.Add([]byte(s), uint(1))
	}
	f.Fuzz(func(t *testing.T, data []byte, split uint) {
		k := 0
		if len(data) > 0 {
			k = int(split % uint(len(data)+1))
		}
		var v utf8Validator
		ok := v.feed(data[:k])
		if ok != validPrefix(data[:k]) {
			t.Fatalf("% x: feed of the first %d bytes = %v, want %v", data, k, ok, validPrefix(data[:k]))
		}
		ok = ok && v.feed(data[k:])
		if got := ok && v.complete(); got != utf8.Valid(data) {
			t.Fatalf("% x split at %d: %v, want %v", data, k, got, utf8.Valid(data))
		}
		if len(data) <= 64 {
			checkUTF8(t, data)
		}
	})
}
