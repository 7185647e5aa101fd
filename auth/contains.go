package auth

import (
	"slices"
)

// workBudget bounds the work of deciding one pattern subscription, in
// units of roughly one cheap machine step each: a byte of the pattern
// compiled, one byte class tested against one token, one product state of
// the search advanced by one byte class, a new state of the outer
// automaton. Inclusion between globs is coNP-hard in general (an outer
// pattern like "*a??????" needs exponentially many subset states), so an
// exact answer for every input would let a crafted pattern stall an event
// loop. Every stage charges its cost before doing the work and the answer
// is false, the safe one, as soon as the budget is spent: a budget that
// refuses rather than one that spins. Ordinary patterns need well under a
// thousand units and long realistic ones (70 bytes, stars on both sides)
// a few thousand (TestContainsWork pins both); the worst case is a few
// tens of microseconds on one core (BenchmarkAllowedHostile).
const workBudget = 1 << 13

// work is what is left of one decision's budget.
type work struct{ left int }

// spend charges n units and reports whether the budget still holds.
func (w *work) spend(n int) bool {
	w.left -= n
	return w.left >= 0
}

// newOuterStateCost is the charge for one new state of the outer
// automaton beyond its transitions: a hash lookup and an insertion.
const newOuterStateCost = 64

// posWords sizes posWide. Positions run 0..len(tokens), so the outer
// pattern may have at most posWords*64-1 tokens, comfortably above
// MaxPatternLen.
const posWords = 5

const maxOuterToks = posWords*64 - 1

// posBits is a set of positions in the outer pattern's token list: a state
// of the outer automaton's subset construction. Values are comparable, so
// they can be looked up without per-state allocation. Two implementations
// exist because nearly every real pattern fits one machine word, which makes
// each automaton step a handful of instructions.
type posBits[T any] interface {
	comparable
	with(i int) T
	has(i int) bool
	and(T) T
	or(T) T
	shl1() T // every position moved one token forward
}

// pos64 holds positions 0..63.
type pos64 uint64

func (s pos64) with(i int) pos64  { return s | 1<<uint(i) }
func (s pos64) has(i int) bool    { return s&(1<<uint(i)) != 0 }
func (s pos64) and(o pos64) pos64 { return s & o }
func (s pos64) or(o pos64) pos64  { return s | o }
func (s pos64) shl1() pos64       { return s << 1 }

// posWide holds positions 0..posWords*64-1.
type posWide [posWords]uint64

func (s posWide) with(i int) posWide {
	s[i>>6] |= 1 << (uint(i) & 63)
	return s
}

func (s posWide) has(i int) bool { return s[i>>6]&(1<<(uint(i)&63)) != 0 }

func (s posWide) and(o posWide) posWide {
	for k := range s {
		s[k] &= o[k]
	}
	return s
}

func (s posWide) or(o posWide) posWide {
	for k := range s {
		s[k] |= o[k]
	}
	return s
}

func (s posWide) shl1() posWide {
	var carry uint64
	for k := range s {
		next := s[k] >> 63
		s[k] = s[k]<<1 | carry
		carry = next
	}
	return s
}

// PatternContains reports whether every channel matched by the Redis glob
// inner is also matched by the Redis glob outer, i.e. whether granting outer
// implies granting a PSUBSCRIBE to inner. Both use GlobMatch semantics.
//
// The answer is sound: it is never true when some string matches inner but
// not outer. It is exact for everything except pathological inputs: when
// either pattern is longer than MaxPatternLen bytes, or when deciding would
// exceed an internal work budget (workBudget), it returns false. A literal inner (see
// IsPattern) is decided by matching its unescaped form, as GlobMatch does,
// with no length limit. Class ranges with a byte >= 0x80, which Redis builds
// read differently (see GlobMatch), are read narrowly in outer and broadly
// in inner, so the answer holds on any build.
func PatternContains(outer, inner string) bool {
	w := work{left: workBudget}
	return patternContains(outer, inner, &w)
}

