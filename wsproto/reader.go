package wsproto

import (
	"encoding/binary"
	"math"

	"github.com/gobwas/ws"
	"github.com/valyala/bytebufferpool"
)

// Kind says what Reader.Next found.
type Kind uint8

// The kinds of event Reader.Next reports.
const (
	// KindNone: no complete frame yet (n == 0), or a data fragment was
	// consumed and buffered (n > 0).
	KindNone Kind = iota
	// KindMessage: a complete text or binary message (Op says which).
	KindMessage
	// KindPing, KindPong: a control frame; Payload is its application data.
	KindPing
	KindPong
	// KindClose: the peer's close frame; CloseCode is its status
	// (ws.StatusNoStatusRcvd when the body was empty).
	KindClose
)

// Event is one thing found by Reader.Next. Payload aliases either the
// caller's buffer or the Reader's reassembly buffer: it is valid only until
// the caller discards those bytes or calls Next again.
type Event struct {
	Kind      Kind
	Op        ws.OpCode
	Payload   []byte
	CloseCode ws.StatusCode
}

// Reader parses client frames (RFC 6455 §5) from bytes peeked out of the
// connection's inbound buffer, unmasks them in place, reassembles
// fragmented messages and validates UTF-8 as it goes. Event-loop only: one
// Reader per connection, never shared.
//
// The caller keeps bytes in its inbound buffer until Next says it consumed
// them (n > 0), then discards exactly n; a frame is therefore never copied
// unless it is a fragment of a larger message (which must outlive its
// frame). The reassembly buffer comes from a pool and is returned by Reset
// or when the message completes and the next Next is called.
type Reader struct {
	// MaxMessage bounds one message, fragments included; a frame that
	// would exceed it fails with CloseTooBig before its payload is read.
	MaxMessage int

	frag *bytebufferpool.ByteBuffer // reassembly of a fragmented message; nil when none

	// Fail fast on invalid UTF-8 (§8.1; Autobahn 6.4.3, 6.4.4): the
	// payload of a text frame that has only partly arrived is validated
	// as it arrives, not once the whole frame is buffered. pendDone
	// payload bytes of the frame at the front of the caller's buffer are
	// validated, leaving the validator in pendText; pendMask and pendLen
	// identify that frame. pendDone == 0 means nothing is pending.
	pendDone int
	pendLen  uint64
	pendMask [4]byte
	pendText utf8Validator

	// The small fields last, packed together: a Reader lives in every
	// connection (memory per socket).
	fragOp  ws.OpCode     // opcode of the message being reassembled; 0 when none
	text    utf8Validator // UTF-8 state of the current text message
	release bool          // frag holds a completed message returned last time
}

var fragPool bytebufferpool.Pool

// Reset drops any partial message and returns pooled memory. Call it when
// the connection closes.
func (r *Reader) Reset() {
	if r.frag != nil {
		fragPool.Put(r.frag)
		r.frag = nil
	}
	r.fragOp = 0
	r.release = false
	r.text.reset()
	r.pendDone = 0
}

// Partial is the number of payload bytes of an unfinished fragmented
// message held in the reassembly buffer (0 when none, or when the last
// message completed and is still being returned). The caller bounds the
// time and the memory partial messages may hold.
func (r *Reader) Partial() int {
	if r.frag == nil || r.release {
		return 0
	}
	return len(r.frag.B)
}

