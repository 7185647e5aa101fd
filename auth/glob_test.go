package auth

import (
	"strings"
	"testing"
)

// refMatch is a direct, recursive port of Redis's stringmatchlen (util.c,
// with the nesting guard and the skipLongerMatches cut-off, nocase = 0). It
// reads C char as unsigned, as Redis does on arm64; on x86-64 Redis ranges
// with an endpoint >= 0x80 differ, which GlobMatch documents. Reads past
// the end of the pattern yield 0, like the NUL terminator of an sds string.
// GlobMatch is an optimised rewrite and must agree with it everywhere.
func refMatch(pattern, str string) bool {
	skip := false
	return refMatchImpl(pattern, str, &skip, 0)
}

func refMatchImpl(pattern, str string, skipLongerMatches *bool, nesting int) bool {
	if nesting > 1000 {
		return false
	}
	at := func(i int) byte {
		if i < len(pattern) {
			return pattern[i]
		}
		return 0
	}
	p, s := 0, 0 // patternLen == len(pattern)-p, stringLen == len(str)-s
	for len(pattern)-p > 0 && len(str)-s > 0 {
		switch pattern[p] {
		case '*':
			for len(pattern)-p > 0 && at(p+1) == '*' {
				p++
			}
			if len(pattern)-p == 1 {
				return true
			}
			for len(str)-s > 0 {
				if refMatchImpl(pattern[p+1:], str[s:], skipLongerMatches, nesting+1) {
					return true
				}
				if *skipLongerMatches {
					return false
				}
				s++
			}
			*skipLongerMatches = true
			return false
		case '?':
			s++
		case '[':
			p++
			not := at(p) == '^'
			if not {
				p++
			}
			match := false
			for {
				if at(p) == '\\' && len(pattern)-p >= 2 {
					p++
					if pattern[p] == str[s] {
						match = true
					}
				} else if at(p) == ']' {
					break
				} else if len(pattern)-p == 0 {
					p--
					break
				} else if len(pattern)-p >= 3 && pattern[p+1] == '-' {
					start, end, c := int(pattern[p]), int(pattern[p+2]), int(str[s])
					if start > end {
						start, end = end, start
					}
					p += 2
					if c >= start && c <= end {
						match = true
					}
				} else if pattern[p] == str[s] {
					match = true
				}
				p++
			}
			if not {
				match = !match
			}
			if !match {
				return false
			}
			s++
		case '\\':
			if len(pattern)-p >= 2 {
				p++
			}
			if pattern[p] != str[s] {
				return false
			}
			s++
		default:
			if pattern[p] != str[s] {
				return false
			}
			s++
		}
		p++
		if len(str)-s == 0 {
			for at(p) == '*' {
				p++
			}
			break
		}
	}
	return len(pattern)-p == 0 && len(str)-s == 0
}

