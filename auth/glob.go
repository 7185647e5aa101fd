package auth

import (
	"math/bits"
	"strings"

	"github.com/wsgw/gateway/wsproto"
)

// MaxPatternLen is the longest ACL pattern LoadACL and NewACL accept, the
// longest channel name or pattern a client may send (wsproto.MaxChannelLen),
// and the longest pattern PatternContains analyses (it answers false, the
// safe answer, for longer ones). The bound keeps containment analysis cheap
// enough to run on an event loop for every subscribe command.
const MaxPatternLen = wsproto.MaxChannelLen

// maxStarNesting mirrors the recursion guard in Redis's stringmatchlen
// (nesting > 1000 → no match), added upstream against abusive patterns.
// Reproducing it keeps GlobMatch equal to what Redis actually delivers.
const maxStarNesting = 1000

type tokKind uint8

const (
	tokLit  tokKind = iota // one specific byte
	tokAny                 // '?': any single byte
	tokSet                 // '[...]': one byte from a set
	tokStar                // '*' (runs collapsed): any run of bytes
)

// byteSet is a 256-bit set of byte values.
type byteSet [4]uint64

func (s *byteSet) add(c byte)      { s[c>>6] |= 1 << (c & 63) }
func (s *byteSet) has(c byte) bool { return s[c>>6]&(1<<(c&63)) != 0 }

// addRange adds the bytes between a and b inclusive, in either order (Redis
// accepts reversed ranges such as [z-a]). The bounds may be negative, for the
// signed-char reading; byte(c) maps them back to the byte values.
func (s *byteSet) addRange(a, b int) {
	if a > b {
		a, b = b, a
	}
	if a < 0 && b >= 0 {
		// Wraps around in byte values: 0x80+|a|..0xff and 0..b.
		s.addRange(a, -1)
		a = 0
	}
	lo, hi := int(byte(a)), int(byte(b))
	// Whole words at a time: a range costs at most four mask operations,
	// not one per byte.
	for k := lo >> 6; k <= hi>>6; k++ {
		first, last := max(lo, k*64)-k*64, min(hi, k*64+63)-k*64
		s[k] |= (^uint64(0) >> (63 - last)) &^ (1<<first - 1)
	}
}

// min returns the smallest byte in the set, which must not be empty.
func (s *byteSet) min() byte {
	for k, x := range s {
		if x != 0 {
			return byte(k*64 + bits.TrailingZeros64(x))
		}
	}
	return 0
}

func (s *byteSet) count() int {
	return bits.OnesCount64(s[0]) + bits.OnesCount64(s[1]) +
		bits.OnesCount64(s[2]) + bits.OnesCount64(s[3])
}

// token is one matching step of a compiled glob. Every kind except tokStar
// consumes exactly one byte, which is what lets both matching and
// containment treat a glob as a simple automaton.
type token struct {
	kind tokKind
	lit  byte     // tokLit
	set  *byteSet // tokSet; shared pointer keeps token small for the common literal case
}

func (t *token) matches(c byte) bool {
	switch t.kind {
	case tokLit:
		return t.lit == c
	case tokAny:
		return true
	case tokSet:
		return t.set.has(c)
	}
	return false
}

// glob is a compiled Redis pattern.
type glob struct {
	toks []token
	// literal is true when every token is tokLit: the pattern matches one
	// string only (the unescaped pattern), which callers fast-path.
	literal bool
	// dead is true when Redis's nesting guard makes the pattern match
	// nothing at all (see compileGlob).
	dead bool
	// highRange is true when a class range has an endpoint >= 0x80, whose
	// meaning in Redis depends on the platform (see rangeMode).
	highRange bool
}

// rangeMode says how to read class ranges with an endpoint >= 0x80.
// stringmatchlen compares range endpoints as C char, which is signed on
// x86-64 and unsigned on arm64, so "[a-\xff]" means different byte sets on
// different Redis builds. GlobMatch reads them as unsigned bytes; the ACL
// refuses such ranges in its own patterns, and containment analysis uses
// whichever reading is safe for the side being analysed.
type rangeMode uint8

const (
	rangeUnsigned rangeMode = iota // bytes compare as 0..255
	rangeUnion                     // match if either reading matches: over-approximates a pattern's language
	rangeBoth                      // match only if both readings match: under-approximates it
)

// compileGlob tokenises pattern exactly as stringmatchlen walks it. In Redis
// the walk over the pattern never depends on the subject string, so a
// pattern can be parsed once into tokens and reused, which is what makes the
// ACL's precompiled patterns and the containment automaton possible.
func compileGlob(p string, mode rangeMode) glob {
	g := glob{toks: make([]token, 0, len(p)), literal: true}
	// One array for every class of the pattern, sized by its '[' count
	// (an upper bound), so that tokens can point into it: one allocation
	// per pattern rather than one per class.
	var sets []byteSet
	if n := strings.Count(p, "["); n > 0 {
		sets = make([]byteSet, 0, n)
	}
	stars := 0
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '*':
			// Redis skips a run of '*' before recursing; a run is one token.
			for i+1 < len(p) && p[i+1] == '*' {
				i++
			}
			stars++
			// The 1001st star, unless it ends the pattern (Redis returns
			// "match" for a final star before recursing), is reached at
			// nesting 1001, where Redis gives up: every path through the
			// pattern must cross it with input left, so nothing matches.
			if stars == maxStarNesting+1 && i != len(p)-1 {
				g.dead = true
			}
			g.toks = append(g.toks, token{kind: tokStar})
			g.literal = false
		case '?':
			g.toks = append(g.toks, token{kind: tokAny})
			g.literal = false
		case '[':
			c := parseClass(p, i+1)
			i = c.last
			set := c.unsigned
			if c.highRange {
				g.highRange = true
				switch mode {
				case rangeUnion:
					for k := range set {
						set[k] |= c.signed[k]
					}
				case rangeBoth:
					for k := range set {
						set[k] &= c.signed[k]
					}
				}
			}
			sets = append(sets, set)
			g.toks = append(g.toks, token{kind: tokSet, set: &sets[len(sets)-1]})
			g.literal = false
		case '\\':
			// An escape of the final byte is a literal backslash in Redis.
			if len(p)-i >= 2 {
				i++
			}
			g.toks = append(g.toks, token{kind: tokLit, lit: p[i]})
		default:
			g.toks = append(g.toks, token{kind: tokLit, lit: p[i]})
		}
	}
	return g
}

