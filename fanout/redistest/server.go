package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

const (
	host          = "127.0.0.1"
	readyTimeout  = 10 * time.Second // INFO must answer within this
	exitTimeout   = 10 * time.Second // Kill/Stop must reap within this
	ioTimeout     = 5 * time.Second  // per Do/Exec round trip, and to connect
	pollInterval  = 5 * time.Millisecond
	startAttempts = 5 // fresh ports tried by Start on bind failure

	notFoundMsg = "redis-server not found: run `make test`, which installs Debian's redis-server"
)

// errAddrInUse marks a start that failed because the port was taken.
var errAddrInUse = errors.New("address already in use")

// Option configures Start.
type Option func(*config)

type config struct {
	extra []string
	tls   *tlsConfig // WithTLS
}

// WithArgs appends extra redis-server command-line arguments after the
// defaults, e.g. WithArgs("--client-output-buffer-limit", "pubsub 1mb 1mb 0").
// They are reused by Restart.
func WithArgs(extra ...string) Option {
	return func(c *config) { c.extra = append(c.extra, extra...) }
}

// Server is a redis-server child process owned by a test.
type Server struct {
	bin   string
	dir   string
	extra []string
	port  int // fixed once Start returns; Restart reuses it
	// base gives the arguments before extra (serverArgs; sentinels
	// have their own); tlsPort is WithTLS's port, 0 without.
	base    func(s *Server) []string
	tls     *tlsConfig
	tlsPort int

	mu     sync.Mutex
	proc   *process // nil while not running
	starts int      // numbers the log files
	// rc is the client of Do, Exec and the helpers built on them, made on
	// first use and closed when the process goes (Kill, Stop, Restart).
	rc rueidis.Client
}

// process is one run of redis-server.
type process struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed once the process is reaped
	err     error         // cmd.Wait's result; read only after done
}

// Start launches redis-server on a free loopback port and returns once it
// answers PING. The binary is $REDIS_SERVER if set, else redis-server from
// PATH; the test fails if neither exists. A tb.Cleanup kills and reaps it.
func Start(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	s := &Server{bin: lookBinary(tb), dir: tb.TempDir(), extra: cfg.extra, base: serverArgs, tls: cfg.tls}
	s.start(tb)
	return s
}

// start registers the cleanup of s and launches it on a free port (and a
// free TLS port with WithTLS).
func (s *Server) start(tb testing.TB) {
	tb.Helper()
	// Registered after TempDir, so it runs before the directory is removed.
	tb.Cleanup(func() {
		if err := s.terminate(syscall.SIGKILL); err != nil {
			tb.Errorf("redistest: cleanup of redis-server on %s: %v", s.Addr(), err)
		}
	})
	var err error
	for range startAttempts {
		// The port is free now but may be taken before redis binds it;
		// that shows up as errAddrInUse and we try another one.
		if s.port, err = freePort(); err != nil {
			tb.Fatalf("redistest: picking a free port: %v", err)
		}
		if s.tls != nil {
			if s.tlsPort, err = freePort(); err != nil {
				tb.Fatalf("redistest: picking a free port: %v", err)
			}
		}
		if err = s.launch(); err == nil || !errors.Is(err, errAddrInUse) {
			break
		}
	}
	if err != nil {
		tb.Fatalf("redistest: starting %s: %v", s.bin, err)
	}
}

// Addr returns "127.0.0.1:P".
func (s *Server) Addr() string { return net.JoinHostPort(host, strconv.Itoa(s.port)) }

// Host returns "127.0.0.1".
func (s *Server) Host() string { return host }

// Port returns the TCP port; it stays the same across Restart.
func (s *Server) Port() int { return s.port }

// Kill sends SIGKILL, waits until the process is reaped and the port no
// longer accepts connections. Clients see their connections reset, like on a
// crash. Killing a stopped server is a no-op.
func (s *Server) Kill(tb testing.TB) {
	tb.Helper()
	if err := s.terminate(syscall.SIGKILL); err != nil {
		tb.Fatalf("redistest: kill redis-server on %s: %v", s.Addr(), err)
	}
	s.waitClosed(tb)
}

