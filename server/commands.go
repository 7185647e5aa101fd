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

// allow takes one token from the connection's bucket: GCRA with an
// emission interval of 1s/rate and a burst of rate messages. The bucket is
// full when tat is not ahead of now.
func (cn *conn) allow(rate int) bool {
	now := time.Now().UnixNano()
	interval := int64(time.Second) / int64(rate)
	tat := max(cn.tat, now)
	if tat == now {
		cn.strikes = 0
	}
	if tat-now > int64(rate-1)*interval {
		if cn.strikes < math.MaxInt32 {
			cn.strikes++
		}
		return false
	}
	cn.tat = tat + interval
	return true
}

// rateLimited takes one token of the inbound message budget. Without one
// it answers rate_limited, or closes with 1008 a client that keeps going,
// and reports true. Every message counts, binary ones included: each is
// answered, so none may be a way around the limit.
func (s *Server) rateLimited(cn *conn, now time.Time) bool {
	if cn.allow(s.cfg.MaxMessagesPerSecond) {
		return false
	}
	s.ctr.command(0, resultRateLimited)
	if int(cn.strikes) > s.cfg.MaxMessagesPerSecond {
		cn.startClose(wsproto.CloseRateLimited)
		return true
	}
	cn.reply(wsproto.NewError(wsproto.CodeRateLimited, "too many messages: slow down", nil, nil, now))
	return true
}

// command parses and executes one client command. Event-loop only.
func (s *Server) command(cn *conn, p []byte) gnet.Action {
	now := time.Now()
	if s.rateLimited(cn, now) {
		return gnet.None
	}
	cmd, cerr := wsproto.ParseCommand(p)
	if cerr != nil {
		s.ctr.command(0, resultOf(cerr.Code))
		cn.reply(wsproto.NewError(cerr.Code, cerr.Message, cerr.Channels, cerr.RequestID, now))
		return gnet.None
	}
	switch cmd.Action {
	case wsproto.ActionPing:
		s.ctr.command(cmd.Action, resultOK)
		cn.reply(wsproto.NewPong(cmd.RequestID, now))
	case wsproto.ActionSubscribe:
		s.subscribe(cn, cmd, now)
	case wsproto.ActionUnsubscribe:
		var del []string
		for _, ch := range cmd.Channels {
			if i := cn.follows(ch); i >= 0 {
				cn.chans = slices.Delete(cn.chans, i, i+1)
				del = append(del, ch)
			}
		}
		if len(cn.chans) == 0 {
			cn.chans = nil // give the array back
		}
		s.ctr.command(cmd.Action, resultOK)
		s.hub.Unsubscribe(&cn.sub, del, cmd.Channels, cmd.RequestID)
	}
	return gnet.None
}

// follows returns the index of ch in cn.chans, or -1.
func (cn *conn) follows(ch string) int {
	for i, h := range cn.chans {
		if h.Value() == ch {
			return i
		}
	}
	return -1
}

// subscribe applies the ACL and the per-connection limits to the whole
// request before changing anything: a request is all or nothing.
func (s *Server) subscribe(cn *conn, cmd wsproto.Command, now time.Time) {
	var forbidden, add []string
	addPatterns := 0
	role := s.roles[cn.role]
	for _, ch := range cmd.Channels {
		if !s.acl.Allowed(role, ch) {
			forbidden = append(forbidden, ch)
			continue
		}
		if cn.follows(ch) < 0 && !slices.Contains(add, ch) {
			add = append(add, ch)
			if auth.IsPattern(ch) {
				addPatterns++
			}
		}
	}
	patterns := 0
	for _, h := range cn.chans {
		if auth.IsPattern(h.Value()) {
			patterns++
		}
	}
	switch {
	case forbidden != nil:
		s.ctr.command(cmd.Action, resultForbidden)
		cn.reply(wsproto.NewError(wsproto.CodeForbidden, "role "+strconv.Quote(role)+" may not subscribe to these channels", forbidden, cmd.RequestID, now))
		return
	case len(cn.chans)+len(add) > s.cfg.MaxChannels:
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
	if len(add) > 0 {
		// Exactly the size needed: most sockets follow one or two
		// channels for their whole life.
		cn.chans = slices.Grow(cn.chans, len(add))
		for _, ch := range add {
			cn.chans = append(cn.chans, unique.Make(ch))
		}
	}
	s.ctr.command(cmd.Action, resultOK)
	s.hub.Subscribe(&cn.sub, add, cmd.Channels, cmd.RequestID)
}
