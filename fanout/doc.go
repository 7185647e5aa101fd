// Package fanout subscribes to Redis pub/sub on behalf of every client and
// delivers each message to the connections that follow it.
//
// One upstream subscription exists per stream (an exact channel or a glob
// pattern), however many clients want it: the first local subscriber
// subscribes upstream, and the stream is unsubscribed once the last one
// has left and Config.Linger (at most a second) has passed.
//
// The server builds the hub with one Waker per event loop (New; shard i
// belongs to loop i), starts it, and closes it at shutdown.
//
// Goroutines:
//   - rueidis's reader goroutine runs Hub.onMessage for each message. It
//     never blocks: it stamps the message once (per-stream
//     seq, receive time), encodes it once into an immutable
//     wsproto.Frame, and offers that same frame to each shard that has
//     subscribers of the stream, with a non-blocking channel send. A full
//     shard channel drops the message for that shard and counts it; the
//     seq was taken, so the clients see the gap.
//   - the control goroutine owns the stream table and the Redis
//     connection: (un)subscribes upstream, reconnects with backoff,
//     resubscribes everything after a reconnect, and expires idle streams.
//     Event loops reach it through a mutex-guarded request list that never
//     blocks them (Hub.Subscribe, Unsubscribe, Remove). The list is bounded
//     (Config.MaxPending: beyond it Subscribe and Unsubscribe return
//     ErrBusy), and so is the stream table (Config.MaxStreams). Upstream
//     commands go out in chunks, pipelined in one round trip per batch of
//     requests. Redis refusing a stream (an error reply such as NOPERM)
//     fails the requests that asked for it, or drops the stream, never the
//     link: the clients get an error frame, and the event loop a Refusal
//     (Shard.TakeRefusals) so that its view of the connection matches.
//     A subscribe that names only streams already followed and confirmed
//     need not reach it: the event loop joins them itself (Hub.JoinNow,
//     references taken by compare-and-swap, the join handed to the shard)
//     and answers the client in the same callback.
//   - one goroutine per shard (one shard per event loop) owns the
//     subscriber lists of its loop's connections. It is the only producer
//     of those connections' queues; the event loop is the only consumer.
//     Queues are lock-free single-producer/single-consumer rings that are
//     allocated on first use, start at 4 slots and double under load up to
//     Config.SendQueue. A full queue drops the frame for that connection
//     only, counts it, and notes it in the subscriber's loss record
//     (loss.go), which the event loop claims (Subscriber.TakeLoss) once
//     it has caught up, to tell the client at once. The loop gives an idle queue's ring back
//     (Subscriber.ReleaseIdle, from its once-a-second sweep); the next
//     frame brings a fresh one (the release protocol is in ring.go).
//     A Subscriber is meant to be embedded in the server's connection
//     state (Hub.Init): an idle socket costs one allocation.
//   - a shard wakes its event loop once per burst: a subscriber with new
//     frames is marked pending and put in the shard's intrusive ready
//     queue; if no flush is scheduled, the shard calls its Waker, which
//     submits one task to the loop, and the loop drains every ready
//     subscriber (Shard.NextReady, Subscriber.Pop) with one Writev each.
//     With Config.CoalesceDelay the shard holds the first message after
//     a quiet spell that long before it wakes the loop.
//   - durable channels (docs/DURABILITY.md; streams.go, reader.go,
//     replay.go): one goroutine per stream reader follows up to
//     StreamConfig.ReaderKeys Redis Stream keys with a blocking XREAD on
//     its own connection (woken by CLIENT UNBLOCK), stamps and encodes each
//     entry once, replays what a resuming client missed, and hands the
//     frames to a Sink. Streams.Join, Leave and Remove never block. The
//     Sink of the gateway is DurableHub's (durablehub.go): frames go to the
//     subscribers' shards as operations on the shard channels, after the
//     subscribe ack; replay frames that find a queue full wait in a
//     backlog the shard owns, never dropped.
//
// Frame ownership: onMessage builds a frame holding one reference, adds
// one per shard it hands the frame to, and drops its own. A shard adds one
// per subscriber in a single atomic add and drops the shard's. The event
// loop releases each frame after Writev (gnet has copied whatever the
// socket did not take). When a connection closes, the shard releases what
// its queue still holds.
//
// Nothing on the delivery path takes a lock or allocates per subscriber.
package fanout
