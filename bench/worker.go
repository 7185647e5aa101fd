package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// The harness re-executes itself as worker subprocesses, each holding a
// share of the sockets (a process may hold at most RLIMIT_NOFILE files).
// The coordinator talks to a worker with JSON lines: commands on its stdin,
// stats on its stdout (every reportEvery), logs on its stderr.

const (
	roleEnv     = "WSGW_BENCH_ROLE" // "worker" or "floor": run as a subprocess
	reportEvery = 250 * time.Millisecond
)

type workerCmd struct {
	Op    string        `json:"op"` // connect, churn, storm, stop
	Spec  *poolSpec     `json:"spec,omitempty"`
	Rate  float64       `json:"rate,omitempty"`
	Dur   time.Duration `json:"dur,omitempty"`
	Extra string        `json:"extra,omitempty"`
	At    int64         `json:"at,omitempty"`   // storm: the event, unix nanos
	Drop  bool          `json:"drop,omitempty"` // storm: close every open socket at once
}

type workerMsg struct {
	Stats *poolStats `json:"stats,omitempty"`
	Final bool       `json:"final,omitempty"`
	Error string     `json:"error,omitempty"`
}

// subprocessMain runs this process as a worker or floor subprocess if the
// environment says so; it returns false otherwise.
func subprocessMain() (int, bool) {
	switch os.Getenv(roleEnv) {
	case "worker":
		return workerMain(os.Stdin, os.Stdout), true
	case "floor":
		return floorMain(os.Stdin, os.Stdout), true
	}
	return 0, false
}

func workerMain(in io.Reader, out io.Writer) int {
	raiseNofile()
	// A Ctrl-C reaches the whole process group: the coordinator decides
	// when a worker stops (stop command, or its stdin closing).
	signal.Ignore(os.Interrupt, syscall.SIGTERM)
	var (
		mu  sync.Mutex
		enc = json.NewEncoder(out)
	)
	send := func(m workerMsg) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(m)
	}
	var (
		p    *pool
		pmu  sync.Mutex
		done = make(chan struct{})
	)
	go func() {
		t := time.NewTicker(reportEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			pmu.Lock()
			if p != nil {
				st := p.stats()
				send(workerMsg{Stats: &st})
			}
			pmu.Unlock()
		}
	}()
	finish := func() int {
		close(done)
		pmu.Lock()
		defer pmu.Unlock()
		if p != nil {
			st := p.close()
			send(workerMsg{Stats: &st, Final: true})
		} else {
			send(workerMsg{Final: true})
		}
		return 0
	}
	dec := json.NewDecoder(bufio.NewReader(in))
	for {
		var c workerCmd
		if err := dec.Decode(&c); err != nil {
			// The coordinator went away: clean up and leave.
			return finish()
		}
		switch c.Op {
		case "connect":
			pmu.Lock()
			if p == nil && c.Spec != nil {
				np, err := newPool(*c.Spec)
				if err != nil {
					send(workerMsg{Error: err.Error()})
				} else {
					p = np
					p.connect()
				}
			}
			pmu.Unlock()
		case "churn":
			pmu.Lock()
			if p != nil {
				p.churn(c.Rate, c.Dur)
			}
			pmu.Unlock()
		case "storm":
			pmu.Lock()
			if p != nil {
				p.storm(c.At, c.Drop)
			}
			pmu.Unlock()
		case "stop":
			return finish()
		}
	}
}

// clientHandle is one share of the client sockets, in this process or in
// a worker subprocess.
type clientHandle interface {
	// snapshot returns the cumulative counters and the histograms recorded
	// since the previous snapshot.
	snapshot() poolStats
	churn(rate float64, d time.Duration)
	// storm marks the event at (unix nanos); with drop, every open
	// socket is closed at once and comes back by itself.
	storm(at int64, drop bool)
	close() poolStats
	pid() int
}

type localClient struct{ p *pool }

