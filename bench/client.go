package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"
)

// The client side: a gnet v2 client with a couple of event loops holding
// every socket of this process. There is no goroutine, buffer or timer per
// socket: a socket is a small struct, gnet's connection (empty elastic
// buffers while idle) and its file descriptor. A handful of dialer
// goroutines make the TCP connections (bound to 127.0.0.x source addresses)
// and hand them to gnet with Enroll; the WebSocket handshake, the subscribe
// request, reading and pongs all happen on the event loops.

// Socket states.
const (
	stDialing int32 = iota
	stHandshake
	stSubscribing
	stOpen
	stLeaving // churn: our close frame is sent, waiting for the gateway to close
	stClosed
)

// subPlan says what each socket subscribes to.
type subPlan struct {
	Prefix   string `json:"prefix"`   // channel prefix, e.g. market:tick:bench
	Channels int    `json:"channels"` // socket i subscribes Prefix:<i % Channels>; 0: Prefix:<i>
	Pattern  string `json:"pattern"`  // an extra pattern subscription, "" for none
	Raw      bool   `json:"raw"`      // floor: no handshake, no subscribe
	// Durable: the channels are durable (Redis Streams); the subscribe
	// completes with the "replayed" frame that follows the ack, from
	// which on the live entries come (those added between the ack and it
	// are not delivered to a subscription without since).
	Durable bool `json:"durable,omitempty"`
}

func (p subPlan) channelOf(idx int) string {
	if p.Channels > 0 {
		idx %= p.Channels
	}
	return p.Prefix + ":" + strconv.Itoa(idx)
}

// poolSpec is one process's share of the sockets.
type poolSpec struct {
	Addr             string        `json:"addr"` // gateway (or floor) host:port
	Lo               int           `json:"lo"`   // global socket indexes [Lo, Hi)
	Hi               int           `json:"hi"`
	PerAddr          int           `json:"per_addr"` // sockets per source address
	Loops            int           `json:"loops"`
	Concurrency      int           `json:"concurrency"`  // handshakes in flight
	ConnectRate      float64       `json:"connect_rate"` // new connections per second, 0: unlimited
	HandshakeTimeout time.Duration `json:"handshake_timeout"`
	Plan             subPlan       `json:"plan"`
	// Reconnect, when set, makes a socket that loses its connection or
	// fails to get one dial again after this backoff (storm).
	Reconnect *backoff `json:"reconnect,omitempty"`
	// KeepSeq carries each socket's last seq over a reconnect to the
	// same gateway, so that what was lost while down shows as a gap.
	KeepSeq bool `json:"keep_seq,omitempty"`
}

// sourceAddr is the local address of global socket idx: 127.0.0.1 for the
// first perAddr sockets, 127.0.0.2 for the next, and so on (all of
// 127.0.0.0/8 is local on Linux). Each source address has its own
// ephemeral port range towards the gateway's port.
func sourceAddr(idx, perAddr int) net.IP {
	n := uint32(1 + idx/max(perAddr, 1))
	return net.IPv4(127, byte(n>>16), byte(n>>8), byte(n))
}

type sock struct {
	ls      *loopStats
	gc      gnet.Conn
	idx     int32
	state   atomic.Int32
	started int64 // dial start, or leave time while stLeaving
	accept  [28]byte
	last    [2]uint64 // last seq of the exact subscription and of the pattern
	why     string    // why the loop closed it during the handshake
	rejoin  bool      // a churned socket coming back
	timeout atomic.Bool

	// Reconnecting (storm): what the browser client keeps per socket.
	attempt  int     // failed attempts since the last stable connection
	lostAt   int64   // when the open connection was lost (unix nanos), 0 when not lost
	openedAt int64   // when it was last subscribed
	fresh    [2]bool // the next seq of each stream is the first since a reconnect
}

// loopStats are the counters of one client event loop. The loop takes mu
// once per OnTraffic call; the reporter takes it to copy and reset.
type loopStats struct {
	el gnet.EventLoop
	mu sync.Mutex

	lat    *hdr.Histogram // publish-to-client, µs
	conn   *hdr.Histogram // dial to subscribe ack, µs
	outage *hdr.Histogram // storm: a socket's connection lost to subscribed again, µs
	back   *hdr.Histogram // storm: the event to a socket subscribed again, µs

	frameCounts
	errCodes   map[string]int64
	closeCodes map[int]int64
}

