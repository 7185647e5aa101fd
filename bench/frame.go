package main

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strconv"

	"github.com/gobwas/ws"
)

// The client side parses only what it needs, with byte scans: the frame
// header, and in a data message the seq, whether it is a pattern delivery,
// and the publisher's send time "t" at the start of the payload. Nothing
// here allocates on the data path.

var (
	errMasked   = errors.New("server frame is masked")
	errRsv      = errors.New("server frame has RSV bits set")
	errTooLarge = errors.New("server frame larger than 1 GiB")
)

// nextFrame parses one server-to-client frame at the start of b. n is 0 when
// b does not hold the complete frame yet.
func nextFrame(b []byte) (op ws.OpCode, fin bool, payload []byte, n int, err error) {
	if len(b) < 2 {
		return 0, false, nil, 0, nil
	}
	b0, b1 := b[0], b[1]
	if b0&0x70 != 0 {
		return 0, false, nil, 0, errRsv
	}
	if b1&0x80 != 0 {
		return 0, false, nil, 0, errMasked
	}
	op, fin = ws.OpCode(b0&0x0f), b0&0x80 != 0
	hdr, length := 2, uint64(b1&0x7f)
	switch length {
	case 126:
		if len(b) < 4 {
			return 0, false, nil, 0, nil
		}
		hdr, length = 4, uint64(binary.BigEndian.Uint16(b[2:4]))
	case 127:
		if len(b) < 10 {
			return 0, false, nil, 0, nil
		}
		hdr, length = 10, binary.BigEndian.Uint64(b[2:10])
		if length > 1<<30 {
			return 0, false, nil, 0, errTooLarge
		}
	}
	end := hdr + int(length)
	if len(b) < end {
		return 0, false, nil, 0, nil
	}
	return op, fin, b[hdr:end], end, nil
}

var (
	dataPrefix    = []byte(`{"type":"data","seq":`)
	dataField     = []byte(`,"data":`)
	patternField  = []byte(`,"pattern":`)
	tField        = []byte(`{"t":`)
	subscribedPfx = []byte(`{"type":"subscribed"`)
	replayedPfx   = []byte(`{"type":"replayed"`)
	errorPfx      = []byte(`{"type":"error","code":"`)
)

// isData reports whether a text message is a data message.
func isData(p []byte) bool { return bytes.HasPrefix(p, dataPrefix) }

// scanData extracts seq, whether the delivery came through a pattern, and
// the send time t (unix nanos) from a gateway data message whose data is a
// bench payload ({"t":...}). t is 0 when the payload is not one.
func scanData(p []byte) (seq uint64, pattern bool, t int64, ok bool) {
	if !bytes.HasPrefix(p, dataPrefix) {
		return 0, false, 0, false
	}
	i := len(dataPrefix)
	start := i
	for i < len(p) && p[i] >= '0' && p[i] <= '9' {
		seq = seq*10 + uint64(p[i]-'0')
		i++
	}
	if i == start {
		return 0, false, 0, false
	}
	// The channel and pattern are JSON strings: an unescaped `,"data":`
	// cannot occur inside them, so the first one is the field.
	d := bytes.Index(p[i:], dataField)
	if d < 0 {
		return seq, false, 0, false
	}
	pattern = bytes.Contains(p[i:i+d], patternField)
	j := i + d + len(dataField)
	if bytes.HasPrefix(p[j:], tField) {
		j += len(tField)
		for j < len(p) && p[j] >= '0' && p[j] <= '9' {
			t = t*10 + int64(p[j]-'0')
			j++
		}
	}
	return seq, pattern, t, true
}

// errorCode returns the code of an error message, or "".
func errorCode(p []byte) string {
	if !bytes.HasPrefix(p, errorPfx) {
		return ""
	}
	rest := p[len(errorPfx):]
	if e := bytes.IndexByte(rest, '"'); e >= 0 {
		return string(rest[:e])
	}
	return ""
}

// websocketGUID is RFC 6455's magic string for Sec-WebSocket-Accept.
const websocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// acceptFor is the Sec-WebSocket-Accept value expected for key.
func acceptFor(key string) [28]byte {
	h := sha1.Sum([]byte(key + websocketGUID))
	var out [28]byte
	base64.StdEncoding.Encode(out[:], h[:])
	return out
}

var (
	crlfcrlf     = []byte("\r\n\r\n")
	acceptHeader = []byte("sec-websocket-accept:")
)

// checkUpgrade validates an HTTP upgrade response head (ending in
// CRLFCRLF). It returns the HTTP status when it is not a valid 101.
func checkUpgrade(head []byte, accept []byte) (status int, ok bool) {
	line, _, _ := bytes.Cut(head, []byte("\r\n"))
	// "HTTP/1.1 101 Switching Protocols"
	f := bytes.Fields(line)
	if len(f) < 2 {
		return 0, false
	}
	status, _ = strconv.Atoi(string(f[1]))
	if status != 101 {
		return status, false
	}
	for _, h := range bytes.Split(head, []byte("\r\n")) {
		if len(h) > len(acceptHeader) && bytes.EqualFold(h[:len(acceptHeader)], acceptHeader) {
			return status, bytes.Equal(bytes.TrimSpace(h[len(acceptHeader):]), accept)
		}
	}
	return status, false
}

// hasHeader reports whether an HTTP head has a header named name (lower
// case).
func hasHeader(head []byte, name string) bool {
	for _, h := range bytes.Split(head, []byte("\r\n")) {
		if k, _, ok := bytes.Cut(h, []byte(":")); ok && bytes.EqualFold(bytes.TrimSpace(k), []byte(name)) {
			return true
		}
	}
	return false
}

// clientFrame builds a masked client frame (RFC 6455 §5.3) with gobwas/ws.
func clientFrame(op ws.OpCode, payload []byte) []byte {
	f := ws.NewFrame(op, true, append([]byte(nil), payload...))
	return ws.MustCompileFrame(ws.MaskFrameInPlace(f))
}

// serverFrame builds an unmasked text frame, as the gateway sends (floor).
func serverFrame(payload []byte) []byte {
	return ws.MustCompileFrame(ws.NewTextFrame(payload))
}

// benchPayload returns a JSON payload of exactly size bytes (at least the
// minimum {"t":N,"pad":""}) with the send time t.
func benchPayload(dst []byte, t int64, size int) []byte {
	start := len(dst)
	dst = append(dst, `{"t":`...)
	dst = strconv.AppendInt(dst, t, 10)
	dst = append(dst, `,"pad":"`...)
	for n := size - (len(dst) - start) - 2; n > 0; n-- {
		dst = append(dst, 'x')
	}
	return append(dst, `"}`...)
}
