package main

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseCounters(t *testing.T) {
	status := "Name:\tgateway\nState:\tS (sleeping)\nVmRSS:\t   30504 kB\nvoluntary_ctxt_switches:\t1234\nnonvoluntary_ctxt_switches:\t56\n"
	io := "rchar: 6976\nwchar: 0\nsyscr: 10\nsyscw: 20\nread_bytes: 0\n"
	for _, tc := range []struct {
		name        string
		status, io  string
		vol, invol  int64
		syscr, sysw int64
	}{
		{"both", status, io, 1234, 56, 10, 20},
		{"empty", "", "", 0, 0, 0, 0},
		{"no switches", "Name:\tx\n", "syscw: 7\n", 0, 0, 0, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, i := parseCtxSwitches([]byte(tc.status))
			r, w := parseIOSyscalls([]byte(tc.io))
			if v != tc.vol || i != tc.invol || r != tc.syscr || w != tc.sysw {
				t.Errorf("got %d %d %d %d, want %d %d %d %d", v, i, r, w, tc.vol, tc.invol, tc.syscr, tc.sysw)
			}
		})
	}
	if got := statusNumber([]byte(status), "VmRSS:"); got != 30504 {
		t.Errorf("VmRSS = %d", got)
	}
}

func TestProcCountersSub(t *testing.T) {
	a := procCounters{VolCtx: 10, InvolCtx: 5, Syscr: 3, Syscw: 4}
	b := procCounters{VolCtx: 4, InvolCtx: 7, Syscr: 1, Syscw: 4}
	// A thread that exited takes its switches along: never below 0.
	if got, want := a.sub(b), (procCounters{6, 0, 2, 0}); got != want {
		t.Errorf("sub = %+v, want %+v", got, want)
	}
	if got, want := a.add(b), (procCounters{14, 12, 4, 8}); got != want {
		t.Errorf("add = %+v, want %+v", got, want)
	}
	if c := countersOf(0); c != (procCounters{}) {
		t.Errorf("pid 0 read %+v", c)
	}
}

func TestGatewayFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		err     string // substring; "" for success
		count   int
		addrs   []string
		pids    []int
		backend []string
	}{
		{name: "started", args: nil, count: 1},
		{name: "started, three", args: []string{"-gateways", "3"}, count: 3},
		{name: "one running", args: []string{"-addr", "localhost:8889", "-pid", "42"}, count: 1, addrs: []string{"127.0.0.1:8889"}, pids: []int{42}},
		{name: "two running", args: []string{"-addr", "127.0.0.1:1,127.0.0.2:2", "-pid", "1, 2"}, count: 2,
			addrs: []string{"127.0.0.1:1", "127.0.0.2:2"}, pids: []int{1, 2}},
		{name: "two without pids", args: []string{"-addr", "127.0.0.1:1,127.0.0.1:2"}, count: 2, addrs: []string{"127.0.0.1:1", "127.0.0.1:2"}},
		{name: "balancer with pids", args: []string{"-addr", "127.0.0.1:80", "-pid", "7,8"}, count: 2, addrs: []string{"127.0.0.1:80"}, pids: []int{7, 8}},
		{name: "balancer with backends", args: []string{"-addr", "127.0.0.1:80", "-pid", "7,8", "-backends", "127.0.0.1:1,127.0.0.1:2"}, count: 2,
			addrs: []string{"127.0.0.1:80"}, pids: []int{7, 8}, backend: []string{"127.0.0.1:1", "127.0.0.1:2"}},
		{name: "pid count", args: []string{"-addr", "127.0.0.1:1,127.0.0.1:2", "-pid", "1"}, err: "one pid per address"},
		{name: "backend count", args: []string{"-addr", "127.0.0.1:80", "-pid", "1,2,3", "-backends", "127.0.0.1:1,127.0.0.1:2"}, err: "one pid per backend"},
		{name: "backends with a list", args: []string{"-addr", "127.0.0.1:1,127.0.0.1:2", "-backends", "127.0.0.1:3"}, err: "-backends is for one -addr"},
		{name: "not loopback", args: []string{"-addr", "127.0.0.1:1,10.0.0.1:2"}, err: "only 127.0.0.0/8"},
		{name: "empty item", args: []string{"-addr", "127.0.0.1:1,"}, err: "empty address"},
		{name: "bad pid", args: []string{"-addr", "127.0.0.1:1", "-pid", "x"}, err: "process ids"},
		{name: "pid alone", args: []string{"-pid", "5"}, err: "-pid needs -addr"},
		{name: "addr and gateways", args: []string{"-addr", "127.0.0.1:1", "-gateways", "2"}, err: "not with -gateway"},
		{name: "no gateways", args: []string{"-gateways", "0"}, err: "at least 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := parseExpect(t, tc.args, tc.err)
			if c == nil {
				return
			}
			if got := c.gatewayCount(); got != tc.count {
				t.Errorf("gatewayCount = %d, want %d", got, tc.count)
			}
			if !reflect.DeepEqual(c.Addrs, tc.addrs) || !reflect.DeepEqual(c.Pids, tc.pids) || !reflect.DeepEqual(c.Backends, tc.backend) {
				t.Errorf("addrs %v pids %v backends %v", c.Addrs, c.Pids, c.Backends)
			}
			if len(c.Addrs) == 0 {
				return
			}
			gws, dial := runningTargets(c)
			if len(gws) != tc.count || !reflect.DeepEqual(dial, tc.addrs) {
				t.Errorf("%d targets, dial %v", len(gws), dial)
			}
			for i, g := range gws {
				if len(tc.pids) > 0 && g.pid != tc.pids[i] {
					t.Errorf("target %d pid %d", i, g.pid)
				}
				switch {
				case len(tc.backend) > 0 && g.addr != tc.backend[i]:
					t.Errorf("target %d addr %q, want the backend", i, g.addr)
				case len(tc.addrs) == tc.count && g.addr != tc.addrs[i]:
					t.Errorf("target %d addr %q", i, g.addr)
				}
			}
		})
	}
}

func TestSumReadings(t *testing.T) {
	a := &gwStats{Connections: 3, Received: 10, Delivered: 30, Dropped: 1, Version: "v1"}
	a.Redis.Connected = true
	b := &gwStats{Connections: 4, Received: 10, Delivered: 40}
	b.Redis.Connected = true
	rs := []gwReading{
		{cpu: 2, rss: 100, ctr: procCounters{VolCtx: 1}, gs: a},
		{cpu: 3, rss: 200, ctr: procCounters{VolCtx: 2, Syscw: 5}, gs: b},
	}
	cpu, rss, ctr, gs := sumReadings(rs, []bool{true, true})
	if cpu != 5 || rss != 300 || ctr != (procCounters{VolCtx: 3, Syscw: 5}) {
		t.Errorf("cpu %v rss %d ctr %+v", cpu, rss, ctr)
	}
	if gs == nil || gs.Connections != 7 || gs.Received != 20 || gs.Delivered != 70 || gs.Dropped != 1 || !gs.Redis.Connected || gs.Version != "v1" {
		t.Errorf("stats %+v", gs)
	}
	// A gateway whose /stats did not answer makes the sum unknown, not
	// smaller.
	rs[1].gs = nil
	if _, _, _, gs := sumReadings(rs, []bool{true, true}); gs != nil {
		t.Errorf("partial stats summed: %+v", gs)
	}
	// One without an address (behind a balancer) is not expected to.
	if _, _, _, gs := sumReadings(rs, []bool{true, false}); gs == nil || gs.Connections != 3 {
		t.Errorf("stats of the addressed gateway: %+v", gs)
	}
}

