package wsproto

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/gobwas/ws"
)

// ErrorCode is the machine-readable code of an error frame (docs/PROTOCOL.md).
type ErrorCode string

// The error codes a client can receive. The connection stays open after
// every one of them.
const (
	CodeBadRequest          ErrorCode = "bad_request"
	CodeUnknownAction       ErrorCode = "unknown_action"
	CodeForbidden           ErrorCode = "forbidden"
	CodeTooManyChannels     ErrorCode = "too_many_channels"
	CodeTooManyWildcards    ErrorCode = "too_many_wildcards"
	CodeRateLimited         ErrorCode = "rate_limited"
	CodeUpstreamInterrupted ErrorCode = "upstream_interrupted"
	CodeUnsupportedData     ErrorCode = "unsupported_data"
	// CodeMessagesLost: the gateway dropped messages for this connection
	// (it did not read fast enough); see NewMessagesLost.
	CodeMessagesLost ErrorCode = "messages_lost"
	// CodeStreamRateLimited: the connection subscribed to new channels
	// faster than MAX_NEW_STREAMS_PER_SECOND allows.
	CodeStreamRateLimited ErrorCode = "stream_rate_limited"
	// CodeServerBusy: the gateway refused the request for its own sake
	// (MAX_STREAMS reached, or too much Redis work waiting); retry later.
	CodeServerBusy ErrorCode = "server_busy"
	// CodeUpstreamRefused: Redis refused to subscribe the gateway to the
	// channels named (an ACL of the gateway's Redis user); the request
	// failed, or the stream was dropped, and the link is fine.
	CodeUpstreamRefused ErrorCode = "upstream_refused"
	// CodeReplayTruncated: the replay of a durable subscription is
	// incomplete (see NewReplayTruncated); the subscription succeeded.
	CodeReplayTruncated ErrorCode = "replay_truncated"
)

// Why a replay is incomplete (the "reason" of replay_truncated).
const (
	// ReasonMaxReplay: more than MAX_REPLAY entries were missed; the
	// replay holds the newest ones.
	ReasonMaxReplay = "max_replay"
	// ReasonTrimmed: retention removed entries after the position.
	ReasonTrimmed = "trimmed"
	// ReasonReset: the position is above the stream's last ID (the
	// stream was recreated, or Redis lost data).
	ReasonReset = "reset"
)

// timeLayout is RFC 3339 in UTC with milliseconds; the literal Z is right
// because every timestamp is converted to UTC first.
const timeLayout = "2006-01-02T15:04:05.000Z"

// AppendTimestamp appends t as a JSON string in the protocol's format.
func AppendTimestamp(dst []byte, t time.Time) []byte {
	dst = append(dst, '"')
	dst = t.UTC().AppendFormat(dst, timeLayout)
	return append(dst, '"')
}

// BuildData encodes one data message as a complete text frame:
//
//	{"type":"data","seq":N,"channel":"…","pattern":"…","data":…,"timestamp":"…"}
//
// pattern is omitted when empty. payload is embedded as JSON when it is
// valid UTF-8 and valid JSON, else as a JSON string with invalid UTF-8
// replaced by U+FFFD, so the frame is always valid UTF-8 text (RFC 6455
// §5.6). The caller owns the returned frame's one reference.
//
// Safe for concurrent use; called once per Redis message, never per
// subscriber.
func BuildData(seq uint64, channel, pattern, payload string, received time.Time) *Frame {
	return buildData(dataPubSub, seq, channel, pattern, StreamID{}, payload, received)
}

// BuildEntry encodes a live entry of a durable channel: BuildData's frame
// with the entry's ID after the pattern,
//
//	{"type":"data","seq":N,"channel":"…","pattern":"…","id":"ms-seq","data":…,"timestamp":"…"}
//
// An entry without the payload field is given payload "null". Same
// ownership and use as BuildData: once per entry and stream.
func BuildEntry(seq uint64, channel, pattern string, id StreamID, payload string, received time.Time) *Frame {
	return buildData(dataLive, seq, channel, pattern, id, payload, received)
}

