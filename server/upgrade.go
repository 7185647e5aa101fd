package server

import (
	"bytes"
	"io"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"
)

// upgradeState is one event loop's WebSocket upgrader: gobwas/ws parses
// the request head straight from gnet's buffer and reports the request
// target and the headers the gateway needs through callbacks, into this
// state, which the next upgrade on the loop reuses. So an upgrade costs a
// few small allocations instead of net/http's request, header map and
// strings (BenchmarkHandshake): less CPU per connect, and less garbage
// left in the heap after a connect burst, which an idle gateway's RSS
// would otherwise carry (issue 2, 1 KiB per idle socket).
//
// Event-loop only: each loop owns one, and an upgrade runs from start to
// end inside one OnTraffic call, so the callbacks never interleave.
type upgradeState struct {
	upgrader ws.Upgrader
	in       bytes.Reader
	out      bytes.Buffer
	rw       struct {
		io.Reader
		io.Writer
	}

	// What the callbacks saw of the current request.
	echo, wsPath         bool
	query, authorization []byte
	origin               []byte
	hasOrigin, hasAuthz  bool
}

func newUpgradeState() *upgradeState {
	u := &upgradeState{}
	u.rw.Reader, u.rw.Writer = &u.in, &u.out
	// permessage-deflate and subprotocols are not negotiated (issue 8),
	// as in Server.upgrader.
	u.upgrader = ws.Upgrader{
		OnRequest: u.onRequest,
		OnHeader:  u.onHeader,
	}
	return u
}

func (u *upgradeState) onRequest(uri []byte) error {
	path, query, _ := bytes.Cut(uri, []byte{'?'})
	u.wsPath = string(path) == "/ws"
	u.echo = string(path) == "/echo"
	u.query = append(u.query[:0], query...)
	return nil
}

func (u *upgradeState) onHeader(key, value []byte) error {
	// First occurrence wins, as with net/http's Header.Get.
	switch {
	case !u.hasOrigin && bytes.EqualFold(key, []byte("Origin")):
		u.origin, u.hasOrigin = append(u.origin[:0], value...), true
	case !u.hasAuthz && bytes.EqualFold(key, []byte("Authorization")):
		u.authorization, u.hasAuthz = append(u.authorization[:0], value...), true
	}
	return nil
}

// upgrade is the fast path of a handshake: done is false, and nothing was
// written, unless head is a valid WebSocket upgrade of /ws (or /echo when
// enabled) by gobwas/ws's reading; everything else, errors included, goes
// to Server.slowHandshake, which answers it as before. Event-loop only.
func (u *upgradeState) upgrade(s *Server, cn *conn, head []byte) (a gnet.Action, done bool) {
	// gobwas/ws takes any HTTP/1.x version from 1.1 up (say "HTTP/1.10"),
	// net/http only well-formed ones: leave anything but the HTTP/1.1
	// every client sends to the net/http path (FuzzUpgradeFastPath).
	line, _, _ := bytes.Cut(head, []byte{'\n'})
	if !bytes.HasSuffix(bytes.TrimSuffix(line, []byte{'\r'}), []byte(" HTTP/1.1")) {
		return gnet.None, false
	}
	u.in.Reset(head)
	u.out.Reset()
	u.wsPath, u.echo, u.hasOrigin, u.hasAuthz = false, false, false, false
	u.query, u.origin, u.authorization = u.query[:0], u.origin[:0], u.authorization[:0]
	if _, err := u.upgrader.Upgrade(&u.rw); err != nil {
		return gnet.None, false
	}
	echo := u.echo && s.cfg.Echo
	if !u.wsPath && !echo {
		return gnet.None, false
	}
	id, role, a, ok := s.admit(cn, u.originAllowed(s), string(u.query), string(u.authorization))
	if !ok {
		return a, true
	}
	return s.open(cn, echo, id, role, u.out.Bytes(), len(head)), true
}

// originAllowed is Server.originAllowed on the Origin bytes, without
// making a string of them.
func (u *upgradeState) originAllowed(s *Server) bool {
	if !u.hasOrigin || len(u.origin) == 0 || len(s.cfg.AllowedOrigins) == 0 {
		return true
	}
	for _, o := range s.cfg.AllowedOrigins {
		if string(u.origin) == o {
			return true
		}
	}
	return false
}
