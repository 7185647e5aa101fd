package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Processes the harness starts: a redis-server on a free port and the
// gateway under test, on another free port. Everything listens on and
// talks to 127.0.0.1 only.

type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and waits up to grace, then kills.
func (p *proc) stop(grace time.Duration) {
	if p == nil || !p.alive() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// logTail returns the last lines of the process's log.
func (p *proc) logTail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func startProc(name, dir string, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group: a Ctrl-C on the harness is handled by the
	// harness, which stops its children in order; and killed if the
	// harness dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.exited)
	}()
	return p, nil
}

// freePort returns a port that was free on 127.0.0.1 a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startRedis starts redis-server without persistence on a free port and
// waits for PING.
func startRedis(bin, dir string) (*proc, string, error) {
	if bin == "" {
		bin = "redis-server"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, "", fmt.Errorf("redis-server not found (install it, e.g. apt-get install redis-server, or pass -redis host:port): %w", err)
	}
	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			return nil, "", err
		}
		p, err := startProc("redis", dir, path, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir, "--protected-mode", "no")
		if err != nil {
			return nil, "", err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if lastErr = waitRedis(addr, p, 10*time.Second); lastErr == nil {
			return p, addr, nil
		}
		p.stop(time.Second)
	}
	return nil, "", fmt.Errorf("redis-server did not start: %w", lastErr)
}

func waitRedis(addr string, p *proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p != nil && !p.alive() {
			return fmt.Errorf("exited: %s", p.logTail(5))
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			_ = c.SetDeadline(time.Now().Add(time.Second))
			_, _ = c.Write([]byte("PING\r\n"))
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.HasPrefix(line, "+PONG") {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errors.New("no PONG within " + timeout.String())
}

// buildGateway returns an executable for spec: an executable file as is,
// a Go package directory (like ./cmd/gateway) built into dir. A missing
// file (like ./bin/gateway before make build) is built from ./cmd/gateway
// when the harness runs at the repository's root.
func buildGateway(spec, dir string) (string, error) {
	st, err := os.Stat(spec)
	if errors.Is(err, os.ErrNotExist) {
		if pkg, perr := os.Stat("cmd/gateway"); perr == nil && pkg.IsDir() {
			fmt.Fprintf(os.Stderr, "building ./cmd/gateway into %s\n", spec)
			cmd := exec.Command("go", "build", "-o", spec, "./cmd/gateway")
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			if err := cmd.Run(); err != nil {
				return "", fmt.Errorf("building ./cmd/gateway into %s: %w", spec, err)
			}
			return filepath.Abs(spec)
		}
	}
	if err != nil {
		return "", fmt.Errorf("-gateway %s: %w", spec, err)
	}
	if !st.IsDir() {
		if st.Mode()&0o111 == 0 {
			return "", fmt.Errorf("-gateway %s: not executable", spec)
		}
		return filepath.Abs(spec)
	}
	out := filepath.Join(dir, "gateway-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = spec
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building %s: %w", spec, err)
	}
	return out, nil
}

// gatewayFlags lists the flags bin accepts (from its -help), so that
// binaries of different versions can be started alike (-compare).
func gatewayFlags(bin string) map[string]bool {
	out, _ := exec.Command(bin, "-help").CombinedOutput()
	flags := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "-") {
			flags[strings.TrimLeft(strings.Fields(t)[0], "-")] = true
		}
	}
	return flags
}

// gwStart says how to start a gateway.
type gwStart struct {
	bin, dir, name string
	redisAddr      string
	eventLoops     int
	extra          []string // -gateway-args, last so that they win
	// ownPacing keeps the gateway's own MAX_CONNECTIONS_PER_SECOND and
	// SHUTDOWN_TIMEOUT (storm: they are what is measured).
	ownPacing bool
}

// startGateway runs a gateway on a free port against s.redisAddr and
// waits until /health says Redis is up. Guardrails that would limit the
// load are turned off explicitly (the environment may set them); the
// admin listener, when the binary has one, goes on another free port.
func startGateway(s gwStart) (p *proc, addr, admin string, err error) {
	rhost, rport, err := net.SplitHostPort(s.redisAddr)
	if err != nil {
		return nil, "", "", err
	}
	has := gatewayFlags(s.bin)
	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			return nil, "", "", err
		}
		args := []string{
			"-host", "127.0.0.1", "-port", strconv.Itoa(port),
			"-redis-host", rhost, "-redis-port", rport,
			"-log-level", "warn",
		}
		off := []string{"max-connections", "max-connections-per-ip", "max-connections-per-second"}
		if s.ownPacing {
			off = off[:2]
		}
		for _, f := range off {
			if has[f] {
				args = append(args, "-"+f, "0")
			}
		}
		if has["shutdown-timeout"] && !s.ownPacing {
			args = append(args, "-shutdown-timeout", "2s")
		}
		admin = ""
		if has["admin-addr"] {
			ap, err := freePort()
			if err != nil {
				return nil, "", "", err
			}
			admin = net.JoinHostPort("127.0.0.1", strconv.Itoa(ap))
			args = append(args, "-admin-addr", admin)
		}
		if s.eventLoops > 0 {
			args = append(args, "-event-loops", strconv.Itoa(s.eventLoops))
		}
		args = append(args, s.extra...)
		p, err := startProc(s.name, s.dir, s.bin, args...)
		if err != nil {
			return nil, "", "", err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if lastErr = waitHealthy(addr, p, 15*time.Second); lastErr == nil {
			return p, addr, admin, nil
		}
		p.stop(2 * time.Second)
		lastErr = fmt.Errorf("%w\n%s", lastErr, p.logTail(10))
	}
	return nil, "", "", fmt.Errorf("gateway did not become healthy: %w", lastErr)
}

// fetchProfile saves a pprof profile from the gateway's admin listener:
// path is e.g. /debug/pprof/profile?seconds=10 or /debug/pprof/heap.
func fetchProfile(admin, path, out string, timeout time.Duration) error {
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + admin + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", path, resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(out, b, 0o644)
}

var httpClient = &http.Client{
	Timeout:   3 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true},
}

func waitHealthy(addr string, p *proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if p != nil && !p.alive() {
			return errors.New("gateway exited")
		}
		resp, err := httpClient.Get("http://" + addr + "/health")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("/health: %s", resp.Status)
		} else {
			last = err
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not healthy within %s: %v", timeout, last)
}

// gwStats is the part of the gateway's /stats the harness uses.
type gwStats struct {
	Connections int64  `json:"connections"`
	Streams     int64  `json:"streams"`
	Received    uint64 `json:"messages_received"`
	Delivered   uint64 `json:"messages_delivered"`
	Dropped     uint64 `json:"messages_dropped"`
	Redis       struct {
		Connected  bool   `json:"connected"`
		Reconnects uint64 `json:"reconnects"`
	} `json:"redis"`
	Version string `json:"version"`
}

func fetchStats(addr string) (*gwStats, error) {
	resp, err := httpClient.Get("http://" + addr + "/stats")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/stats: %s", resp.Status)
	}
	var st gwStats
	if err := json.Unmarshal(bytes.TrimSpace(b), &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// loopbackOnly checks that addr is in 127.0.0.0/8 (the harness sends
// traffic nowhere else).
func loopbackOnly(flagName, addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s %q: %w", flagName, addr, err)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.To4() == nil || ip.To4()[0] != 127 {
		return fmt.Errorf("%s %q: only 127.0.0.0/8 addresses are allowed", flagName, addr)
	}
	return nil
}