// frameCounts are what the loops count of the frames they read.
type frameCounts struct {
	Frames    int64 `json:"frames"`
	Reads     int64 `json:"reads"` // OnTraffic calls: one read(2) each
	Data      int64 `json:"data"`
	Bytes     int64 `json:"bytes"`
	Gaps      int64 `json:"gaps"`
	Dups      int64 `json:"dups"`
	Acks      int64 `json:"acks"`
	Pings     int64 `json:"pings"`
	BadFrames int64 `json:"bad_frames"`
	// Upgrades answered 503, and how many of those carried Retry-After.
	Refused503 int64 `json:"refused_503"`
	RetryAfter int64 `json:"retry_after"`
	// SeqResets is how many streams began again at a lower seq after a
	// reconnect (the gateway forgot the stream while nobody was on it).
	SeqResets int64 `json:"seq_resets"`
}

func (c *frameCounts) add(d frameCounts) { addCounters(reflect.ValueOf(c).Elem(), reflect.ValueOf(d)) }

// addCounters adds every int64 field of src to the same field of dst (a
// settable struct of the same type), embedded structs included.
func addCounters(dst, src reflect.Value) {
	for i := range dst.NumField() {
		f := dst.Field(i)
		switch {
		case f.Kind() == reflect.Int64:
			f.SetInt(f.Int() + src.Field(i).Int())
		case f.Kind() == reflect.Struct && dst.Type().Field(i).Anonymous:
			addCounters(f, src.Field(i))
		}
	}
}

// poolStats is what a pool reports: counters are cumulative, histograms
// are the values recorded since the previous report.
type poolStats struct {
	Target     int64            `json:"target"`
	Dialed     int64            `json:"dialed"`
	Handshaked int64            `json:"handshaked"`
	Subscribed int64            `json:"subscribed"` // acks received (connects completed)
	Open       int64            `json:"open"`       // open and subscribed now
	Failed     int64            `json:"failed"`
	FailKinds  map[string]int64 `json:"fail_kinds,omitempty"`
	Limits     []string         `json:"limits,omitempty"`
	DialStop   bool             `json:"dial_stopped,omitempty"` // a system limit stopped dialing

	frameCounts
	ErrCodes   map[string]int64 `json:"err_codes,omitempty"`
	CloseCodes map[int]int64    `json:"close_codes,omitempty"`
	Unexpected int64            `json:"unexpected_closes"`

	ChurnLeft   int64 `json:"churn_left"`
	ChurnJoined int64 `json:"churn_joined"` // and sockets back after a storm

	// Reconnecting (storm).
	LostOpen   int64            `json:"lost_open"` // open connections lost
	Retried    int64            `json:"retried"`   // attempts scheduled after a backoff
	RetryKinds map[string]int64 `json:"retry_kinds,omitempty"`
	Peak       poolPeaks        `json:"peak"`

	CPUNanos int64 `json:"cpu_ns"` // this process's user+system CPU
	RSS      int64 `json:"rss"`    // this process's resident set

	Lat    sparseHist `json:"lat"`
	Conn   sparseHist `json:"conn"`
	Outage sparseHist `json:"outage"`
	Back   sparseHist `json:"back"`

	// PerGw is the same per gateway address, when the clients connect
	// to several directly (coordinator only).
	PerGw []poolStats `json:"-"`
}

// poolPeaks are the highest values, not sums, of a pool's figures.
type poolPeaks struct {
	MaxAttempt int64 `json:"max_attempt"` // the most failed attempts of one socket in a row
	LastBack   int64 `json:"last_back"`   // unix nanos of the last socket subscribed again
}

