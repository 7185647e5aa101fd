package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
)

// The connect floor: the least a server spends to let one client in, to
// compare the gateway's CPU per connect and subscribe with. One locked
// thread of the floor subprocess runs an epoll loop over non-blocking
// sockets: it accepts, reads the upgrade request, answers it (gobwas/ws's
// Upgrader, as the gateway does), reads the subscribe frame without
// parsing it and writes one small frame (a subscribe acknowledgement the
// client takes as such). No auth, no channel, no Redis, no bookkeeping
// beyond one state byte per socket. The same clients connect to it with
// the same plan and concurrency as to the gateway.

// connAck is the floor's one small write: shaped like the gateway's
// acknowledgement of a subscribe.
var connAck = serverFrame([]byte(`{"type":"subscribed","channels":["market:tick:bench:0"],"requestId":"0"}`))

// Handshake states of a floor socket.
const (
	cfUpgrade   byte = iota + 1 // waiting for the upgrade request
	cfSubscribe                 // upgraded, waiting for the first client frame
	cfDone                      // acknowledged: idle until the client leaves
)

// connFloor is the epoll server of the connect floor.
type connFloor struct {
	lfd, epfd int
	state     []byte   // by fd
	buf       [][]byte // by fd: bytes read while not done
	done      atomic.Int64
	stop      atomic.Bool
	upgrader  ws.Upgrader
}

// listenConnFloor opens the listener and the epoll instance.
func listenConnFloor() (*connFloor, int, error) {
	lfd, port, err := rawListen()
	if err != nil {
		return nil, 0, err
	}
	if err := syscall.SetNonblock(lfd, true); err != nil {
		syscall.Close(lfd)
		return nil, 0, err
	}
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		syscall.Close(lfd)
		return nil, 0, err
	}
	cf := &connFloor{lfd: lfd, epfd: epfd}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, lfd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(lfd)}); err != nil {
		cf.close()
		return nil, 0, err
	}
	return cf, port, nil
}

// serve runs the loop on a locked thread until stop, calling done(n)
// once n sockets are acknowledged.
func (cf *connFloor) serve(n int, done func()) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	events := make([]syscall.EpollEvent, 256)
	announced := false
	for !cf.stop.Load() {
		k, err := syscall.EpollWait(cf.epfd, events, 100)
		if err != nil && !errors.Is(err, syscall.EINTR) {
			return fmt.Errorf("epoll_wait: %w", err)
		}
		for _, ev := range events[:max(k, 0)] {
			if int(ev.Fd) == cf.lfd {
				cf.accept()
				continue
			}
			cf.readable(int(ev.Fd))
		}
		if !announced && cf.done.Load() >= int64(n) {
			announced = true
			done()
		}
	}
	return nil
}

func (cf *connFloor) accept() {
	for {
		fd, _, err := syscall.Accept4(cf.lfd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
		if err != nil {
			return // EAGAIN: all accepted; anything else: the client sees it
		}
		_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
		if err := syscall.EpollCtl(cf.epfd, syscall.EPOLL_CTL_ADD, fd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)}); err != nil {
			syscall.Close(fd)
			continue
		}
		for fd >= len(cf.state) {
			cf.state = append(cf.state, 0)
			cf.buf = append(cf.buf, nil)
		}
		cf.state[fd], cf.buf[fd] = cfUpgrade, nil
	}
}

// readable reads what fd has and moves its handshake on.
func (cf *connFloor) readable(fd int) {
	var tmp [4096]byte
	n, err := syscall.Read(fd, tmp[:])
	if n <= 0 {
		if errors.Is(err, syscall.EAGAIN) {
			return
		}
		cf.closeConn(fd)
		return
	}
	if cf.state[fd] == cfDone {
		return // a close frame or a pong: nothing the floor answers
	}
	b := append(cf.buf[fd], tmp[:n]...)
	cf.buf[fd] = b
	if cf.state[fd] == cfUpgrade {
		end := bytes.Index(b, crlfcrlf)
		if end < 0 {
			return
		}
		if _, err := cf.upgrader.Upgrade(struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(b[:end+4]), fdWriter(fd)}); err != nil {
			cf.closeConn(fd)
			return
		}
		cf.state[fd] = cfSubscribe
		b = b[end+4:]
		cf.buf[fd] = b
	}
	if complete, err := wholeFrame(b); err != nil {
		cf.closeConn(fd)
	} else if complete {
		_, _ = syscall.Write(fd, connAck)
		cf.state[fd], cf.buf[fd] = cfDone, nil
		cf.done.Add(1)
	}
}

