//go:build !linux

package redistest

import "syscall"

// sysProcAttr: no parent-death signal outside Linux; tb.Cleanup still kills
// the child on normal test completion.
func sysProcAttr() *syscall.SysProcAttr { return nil }
