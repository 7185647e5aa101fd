package auth

// PatternsOverlap reports whether some channel name matches both Redis
// globs a and b (GlobMatch semantics; a channel name is never empty). The
// fanout uses it to refuse a pattern subscription that could match a
// sharded channel: Redis never delivers an SPUBLISH to a PSUBSCRIBE, so
// such a pattern would silently miss those messages.
//
// The answer errs towards true: class ranges with a byte >= 0x80 are read
// both ways (see rangeMode), and Redis's nesting guard, which makes some
// patterns of over 1000 stars match nothing, is ignored. It searches the
// product of the two token lists, so it costs O(len(a)*len(b)) steps:
// a few tens of thousands for two patterns of MaxPatternLen bytes. Safe for
// concurrent use.
func PatternsOverlap(a, b string) bool {
	ga, gb := compileGlob(a, rangeUnion), compileGlob(b, rangeUnion)
	sa, sb := tokenSets(&ga), tokenSets(&gb)
	la, lb := len(ga.toks), len(gb.toks)
	// State (i, j, c): i tokens of a and j of b are behind, and c says
	// whether a byte was consumed (the empty string is no channel).
	id := func(i, j int, c bool) int {
		n := (i*(lb+1) + j) * 2
		if c {
			n++
		}
		return n
	}
	seen := make([]bool, (la+1)*(lb+1)*2)
	type state struct {
		i, j int
		c    bool
	}
	stack := []state{{0, 0, false}}
	seen[id(0, 0, false)] = true
	push := func(i, j int, c bool) {
		if k := id(i, j, c); !seen[k] {
			seen[k] = true
			stack = append(stack, state{i, j, c})
		}
	}
	for len(stack) > 0 {
		s := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if s.i == la && s.j == lb && s.c {
			return true
		}
		starA := s.i < la && ga.toks[s.i].kind == tokStar
		starB := s.j < lb && gb.toks[s.j].kind == tokStar
		// A star may match nothing.
		if starA {
			push(s.i+1, s.j, s.c)
		}
		if starB {
			push(s.i, s.j+1, s.c)
		}
		if s.i == la || s.j == lb {
			continue // one side cannot take another byte
		}
		// Take one byte that both sides accept: a star keeps its
		// place, any other token moves on.
		if !sa[s.i].intersects(&sb[s.j]) {
			continue
		}
		ni, nj := s.i+1, s.j+1
		if starA {
			ni = s.i
		}
		if starB {
			nj = s.j
		}
		push(ni, nj, true)
	}
	return false
}

// tokenSets returns, for each token of g, the bytes it accepts (every
// byte for '*' and '?').
func tokenSets(g *glob) []byteSet {
	sets := make([]byteSet, len(g.toks))
	for i := range g.toks {
		t := &g.toks[i]
		switch t.kind {
		case tokLit:
			sets[i].add(t.lit)
		case tokSet:
			sets[i] = *t.set
		default:
			sets[i] = byteSet{^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0)}
		}
	}
	return sets
}

func (s *byteSet) intersects(o *byteSet) bool {
	return s[0]&o[0] != 0 || s[1]&o[1] != 0 || s[2]&o[2] != 0 || s[3]&o[3] != 0
}
