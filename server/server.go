package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"

	"github.com/wsgw/gateway/auth"
	"github.com/wsgw/gateway/fanout"
)

// Sentinel errors.
var (
	ErrStarted  = errors.New("server: already started")
	ErrShutdown = errors.New("server: shut down")
)

// tickEvery is the period of the per-loop maintenance pass that resumes
// connections blocked on a full outbound buffer and moves closing ones
// along. Timeouts and pings are checked every sweepEvery, a multiple of
// it: a loop with nothing blocked or closing is woken only for the sweep.
const (
	tickEvery     = 100 * time.Millisecond
	sweepEvery    = time.Second
	ticksPerSweep = int(sweepEvery / tickEvery)
)

// Server is the gnet event handler: it owns the listener, the event loops,
// every connection's state and the fanout Hub that feeds them. Create it
// with New, then Start.
type Server struct {
	gnet.BuiltinEventEngine

	cfg   Config
	log   *slog.Logger
	hub   *fanout.Hub
	authn *auth.Authenticator
	acl   *auth.ACL

	// durable is the durable side of the hub (durable.go); nil: no
	// channel is durable, and "since" is refused.
	durable DurableHub
	// durableHub is durable when EnableDurable made it: Shutdown
	// stops its readers, Stats shows them.
	durableHub *fanout.DurableHub

	eng      gnet.Engine
	addr     string
	ticked   chan struct{} // closed by the first OnTick: every loop listens
	done     chan struct{}
	runErr   error
	started  time.Time
	draining atomic.Bool

	conns   atomic.Int64 // upgraded WebSocket connections
	sockets atomic.Int64 // accepted TCP connections, upgraded or not
	// partial is the bytes of unfinished inbound messages held by every
	// connection (Config.MaxPartialBytes; see trackPartial).
	partial atomic.Int64
	// loops[i] is the state of the event loop served by fanout shard i,
	// all made by New; gnet's loops are bound to them in order of first
	// sight (loopFor), bound of them so far, under loopsMu.
	loopsMu sync.Mutex
	loops   []*loopState
	bound   int
	// roles are the ACL's role names; a connection keeps an index.
	roles    []string
	perIPMu  sync.Mutex
	perIP    map[string]int
	upgrader ws.Upgrader

	// proxies are Config.TrustedProxies, parsed. peers[i] holds the
	// client addresses that trusted proxies gave for the connections of
	// loop i (proxy.go); event loop i only.
	proxies []netip.Prefix
	peers   []map[*conn]netip.AddrPort

	acceptRate rateLimiter

	// Paced shutdown: closes are spread until closeBy.
	closeBy atomic.Int64 // unix nanos; 0 when not draining

	ticks int // OnTick calls so far; gnet's ticker goroutine only

	ctr counters // exported by Metrics (metrics.go)
}

// New builds a server and its fanout Hub, with one shard per event loop
// (hubCfg's Redis settings, queue size and linger). cfg is validated here,
// hubCfg by fanout.New.
func New(cfg Config, hubCfg fanout.Config, authn *auth.Authenticator, acl *auth.ACL) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if authn == nil || acl == nil {
		return nil, fmt.Errorf("%w: authenticator and ACL are required", ErrConfig)
	}
	s := &Server{
		cfg:    cfg,
		log:    cfg.Logger,
		authn:  authn,
		acl:    acl,
		ticked: make(chan struct{}),
		done:   make(chan struct{}),
		perIP:  make(map[string]int),
		roles:  acl.Roles(),
	}
	if len(s.roles) > math.MaxUint16 {
		return nil, fmt.Errorf("%w: %d ACL roles, at most %d", ErrConfig, len(s.roles), math.MaxUint16)
	}
	// permessage-deflate and subprotocols are not negotiated:
	// Negotiate and Protocol stay nil, so the response carries neither
	// header and frames with RSV bits set are protocol errors.
	s.upgrader = ws.Upgrader{}
	for _, p := range cfg.TrustedProxies {
		pfx, _ := parseTrusted(p) // checked by Validate
		s.proxies = append(s.proxies, pfx)
	}
	s.peers = make([]map[*conn]netip.AddrPort, cfg.Loops)
	for i := range s.peers {
		s.peers[i] = make(map[*conn]netip.AddrPort)
	}
	s.acceptRate.rate = float64(cfg.MaxConnectionsPerSecond)
	s.ctr.latency = newLatencyHistogram()
	// Each loop's state is the waker of its shard, so the hub is built
	// complete: nothing is installed in it once its goroutines run.
	s.loops = make([]*loopState, cfg.Loops)
	wakers := make([]fanout.Waker, cfg.Loops)
	for i := range s.loops {
		s.loops[i] = newLoopState(s, i)
		wakers[i] = s.loops[i]
	}
	hub, err := fanout.New(hubCfg, wakers)
	if err != nil {
		return nil, err
	}
	s.hub = hub
	for i, l := range s.loops {
		l.shard = hub.Shard(i)
	}
	return s, nil
}

