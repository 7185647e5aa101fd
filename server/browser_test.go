//go:build unix

package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wsgw/gateway/fanout/redistest"
	"github.com/wsgw/gateway/server/servertest"
)

// webTestDir is the Node project of the browser tests.
const webTestDir = "web/test"

// requireTool returns the path of an executable the browser tests need.
// Outside CI a missing tool skips them; in CI (CI=true) it fails, so that
// a machine without Chromium cannot pass CI by skipping.
func requireTool(tb testing.TB, name, why string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("%s is not installed (%s); `make deps` installs it", name, why)
	if os.Getenv("CI") == "true" {
		tb.Fatalf("%s: CI must run the browser tests", msg)
	}
	tb.Skipf("skipping: %s", msg)
	return ""
}

// requireNodeModules runs `npm ci` in web/test when playwright-core is not
// installed yet (the lock file pins it), with the same skip-or-fail rule.
func requireNodeModules(tb testing.TB) {
	tb.Helper()
	if _, err := os.Stat(filepath.Join(webTestDir, "node_modules", "playwright-core", "package.json")); err == nil {
		return
	}
	npm := requireTool(tb, "npm", "installs playwright-core")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
	cmd.Dir = webTestDir
	if out, err := cmd.CombinedOutput(); err != nil {
		msg := fmt.Sprintf("npm ci in server/%s: %v\n%s", webTestDir, err, out)
		if os.Getenv("CI") == "true" {
			tb.Fatal(msg)
		}
		tb.Skipf("skipping: %s", msg)
	}
}

// TestWebClientUnit runs the client's unit checks (node:test with a fake
// WebSocket and mocked timers: acks, typed errors, gap detection,
// backoff, resubscription). It needs Node but no browser.
func TestWebClientUnit(t *testing.T) {
	node := requireTool(t, "node", "runs the client's unit tests")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "client.test.mjs")
	cmd.Dir = webTestDir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test client.test.mjs: %v\n%s", err, out)
	}
	// node --test exits 0 on a run that tested nothing: every test
	// skipped, or none defined (the file itself then counts as one
	// passing test, in no suite). The summary must show passes inside the
	// file's describe blocks, and nothing failed, skipped or left to do.
	counts := map[string]int{}
	for _, k := range []string{"pass", "suites", "fail", "cancelled", "skipped", "todo"} {
		counts[k] = tapCount(out, k)
	}
	if counts["pass"] <= 0 || counts["suites"] <= 0 ||
		counts["fail"] != 0 || counts["cancelled"] != 0 || counts["skipped"] != 0 || counts["todo"] != 0 {
		t.Fatalf("node --test summary %v: want passes in suites, nothing else:\n%s", counts, out)
	}
	t.Logf("node --test: %d passed in %d suites", counts["pass"], counts["suites"])
}

// tapCount is the count of a node --test summary line ("# pass 41"), or
// -1 when there is none.
func tapCount(out []byte, what string) int {
	for line := range strings.Lines(string(out)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "# "+what+" "); ok {
			if n, err := strconv.Atoi(v); err == nil {
				return n
			}
		}
	}
	return -1
}

// TestBrowserDemo drives the demo page in headless Chromium (web/test/
// run.mjs, with playwright-core) against this real gateway and a real
// redis-server: the page connects and shows a published message with its
// seq, a Redis restart is flagged as a gap, and after a gateway restart on
// the same port the page reconnects, resubscribes and receives again.
//
// GATEWAY_DEMO_SCREENSHOT=/abs/path.png keeps the screenshot the run
// takes (`make screenshot` writes docs/demo.png that way).
func TestBrowserDemo(t *testing.T) {
	chromium := requireTool(t, "chromium", "the browser the demo page is tested in")
	node := requireTool(t, "node", "runs playwright-core")
	requireNodeModules(t)

	rs := redistest.Start(t)
	g := startGateway(t, rs)
	addr := g.addr

	shot := os.Getenv("GATEWAY_DEMO_SCREENSHOT")
	if shot == "" {
		shot = filepath.Join(t.TempDir(), "demo.png")
	}
	run := startNode(t, node, "run.mjs",
		"GATEWAY_URL=http://"+addr, "CHROMIUM="+chromium, "SCREENSHOT="+shot)

	// Stream subscriptions at Redis, to know when the gateway has
	// subscribed everything again after a restart.
	upstream := func() string {
		pats, err1 := rs.Exec("PUBSUB", "NUMPAT")
		chans, err2 := rs.Exec("PUBSUB", "CHANNELS")
		if err1 != nil || err2 != nil {
			return ""
		}
		return pats + "|" + chans
	}

	run.serve(t, "run.mjs", 3*time.Minute, func(verb string, args []byte, line string) any {
		var reply any
		switch verb {
		case "publish":
			var a struct{ Channel, Message string }
			if err := json.Unmarshal(args, &a); err != nil {
				t.Fatalf("run.mjs: %s: %v", line, err)
			}
			reply = map[string]int{"receivers": rs.Publish(t, a.Channel, a.Message)}
		case "restart-redis":
			before := upstream()
			rs.Restart(t) // SIGKILL, then a new redis-server on the same port
			servertest.WaitFor(t, 15*time.Second, "the gateway to subscribe again after the Redis restart", func() bool {
				return g.hub.Healthy() && upstream() == before
			})
		case "restart-gateway":
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := g.srv.Shutdown(ctx); err != nil {
				t.Fatalf("shutdown: %v", err)
			}
			if err := g.hub.Close(ctx); err != nil {
				t.Fatalf("hub close: %v", err)
			}
			cancel()
			g = startGateway(t, rs, func(o *options) { o.srv.Addr = addr })
		default:
			t.Fatalf("run.mjs asked for %q", line)
		}
		return reply
	})
	if _, err := os.Stat(shot); err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
}