// add sums st's counters into a (histograms are merged by the caller).
func (a *poolStats) add(st poolStats) {
	if a.FailKinds == nil {
		a.FailKinds, a.ErrCodes, a.CloseCodes = map[string]int64{}, map[string]int64{}, map[int]int64{}
	}
	addCounters(reflect.ValueOf(a).Elem(), reflect.ValueOf(st))
	a.DialStop = a.DialStop || st.DialStop
	for k, v := range st.FailKinds {
		a.FailKinds[k] += v
	}
	for k, v := range st.ErrCodes {
		a.ErrCodes[k] += v
	}
	for k, v := range st.CloseCodes {
		a.CloseCodes[k] += v
	}
	if len(st.RetryKinds) > 0 && a.RetryKinds == nil {
		a.RetryKinds = map[string]int64{}
	}
	for k, v := range st.RetryKinds {
		a.RetryKinds[k] += v
	}
	a.Peak.MaxAttempt = max(a.Peak.MaxAttempt, st.Peak.MaxAttempt)
	a.Peak.LastBack = max(a.Peak.LastBack, st.Peak.LastBack)
}

type pool struct {
	gnet.BuiltinEventEngine

	spec   poolSpec
	cli    *gnet.Client
	socks  []atomic.Pointer[sock] // index: global idx - spec.Lo
	host   string
	dialQ  chan int32
	sem    chan struct{}
	closed chan struct{}
	wg     sync.WaitGroup

	loopsMu sync.Mutex
	loops   []*loopStats

	dialed, handshaked, subscribed, open, failed atomic.Int64
	unexpected, churnLeft, churnJoined           atomic.Int64
	stopping, churning                           atomic.Bool
	stopDial                                     atomic.Bool

	mu         sync.Mutex
	failKinds  map[string]int64
	retryKinds map[string]int64
	limits     []string

	// Reconnecting (storm).
	retry                         *retries
	retried, lostOpen             atomic.Int64
	maxAttempt, lastBack, eventAt atomic.Int64

	closeFrame []byte
}

// newPool starts the gnet client; connect starts dialing.
func newPool(spec poolSpec) (*pool, error) {
	if spec.Loops < 1 {
		spec.Loops = 1
	}
	if spec.Concurrency < 1 {
		spec.Concurrency = 256
	}
	if spec.HandshakeTimeout <= 0 {
		spec.HandshakeTimeout = 10 * time.Second
	}
	if _, _, err := net.SplitHostPort(spec.Addr); err != nil {
		return nil, err
	}
	n := spec.Hi - spec.Lo
	p := &pool{
		spec:       spec,
		socks:      make([]atomic.Pointer[sock], n),
		host:       spec.Addr,
		dialQ:      make(chan int32, n),
		sem:        make(chan struct{}, spec.Concurrency),
		closed:     make(chan struct{}),
		failKinds:  map[string]int64{},
		retryKinds: map[string]int64{},
		retry:      newRetries(),
		closeFrame: clientFrame(ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, "")),
	}
	cli, err := gnet.NewClient(p,
		gnet.WithMulticore(true),
		gnet.WithNumEventLoop(spec.Loops),
		gnet.WithTCPNoDelay(gnet.TCPNoDelay),
		gnet.WithLockOSThread(false),
		gnet.WithLogger(quietLogger{}),
	)
	if err != nil {
		return nil, err
	}
	if err := cli.Start(); err != nil {
		return nil, err
	}
	p.cli = cli
	return p, nil
}

// connect dials every socket of the spec in the background.
func (p *pool) connect() {
	dialers := 8
	if p.spec.Reconnect != nil {
		// Reconnecting browsers do not queue behind each other: as many
		// TCP connects in flight as handshakes.
		dialers = max(dialers, min(p.spec.Concurrency, 4096))
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.retrier()
		}()
	}
	for range dialers {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.dialer()
		}()
	}
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		p.dispatch()
	}()
	go func() {
		defer p.wg.Done()
		p.watchdog()
	}()
}

