package server

// Client commands (subscribe, unsubscribe, ping) and the inbound rate
// limit. Everything here runs on the connection's event loop.

import (
	"math"
	"slices"
	"strconv"
	"time"
	"unique"

	"github.com/panjf2000/gnet/v2"

	"github.com/wsgw/gateway/auth"
	"github.com/wsgw/gateway/wsproto"
)

// gcra takes n tokens from a bucket refilled at rate tokens per second
// and holding at most burst, kept as a GCRA in *tat (the "theoretical
// arrival time": the bucket is full when *tat is not ahead of now, so one
// word replaces a token count and a refill time). It reports whether the
// tokens were there; when not, nothing is taken.
func gcra(tat *int64, now int64, rate, burst, n int) bool {
	interval := int64(time.Second) / int64(rate)
	next := max(*tat, now) + int64(n)*interval
	if next-now > int64(burst)*interval {
		return false
	}
	*tat = next
	return true
}

// allow takes n tokens of the connection's inbound budget (a burst of rate
// messages, refilled at rate per second). A request costing more than a
// full bucket costs a full bucket, so it can always pass once.
func (cn *conn) allow(rate, n int) bool {
	now := time.Now().UnixNano()
	if cn.tat <= now {
		cn.strikes = 0
	}
	if !gcra(&cn.tat, now, rate, rate, min(n, rate)) {
		if cn.strikes < math.MaxInt32 {
			cn.strikes++
		}
		return false
	}
	return true
}

// rateLimited takes n tokens of the inbound message budget: one for every
// message, and for a subscribe or unsubscribe one more for every channel
// past the first, so that the work of a request, not the number of
// messages, is what the budget bounds. Without them it answers
// rate_limited, or closes with 1008 a client that keeps going, and reports
// true. Every message counts, binary ones included: each is answered, so
// none may be a way around the limit.
func (s *Server) rateLimited(cn *conn, now time.Time, n int, a wsproto.Action, requestID []byte) bool {
	if cn.allow(s.cfg.MaxMessagesPerSecond, n) {
		return false
	}
	s.ctr.command(a, resultRateLimited)
	if int(cn.strikes) > s.cfg.MaxMessagesPerSecond {
		cn.startClose(wsproto.CloseRateLimited)
		return true
	}
	cn.reply(wsproto.NewError(wsproto.CodeRateLimited, "too many messages or channels: slow down", nil, requestID, now))
	return true
}

// command parses and executes one client command. Event-loop only.
func (s *Server) command(cn *conn, p []byte) gnet.Action {
	now := time.Now()
	if s.rateLimited(cn, now, 1, 0, nil) {
		return gnet.None
	}
	cmd, cerr := wsproto.ParseCommand(p)
	if cerr != nil {
		s.ctr.command(0, resultOf(cerr.Code))
		cn.reply(wsproto.NewError(cerr.Code, cerr.Message, cerr.Channels, cerr.RequestID, now))
		return gnet.None
	}
	// A request costs at most a full bucket, its message's token
	// included, so that a request of many channels passes on a full
	// bucket however fast it was parsed.
	if n := min(len(cmd.Channels)+sinceCost(cmd), s.cfg.MaxMessagesPerSecond) - 1; n > 0 && s.rateLimited(cn, now, n, cmd.Action, cmd.RequestID) {
		return gnet.None
	}
	cn.loop.applyRefusals()
	switch cmd.Action {
	case wsproto.ActionPing:
		s.ctr.command(cmd.Action, resultOK)
		cn.reply(wsproto.NewPong(cmd.RequestID, now))
	case wsproto.ActionSubscribe:
		s.subscribe(cn, cmd, now)
	case wsproto.ActionUnsubscribe:
		s.unsubscribe(cn, cmd, now)
	}
	return gnet.None
}

// unsubscribe leaves the channels of cmd that cn follows; the ack names
// every channel of the request (unsubscribing is idempotent).
func (s *Server) unsubscribe(cn *conn, cmd wsproto.Command, now time.Time) {
	rs := cn.loop.recent[cn]
	var del []string
	for _, ch := range cmd.Channels {
		if cn.follows(rs, ch) {
			del = append(del, ch)
		}
	}
	cn.set(flagViaHub, true)
	var err error
	if pubsub, durable := s.splitDurable(del); durable != nil {
		err = s.durable.UnsubscribeDurable(&cn.sub, pubsub, durable, cmd.Channels, cmd.RequestID)
	} else {
		err = s.hub.Unsubscribe(&cn.sub, del, cmd.Channels, cmd.RequestID)
	}
	if err != nil {
		s.busy(cn, cmd, now)
		return
	}
	cn.leave(rs, del)
	s.ctr.command(cmd.Action, resultOK)
}