// patternContains is PatternContains spending from w.
func patternContains(outer, inner string, w *work) bool {
	// Reading ambiguous class ranges generously for inner and strictly for
	// outer keeps the answer sound whichever way the Redis build reads them.
	in := compileGlob(inner, rangeUnion)
	if in.literal {
		out := compileGlob(outer, rangeBoth)
		return out.match(in.literalString())
	}
	if outer == inner {
		return true
	}
	if len(outer) > MaxPatternLen || len(inner) > MaxPatternLen {
		return false
	}
	out := compileGlob(outer, rangeBoth)
	if !w.spend(len(inner)) {
		return false
	}
	return containsGlob(&out, &in, w)
}

// containsGlob decides L(in) ⊆ L(o) for compiled globs, spending from w;
// false once w is spent.
func containsGlob(o, in *glob, w *work) bool {
	if in.literal {
		return o.match(in.literalString())
	}
	if !w.spend(len(o.toks)) {
		return false
	}
	if o.dead || len(o.toks) > maxOuterToks {
		// A dead outer matches nothing; saying false is exact unless inner
		// matches nothing too, and being conservative there costs nothing.
		return false
	}
	// A dead inner matches nothing in Redis, but older Redis versions lack
	// the nesting guard; analysing it as an ordinary glob answers for the
	// larger language, which is sound for both.
	if contains, decided := prefixStar(o, in); decided {
		return contains
	}
	return containsSearch(o, in, w)
}

// prefixStar decides the common ACL shape exactly in linear time: outer is
// a run of single-byte tokens followed by one final '*' ("market:tick:*",
// "*"), so a string is in outer exactly when its first k bytes fit outer's
// first k tokens. decided is false for other outer shapes and for the one
// case of this shape that needs the full search (an inner star facing an
// outer token that accepts every byte).
func prefixStar(o, in *glob) (contains, decided bool) {
	k := len(o.toks) - 1
	if k < 0 || o.toks[k].kind != tokStar {
		return false, false
	}
	for j := 0; j < k; j++ {
		if o.toks[j].kind == tokStar {
			return false, false
		}
	}
	// The counterexamples below are built from inner's tokens, which needs
	// every one of them to accept some byte.
	if !nonEmpty(in) {
		return true, true // inner matches nothing: vacuously contained
	}
	for j := 0; j < k; j++ {
		if j == len(in.toks) {
			// No star so far: every inner string has len(in.toks) < k
			// bytes, too short for outer. (A non-literal inner never
			// matches "", so there is at least one such string.)
			return false, true
		}
		t := &in.toks[j]
		if t.kind == tokStar {
			if o.toks[j].kind == tokAny || o.toks[j].kind == tokSet && o.toks[j].set.count() == 256 {
				return false, false
			}
			// The star can put a byte outer's token j refuses at offset j.
			return false, true
		}
		if !tokenSubset(t, &o.toks[j]) {
			return false, true // a byte of t that outer refuses at offset j
		}
	}
	// Every inner string starts with k bytes outer accepts; the star takes
	// the rest (the strings are non-empty, as Redis's star needs).
	return true, true
}

// nonEmpty reports whether every single-byte token accepts some byte, i.e.
// whether the pattern matches any string at all.
func nonEmpty(g *glob) bool {
	for i := range g.toks {
		if t := &g.toks[i]; t.kind == tokSet && t.set.count() == 0 {
			return false
		}
	}
	return true
}

// tokenSubset reports whether single-byte token a accepts only bytes that b
// accepts. A star is never a subset of a single-byte token.
func tokenSubset(a, b *token) bool {
	if a.kind == tokStar || b.kind == tokStar {
		return false
	}
	switch b.kind {
	case tokAny:
		return true
	case tokLit:
		switch a.kind {
		case tokLit:
			return a.lit == b.lit
		case tokSet:
			n := a.set.count()
			return n == 0 || n == 1 && a.set.has(b.lit)
		}
		return false
	default: // tokSet
		switch a.kind {
		case tokLit:
			return b.set.has(a.lit)
		case tokAny:
			return b.set.count() == 256
		}
		for w := range a.set {
			if a.set[w]&^b.set[w] != 0 {
				return false
			}
		}
		return true
	}
}

// smallSet is a set with a linear-scan slice for the few dozen entries an
// ordinary search needs (cheaper than hashing, and allocation-light) and a
// map once it grows.
type smallSet[K comparable, V any] struct {
	keys []K
	vals []V
	big  map[K]V
}

