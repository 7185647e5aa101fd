package auth

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func TestPatternContains(t *testing.T) {
	tests := []struct {
		outer, inner string
		want         bool
	}{
		// Required shapes.
		{"market:tick:*", "market:tick:BANK*", true},
		{"market:tick:*", "market:tick:*", true},
		{"market:tick:*", "market:tick:?", true},
		{"market:tick:*", "market:tick:[AB]*", true},
		{"market:tick:*", "market:*", false},
		{"market:tick:*", "market:tick*", false},
		{"market:tick:*", "m*", false},
		{"market:tick:*", "*", false},
		// The brief listed this as false, but stringmatchlen lets a
		// trailing '*' match nothing once the string is used up, so Redis
		// delivers "market:tick:" to "market:tick:*": a literal inner is
		// GlobMatch, and GlobMatch must agree with Redis.
		{"market:tick:*", "market:tick:", true},
		{"market:tick:*", "market:tick", false},
		{"*", "market:*", true},
		{"*", "*", true},
		{"*", "?", true},
		{"*", "[]", true},
		{"*", "", false}, // literal "": Redis's "*" does not match the empty string
		{"a?c", "a[bx]c", true},
		{"a?c", "a*c", false},
		// Literal inner is plain matching of the unescaped form.
		{"market:tick:*", "market:tick:NIFTY", true},
		{"market:tick:*", "market:tick\\:NIFTY", true},
		{"market:tick:*", "indicators:x", false},
		{"a\\*", "a\\*", true},
		{"a\\*", "a*", false}, // inner "a*" is a glob that matches "ab"
		// Stars on both sides, not just prefixes.
		{"*:NIFTY", "market:*:NIFTY", true},
		{"*:NIFTY", "market:*", false},
		{"a*b*c", "a*b*b*c", true},
		{"a*c", "ab*bc", true},
		{"a*c", "a*b", false},
		{"?*", "*?", true}, // equal languages written differently
		{"*?", "?*", true},
		{"??*", "*??", true},
		{"*a*", "*a", true},
		{"*a", "*a*", false},
		{"*ab*", "*a*b*", false},
		// Classes, ranges, negation.
		{"[a-z]*", "[b-d]x*", true},
		{"[a-c]*", "[b-d]*", false},
		{"[^x]", "[ab]", true},
		{"[^x]", "?", false},
		{"[ab]", "[^]", false},
		{"?", "[\\]]", true},
		{"[a-]", "]", true}, // outer class is the range ']'..'a'
		// The empty class matches nothing, so it is contained in anything
		// non-empty (but "" only matches "").
		{"x", "[]", true},
		{"", "?", false},
		{"", "[]", true},
		// Outer ambiguous high-byte ranges are read strictly: on x86-64
		// Redis "[\x01-\xff]" is {0x00,0x01,0xff}, so it cannot grant "?".
		{"[\x01-\xff]", "[\x02-\x03]", false},
		{"[^\x00]", "[\x01-\xff]", false},
		{"[\x01-\xff]", "[\x01]", true},
		// Realistic general shapes must be decided exactly, well inside the
		// work budget.
		{"*:NIFTY", "market:tick:BANKNIFTY:options:weekly:*:NIFTY", true},
		{"market:*:tick:*", "market:[A-Z]*:tick:BANK*", true},
		{"engine:*:decision:?*", "engine:strategy-[0-9]:decision:*?", true},
		{"indicators:*:[0-9]?m", "indicators:NIFTY*:1[05]m", true},
		{"indicators:*:[0-9]?m", "indicators:NIFTY*:[1h]5m", false},
		{"*" + strings.Repeat("a", 40) + "*", "x*" + strings.Repeat("a", 40) + "*y", true},
		// Too long to analyse: conservative unless identical.
		{strings.Repeat("a", 300) + "*", strings.Repeat("a", 300) + "b*", false},
		{strings.Repeat("a", 300) + "*", strings.Repeat("a", 300) + "*", true},
	}
	for _, tc := range tests {
		name := tc.outer + "⊇" + tc.inner
		if len(name) > 40 {
			name = name[:40]
		}
		t.Run(name, func(t *testing.T) {
			if got := PatternContains(tc.outer, tc.inner); got != tc.want {
				t.Errorf("PatternContains(%q, %q) = %v, want %v", tc.outer, tc.inner, got, tc.want)
			}
		})
	}
}

