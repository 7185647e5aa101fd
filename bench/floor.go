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
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/wsgw/gateway/wsproto"
)

// The floor: the least a process can spend, and the soonest it can
// deliver, to put the gateway's frames on the same sockets. A subprocess
// accepts N plain TCP connections (no Go netpoller: raw blocking sockets)
// and, at the same message rate, writes the same frames the gateway would
// (built by the gateway's own encoder, stamped with the publisher's
// payload {"t":...}) to every socket from one locked thread. Its CPU per
// frame is the floor the gateway's CPU per delivered frame is compared
// with; the clients measure its publish-to-client latency exactly as they
// do the gateway's (a message is stamped at its due time, so a writer
// that falls behind pays for it in latency, as the gateway does).
//
// Runs: adaptive (K 0: write(2) per frame when on time, writev(2) of every
// frame due when behind, as an event loop that drains its queue does),
// write(2) per frame (K 1), and writev(2) of K frames at a time.
// Shape: fanout (every message to every socket) or spread (message i to
// socket i mod N, every Every-th to all of them through the pattern).

type floorCmd struct {
	Op     string        `json:"op"` // listen, run, connect (the connect floor), stop
	N      int           `json:"n,omitempty"`
	Prefix string        `json:"prefix,omitempty"` // channel prefix of the frames
	Size   int           `json:"size,omitempty"`   // payload bytes
	Rate   float64       `json:"rate,omitempty"`   // messages per second (fanout: to each socket; spread: in all)
	Dur    time.Duration `json:"dur,omitempty"`
	K      int           `json:"k,omitempty"`      // 0: adaptive
	Spread bool          `json:"spread,omitempty"` // spread shape
	Every  int64         `json:"every,omitempty"`  // spread: every Every-th message goes to every socket (0: none)
}

type floorMsg struct {
	Addr     string `json:"addr,omitempty"`
	Accepted int    `json:"accepted,omitempty"`
	Done     bool   `json:"done,omitempty"`
	Frames   int64  `json:"frames,omitempty"`
	Syscalls int64  `json:"syscalls,omitempty"`
	Errors   int64  `json:"errors,omitempty"`
	Messages int64  `json:"messages,omitempty"`
	CPUNanos int64  `json:"cpu_ns,omitempty"`
	Elapsed  int64  `json:"elapsed_ns,omitempty"`
	Error    string `json:"error,omitempty"`
}

func floorMain(in io.Reader, out io.Writer) int {
	raiseNofile()
	signal.Ignore(os.Interrupt, syscall.SIGTERM)
	enc := json.NewEncoder(out)
	var mu sync.Mutex
	send := func(m floorMsg) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(m)
	}
	var (
		lfd      = -1
		fdsMu    sync.Mutex
		fds      []int
		accepted atomic.Int64
		// seq numbers every message of every run: each socket sees it
		// rise, so the clients record every frame's latency (a socket
		// of the spread shape sees it jump: the floor has no gaps to
		// count, only frames received against frames written).
		seq uint64
	)
	var (
		cf     *connFloor // the connect floor, when asked for
		cfDone = make(chan struct{})
	)
	defer func() {
		if cf != nil {
			cf.stop.Store(true)
			<-cfDone
			cf.close()
		}
		fdsMu.Lock()
		for _, fd := range fds {
			_ = syscall.Close(fd)
		}
		fdsMu.Unlock()
		if lfd >= 0 {
			_ = syscall.Close(lfd)
		}
	}()
	// listening answers a listen or connect command: the address, or
	// why there is none.
	listening := func(port int, err error) bool {
		if err != nil {
			send(floorMsg{Error: err.Error()})
			return false
		}
		send(floorMsg{Addr: fmt.Sprintf("127.0.0.1:%d", port)})
		return true
	}
	dec := json.NewDecoder(bufio.NewReader(in))
	for {
		var c floorCmd
		if err := dec.Decode(&c); err != nil {
			return 0
		}
		switch c.Op {
		case "listen":
			fd, port, err := rawListen()
			if !listening(port, err) {
				continue
			}
			lfd = fd
			go func(n int) {
				for int(accepted.Load()) < n {
					nfd, _, err := syscall.Accept(lfd)
					if err != nil {
						if errors.Is(err, syscall.EINTR) || errors.Is(err, syscall.ECONNABORTED) {
							continue
						}
						send(floorMsg{Error: "accept: " + err.Error()})
						return
					}
					_ = syscall.SetsockoptInt(nfd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
					fdsMu.Lock()
					fds = append(fds, nfd)
					fdsMu.Unlock()
					accepted.Add(1)
				}
				send(floorMsg{Accepted: n})
			}(c.N)
		case "connect":
			if cf != nil {
				send(floorMsg{Error: "connect floor already listening"})
				continue
			}
			l, port, err := listenConnFloor()
			if !listening(port, err) {
				continue
			}
			cf = l
			go func(n int) {
				defer close(cfDone)
				if err := cf.serve(n, func() { send(floorMsg{Accepted: n}) }); err != nil {
					send(floorMsg{Error: err.Error()})
				}
			}(c.N)
		case "run":
			fdsMu.Lock()
			conns := append([]int(nil), fds...)
			fdsMu.Unlock()
			send(floorWrite(conns, c, &seq))
		case "stop":
			return 0
		}
	}
}