// Stop sends SIGTERM (a graceful shutdown) and waits until the process has
// exited and the port is closed. Stopping a stopped server is a no-op.
func (s *Server) Stop(tb testing.TB) {
	tb.Helper()
	if err := s.terminate(syscall.SIGTERM); err != nil {
		tb.Fatalf("redistest: stop redis-server on %s: %v", s.Addr(), err)
	}
	s.waitClosed(tb)
}

// Restart starts redis-server again on the same port, with the same
// arguments, and waits for PING. It is meant to follow Kill or Stop; if the
// server is still running it is killed first. The new process starts empty
// (no persistence), so clients must re-subscribe.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.Kill(tb)
	var err error
	for range 3 {
		if err = s.launch(); err == nil || !errors.Is(err, errAddrInUse) {
			break
		}
	}
	if err != nil {
		tb.Fatalf("redistest: restart redis-server on %s: %v", s.Addr(), err)
	}
}

// Do sends one command and returns its reply rendered as text (see
// render): integers in decimal, strings as they are, nil as "(nil)",
// arrays space-joined. A failure, an error reply included, fails the
// test. Call it from the test goroutine; use Exec from other goroutines.
func (s *Server) Do(tb testing.TB, args ...string) string {
	tb.Helper()
	reply, err := s.Exec(args...)
	if err != nil {
		tb.Fatalf("redistest: %s on %s: %v", strings.Join(args, " "), s.Addr(), err)
	}
	return reply
}

// Exec is Do without a testing.TB: it returns the error (a Redis error
// reply is a *rueidis.RedisError), so it may be called from any
// goroutine.
func (s *Server) Exec(args ...string) (string, error) {
	if len(args) == 0 {
		return "", errors.New("redistest: empty command")
	}
	c, err := s.client()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	return render(c.Do(ctx, c.B().Arbitrary(args...).Build()))
}

// Publish publishes message on channel and returns the number of clients
// that received it.
func (s *Server) Publish(tb testing.TB, channel, message string) int {
	tb.Helper()
	return s.integer(tb, "PUBLISH", channel, message)
}

