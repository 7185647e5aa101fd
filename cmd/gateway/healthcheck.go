package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// healthcheck probes /health on the port this configuration listens on,
// for container health checks: the distroless image has no shell, curl or
// wget, so the binary checks itself. It returns the process exit code.
func healthcheck(cfg config, stderr io.Writer) int {
	host := cfg.Host
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return probe("http://"+net.JoinHostPort(host, strconv.Itoa(cfg.Port))+"/health", 3*time.Second, stderr)
}

// probe returns 0 when url answers 200 within timeout, else 1.
func probe(url string, timeout time.Duration, stderr io.Writer) int {
	c := http.Client{Timeout: timeout}
	resp, err := c.Get(url)
	if err != nil {
		fmt.Fprintln(stderr, "gateway: health check:", err)
		return 1
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "gateway: health check: %s answered %s\n", url, resp.Status)
		return 1
	}
	return 0
}
