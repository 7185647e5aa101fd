// Package server is the gnet v2 reactor: it accepts TCP connections,
// answers the HTTP upgrade with gobwas/ws (or /health, /stats and 404 as
// plain HTTP on the same port), reads WebSocket frames straight from
// gnet's inbound buffer, executes client commands, and writes the frames
// fanout queues for each connection. It builds the fanout Hub with one
// shard per event loop, each loop's state being its shard's Waker, starts
// it with the engine and closes it at the end of Shutdown.
//
// Listening: each event loop has its own listening socket on the address
// (SO_REUSEPORT), so the loop that accepts a connection serves it and no
// thread hands connections over; Start first checks with a plain bind
// that nothing else listens there (listen.go).
//
// Goroutines:
//   - gnet's event loops (Config.Loops of them) run every callback of
//     Server (OnOpen, OnTraffic, OnClose) and every task the server
//     submits (flush, and tick, which also paces the closes of a
//     shutdown). A connection and its state are
//     touched only on its loop; other goroutines reach it
//     through EventLoop.Execute. Nothing on a loop blocks: Redis work is
//     handed to fanout's control goroutine.
//   - fanout's shard goroutine for a loop wakes it once per burst with one
//     Execute(flush) task; the flush drains each ready connection's queue
//     with one Writev per batch.
//   - gnet's ticker goroutine calls OnTick every 100 ms, which submits a
//     tick task to each loop that has blocked or closing connections (and
//     to every loop once a second, or on every tick of a paced shutdown):
//     blocked connections are resumed, closing ones
//     moved along (closing.go), and once a second the loop sweeps its
//     connections for handshake timeouts, pings, idle peers, expired
//     tokens and messages not completed within
//     Config.PartialMessageTimeout, and interns the channel names
//     subscribed since the last sweep that are still followed. No timer
//     or goroutine exists per connection.
//
// Upgrades: each loop owns a gobwas/ws Upgrader whose callbacks record the
// request target, Origin and Authorization in reusable state
// (upgrade.go), so a WebSocket upgrade leaves almost no garbage; what it
// does not upgrade (plain HTTP, errors, refusals it cannot tell apart) is
// answered by the net/http path exactly as before. Per-socket memory is a
// target: conn embeds the fanout Subscriber and keeps rare
// state behind a pointer, and the sweep hands idle connections' queues
// back (Subscriber.ReleaseIdle).
//
// Inbound bytes: frames are parsed from Peek and discarded only after
// they were handled; payloads are unmasked in place and
// never referenced after the callback. Only fragmented messages are
// copied, into a pooled reassembly buffer owned by the connection's
// wsproto.Reader, and frames still incomplete after 64 KiB (the echo's
// large messages), into the connection's stage (see stageAbove). The bytes
// of unfinished messages are counted across all connections and bounded
// (Config.MaxPartialBytes; trackPartial).
//
// Commands: a subscribe is checked against the cheap limits (channels and
// patterns per connection, new channels per second) before the ACL, whose
// pattern checks are the costly part; the hub may still refuse it later
// (Redis refused a stream, or MaxStreams), and the loop then drops the
// channels from its view of the connection (fanout.Shard.TakeRefusals).
// A subscribe's "since" is checked after the ACL (durable.go: malformed
// IDs, keys the request neither names nor matches, names that are not
// durable or are followed already); a request that joins durable channels
// goes to the durable side of the hub (DurableHub) instead of Hub.Subscribe.
//
// Outbound bytes: shared data frames are written by reference and
// released right after Writev; gnet copies whatever the socket did not
// take into the connection's outbound buffer. Once that buffer holds
// Config.MaxOutboundBytes the loop stops draining the connection, so its
// queue fills and drops instead of memory growing. A connection that
// dropped frames gets fanout's messages_lost notice from the drain that
// finds its queue empty again, before anything else.
//
// Closing (closing.go) is a lingering close: the close frame follows what
// gnet holds, the write side is shut down once that is sent, and what the
// client still sends is discarded until its close frame or EOF, so TCP is
// never closed over unread bytes (the kernel would reset it and the
// client would never read the close code).
//
// Metrics (metrics.go): Metrics exports the atomics the server and the
// hub already keep, read only when scraped, plus fixed arrays of atomic
// counters for refused upgrades and client commands. The delivery path
// gains one lock-free histogram Observe per Writev batch (latency from
// Redis receipt) and nothing per frame.
package server
