package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Limits that keep the parser safe on hostile input (see FuzzReadReply):
// nothing is preallocated from a length header, and nesting is bounded.
const (
	maxDepth   = 64
	maxBulkLen = 512 << 20 // redis' own proto-max-bulk-len default
	nilReply   = "(nil)"
)

var errProtocol = errors.New("redistest: RESP protocol error")

// appendCommand encodes args as a RESP array of bulk strings, the form
// redis expects for every client command. Arguments may hold any bytes.
func appendCommand(b []byte, args []string) []byte {
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(len(args)), 10)
	b = append(b, '\r', '\n')
	for _, a := range args {
		b = append(b, '$')
		b = strconv.AppendInt(b, int64(len(a)), 10)
		b = append(b, '\r', '\n')
		b = append(b, a...)
		b = append(b, '\r', '\n')
	}
	return b
}

// readReply reads one complete reply and renders it as text:
//
//	simple string  +OK          -> "OK"
//	error          -ERR x       -> "-ERR x" (also RESP3 blob errors)
//	integer        :3           -> "3"
//	bulk string    $n ...       -> its content, byte for byte
//	null           $-1, *-1, _  -> "(nil)"
//	array          *n ...       -> elements rendered recursively and joined
//	                               by single spaces (nested arrays flatten)
//
// RESP3 types (maps, sets, pushes, doubles, booleans, big numbers, verbatim
// strings, attributes) are accepted too, in case a test sends HELLO 3.
func readReply(r *bufio.Reader) (string, error) {
	return readValue(r, 0)
}

func readValue(r *bufio.Reader, depth int) (string, error) {
	if depth > maxDepth {
		return "", fmt.Errorf("%w: nesting deeper than %d", errProtocol, maxDepth)
	}
	line, err := readLine(r)
	if err != nil {
		return "", err
	}
	if line == "" {
		return "", fmt.Errorf("%w: empty reply line", errProtocol)
	}
	typ, rest := line[0], line[1:]
	switch typ {
	case '+', '(': // simple string, big number
		return rest, nil
	case '-':
		return "-" + rest, nil
	case ':':
		n, err := strconv.ParseInt(rest, 10, 64)
		if err != nil {
			return "", fmt.Errorf("%w: bad integer %q", errProtocol, rest)
		}
		return strconv.FormatInt(n, 10), nil
	case ',': // double
		return rest, nil
	case '#': // boolean
		switch rest {
		case "t":
			return "true", nil
		case "f":
			return "false", nil
		}
		return "", fmt.Errorf("%w: bad boolean %q", errProtocol, rest)
	case '_': // RESP3 null
		return nilReply, nil
	case '$', '!', '=': // bulk string, blob error, verbatim string
		n, err := parseLen(rest, maxBulkLen)
		if err != nil {
			return "", err
		}
		if n < 0 {
			return nilReply, nil
		}
		s, err := readBulk(r, n)
		if err != nil {
			return "", err
		}
		switch typ {
		case '!':
			return "-" + s, nil
		case '=':
			if len(s) < 4 || s[3] != ':' {
				return "", fmt.Errorf("%w: verbatim string without format prefix", errProtocol)
			}
			return s[4:], nil
		}
		return s, nil
	case '*', '~', '>', '%', '|': // array, set, push, map, attribute
		n, err := parseLen(rest, maxBulkLen)
		if err != nil {
			return "", err
		}
		if n < 0 {
			return nilReply, nil
		}
		if typ == '%' || typ == '|' {
			n *= 2 // key/value pairs
		}
		parts := make([]string, 0, min(n, 64))
		for range n {
			v, err := readValue(r, depth+1)
			if err != nil {
				return "", err
			}
			parts = append(parts, v)
		}
		if typ == '|' {
			// Attributes annotate the reply that follows; skip them.
			return readValue(r, depth+1)
		}
		return strings.Join(parts, " "), nil
	}
	return "", fmt.Errorf("%w: unknown reply type %q", errProtocol, typ)
}

// readLine returns one CRLF-terminated line without its terminator.
func readLine(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		if errors.Is(err, io.EOF) && line != "" {
			err = io.ErrUnexpectedEOF
		}
		return "", err
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return "", fmt.Errorf("%w: line not terminated by CRLF: %q", errProtocol, line)
	}
	return line[:len(line)-2], nil
}

// parseLen parses a length header; -1 means null.
func parseLen(s string, limit int) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < -1 || n > limit {
		return 0, fmt.Errorf("%w: bad length %q", errProtocol, s)
	}
	return n, nil
}

// readBulk reads n payload bytes plus the trailing CRLF. The payload may
// contain anything, including CR, LF and NUL. The buffer grows with the data
// actually received, so a lying length header cannot force a huge allocation.
func readBulk(r *bufio.Reader, n int) (string, error) {
	var b strings.Builder
	if _, err := io.CopyN(&b, r, int64(n)); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return "", err
	}
	var crlf [2]byte
	if _, err := io.ReadFull(r, crlf[:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return "", err
	}
	if crlf != [2]byte{'\r', '\n'} {
		return "", fmt.Errorf("%w: bulk string of %d bytes not followed by CRLF", errProtocol, n)
	}
	return b.String(), nil
}
