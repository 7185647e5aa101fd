package wsproto

import (
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// The command parser reads JSON with the small scanner below instead of
// encoding/json: decoding a command through reflection produced about 1 KB
// of garbage per subscribe, on the event loop, for every connecting socket.
// The scanner accepts and refuses exactly the documents encoding/json's
// Unmarshal does, and unescapes strings exactly as it does (invalid UTF-8
// and lone surrogates become U+FFFD); a differential fuzz target against
// encoding/json holds it to that. Nothing here allocates, except the stack
// of open containers when a value nests deeper than 64 levels.

// maxJSONDepth is encoding/json's nesting limit: a document with more open
// objects and arrays at once is invalid to it, so it is to the parser too.
const maxJSONDepth = 10000

// Flags describing a scanned JSON string's content.
const (
	strEscaped = 1 << iota // holds a backslash escape
	strHigh                // holds a byte >= 0x80 (maybe invalid UTF-8)
)

// isJSONSpace reports JSON's insignificant whitespace (RFC 8259 §2).
func isJSONSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(p []byte, i int) int {
	for i < len(p) && isJSONSpace(p[i]) {
		i++
	}
	return i
}

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// strPlain marks the bytes that need no attention inside a JSON string.
var strPlain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// scanString checks the JSON string that starts at p[i] (a '"') and returns
// the index just past its closing quote and its content flags. Raw bytes
// >= 0x80 are accepted whatever they are, as encoding/json accepts them.
func scanString(p []byte, i int) (end int, flags uint8, ok bool) {
	for j := i + 1; ; j++ {
		for j < len(p) && strPlain[p[j]] {
			j++
		}
		if j >= len(p) {
			return 0, 0, false
		}
		switch c := p[j]; {
		case c == '"':
			return j + 1, flags, true
		case c == '\\':
			flags |= strEscaped
			if j++; j >= len(p) {
				return 0, 0, false
			}
			switch e := p[j]; {
			case e == 'u':
				if len(p)-j < 5 || !isHex(p[j+1]) || !isHex(p[j+2]) || !isHex(p[j+3]) || !isHex(p[j+4]) {
					return 0, 0, false
				}
				j += 4
			case unescaped[e] == 0:
				return 0, 0, false
			}
		case c < 0x20:
			return 0, 0, false
		default:
			flags |= strHigh
		}
	}
}

// scanNumber checks the JSON number that starts at p[i] (RFC 8259 §6) and
// returns the index just past it. What follows is the caller's to check.
func scanNumber(p []byte, i int) (int, bool) {
	if p[i] == '-' {
		i++
	}
	switch {
	case i >= len(p):
		return 0, false
	case p[i] == '0':
		i++
	case '1' <= p[i] && p[i] <= '9':
		for i++; i < len(p) && isDigit(p[i]); i++ {
		}
	default:
		return 0, false
	}
	if i < len(p) && p[i] == '.' {
		if i++; i >= len(p) || !isDigit(p[i]) {
			return 0, false
		}
		for i++; i < len(p) && isDigit(p[i]); i++ {
		}
	}
	if i < len(p) && (p[i] == 'e' || p[i] == 'E') {
		if i++; i < len(p) && (p[i] == '+' || p[i] == '-') {
			i++
		}
		if i >= len(p) || !isDigit(p[i]) {
			return 0, false
		}
		for i++; i < len(p) && isDigit(p[i]); i++ {
		}
	}
	return i, true
}

// scanLiteral checks that p[i:] starts with lit.
func scanLiteral(p []byte, i int, lit string) (int, bool) {
	if len(p)-i < len(lit) || string(p[i:i+len(lit)]) != lit {
		return 0, false
	}
	return i + len(lit), true
}

// scanMember checks an object member's key, the colon and the whitespace
// around it, from p[i] (the key's opening quote), and returns the index of
// the member's value.
func scanMember(p []byte, i int) (int, bool) {
	if i >= len(p) || p[i] != '"' {
		return 0, false
	}
	i, _, ok := scanString(p, i)
	if !ok {
		return 0, false
	}
	if i = skipSpace(p, i); i >= len(p) || p[i] != ':' {
		return 0, false
	}
	return skipSpace(p, i+1), true
}

// skipValue checks the JSON value that starts at p[i] (not whitespace) and
// returns the index just past it. depth is the number of containers already
// open around it. It walks nested values with an explicit stack, so hostile
// nesting costs memory in proportion (bounded by maxJSONDepth), not Go stack.
func skipValue(p []byte, i, depth int) (int, bool) {
	var stackBuf [64]byte
	open := stackBuf[:0] // the closing bracket of each open container
	var ok bool
	for {
		// p[i] should start a value.
		if i >= len(p) {
			return 0, false
		}
		switch c := p[i]; c {
		case '{', '[':
			if depth+len(open)+1 > maxJSONDepth {
				return 0, false
			}
			closer := byte('}')
			if c == '[' {
				closer = ']'
			}
			if i = skipSpace(p, i+1); i < len(p) && p[i] == closer {
				i, ok = i+1, true // empty: a complete value
				break
			}
			open = append(open, closer)
			if c == '{' {
				if i, ok = scanMember(p, i); !ok {
					return 0, false
				}
			}
			continue
		case '"':
			if i, _, ok = scanString(p, i); !ok {
				return 0, false
			}
		case 't':
			i, ok = scanLiteral(p, i, "true")
		case 'f':
			i, ok = scanLiteral(p, i, "false")
		case 'n':
			i, ok = scanLiteral(p, i, "null")
		default:
			i, ok = scanNumber(p, i)
		}
		if !ok {
			return 0, false
		}
		// A value ended: close containers until one continues.
		for {
			if len(open) == 0 {
				return i, true
			}
			if i = skipSpace(p, i); i >= len(p) {
				return 0, false
			}
			closer := open[len(open)-1]
			if p[i] == closer {
				open = open[:len(open)-1]
				i++
				continue
			}
			if p[i] != ',' {
				return 0, false
			}
			i = skipSpace(p, i+1)
			if closer == '}' {
				if i, ok = scanMember(p, i); !ok {
					return 0, false
				}
			}
			break
		}
	}
}

// plainString reports whether a string with these flags and content
// unescapes to its own bytes.
func plainString(s []byte, flags uint8) bool {
	return flags&strEscaped == 0 && (flags&strHigh == 0 || utf8.Valid(s))
}

// appendUnquoted appends the unescaped content s of a JSON string (without
// its quotes, already checked by scanString), exactly as encoding/json
// decodes it: invalid UTF-8 bytes and unpaired surrogate escapes become
// U+FFFD. With limit >= 0 it stops, reporting false, as soon as more than
// limit bytes were appended; dst then needs limit+utf8.UTFMax bytes of
// spare capacity not to grow.
func appendUnquoted(dst, s []byte, limit int) ([]byte, bool) {
	base := len(dst)
	for r := 0; r < len(s); {
		switch c := s[r]; {
		case c == '\\':
			switch e := s[r+1]; e {
			case 'u':
				rr := hex4(s[r+2 : r+6])
				r += 6
				if utf16.IsSurrogate(rr) {
					rr1 := rune(-1)
					if len(s)-r >= 6 && s[r] == '\\' && s[r+1] == 'u' {
						rr1 = hex4(s[r+2 : r+6])
					}
					// Only a valid pair consumes the second escape; any
					// other surrogate stands alone as U+FFFD.
					if dec := utf16.DecodeRune(rr, rr1); dec != unicode.ReplacementChar {
						r += 6
						rr = dec
					} else {
						rr = unicode.ReplacementChar
					}
				}
				dst = utf8.AppendRune(dst, rr)
			default:
				dst = append(dst, unescaped[e])
				r += 2
			}
		case c < utf8.RuneSelf:
			j := r + 1
			for j < len(s) && s[j] < utf8.RuneSelf && s[j] != '\\' {
				j++
			}
			if limit >= 0 && j-r > limit+1-(len(dst)-base) {
				j = r + limit + 1 - (len(dst) - base)
			}
			dst = append(dst, s[r:j]...)
			r = j
		default:
			rr, size := utf8.DecodeRune(s[r:])
			if rr == utf8.RuneError && size == 1 {
				dst = append(dst, "\uFFFD"...)
			} else {
				dst = append(dst, s[r:r+size]...)
			}
			r += size
		}
		if limit >= 0 && len(dst)-base > limit {
			return dst, false
		}
	}
	return dst, true
}

// unescaped maps the byte after a backslash to what the escape stands for
// (RFC 8259 §7), except \u.
var unescaped = [256]byte{'"': '"', '\\': '\\', '/': '/', 'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t'}

// hex4 decodes four hex digits (checked by scanString).
func hex4(h []byte) rune {
	var r rune
	for _, c := range h[:4] {
		switch {
		case c <= '9':
			c -= '0'
		case c >= 'a':
			c -= 'a' - 10
		default:
			c -= 'A' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}

// foldedKeyEqual reports whether the unescaped object key k names the field
// whose name, upper-cased, is upper (ASCII). encoding/json matches keys to
// struct fields without regard to case, with Unicode simple folding: so
// "ACTION" names "action", and "channelſ" (U+017F, a long s) names
// "channels". The command's fields keep that behaviour.
func foldedKeyEqual(k []byte, upper string) bool {
	j := 0
	for n := 0; n < len(k); j++ {
		var r rune
		if c := k[n]; c < utf8.RuneSelf {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			r = rune(c)
			n++
		} else {
			rr, size := utf8.DecodeRune(k[n:])
			r = foldRune(rr)
			n += size
		}
		if j >= len(upper) || r != rune(upper[j]) {
			return false
		}
	}
	return j == len(upper)
}

// foldRune returns the smallest rune of r's simple case-folding orbit, as
// encoding/json folds key runes beyond ASCII.
func foldRune(r rune) rune {
	for {
		r2 := unicode.SimpleFold(r)
		if r2 <= r {
			return r2
		}
		r = r2
	}
}
