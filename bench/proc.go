package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The cost of a process is read from /proc: CPU from /proc/<pid>/stat
// (utime+stime, in clock ticks of 10 ms: Linux's USER_HZ is 100 on every
// architecture Go supports) and memory from VmRSS in /proc/<pid>/status.

const clockTick = 10 * time.Millisecond

func procPath(pid int, file string) string {
	if pid == 0 {
		return "/proc/self/" + file
	}
	return "/proc/" + strconv.Itoa(pid) + "/" + file
}

// readProc reads /proc/<pid>/<file> (pid 0: this process).
func readProc(pid int, file string) ([]byte, error) { return os.ReadFile(procPath(pid, file)) }

// cpuOf returns the user+system CPU time pid has used (all its threads).
func cpuOf(pid int) (time.Duration, error) {
	b, err := os.ReadFile(procPath(pid, "stat"))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU reads utime and stime (fields 14 and 15) of a
// /proc/<pid>/stat line. The command name (field 2) may hold spaces and
// parentheses, so fields are counted from the last ')'.
func parseStatCPU(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("malformed stat: %d fields", len(f))
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("malformed stat times")
	}
	return time.Duration(u+s) * clockTick, nil
}

// rssOf returns VmRSS of pid in bytes (0 on error); pid 0 is this process.
func rssOf(pid int) int64 {
	b, err := os.ReadFile(procPath(pid, "status"))
	if err != nil {
		return 0
	}
	return statusNumber(b, "VmRSS:") * 1024
}

// statusNumber returns the first number after key at the start of a line
// of a /proc "key: value" file (status, io), or 0.
func statusNumber(b []byte, key string) int64 {
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// nofileOf returns the soft open-file limit of pid, or 0.
func nofileOf(pid int) int64 {
	b, err := os.ReadFile(procPath(pid, "limits"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// raiseNofile raises this process's RLIMIT_NOFILE soft limit to the hard
// limit (the Go runtime does this too since Go 1.19; done explicitly so the
// figure is known and reported).
func raiseNofile() (soft, hard uint64) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, 0
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	return lim.Cur, lim.Max
}

// ephemeralPorts is the size of net.ipv4.ip_local_port_range.
func ephemeralPorts() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 28232
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 28232
	}
	lo, _ := strconv.Atoi(f[0])
	hi, _ := strconv.Atoi(f[1])
	if hi <= lo {
		return 28232
	}
	return hi - lo + 1
}

func kernelRelease() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}

// procCounters are the scheduler and system-call counters of a process:
// the context switches of all its threads and its read- and write-family
// system calls. Each hop a message takes between threads shows up in the
// switches (voluntary: a thread blocked or parked; involuntary: it was
// preempted); syscr and syscw count read(2), write(2), writev(2) and
// their kin, including eventfd wake-ups.
type procCounters struct {
	VolCtx   int64 `json:"voluntary_ctx_switches"`
	InvolCtx int64 `json:"involuntary_ctx_switches"`
	Syscr    int64 `json:"syscr"`
	Syscw    int64 `json:"syscw"`
}

func (c procCounters) add(d procCounters) procCounters {
	return procCounters{c.VolCtx + d.VolCtx, c.InvolCtx + d.InvolCtx, c.Syscr + d.Syscr, c.Syscw + d.Syscw}
}

// sub is c - d, each field at least 0: a thread that exits between two
// readings takes its switches with it.
func (c procCounters) sub(d procCounters) procCounters {
	return procCounters{max(c.VolCtx-d.VolCtx, 0), max(c.InvolCtx-d.InvolCtx, 0), max(c.Syscr-d.Syscr, 0), max(c.Syscw-d.Syscw, 0)}
}

// countersOf reads pid's counters: the switches summed over
// /proc/<pid>/task/*/status (the process's own status line counts its
// main thread only), the system calls from /proc/<pid>/io.
func countersOf(pid int) procCounters {
	var c procCounters
	if pid <= 0 {
		return c
	}
	tasks, err := os.ReadDir(procPath(pid, "task"))
	if err != nil {
		return c
	}
	for _, t := range tasks {
		b, err := os.ReadFile(procPath(pid, "task/"+t.Name()+"/status"))
		if err != nil {
			continue // the thread exited meanwhile
		}
		v, i := parseCtxSwitches(b)
		c.VolCtx += v
		c.InvolCtx += i
	}
	if b, err := os.ReadFile(procPath(pid, "io")); err == nil {
		c.Syscr, c.Syscw = parseIOSyscalls(b)
	}
	return c
}

// parseCtxSwitches reads the context-switch lines of a task's status.
func parseCtxSwitches(status []byte) (voluntary, involuntary int64) {
	return statusNumber(status, "voluntary_ctxt_switches:"), statusNumber(status, "nonvoluntary_ctxt_switches:")
}

// parseIOSyscalls reads syscr and syscw of /proc/<pid>/io.
func parseIOSyscalls(io []byte) (syscr, syscw int64) {
	return statusNumber(io, "syscr:"), statusNumber(io, "syscw:")
}

// machineCPU returns the CPU time all processes of the machine have used
// (busy: everything but idle and iowait) and the time stolen by the
// hypervisor, from the first line of /proc/stat.
func machineCPU() (busy, steal time.Duration) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0
	}
	var v [8]int64
	for i := range v {
		v[i], _ = strconv.ParseInt(f[i+1], 10, 64)
	}
	// user nice system idle iowait irq softirq steal (guest time is
	// already counted in user).
	busyTicks := v[0] + v[1] + v[2] + v[5] + v[6]
	return time.Duration(busyTicks) * clockTick, time.Duration(v[7]) * clockTick
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// somaxconn is net.core.somaxconn: the listen backlog gnet asks for.
func somaxconn() int {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}