// parseCmd splits `CMD <id> <verb> <json>`.
func parseCmd(line string) (verb string, id int, args []byte, ok bool) {
	f := strings.SplitN(line, " ", 4)
	if len(f) < 3 || f[0] != "CMD" {
		return "", 0, nil, false
	}
	id, err := strconv.Atoi(f[1])
	if err != nil {
		return "", 0, nil, false
	}
	if len(f) == 4 {
		args = []byte(f[3])
	}
	return f[2], id, args, true
}

// nodeRun is a Node script speaking the line protocol of run.mjs.
type nodeRun struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string   // stdout, closed at EOF
	quit  chan struct{} // closed when the test stops reading lines
	errb  *lockedBuffer // a child's stderr, read while it runs
	done  chan struct{} // closed once the process is reaped; err is set then
	err   error
}

// lockedBuffer is a buffer that os/exec's copying goroutine writes while
// the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func startNode(tb testing.TB, node, script string, env ...string) *nodeRun {
	tb.Helper()
	cmd := exec.Command(node, script)
	cmd.Dir = webTestDir
	cmd.Env = append(os.Environ(), env...)
	r := &nodeRun{cmd: cmd, lines: make(chan string), quit: make(chan struct{}), errb: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stderr = r.errb
	var err error
	if r.stdin, err = cmd.StdinPipe(); err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s %s: %v", node, script, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			select {
			case r.lines <- sc.Text():
			case <-r.quit: // nobody listens any more: drain to EOF
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		close(r.lines)
		// os/exec: Wait only once everything was read from the pipe.
		r.err = cmd.Wait()
		close(r.done)
	}()
	tb.Cleanup(func() {
		// Closing stdin tells the script to close the browser and
		// exit; SIGTERM (playwright then kills the browser too) and
		// SIGKILL are for a script that does not.
		close(r.quit)
		_ = r.stdin.Close()
		for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
			select {
			case <-r.done:
				return
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Signal(sig)
			}
		}
		<-r.done
	})
	return r
}

func (r *nodeRun) answer(tb testing.TB, id int, v any) {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := fmt.Fprintf(r.stdin, "OK %d %s\n", id, b); err != nil {
		tb.Fatalf("answer run.mjs: %v\nstderr:\n%s", err, r.stderr())
	}
}

// wait returns the script's exit error once stdout is closed.
func (r *nodeRun) wait() error {
	select {
	case <-r.done:
		return r.err
	case <-time.After(30 * time.Second):
		return fmt.Errorf("still running 30 s after closing its stdout")
	}
}

func (r *nodeRun) stderr() string { return r.errb.String() }

// serve answers the script's commands with handle until it exits, logs
// its other lines, and fails the test if it runs past within or exits
// with an error.
func (r *nodeRun) serve(tb testing.TB, script string, within time.Duration, handle func(verb string, args []byte, line string) any) {
	tb.Helper()
	deadline := time.After(within)
	for {
		var line string
		var ok bool
		select {
		case line, ok = <-r.lines:
		case <-deadline:
			tb.Fatalf("%s did not finish within %v\nstderr:\n%s", script, within, r.stderr())
		}
		if !ok {
			break
		}
		verb, id, args, isCmd := parseCmd(line)
		if !isCmd {
			tb.Log(line)
			continue
		}
		r.answer(tb, id, handle(verb, args, line))
	}
	if err := r.wait(); err != nil {
		tb.Fatalf("%s: %v\nstderr:\n%s", script, err, r.stderr())
	}
}
