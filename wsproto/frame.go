package wsproto

import (
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/valyala/bytebufferpool"
)

// headerRoom is the space reserved in front of every frame's payload for
// the largest unmasked server header (RFC 6455 §5.2: 2 bytes plus a 64-bit
// extended length). The header is written right-aligned into it once the
// payload length is known, so the payload is encoded exactly once and never
// moved.
const headerRoom = 10

// framePool recycles Frame structs; their byte buffers come from bufPool.
var (
	framePool = sync.Pool{New: func() any { return new(Frame) }}
	bufPool   bytebufferpool.Pool
)

// Frame is one complete, immutable server-to-client WebSocket frame
// (header and payload). A data frame is shared by reference between every
// connection it is delivered to; a reply or notice belongs to one. Safe for
// concurrent use by holders of a reference: Bytes, Len, Received and
// Retain are valid only while the caller holds one.
//
// Lifecycle: each builder (BuildData, NewSubscribed, NewError, ...)
// returns a frame holding one reference, the caller's. Retain adds
// references for further holders (a shard hand-off, a queue slot); each
// holder calls Release exactly once. The last Release returns the bytes
// and the Frame itself to their pools, so nothing may touch the frame
// after its own Release.
type Frame struct {
	buf  *bytebufferpool.ByteBuffer
	off  int // start of the frame within buf.B (after the unused part of headerRoom)
	refs atomic.Int32
	// recv is when the Redis message was received (unix nanos), for the
	// delivery latency metric; 0 for frames that carry no Redis message.
	recv int64
	// seq is the data frame's seq, for the loss notice a subscriber that
	// dropped it gets (fanout); 0 for frames that carry no Redis message.
	seq uint64
}

// newFrame starts a frame whose payload will be appended to the returned
// frame's buffer after the reserved header room.
func newFrame() *Frame {
	f := framePool.Get().(*Frame)
	f.buf = bufPool.Get()
	if cap(f.buf.B) < headerRoom {
		f.buf.B = make([]byte, 0, 256)
	}
	f.buf.B = f.buf.B[:headerRoom]
	f.off = 0
	f.recv = 0
	f.seq = 0
	f.refs.Store(1)
	return f
}

// seal writes the header for op in front of the payload appended so far.
func (f *Frame) seal(op ws.OpCode) *Frame {
	n := len(f.buf.B) - headerRoom
	var hdr [ws.MaxHeaderSize]byte
	hl := putHeader(hdr[:], op, n)
	f.off = headerRoom - hl
	copy(f.buf.B[f.off:], hdr[:hl])
	return f
}

// putHeader writes an unmasked FIN header for a payload of n bytes into dst
// and returns its length. It is the allocation-free equivalent of
// ws.WriteHeader for the only header shape the server sends.
func putHeader(dst []byte, op ws.OpCode, n int) int {
	dst[0] = 0x80 | byte(op)
	switch {
	case n <= 125:
		dst[1] = byte(n)
		return 2
	case n <= 0xffff:
		dst[1] = 126
		dst[2], dst[3] = byte(n>>8), byte(n)
		return 4
	default:
		dst[1] = 127
		for i := 0; i < 8; i++ {
			dst[2+i] = byte(uint64(n) >> (56 - 8*i))
		}
		return 10
	}
}

// Bytes returns the complete frame. The slice is valid while the caller
// holds a reference and must not be modified.
func (f *Frame) Bytes() []byte { return f.buf.B[f.off:] }

// Len is the frame's size on the wire.
func (f *Frame) Len() int { return len(f.buf.B) - f.off }

// Received is when the Redis message in a data frame was received, in
// unix nanoseconds (BuildData's received argument); 0 for every other
// frame. Valid while the caller holds a reference.
func (f *Frame) Received() int64 { return f.recv }

// Seq is the seq of the Redis message in a data frame (BuildData's seq
// argument); 0 for every other frame. Valid while the caller holds a
// reference.
func (f *Frame) Seq() uint64 { return f.seq }

// Retain adds n references. Safe for concurrent use; the caller must
// already hold a reference.
func (f *Frame) Retain(n int32) { f.refs.Add(n) }

// Release drops one reference; the last one returns the buffer to the
// pool. Safe for concurrent use.
func (f *Frame) Release() {
	switch r := f.refs.Add(-1); {
	case r > 0:
		return
	case r < 0:
		panic("wsproto: Frame released more often than retained")
	}
	// Very large buffers (a 1 MiB message) are not worth keeping: the
	// pool calibrates on size, but one outlier would pin memory.
	if cap(f.buf.B) <= 1<<20 {
		bufPool.Put(f.buf)
	}
	f.buf = nil
	framePool.Put(f)
}

// AppendControl appends an unmasked control frame (ping, pong or close)
// to dst. Payloads over 125 bytes are truncated, as §5.5 requires.
func AppendControl(dst []byte, op ws.OpCode, payload []byte) []byte {
	if len(payload) > 125 {
		payload = payload[:125]
	}
	var hdr [ws.MaxHeaderSize]byte
	hl := putHeader(hdr[:], op, len(payload))
	dst = append(dst, hdr[:hl]...)
	return append(dst, payload...)
}

// AppendClose appends a close frame carrying code and reason (§5.5.1).
func AppendClose(dst []byte, code ws.StatusCode, reason string) []byte {
	var body [125]byte
	body[0], body[1] = byte(code>>8), byte(code)
	if max := len(body) - 2; len(reason) > max {
		// Cut on a code point boundary: the reason must stay valid
		// UTF-8 (§5.5.1) or the peer fails the connection with 1007.
		for max > 0 && !utf8.RuneStart(reason[max]) {
			max--
		}
		reason = reason[:max]
	}
	n := 2 + copy(body[2:], reason)
	return AppendControl(dst, ws.OpClose, body[:n])
}
