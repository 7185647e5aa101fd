package server

import "github.com/wsgw/gateway/fanout"

// Hub is the server's fanout hub, for tests that watch or stop it.
func (s *Server) Hub() *fanout.Hub { return s.hub }