// enumerate returns every string over alphabet of length 0..maxLen.
func enumerate(tb testing.TB, alphabet string, maxLen int) []string {
	tb.Helper()
	out := []string{""}
	layer := []string{""}
	for n := 1; n <= maxLen; n++ {
		var next []string
		for _, s := range layer {
			for i := 0; i < len(alphabet); i++ {
				next = append(next, s+alphabet[i:i+1])
			}
		}
		out = append(out, next...)
		layer = next
	}
	return out
}

// counterexample returns a string matched by inner but not outer, if any is
// among strs.
func counterexample(tb testing.TB, outer, inner string, strs []string) (string, bool) {
	tb.Helper()
	for _, s := range strs {
		if GlobMatch(inner, s) && !GlobMatch(outer, s) {
			return s, true
		}
	}
	return "", false
}

// patternsUpTo returns every concatenation of up to n pieces.
func patternsUpTo(tb testing.TB, pieces []string, n int) []string {
	tb.Helper()
	out := []string{""}
	layer := []string{""}
	for k := 1; k <= n; k++ {
		var next []string
		for _, p := range layer {
			for _, piece := range pieces {
				next = append(next, p+piece)
			}
		}
		out = append(out, next...)
		layer = next
	}
	return out
}

var containsPieces = []string{"a", "b", ":", "*", "?", "[ab]", "[^a]"}

// TestPatternContainsBruteForce checks soundness (a true answer has no
// counterexample) exhaustively for small patterns and, for these sizes,
// completeness too: every false answer must be backed by a short
// counterexample, since the search is exact within its budget. Any
// counterexample can use the alphabet {a, b, :, c}: 'c' stands for every
// byte no piece mentions.
func TestPatternContainsBruteForce(t *testing.T) {
	strs := enumerate(t, "ab:c", 5)
	pats := patternsUpTo(t, containsPieces, 3)
	if testing.Short() {
		pats = patternsUpTo(t, containsPieces, 2)
	}
	// The match vector of each pattern over strs turns each pair into a
	// bitset comparison.
	vec := make(map[string][]bool, len(pats))
	for _, p := range pats {
		v := make([]bool, len(strs))
		for i, s := range strs {
			v[i] = GlobMatch(p, s)
		}
		vec[p] = v
	}
	for _, o := range pats {
		for _, in := range pats {
			got := PatternContains(o, in)
			ce := ""
			found := false
			for i := range strs {
				if vec[in][i] && !vec[o][i] {
					ce, found = strs[i], true
					break
				}
			}
			if got && found {
				t.Fatalf("unsound: PatternContains(%q, %q) = true, but %q matches inner only", o, in, ce)
			}
			if !got && !found {
				t.Errorf("incomplete: PatternContains(%q, %q) = false with no counterexample up to length 5", o, in)
			}
			// The fast path answers most of these; the general search
			// must agree with it on its own.
			og, ig := compileGlob(o, rangeBoth), compileGlob(in, rangeUnion)
			if !ig.literal {
				w := work{left: workBudget}
				if search := containsSearch(&og, &ig, &w); search != got {
					t.Errorf("containsSearch(%q, %q) = %v, PatternContains = %v", o, in, search, got)
				}
			}
		}
	}
}

// TestPatternContainsRandomSoundness samples longer patterns, where a
// counterexample may need more than five bytes, so only soundness is
// checked.
func TestPatternContainsRandomSoundness(t *testing.T) {
	strs := enumerate(t, "ab:c", 5)
	rng := rand.New(rand.NewPCG(1, 2))
	gen := func() string {
		var b strings.Builder
		for n := rng.IntN(7); n > 0; n-- {
			b.WriteString(containsPieces[rng.IntN(len(containsPieces))])
		}
		return b.String()
	}
	n := 20000
	if testing.Short() {
		n = 2000
	}
	for range n {
		o, in := gen(), gen()
		if !PatternContains(o, in) {
			continue
		}
		if ce, ok := counterexample(t, o, in, strs); ok {
			t.Fatalf("unsound: PatternContains(%q, %q) = true, but %q matches inner only", o, in, ce)
		}
	}
}

