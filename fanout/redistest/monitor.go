package redistest

import (
	"bufio"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
)

// Monitor records the commands the server executes (MONITOR), to see what
// a client sent, for the rest of the test.
//
// It reads its own connection by hand: after MONITOR the server streams
// one status line per command, which neither rueidis's request-reply nor
// its pub/sub mode reads. Nothing is parsed but "+OK" and those lines.
type Monitor struct {
	mu    sync.Mutex
	lines []string
}

// Monitor starts recording. A tb.Cleanup closes the connection.
func (s *Server) Monitor(tb testing.TB) *Monitor {
	tb.Helper()
	c, err := net.DialTimeout("tcp", s.Addr(), ioTimeout)
	if err != nil {
		tb.Fatalf("redistest: MONITOR on %s: %v", s.Addr(), err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	if _, err := io.WriteString(c, "MONITOR\r\n"); err != nil {
		tb.Fatalf("redistest: MONITOR on %s: %v", s.Addr(), err)
	}
	r := bufio.NewReader(c)
	if l, err := r.ReadString('\n'); err != nil || l != "+OK\r\n" {
		tb.Fatalf("redistest: MONITOR on %s: %q %v", s.Addr(), l, err)
	}
	m := &Monitor{}
	go func() {
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			m.mu.Lock()
			m.lines = append(m.lines, l)
			m.mu.Unlock()
		}
	}()
	return m
}

// Saw reports whether a command named cmd (any case) with an argument arg
// was executed since Monitor.
func (m *Monitor) Saw(cmd, arg string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, l := range m.lines {
		if strings.Contains(strings.ToUpper(l), `] "`+strings.ToUpper(cmd)+`"`) && strings.Contains(l, `"`+arg+`"`) {
			return true
		}
	}
	return false
}