// BuildReplay encodes a replayed entry of a durable channel: no seq (a
// replay is the client's own, outside the stream's count), and
// "replay":true,
//
//	{"type":"data","channel":"…","pattern":"…","id":"ms-seq","replay":true,"data":…,"timestamp":"…"}
//
// Same ownership as BuildData; one frame per entry, shared by every
// subscriber the same replay goes to.
func BuildReplay(channel, pattern string, id StreamID, payload string, received time.Time) *Frame {
	return buildData(dataReplay, 0, channel, pattern, id, payload, received)
}

// dataKind selects the fields of a data frame.
type dataKind uint8

const (
	dataPubSub dataKind = iota // seq
	dataLive                   // seq and id
	dataReplay                 // id and "replay":true
)

// buildData is the one encoder of data frames: the fields in the order of
// docs/PROTOCOL.md, the payload written once.
func buildData(kind dataKind, seq uint64, channel, pattern string, id StreamID, payload string, received time.Time) *Frame {
	f := newFrame()
	b := f.buf.B
	if kind == dataReplay {
		b = append(b, `{"type":"data","channel":`...)
	} else {
		b = append(b, `{"type":"data","seq":`...)
		b = strconv.AppendUint(b, seq, 10)
		b = append(b, `,"channel":`...)
	}
	b = AppendJSONString(b, channel)
	if pattern != "" {
		b = append(b, `,"pattern":`...)
		b = AppendJSONString(b, pattern)
	}
	if kind != dataPubSub {
		b = append(b, `,"id":`...)
		b = appendID(b, id)
		if kind == dataReplay {
			b = append(b, `,"replay":true`...)
		}
	}
	b = append(b, `,"data":`...)
	if isJSON(payload) {
		b = append(b, payload...)
	} else {
		b = AppendJSONString(b, payload)
	}
	b = append(b, `,"timestamp":`...)
	b = AppendTimestamp(b, received)
	b = append(b, '}')
	f.buf.B = b
	f.recv = received.UnixNano()
	f.seq = seq
	return f.seal(ws.OpText)
}

// isJSON reports whether s can be embedded verbatim as a JSON value.
// encoding/json's Valid does not check UTF-8 inside strings, so both are
// checked; the cheap UTF-8 pass runs first.
func isJSON(s string) bool {
	if len(s) == 0 || !jsonStart(s) || !utf8.ValidString(s) {
		return false
	}
	return json.Valid(unsafe.Slice(unsafe.StringData(s), len(s)))
}

// jsonStart reports whether the first non-space byte of s can begin a
// JSON value. Plain-text payloads are rejected here without json.Valid,
// which allocates a *SyntaxError for every invalid input.
func jsonStart(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case ' ', '\t', '\n', '\r':
			continue
		case '{', '[', '"', '-', 't', 'f', 'n', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
			return true
		default:
			return false
		}
	}
	return false
}

const hexDigits = "0123456789abcdef"

// AppendJSONString appends s as a JSON string literal. Control characters,
// quotes and backslashes are escaped; invalid UTF-8 becomes U+FFFD.
func AppendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendChannels appends a JSON array of strings.
func appendChannels(dst []byte, channels []string) []byte {
	dst = append(dst, '[')
	for i, c := range channels {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendJSONString(dst, c)
	}
	return append(dst, ']')
}

// appendTail appends the optional requestId, the timestamp and the closing
// brace shared by every reply. requestID is raw JSON (a string or number
// already validated by ParseCommand) or nil.
func appendTail(b []byte, requestID []byte, now time.Time) []byte {
	if len(requestID) > 0 {
		b = append(b, `,"requestId":`...)
		b = append(b, requestID...)
	}
	b = append(b, `,"timestamp":`...)
	b = AppendTimestamp(b, now)
	return append(b, '}')
}

// NewSubscribed builds the reply to a "subscribe" command, naming every
// channel the command named (those followed already included). The
// caller owns the returned reference.
func NewSubscribed(channels []string, requestID []byte, now time.Time) *Frame {
	return newAck("subscribed", channels, requestID, now)
}

