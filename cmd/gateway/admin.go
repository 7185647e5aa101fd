package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wsgw/gateway/server"
)

// errAdmin is wrapped by the admin listener's start errors.
var errAdmin = errors.New("admin listener")

// adminServer is the private listener (ADMIN_ADDR) for /metrics and
// /debug/pprof. It is a separate net/http server on its own port so that
// neither is reachable through the public WebSocket port, and so that a
// slow scrape or a 30-second CPU profile never runs on an event loop.
type adminServer struct {
	hs   *http.Server
	addr string // the bound address (the real port when ADMIN_ADDR asked for 0)
	done chan struct{}
}

// startAdmin binds addr and serves the gateway's metrics, the Go runtime
// and process metrics, and pprof. It returns once the port is bound.
func startAdmin(addr string, gw *server.Server, log *slog.Logger) (*adminServer, error) {
	// A private registry rather than prometheus.DefaultRegisterer: what
	// /metrics shows is exactly what is registered here.
	reg := prometheus.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return nil, fmt.Errorf("%w: %w", errAdmin, err)
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, fmt.Errorf("%w: %w", errAdmin, err)
	}
	if err := server.NewMetrics(gw).Register(reg); err != nil {
		return nil, fmt.Errorf("%w: %w", errAdmin, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errAdmin, err)
	}
	errLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	a := &adminServer{
		hs: &http.Server{
			Handler:           adminMux(reg, errLog, gw),
			ReadHeaderTimeout: 5 * time.Second,
			IdleTimeout:       2 * time.Minute,
			// No WriteTimeout: /debug/pprof/profile and /trace
			// stream for as long as their seconds parameter asks.
			ErrorLog: errLog,
		},
		addr: ln.Addr().String(),
		done: make(chan struct{}),
	}
	go func() {
		defer close(a.done)
		if err := a.hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin listener stopped", "addr", a.addr, "err", err)
		}
	}()
	log.Info("admin listening", "addr", a.addr,
		"metrics", "http://"+a.addr+"/metrics", "pprof", "http://"+a.addr+"/debug/pprof/")
	return a, nil
}

// adminMux routes the admin endpoints on a private ServeMux: importing
// net/http/pprof also registers its handlers on http.DefaultServeMux, which
// nothing here serves. /stats is served here too, the same JSON as on the
// public port (where STATS_ADMIN_ONLY turns it off).
func adminMux(reg *prometheus.Registry, errLog promhttp.Logger, gw *server.Server) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(gw.Stats())
	})
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: errLog,
		Registry: reg, // counts failed scrapes in promhttp_metric_handler_errors_total
	}))
	// Index also serves the named runtime profiles (heap, goroutine,
	// allocs, block, mutex, threadcreate) under /debug/pprof/<name>.
	// /debug/pprof/cmdline is left out on purpose: the command line may
	// carry -redis-password, -api-key or -jwt-secret.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// close stops the listener, giving in-flight scrapes a moment to finish.
func (a *adminServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := a.hs.Shutdown(ctx); err != nil {
		_ = a.hs.Close()
	}
	<-a.done
}