// Start listens, starts the hub (which connects to Redis in the
// background) and returns once the engine is accepting connections.
func (s *Server) Start() error {
	if !s.started.IsZero() {
		return ErrStarted
	}
	addr, release, err := reservePort(s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("server: listen on %s: %w", s.cfg.Addr, err)
	}
	defer release()
	s.addr = addr
	s.started = time.Now()
	go func() {
		defer close(s.done)
		s.runErr = gnet.Run(s, "tcp://"+addr,
			gnet.WithMulticore(true),
			gnet.WithNumEventLoop(s.cfg.Loops),
			// A listener per loop, no acceptor thread; reservePort
			// keeps a second process off the port.
			gnet.WithReusePort(true),
			// SO_REUSEADDR, as net.Listen sets it: the gateway closes
			// first, so its port holds TIME_WAIT sockets for a minute
			// after a shutdown, and a restart on the same port would
			// fail with "address already in use" without it.
			gnet.WithReuseAddr(true),
			gnet.WithTicker(true),
			gnet.WithTCPNoDelay(gnet.TCPNoDelay),
			gnet.WithLogger(gnetLogger{s.log}),
		)
	}()
	// gnet calls OnBoot before the loops past the first have bound their
	// listeners, and starts the ticker after: the first tick is the sign
	// that every loop listens (and that the placeholder of a port 0 can
	// go).
	select {
	case <-s.ticked:
		// Requests of connections accepted before this wait in the
		// hub's queue.
		s.hub.Start()
		return nil
	case <-s.done:
		return fmt.Errorf("server: listen on %s: %w", s.cfg.Addr, s.runErr)
	}
}

// Done is closed when the engine has stopped: after Shutdown, or on its
// own when gnet gave up (for example accept(2) failing). The binary exits
// non-zero on the latter rather than sit there with a dead listener.
func (s *Server) Done() <-chan struct{} { return s.done }

// Err is why the engine stopped; valid after Done is closed.
func (s *Server) Err() error { return s.runErr }

// Addr is the address the server listens on, with the real port when
// Config.Addr asked for port 0. Valid after Start.
func (s *Server) Addr() string { return s.addr }

// OnBoot records the engine. Engine goroutine.
func (s *Server) OnBoot(eng gnet.Engine) gnet.Action {
	s.eng = eng
	return gnet.None
}

// roleIndex returns the index of role in s.roles. The authenticator only
// grants roles the ACL defines, so a miss is a configuration bug; it
// refuses the client rather than guess.
func (s *Server) roleIndex(role string) (uint16, error) {
	if i := slices.Index(s.roles, role); i >= 0 {
		return uint16(i), nil
	}
	return 0, fmt.Errorf("%w: role %q is not in the ACL", ErrConfig, role)
}

// loopFor returns the state of event loop el, binding the next unbound
// state to it the first time the loop is seen: gnet assigns connections
// to loops, and the state's index is the loop's fanout shard. gnet runs
// Config.Loops loops, one per state. Event-loop only (takes loopsMu once
// per connection).
func (s *Server) loopFor(el gnet.EventLoop) *loopState {
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	for _, l := range s.loops[:s.bound] {
		if l.el == el {
			return l
		}
	}
	l := s.loops[s.bound]
	l.bind(el)
	s.bound++
	return l
}

