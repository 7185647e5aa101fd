package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

func TestHealthcheck(t *testing.T) {
	var status atomic.Int32 // the test goroutine sets it, the handler reads it
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(int(status.Load()))
	}))
	defer ts.Close()
	_, portStr, _ := net.SplitHostPort(ts.Listener.Addr().String())
	port, _ := strconv.Atoi(portStr)

	// A port nobody listens on: bind one, then close it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadPort := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	tests := []struct {
		name   string
		host   string
		port   int
		status int
		want   int
	}{
		{"healthy, wildcard listen address", "0.0.0.0", port, http.StatusOK, 0},
		{"healthy, explicit address", "127.0.0.1", port, http.StatusOK, 0},
		{"redis down", "0.0.0.0", port, http.StatusServiceUnavailable, 1},
		{"nothing listening", "127.0.0.1", deadPort, http.StatusOK, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status.Store(int32(tt.status))
			var errb bytes.Buffer
			if got := healthcheck(config{Host: tt.host, Port: tt.port}, &errb); got != tt.want {
				t.Fatalf("exit %d, want %d (%s)", got, tt.want, errb.String())
			}
		})
	}
	t.Run("timeout", func(t *testing.T) {
		block := make(chan struct{})
		slow := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-block }))
		defer slow.Close()
		defer close(block)
		if got := probe(slow.URL+"/health", 100*time.Millisecond, new(bytes.Buffer)); got != 1 {
			t.Fatalf("exit %d for a server that never answers, want 1", got)
		}
	})
}
