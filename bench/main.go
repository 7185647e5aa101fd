// Command bench is the gateway's load harness: go run ./bench -help.
//
// Scenarios: idle, fanout, spread, churn, sweep, fairness, storm, replay,
// floor; -durable runs fanout or spread on durable channels beside pub/sub
// (see docs/BENCHMARKS.md). The harness starts a redis-server and one or
// more gateways itself on free loopback ports (or uses -redis, -addr and
// -pid), opens the client sockets from worker subprocesses of itself,
// publishes through rueidis, prints a progress line every second and
// writes a JSON report (-out) and a self-contained HTML page (-html).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Config is every flag of the harness.
type Config struct {
	Scenario     string
	N            int
	Channels     int
	Rate         float64
	Size         int
	Duration     time.Duration
	PatternShare float64
	ChurnRate    float64
	Step         time.Duration
	Factor       float64
	MaxP99       time.Duration
	MaxRate      float64
	Floor        bool
	FloorK       int
	Stalled      int
	MaxP99Ratio  float64
	StormMode    string
	StormHold    time.Duration
	Durable      bool // -durable: pub/sub and durable phases side by side
	// ReplayEntries is -scenario replay's part (a): entries in the one
	// stream replayed whole to one client (0: skip part a).
	ReplayEntries int
	sizeSet       bool // -size was given
	patternSet    bool // -pattern-share was given
	durationSet   bool
	concSet       bool // -connect-concurrency was given

	Workers          int
	ClientLoops      int
	PerAddr          int
	ConnConcurrency  int
	ConnectRate      float64
	HandshakeTimeout time.Duration
	ConnectTimeout   time.Duration
	Settle           time.Duration
	Prefix           string

	Gateway      string
	GatewayArgs  string
	EventLoops   int
	Gateways     int    // -gateways: how many the harness starts
	Addr         string // -addr: running gateways, or one balancer
	Pid          string // -pid: their pids
	BackendsFlag string // -backends: the gateways behind the balancer
	BalancerPid  string // -balancer-pid: the balancer's processes
	Redis        string
	RedisServer  string
	Addrs        []string // parsed -addr
	Pids         []int
	Backends     []string
	BalancerPids []int // parsed -balancer-pid
	Admins       []string

	Admin       string
	Profile     string
	HeapProfile string

	Out     string
	HTML    string
	Compare string
	Rounds  int
	Quiet   bool
	Keep    bool
}

var scenarios = map[string]struct {
	n        int
	rate     float64
	channels int
	help     string
}{
	"idle":     {10000, 0, 100, "N sockets, each subscribed to one of C channels, held idle: connects/s, gateway RSS and CPU per socket (-floor: and against the connect floor)"},
	"fanout":   {10000, 10, 1, "N subscribers of one channel, R messages/s of S bytes: delivered/s, latency, gaps, drops, CPU per frame"},
	"spread":   {10000, 1000, 0, "N sockets, each on its own channel plus one shared pattern; messages spread over the channels"},
	"churn":    {1000, 0, 100, "N sockets, -churn-rate per second leave and come back (connect, upgrade, subscribe)"},
	"sweep":    {1000, 100, 1, "fanout with R raised by -factor per -step until p99 > -max-p99 or drops: highest sustained rate"},
	"floor":    {10000, 10, 1, "the floor only: the gateway's frames written to N sockets at R/s by a plain writer (adaptive, write(2), writev(2)): CPU per frame and latency"},
	"storm":    {15000, 100, 100, "N sockets on C channels, R messages/s; then the gateway restarts (-storm-mode restart: SIGTERM, paced 1001 closes; kill: SIGKILL) or every socket drops (drop); the clients come back with the browser client's backoff: time until all are back, 503 refusals, gateway CPU and peak RSS, messages lost while down (-duration: the budget for coming back, 60s unless given)"},
	"replay":   {1000, 100, 1, "durable channels (Redis Streams): (a) one stream of -replay-entries entries of S bytes replayed whole to one client (since 0-0): entries/s; (b) N clients reading one durable channel live while R entries/s are added, the gateway restarted (-storm-mode restart or kill, after -storm-hold): time until every client has its replayed frame after resuming with since = its last id, replayed entries/s, gaps and duplicates against the stream (-duration: the budget for coming back, 60s unless given)"},
	"fairness": {1000, 200, 1, "fanout without and then with -stalled K sockets that never read (A B per -rounds; -size 2048 unless given): the measured sockets' p50/p99/p99.9 and their ratio, losses, the stalled sockets' drops"},
}