// busy answers a request the hub refused because too many requests wait
// for Redis (fanout.ErrBusy): nothing of it was done.
func (s *Server) busy(cn *conn, cmd wsproto.Command, now time.Time) {
	s.ctr.command(cmd.Action, resultServerBusy)
	cn.reply(wsproto.NewError(wsproto.CodeServerBusy, "the gateway is waiting on Redis: try again later", nil, cmd.RequestID, now))
}

// recentSubs is the subscribe state of a connection that subscribed to
// something lately, kept in its loop's recent map rather than in the
// connection, so that the many sockets that subscribe once and then idle
// pay for none of it. Event-loop only.
type recentSubs struct {
	// fresh are channels subscribed since the last sweep, not interned
	// yet: the sweep moves the ones still followed to conn.chans. A name
	// subscribed and dropped again within the second (churn) never costs
	// a unique.Make.
	fresh []string
	// tat is the GCRA of MaxNewStreamsPerSecond (see gcra).
	tat int64
}

// recentOf returns cn's recent state, creating it. Event-loop only.
func (l *loopState) recentOf(cn *conn) *recentSubs {
	rs := l.recent[cn]
	if rs == nil {
		if l.recent == nil {
			l.recent = make(map[*conn]*recentSubs)
		}
		rs = new(recentSubs)
		l.recent[cn] = rs
	}
	return rs
}

// settleRecent runs once a second from the sweep: it interns the channels
// subscribed since the last sweep that are still followed, and forgets the
// connections whose new-stream bucket is full again. An emptied map is
// dropped, as a Go map keeps the buckets of its largest size.
func (l *loopState) settleRecent(now int64) {
	for cn, rs := range l.recent {
		if len(rs.fresh) > 0 {
			// Exactly the size needed: most sockets follow one or
			// two channels for their whole life. Interned: the
			// 10,000 subscribers of a channel share its name.
			cn.chans = slices.Grow(cn.chans, len(rs.fresh))
			for _, ch := range rs.fresh {
				cn.chans = append(cn.chans, unique.Make(ch))
			}
			rs.fresh = nil
		}
		if rs.tat <= now {
			delete(l.recent, cn)
		}
	}
	if len(l.recent) == 0 {
		l.recent = nil
	}
}

// follows reports whether cn follows ch; rs is cn's recent state or nil.
func (cn *conn) follows(rs *recentSubs, ch string) bool {
	for _, h := range cn.chans {
		if h.Value() == ch {
			return true
		}
	}
	return rs != nil && slices.Contains(rs.fresh, ch)
}

// held counts the channels cn follows, and the patterns among them.
func (cn *conn) held(rs *recentSubs) (channels, patterns int) {
	for _, h := range cn.chans {
		if auth.IsPattern(h.Value()) {
			patterns++
		}
	}
	channels = len(cn.chans)
	if rs != nil {
		channels += len(rs.fresh)
		for _, ch := range rs.fresh {
			if auth.IsPattern(ch) {
				patterns++
			}
		}
	}
	return channels, patterns
}

// leave removes names from what cn follows. Event-loop only.
func (cn *conn) leave(rs *recentSubs, names []string) {
	for _, ch := range names {
		if i := slices.IndexFunc(cn.chans, func(h unique.Handle[string]) bool { return h.Value() == ch }); i >= 0 {
			cn.chans = slices.Delete(cn.chans, i, i+1)
		} else if rs != nil {
			if i := slices.Index(rs.fresh, ch); i >= 0 {
				rs.fresh = slices.Delete(rs.fresh, i, i+1)
			}
		}
	}
	if len(cn.chans) == 0 {
		cn.chans = nil // give the array back
	}
}