const smallSetMax = 32

func (s *smallSet[K, V]) get(k K) (V, bool) {
	if s.big != nil {
		v, ok := s.big[k]
		return v, ok
	}
	for i := range s.keys {
		if s.keys[i] == k {
			return s.vals[i], true
		}
	}
	var zero V
	return zero, false
}

func (s *smallSet[K, V]) put(k K, v V) {
	if s.big == nil && len(s.keys) < smallSetMax {
		s.keys = append(s.keys, k)
		s.vals = append(s.vals, v)
		return
	}
	if s.big == nil {
		s.big = make(map[K]V, 2*smallSetMax)
		for i := range s.keys {
			s.big[s.keys[i]] = s.vals[i]
		}
		s.keys, s.vals = nil, nil
	}
	s.big[k] = v
}

// outerDFA is the subset construction of the outer pattern's automaton,
// built lazily: each distinct set of outer positions gets a small id, and
// its successor per byte class is computed once and cached. Ordinary ACL
// patterns have only a handful of such states.
type outerDFA[T posBits[T]] struct {
	o         *glob
	m         int
	nreps     int
	starMask  T
	adv       []T // per byte class: outer positions whose token accepts it
	sets      []T // id → set of outer positions
	ids       smallSet[T, int32]
	trans     []int32 // id*nreps + class → successor id, or -1 until computed
	accept    []bool  // id → outer accepts here
	universal []bool  // id → outer sits in a final star: accepts every extension
	w         *work   // charged for every new state
	over      bool    // w ran out while adding a state
}

func newOuterDFA[T posBits[T]](o *glob, reps []byte, w *work) *outerDFA[T] {
	// Capacities fit ordinary patterns, so growth rarely allocates.
	const guess = 16
	d := &outerDFA[T]{
		o: o, m: len(o.toks), nreps: len(reps),
		adv:       make([]T, len(reps)),
		sets:      make([]T, 0, guess),
		trans:     make([]int32, 0, guess*len(reps)),
		accept:    make([]bool, 0, guess),
		universal: make([]bool, 0, guess),
		w:         w,
	}
	for j := range o.toks {
		if o.toks[j].kind == tokStar {
			d.starMask = d.starMask.with(j)
		}
	}
	for r, c := range reps {
		for j := range o.toks {
			if t := &o.toks[j]; t.kind != tokStar && t.matches(c) {
				d.adv[r] = d.adv[r].with(j)
			}
		}
	}
	return d
}

// closure adds the position after each star: a star may match nothing.
// Star runs are collapsed by compileGlob, so one step suffices.
func (d *outerDFA[T]) closure(s T) T { return s.or(s.and(d.starMask).shl1()) }

func (d *outerDFA[T]) id(s T) int32 {
	if id, ok := d.ids.get(s); ok {
		return id
	}
	if !d.w.spend(d.nreps + newOuterStateCost) {
		d.over = true
	}
	id := int32(len(d.sets))
	d.sets = append(d.sets, s)
	d.ids.put(s, id)
	for range d.nreps {
		d.trans = append(d.trans, -1)
	}
	d.accept = append(d.accept, s.has(d.m))
	last := d.m - 1
	d.universal = append(d.universal, last >= 0 && d.o.toks[last].kind == tokStar && s.has(last))
	return id
}

func (d *outerDFA[T]) step(id int32, r int) int32 {
	k := int(id)*d.nreps + r
	if next := d.trans[k]; next >= 0 {
		return next
	}
	s := d.sets[id]
	// Stars loop on any byte; single-byte tokens that accept the byte
	// advance one position.
	next := d.id(d.closure(s.and(d.starMask).or(s.and(d.adv[r]).shl1())))
	d.trans[k] = next
	return next
}

// pstate packs a product state: inner position and outer DFA state id.
type pstate uint64

func mkPstate(in int, out int32) pstate { return pstate(uint64(in)<<32 | uint64(uint32(out))) }
func (p pstate) in() int                { return int(p >> 32) }
func (p pstate) out() int32             { return int32(uint32(p)) }

