package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgw/gateway/fanout/redistest"
	"github.com/wsgw/gateway/server/servertest"
)

// haproxyConfig is a TCP-mode HAProxy in front of backends, sending
// each the PROXY protocol v2 header (and its health checks a LOCAL
// one). maxconn 8000 fits the 20,000-file limit: HAProxy holds two
// descriptors per client. A health check has 2 s to be answered and a
// server is down after two failures: a killed gateway refuses the check
// at once, but a live one on a loaded machine may answer late, and with
// every server marked down HAProxy closes new clients unanswered.
func haproxyConfig(front, sock string, backends []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `global
    maxconn 8000
    stats socket %s mode 600 level admin
defaults
    mode tcp
    maxconn 8000
    timeout connect 5s
    timeout check 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    retries 3
    option redispatch
frontend ws
    bind %s
    default_backend gateways
backend gateways
    balance leastconn
    option httpchk GET /health
    http-check expect status 200
    default-server send-proxy-v2 check check-send-proxy inter 200ms fall 2 rise 1
`, sock, front)
	for i, a := range backends {
		fmt.Fprintf(&b, "    server g%d %s\n", i+1, a)
	}
	return b.String()
}

func lookHAProxy(tb testing.TB) string {
	tb.Helper()
	bin := os.Getenv("HAPROXY")
	if bin == "" {
		bin = "haproxy"
	}
	p, err := exec.LookPath(bin)
	if err != nil {
		tb.Fatal("haproxy not found: run `make test`, which installs Debian's haproxy (or set $HAPROXY)")
	}
	return p
}

// checkHAProxyConfig runs haproxy -c on the file.
func checkHAProxyConfig(tb testing.TB, file string) {
	tb.Helper()
	out, err := exec.Command(lookHAProxy(tb), "-c", "-f", file).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Configuration file is valid") {
		tb.Fatalf("haproxy -c -f %s: %v\n%s", file, err, out)
	}
}

// startHAProxy runs HAProxy in front of backends (checked with haproxy
// -c first) and returns its address and the function that reads its
// servers' states, once it accepts connections and every backend is UP.
// A cleanup kills it.
func startHAProxy(tb testing.TB, backends []string) (addr string, states func() map[string]string) {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr = l.Addr().String()
	l.Close()
	dir := tb.TempDir()
	sock := filepath.Join(dir, "haproxy.sock")
	cfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(haproxyConfig(addr, sock, backends)), 0o600); err != nil {
		tb.Fatal(err)
	}
	checkHAProxyConfig(tb, cfg)
	log, err := os.Create(filepath.Join(dir, "haproxy.log"))
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(lookHAProxy(tb), "-db", "-f", cfg)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started, exited := make(chan error, 1), make(chan struct{})
	go func() {
		// Pdeathsig follows the forking thread: keep it for the
		// child's life.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
		close(exited)
	}()
	if err := <-started; err != nil {
		tb.Fatalf("start haproxy: %v", err)
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		log.Close()
	})
	states = func() map[string]string {
		c, err := net.DialTimeout("unix", sock, time.Second)
		if err != nil {
			return nil
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("show stat\n")); err != nil {
			return nil
		}
		out := map[string]string{}
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			// CSV: pxname, svname, ... field 17 is status.
			f := strings.Split(sc.Text(), ",")
			if len(f) > 17 && f[0] == "gateways" && strings.HasPrefix(f[1], "g") {
				out[f[1]] = f[17]
			}
		}
		return out
	}
	servertest.WaitFor(tb, 10*time.Second, "HAProxy to see every gateway UP", func() bool {
		st := states()
		if len(st) != len(backends) {
			return false
		}
		for _, s := range st {
			if s != "UP" {
				return false
			}
		}
		return true
	})
	return addr, states
}