func startLocal(spec poolSpec) (*localClient, error) {
	p, err := newPool(spec)
	if err != nil {
		return nil, err
	}
	p.connect()
	return &localClient{p}, nil
}

func (l *localClient) snapshot() poolStats                 { return l.p.stats() }
func (l *localClient) churn(rate float64, d time.Duration) { l.p.churn(rate, d) }
func (l *localClient) storm(at int64, drop bool)           { l.p.storm(at, drop) }
func (l *localClient) close() poolStats                    { return l.p.close() }
func (l *localClient) pid() int                            { return os.Getpid() }

type remoteClient struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	enc   *json.Encoder

	mu           sync.Mutex
	last         poolStats
	lat, conn    sparseHist
	outage, back sparseHist
	final        chan struct{}
	gotFinal     bool
	err          error
	exited       chan struct{}
}

// startRemote starts a worker subprocess holding spec's sockets.
func startRemote(spec poolSpec) (*remoteClient, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), roleEnv+"=worker")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting worker: %w", err)
	}
	r := &remoteClient{cmd: cmd, stdin: stdin, enc: json.NewEncoder(stdin),
		final: make(chan struct{}), exited: make(chan struct{})}
	r.last.Target = int64(spec.Hi - spec.Lo)
	go r.read(stdout)
	if err := r.enc.Encode(workerCmd{Op: "connect", Spec: &spec}); err != nil {
		_ = cmd.Process.Kill()
		return nil, err
	}
	return r, nil
}

func (r *remoteClient) read(stdout io.Reader) {
	defer close(r.exited)
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	for {
		var m workerMsg
		if !sc.Scan() {
			r.mu.Lock()
			if !r.gotFinal {
				r.err = errors.New("worker exited without a final report")
				r.gotFinal = true
				close(r.final)
			}
			r.mu.Unlock()
			_ = r.cmd.Wait()
			return
		}
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			// Not a report: someone wrote to the worker's stdout.
			fmt.Fprintf(os.Stderr, "worker: %s\n", sc.Bytes())
			continue
		}
		r.mu.Lock()
		if m.Error != "" && r.err == nil {
			r.err = errors.New("worker: " + m.Error)
		}
		if m.Stats != nil {
			r.lat = appendSparse(r.lat, m.Stats.Lat)
			r.conn = appendSparse(r.conn, m.Stats.Conn)
			r.outage = appendSparse(r.outage, m.Stats.Outage)
			r.back = appendSparse(r.back, m.Stats.Back)
			m.Stats.Lat, m.Stats.Conn, m.Stats.Outage, m.Stats.Back = sparseHist{}, sparseHist{}, sparseHist{}, sparseHist{}
			r.last = *m.Stats
		}
		if m.Final && !r.gotFinal {
			r.gotFinal = true
			close(r.final)
		}
		r.mu.Unlock()
	}
}

func (r *remoteClient) snapshot() poolStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.last
	st.Lat, st.Conn, st.Outage, st.Back = r.lat, r.conn, r.outage, r.back
	r.lat, r.conn, r.outage, r.back = sparseHist{}, sparseHist{}, sparseHist{}, sparseHist{}
	if r.err != nil {
		st.Limits = append(append([]string(nil), st.Limits...), r.err.Error())
	}
	return st
}

func (r *remoteClient) churn(rate float64, d time.Duration) {
	_ = r.enc.Encode(workerCmd{Op: "churn", Rate: rate, Dur: d})
}

func (r *remoteClient) storm(at int64, drop bool) {
	_ = r.enc.Encode(workerCmd{Op: "storm", At: at, Drop: drop})
}

func (r *remoteClient) close() poolStats {
	_ = r.enc.Encode(workerCmd{Op: "stop"})
	select {
	case <-r.final:
	case <-time.After(20 * time.Second):
		_ = r.cmd.Process.Kill()
	}
	_ = r.stdin.Close()
	select {
	case <-r.exited:
	case <-time.After(5 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.exited
	}
	return r.snapshot()
}

func (r *remoteClient) pid() int { return r.cmd.Process.Pid }