// dispatch queues every index, at ConnectRate if set.
func (p *pool) dispatch() {
	start := time.Now()
	for i := p.spec.Lo; i < p.spec.Hi; i++ {
		if p.stopping.Load() || p.stopDial.Load() {
			return
		}
		if r := p.spec.ConnectRate; r > 0 {
			due := start.Add(time.Duration(float64(i-p.spec.Lo) / r * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				select {
				case <-time.After(d):
				case <-p.closed:
					return
				}
			}
		}
		p.dialQ <- int32(i)
	}
}

func (p *pool) dialer() {
	for {
		var idx int32
		select {
		case idx = <-p.dialQ:
		case <-p.closed:
			return
		}
		select {
		case p.sem <- struct{}{}:
		case <-p.closed:
			return
		}
		if p.stopDial.Load() && !p.churning.Load() {
			<-p.sem
			continue
		}
		p.dial(idx)
	}
}

// IP_BIND_ADDRESS_NO_PORT (Linux 4.2+): with a source address bound, pick
// the port at connect time, per destination, instead of at bind time.
const ipBindAddressNoPort = 24

func (p *pool) dial(idx int32) {
	s := &sock{idx: idx, started: time.Now().UnixNano()}
	s.state.Store(stDialing)
	if old := p.socks[int(idx)-p.spec.Lo].Swap(s); old != nil {
		s.rejoin = true
		if p.spec.Reconnect != nil {
			p.inherit(s, old)
		}
	}
	p.dialed.Add(1)
	d := net.Dialer{
		LocalAddr: &net.TCPAddr{IP: sourceAddr(int(idx), p.spec.PerAddr)},
		KeepAlive: -1,
		Timeout:   5 * time.Second,
		Control: func(_, _ string, c syscall.RawConn) error {
			return c.Control(func(fd uintptr) {
				_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
			})
		},
	}
	nc, err := d.Dial("tcp", p.spec.Addr)
	if err == nil {
		_, err = p.cli.EnrollContext(nc, s)
	}
	if err != nil {
		s.state.Store(stClosed)
		switch kind := dialErrorKind(err); {
		case p.reconnects() && kind != "EMFILE" && kind != "ENFILE" && kind != "EADDRNOTAVAIL":
			p.failedAttempt(s, kind, time.Now().UnixNano())
		default:
			p.fail(kind, err)
		}
		<-p.sem
	}
}

// dialErrorKind classifies a dial error, naming the system limits.
func dialErrorKind(err error) string {
	switch {
	case errors.Is(err, syscall.EMFILE):
		return "EMFILE"
	case errors.Is(err, syscall.ENFILE):
		return "ENFILE"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "EADDRNOTAVAIL"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "ECONNREFUSED"
	case errors.Is(err, syscall.ECONNRESET):
		return "ECONNRESET"
	case errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, context.DeadlineExceeded):
		return "connect timeout"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "connect timeout"
	}
	return "dial error"
}

// fail counts a failed connection; system limits stop further dialing and
// are reported in plain words.
func (p *pool) fail(kind string, err error) {
	p.failed.Add(1)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failKinds[kind]++
	if p.failKinds[kind] > 1 {
		return
	}
	var msg string
	switch kind {
	case "EMFILE":
		var lim syscall.Rlimit
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
		msg = fmt.Sprintf("client process hit its open-file limit (EMFILE, RLIMIT_NOFILE soft %d hard %d) after %d sockets: use more -workers or raise the hard limit (ulimit -Hn)",
			lim.Cur, lim.Max, p.subscribed.Load())
	case "ENFILE":
		msg = "the system-wide file table is full (ENFILE): raise fs.file-max"
	case "EADDRNOTAVAIL":
		msg = fmt.Sprintf("out of ephemeral ports (EADDRNOTAVAIL) for a source address after %d sockets: lower -per-addr (now %d) or widen net.ipv4.ip_local_port_range",
			p.subscribed.Load(), p.spec.PerAddr)
	case "ECONNREFUSED":
		msg = "the gateway refused connections (ECONNREFUSED): is it running, or did its accept queue overflow?"
	case "handshake timeout":
		msg = "handshakes timed out: the gateway accepted TCP but did not answer the upgrade (check its open-file limit in /proc/<pid>/limits and its log)"
	}
	if kind == "dial error" && err != nil {
		msg = "connections failed, first: " + err.Error()
	}
	if msg != "" {
		p.limits = append(p.limits, msg)
	}
	if kind == "EMFILE" || kind == "ENFILE" || kind == "EADDRNOTAVAIL" {
		p.stopDial.Store(true)
	}
}

