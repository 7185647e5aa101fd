package redistest

import (
	"context"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/wsgw/gateway/server/servertest"
)

// Cluster is a Redis Cluster of three masters, each with one replica,
// every node a child process of the test.
type Cluster struct {
	Nodes []*Server

	mu sync.Mutex
	rc rueidis.Client // Client's
}

// StartCluster starts six cluster-enabled servers, joins them with
// redis-cli --cluster create (three masters, three replicas) and returns
// once every node sees all six, every slot is served and every replica
// is in sync. nodeTimeout is cluster-node-timeout: a master is failed over
// after about twice that. redis-cli is $REDIS_CLI, else from PATH.
func StartCluster(tb testing.TB, nodeTimeoutMs int) *Cluster {
	tb.Helper()
	c := &Cluster{}
	addrs := make([]string, 6)
	for i := range addrs {
		// The bus port defaults to port+10000, which a free port may
		// not leave room for: give it one of its own.
		bus, err := freePort()
		if err != nil {
			tb.Fatal(err)
		}
		s := Start(tb, WithArgs("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", strconv.Itoa(nodeTimeoutMs), "--cluster-port", strconv.Itoa(bus)))
		c.Nodes = append(c.Nodes, s)
		addrs[i] = s.Addr()
	}
	tb.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.rc != nil {
			c.rc.Close()
		}
	})
	cli := os.Getenv("REDIS_CLI")
	if cli == "" {
		cli = "redis-cli"
	}
	// redis-cli waits for the join without end when the bus is
	// unreachable: bound it.
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		tb.Fatalf("redistest: %s %s: %v\n%s", cli, strings.Join(args, " "), err, out)
	}
	servertest.WaitFor(tb, setupTimeout, "the cluster to be ok on every node", func() bool {
		for _, s := range c.Nodes {
			info, err := s.Exec("CLUSTER", "INFO")
			if err != nil || !strings.Contains(info, "cluster_state:ok") ||
				!strings.Contains(info, "cluster_known_nodes:6") || !strings.Contains(info, "cluster_slots_ok:16384") {
				return false
			}
			if r, err := s.Exec("INFO", "replication"); err != nil ||
				strings.Contains(r, "role:slave") && !strings.Contains(r, "master_link_status:up") {
				return false
			}
		}
		return true
	})
	return c
}

// URL is the Cluster URL of the three first nodes as the gateway reads
// it (REDIS_URL).
func (c *Cluster) URL() string {
	u := "redis://" + c.Nodes[0].Addr() + "?addr=" + c.Nodes[1].Addr() + "&addr=" + c.Nodes[2].Addr()
	return u
}

// Client returns a rueidis client in cluster mode (made on first use,
// closed by a cleanup), which sends SPUBLISH to the node owning the
// channel's slot.
func (c *Cluster) Client(tb testing.TB) rueidis.Client {
	tb.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rc == nil {
		var addrs []string
		for _, s := range c.Nodes {
			addrs = append(addrs, s.Addr())
		}
		rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: addrs, DisableCache: true,
			ClusterOption: rueidis.ClusterOption{ShardsRefreshInterval: 500 * time.Millisecond}})
		if err != nil {
			tb.Fatalf("redistest: cluster client: %v", err)
		}
		c.rc = rc
	}
	return c.rc
}

// MasterOf returns the master node serving channel's slot, as CLUSTER
// SLOTS on a running node says.
func (c *Cluster) MasterOf(tb testing.TB, channel string) *Server {
	tb.Helper()
	for _, s := range c.Nodes {
		if !s.Running() {
			continue
		}
		slotStr, err := s.Exec("CLUSTER", "KEYSLOT", channel)
		if err != nil {
			continue
		}
		slot, _ := strconv.Atoi(slotStr)
		cl, err := s.client()
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		ranges, err := cl.Do(ctx, cl.B().ClusterSlots().Build()).ToArray()
		cancel()
		if err != nil {
			continue
		}
		for _, r := range ranges {
			f, err := r.ToArray()
			if err != nil || len(f) < 3 {
				continue
			}
			lo, _ := f[0].AsInt64()
			hi, _ := f[1].AsInt64()
			if int64(slot) < lo || int64(slot) > hi {
				continue
			}
			node, err := f[2].ToArray()
			if err != nil || len(node) < 2 {
				continue
			}
			port, _ := node[1].AsInt64()
			for _, n := range c.Nodes {
				if n.Port() == int(port) {
					return n
				}
			}
		}
	}
	tb.Fatalf("redistest: no node serves the slot of %q", channel)
	return nil
}

// ReplicaOf returns the running node that replicates master.
func (c *Cluster) ReplicaOf(tb testing.TB, master *Server) *Server {
	tb.Helper()
	for _, s := range c.Nodes {
		if r, err := s.Exec("ROLE"); err == nil && strings.HasPrefix(r, "slave ") &&
			slices.Contains(strings.Fields(r), strconv.Itoa(master.Port())) {
			return s
		}
	}
	tb.Fatalf("redistest: no replica of %s", master.Addr())
	return nil
}

// Sum adds up an integer-valued command over the running nodes: pub/sub
// counts (PUBSUB NUMSUB, SHARDNUMSUB, NUMPAT) are each node's own.
// NUMSUB and SHARDNUMSUB name one channel and count its subscribers.
func (c *Cluster) Sum(tb testing.TB, args ...string) int {
	tb.Helper()
	total := 0
	for _, s := range c.Nodes {
		if !s.Running() {
			continue
		}
		r, err := s.Exec(args...)
		if err != nil {
			continue // killed meanwhile
		}
		f := strings.Fields(r)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.Atoi(f[len(f)-1])
		if err != nil {
			tb.Fatalf("redistest: %s on %s: %q", strings.Join(args, " "), s.Addr(), r)
		}
		total += n
	}
	return total
}
