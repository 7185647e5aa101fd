package wsproto

import "unicode/utf8"

// utf8Validator checks UTF-8 incrementally across fragments so an invalid
// sequence fails as soon as its first bad byte arrives (RFC 6455 §8.1 and
// Autobahn 6.x "fail fast"), even when a code point is split between two
// frames. The states follow Unicode Table 3-7 (well-formed byte
// sequences): state is the constraint on the next byte.
type utf8Validator struct{ state uint8 }

const (
	u8Accept = iota
	u8Need1  // one 80..BF
	u8Need2  // 80..BF then Need1
	u8Need3  // 80..BF then Need2
	u8E0     // A0..BF then Need1
	u8ED     // 80..9F then Need1
	u8F0     // 90..BF then Need2
	u8F4     // 80..8F then Need2
	u8Reject
)

// feed validates p as the continuation of what was fed before. It returns
// false once the input cannot be completed into valid UTF-8.
func (v *utf8Validator) feed(p []byte) bool {
	s := v.state
	if s == u8Accept && utf8.Valid(p) {
		return true // fast path: whole code points only
	}
	for _, b := range p {
		switch s {
		case u8Accept:
			switch {
			case b < 0x80:
			case b >= 0xC2 && b <= 0xDF:
				s = u8Need1
			case b == 0xE0:
				s = u8E0
			case b == 0xED:
				s = u8ED
			case b >= 0xE1 && b <= 0xEF:
				s = u8Need2
			case b == 0xF0:
				s = u8F0
			case b >= 0xF1 && b <= 0xF3:
				s = u8Need3
			case b == 0xF4:
				s = u8F4
			default:
				s = u8Reject
			}
		case u8Need1, u8Need2, u8Need3:
			if b < 0x80 || b > 0xBF {
				s = u8Reject
			} else {
				s--
			}
		case u8E0:
			s = cont(b, 0xA0, 0xBF, u8Need1)
		case u8ED:
			s = cont(b, 0x80, 0x9F, u8Need1)
		case u8F0:
			s = cont(b, 0x90, 0xBF, u8Need2)
		case u8F4:
			s = cont(b, 0x80, 0x8F, u8Need2)
		}
		if s == u8Reject {
			v.state = s
			return false
		}
	}
	v.state = s
	return true
}

func cont(b, lo, hi byte, next uint8) uint8 {
	if b < lo || b > hi {
		return u8Reject
	}
	return next
}

// complete reports whether the input so far ends on a code point boundary.
func (v *utf8Validator) complete() bool { return v.state == u8Accept }

func (v *utf8Validator) reset() { v.state = u8Accept }
