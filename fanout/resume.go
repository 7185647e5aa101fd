package fanout

import (
	"github.com/wsgw/gateway/auth"
	"github.com/wsgw/gateway/wsproto"
)

// Resume is one durable name of a subscribe request and where its client
// resumes it, as the server read it from the request's "since" (checked:
// well-formed IDs, durable names, keys that the name is or matches).
type Resume struct {
	// Name is an exact channel or a pattern, as subscribed.
	Name string
	// Since is the position given for Name itself (HasSince): for an
	// exact channel the last entry the client has, for a pattern the
	// default of the channels it matches that Channels does not name.
	Since    wsproto.StreamID
	HasSince bool
	// Channels are the positions given for concrete channels a pattern
	// matches; nil for an exact channel.
	Channels []ChannelPosition
}

// ChannelPosition is the last entry a client has of one channel.
type ChannelPosition struct {
	Channel string
	ID      wsproto.StreamID
}

// Resuming reports whether the client gave a position: without one the
// subscription starts live (and still gets its "replayed" frame).
func (r *Resume) Resuming() bool { return r.HasSince || len(r.Channels) > 0 }

// Pattern reports whether Name is a pattern.
func (r *Resume) Pattern() bool { return auth.IsPattern(r.Name) }
