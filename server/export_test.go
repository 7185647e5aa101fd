package server

import "github.com/wsgw/gateway/fanout"

// Hub is the server's fanout hub, for tests that watch or stop it.
func (s *Server) Hub() *fanout.Hub { return s.hub }

// Connections is the number of open WebSocket connections. Safe for
// concurrent use.
func (s *Server) Connections() int64 { return s.conns.Load() }

// SetDurable installs the durable side of the hub, before Start: until the
// stream readers are wired into the delivery path, tests supply their own.
func (s *Server) SetDurable(d DurableHub) { s.durable = d }

// LoopsSeen is the number of event loops that have had a connection.
func (s *Server) LoopsSeen() int {
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	return s.bound
}