func TestCostPerMessage(t *testing.T) {
	var c Cost
	c.gatewayCost(2e9, procCounters{VolCtx: 300, InvolCtx: 30, Syscr: 150, Syscw: 600}, 10, 1000, 300)
	want := Cost{GwCPUSeconds: 2, GwCPUPercent: 20, GwCPUPerFrameUS: 2000, GwWriteSyscalls: 600, GwFramesPerWrite: 1.667,
		GwMessages: 300, GwVolCtx: 300, GwInvolCtx: 30, GwReadSyscalls: 150,
		GwVolCtxPerMsg: 1, GwInvolCtxPerMsg: 0.1, GwSyscrPerMsg: 0.5, GwSyscwPerMsg: 2}
	if c != want {
		t.Errorf("got  %+v\nwant %+v", c, want)
	}
	var none Cost
	none.gatewayCost(0, procCounters{}, 1, 0, 0)
	if none.GwVolCtxPerMsg != 0 || none.GwCPUPerFrameUS != 0 {
		t.Errorf("no messages: %+v", none)
	}
}

// TestBalancerPid: -balancer-pid goes with one -addr (the balancer), its
// processes' CPU is read from /proc and summed, and the summary shows it
// per connect and per frame beside the gateways'.
func TestBalancerPid(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		pids []int
		err  string
	}{
		{name: "two processes", args: []string{"-addr", "127.0.0.1:80", "-balancer-pid", "7, 8", "-pid", "1,2", "-backends", "127.0.0.1:1,127.0.0.1:2"}, pids: []int{7, 8}},
		{name: "with a list of gateways", args: []string{"-addr", "127.0.0.1:1,127.0.0.1:2", "-balancer-pid", "7"}, err: "-balancer-pid is for one -addr"},
		{name: "without -addr", args: []string{"-balancer-pid", "7"}, err: "-balancer-pid is for one -addr"},
		{name: "bad pid", args: []string{"-addr", "127.0.0.1:80", "-balancer-pid", "7,x"}, err: "-balancer-pid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := parseExpect(t, tc.args, tc.err)
			if c != nil && !reflect.DeepEqual(c.BalancerPids, tc.pids) {
				t.Errorf("balancer pids %v, want %v", c.BalancerPids, tc.pids)
			}
		})
	}

	t.Run("cpu", func(t *testing.T) {
		self := os.Getpid()
		r := &runner{cfg: &Config{BalancerPids: []int{self, self}}}
		// Use CPU until /proc shows some (it counts in clock ticks).
		var one time.Duration
		for deadline := time.Now().Add(10 * time.Second); one == 0; {
			var err error
			if one, err = cpuOf(self); err != nil {
				t.Fatal(err)
			}
			if time.Now().After(deadline) {
				t.Fatal("no CPU time read for this process")
			}
		}
		// Twice the same process: the sum is at least twice what one
		// read before says.
		if got := r.balancerCPU(); got < 2*one || got <= 0 {
			t.Errorf("balancerCPU %v, want at least 2 × %v", got, one)
		}
		if got := (&runner{cfg: &Config{BalancerPids: []int{1 << 30}}}).balancerCPU(); got != 0 {
			t.Errorf("a process that is gone: %v, want 0", got)
		}
	})

	t.Run("summary", func(t *testing.T) {
		rep := &Report{
			Connect: &ConnectResult{Connected: 10, Target: 10, GwCPUPerConnectUS: 100, BalancerCPUPerConnectUS: 50},
			Cost:    &Cost{GwCPUPerFrameUS: 4, BalancerCPUSeconds: 1, BalancerCPUPercent: 10, BalancerCPUPerFrameUS: 2},
		}
		out := strings.Join(rep.summaryLines(), "\n")
		for _, want := range []string{"balancer 50.0 µs CPU per connect (gateways and balancer 150.0)", "balancer 10.0% CPU = 2.000 µs per frame (gateways and balancer 6.000)"} {
			if !strings.Contains(out, want) {
				t.Errorf("summary lacks %q:\n%s", want, out)
			}
		}
		rep.Connect.BalancerCPUPerConnectUS, rep.Cost.BalancerCPUSeconds = 0, 0
		if out := strings.Join(rep.summaryLines(), "\n"); strings.Contains(out, "balancer") {
			t.Errorf("no -balancer-pid, yet:\n%s", out)
		}
	})
}
