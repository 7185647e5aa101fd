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
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// The CPU floor: the least a process can spend to put the gateway's frames
// on the same sockets. A subprocess accepts N plain TCP connections (no
// Go netpoller: raw blocking sockets) and, at the same message rate, writes
// the same pre-encoded frame to every socket, with write(2) per frame
// (k = 1) or writev(2) of k frames at a time. Its CPU per frame is the
// floor the gateway's CPU per delivered frame is compared with, at the
// same batching.

type floorCmd struct {
	Op    string        `json:"op"` // listen, run, stop
	N     int           `json:"n,omitempty"`
	Frame []byte        `json:"frame,omitempty"`
	Rate  float64       `json:"rate,omitempty"`
	Dur   time.Duration `json:"dur,omitempty"`
	K     int           `json:"k,omitempty"`
}

type floorMsg struct {
	Addr     string `json:"addr,omitempty"`
	Accepted int    `json:"accepted,omitempty"`
	Done     bool   `json:"done,omitempty"`
	Frames   int64  `json:"frames,omitempty"`
	Syscalls int64  `json:"syscalls,omitempty"`
	Errors   int64  `json:"errors,omitempty"`
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
	)
	defer func() {
		fdsMu.Lock()
		for _, fd := range fds {
			_ = syscall.Close(fd)
		}
		fdsMu.Unlock()
		if lfd >= 0 {
			_ = syscall.Close(lfd)
		}
	}()
	dec := json.NewDecoder(bufio.NewReader(in))
	for {
		var c floorCmd
		if err := dec.Decode(&c); err != nil {
			return 0
		}
		switch c.Op {
		case "listen":
			fd, port, err := rawListen()
			if err != nil {
				send(floorMsg{Error: err.Error()})
				continue
			}
			lfd = fd
			send(floorMsg{Addr: fmt.Sprintf("127.0.0.1:%d", port)})
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
		case "run":
			fdsMu.Lock()
			conns := append([]int(nil), fds...)
			fdsMu.Unlock()
			send(floorWrite(conns, c.Frame, c.Rate, c.Dur, max(c.K, 1)))
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

// floorWrite writes frame to every fd rate times a second for d, k frames
// per system call, on one locked OS thread.
func floorWrite(fds []int, frame []byte, rate float64, d time.Duration, k int) floorMsg {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if len(frame) == 0 || rate <= 0 || len(fds) == 0 {
		return floorMsg{Done: true, Error: "nothing to write"}
	}
	iov := make([]syscall.Iovec, k)
	for i := range iov {
		iov[i].Base = &frame[0]
		iov[i].SetLen(len(frame))
	}
	var m floorMsg
	cpu0 := selfCPU()
	start := time.Now()
	for i := int64(0); ; i++ {
		due := time.Duration(float64(i) / rate * float64(time.Second))
		if due >= d {
			break
		}
		if w := time.Until(start.Add(due)); w > 0 {
			time.Sleep(w)
		}
		if k == 1 {
			for _, fd := range fds {
				if _, err := syscall.Write(fd, frame); err != nil {
					m.Errors++
					continue
				}
				m.Frames++
				m.Syscalls++
			}
			continue
		}
		if (i+1)%int64(k) != 0 {
			continue
		}
		for _, fd := range fds {
			_, _, e := syscall.Syscall(syscall.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(k))
			if e != 0 {
				m.Errors++
				continue
			}
			m.Frames += int64(k)
			m.Syscalls++
		}
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
	_ = f.enc.Encode(floorCmd{Op: "listen", N: n})
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