// OnOpen registers a new TCP connection; it becomes a WebSocket once its
// upgrade request has arrived (OnTraffic). Event-loop only.
func (s *Server) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	// OnClose runs for a connection closed here too, and decrements.
	if n := s.sockets.Add(1); s.cfg.MaxSockets > 0 && n > int64(s.cfg.MaxSockets) {
		s.ctr.refuse(refuseFileLimit)
		return httpError(http.StatusServiceUnavailable, "server at its connection limit"), gnet.Close
	}
	l := s.loopFor(c.EventLoop())
	now := time.Now().UnixNano()
	cn := &conn{gc: c, loop: l, since: now, lastRead: now}
	s.hub.Init(&cn.sub, l.idx)
	l.add(cn)
	c.SetContext(cn)
	return nil, gnet.None
}

// OnClose releases the connection's state. Event-loop only; gnet may
// call it from inside a Write or Writev on this connection.
func (s *Server) OnClose(c gnet.Conn, err error) gnet.Action {
	s.sockets.Add(-1)
	cn, ok := c.Context().(*conn)
	if !ok {
		return gnet.None
	}
	cn.loop.remove(cn)
	delete(cn.loop.recent, cn)
	remote := s.peer(cn)
	if cn.is(flagProxied) {
		delete(s.peers[cn.loop.idx], cn)
	}
	if cn.state >= stateOpen {
		s.conns.Add(-1)
		s.releaseIP(remote)
		if cn.cold == nil || !cn.cold.removed {
			s.removeSub(&cn.sub)
		}
		reason := cn.closeReason()
		if reason == "" {
			reason = "peer closed"
			if err != nil {
				reason = err.Error()
			}
		}
		s.log.Info("connection closed", "remote", remote.String(), "role", s.roles[cn.role],
			"duration", time.Since(time.Unix(0, cn.since)).Round(time.Millisecond),
			"frames_sent", cn.sent, "dropped", cn.sub.Dropped(), "reason", reason)
	}
	s.releasePartial(cn)
	cn.state = stateClosed
	return gnet.None
}

// OnTraffic handles inbound bytes, and also the wake-ups of gnet.Conn.Wake.
// Event-loop only.
func (s *Server) OnTraffic(c gnet.Conn) gnet.Action {
	cn := c.Context().(*conn)
	if cn.state == stateHandshake {
		if a := s.handshake(cn); a != gnet.None || cn.state != stateOpen {
			return a
		}
	}
	return s.frames(cn)
}

// OnTick schedules the maintenance pass on the loops that need it: every
// loop once per sweep, during a paced shutdown, and otherwise only a loop
// with blocked or closing connections. A loop not woken stays in
// epoll_wait: each wake of an idle loop costs far more than the pass
// itself, as the Go runtime's monitor polls at its fastest for a while
// after a thread returns from a long system call (at 15,000 idle
// sockets, waking every loop each tick was more than half of an idle
// gateway's CPU).
// It runs on gnet's ticker goroutine, so it only submits tasks.
func (s *Server) OnTick() (time.Duration, gnet.Action) {
	s.loopsMu.Lock()
	loops := s.loops[:s.bound]
	s.loopsMu.Unlock()
	s.ticks++
	if s.ticks == 1 {
		close(s.ticked)
	}
	sweep := s.ticks%ticksPerSweep == 0
	all := sweep || s.closeBy.Load() != 0
	for _, l := range loops {
		if sweep {
			l.sweepDue.Store(true)
		}
		if all || l.busy.Load() {
			_ = l.el.Execute(context.Background(), l.tickTask)
		}
	}
	return tickEvery, gnet.None
}