// watchdog closes sockets stuck in the handshake or in a churn leave.
func (p *pool) watchdog() {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.closed:
			return
		case <-t.C:
		}
		limit := time.Now().UnixNano() - int64(p.spec.HandshakeTimeout)
		for i := range p.socks {
			s := p.socks[i].Load()
			if s == nil {
				continue
			}
			switch s.state.Load() {
			case stHandshake, stSubscribing, stLeaving:
				if atomic.LoadInt64(&s.started) < limit && s.gc != nil {
					s.timeout.Store(true)
					_ = s.gc.Close()
				}
			}
		}
	}
}

func (p *pool) loopFor(el gnet.EventLoop) *loopStats {
	p.loopsMu.Lock()
	defer p.loopsMu.Unlock()
	for _, l := range p.loops {
		if l.el == el {
			return l
		}
	}
	l := &loopStats{el: el, lat: newHist(), conn: newHist(), outage: newHist(), back: newHist(), errCodes: map[string]int64{}, closeCodes: map[int]int64{}}
	p.loops = append(p.loops, l)
	return l
}

// OnOpen runs on the loop when a dialed socket is enrolled: send the
// upgrade request.
func (p *pool) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	s := c.Context().(*sock)
	s.gc = c
	s.ls = p.loopFor(c.EventLoop())
	// RST instead of FIN at teardown: no TIME_WAIT on the client side.
	_ = c.SetLinger(0)
	if p.spec.Plan.Raw {
		s.state.Store(stOpen)
		p.opened(s, time.Now().UnixNano(), false)
		return nil, gnet.None
	}
	s.state.Store(stHandshake)
	return p.upgradeRequest(s), gnet.None
}

func (p *pool) upgradeRequest(s *sock) []byte {
	req, accept := upgradeRequest(p.host)
	s.accept = accept
	return req
}

// upgradeRequest is a WebSocket upgrade request for host with a fresh
// key, and the Sec-WebSocket-Accept the gateway must answer.
func upgradeRequest(host string) ([]byte, [28]byte) {
	var raw [16]byte
	for i := range raw {
		raw[i] = byte(rand.Uint32())
	}
	key := base64.StdEncoding.EncodeToString(raw[:])
	b := make([]byte, 0, 160)
	b = append(b, "GET /ws HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "...)
	b = append(b, key...)
	return append(b, "\r\n\r\n"...), acceptFor(key)
}

func (p *pool) subscribeFrame(s *sock) []byte {
	return subscribeFrame(p.spec.Plan, int(s.idx), strconv.Itoa(int(s.idx)))
}

// subscribeFrame is socket idx's subscribe request under plan, a masked
// text frame with requestId reqID.
func subscribeFrame(plan subPlan, idx int, reqID string) []byte {
	b := make([]byte, 0, 128)
	b = append(b, `{"action":"subscribe","channels":["`...)
	b = append(b, plan.channelOf(idx)...)
	if plan.Pattern != "" {
		b = append(b, `","`...)
		b = append(b, plan.Pattern...)
	}
	b = append(b, `"],"requestId":"`...)
	b = append(b, reqID...)
	b = append(b, `"}`...)
	return clientFrame(ws.OpText, b)
}

// opened counts a socket that completed its subscribe (or, raw, its
// connect) and frees its handshake slot. Loop only.
func (p *pool) opened(s *sock, now int64, record bool) {
	p.subscribed.Add(1)
	p.open.Add(1)
	if s.rejoin {
		p.churnJoined.Add(1)
	}
	p.back(s, now)
	if record {
		recordUS(s.ls.conn, (now-s.started)/1000)
	}
	<-p.sem
}

