package auth

import (
	"math/rand/v2"
	"strings"
	"testing"
)

func TestPatternsOverlap(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"orders.*", "orders.*", true},
		{"orders.*", "ord*", true},
		{"orders.*", "*", true},
		{"orders.*", "prices.*", false},
		{"orders.eu", "orders.*", true},
		{"orders.eu", "orders.us", false},
		{"orders.?", "orders.[ab]", true},
		{"orders.[cd]", "orders.[ab]", false},
		{"orders.[^a]", "orders.a", false},
		{"*.eu", "orders.*", true},
		{"a*b", "*c", false},
		{"a*b", "*b", true},
		{"?", "??", false},
		{"*", "*", true},
		{"a\\*", "a*", true},
		{"a\\*", "ab", false},
		// A channel name is never empty: "*" and "" share none.
		{"*", "", false},
		{"", "", false},
		// Long enough to need the product search to be polynomial.
		{strings.Repeat("*a", 100), strings.Repeat("*b", 100), false},
		{strings.Repeat("*a", 100) + "*", strings.Repeat("*b", 100) + "*", true},
	} {
		t.Run(tc.a+" "+tc.b, func(t *testing.T) {
			if got := PatternsOverlap(tc.a, tc.b); got != tc.want {
				t.Fatalf("PatternsOverlap(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
			}
			if got := PatternsOverlap(tc.b, tc.a); got != tc.want {
				t.Fatalf("PatternsOverlap(%q, %q) = %v, want %v (not symmetric)", tc.b, tc.a, got, tc.want)
			}
		})
	}
}

// TestPatternsOverlapBruteForce checks random small globs against every
// string short enough to witness an overlap: two globs of n tokens that
// share a string share one of at most 2n bytes.
func TestPatternsOverlapBruteForce(t *testing.T) {
	toks := []string{"a", "b", "*", "?", "[ab]", "[^a]"}
	r := rand.New(rand.NewPCG(1, 2))
	glob := func() string {
		var b strings.Builder
		for range 1 + r.IntN(3) {
			b.WriteString(toks[r.IntN(len(toks))])
		}
		return b.String()
	}
	var subjects []string
	var gen func(prefix string, n int)
	gen = func(prefix string, n int) {
		if prefix != "" {
			subjects = append(subjects, prefix)
		}
		if n == 0 {
			return
		}
		for _, c := range []string{"a", "b", "c"} {
			gen(prefix+c, n-1)
		}
	}
	gen("", 6)
	for range 400 {
		a, b := glob(), glob()
		want := false
		for _, s := range subjects {
			if GlobMatch(a, s) && GlobMatch(b, s) {
				want = true
				break
			}
		}
		if got := PatternsOverlap(a, b); got != want {
			t.Fatalf("PatternsOverlap(%q, %q) = %v, brute force says %v", a, b, got, want)
		}
	}
}