// wholeFrame reports whether b starts with a complete client frame.
func wholeFrame(b []byte) (bool, error) {
	if len(b) < 2 {
		return false, nil
	}
	h, err := ws.ReadHeader(bytes.NewReader(b))
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	size := ws.HeaderSize(h) + int(h.Length)
	return len(b) >= size, nil
}

func (cf *connFloor) closeConn(fd int) {
	_ = syscall.EpollCtl(cf.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
	_ = syscall.Close(fd)
	cf.state[fd], cf.buf[fd] = 0, nil
}

// close closes every socket, the listener and the epoll instance. After
// serve has returned.
func (cf *connFloor) close() {
	for fd, st := range cf.state {
		if st != 0 {
			_ = syscall.Close(fd)
		}
	}
	_ = syscall.Close(cf.lfd)
	_ = syscall.Close(cf.epfd)
}

// fdWriter writes to a socket with write(2).
type fdWriter int

func (w fdWriter) Write(p []byte) (int, error) { return syscall.Write(int(w), p) }

// ConnectFloor is the connect floor measured after the idle scenario: the
// same sockets, plan and client against the floor server.
type ConnectFloor struct {
	Sockets               int     `json:"sockets"`
	Connected             int64   `json:"connected"`
	Failed                int64   `json:"failed"`
	Seconds               float64 `json:"seconds"`
	PerSec                float64 `json:"per_s"`
	Latency               Latency `json:"latency"` // dial to acknowledgement
	CPUPerConnectUS       float64 `json:"cpu_us_per_connect"`
	ClientCPUPerConnectUS float64 `json:"client_cpu_us_per_connect"`
	GwCPUPerConnectUS     float64 `json:"gateway_cpu_us_per_connect"`
	Ratio                 float64 `json:"gateway_ratio"` // gateway ÷ floor, CPU per connect and subscribe
}

// connectFloorPhase connects n sockets with plan to the connect floor and
// compares its CPU per connect with the gateway's (gwPerConnect).
func (r *runner) connectFloorPhase(plan subPlan, n int, gwPerConnect float64) error {
	r.stopClients()
	fp, addr, err := startFloorWith(floorCmd{Op: "connect", N: n})
	if err != nil {
		return err
	}
	defer fp.stop()
	res := &ConnectFloor{Sockets: n, GwCPUPerConnectUS: gwPerConnect}
	r.rep.ConnectFloor = res
	r.logf("connect floor: %d sockets", n)
	r.connWin.Reset()
	m0 := r.mark()
	cpu0, _ := cpuOf(fp.cmd.Process.Pid)
	if err := r.startClients(poolSpec{Plan: plan}, []string{addr}, n); err != nil {
		return err
	}
	defer r.stopClients()
	if err := r.wait("floor/connect", 30*time.Second+time.Duration(n)*time.Millisecond, func(a poolStats) bool {
		return a.Subscribed+a.Failed >= int64(n)
	}); err != nil {
		return err
	}
	cpu1, _ := cpuOf(fp.cmd.Process.Pid)
	m1 := r.mark()
	a := m1.cl
	s := m1.t.Sub(m0.t).Seconds()
	res.Connected, res.Failed, res.Seconds = a.Subscribed, a.Failed, round3(s)
	res.PerSec = perUnit(float64(a.Subscribed), s)
	res.Latency = summarize(r.connWin)
	res.CPUPerConnectUS = perUnit((cpu1-cpu0).Seconds()*1e6, float64(a.Subscribed))
	res.ClientCPUPerConnectUS = perUnit(clientCPU(m0, m1).Seconds()*1e6, float64(a.Subscribed))
	res.Ratio = ratio(gwPerConnect, res.CPUPerConnectUS)
	return nil
}

func (c *ConnectFloor) line() string {
	return fmt.Sprintf("connect floor (accept, upgrade answer, one small write; same sockets and client): %d/%d in %.2fs = %.0f/s, latency p50 %s p99 %s, %.1f µs CPU per connect (client %.1f) → gateway %.1f ÷ floor = %.2f",
		c.Connected, c.Sockets, c.Seconds, c.PerSec, fmtUS(c.Latency.P50), fmtUS(c.Latency.P99), c.CPUPerConnectUS, c.ClientCPUPerConnectUS, c.GwCPUPerConnectUS, c.Ratio)
}
