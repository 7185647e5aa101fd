package main

import (
	"testing"
	"time"
)

// The browser client's backoffDelay (server/web/gateway-client.js) for
// the same attempts and random draws.
func TestBackoffDelay(t *testing.T) {
	b := browserBackoff
	for _, tc := range []struct {
		attempt int
		random  float64
		want    time.Duration
	}{
		{0, 0, 500 * time.Millisecond},
		{0, 0.5, 375 * time.Millisecond},
		{0, 0.999, 250 * time.Millisecond}, // Math.round(500 × 0.5005)
		{-1, 0, 500 * time.Millisecond},    // Math.max(0, attempt)
		{1, 0, time.Second},
		{3, 0.5, 3 * time.Second},
		{4, 0, 8 * time.Second},
		{5, 0, 15 * time.Second}, // 16 s, capped
		{30, 0.5, 11250 * time.Millisecond},
	} {
		if got := b.delay(tc.attempt, tc.random); got != tc.want {
			t.Errorf("delay(%d, %v) = %v, want %v", tc.attempt, tc.random, got, tc.want)
		}
	}
	// Jitter is clamped to [0, 1], as in the browser.
	wild := backoff{Initial: time.Second, Max: time.Minute, Factor: 2, Jitter: 3}
	if got := wild.delay(0, 0.5); got != 500*time.Millisecond {
		t.Errorf("jitter 3: %v", got)
	}
	wild.Jitter = -1
	if got := wild.delay(0, 0.9); got != time.Second {
		t.Errorf("jitter -1: %v", got)
	}
}

func TestRetriesPopDue(t *testing.T) {
	r := newRetries()
	for _, it := range []retryItem{{50, 5}, {10, 1}, {30, 3}, {20, 2}, {40, 4}} {
		r.push(it.due, it.idx)
	}
	due, wait := r.popDue(30, nil)
	if len(due) != 3 || due[0] != 1 || due[1] != 2 || due[2] != 3 || wait != 10 {
		t.Errorf("popDue(30) = %v, wait %v", due, wait)
	}
	due, wait = r.popDue(100, due[:0])
	if len(due) != 2 || due[0] != 4 || due[1] != 5 || wait != -1 {
		t.Errorf("popDue(100) = %v, wait %v", due, wait)
	}
	if due, wait := r.popDue(200, nil); len(due) != 0 || wait != -1 {
		t.Errorf("empty: %v, wait %v", due, wait)
	}
}

func TestStormExpected(t *testing.T) {
	for _, tc := range []struct {
		m     int64
		n, c  int
		want  int64
		label string
	}{
		{10, 100, 1, 1000, "one channel: every message to every socket"},
		{10, 100, 10, 100, "ten channels, ten sockets each, one message each"},
		{3, 10, 4, 8, "sockets 3, 3, 2, 2 on channels 0-3; messages on 0, 1, 2"},
		{9, 10, 4, 23, "two rounds over the channels (2 × 10) and one more on channel 0 (3 sockets)"},
		{0, 10, 4, 0, "nothing published"},
		{5, 0, 4, 0, "no sockets"},
		{7, 3, 10, 3, "more channels than sockets: channels 0-2 have one each"},
	} {
		if got := stormExpected(tc.m, tc.n, tc.c); got != tc.want {
			t.Errorf("%s: stormExpected(%d, %d, %d) = %d, want %d", tc.label, tc.m, tc.n, tc.c, got, tc.want)
		}
	}
}

func TestHasHeader(t *testing.T) {
	head := []byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: 1\r\n\r\n")
	for _, tc := range []struct {
		name string
		want bool
	}{{"retry-after", true}, {"content-type", true}, {"retry", false}, {"http/1.1 503 service unavailable", false}} {
		if got := hasHeader(head, tc.name); got != tc.want {
			t.Errorf("hasHeader(%q) = %v", tc.name, got)
		}
	}
}

func TestStormFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		err  string
	}{
		{"defaults", []string{"-scenario", "storm"}, ""},
		{"drop against a running gateway", []string{"-scenario", "storm", "-storm-mode", "drop", "-addr", "127.0.0.1:1"}, ""},
		{"restart needs the harness's gateway", []string{"-scenario", "storm", "-addr", "127.0.0.1:1"}, "the harness must start it"},
		{"one gateway", []string{"-scenario", "storm", "-gateways", "2"}, "one gateway"},
		{"mode", []string{"-scenario", "storm", "-storm-mode", "reboot"}, "want restart, kill or drop"},
		{"hold", []string{"-scenario", "storm", "-storm-hold", "0s"}, "-storm-hold"},
		{"no stalled sockets", []string{"-scenario", "storm", "-stalled", "1"}, "-stalled is for"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := parseExpect(t, tc.args, tc.err)
			if c == nil || tc.name != "defaults" {
				return
			}
			if c.N != 15000 || c.Channels != 100 || c.Rate != 100 || c.Duration != time.Minute || c.ConnConcurrency != 4096 || c.StormMode != "restart" {
				t.Errorf("defaults: n %d channels %d rate %v duration %v concurrency %d mode %s", c.N, c.Channels, c.Rate, c.Duration, c.ConnConcurrency, c.StormMode)
			}
		})
	}
	// Given ones are kept.
	if c := parseExpect(t, []string{"-scenario", "storm", "-duration", "5s", "-connect-concurrency", "64"}, ""); c.Duration != 5*time.Second || c.ConnConcurrency != 64 {
		t.Errorf("duration %v concurrency %d", c.Duration, c.ConnConcurrency)
	}
}
