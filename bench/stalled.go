package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"time"

	"github.com/gobwas/ws"
)

// Stalled sockets (-stalled K, -scenario fairness): K extra WebSocket
// connections that subscribe to the same channels as the measured sockets
// and then never read again. They live in the coordinator process, apart
// from the client workers, so nothing they receive (or not) reaches the
// measured sockets' latency, gap or delivery counters. Their receive buffer
// is kept small, so that the backpressure reaches the gateway within
// seconds instead of after the tens of MB loopback autotuning would allow;
// from then on the gateway parks them (MAX_OUTBOUND_BYTES), their queues
// fill (SEND_QUEUE_SIZE) and it drops their frames, counted in /stats
// messages_dropped.

// errStalled prefixes every failure to set up a stalled socket.
var errStalled = errors.New("bench: stalled socket")

const (
	// stalledRcvBuf is the stalled sockets' SO_RCVBUF (the kernel doubles
	// it): a few frames, then the gateway's writes would block.
	stalledRcvBuf = 4096
	// stallFillMax bounds the publishing that fills the stalled sockets'
	// queues before a measured window.
	stallFillMax = 60 * time.Second
	// fairWarm is the publishing before a window without stalled sockets,
	// so that both kinds of window start from a warm gateway.
	fairWarm = 2 * time.Second
)

// stalledSet is the open stalled sockets.
type stalledSet struct {
	conns []net.Conn
}

// dialStalled opens k stalled sockets to addr: socket j subscribes to what
// plan gives socket j (for fanout, the one channel every measured socket
// is on), with requestId "stalled-<j>" so that the gateway's log tells them
// apart, and is never read after the subscribe ack.
func dialStalled(ctx context.Context, addr string, plan subPlan, k int, timeout time.Duration) (*stalledSet, error) {
	s := &stalledSet{}
	for j := range k {
		c, err := dialOneStalled(ctx, addr, plan, j, timeout)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("%w %d of %d: %w", errStalled, j+1, k, err)
		}
		s.conns = append(s.conns, c)
	}
	return s, nil
}

func dialOneStalled(ctx context.Context, addr string, plan subPlan, j int, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{
		Timeout:   timeout,
		KeepAlive: -1,
		// Before connect, so that the window the gateway sees is small
		// from the SYN on.
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, stalledRcvBuf)
			}); err != nil {
				return err
			}
			return serr
		},
	}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if err := stalledHandshake(nc, addr, plan, j, timeout); err != nil {
		_ = nc.Close()
		return nil, err
	}
	return nc, nil
}

// stalledHandshake upgrades and subscribes nc, reading up to the subscribe
// ack and not one frame further.
func stalledHandshake(nc net.Conn, host string, plan subPlan, j int, timeout time.Duration) error {
	if err := nc.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	req, accept := upgradeRequest(host)
	if _, err := nc.Write(req); err != nil {
		return err
	}
	var (
		buf      []byte
		tmp      [4096]byte
		upgraded bool
	)
	for {
		n, err := nc.Read(tmp[:])
		buf = append(buf, tmp[:n]...)
		if !upgraded {
			if end := bytes.Index(buf, crlfcrlf); end >= 0 {
				if status, ok := checkUpgrade(buf[:end+4], accept[:]); !ok {
					return fmt.Errorf("upgrade refused: HTTP %d", status)
				}
				upgraded = true
				buf = buf[end+4:]
				if _, werr := nc.Write(subscribeFrame(plan, j, "stalled-"+strconv.Itoa(j))); werr != nil {
					return werr
				}
			} else if len(buf) > 16<<10 {
				return errors.New("no end of the upgrade response in 16 KiB")
			}
		}
		for upgraded {
			op, _, payload, fn, ferr := nextFrame(buf)
			if ferr != nil {
				return ferr
			}
			if fn == 0 {
				break
			}
			buf = buf[fn:]
			switch {
			case op == ws.OpClose:
				return errors.New("closed by the gateway before the subscribe ack")
			case op != ws.OpText:
			case bytes.HasPrefix(payload, subscribedPfx):
				return nc.SetDeadline(time.Time{})
			case errorCode(payload) != "":
				return errors.New("subscribe refused: " + errorCode(payload))
			}
		}
		if err != nil {
			return err
		}
	}
}

