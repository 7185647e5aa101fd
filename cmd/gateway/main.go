// Command gateway forwards Redis pub/sub messages to WebSocket clients.
//
// Configuration comes from environment variables and flags (gateway
// -help lists them); docs/CONFIGURATION.md has the full table.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"

	"github.com/wsgw/gateway/auth"
	"github.com/wsgw/gateway/server"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	showVersion := fs.Bool("version", false, "print the version and exit")
	healthCheck := fs.Bool("healthcheck", false, "GET /health on the configured port, exit 0 if it answers 200 (container health checks; the image has no curl)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: gateway [flags]\n\nEvery flag can also be set by the environment variable named in its help.\n\n")
		fs.PrintDefaults()
	}
	cfg, err := loadConfig(args, os.LookupEnv, fs)
	// -version answers even when some other setting is invalid.
	if *showVersion {
		fmt.Fprintln(stdout, "gateway", version)
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "gateway:", err)
		return 2
	}
	if *healthCheck {
		return healthcheck(cfg, stderr)
	}
	log := newLogger(cfg)
	if err := serve(cfg, log); err != nil {
		log.Error("gateway stopped", "err", err)
		return 1
	}
	return 0
}

func newLogger(cfg config) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: lvl}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func serve(cfg config, log *slog.Logger) error {
	if cfg.EmbeddedRedis {
		// Asked for explicitly: a gateway pointed at a real Redis never
		// falls back to this.
		mr, loaded, err := startEmbedded(cfg.EmbeddedRedisFile)
		if err != nil {
			return err
		}
		defer mr.Close()
		if cfg.EmbeddedRedisFile != "" {
			// Saved after the shutdown below (deferred calls run last
			// first), while the embedded Redis still runs.
			defer func() {
				if n, err := saveEmbedded(mr, cfg.EmbeddedRedisFile); err != nil {
					log.Warn("embedded Redis: streams not saved", "err", err)
				} else {
					log.Info("embedded Redis: streams saved", "file", cfg.EmbeddedRedisFile, "entries", n)
				}
			}()
		}
		cfg.Fanout.RedisAddr = mr.Addr()
		log.Info("embedded Redis (miniredis) started: try redis-cli -h 127.0.0.1 -p "+strconv.Itoa(mr.Server().Addr().Port)+" PUBLISH market:tick:DEMO '{\"price\":1}'",
			"addr", cfg.Fanout.RedisAddr, "stream_entries_loaded", loaded)
	}

	acl := auth.DefaultACL()
	if cfg.ACLFile != "" {
		var err error
		if acl, err = auth.LoadACL(cfg.ACLFile); err != nil {
			return fmt.Errorf("ACL_FILE: %w", err)
		}
	}
	if cfg.JWTPublicKeyFile != "" {
		var err error
		if cfg.Auth.JWTPublicKeyPEM, err = os.ReadFile(cfg.JWTPublicKeyFile); err != nil {
			return fmt.Errorf("JWT_PUBLIC_KEY_FILE: %w", err)
		}
	}
	authn, err := auth.NewAuthenticator(cfg.Auth, acl)
	if err != nil {
		return fmt.Errorf("authentication settings: %w", err)
	}

	if cfg.Procs > 0 {
		runtime.GOMAXPROCS(cfg.Procs)
	}
	cfg.Server.MaxSockets = socketBudget(log)
	cfg.Server.Logger, cfg.Fanout.Logger = log, log
	srv, err := server.New(cfg.Server, cfg.Fanout, authn, acl)
	if err != nil {
		return err
	}
	if cfg.AdminAddr != "" {
		// A gateway that cannot serve its metrics still serves its
		// clients: a taken admin port (a second instance on the host)
		// is logged loudly rather than stopping the start.
		if admin, err := startAdmin(cfg.AdminAddr, srv, log); err != nil {
			log.Error("metrics and pprof disabled", "err", err)
		} else {
			defer admin.close()
		}
	}
	if err := srv.EnableDurable(cfg.Streams); err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		return err
	}
	log.Info("gateway listening", "addr", srv.Addr(), "ws", "ws://"+srv.Addr()+"/ws", "redis", cfg.Fanout.Target(),
		"event_loops", cfg.Server.Loops, "procs", runtime.GOMAXPROCS(0), "version", version)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if cfg.Demo {
		go demo(ctx, cfg.Fanout.ClientOption(), cfg.Streams.KeyPrefix, log)
	}
	go trimMemory(ctx)
	var stopped error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	case <-srv.Done():
		// The engine stopped by itself: exit non-zero so the supervisor
		// restarts the gateway rather than leave a dead listener.
		stopped = fmt.Errorf("event loops stopped unexpectedly: %w", srv.Err())
	}
	// SHUTDOWN_TIMEOUT bounds the whole shutdown: the close handshakes,
	// the engine's stop and the hub's upstream unsubscribe share one
	// deadline, so a wedged Redis cannot hold the process past it.
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown", "err", err)
	}
	if stopped != nil {
		return stopped
	}
	log.Info("stopped")
	return nil
}

// fdReserve is kept free of client sockets for Redis connections, the
// admin listener, epoll, log files and sockets accepted in one burst
// before the event loops have counted them.
const fdReserve = 256

// socketBudget raises the soft RLIMIT_NOFILE to the hard limit and returns
// how many client sockets fit under it (server.Config.MaxSockets): gnet
// stops its engine when accept(2) fails with EMFILE, so the gateway turns
// clients away with 503 before that can happen.
func socketBudget(log *slog.Logger) int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		log.Warn("cannot read the file-descriptor limit; sockets are not capped", "err", err)
		return 0
	}
	if lim.Cur < lim.Max {
		raised := lim
		raised.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err == nil {
			lim = raised
		}
	}
	if lim.Cur > 1<<30 {
		return 0 // effectively unlimited
	}
	budget := int(lim.Cur) - fdReserve
	if budget < 64 {
		budget = 64
	}
	log.Info("file-descriptor limit", "nofile", lim.Cur, "max_sockets", budget)
	return budget
}