// OnTraffic reads the handshake response and then frames. Loop only.
func (p *pool) OnTraffic(c gnet.Conn) gnet.Action {
	s := c.Context().(*sock)
	ls := s.ls
	buf, _ := c.Peek(-1)
	now := time.Now().UnixNano()
	off := 0
	action := gnet.None

	ls.mu.Lock()
	ls.Reads++
	if s.state.Load() == stHandshake {
		end := bytes.Index(buf, crlfcrlf)
		if end < 0 {
			ls.mu.Unlock()
			if len(buf) > 16<<10 {
				return gnet.Close
			}
			return gnet.None
		}
		status, ok := checkUpgrade(buf[:end+4], s.accept[:])
		if !ok {
			if status == 503 {
				ls.Refused503++
				if hasHeader(buf[:end+4], "retry-after") {
					ls.RetryAfter++
				}
			}
			ls.mu.Unlock()
			s.why = "upgrade refused: HTTP " + strconv.Itoa(status) // counted by OnClose
			return gnet.Close
		}
		off = end + 4
		s.state.Store(stSubscribing)
		p.handshaked.Add(1)
		_, _ = c.Write(p.subscribeFrame(s))
	}
	for off < len(buf) && action == gnet.None {
		op, _, payload, n, err := nextFrame(buf[off:])
		if err != nil {
			ls.BadFrames++
			action = gnet.Close
			break
		}
		if n == 0 {
			break
		}
		off += n
		ls.Frames++
		ls.Bytes += int64(n)
		switch op {
		case ws.OpText:
			if isData(payload) {
				ls.Data++
				seq, pat, t, ok := scanData(payload)
				if !ok {
					ls.BadFrames++
					continue
				}
				k := 0
				if pat {
					k = 1
				}
				last := s.last[k]
				if s.fresh[k] {
					// The first seq of the stream since a reconnect to the
					// same gateway: a jump is what was lost while down,
					// a lower one a stream that began again.
					s.fresh[k] = false
					if seq <= last {
						ls.SeqResets++
						last = 0
					}
				}
				if last != 0 {
					if seq > last+1 {
						ls.Gaps += int64(seq - last - 1)
					} else if seq <= last {
						ls.Dups++
						continue
					}
				}
				s.last[k] = seq
				if t > 0 {
					recordUS(ls.lat, (now-t)/1000)
				}
				continue
			}
			if bytes.HasPrefix(payload, subscribedPfx) {
				ls.Acks++
				if !p.spec.Plan.Durable && s.state.CompareAndSwap(stSubscribing, stOpen) {
					p.opened(s, now, true)
				}
				continue
			}
			if bytes.HasPrefix(payload, replayedPfx) {
				if p.spec.Plan.Durable && s.state.CompareAndSwap(stSubscribing, stOpen) {
					p.opened(s, now, true)
				}
				continue
			}
			if code := errorCode(payload); code != "" {
				ls.errCodes[code]++
				if s.state.Load() == stSubscribing {
					// The subscribe was refused: close, OnClose
					// counts it as failed.
					s.why = "subscribe refused: " + code
					action = gnet.Close
				}
			}
		case ws.OpPing:
			ls.Pings++
			_, _ = c.Write(clientFrame(ws.OpPong, payload))
		case ws.OpClose:
			code := 1005
			if len(payload) >= 2 {
				code = int(payload[0])<<8 | int(payload[1])
			}
			ls.closeCodes[code]++
			if s.state.Load() != stLeaving {
				_, _ = c.Write(p.closeFrame)
			}
			action = gnet.Close
		case ws.OpBinary, ws.OpContinuation:
			ls.BadFrames++
		}
	}
	ls.mu.Unlock()
	if off > 0 {
		_, _ = c.Discard(off)
	}
	return action
}

// OnClose accounts for the socket; a churned socket is dialed again.
// Loop only; it may run inside a Write, so it takes no loop lock.
func (p *pool) OnClose(c gnet.Conn, err error) gnet.Action {
	s, ok := c.Context().(*sock)
	if !ok {
		return gnet.None
	}
	switch prev := s.state.Swap(stClosed); prev {
	case stOpen:
		p.open.Add(-1)
		switch {
		case p.reconnects():
			p.lost(s, time.Now().UnixNano())
		case !p.stopping.Load():
			p.unexpected.Add(1)
		}
	case stLeaving:
		p.open.Add(-1)
		p.churnLeft.Add(1)
		if !p.stopping.Load() {
			p.dialQ <- s.idx // come back
		}
	case stHandshake, stSubscribing:
		kind := "closed during handshake"
		switch {
		case s.timeout.Load():
			kind = "handshake timeout"
		case s.why != "":
			kind = s.why
		case prev == stSubscribing:
			kind = "closed during subscribe"
		}
		switch {
		case p.reconnects():
			p.failedAttempt(s, kind, time.Now().UnixNano())
		case !p.stopping.Load():
			p.fail(kind, err)
		}
		<-p.sem
	}
	return gnet.None
}

