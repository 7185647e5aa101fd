// Package wsproto is the gateway's wire protocol: WebSocket frame building
// and parsing (RFC 6455) on top of github.com/gobwas/ws primitives, the JSON
// messages the gateway sends (data, subscribed, unsubscribed, pong, error,
// replayed), the entry IDs of durable channels (StreamID), and the parser
// for the JSON commands clients send. Every message's shape
// and text is here; the other packages only choose which to send.
//
// Who calls it:
//   - fanout's dispatch (the rueidis pub/sub callback goroutine) calls
//     BuildData once per Redis message; the resulting *Frame is shared by
//     every subscriber and never mutated. fanout's control goroutine builds
//     the subscribe acks (NewSubscribed, NewUnsubscribed) and its shard
//     goroutines the link-loss notices (NewUpstreamInterrupted), each
//     queued in order with the data.
//   - fanout's stream readers (durable channels, one goroutine each) call
//     BuildEntry once per live entry and stream, BuildReplay once per
//     replayed entry, NewReplayed and NewReplayTruncated per resuming
//     subscription; the server parses the IDs of a subscribe's "since"
//     with ParseStreamID.
//   - server's event loops call Reader.Next on bytes peeked from gnet's
//     inbound buffer, ParseCommand on complete text messages, NewPong and
//     NewError for per-connection replies, and the Append* builders for
//     control frames.
//
// Nothing here blocks, does I/O or takes a lock. Frame is safe for
// concurrent use (reference counted with atomics); Reader is owned by one
// connection and is event-loop only.
//
// Buffer ownership: every Frame's bytes live in a bytebufferpool buffer. The
// creator holds one reference; each holder that keeps the frame (a ring slot)
// holds another; whoever drops the last reference (Release) returns the
// buffer to the pool. A frame's bytes must not be read after the caller's
// own reference is released.
package wsproto