// Next parses at most one frame from the front of buf, which holds the
// connection's unread inbound bytes. It returns the number of bytes
// consumed (0 means buf does not yet hold a whole frame: wait for more) and
// the event. A non-nil error is a CloseReason the connection must be
// closed with; nothing more should be read after it. The payload of a
// text frame is validated as it arrives: invalid UTF-8 fails even while
// the frame is incomplete, so the caller must hand the same unconsumed
// bytes back (possibly with more after them) until Next consumes them.
//
// buf must be writable: payloads are unmasked in place.
func (r *Reader) Next(buf []byte) (ev Event, n int, err error) {
	if r.release {
		r.Reset()
	}
	if len(buf) < 2 {
		return ev, 0, nil
	}
	b0, b1 := buf[0], buf[1]
	fin := b0&0x80 != 0
	rsv := b0 & 0x70
	op := ws.OpCode(b0 & 0x0f)
	masked := b1&0x80 != 0
	length := uint64(b1 & 0x7f)
	hl := 2
	switch length {
	case 126:
		hl = 4
	case 127:
		hl = 10
	}
	// Validate what the first two bytes already tell, before waiting for
	// the rest: a hostile peer must not make us buffer anything first.
	switch {
	case rsv != 0:
		return ev, 0, CloseReservedBits
	case op.IsReserved():
		return ev, 0, CloseBadOpcode
	case op.IsControl() && (!fin || length > 125):
		return ev, 0, CloseBadControl
	case !masked:
		return ev, 0, CloseUnmasked
	case op == ws.OpContinuation && r.fragOp == 0:
		return ev, 0, CloseBadContinue
	case (op == ws.OpText || op == ws.OpBinary) && r.fragOp != 0:
		return ev, 0, CloseBadFragment
	}
	if len(buf) < hl+4 {
		return ev, 0, nil
	}
	switch hl {
	case 4:
		length = uint64(binary.BigEndian.Uint16(buf[2:4]))
	case 10:
		length = binary.BigEndian.Uint64(buf[2:10])
		if length>>63 != 0 {
			return ev, 0, CloseBadLength
		}
		// hl+length must fit in an int even when MaxMessage is 0
		// (unlimited), or the bounds below overflow and panic.
		if length > uint64(math.MaxInt-ws.MaxHeaderSize) {
			return ev, 0, CloseTooBig
		}
	}
	if !op.IsControl() {
		have := 0
		if r.frag != nil {
			have = len(r.frag.B)
		}
		if r.MaxMessage > 0 && length > uint64(r.MaxMessage-have) {
			return ev, 0, CloseTooBig
		}
	}
	var mask [4]byte
	copy(mask[:], buf[hl:hl+4])
	hl += 4
	total := hl + int(length)
	msgOp := op
	if op == ws.OpContinuation {
		msgOp = r.fragOp
	}
	if len(buf) < total {
		if msgOp == ws.OpText && !r.validatePrefix(buf[hl:], mask, length) {
			return ev, 0, CloseBadUTF8
		}
		return ev, 0, nil
	}
	// What validatePrefix already checked of this frame is not checked
	// again.
	done := 0
	if r.pendDone > 0 && r.pendMask == mask && r.pendLen == length {
		done = r.pendDone
	}
	r.pendDone = 0
	payload := buf[hl:total]
	ws.Cipher(payload, mask, 0)

	if op.IsControl() {
		return r.control(op, payload, total)
	}

	if msgOp == ws.OpText {
		if done > 0 {
			r.text = r.pendText
		}
		if !r.text.feed(payload[done:]) {
			return ev, 0, CloseBadUTF8
		}
	}
	if fin && r.fragOp == 0 {
		// The common case: a whole message in one frame, returned
		// straight from the caller's buffer.
		if msgOp == ws.OpText && !r.text.complete() {
			return ev, 0, CloseBadUTF8
		}
		r.text.reset()
		return Event{Kind: KindMessage, Op: msgOp, Payload: payload}, total, nil
	}
	if r.frag == nil {
		r.frag = fragPool.Get()
		r.frag.B = r.frag.B[:0]
		r.fragOp = msgOp
	}
	r.frag.B = append(r.frag.B, payload...)
	if !fin {
		return ev, total, nil
	}
	if msgOp == ws.OpText && !r.text.complete() {
		return ev, 0, CloseBadUTF8
	}
	// The reassembled message stays valid until the next call to Next.
	r.release = true
	r.fragOp = 0
	return Event{Kind: KindMessage, Op: msgOp, Payload: r.frag.B}, total, nil
}

// validatePrefix checks the UTF-8 of the part of a text frame's payload
// that has arrived (arrived, still masked), continuing from where the
// previous call on the same frame stopped, so that each byte is checked
// once however many reads the frame takes. It unmasks into a scratch
// buffer, never in place: the caller may hand the same bytes in a fresh
// copy next time (gnet's Peek copies when its ring buffer wraps), so an
// in-place unmask would be lost or applied twice.
func (r *Reader) validatePrefix(arrived []byte, mask [4]byte, length uint64) bool {
	if r.pendDone == 0 || r.pendMask != mask || r.pendLen != length {
		r.pendText, r.pendDone, r.pendMask, r.pendLen = r.text, 0, mask, length
	}
	var chunk [512]byte
	for r.pendDone < len(arrived) {
		k := copy(chunk[:], arrived[r.pendDone:])
		ws.Cipher(chunk[:k], mask, r.pendDone)
		if !r.pendText.feed(chunk[:k]) {
			return false
		}
		r.pendDone += k
	}
	return true
}

func (r *Reader) control(op ws.OpCode, payload []byte, total int) (Event, int, error) {
	switch op {
	case ws.OpPing:
		return Event{Kind: KindPing, Op: op, Payload: payload}, total, nil
	case ws.OpPong:
		return Event{Kind: KindPong, Op: op, Payload: payload}, total, nil
	}
	// Close (§5.5.1): empty, or a 2-byte code plus a UTF-8 reason.
	ev := Event{Kind: KindClose, Op: op, CloseCode: ws.StatusNoStatusRcvd}
	switch {
	case len(payload) == 0:
	case len(payload) == 1:
		return Event{}, 0, CloseBadCloseCode
	default:
		ev.CloseCode = ws.StatusCode(binary.BigEndian.Uint16(payload))
		if !ValidCloseCode(ev.CloseCode) {
			return Event{}, 0, CloseBadCloseCode
		}
		var v utf8Validator
		if !v.feed(payload[2:]) || !v.complete() {
			return Event{}, 0, CloseBadUTF8
		}
		ev.Payload = payload[2:]
	}
	return ev, total, nil
}