// lbClient is one WebSocket client behind HAProxy, from its own loopback
// address, following one channel: it checks that seq and the
// publisher's counter rise by one, reconnects (once the test allows it)
// when its gateway goes away, and counts what it got since.
type lbClient struct {
	ip      string
	front   string
	channel string

	mu         sync.Mutex
	seq, val   int  // the last message's
	total      int  // messages received
	since      int  // messages since the (re)connection
	down       bool // from a lost connection to the first message after the new one
	reconnects int  // connections lost and made again
	err        error
	c          *websocket.Conn
}

func (c *lbClient) dial(ctx context.Context) error {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(c.ip)}, Timeout: 5 * time.Second}
	hc := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	ws, resp, err := websocket.Dial(ctx, "ws://"+c.front+"/ws", &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		if resp != nil {
			return fmt.Errorf("%w (HTTP %d)", err, resp.StatusCode)
		}
		return err
	}
	ws.SetReadLimit(1 << 20)
	if err := ws.Write(ctx, websocket.MessageText, []byte(`{"action":"subscribe","channels":["`+c.channel+`"]}`)); err != nil {
		ws.CloseNow()
		return err
	}
	_, p, err := ws.Read(ctx)
	if err != nil || !strings.HasPrefix(string(p), `{"type":"subscribed"`) {
		ws.CloseNow()
		return fmt.Errorf("no subscribe ack: %s %v", p, err)
	}
	c.mu.Lock()
	c.c = ws
	c.seq, c.since = 0, 0
	c.mu.Unlock()
	return nil
}

// run reads until ctx ends. A lost connection is an error unless
// mayReconnect says otherwise; then it dials again (through HAProxy,
// which sends it to a live gateway) and goes on, the seq starting anew.
func (c *lbClient) run(ctx context.Context, mayReconnect func() bool) {
	for {
		c.mu.Lock()
		ws := c.c
		c.mu.Unlock()
		_, p, err := ws.Read(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			ws.CloseNow()
			c.mu.Lock()
			c.down = true
			c.mu.Unlock()
			if !mayReconnect() {
				c.fail(fmt.Errorf("connection lost: %w", err))
				return
			}
			var derr error
			for try := 0; try < 100 && ctx.Err() == nil; try++ {
				if derr = c.dial(ctx); derr == nil {
					break
				}
				select {
				case <-ctx.Done():
				case <-time.After(50 * time.Millisecond):
				}
			}
			if derr != nil {
				c.fail(fmt.Errorf("reconnect: %w", derr))
				return
			}
			c.mu.Lock()
			c.reconnects++
			c.mu.Unlock()
			continue
		}
		var m struct {
			Type string          `json:"type"`
			Seq  int             `json:"seq"`
			Data json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(p, &m); err != nil || m.Type != "data" {
			c.fail(fmt.Errorf("unexpected frame %s", p))
			return
		}
		v, _ := strconv.Atoi(string(m.Data))
		c.mu.Lock()
		// The seq must rise by one (the gateway lost nothing) and so
		// must the publisher's counter (nothing was lost before it), but
		// for a value the publisher sent twice after a timeout.
		if c.seq != 0 && (m.Seq != c.seq+1 || (v != c.val+1 && v != c.val)) {
			c.mu.Unlock()
			c.fail(fmt.Errorf("seq %d value %d after seq %d value %d: a gap", m.Seq, v, c.seq, c.val))
			return
		}
		c.seq, c.val = m.Seq, v
		c.down = false
		c.since++
		c.total++
		c.mu.Unlock()
	}
}

func (c *lbClient) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = fmt.Errorf("client %s: %w", c.ip, err)
	}
}

// lbState is what a client received so far.
type lbState struct {
	total, since, reconnects int
	val                      int // the last message's publisher counter
	down                     bool
	err                      error
}

func (c *lbClient) state() lbState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return lbState{c.total, c.since, c.reconnects, c.val, c.down, c.err}
}

