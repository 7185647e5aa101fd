package server

import (
	"testing"

	"github.com/wsgw/gateway/wsproto"
)

// TestCountingAllocs: what the event loops do to count (one atomic add,
// one lock-free histogram Observe per write batch) allocates nothing.
func TestCountingAllocs(t *testing.T) {
	var c counters
	c.latency = newLatencyHistogram()
	tests := []struct {
		name string
		fn   func()
	}{
		{"refused upgrade", func() { c.refuse(refuseOrigin) }},
		{"command", func() { c.command(wsproto.ActionSubscribe, resultForbidden) }},
		{"out-of-range action", func() { c.command(wsproto.Action(200), resultOK) }},
		{"latency observation", func() { c.latency.Observe(0.0003) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if a := testing.AllocsPerRun(100, tt.fn); a != 0 {
				t.Fatalf("%v allocations per call, want 0", a)
			}
		})
	}
	if got := c.commands[0][resultOK].Load(); got != 101 {
		t.Errorf("out-of-range action counted %d times under unknown, want 101", got)
	}
}

// TestResultOf: every error code a command can be refused with has its
// own result label, and the labels are the protocol's codes.
func TestResultOf(t *testing.T) {
	tests := []struct {
		code wsproto.ErrorCode
		want cmdResult
	}{
		{wsproto.CodeBadRequest, resultBadRequest},
		{wsproto.CodeUnknownAction, resultUnknownAction},
		{wsproto.CodeForbidden, resultForbidden},
		{wsproto.CodeTooManyChannels, resultTooManyChannels},
		{wsproto.CodeTooManyWildcards, resultTooManyWildcards},
		{wsproto.CodeRateLimited, resultRateLimited},
		{"something_new", resultBadRequest},
	}
	for _, tt := range tests {
		t.Run(string(tt.code), func(t *testing.T) {
			if got := resultOf(tt.code); got != tt.want {
				t.Fatalf("resultOf(%q) = %s, want %s", tt.code, cmdResultNames[got], cmdResultNames[tt.want])
			}
		})
	}
}