// close resets every stalled socket (SO_LINGER 0): the gateway frees them
// at once instead of trying to flush what they never read.
func (s *stalledSet) close() {
	for _, c := range s.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = c.Close()
	}
	s.conns = nil
}

// stalledClosedByGateway is how many of k stalled sockets the gateway no
// longer counts, given the measured sockets still open and its
// /stats connections; -1 when /stats was not read. (The gateway's close
// handshake cannot reach a socket that does not read, so the gateway's
// count is the only witness.)
func stalledClosedByGateway(measuredOpen int64, k int, gs *gwStats) int {
	if gs == nil {
		return -1
	}
	gone := measuredOpen + int64(k) - gs.Connections
	return int(min(max(gone, 0), int64(k)))
}

// startStalled opens K stalled sockets with plan.
func (r *runner) startStalled(plan subPlan, k int) error {
	if k <= 0 {
		return nil
	}
	st, err := dialStalled(r.ctx, r.dial[0], plan, k, r.cfg.HandshakeTimeout)
	if err != nil {
		return err
	}
	r.stalled = st
	r.logf("%d stalled sockets subscribed (SO_RCVBUF %d) and no longer read", k, stalledRcvBuf)
	return nil
}

// stopStalled resets the stalled sockets and waits (at most 10 s) until
// the gateway no longer counts them, so that the next window does not
// pay for their teardown.
func (r *runner) stopStalled() {
	if r.stalled == nil {
		return
	}
	r.stalled.close()
	r.stalled = nil
	_ = r.wait("unstall", 10*time.Second, func(a poolStats) bool {
		gs, err := r.stats()
		return err != nil || gs.Connections <= a.Open
	})
}

// fillStalled publishes at rate until the gateway drops frames (the
// stalled sockets' queues are full) and then one second more, within
// stallFillMax, and lets the measured sockets catch up. It returns the
// measured sockets' delivery during that lead-in and whether the gateway
// dropped anything.
func (r *runner) fillStalled(phase string, rate float64, pick target, expected func(m0, m mark) int64) (lead *Delivery, overflowed bool, err error) {
	base, err := r.stats()
	if err != nil {
		return nil, false, fmt.Errorf("%w: gateway /stats: %w", errStalled, err)
	}
	var firstDrop, lastAsk time.Time
	stop := func() bool {
		// /stats is answered on the gateway's event loops: ask twice a
		// second, not at every 100 ms poll.
		if firstDrop.IsZero() && time.Since(lastAsk) >= 500*time.Millisecond {
			lastAsk = time.Now()
			if gs, err := r.stats(); err == nil && gs.Dropped > base.Dropped {
				firstDrop = time.Now()
			}
			return false
		}
		return !firstDrop.IsZero() && time.Since(firstDrop) >= time.Second
	}
	start := time.Now()
	m0, m1, secs, err := r.publishUntil(phase, rate, stallFillMax, pick, expected, stop)
	if !firstDrop.IsZero() {
		r.logf("stalled sockets overflowing after %.1fs", firstDrop.Sub(start).Seconds())
	} else {
		r.logf("stalled sockets still not overflowing after %.1fs", secs)
	}
	return r.delivery(m0, m1, rate, secs, expected(m0, m1)), !firstDrop.IsZero(), err
}

// StalledResult describes the stalled sockets of a fanout, spread or sweep
// run (-stalled K). None of their frames is in delivery, latency or gaps.
type StalledResult struct {
	Sockets     int     `json:"sockets"`
	RcvBuf      int     `json:"so_rcvbuf"`
	FillSeconds float64 `json:"fill_seconds,omitempty"` // publishing before the window until they overflowed
	Overflowed  bool    `json:"overflowed"`             // the gateway dropped frames before the window
	// FillMeasuredLost is the measured sockets' gaps and missing frames
	// during the fill (a frame dropped at its very end is seen as a gap
	// at the first frame of the window).
	FillMeasuredLost int64 `json:"fill_measured_gaps_plus_missing"`
	// GwDropped is the gateway's drops in the measured window: the
	// stalled sockets' when the measured sockets saw no gap and nothing
	// was missing.
	GwDropped       uint64 `json:"gateway_dropped"`
	MeasuredLost    int64  `json:"measured_gaps_plus_missing"`
	ClosedByGateway int    `json:"closed_by_gateway"` // by the end of the window (1013); -1: unknown
}