// churn makes rate sockets per second leave (close handshake) and come
// back (dial, upgrade, subscribe), for d.
func (p *pool) churn(rate float64, d time.Duration) {
	if rate <= 0 || d <= 0 {
		return
	}
	p.churning.Store(true)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer p.churning.Store(false)
		start := time.Now()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		var done int64
		cursor := 0
		for {
			select {
			case <-p.closed:
				return
			case now := <-t.C:
				el := now.Sub(start)
				if el >= d {
					return
				}
				due := int64(el.Seconds()*rate) - done
				for ; due > 0; due-- {
					s := p.nextOpen(&cursor)
					if s == nil {
						break
					}
					atomic.StoreInt64(&s.started, now.UnixNano())
					_ = s.gc.AsyncWrite(p.closeFrame, nil)
					done++
				}
			}
		}
	}()
}

// nextOpen finds the next open socket after *cursor and marks it leaving.
func (p *pool) nextOpen(cursor *int) *sock {
	n := len(p.socks)
	for range n {
		i := *cursor % n
		*cursor = i + 1
		if s := p.socks[i].Load(); s != nil && s.state.CompareAndSwap(stOpen, stLeaving) {
			return s
		}
	}
	return nil
}

// stats copies the counters and takes the histograms recorded since the
// last call.
func (p *pool) stats() poolStats {
	st := poolStats{
		Target:      int64(p.spec.Hi - p.spec.Lo),
		Dialed:      p.dialed.Load(),
		Handshaked:  p.handshaked.Load(),
		Subscribed:  p.subscribed.Load(),
		Open:        p.open.Load(),
		Failed:      p.failed.Load(),
		Unexpected:  p.unexpected.Load(),
		DialStop:    p.stopDial.Load(),
		ChurnLeft:   p.churnLeft.Load(),
		ChurnJoined: p.churnJoined.Load(),
		LostOpen:    p.lostOpen.Load(),
		Retried:     p.retried.Load(),
		Peak:        poolPeaks{MaxAttempt: p.maxAttempt.Load(), LastBack: p.lastBack.Load()},
		ErrCodes:    map[string]int64{},
		CloseCodes:  map[int]int64{},
		CPUNanos:    selfCPU(),
		RSS:         rssOf(0),
	}
	p.mu.Lock()
	st.FailKinds = make(map[string]int64, len(p.failKinds))
	for k, v := range p.failKinds {
		st.FailKinds[k] = v
	}
	st.Limits = append([]string(nil), p.limits...)
	if len(p.retryKinds) > 0 {
		st.RetryKinds = make(map[string]int64, len(p.retryKinds))
		for k, v := range p.retryKinds {
			st.RetryKinds[k] = v
		}
	}
	p.mu.Unlock()
	p.loopsMu.Lock()
	loops := append([]*loopStats(nil), p.loops...)
	p.loopsMu.Unlock()
	for _, l := range loops {
		l.mu.Lock()
		st.frameCounts.add(l.frameCounts)
		for k, v := range l.errCodes {
			st.ErrCodes[k] += v
		}
		for k, v := range l.closeCodes {
			st.CloseCodes[k] += v
		}
		st.Lat = appendSparse(st.Lat, takeSparse(l.lat))
		st.Conn = appendSparse(st.Conn, takeSparse(l.conn))
		st.Outage = appendSparse(st.Outage, takeSparse(l.outage))
		st.Back = appendSparse(st.Back, takeSparse(l.back))
		l.mu.Unlock()
	}
	return st
}

// close stops dialing and closes every socket (RST, see OnOpen).
func (p *pool) close() poolStats {
	p.stopping.Store(true)
	close(p.closed)
	p.wg.Wait()
	st := p.stats()
	_ = p.cli.Stop()
	return st
}

// selfCPU is this process's user+system CPU time in nanoseconds.
func selfCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// quietLogger keeps gnet's log lines off stdout, which carries the
// worker's reports; warnings and errors go to stderr.
type quietLogger struct{}

func (quietLogger) Debugf(string, ...any) {}
func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Warnf(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "gnet client: "+f+"\n", a...)
}
func (quietLogger) Errorf(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "gnet client: "+f+"\n", a...)
}
func (quietLogger) Fatalf(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "gnet client: "+f+"\n", a...)
}
