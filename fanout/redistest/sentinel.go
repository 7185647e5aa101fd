package redistest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsgw/gateway/server/servertest"
)

// MasterSet is the name the sentinels of StartSentinel monitor.
const MasterSet = "mymaster"

// setupTimeout bounds the start of a Sentinel or Cluster setup: the
// sentinels learn of each other through hello messages every 2 s.
const setupTimeout = 30 * time.Second

// Sentinel is a Redis master, one replica and three sentinels (quorum 2)
// monitoring them as MasterSet, each a child process of the test.
type Sentinel struct {
	Master, Replica *Server
	Sentinels       []*Server
}

// StartSentinel starts the master and its replica (opts apply to both),
// then three sentinels that declare a master down after downAfter
// without an answer; it returns once the replica is in sync and every
// sentinel knows the replica and the two other sentinels (an election
// needs a majority that knows each other). The sentinels' binary is
// $REDIS_SENTINEL, else redis-sentinel from PATH.
func StartSentinel(tb testing.TB, downAfter time.Duration, opts ...Option) *Sentinel {
	tb.Helper()
	st := &Sentinel{Master: Start(tb, opts...)}
	st.Replica = Start(tb, append(opts, WithArgs("--replicaof", host, strconv.Itoa(st.Master.Port())))...)
	servertest.WaitFor(tb, setupTimeout, "the replica to sync", func() bool {
		r, err := st.Replica.Exec("INFO", "replication")
		return err == nil && strings.Contains(r, "master_link_status:up")
	})
	bin := lookSentinel(tb)
	for range 3 {
		dir := tb.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		// The sentinel rewrites its file (what it learns, its id), so it
		// is the sentinel's own and writable.
		body := fmt.Sprintf("sentinel monitor %s %s %d 2\n"+
			"sentinel down-after-milliseconds %s %d\n"+
			"sentinel failover-timeout %s %d\n"+
			"sentinel parallel-syncs %s 1\n",
			MasterSet, host, st.Master.Port(), MasterSet, downAfter.Milliseconds(),
			MasterSet, max(3*downAfter, time.Second).Milliseconds(), MasterSet)
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			tb.Fatal(err)
		}
		s := &Server{bin: bin, dir: dir, base: func(s *Server) []string {
			return []string{conf, "--port", strconv.Itoa(s.port), "--bind", host,
				"--protected-mode", "no", "--daemonize", "no", "--loglevel", "warning"}
		}}
		s.start(tb)
		st.Sentinels = append(st.Sentinels, s)
	}
	servertest.WaitFor(tb, setupTimeout, "the sentinels to know each other and the replica", func() bool {
		for _, s := range st.Sentinels {
			r, err := s.Exec("SENTINEL", "MASTER", MasterSet)
			if err != nil || !strings.Contains(r, "num-other-sentinels 2") || !strings.Contains(r, "num-slaves 1") {
				return false
			}
		}
		return true
	})
	return st
}

// URL is the Sentinel URL of the setup as the gateway reads it
// (REDIS_URL).
func (st *Sentinel) URL() string {
	u := "redis://" + st.Sentinels[0].Addr() + "?master_set=" + MasterSet
	for _, s := range st.Sentinels[1:] {
		u += "&addr=" + s.Addr()
	}
	return u
}

// MasterAddr asks the first sentinel that answers for the master's
// address ("" if none answers).
func (st *Sentinel) MasterAddr() string {
	for _, s := range st.Sentinels {
		if r, err := s.Exec("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MasterSet); err == nil {
			if f := strings.Fields(r); len(f) == 2 {
				return f[0] + ":" + f[1]
			}
		}
	}
	return ""
}

func lookSentinel(tb testing.TB) string {
	tb.Helper()
	if env := os.Getenv("REDIS_SENTINEL"); env != "" {
		p, err := exec.LookPath(env)
		if err != nil {
			tb.Fatalf("redistest: $REDIS_SENTINEL=%q is not an executable redis-sentinel: %v", env, err)
		}
		return p
	}
	p, err := exec.LookPath("redis-sentinel")
	if err != nil {
		tb.Fatal("redis-sentinel not found: run `make test`, which installs Debian's redis-sentinel")
	}
	return p
}
