package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/sync/errgroup"

	"github.com/wsgw/gateway/fanout/redistest"
	"github.com/wsgw/gateway/server/servertest"
)

// buildGateway compiles this command into a temporary directory.
func buildGateway(tb testing.TB) string {
	tb.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		tb.Fatalf("the go command is needed to build the gateway: %v", err)
	}
	bin := filepath.Join(tb.TempDir(), "gateway")
	out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		tb.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// gatewayProc is the gateway binary running as a child process.
type gatewayProc struct {
	cmd    *exec.Cmd
	addr   string
	exited chan struct{}
	err    error // cmd.Wait's; read after exited

	mu  sync.Mutex
	log []string
}

// startGatewayProc runs bin with env (on top of PATH and HOME only) and
// returns once it logged its listening address. A cleanup kills it if the
// test did not stop it.
func startGatewayProc(tb testing.TB, bin string, env ...string) *gatewayProc {
	tb.Helper()
	p := &gatewayProc{cmd: exec.Command(bin), exited: make(chan struct{})}
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "LOG_FORMAT=json"}, env...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		tb.Fatalf("start gateway: %v", err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log = append(p.log, line)
			p.mu.Unlock()
			var rec struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "gateway listening" {
				addr <- rec.Addr
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	tb.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	select {
	case p.addr = <-addr:
	case <-p.exited:
		tb.Fatalf("gateway exited at start: %v\n%s", p.err, p.logTail())
	case <-time.After(20 * time.Second):
		tb.Fatalf("gateway did not log its address\n%s", p.logTail())
	}
	return p
}

func (p *gatewayProc) logTail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.log[max(0, len(p.log)-30):], "\n")
}