func rawListen() (fd, port int, err error) {
	fd, err = syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, 0, err
	}
	_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	if err = syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		syscall.Close(fd)
		return -1, 0, err
	}
	if err = syscall.Listen(fd, 4096); err != nil {
		syscall.Close(fd)
		return -1, 0, err
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		syscall.Close(fd)
		return -1, 0, err
	}
	return fd, sa.(*syscall.SockaddrInet4).Port, nil
}

// floorWrite runs c on fds from one locked OS thread: the messages of c's
// rate and shape for c.Dur, each built once when it is due, stamped with
// its due time.
func floorWrite(fds []int, c floorCmd, seq *uint64) floorMsg {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if c.Rate <= 0 || len(fds) == 0 || c.Size <= 0 {
		return floorMsg{Done: true, Error: "nothing to write"}
	}
	const maxBatch = 64 // adaptive: frames per writev at most
	batch := c.K
	if batch == 0 {
		batch = maxBatch
	}
	if c.Spread {
		batch = 1 // each frame goes to one socket (or, once, to all)
	}
	var (
		m       floorMsg
		pending = make([]*wsproto.Frame, 0, batch)
		iov     = make([]syscall.Iovec, batch)
		payload []byte
		channel = c.Prefix + ":0"
		shared  = c.Prefix + ":all:x"
		pattern = c.Prefix + ":all:*"
		target  = -1 // spread: the socket of the pending frame, -1 for all
	)
	flush := func() {
		if len(pending) == 0 {
			return
		}
		to := fds
		if target >= 0 {
			to = fds[target : target+1]
		}
		if len(pending) == 1 {
			b := pending[0].Bytes()
			for _, fd := range to {
				if _, err := syscall.Write(fd, b); err != nil {
					m.Errors++
					continue
				}
				m.Frames++
				m.Syscalls++
			}
		} else {
			for i, f := range pending {
				b := f.Bytes()
				iov[i].Base = &b[0]
				iov[i].SetLen(len(b))
			}
			for _, fd := range to {
				_, _, e := syscall.Syscall(syscall.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(pending)))
				if e != 0 {
					m.Errors++
					continue
				}
				m.Frames += int64(len(pending))
				m.Syscalls++
			}
		}
		for _, f := range pending {
			f.Release()
		}
		pending = pending[:0]
	}
	dueAt := func(i int64) time.Duration { return time.Duration(float64(i) / c.Rate * float64(time.Second)) }
	cpu0 := selfCPU()
	start := time.Now()
	for i := int64(0); ; i++ {
		due := dueAt(i)
		if due >= c.Dur {
			break
		}
		if w := time.Until(start.Add(due)); w > 0 {
			time.Sleep(w)
		}
		at := start.Add(due)
		ch, pat := channel, ""
		target = -1
		if c.Spread {
			if c.Every > 0 && i%c.Every == 0 {
				ch, pat = shared, pattern
			} else {
				target = int(i % int64(len(fds)))
				ch = c.Prefix + ":" + strconv.Itoa(target)
			}
		}
		*seq++
		payload = benchPayload(payload[:0], at.UnixNano(), c.Size)
		pending = append(pending, wsproto.BuildData(*seq, ch, pat, string(payload), at))
		m.Messages++
		switch {
		case len(pending) == batch:
			flush()
		case c.K == 0:
			// Adaptive: write now unless the next message is due too.
			if next := dueAt(i + 1); next >= c.Dur || time.Until(start.Add(next)) > 0 {
				flush()
			}
		}
	}
	// A writev run ends with fewer than K frames pending: they are not
	// sent (and not counted).
	for _, f := range pending {
		f.Release()
	}
	m.Elapsed = int64(time.Since(start))
	m.CPUNanos = selfCPU() - cpu0
	m.Done = true
	return m
}

// floorProc is the coordinator's handle on a floor subprocess.
type floorProc struct {
	cmd   *exec.Cmd
	enc   *json.Encoder
	msgs  chan floorMsg
	stdin io.WriteCloser
}

func startFloor(n int) (*floorProc, string, error) {
	return startFloorWith(floorCmd{Op: "listen", N: n})
}

// startFloorWith starts a floor subprocess and sends it first, a command
// (listen or connect) that answers with the address to connect to.
func startFloorWith(first floorCmd) (*floorProc, string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), roleEnv+"=floor")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, "", err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	f := &floorProc{cmd: cmd, enc: json.NewEncoder(stdin), msgs: make(chan floorMsg, 16), stdin: stdin}
	go func() {
		defer close(f.msgs)
		dec := json.NewDecoder(stdout)
		for {
			var m floorMsg
			if dec.Decode(&m) != nil {
				return
			}
			f.msgs <- m
		}
	}()
	_ = f.enc.Encode(first)
	m, err := f.next(10 * time.Second)
	if err != nil {
		f.stop()
		return nil, "", err
	}
	return f, m.Addr, nil
}

func (f *floorProc) next(timeout time.Duration) (floorMsg, error) {
	select {
	case m, ok := <-f.msgs:
		if !ok {
			return m, errors.New("floor process exited")
		}
		if m.Error != "" {
			return m, errors.New("floor: " + m.Error)
		}
		return m, nil
	case <-time.After(timeout):
		return floorMsg{}, errors.New("floor process did not answer")
	}
}

func (f *floorProc) stop() {
	_ = f.enc.Encode(floorCmd{Op: "stop"})
	_ = f.stdin.Close()
	done := make(chan struct{})
	go func() { _ = f.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = f.cmd.Process.Kill()
		<-done
	}
}