func parseFlags(args []string, stderr io.Writer) (*Config, error) {
	c := &Config{}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: go run ./bench [flags]\n\nScenarios (-scenario):\n")
		names := make([]string, 0, len(scenarios))
		for k := range scenarios {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			s := scenarios[k]
			fmt.Fprintf(stderr, "  %-8s %s (default -n %d", k, s.help, s.n)
			if s.rate > 0 {
				fmt.Fprintf(stderr, ", -rate %g", s.rate)
			}
			fmt.Fprintf(stderr, ")\n")
		}
		fmt.Fprintf(stderr, "\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&c.Scenario, "scenario", "fanout", "idle, fanout, spread, churn, sweep, fairness, storm, replay or floor")
	fs.IntVar(&c.N, "n", 0, "sockets (0: the scenario's default)")
	fs.IntVar(&c.Channels, "channels", -1, "idle/churn/storm: channels the sockets are spread over (-1: 100)")
	fs.Float64Var(&c.Rate, "rate", -1, "messages published per second (sweep: the first step; -1: the scenario's default)")
	fs.IntVar(&c.Size, "size", 100, "payload bytes per message ({\"t\":<unix nanos>,\"pad\":\"xxx\"})")
	fs.DurationVar(&c.Duration, "duration", 10*time.Second, "measured time (idle: hold; sweep: total budget of the steps)")
	fs.Float64Var(&c.PatternShare, "pattern-share", 0.01, "spread: share of messages sent to the shared pattern (each reaches every socket); -durable forces 0 (no pattern subscription in either phase) and refuses a share above 0")
	fs.Float64Var(&c.ChurnRate, "churn-rate", 200, "churn: sockets leaving and coming back per second")
	fs.DurationVar(&c.Step, "step", 2*time.Second, "sweep: duration of each step")
	fs.Float64Var(&c.Factor, "factor", 2, "sweep: rate multiplier between steps")
	fs.DurationVar(&c.MaxP99, "max-p99", 50*time.Millisecond, "sweep: p99 threshold")
	fs.Float64Var(&c.MaxRate, "max-rate", 1e6, "sweep: never publish faster than this")
	fs.BoolVar(&c.Floor, "floor", false, "fanout/spread/sweep: also measure the floor (a plain writer of the same frames) at the same sockets and rate with the same client, and print gateway ÷ floor for CPU per frame and latency p50/p99/p99.9; idle: the connect floor (accept, upgrade answer, one small write) and gateway ÷ floor CPU per connect")
	fs.IntVar(&c.FloorK, "floor-k", 8, "floor: frames per writev(2) in the batched run (the other run uses write(2) per frame)")
	fs.IntVar(&c.Stalled, "stalled", 0, "fanout/spread/sweep/fairness: extra sockets that subscribe like the measured ones and never read again, outside every statistic of the measured sockets (fairness: 0 means 1)")
	fs.Float64Var(&c.MaxP99Ratio, "max-p99-ratio", 1.5, "fairness: the largest p99 with ÷ without stalled sockets that passes")
	fs.BoolVar(&c.Durable, "durable", false, "fanout/spread: run pub/sub and durable channels (Redis Streams) side by side in one run, -rounds pairs of windows (pub/sub, then durable) with the same N, rate, size and client: the started gateway gets -stream-channels '<prefix>:durable:*' and the durable publisher sends XADD stream:<channel> MAXLEN ~ 100000 * data <payload>; prints gateway CPU µs per delivered frame, p50/p99/p99.9 of both and durable ÷ pub/sub (target: within 1.3x). Not with -floor or -stalled; spread: -pattern-share 0")
	fs.IntVar(&c.ReplayEntries, "replay-entries", 100000, "replay: entries of part (a)'s stream, replayed whole to one client (0: skip part a); the started gateway gets -max-replay max(this, 1000) (at most 1000000) unless -gateway-args sets it")
	fs.StringVar(&c.StormMode, "storm-mode", "restart", "storm, replay (restart or kill): restart (SIGTERM to the gateway, which paces its 1001 closes, then started again on the same port), kill (SIGKILL, then started again) or drop (every client socket reset at once)")
	fs.DurationVar(&c.StormHold, "storm-hold", 2*time.Second, "storm, replay: publishing with every socket connected before the event")

	fs.IntVar(&c.Workers, "workers", -1, "client worker processes (-1: as many as RLIMIT_NOFILE requires, at least 1; 0: client inside the harness process)")
	fs.IntVar(&c.ClientLoops, "client-loops", 2, "gnet event loops of the client, over all workers")
	fs.IntVar(&c.PerAddr, "per-addr", 25000, "sockets per source address 127.0.0.1, 127.0.0.2, ... (capped by the ephemeral port range)")
	fs.IntVar(&c.ConnConcurrency, "connect-concurrency", 256, "handshakes in flight, over all workers")
	fs.Float64Var(&c.ConnectRate, "connect-rate", 0, "new connections per second (0: as fast as -connect-concurrency allows)")
	fs.DurationVar(&c.HandshakeTimeout, "handshake-timeout", 10*time.Second, "dial to subscribe ack, per socket")
	fs.DurationVar(&c.ConnectTimeout, "connect-timeout", 0, "the whole connect phase (0: 30s + 1ms per socket)")
	fs.DurationVar(&c.Settle, "settle", time.Second, "pause after connecting, before reading the gateway's RSS")
	fs.StringVar(&c.Prefix, "prefix", "market:tick:bench", "channel prefix (the default role may read market:tick:*)")

	fs.StringVar(&c.Gateway, "gateway", "", "gateway to start: an executable, or a package directory to build (default ./cmd/gateway)")
	fs.StringVar(&c.GatewayArgs, "gateway-args", "", "extra flags for the started gateway, space-separated (e.g. \"-send-queue-size 256\")")
	fs.IntVar(&c.EventLoops, "event-loops", 0, "-event-loops of the started gateway (0: its default, one per CPU)")
	fs.IntVar(&c.Gateways, "gateways", 1, "how many gateways to start (same binary, same Redis); the sockets are split between them in blocks and every figure is reported per gateway and in total")
	fs.StringVar(&c.Addr, "addr", "", "use running gateways instead of starting one: host:port (127.0.0.0/8), or a comma-separated list of gateways (the sockets are split between them), or one load balancer (see -backends)")
	fs.StringVar(&c.Pid, "pid", "", "with -addr: the gateways' pids, comma-separated in the order of -addr (or of -backends), to read their CPU, RSS, context switches and system calls from /proc")
	fs.StringVar(&c.BackendsFlag, "backends", "", "with one -addr that is a load balancer: the gateways behind it (host:port each, comma-separated, in the order of -pid), for their /stats")
	fs.StringVar(&c.BalancerPid, "balancer-pid", "", "with one -addr that is a load balancer: its pids (comma-separated, e.g. several HAProxy processes on one port), whose CPU is reported apart, per connect and per frame, and is not counted as noise")
	fs.StringVar(&c.Admin, "admin", "", "with -addr: the gateways' admin listeners (host:port, comma-separated), for -profile and -heap-profile (of the first)")
	fs.StringVar(&c.Profile, "profile", "", "save a CPU profile (pprof) of the gateway over the measured window here (needs its admin listener); -durable: of the first durable window, and of the first pub/sub window in the same name with .pubsub before the extension")
	fs.StringVar(&c.HeapProfile, "heap-profile", "", "save a heap profile (pprof) of the gateway once the sockets are connected here")
	fs.StringVar(&c.Redis, "redis", "", "use this Redis (host:port, 127.0.0.0/8) instead of starting redis-server")
	fs.StringVar(&c.RedisServer, "redis-server", "redis-server", "redis-server binary to start")

	fs.StringVar(&c.Out, "out", "", "write the JSON report here")
	fs.StringVar(&c.HTML, "html", "", "write a self-contained HTML page here")
	fs.StringVar(&c.Compare, "compare", "", "binA,binB: run the scenario against two gateways in alternation (A B A B ...) and print the ratios")
	fs.IntVar(&c.Rounds, "rounds", 2, "compare: rounds (each runs A then B); fairness: pairs of windows without and with stalled sockets; -durable: pairs of windows pub/sub then durable")
	fs.BoolVar(&c.Quiet, "q", false, "no progress lines")
	fs.BoolVar(&c.Keep, "keep", false, "keep the temporary directory (gateway and redis logs)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	// The flags whose scenario default differs from the flag's.
	given := map[string]*bool{"size": &c.sizeSet, "duration": &c.durationSet, "connect-concurrency": &c.concSet, "pattern-share": &c.patternSet}
	fs.Visit(func(f *flag.Flag) {
		if p, ok := given[f.Name]; ok {
			*p = true
		}
	})
	return c, c.finish()
}

// finish applies the scenario defaults and checks the flags.
func (c *Config) finish() error {
	d, ok := scenarios[c.Scenario]
	if !ok {
		return fmt.Errorf("-scenario %q: want idle, fanout, spread, churn, sweep, fairness, storm, replay or floor", c.Scenario)
	}
	if c.N == 0 {
		c.N = d.n
	}
	if c.Rate < 0 {
		c.Rate = d.rate
	}
	if c.Channels < 0 {
		c.Channels = d.channels
	}
	switch c.Scenario {
	case "fanout", "sweep", "floor", "fairness", "replay":
		c.Channels = 1
	case "spread":
		c.Channels = 0
	}
	if c.Scenario == "fairness" {
		// The stalled sockets must overflow the gateway's per-socket
		// queue within seconds: SEND_QUEUE_SIZE frames behind
		// MAX_OUTBOUND_BYTES bytes.
		if !c.sizeSet {
			c.Size = 2048
		}
		if c.Stalled == 0 {
			c.Stalled = 1
		}
	}
	if c.Durable && c.Scenario == "spread" && !c.patternSet {
		c.PatternShare = 0
	}
	if c.Scenario == "storm" || c.Scenario == "replay" {
		// Coming back may take several backoff steps (up to 15 s each).
		if !c.durationSet {
			c.Duration = time.Minute
		}
		// Reconnecting browsers do not wait for each other: far more
		// handshakes in flight than a connect burst needs.
		if !c.concSet {
			c.ConnConcurrency = 4096
		}
	}
	if err := c.checkTargets(); err != nil {
		return err
	}
	if c.Redis != "" {
		c.Redis = strings.Replace(c.Redis, "localhost:", "127.0.0.1:", 1)
	}
	ports := ephemeralPorts()
	if c.PerAddr > ports-500 {
		c.PerAddr = max(ports-500, 1)
	}
	switch {
	case c.N < 1:
		return errors.New("-n must be at least 1")
	case c.Duration <= 0:
		return errors.New("-duration must be positive")
	case c.Size < 32 || c.Size > 1<<20:
		return errors.New("-size must be between 32 and 1048576")
	case (c.Scenario == "fanout" || c.Scenario == "spread" || c.Scenario == "sweep" || c.Scenario == "floor" || c.Scenario == "fairness" || c.Scenario == "storm" || c.Scenario == "replay") && c.Rate <= 0:
		return fmt.Errorf("-scenario %s needs -rate > 0", c.Scenario)
	case c.Scenario == "churn" && c.ChurnRate <= 0:
		return errors.New("-churn-rate must be positive")
	case c.Scenario == "sweep" && (c.Factor <= 1 || c.Step <= 0 || c.MaxP99 <= 0):
		return errors.New("sweep needs -factor > 1, -step > 0 and -max-p99 > 0")
	case c.PatternShare < 0 || c.PatternShare > 1:
		return errors.New("-pattern-share must be between 0 and 1")
	case c.Rounds < 1:
		return errors.New("-rounds must be at least 1")
	case c.Stalled < 0:
		return errors.New("-stalled must not be negative")
	case c.Stalled > 0 && c.Scenario != "fanout" && c.Scenario != "spread" && c.Scenario != "sweep" && c.Scenario != "fairness":
		return fmt.Errorf("-stalled is for fanout, spread, sweep and fairness, not %s", c.Scenario)
	case c.Scenario == "fairness" && c.MaxP99Ratio <= 0:
		return errors.New("-max-p99-ratio must be positive")
	case c.Durable && c.Scenario != "fanout" && c.Scenario != "spread":
		return fmt.Errorf("-durable is for fanout and spread, not %s", c.Scenario)
	case c.Durable && (c.Floor || c.Stalled > 0):
		return errors.New("-durable does not go with -floor or -stalled")
	case c.Durable && c.Scenario == "spread" && c.PatternShare > 0:
		return errors.New("-durable measures exact channels only: -pattern-share must be 0")
	case c.Scenario == "replay" && (c.StormMode != "restart" && c.StormMode != "kill"):
		return fmt.Errorf("replay: -storm-mode %q: want restart or kill", c.StormMode)
	case c.Scenario == "replay" && (len(c.Addrs) > 0 || c.Gateways > 1):
		return errors.New("replay restarts the gateway: the harness must start it (no -addr, -gateways 1)")
	case c.Scenario == "replay" && (c.ReplayEntries < 0 || c.ReplayEntries > 1000000):
		return errors.New("-replay-entries must be between 0 and 1000000 (MAX_REPLAY's limit)")
	case (c.Scenario == "replay" || c.Durable) && c.Compare != "":
		return errors.New("-compare does not go with -durable or -scenario replay: they compare within one run")
	case c.Scenario == "storm" && c.StormMode != "restart" && c.StormMode != "kill" && c.StormMode != "drop":
		return fmt.Errorf("-storm-mode %q: want restart, kill or drop", c.StormMode)
	case c.Scenario == "storm" && c.StormHold <= 0:
		return errors.New("-storm-hold must be positive")
	case c.Scenario == "storm" && c.gatewayCount() > 1:
		return errors.New("storm drives one gateway (-gateways 1, one -addr)")
	case c.Scenario == "storm" && len(c.Addrs) > 0 && c.StormMode != "drop":
		return fmt.Errorf("-storm-mode %s restarts the gateway, so the harness must start it: use -storm-mode drop with -addr", c.StormMode)
	case c.ClientLoops < 1:
		return errors.New("-client-loops must be at least 1")
	case c.ConnConcurrency < 1:
		return errors.New("-connect-concurrency must be at least 1")
	}
	if c.Redis != "" {
		if err := loopbackOnly("-redis", c.Redis); err != nil {
			return err
		}
	}
	if c.Gateway == "" && len(c.Addrs) == 0 {
		c.Gateway = "./cmd/gateway"
	}
	return nil
}

func (c *Config) params() Params {
	p := Params{
		Sockets: c.N, Channels: c.Channels, Rate: c.Rate, Size: c.Size, DurationS: c.Duration.Seconds(),
		Workers: c.Workers, ClientLoops: c.ClientLoops, PerAddr: c.PerAddr, ConnConcurrency: c.ConnConcurrency,
		Prefix: c.Prefix, GatewayEventLoop: c.EventLoops, Floor: c.Floor, Stalled: c.Stalled,
	}
	switch c.Scenario {
	case "spread":
		p.PatternShare = c.PatternShare
	case "churn":
		p.ChurnRate = c.ChurnRate
	case "sweep":
		p.StepS, p.Factor, p.MaxP99US = c.Step.Seconds(), c.Factor, c.MaxP99.Microseconds()
	case "fairness":
		p.Rounds = c.Rounds
	case "storm":
		p.StormMode, p.StormHoldS = c.StormMode, c.StormHold.Seconds()
	case "replay":
		p.StormMode, p.StormHoldS, p.ReplayEntries = c.StormMode, c.StormHold.Seconds(), c.ReplayEntries
	}
	if c.Durable {
		p.Durable, p.Rounds = true, c.Rounds
	}
	if c.Floor || c.Scenario == "floor" {
		p.FloorK = c.FloorK
	}
	return p
}

// env is what one invocation shares between runs: the temporary
// directory and Redis.
type env struct {
	dir        string
	redis      *proc
	redisAddr  string
	redisPid   int
	redisOwned bool
}

func setupEnv(cfg *Config) (*env, error) {
	dir, err := os.MkdirTemp("", "wsgw-bench-")
	if err != nil {
		return nil, err
	}
	e := &env{dir: dir}
	if cfg.Scenario == "floor" {
		return e, nil
	}
	if cfg.Redis != "" {
		e.redisAddr = cfg.Redis
		if err := waitRedis(cfg.Redis, nil, 5*time.Second); err != nil {
			return e, fmt.Errorf("-redis %s: %w", cfg.Redis, err)
		}
		return e, nil
	}
	p, addr, err := startRedis(cfg.RedisServer, dir)
	if err != nil {
		return e, err
	}
	e.redis, e.redisAddr, e.redisPid, e.redisOwned = p, addr, p.pid(), true
	return e, nil
}

func (e *env) close(keep bool) {
	if e.redis != nil {
		e.redis.stop(5 * time.Second)
	}
	if keep {
		fmt.Fprintf(os.Stderr, "logs kept in %s\n", e.dir)
		return
	}
	_ = os.RemoveAll(e.dir)
}

// runOnce runs the scenario against one gateway: bin (started here) or
// cfg.Addr.
func runOnce(ctx context.Context, cfg *Config, e *env, bin string) (*Report, error) {
	soft, hard := raiseNofile()
	rep := &Report{
		Scenario: cfg.Scenario, Command: append([]string{"bench"}, os.Args[1:]...), Started: time.Now(),
		Params: cfg.params(), Host: hostInfo(), Timeline: []Sample{},
	}
	rep.Host.NofileSoft, rep.Host.NofileHard = soft, hard
	r := newRunner(ctx, cfg, rep)
	r.redisAddr, r.redisPid = e.redisAddr, e.redisPid
	rep.Gateway.Redis, rep.Gateway.RedisOwned = e.redisAddr, e.redisOwned
	if cfg.Scenario != "floor" {
		if err := r.setupGateways(e, bin); err != nil {
			r.stopGateways()
			return rep, err
		}
	}
	err := r.runScenario()
	r.close()
	r.waitProfile()
	err = errors.Join(err, r.stopGateways())
	rep.Seconds = round3(time.Since(rep.Started).Seconds())
	if err != nil {
		rep.Error = err.Error()
	}
	return rep, err
}

func main() {
	if code, ok := subprocessMain(); ok {
		os.Exit(code)
	}
	os.Exit(benchMain(os.Args[1:], os.Stdout, os.Stderr))
}

func benchMain(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e, err := setupEnv(cfg)
	if e != nil {
		defer e.close(cfg.Keep)
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	if cfg.Compare != "" {
		return compare(ctx, cfg, e, stdout, stderr)
	}
	bin := ""
	if len(cfg.Addrs) == 0 && cfg.Scenario != "floor" {
		if bin, err = buildGateway(cfg.Gateway, e.dir); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
	}
	rep, err := runOnce(ctx, cfg, e, bin)
	if cfg.Gateway != "" && rep.Gateway.Binary != "" {
		rep.Gateway.Binary = cfg.Gateway
	}
	for _, l := range rep.summaryLines() {
		fmt.Fprintln(stdout, l)
	}
	code := 0
	if err != nil {
		code = 1
	}
	if cfg.Out != "" {
		if werr := writeJSON(cfg.Out, rep); werr != nil {
			fmt.Fprintln(stderr, "bench:", werr)
			code = 1
		}
	}
	if cfg.HTML != "" {
		if werr := writeHTML(cfg.HTML, reportHTML(rep), "wsgw load: "+rep.Scenario); werr != nil {
			fmt.Fprintln(stderr, "bench:", werr)
			code = 1
		}
	}
	return code
}