// waitHealthy waits for /health to answer 200 (the Redis link is up).
func (p *gatewayProc) waitHealthy(tb testing.TB) {
	tb.Helper()
	servertest.WaitFor(tb, 10*time.Second, "/health 200", func() bool {
		resp, err := http.Get("http://" + p.addr + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

func (p *gatewayProc) logged(msg string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.ContainsFunc(p.log, func(l string) bool { return strings.Contains(l, `"msg":"`+msg+`"`) })
}

// closeResult is how one client's connection ended.
type closeResult struct {
	at     time.Time
	status websocket.StatusCode
	data   int // data messages read before the close
	err    error
}

// TestSignalShutdown runs the binary with connected clients and signals
// it: every client gets what was already queued for it and then close
// 1001, the closes are spread over the first half of SHUTDOWN_TIMEOUT, new
// upgrades are refused meanwhile, the streams are unsubscribed upstream,
// and the process exits 0 within SHUTDOWN_TIMEOUT.
func TestSignalShutdown(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	const (
		shutdownTimeout = 4 * time.Second
		channels        = 10
		dialers         = 50
	)
	bin := buildGateway(t)
	tests := []struct {
		name      string
		sig       syscall.Signal
		clients   int
		closeRate int // SHUTDOWN_CLOSE_RATE
		window    time.Duration
	}{
		// Paced over half the timeout whatever their number.
		{"SIGTERM with 1000 clients", syscall.SIGTERM, 1000, 0, shutdownTimeout / 2},
		// Paced at 2,000 a second: over 0.5 s, not the 2 s half.
		{"SIGTERM at a close rate", syscall.SIGTERM, 1000, 2000, 500 * time.Millisecond},
		{"SIGINT", syscall.SIGINT, 20, 0, shutdownTimeout / 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := redistest.Start(t)
			p := startGatewayProc(t, bin,
				"REDIS_HOST="+rs.Host(), "REDIS_PORT="+strconv.Itoa(rs.Port()),
				"REDIS_WS_GATEWAY_HOST=127.0.0.1", "REDIS_WS_GATEWAY_PORT=0",
				"EVENT_LOOPS=2", "SHUTDOWN_TIMEOUT="+shutdownTimeout.String(),
				"SHUTDOWN_CLOSE_RATE="+strconv.Itoa(tt.closeRate))
			url := "ws://" + p.addr + "/ws"
			p.waitHealthy(t)

			conns := make([]*websocket.Conn, tt.clients)
			t.Cleanup(func() {
				for _, c := range conns {
					if c != nil {
						_ = c.CloseNow()
					}
				}
			})
			if err := parallel(tt.clients, dialers, func(i int) error {
				c, err := dialSubscribe(url, "market:tick:"+strconv.Itoa(i%channels))
				conns[i] = c
				return err
			}); err != nil {
				t.Fatal(err)
			}
			mon := rs.Monitor(t)
			results := make([]closeResult, tt.clients)
			var wg sync.WaitGroup
			firstClose := make(chan struct{})
			var firstOnce sync.Once
			for i, c := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					defer cancel()
					for {
						_, p, err := c.Read(ctx)
						if err != nil {
							r := &results[i]
							r.at, r.status, r.err = time.Now(), websocket.CloseStatus(err), err
							firstOnce.Do(func() { close(firstClose) })
							return
						}
						if strings.HasPrefix(string(p), `{"type":"data"`) {
							results[i].data++
						}
					}
				}()
			}

			// One message per channel, received by the gateway (so in
			// the rings or already written) before the signal.
			for ch := range channels {
				if n := rs.Publish(t, "market:tick:"+strconv.Itoa(ch), `{"last":true}`); n != 1 {
					t.Fatalf("PUBLISH reached %d subscribers, want 1 (the gateway)", n)
				}
			}
			servertest.WaitFor(t, 10*time.Second, "the gateway to receive the messages", func() bool {
				return statsReceived(p.addr) >= channels
			})

			signalled := time.Now()
			if err := p.cmd.Process.Signal(tt.sig); err != nil {
				t.Fatal(err)
			}
			select {
			case <-firstClose:
			case <-time.After(10 * time.Second):
				t.Fatal("no client was closed")
			}
			// Connections are still open (the closes are paced over
			// two seconds), so the listener is too: the upgrade must
			// be answered, and with 503.
			switch c, resp, err := dialResp(url); {
			case err == nil:
				_ = c.CloseNow()
				t.Fatal("an upgrade was accepted during the shutdown")
			case resp == nil:
				t.Fatalf("upgrade during the shutdown: no HTTP answer (%v), want 503", err)
			case resp.StatusCode != http.StatusServiceUnavailable:
				t.Fatalf("upgrade during the shutdown: HTTP %d, want 503", resp.StatusCode)
			case resp.Header.Get("Retry-After") != "1":
				t.Fatalf("upgrade during the shutdown: 503 with Retry-After %q, want 1", resp.Header.Get("Retry-After"))
			}

			select {
			case <-p.exited:
			case <-time.After(shutdownTimeout + 10*time.Second):
				t.Fatalf("still running %v after the signal\n%s", time.Since(signalled), p.logTail())
			}
			took := time.Since(signalled)
			wg.Wait()
			if code := p.cmd.ProcessState.ExitCode(); code != 0 {
				t.Fatalf("exit code %d, want 0\n%s", code, p.logTail())
			}
			// The close handshakes, the engine stop and the upstream
			// unsubscribe share SHUTDOWN_TIMEOUT; the margin is for the
			// process to exit.
			if took > shutdownTimeout+2*time.Second {
				t.Errorf("exited %v after the signal, want within SHUTDOWN_TIMEOUT (%v) and a margin", took, shutdownTimeout)
			}
			first, last := results[0].at, results[0].at
			for i, r := range results {
				if r.status != websocket.StatusGoingAway {
					t.Fatalf("client %d: closed with %v (%v), want 1001", i, r.status, r.err)
				}
				if r.data != 1 {
					t.Fatalf("client %d: %d data messages before the close, want the 1 queued before the signal", i, r.data)
				}
				first, last = minTime(first, r.at), maxTime(last, r.at)
			}
			spread := last.Sub(first)
			t.Logf("%d clients closed with 1001 over %v (pacing window %v); exit %v after the signal",
				tt.clients, spread.Round(time.Millisecond), tt.window, took.Round(time.Millisecond))
			if tt.clients >= 100 && spread < tt.window/2 {
				t.Errorf("closes spread over %v only: want them paced over about %v", spread, tt.window)
			}
			// The rate shortens the window (a bound with room for a
			// loaded machine, well below the half timeout it replaces).
			if tt.closeRate > 0 && spread > tt.window*12/5 {
				t.Errorf("closes spread over %v: want them paced over about %v at %d/s", spread, tt.window, tt.closeRate)
			}
			for ch := range channels {
				name := "market:tick:" + strconv.Itoa(ch)
				// MONITOR's feed is read on its own goroutine: what
				// Redis saw before the exit may not be read yet.
				servertest.WaitFor(t, 5*time.Second, "the UNSUBSCRIBE of "+name+" before exit", func() bool { return mon.Saw("UNSUBSCRIBE", name) })
				if got := rs.NumSub(t, name); got != 0 {
					t.Errorf("PUBSUB NUMSUB %s after exit: %d", name, got)
				}
			}
			if got := rs.NumPat(t); got != 0 {
				t.Errorf("PUBSUB NUMPAT after exit: %d", got)
			}
			if !p.logged("stopped") || p.logged("shutdown") {
				t.Errorf("shutdown log:\n%s", p.logTail())
			}
		})
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// parallel runs fn(i) for i in [0, n) on workers goroutines and returns
// the first error.
func parallel(n, workers int, fn func(i int) error) error {
	var eg errgroup.Group
	eg.SetLimit(workers)
	for i := range n {
		eg.Go(func() error {
			if err := fn(i); err != nil {
				return fmt.Errorf("client %d: %w", i, err)
			}
			return nil
		})
	}
	return eg.Wait()
}

func dialResp(url string) (*websocket.Conn, *http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return websocket.Dial(ctx, url, nil)
}

// dialSubscribe connects, subscribes to channel and waits for the ack.
func dialSubscribe(url, channel string) (*websocket.Conn, error) {
	c, _, err := dialResp(url)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"action":"subscribe","channels":["`+channel+`"]}`)); err != nil {
		return c, err
	}
	_, p, err := c.Read(ctx)
	if err != nil {
		return c, err
	}
	if !strings.HasPrefix(string(p), `{"type":"subscribed"`) {
		return c, errors.New("no subscribe ack: " + string(p))
	}
	return c, nil
}

// statsReceived is messages_received from /stats, or 0 on any error.
func statsReceived(addr string) uint64 {
	resp, err := http.Get("http://" + addr + "/stats")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var st struct {
		Received uint64 `json:"messages_received"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&st)
	return st.Received
}

// TestShutdownWithWedgedRedis: once Redis stops answering (CLIENT PAUSE:
// the connections stay open, no command gets a reply), a signalled
// gateway still exits within SHUTDOWN_TIMEOUT: the upstream unsubscribe
// gets what is left of it, and the pub/sub connection is closed rather
// than handed back to rueidis, whose clean-up would wait for Redis. The
// binary runs with ADMIN_ADDR= (empty), which disables the admin listener.
func TestShutdownWithWedgedRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	const shutdownTimeout = time.Second
	bin := buildGateway(t)
	rs := redistest.Start(t)
	p := startGatewayProc(t, bin,
		"REDIS_HOST="+rs.Host(), "REDIS_PORT="+strconv.Itoa(rs.Port()),
		"REDIS_WS_GATEWAY_HOST=127.0.0.1", "REDIS_WS_GATEWAY_PORT=0",
		"SHUTDOWN_TIMEOUT="+shutdownTimeout.String(), "ADMIN_ADDR=")
	p.waitHealthy(t)
	c, err := dialSubscribe("ws://"+p.addr+"/ws", "market:tick:wedge")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	go func() {
		// Reading answers the gateway's close frame.
		for {
			if _, _, err := c.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	if got := rs.Do(t, "CLIENT", "PAUSE", "60000", "ALL"); got != "OK" {
		t.Fatalf("CLIENT PAUSE: %q", got)
	}

	signalled := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(shutdownTimeout + 30*time.Second):
		t.Fatalf("still running %v after the signal\n%s", time.Since(signalled), p.logTail())
	}
	took := time.Since(signalled)
	t.Logf("exited %v after the signal (SHUTDOWN_TIMEOUT %v)", took.Round(time.Millisecond), shutdownTimeout)
	// The margin is for the process to exit once its deadline passed.
	if took > shutdownTimeout+2*time.Second {
		t.Errorf("exited %v after the signal, want within SHUTDOWN_TIMEOUT (%v)\n%s", took, shutdownTimeout, p.logTail())
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code %d, want 0\n%s", code, p.logTail())
	}
	if p.logged("admin listening") {
		t.Errorf("ADMIN_ADDR= did not disable the admin listener\n%s", p.logTail())
	}
}
