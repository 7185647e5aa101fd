package wsproto

import (
	"math"
	"strconv"
)

// StreamID is a Redis stream entry ID, "<ms>-<seq>": the position of an
// entry of a durable channel, the same on every gateway. IDs are ordered
// by Ms, then Seq (Compare), as Redis orders a stream's entries.
type StreamID struct {
	Ms, Seq uint64
}

// MaxStreamID is the largest ID, 18446744073709551615-18446744073709551615.
var MaxStreamID = StreamID{math.MaxUint64, math.MaxUint64}

// maxUintDigits is the length of math.MaxUint64 in decimal.
const maxUintDigits = 20

// ParseStreamID parses an entry ID strictly: two decimal numbers of at
// most 18446744073709551615 joined by '-', with no sign, space, leading
// zero ("0" itself is fine) or anything else. Redis is laxer (strtoull
// takes " 1", "+1" and "01", and a lone "1" means "1-0"); the gateway
// accepts only the canonical form, so that one position has one spelling,
// and sends Redis only IDs it formatted itself. It never allocates.
// Safe for concurrent use.
func ParseStreamID(s string) (StreamID, bool) {
	dash := -1
	for i := 0; i < len(s); i++ {
		if s[i] == '-' {
			dash = i
			break
		}
	}
	if dash < 0 {
		return StreamID{}, false
	}
	ms, ok := parseIDPart(s[:dash])
	if !ok {
		return StreamID{}, false
	}
	seq, ok := parseIDPart(s[dash+1:])
	if !ok {
		return StreamID{}, false
	}
	return StreamID{ms, seq}, true
}

// parseIDPart parses one canonical decimal uint64.
func parseIDPart(s string) (uint64, bool) {
	if len(s) == 0 || len(s) > maxUintDigits || (s[0] == '0' && len(s) > 1) {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (math.MaxUint64-d)/10 {
			return 0, false // overflow
		}
		n = n*10 + d
	}
	return n, true
}

// AppendTo appends the ID in its canonical form ("ms-seq") to dst.
func (id StreamID) AppendTo(dst []byte) []byte {
	dst = strconv.AppendUint(dst, id.Ms, 10)
	dst = append(dst, '-')
	return strconv.AppendUint(dst, id.Seq, 10)
}

// String is the canonical form, which ParseStreamID reads back.
func (id StreamID) String() string {
	var b [2*maxUintDigits + 1]byte
	return string(id.AppendTo(b[:0]))
}

// Compare returns -1, 0 or +1 as id is below, equal to or above o.
func (id StreamID) Compare(o StreamID) int {
	switch {
	case id.Ms < o.Ms:
		return -1
	case id.Ms > o.Ms:
		return 1
	case id.Seq < o.Seq:
		return -1
	case id.Seq > o.Seq:
		return 1
	}
	return 0
}

// Less reports whether id is below o.
func (id StreamID) Less(o StreamID) bool { return id.Compare(o) < 0 }

// IsZero reports whether id is 0-0, which no entry has: the position
// before a stream's first entry.
func (id StreamID) IsZero() bool { return id == StreamID{} }

// Next returns the smallest ID above id; false when id is MaxStreamID.
// Nothing can lie between id and its Next, which is how a stream's first
// entry proves that nothing after a position was removed.
func (id StreamID) Next() (StreamID, bool) {
	switch {
	case id.Seq < math.MaxUint64:
		return StreamID{id.Ms, id.Seq + 1}, true
	case id.Ms < math.MaxUint64:
		return StreamID{id.Ms + 1, 0}, true
	}
	return id, false
}

// Prev returns the largest ID below id; false when id is 0-0.
func (id StreamID) Prev() (StreamID, bool) {
	switch {
	case id.Seq > 0:
		return StreamID{id.Ms, id.Seq - 1}, true
	case id.Ms > 0:
		return StreamID{id.Ms - 1, math.MaxUint64}, true
	}
	return id, false
}