// TestBehindHAProxy: three gateways behind a real HAProxy in TCP mode
// with PROXY protocol v2. 3,000 clients from 1,000 loopback addresses
// all receive every message, each gateway subscribed once upstream; the
// per-address limit applies to each client's own address, not to
// HAProxy's; when one gateway is killed (SIGKILL), its clients reconnect
// through HAProxy to the others and resume, and the other clients see no
// gap.
func TestBehindHAProxy(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	const (
		clients  = 3000
		perIP    = 3 // clients per address, and MAX_CONNECTIONS_PER_IP
		channel  = "market:tick:LB"
		gateways = 3
	)
	bin := buildGateway(t)
	rs := redistest.Start(t)
	var gws []*gatewayProc
	var addrs []string
	for range gateways {
		p := startGatewayProc(t, bin, "REDIS_HOST="+rs.Host(), "REDIS_PORT="+strconv.Itoa(rs.Port()),
			"REDIS_WS_GATEWAY_HOST=127.0.0.1", "REDIS_WS_GATEWAY_PORT=0", "ADMIN_ADDR=",
			"TRUSTED_PROXIES=127.0.0.1/32", "MAX_CONNECTIONS_PER_IP="+strconv.Itoa(perIP), "EVENT_LOOPS=2")
		p.waitHealthy(t)
		gws = append(gws, p)
		addrs = append(addrs, p.addr)
	}
	front, states := startHAProxy(t, addrs)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cls := make([]*lbClient, clients)
	for i := range cls {
		n := i / perIP // address 127.1.x.y, perIP clients each
		cls[i] = &lbClient{ip: fmt.Sprintf("127.1.%d.%d", n/250, n%250+1), front: front, channel: channel}
	}
	// Each client reads from its connection as soon as it is made: the
	// gateway pings a silent one and closes it if it does not answer.
	var killed atomic.Bool
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	start := time.Now()
	if err := parallel(clients, 64, func(i int) error {
		dctx, dcancel := context.WithTimeout(ctx, 20*time.Second)
		defer dcancel()
		if err := cls[i].dial(dctx); err != nil {
			return err
		}
		wg.Add(1)
		go func() { defer wg.Done(); cls[i].run(ctx, killed.Load) }()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d clients connected through HAProxy in %v", clients, time.Since(start).Round(time.Millisecond))
	// Each gateway follows the channel once upstream, whatever its
	// number of clients.
	servertest.WaitFor(t, 10*time.Second, "one upstream subscription per gateway", func() bool { return rs.NumSub(t, channel) == gateways })
	if !gws[0].loggedWith("connection opened", `"remote":"127.1.`) {
		t.Fatalf("the gateway logs HAProxy's address, not the client's:\n%s", gws[0].logTail())
	}

	// The per-address limit counts the client's own address: one
	// address gets at most perIP connections on each gateway.
	var admitted, refused int
	var held []*websocket.Conn
	for range 3 * gateways * perIP {
		c := &lbClient{ip: "127.2.0.1", front: front, channel: channel}
		dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
		err := c.dial(dctx)
		dcancel()
		switch {
		case err == nil:
			admitted++
			held = append(held, c.c)
		case strings.Contains(err.Error(), "HTTP 503"):
			refused++
		default:
			t.Fatalf("dial from 127.2.0.1: %v", err)
		}
	}
	if admitted > gateways*perIP || refused < 2*gateways*perIP {
		t.Fatalf("one address: %d admitted, %d refused; want at most %d admitted", admitted, refused, gateways*perIP)
	}
	for _, ws := range held {
		ws.CloseNow()
	}

	// A steady publish; every client gets every message. The publisher
	// keeps at most window messages ahead of the slowest connected
	// client, so that the test's own 3,000 readers (slow under -race on
	// a shared machine) never fall behind far enough for a gateway to
	// drop messages or to close them for not answering its ping.
	const window = 5
	var published atomic.Int64
	var pubErr atomic.Value
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		pause := func(d time.Duration) {
			select {
			case <-ctx.Done():
			case <-time.After(d):
			}
		}
		for i := 1; ctx.Err() == nil; i++ {
			// A PUBLISH that timed out on this loaded machine may or
			// may not have reached Redis: send the same value again
			// (the clients take a repeated value for that), and give up
			// only if Redis stays unreachable.
			var err error
			for try := 0; try < 5 && ctx.Err() == nil; try++ {
				if _, err = rs.Exec("PUBLISH", channel, strconv.Itoa(i)); err == nil {
					break
				}
			}
			if err != nil {
				if ctx.Err() == nil {
					pubErr.Store(err)
				}
				return
			}
			published.Store(int64(i))
			deadline := time.Now().Add(60 * time.Second)
			for ctx.Err() == nil {
				slow := slices.IndexFunc(cls, func(c *lbClient) bool {
					s := c.state()
					return !s.down && s.err == nil && s.val < i-window
				})
				if slow < 0 {
					break
				}
				if time.Now().After(deadline) {
					s := cls[slow].state()
					pubErr.Store(fmt.Errorf("client %s stuck at message %d of %d (%d received)", cls[slow].ip, s.val, i, s.total))
					return
				}
				pause(10 * time.Millisecond)
			}
			pause(20 * time.Millisecond)
		}
	}()
	defer func() { cancel(); <-pubDone }()
	// waitAll waits for cond to hold for every client; on a timeout it
	// says how far the clients got.
	waitAll := func(what string, cond func(i int, s lbState) bool) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			behind, low, lowAt := 0, -1, 0
			for i, c := range cls {
				s := c.state()
				if s.err != nil {
					t.Fatal(s.err)
				}
				if !cond(i, s) {
					behind++
					if low < 0 || s.total < low {
						low, lowAt = s.total, i
					}
				}
			}
			if behind == 0 {
				return
			}
			if err, _ := pubErr.Load().(error); err != nil {
				t.Fatalf("publish: %v", err)
			}
			if time.Now().After(deadline) {
				s := cls[lowAt].state()
				t.Fatalf("timed out waiting for %s: %d clients not there; %d published; client %s has %d messages, %d since its %d reconnections",
					what, behind, published.Load(), cls[lowAt].ip, s.total, s.since, s.reconnects)
			}
			<-tick.C
		}
	}
	waitAll("every client to receive 20 messages", func(_ int, s lbState) bool { return s.total >= 20 })

	// SIGKILL of one gateway.
	victim := gws[0]
	before := make([]int, clients)
	for i, c := range cls {
		before[i] = c.state().total
	}
	killed.Store(true)
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-victim.exited
	servertest.WaitFor(t, 10*time.Second, "HAProxy to take the killed gateway out", func() bool { return states()["g1"] == "DOWN" })
	// Every client that lost its gateway reconnects and gets 20 more
	// messages; the others, 20 more without a gap.
	waitAll("the clients of the killed gateway to reconnect and resume, the others to go on", func(i int, s lbState) bool {
		if s.reconnects > 1 {
			t.Fatalf("client %s reconnected %d times", cls[i].ip, s.reconnects)
		}
		if s.reconnects == 1 {
			return s.since >= 20
		}
		return s.total-before[i] >= 20
	})
	onVictim := 0
	for _, c := range cls {
		if c.state().reconnects > 0 {
			onVictim++
		}
	}
	t.Logf("%d clients were on the killed gateway and reconnected", onVictim)
	if onVictim < clients/gateways/2 || onVictim > clients-clients/gateways {
		t.Fatalf("%d clients reconnected: the balance did not spread the clients", onVictim)
	}
	servertest.WaitFor(t, 10*time.Second, "one upstream subscription per live gateway", func() bool { return rs.NumSub(t, channel) == gateways-1 })
	cancel()
	wg.Wait()
	for _, c := range cls {
		if err := c.state().err; err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	}
}