// class is a parsed '[...]' class.
type class struct {
	unsigned  byteSet // the set with ranges read as unsigned bytes
	signed    byteSet // the set with ranges read as signed chars (x86 Redis)
	highRange bool    // a range endpoint is >= 0x80, so the two differ
	last      int     // index of the class's last byte in the pattern
}

// parseClass parses a '[...]' class whose body starts at p[i] (just after the
// '['). The class ends at its ']' or, when unterminated, at the end of the
// pattern: Redis treats an unterminated class as running to the end.
func parseClass(p string, i int) class {
	var c class
	negate := i < len(p) && p[i] == '^'
	if negate {
		i++
	}
loop:
	for {
		switch {
		case i < len(p) && p[i] == '\\' && len(p)-i >= 2:
			i++
			c.unsigned.add(p[i])
			c.signed.add(p[i])
		case i < len(p) && p[i] == ']':
			break loop
		case i >= len(p):
			// Redis backs up one byte here so that its common "advance
			// past this token" step lands exactly on the end.
			i--
			break loop
		case len(p)-i >= 3 && p[i+1] == '-':
			lo, hi := p[i], p[i+2]
			c.unsigned.addRange(int(lo), int(hi))
			c.signed.addRange(int(int8(lo)), int(int8(hi)))
			if lo >= 0x80 || hi >= 0x80 {
				c.highRange = true
			}
			i += 2
		default:
			c.unsigned.add(p[i])
			c.signed.add(p[i])
		}
		i++
	}
	if negate {
		for k := range c.unsigned {
			c.unsigned[k] = ^c.unsigned[k]
			c.signed[k] = ^c.signed[k]
		}
	}
	c.last = i
	return c
}

// match reports whether s matches the compiled pattern with stringmatchlen's
// semantics. It is the classic two-pointer glob walk (remember the last star,
// retry one byte further on mismatch), which is equivalent to Redis's
// recursion because every non-star token consumes exactly one byte, but does
// not recurse and does not allocate.
func (g *glob) match(s string) bool {
	if len(s) == 0 {
		// Redis's main loop runs only while both pattern and string are
		// non-empty, so an empty string matches only the empty pattern —
		// not even "*".
		return len(g.toks) == 0
	}
	if g.dead {
		return false
	}
	toks := g.toks
	pi, si := 0, 0
	starPi, starSi := -1, 0
	for si < len(s) {
		if pi < len(toks) {
			t := &toks[pi]
			if t.kind == tokStar {
				starPi, starSi = pi, si
				pi++
				continue
			}
			if t.matches(s[si]) {
				pi++
				si++
				continue
			}
		}
		if starPi < 0 {
			return false
		}
		// Let the last star absorb one more byte and retry the rest. Earlier
		// stars never need revisiting: a later star can absorb anything an
		// earlier one could.
		pi = starPi + 1
		starSi++
		si = starSi
	}
	for pi < len(toks) && toks[pi].kind == tokStar {
		pi++
	}
	return pi == len(toks)
}

// literalString returns the single string a literal glob matches.
func (g *glob) literalString() string {
	b := make([]byte, len(g.toks))
	for i := range g.toks {
		b[i] = g.toks[i].lit
	}
	return string(b)
}

// IsPattern reports whether Redis would treat channel as a glob, that is
// whether it contains an unescaped '*', '?' or '['. A string without them
// matches only itself (after unescaping), so the ACL can check it as an
// exact channel.
func IsPattern(channel string) bool {
	for i := 0; i < len(channel); i++ {
		switch channel[i] {
		case '*', '?', '[':
			return true
		case '\\':
			i++ // the escaped byte is literal, whatever it is
		}
	}
	return false
}

// GlobMatch reports whether s matches pattern with the semantics of Redis's
// stringmatchlen (util.c), case-sensitive: '*' matches any run of bytes, '?'
// any one byte, '[...]' one byte from a class ('^' negates, 'a-z' is a range,
// reversed ranges are accepted, an unterminated class runs to the end of the
// pattern), and '\\' makes the next byte literal. Matching is byte-wise, not
// rune-wise; class ranges compare bytes as unsigned values (Redis built where
// C char is signed, such as on x86-64, differs for range endpoints >= 0x80).
// Redis quirks are kept on purpose: the empty string matches only the empty
// pattern (not "*"), and a pattern whose 1001st '*' is not its last byte
// matches nothing.
//
// It runs in O(len(pattern)*len(s)) time in the worst case and never
// recurses, so hostile patterns cannot exhaust the stack. Callers matching
// the same pattern repeatedly should go through an ACL, which compiles its
// patterns once.
func GlobMatch(pattern, s string) bool {
	g := compileGlob(pattern, rangeUnsigned)
	return g.match(s)
}