func TestGlobMatch(t *testing.T) {
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"", "", true},
		{"", "a", false},
		{"*", "", false}, // Redis quirk: the loop never runs for an empty string
		{"*", "x", true},
		{"**", "abc", true},
		{"a*", "a", true},
		{"a*", "abc", true},
		{"a*", "ba", false},
		{"*a", "bba", true},
		{"a*b*c", "aXbYc", true},
		{"a*b*c", "aXbY", false},
		{"market:tick:*", "market:tick:BANKNIFTY", true},
		{"market:tick:*", "market:tick:", true},
		{"market:tick:*", "market:tic", false},
		{"h?llo", "hello", true},
		{"h?llo", "hllo", false},
		{"h[ae]llo", "hallo", true},
		{"h[ae]llo", "hillo", false},
		{"h[^e]llo", "hallo", true},
		{"h[^e]llo", "hello", false},
		{"h[a-b]llo", "hbllo", true},
		{"h[a-b]llo", "hcllo", false},
		{"[z-a]", "m", true}, // reversed range accepted
		{"[z-a]", "A", false},
		{"[a-]", "]", true}, // "a-]" is a range from ']' to 'a' and the class is unterminated
		{"[a-]", "-", false},
		{"[]", "]", false}, // empty class matches nothing
		{"[]a]", "a]", false},
		{"[]a]", "]", false},
		{"[^]", "x", true},
		{"[", "[", false}, // unterminated empty class
		{"[abc", "b", true},
		{"[abc", "[", false},
		{"[^", "x", true},
		{"[\\]]", "]", true},
		{"[\\", "\\", true},
		{"[a\\-z]", "-", true},
		{"[a\\-z]", "m", false},
		{"\\*", "*", true},
		{"\\*", "x", false},
		{"a\\", "a\\", true}, // trailing backslash is literal
		{"\\?x", "?x", true},
		{"\\?x", "ax", false},
		{"*\\*", "abc*", true},
		{"a*?", "a", false},
		{"a*?", "ab", true},
		{"[\x80-\xff]", "\xc3", true}, // unsigned reading
		{"[\x80-\xff]", "a", false},
		{"a\x00b", "a\x00b", true},
		{strings.Repeat("a*", 1000) + "b", strings.Repeat("a", 1000) + "b", true},
		{strings.Repeat("a*", 1001) + "b", strings.Repeat("a", 1001) + "b", false}, // nesting guard
		{strings.Repeat("a*", 1001), strings.Repeat("a", 1001), true},              // final star is exempt
	}
	for _, tc := range tests {
		name := tc.pattern + "~" + tc.s
		if len(name) > 40 {
			name = name[:40]
		}
		t.Run(name, func(t *testing.T) {
			if got := GlobMatch(tc.pattern, tc.s); got != tc.want {
				t.Errorf("GlobMatch(%q, %q) = %v, want %v", tc.pattern, tc.s, got, tc.want)
			}
			if ref := refMatch(tc.pattern, tc.s); ref != tc.want {
				t.Errorf("refMatch(%q, %q) = %v, want %v (table is wrong about Redis)", tc.pattern, tc.s, ref, tc.want)
			}
		})
	}
}

func TestIsPattern(t *testing.T) {
	tests := []struct {
		s    string
		want bool
	}{
		{"", false},
		{"market:tick:NIFTY", false},
		{"market:tick:*", true},
		{"a?", true},
		{"a[b]", true},
		{"a]", false},
		{"a\\*", false},
		{"a\\?b\\[", false},
		{"a\\\\*", true}, // escaped backslash, then a real star
		{"a\\", false},
		{"^-", false},
	}
	for _, tc := range tests {
		t.Run(tc.s, func(t *testing.T) {
			if got := IsPattern(tc.s); got != tc.want {
				t.Errorf("IsPattern(%q) = %v, want %v", tc.s, got, tc.want)
			}
			// A non-pattern must behave as a literal: it matches its
			// unescaped form and is compiled to literal tokens.
			if g := compileGlob(tc.s, rangeUnsigned); g.literal == tc.want {
				t.Errorf("compileGlob(%q).literal = %v, disagrees with IsPattern", tc.s, g.literal)
			}
		})
	}
}

func FuzzGlobMatch(f *testing.F) {
	seeds := [][2]string{
		{"*", ""}, {"a*b", "aXb"}, {"[a-z]*", "q1"}, {"[^", "x"}, {"[z-a]", "m"},
		{"\\*\\", "*\\"}, {"[a-]x", "]x"}, {"*a*b*c*", "xaybzc"}, {"?*?", "ab"},
		{"[\\]-a]", "^"}, {"h[^e]llo", "hallo"}, {"**a", "a"}, {"[]", ""},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, s string) {
		if got, want := GlobMatch(pattern, s), refMatch(pattern, s); got != want {
			t.Fatalf("GlobMatch(%q, %q) = %v, reference stringmatchlen says %v", pattern, s, got, want)
		}
	})
}

func BenchmarkGlobMatchCompiled(b *testing.B) {
	g := compileGlob("market:tick:*", rangeUnsigned)
	b.ReportAllocs()
	for b.Loop() {
		if !g.match("market:tick:BANKNIFTY") {
			b.Fatal("no match")
		}
	}
}