// NewUnsubscribed is NewSubscribed's converse.
func NewUnsubscribed(channels []string, requestID []byte, now time.Time) *Frame {
	return newAck("unsubscribed", channels, requestID, now)
}

// NewUpstreamInterrupted builds the error telling a client that the link
// to Redis broke while it followed channels: messages on them may have been
// lost, and their seq jumps when the link is back. The caller owns the
// returned reference.
func NewUpstreamInterrupted(channels []string, now time.Time) *Frame {
	return NewError(CodeUpstreamInterrupted,
		"the link to Redis was interrupted: messages may have been lost; seq will jump", channels, nil, now)
}

// NewStreamCapReached refuses a subscribe request whose new streams would
// take the gateway past its stream cap (limit), naming the channels it
// asked for.
func NewStreamCapReached(limit int, channels []string, requestID []byte, now time.Time) *Frame {
	return NewError(CodeServerBusy,
		"the gateway follows as many streams as it may ("+strconv.Itoa(limit)+"): try again later",
		channels, requestID, now)
}

// NewUpstreamRefused tells a client that Redis refused the gateway's
// subscription to channels: with requestID, the subscribe request that
// needed them was refused whole; without, streams it followed were
// dropped when the link was re-established.
func NewUpstreamRefused(channels []string, requestID []byte, now time.Time) *Frame {
	msg := "Redis refused to subscribe the gateway to these channels; nothing of the request was subscribed"
	if requestID == nil {
		msg = "Redis refused to subscribe the gateway to these channels: they are no longer subscribed"
	}
	return NewError(CodeUpstreamRefused, msg, channels, requestID, now)
}

func newAck(typ string, channels []string, requestID []byte, now time.Time) *Frame {
	f := newFrame()
	b := append(f.buf.B, `{"type":"`...)
	b = append(b, typ...)
	b = append(b, `","channels":`...)
	b = appendChannels(b, channels)
	f.buf.B = appendTail(b, requestID, now)
	return f.seal(ws.OpText)
}

// NewPong builds the reply to a "ping" command.
func NewPong(requestID []byte, now time.Time) *Frame {
	f := newFrame()
	b := append(f.buf.B, `{"type":"pong"`...)
	f.buf.B = appendTail(b, requestID, now)
	return f.seal(ws.OpText)
}

// NewError builds an error reply frame. channels may be nil.
func NewError(code ErrorCode, message string, channels []string, requestID []byte, now time.Time) *Frame {
	f := newFrame()
	b := append(f.buf.B, `{"type":"error","code":"`...)
	b = append(b, code...)
	b = append(b, `","message":`...)
	b = AppendJSONString(b, message)
	if channels != nil {
		b = append(b, `,"channels":`...)
		b = appendChannels(b, channels)
	}
	f.buf.B = appendTail(b, requestID, now)
	return f.seal(ws.OpText)
}

// LostStream is one stream of a messages_lost notice: the messages of
// Stream (a channel, or the pattern of a pattern subscription) numbered
// LastSeq+1 to LastSeq+Lost were dropped for the connection.
type LostStream struct {
	Stream  string
	LastSeq uint64
	Lost    uint64
}

