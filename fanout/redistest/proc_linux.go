//go:build linux

package redistest

import "syscall"

// sysProcAttr makes the kernel SIGKILL redis-server when the thread that
// forked it exits. The fork always happens on the spawner goroutine's locked
// OS thread, which lives as long as the test binary, so in effect the child
// dies with the test process (including on a -timeout panic) and is never
// orphaned.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