// acquireIP and releaseIP count connections per client address, only
// when MAX_CONNECTIONS_PER_IP is set: otherwise nothing is stored.
func (s *Server) acquireIP(a net.Addr) bool {
	if s.cfg.MaxConnectionsPerIP <= 0 {
		return true
	}
	ip := remoteIP(a)
	s.perIPMu.Lock()
	defer s.perIPMu.Unlock()
	if s.cfg.MaxConnectionsPerIP > 0 && s.perIP[ip] >= s.cfg.MaxConnectionsPerIP {
		return false
	}
	s.perIP[ip]++
	return true
}

func (s *Server) releaseIP(a net.Addr) {
	if s.cfg.MaxConnectionsPerIP <= 0 {
		return
	}
	ip := remoteIP(a)
	s.perIPMu.Lock()
	defer s.perIPMu.Unlock()
	if s.perIP[ip] <= 1 {
		delete(s.perIP, ip)
	} else {
		s.perIP[ip]--
	}
}

// Shutdown closes every connection with 1001 (going away), waits for the
// close handshakes, stops the engine and closes the hub, all within ctx:
// past its deadline Shutdown returns ctx's error while the engine or the
// hub is still stopping. New upgrades are refused with 503 meanwhile. It
// also closes the hub of an engine that stopped by itself (Done). Safe
// for concurrent use.
func (s *Server) Shutdown(ctx context.Context) error {
	if !s.draining.CompareAndSwap(false, true) {
		return ErrShutdown
	}
	// Closes are paced so that tens of thousands of clients do not
	// reconnect to the next instance (or the peers) in the same instant:
	// at ShutdownCloseRate, within the first half of the shutdown window;
	// the second half is for the close handshakes. Each loop's tick
	// closes its share (see loopState.tick).
	window := 2 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		window = time.Until(dl) / 2
	}
	if r := s.cfg.ShutdownCloseRate; r > 0 {
		window = min(window, time.Duration(float64(s.conns.Load())/float64(r)*float64(time.Second)))
	}
	s.closeBy.Store(time.Now().Add(max(window, 0)).UnixNano())
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
wait:
	for s.conns.Load() > 0 {
		select {
		case <-ctx.Done():
			break wait
		case <-s.done: // nothing left to close
			break wait
		case <-t.C:
		}
	}
	var err error
	select {
	case <-s.done: // stopped by itself
	default:
		if s.started.IsZero() {
			// Start was refused before the engine ran
			// (reservePort): there is none to stop.
			break
		}
		if err = s.eng.Stop(ctx); err != nil {
			err = fmt.Errorf("server: stop engine: %w", err)
		} else {
			<-s.done
		}
	}
	var derr error
	if s.durableHub != nil {
		derr = s.durableHub.Close(ctx)
	}
	return errors.Join(err, derr, s.hub.Close(ctx))
}

// gnetLogger routes gnet's own log lines to slog.
type gnetLogger struct{ l *slog.Logger }

func (g gnetLogger) Debugf(f string, a ...any) { g.l.Debug(fmt.Sprintf(f, a...), "src", "gnet") }
func (g gnetLogger) Infof(f string, a ...any)  { g.l.Debug(fmt.Sprintf(f, a...), "src", "gnet") }
func (g gnetLogger) Warnf(f string, a ...any)  { g.l.Warn(fmt.Sprintf(f, a...), "src", "gnet") }
func (g gnetLogger) Errorf(f string, a ...any) { g.l.Error(fmt.Sprintf(f, a...), "src", "gnet") }
func (g gnetLogger) Fatalf(f string, a ...any) { g.l.Error(fmt.Sprintf(f, a...), "src", "gnet") }

// rateLimiter is a token bucket shared by all loops (accepted upgrades per
// second). Safe for concurrent use; one short critical section per
// upgrade, never on the delivery path.
type rateLimiter struct {
	mu     sync.Mutex
	rate   float64 // tokens per second; 0 = unlimited
	tokens float64
	last   time.Time
}

func (r *rateLimiter) allow(now time.Time) bool {
	if r.rate <= 0 {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last.IsZero() {
		r.tokens = r.rate
	} else {
		r.tokens = min(r.rate, r.tokens+now.Sub(r.last).Seconds()*r.rate)
	}
	r.last = now
	if r.tokens < 1 {
		return false
	}
	r.tokens--
	return true
}