func TestPatternContainsBudget(t *testing.T) {
	// inner ⊆ outer holds here, but deciding it needs the outer automaton
	// to remember where each of the last 41 'a's was: 2^40 subset states.
	// The search must give up with the safe answer, quickly.
	outer := "*a" + strings.Repeat("?", 40)
	inner := "*a" + strings.Repeat("[ab]", 40)
	start := time.Now()
	if PatternContains(outer, inner) {
		t.Fatal("expected the conservative false once the budget runs out")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("budget exhausted after %v; it must stay cheap enough for an event loop", d)
	}
	// The same shape with a small window is decided exactly.
	if !PatternContains("*a??", "*a[ab][ab]") {
		t.Error("PatternContains(\"*a??\", \"*a[ab][ab]\") = false, want true")
	}
}

func FuzzPatternContains(f *testing.F) {
	seeds := [][2]string{
		{"market:tick:*", "market:tick:BANK*"}, {"market:tick:*", "market:*"},
		{"*", "a?"}, {"a?c", "a[bx]c"}, {"a?c", "a*c"}, {"?*", "*?"},
		{"*a*", "*a"}, {"[a-c]*", "[b-d]*"}, {"[^x]", "[ab]"}, {"a\\*", "a*"},
		{"[a-]", "]"}, {"*:x", "m*:x"}, {"", "[]"}, {"[\x01-\xff]", "?"},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, outer, inner string) {
		if len(outer) > 24 || len(inner) > 24 {
			t.Skip("enumeration below is exponential in alphabet size")
		}
		if !PatternContains(outer, inner) {
			return
		}
		// Probe with the bytes both patterns mention plus one they do not.
		seen := map[byte]bool{}
		var alpha []byte
		for _, s := range []string{outer, inner} {
			for i := 0; i < len(s) && len(alpha) < 7; i++ {
				if !seen[s[i]] {
					seen[s[i]] = true
					alpha = append(alpha, s[i])
				}
			}
		}
		for c := 0; c < 256; c++ {
			if !seen[byte(c)] {
				alpha = append(alpha, byte(c))
				break
			}
		}
		if ce, ok := counterexample(t, outer, inner, enumerate(t, string(alpha), 4)); ok {
			t.Fatalf("unsound: PatternContains(%q, %q) = true, but %q matches inner only", outer, inner, ce)
		}
	})
}

func BenchmarkPatternContains(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if !PatternContains("market:tick:*", "market:tick:BANK*") {
			b.Fatal("want true")
		}
	}
}

func BenchmarkPatternContainsGeneral(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if !PatternContains("*:NIFTY", "market:*:NIFTY") {
			b.Fatal("want true")
		}
	}
}

func BenchmarkPatternContainsBudgetExhausted(b *testing.B) {
	outer := "*a" + strings.Repeat("?", 40)
	inner := "*a" + strings.Repeat("[ab]", 40)
	b.ReportAllocs()
	for b.Loop() {
		PatternContains(outer, inner)
	}
}

