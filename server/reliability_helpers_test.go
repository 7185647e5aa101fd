package server_test

import (
	"bytes"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgw/gateway/server/servertest"
)

// rawSubscribe subscribes a raw client and waits for the ack.
func rawSubscribe(tb testing.TB, rc *servertest.Conn, channels ...string) {
	tb.Helper()
	rc.SendText(tb, `{"action":"subscribe","channels":["`+strings.Join(channels, `","`)+`"]}`)
	rc.ExpectText(tb, `"type":"subscribed"`)
}

// seqOf extracts "seq" from a data frame's JSON without decoding the rest
// (the paused reader reads thousands of 2 KB frames); 0 when absent.
func seqOf(p []byte) uint64 {
	i := bytes.Index(p, []byte(`"seq":`))
	if i < 0 {
		return 0
	}
	p = p[i+len(`"seq":`):]
	j := 0
	for j < len(p) && p[j] >= '0' && p[j] <= '9' {
		j++
	}
	n, _ := strconv.ParseUint(string(p[:j]), 10, 64)
	return n
}

// heapInuse is the gateway process's live heap after a full collection.
// The gateway runs in-process in these tests, so this (not RSS) is what
// bounded memory is checked against; it includes the test's own clients.
func heapInuse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// wedgeProxy is a TCP proxy between the gateway and Redis that can wedge
// the pub/sub link: it stops forwarding Redis → gateway bytes on the
// connections that subscribed, while keeping both sockets open. That is
// what a subscriber stranded on a live socket (after a Sentinel failover,
// say) looks like from the gateway: TCP up, no messages.
type wedgeProxy struct {
	ln      net.Listener
	backend string

	mu    sync.Mutex
	pairs []*proxyPair
	wg    sync.WaitGroup
}

type proxyPair struct {
	front, back net.Conn
	pubsub      atomic.Bool // the gateway sent a SUBSCRIBE on it
	wedged      atomic.Bool
	closed      chan struct{}
	once        sync.Once
}

func (p *proxyPair) close() {
	p.once.Do(func() {
		close(p.closed)
		_ = p.front.Close()
		_ = p.back.Close()
	})
}

func startWedgeProxy(tb testing.TB, backend string) *wedgeProxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("proxy listen: %v", err)
	}
	p := &wedgeProxy{ln: ln, backend: backend}
	p.wg.Add(1)
	go p.accept()
	tb.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		for _, pr := range p.pairs {
			pr.close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *wedgeProxy) Addr() string { return p.ln.Addr().String() }

func (p *wedgeProxy) accept() {
	defer p.wg.Done()
	for {
		front, err := p.ln.Accept()
		if err != nil {
			return
		}
		back, err := net.DialTimeout("tcp", p.backend, 5*time.Second)
		if err != nil {
			_ = front.Close()
			continue
		}
		pr := &proxyPair{front: front, back: back, closed: make(chan struct{})}
		p.mu.Lock()
		p.pairs = append(p.pairs, pr)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.upstream(pr)
		go p.downstream(pr)
	}
}

// upstream copies gateway → Redis and notes a connection that subscribes.
func (p *wedgeProxy) upstream(pr *proxyPair) {
	defer p.wg.Done()
	defer pr.close()
	buf := make([]byte, 32<<10)
	var tail []byte // the end of the previous read, for a word split in two
	for {
		n, err := pr.front.Read(buf)
		if n > 0 {
			seen := append(tail, buf[:n]...)
			if bytes.Contains(bytes.ToUpper(seen), []byte("SUBSCRIBE")) {
				pr.pubsub.Store(true)
			}
			tail = append(tail[:0], seen[max(0, len(seen)-16):]...)
			if _, werr := pr.back.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// downstream copies Redis → gateway until the pair is wedged; then it
// holds whatever it read and forwards nothing more, without closing.
func (p *wedgeProxy) downstream(pr *proxyPair) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := pr.back.Read(buf)
		if pr.wedged.Load() {
			<-pr.closed
			return
		}
		if n > 0 {
			if _, werr := pr.front.Write(buf[:n]); werr != nil {
				pr.close()
				return
			}
		}
		if err != nil {
			pr.close()
			return
		}
	}
}

// wedgePubSub wedges every open connection that has subscribed and
// returns how many. Connections opened later are not wedged, so the
// gateway can recover by reconnecting, as it would to a new master.
func (p *wedgeProxy) wedgePubSub() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, pr := range p.pairs {
		select {
		case <-pr.closed:
			continue
		default:
		}
		if pr.pubsub.Load() {
			pr.wedged.Store(true)
			n++
		}
	}
	return n
}

// numWedgedOpen is the number of wedged pairs the gateway has not closed.
func (p *wedgeProxy) numWedgedOpen() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, pr := range p.pairs {
		select {
		case <-pr.closed:
		default:
			if pr.wedged.Load() {
				n++
			}
		}
	}
	return n
}

// health is the status code of GET /health.
func (g *gateway) health(tb testing.TB) int {
	tb.Helper()
	code, _ := g.get(tb, "/health")
	return code
}