// subscribe applies the limits, the ACL and then the since rules
// (durable.go) to the whole request before changing anything: a request
// is all or nothing. The cheap checks come
// first and the ACL last, as a pattern's containment check is the costly
// part: a request naming more channels than a connection may hold, or
// more patterns, or more new channels than its stream rate allows, is
// refused without any ACL work; and channels cn already follows are not
// checked again. So the ACL work a connection can cause is bounded by
// MaxNewStreamsPerSecond (times auth's per-pattern budget).
func (s *Server) subscribe(cn *conn, cmd wsproto.Command, now time.Time) {
	if len(cmd.Channels) > s.cfg.MaxChannels {
		s.ctr.command(cmd.Action, resultTooManyChannels)
		cn.reply(wsproto.NewError(wsproto.CodeTooManyChannels,
			"a request names at most "+strconv.Itoa(s.cfg.MaxChannels)+" channels", nil, cmd.RequestID, now))
		return
	}
	l := cn.loop
	rs := l.recent[cn]
	var add []string
	addPatterns := 0
	for _, ch := range cmd.Channels {
		if cn.follows(rs, ch) || slices.Contains(add, ch) {
			continue
		}
		add = append(add, ch)
		if auth.IsPattern(ch) {
			addPatterns++
		}
	}
	channels, patterns := cn.held(rs)
	switch {
	case channels+len(add) > s.cfg.MaxChannels:
		s.ctr.command(cmd.Action, resultTooManyChannels)
		cn.reply(wsproto.NewError(wsproto.CodeTooManyChannels,
			"at most "+strconv.Itoa(s.cfg.MaxChannels)+" channels per connection", add, cmd.RequestID, now))
		return
	case patterns+addPatterns > s.cfg.MaxWildcards:
		s.ctr.command(cmd.Action, resultTooManyWildcards)
		cn.reply(wsproto.NewError(wsproto.CodeTooManyWildcards,
			"at most "+strconv.Itoa(s.cfg.MaxWildcards)+" pattern subscriptions per connection", add, cmd.RequestID, now))
		return
	}
	var tat int64
	if len(add) > 0 {
		rs = l.recentOf(cn)
		tat = rs.tat
		// Each new channel may mean a new upstream stream (a round trip
		// to Redis, memory there and here) and an ACL check: a
		// connection names at most MaxNewStreamsPerSecond new ones per
		// second, with a burst of a whole connection's worth, granted
		// or not.
		if r := s.cfg.MaxNewStreamsPerSecond; r > 0 && !gcra(&rs.tat, now.UnixNano(), r, max(r, s.cfg.MaxChannels), len(add)) {
			s.ctr.command(cmd.Action, resultStreamRateLimited)
			cn.reply(wsproto.NewError(wsproto.CodeStreamRateLimited,
				"at most "+strconv.Itoa(r)+" new channels per second: slow down", add, cmd.RequestID, now))
			return
		}
	}
	role := s.roles[cn.role]
	var forbidden []string
	for _, ch := range add {
		if !s.acl.Allowed(role, ch) {
			forbidden = append(forbidden, ch)
		}
	}
	if forbidden != nil {
		s.ctr.command(cmd.Action, resultForbidden)
		cn.reply(wsproto.NewError(wsproto.CodeForbidden, "role "+strconv.Quote(role)+" may not subscribe to these channels", forbidden, cmd.RequestID, now))
		return
	}
	// The since rules come after the ACL, so that a refused request
	// learns nothing about durability or the IDs it sent.
	pubsub, durable, msg, bad := s.durableRequest(cmd, add)
	if msg != "" {
		s.ctr.command(cmd.Action, resultBadRequest)
		cn.reply(wsproto.NewError(wsproto.CodeBadRequest, msg, bad, cmd.RequestID, now))
		return
	}
	if durable == nil && !cn.is(flagViaHub) && s.hub.JoinNow(&cn.sub, add) {
		// Every stream is followed already: answered here, in the
		// callback that read the request, before the shard can queue
		// a frame of them (a connection's usual first subscribe).
		if cn.reply(wsproto.NewSubscribed(cmd.Channels, cmd.RequestID, now)) {
			l.shard.AddDelivered(1) // as an ack through the queue is
		}
		rs.fresh = append(rs.fresh, add...)
		s.ctr.command(cmd.Action, resultOK)
		return
	}
	cn.set(flagViaHub, true)
	var err error
	if durable != nil {
		err = s.durable.SubscribeDurable(&cn.sub, pubsub, durable, cmd.Channels, cmd.RequestID)
	} else {
		err = s.hub.Subscribe(&cn.sub, add, cmd.Channels, cmd.RequestID)
	}
	if err != nil {
		if rs != nil {
			rs.tat = tat // nothing was done: the tokens go back
		}
		s.busy(cn, cmd, now)
		return
	}
	if len(add) > 0 {
		rs.fresh = append(rs.fresh, add...)
	}
	s.ctr.command(cmd.Action, resultOK)
}