// containsSearch decides L(in) ⊆ L(o) by exploring the product of inner's
// NFA with outer's (lazily determinised) automaton, looking for a reachable
// state where inner accepts and outer does not. Bytes are explored one
// representative per equivalence class (bytes no token of either pattern can
// tell apart), so the alphabet is tiny for ordinary patterns. Inner stays an
// NFA, one position per product state, because inner is client-controlled
// and its own determinisation could blow up; outer comes from trusted
// configuration. A star position of inner also stands for "just past the
// star", since a star may match nothing.
func containsSearch(o, in *glob, w *work) bool {
	if len(o.toks) < 64 {
		return containsSearchT[pos64](o, in, w)
	}
	return containsSearchT[posWide](o, in, w)
}

func containsSearchT[T posBits[T]](o, in *glob, w *work) bool {
	n := len(in.toks)
	reps, ok := byteReps(w, o, in)
	if !ok || !w.spend(len(reps)*len(o.toks)) {
		return false
	}
	d := newOuterDFA[T](o, reps, w)
	innerAccepts := func(i int) bool {
		return i == n || i == n-1 && in.toks[i].kind == tokStar
	}

	var start T
	start = start.with(0)
	// The start state is deliberately not recorded as seen: it stands for
	// the empty word, which no non-literal pattern matches in Redis, so its
	// acceptance must not be judged; if a non-empty word leads back to the
	// same state it is recorded and judged then.
	stack := make([]pstate, 1, 32)
	stack[0] = mkPstate(0, d.id(d.closure(start)))
	// seen is a bitmap of product states, n+1 inner positions per outer
	// state, grown as outer states appear: no hashing per step.
	stride := n + 1
	seen := make([]uint64, 0, 8)
	for len(stack) > 0 {
		st := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if !w.spend(len(reps)) {
			return false
		}
		i := st.in()
		for r, c := range reps {
			var succ [2]int
			ns := 0
			if t := &in.toks[i]; t.kind == tokStar {
				succ[ns] = i
				ns++
				if i+1 < n && in.toks[i+1].matches(c) {
					succ[ns] = i + 2
					ns++
				}
			} else if t.matches(c) {
				succ[ns] = i + 1
				ns++
			}
			if ns == 0 {
				continue
			}
			out := d.step(st.out(), r)
			if d.over {
				return false
			}
			for _, i2 := range succ[:ns] {
				bit := int(out)*stride + i2
				for bit>>6 >= len(seen) {
					seen = append(seen, 0)
				}
				if seen[bit>>6]&(1<<(bit&63)) != 0 {
					continue
				}
				seen[bit>>6] |= 1 << (bit & 63)
				next := mkPstate(i2, out)
				if innerAccepts(i2) && !d.accept[out] {
					return false
				}
				if d.universal[out] || i2 == n {
					continue // nothing further can be a counterexample
				}
				stack = append(stack, next)
			}
		}
	}
	return true
}

// byteReps partitions the 256 byte values into classes that no token of the
// given globs distinguishes and returns one representative per class, in
// ascending order. Any two bytes of a class drive both automata
// identically, so exploring the representatives explores every string.
// Each single-byte token refines the partition, at a cost of one unit of
// w per class; ok is false once w is spent.
func byteReps(w *work, gs ...*glob) (reps []byte, ok bool) {
	classes := make([]byteSet, 1, 16)
	classes[0] = byteSet{^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0)}
	for _, g := range gs {
		for ti := range g.toks {
			t := &g.toks[ti]
			var set byteSet
			switch t.kind {
			case tokLit:
				set.add(t.lit)
			case tokSet:
				set = *t.set
			default:
				continue
			}
			if !w.spend(len(classes)) {
				return nil, false
			}
			for i, n := 0, len(classes); i < n; i++ {
				c := &classes[i]
				var in, out byteSet
				for k := range c {
					in[k], out[k] = c[k]&set[k], c[k]&^set[k]
				}
				if in != (byteSet{}) && out != (byteSet{}) {
					*c = in
					classes = append(classes, out)
				}
			}
		}
	}
	reps = make([]byte, 0, len(classes))
	for i := range classes {
		reps = append(reps, classes[i].min())
	}
	slices.Sort(reps)
	return reps, true
}
