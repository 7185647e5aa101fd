package server

// Durable channels as the server sees them: which names are durable, the
// rules of a subscribe's "since" (docs/PROTOCOL.md), and the seam through
// which durable subscriptions reach the hub. Everything here runs on the
// connection's event loop.

import (
	"slices"

	"github.com/wsgw/gateway/auth"
	"github.com/wsgw/gateway/fanout"
	"github.com/wsgw/gateway/wsproto"
)

// DurableHub is the durable side of the hub: the seam between the
// server's commands and the stream readers (fanout/streams.go). The server
// calls it from event loops; every method is safe for concurrent use and
// never blocks.
type DurableHub interface {
	// Durable reports whether a channel or pattern is durable
	// (fanout.Durability.Durable).
	Durable(name string) bool
	// SubscribeDurable is Hub.Subscribe for a request that joins durable
	// names: it joins s to the pub/sub names in add as Hub.Subscribe does,
	// and to the durable ones with their resume positions, and queues the
	// "subscribed" ack naming all before any frame of them. The request
	// is all or nothing as Hub.Subscribe's: refused whole with an error
	// frame and a Refusal, or fanout.ErrBusy and nothing queued.
	SubscribeDurable(s *fanout.Subscriber, add []string, durable []fanout.Resume, all []string, requestID []byte) error
	// UnsubscribeDurable is Hub.Unsubscribe for a request that leaves
	// durable names (and the pub/sub ones in del).
	UnsubscribeDurable(s *fanout.Subscriber, del, durable, all []string, requestID []byte) error
	// Remove is Hub.Remove for a connection that closed: it leaves its
	// durable names too.
	Remove(s *fanout.Subscriber)
}

// removeSub gives back a closed connection's subscriptions, durable ones
// included. Event-loop only.
func (s *Server) removeSub(sub *fanout.Subscriber) {
	if s.durable != nil {
		s.durable.Remove(sub)
		return
	}
	s.hub.Remove(sub)
}

// EnableDurable makes the channels of cfg.Channels durable, served from
// Redis Streams by stream readers on the hub's Redis
// (docs/DURABILITY.md). Call it before Start; with no channels it does
// nothing. Shutdown stops the readers.
func (s *Server) EnableDurable(cfg fanout.StreamConfig) error {
	if len(cfg.Channels) == 0 {
		return nil
	}
	if !s.started.IsZero() {
		return ErrStarted
	}
	d, err := fanout.NewDurableHub(s.hub, cfg)
	if err != nil {
		return err
	}
	s.durable = d
	s.durableHub = d
	return nil
}

// Error messages of the since rules.
const (
	msgSinceBadID      = `malformed "since" ID: want <ms>-<seq>, two decimal numbers of at most 18446744073709551615 without sign, space or leading zero`
	msgSinceUnknown    = `"since" names channels that are neither in "channels" nor matched by one of its patterns`
	msgSinceNotDurable = `"since" names channels that are not durable (STREAM_CHANNELS): only durable channels can be resumed`
	msgSinceFollowed   = `"since" names channels this connection already follows: unsubscribe first`
)

// durableRequest applies the since rules to a subscribe request whose
// limits and ACL have passed, and sorts the names to add into pub/sub ones
// and durable ones with their positions. add are the request's names the
// connection does not follow yet. It returns the error message and the
// offending keys of the first rule that fails (malformed IDs, unknown
// keys, not durable, already followed), or msg "" and the split; durable
// is nil when the request joins no durable name. Its work is bounded by
// the request: at most MaxSinceEntries keys, each matched against the
// request's patterns (at most MaxWildcards). Event-loop only.
func (s *Server) durableRequest(cmd wsproto.Command, add []string) (pubsub []string, durable []fanout.Resume, msg string, bad []string) {
	type key struct {
		id      wsproto.StreamID
		targets []int // indexes in durable of the names it applies to
	}
	isDurable := func(name string) bool { return s.durable != nil && s.durable.Durable(name) }
	pubsub, names := s.splitDurable(add)
	var at map[string]int // durable name → index in durable
	if names != nil {
		at = make(map[string]int, len(names))
		durable = make([]fanout.Resume, len(names))
		for i, name := range names {
			at[name] = i
			durable[i].Name = name
		}
	}
	if len(cmd.Since) == 0 {
		return pubsub, durable, "", nil
	}

	keys := make([]key, len(cmd.Since))
	for i, e := range cmd.Since {
		id, ok := wsproto.ParseStreamID(e.ID)
		if !ok {
			bad = append(bad, e.Channel)
		}
		keys[i].id = id
	}
	if bad != nil {
		return nil, nil, msgSinceBadID, bad
	}
	// Which names of the request each key concerns: itself, and the
	// request's patterns that match it (an exact channel).
	var unknown, notDurable, followed []string
	for i, e := range cmd.Since {
		var names []string
		if slices.Contains(cmd.Channels, e.Channel) {
			names = append(names, e.Channel)
		}
		if !auth.IsPattern(e.Channel) {
			for _, p := range cmd.Channels {
				if auth.IsPattern(p) && auth.GlobMatch(p, e.Channel) {
					names = append(names, p)
				}
			}
		}
		if names == nil {
			unknown = append(unknown, e.Channel)
			continue
		}
		isNew, isDur := false, false
		for _, n := range names {
			j, ok := at[n]
			isNew = isNew || slices.Contains(add, n)
			isDur = isDur || ok || isDurable(n)
			if ok {
				keys[i].targets = append(keys[i].targets, j)
			}
		}
		switch {
		case !isDur:
			notDurable = append(notDurable, e.Channel)
		case keys[i].targets == nil || !isNew:
			followed = append(followed, e.Channel)
		}
	}
	switch {
	case unknown != nil:
		return nil, nil, msgSinceUnknown, unknown
	case notDurable != nil:
		return nil, nil, msgSinceNotDurable, notDurable
	case followed != nil:
		return nil, nil, msgSinceFollowed, followed
	}
	for i, e := range cmd.Since {
		for _, j := range keys[i].targets {
			r := &durable[j]
			if r.Name == e.Channel {
				r.Since, r.HasSince = keys[i].id, true
			} else {
				r.Channels = append(r.Channels, fanout.ChannelPosition{Channel: e.Channel, ID: keys[i].id})
			}
		}
	}
	return pubsub, durable, "", nil
}

// sinceCost is how many tokens of the inbound budget the since keys of cmd
// take beyond its channels: one per key that is not one of them, as each
// is matched against the request's patterns.
func sinceCost(cmd wsproto.Command) int {
	n := 0
	for _, e := range cmd.Since {
		if !slices.Contains(cmd.Channels, e.Channel) {
			n++
		}
	}
	return n
}

// splitDurable sorts names into pub/sub ones and durable ones; durable is
// nil when none is, and then pubsub is names itself (nothing is copied
// for a gateway or a request without durable channels). Event-loop only.
func (s *Server) splitDurable(names []string) (pubsub, durable []string) {
	if s.durable == nil || !slices.ContainsFunc(names, s.durable.Durable) {
		return names, nil
	}
	for _, n := range names {
		if s.durable.Durable(n) {
			durable = append(durable, n)
		} else {
			pubsub = append(pubsub, n)
		}
	}
	return pubsub, durable
}