// TestContainsWork pins the work budget: realistic patterns are decided
// exactly well inside it, and hostile ones, whatever their shape, stop at
// it with the safe answer instead of searching on. Work is counted in the
// budget's units, so the test does not depend on the machine's speed.
func TestContainsWork(t *testing.T) {
	hostileClasses := strings.Repeat("[!-~]", 50)
	tests := []struct {
		name         string
		outer, inner string
		want         bool
		maxWork      int // 0: at most the budget plus one charge
	}{
		{"prefix star", "market:tick:*", "market:tick:BANK*", true, 100},
		{"stars on both sides", "*:NIFTY", "market:*:NIFTY", true, 1500},
		{"suffix and classes", "indicators:*:[0-9]?m", "indicators:NIFTY*:1[05]m", true, 3000},
		{"long, stars on both sides", "*" + strings.Repeat("a", 40) + "*", "x*" + strings.Repeat("a", 40) + "*y", true, 7000},
		{"50 classes against a suffix rule", "indicators:*:1m", hostileClasses + "[0001", false, 0},
		{"50 classes against a prefix rule", "market:tick:*", hostileClasses + "[0001", false, 0},
		{"exponential subset construction", "*a" + strings.Repeat("?", 40), "*a" + strings.Repeat("[ab]", 40), false, 0},
		{"many stars", "*a*b*c*d*e*f*g*h*", strings.Repeat("*[a-h]", 40), false, 0},
		{"many distinct classes", "*:1m", func() string {
			var b strings.Builder
			for c := '!'; b.Len() < 250; c++ {
				b.WriteString("[" + string(c) + "-~]")
			}
			return b.String()
		}(), false, 0},
	}
	// The largest single charge: a new outer state (its transitions and a
	// lookup) or one search step, for at most 256 byte classes.
	const slack = 256 + newOuterStateCost
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := work{left: workBudget}
			if got := patternContains(tc.outer, tc.inner, &w); got != tc.want {
				t.Errorf("PatternContains(%q, %q) = %v, want %v", tc.outer, tc.inner, got, tc.want)
			}
			used := workBudget - w.left
			limit := tc.maxWork
			if limit == 0 {
				limit = workBudget + slack
			}
			if used > limit {
				t.Errorf("used %d units of work, want at most %d", used, limit)
			}
			t.Logf("%d units", used)
		})
	}
}

// TestAllowedWorkRandom: over random hostile patterns, one decision never
// does more than the budget allows, however many patterns the role has.
func TestAllowedWorkRandom(t *testing.T) {
	acl, err := NewACL(map[string][]string{"user": {"market:tick:*", "indicators:*:1m", "*:x?y*z", "a*b*c*"}})
	if err != nil {
		t.Fatal(err)
	}
	pieces := []string{"a", "b", ":", "*", "?", "[ab]", "[^a]", "[!-~]", "[0-9]", "x", "1m"}
	rng := rand.New(rand.NewPCG(3, 4))
	n := 3000
	if testing.Short() {
		n = 300
	}
	for range n {
		var b strings.Builder
		for b.Len() < 200 {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		p := b.String()
		w := work{left: workBudget - len(p)}
		in := compileGlob(p, rangeUnion)
		for i := range acl.roles["user"] {
			containsGlob(&acl.roles["user"][i].g, &in, &w)
			if w.left < 0 {
				break
			}
		}
		if used := workBudget - w.left; used > workBudget+256+newOuterStateCost {
			t.Fatalf("pattern %q used %d units, budget %d", p, used, workBudget)
		}
	}
}

// BenchmarkAllowedHostile is the subscribe request of an abusive client:
// 50 distinct 255-byte patterns of classes, checked against an ACL whose
// rule forces the general search.
func BenchmarkAllowedHostile(b *testing.B) {
	acl, err := NewACL(map[string][]string{"user": {"market:tick:*", "indicators:*:1m"}})
	if err != nil {
		b.Fatal(err)
	}
	var pats []string
	for i := range 50 {
		pats = append(pats, strings.Repeat("[!-~]", 50)+"["+strings.Repeat("0", 3)+string(rune('0'+i%10)))
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, p := range pats {
			if acl.Allowed("user", p) {
				b.Fatal("allowed")
			}
		}
	}
}

// TestByteSetAddRange: the word-at-a-time range is the byte-by-byte one,
// for unsigned and signed (x86-64 Redis) endpoints, in either order.
func TestByteSetAddRange(t *testing.T) {
	for a := -128; a < 256; a++ {
		for b := -128; b < 256; b++ {
			if (a < 0) != (b < 0) && (a > 127 || b > 127) {
				continue // endpoints come both signed or both unsigned
			}
			var got, want byteSet
			got.addRange(a, b)
			lo, hi := min(a, b), max(a, b)
			for c := lo; c <= hi; c++ {
				want.add(byte(c))
			}
			if got != want {
				t.Fatalf("addRange(%d, %d) = %x, want %x", a, b, got, want)
			}
		}
	}
}