// NewMessagesLost builds the notice a connection gets, before any further
// data, once it has caught up after the gateway dropped messages for it:
//
//	{"type":"error","code":"messages_lost","message":"…",
//	 "streams":[{"stream":"…","lastSeq":N,"lost":K}],"timestamp":"…"}
//
// The caller owns the returned reference.
func NewMessagesLost(streams []LostStream, now time.Time) *Frame {
	f := newFrame()
	b := append(f.buf.B, `{"type":"error","code":"`...)
	b = append(b, CodeMessagesLost...)
	b = append(b, `","message":"messages were dropped because this connection did not read fast enough","streams":[`...)
	for i, st := range streams {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"stream":`...)
		b = AppendJSONString(b, st.Stream)
		b = append(b, `,"lastSeq":`...)
		b = strconv.AppendUint(b, st.LastSeq, 10)
		b = append(b, `,"lost":`...)
		b = strconv.AppendUint(b, st.Lost, 10)
		b = append(b, '}')
	}
	b = append(b, ']')
	f.buf.B = appendTail(b, nil, now)
	return f.seal(ws.OpText)
}

// NewReplayed builds the frame that ends the replay of a durable
// subscription, sent also when nothing was replayed:
//
//	{"type":"replayed","channel":"…","count":N,"lastId":"ms-seq","requestId":…,"timestamp":"…"}
//
// channel is the name as subscribed (an exact channel or a pattern),
// count the entries replayed, lastID where the client now stands (the seam
// of an exact channel, the floor of a pattern: docs/PROTOCOL.md). The
// caller owns the returned reference.
func NewReplayed(channel string, count uint64, lastID StreamID, requestID []byte, now time.Time) *Frame {
	f := newFrame()
	b := append(f.buf.B, `{"type":"replayed","channel":`...)
	b = AppendJSONString(b, channel)
	b = append(b, `,"count":`...)
	b = strconv.AppendUint(b, count, 10)
	b = append(b, `,"lastId":`...)
	b = appendID(b, lastID)
	f.buf.B = appendTail(b, requestID, now)
	return f.seal(ws.OpText)
}

// Truncation describes an incomplete replay, for NewReplayTruncated.
type Truncation struct {
	// Stream is the name as subscribed; Channels the concrete channels
	// whose entries may be missing.
	Stream   string
	Channels []string
	// Reason is ReasonMaxReplay, ReasonTrimmed or ReasonReset.
	Reason string
	// Since is the position the client gave for Stream (HasSince false:
	// none, only per-channel ones); From the first replayed entry (HasFrom
	// false: nothing was replayed).
	Since, From       StreamID
	HasSince, HasFrom bool
}

// truncationMessages explain each reason to a person reading the frame.
var truncationMessages = map[string]string{
	ReasonMaxReplay: "more than MAX_REPLAY entries were missed: the replay starts at from",
	ReasonTrimmed:   "entries after since were removed by the stream's retention: the replay starts at from",
	ReasonReset:     "since is above the stream's last entry (the stream was reset): the replay starts at from",
}

// NewReplayTruncated builds the replay_truncated error that precedes the
// replayed entries of an incomplete replay:
//
//	{"type":"error","code":"replay_truncated","message":"…","stream":"…","channels":[…],
//	 "reason":"max_replay","since":"ms-seq"|null,"from":"ms-seq"|null,"requestId":…,"timestamp":"…"}
//
// The caller owns the returned reference.
func NewReplayTruncated(t Truncation, requestID []byte, now time.Time) *Frame {
	f := newFrame()
	b := append(f.buf.B, `{"type":"error","code":"`...)
	b = append(b, CodeReplayTruncated...)
	b = append(b, `","message":`...)
	b = AppendJSONString(b, truncationMessages[t.Reason])
	b = append(b, `,"stream":`...)
	b = AppendJSONString(b, t.Stream)
	b = append(b, `,"channels":`...)
	b = appendChannels(b, t.Channels)
	b = append(b, `,"reason":`...)
	b = AppendJSONString(b, t.Reason)
	b = append(b, `,"since":`...)
	b = appendOptionalID(b, t.Since, t.HasSince)
	b = append(b, `,"from":`...)
	b = appendOptionalID(b, t.From, t.HasFrom)
	f.buf.B = appendTail(b, requestID, now)
	return f.seal(ws.OpText)
}

// appendOptionalID appends id as a JSON string, or null when !ok.
func appendOptionalID(b []byte, id StreamID, ok bool) []byte {
	if !ok {
		return append(b, "null"...)
	}
	return appendID(b, id)
}

// appendID appends id as a JSON string (its digits and '-' need no
// escaping).
func appendID(b []byte, id StreamID) []byte {
	b = append(b, '"')
	b = id.AppendTo(b)
	return append(b, '"')
}