// NumSub is PUBSUB NUMSUB for one channel: how many clients subscribe to
// it.
func (s *Server) NumSub(tb testing.TB, channel string) int {
	tb.Helper()
	c, err := s.client()
	if err != nil {
		tb.Fatalf("redistest: PUBSUB NUMSUB %s on %s: %v", channel, s.Addr(), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	m, err := c.Do(ctx, c.B().PubsubNumsub().Channel(channel).Build()).AsIntMap()
	if err != nil {
		tb.Fatalf("redistest: PUBSUB NUMSUB %s on %s: %v", channel, s.Addr(), err)
	}
	return int(m[channel])
}

// NumPat is PUBSUB NUMPAT: how many patterns are subscribed.
func (s *Server) NumPat(tb testing.TB) int {
	tb.Helper()
	return s.integer(tb, "PUBSUB", "NUMPAT")
}

// integer runs a command whose reply is an integer.
func (s *Server) integer(tb testing.TB, args ...string) int {
	tb.Helper()
	reply := s.Do(tb, args...)
	n, err := strconv.Atoi(reply)
	if err != nil {
		tb.Fatalf("redistest: %s: unexpected reply %q", strings.Join(args, " "), reply)
	}
	return n
}

func lookBinary(tb testing.TB) string {
	tb.Helper()
	if env := os.Getenv("REDIS_SERVER"); env != "" {
		p, err := exec.LookPath(env)
		if err != nil {
			tb.Fatalf("redistest: $REDIS_SERVER=%q is not an executable redis-server: %v", env, err)
		}
		return p
	}
	p, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatal(notFoundMsg)
	}
	return p
}

// serverArgs are the arguments of a redis-server before WithArgs's.
func serverArgs(s *Server) []string {
	return []string{
		"--port", strconv.Itoa(s.port),
		"--bind", host,
		"--save", "",
		"--appendonly", "no",
		"--protected-mode", "no",
		"--daemonize", "no",
		"--loglevel", "warning",
		// A replica syncs at once rather than after the default 5 s
		// wait for more replicas to share the transfer.
		"--repl-diskless-sync-delay", "0",
	}
}

// freePort asks the kernel for a free loopback port and releases it.
func freePort() (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}

// launch starts one redis-server process on s.port and waits until it is
// ready. On failure the process is killed and its log is in the error.
func (s *Server) launch() error {
	s.mu.Lock()
	if s.proc != nil {
		s.mu.Unlock()
		return errors.New("redis-server is already running")
	}
	s.starts++
	logPath := filepath.Join(s.dir, fmt.Sprintf("redis-%d.log", s.starts))
	args := append(s.base(s), s.tls.args(s.tlsPort)...)
	args = append(args, s.extra...)
	p, err := spawn(s.bin, args, s.dir, logPath)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	s.proc = p
	s.mu.Unlock()

	if err := s.waitReady(p); err != nil {
		_ = s.terminate(syscall.SIGKILL) // the readiness error is what matters
		log := logTail(logPath)
		if strings.Contains(log, "already in use") {
			err = fmt.Errorf("%w: port %d: %v", errAddrInUse, s.port, err)
		}
		return fmt.Errorf("%w\n--- %s ---\n%s", err, logPath, log)
	}
	return nil
}

// spawn starts redis-server from a goroutine locked to its OS thread for the
// process' whole life. On Linux the child gets SIGKILL when the forking
// thread exits (Pdeathsig), and a Go thread may exit while the test still
// runs (a goroutine that exits while locked, e.g. a gnet event loop, takes
// its thread with it), so forking from an arbitrary thread could kill redis
// at random. Here the forking thread outlives the child: the goroutine waits
// for it and only then exits, still locked.
func spawn(bin string, args []string, dir, logPath string) (*process, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = sysProcAttr()
	p := &process{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked, see above
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	err = <-started
	logFile.Close() // the child holds its own copy
	if err != nil {
		return nil, err
	}
	return p, nil
}

// waitReady polls until this very process answers PING, it exits, or the
// deadline passes. It checks the answering pid, so that a foreign server that
// grabbed the port first is not mistaken for ours.
func (s *Server) waitReady(p *process) error {
	deadline := time.Now().Add(readyTimeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var lastErr error
	for {
		select {
		case <-p.done:
			return fmt.Errorf("redis-server exited before answering PING: %v", p.err)
		default:
		}
		if lastErr = s.ping(p.cmd.Process.Pid); lastErr == nil {
			return nil
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("redis-server on %s not ready after %v: %v", s.Addr(), readyTimeout, lastErr)
		}
		select {
		case <-p.done:
		case <-tick.C:
		}
	}
}

// ping asks the server for INFO through a client of its own and checks
// that the server answering is the process with the given pid.
func (s *Server) ping(pid int) error {
	c, err := newClient(s.Addr(), time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	info, err := c.Do(ctx, c.B().Info().Section("server").Build()).ToString()
	if err != nil {
		return err
	}
	if want := "process_id:" + strconv.Itoa(pid) + "\r\n"; !strings.Contains(info, want) {
		return fmt.Errorf("port %d is served by another process (INFO lacks %q)", s.port, strings.TrimSpace(want))
	}
	return nil
}

// terminate signals the running process, if any, and waits until it is
// reaped. A process ignoring SIGTERM is killed after exitTimeout.
func (s *Server) terminate(sig syscall.Signal) error {
	s.mu.Lock()
	p, rc := s.proc, s.rc
	s.proc, s.rc = nil, nil
	s.mu.Unlock()
	if rc != nil {
		rc.Close()
	}
	if p == nil {
		return nil
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(exitTimeout):
	}
	_ = p.cmd.Process.Kill() // best effort; reported below
	<-p.done
	return fmt.Errorf("redis-server did not exit within %v of %v; killed", exitTimeout, sig)
}

// waitClosed waits until the port refuses connections.
func (s *Server) waitClosed(tb testing.TB) {
	tb.Helper()
	deadline := time.Now().Add(exitTimeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
		if err != nil {
			return
		}
		c.Close()
		if !time.Now().Before(deadline) {
			tb.Fatalf("redistest: port %s still open %v after the process ended", s.Addr(), exitTimeout)
		}
		<-tick.C
	}
}

// logTail returns the last few KiB of a redis log file.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	const tail = 4 << 10
	if len(b) > tail {
		b = b[len(b)-tail:]
	}
	return string(b)
}

// Running reports whether the process is running (started, not killed
// or stopped since).
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil
}
