package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/wsgw/gateway/server/servertest"
)

// subscriber is a rueidis client in subscribe mode, on a connection of
// its own; messages holds what it received, rendered as Redis sends them
// ("message ch payload", "pmessage pattern ch payload").
type subscriber struct {
	messages chan string
	done     chan error // Receive's result: the subscription ended
}

func subscribe(t *testing.T, s *Server, pattern bool, names ...string) *subscriber {
	t.Helper()
	c, err := newClient(s.Addr(), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	sub := &subscriber{messages: make(chan string, 16), done: make(chan error, 1)}
	cmd := c.B().Subscribe().Channel(names...).Build()
	if pattern {
		cmd = c.B().Psubscribe().Pattern(names...).Build()
	}
	go func() {
		sub.done <- c.Receive(context.Background(), cmd, func(m rueidis.PubSubMessage) {
			if m.Pattern != "" {
				sub.messages <- "pmessage " + m.Pattern + " " + m.Channel + " " + m.Message
			} else {
				sub.messages <- "message " + m.Channel + " " + m.Message
			}
		})
	}()
	// Receive returns only when the subscription ends: poll Redis
	// until it counts the subscription.
	servertest.WaitFor(t, ioTimeout, fmt.Sprintf("%v to be subscribed", names), func() bool {
		return (pattern && s.NumPat(t) > 0) || (!pattern && s.NumSub(t, names[0]) > 0)
	})
	return sub
}

func (sub *subscriber) next(t *testing.T) string {
	t.Helper()
	select {
	case m := <-sub.messages:
		return m
	case err := <-sub.done:
		t.Fatalf("subscription ended: %v", err)
	case <-time.After(ioTimeout):
		t.Fatal("no message")
	}
	return ""
}

func TestPublishKillRestart(t *testing.T) {
	s := Start(t)
	if got, want := s.Addr(), net.JoinHostPort(s.Host(), strconv.Itoa(s.Port())); got != want || s.Host() != "127.0.0.1" || s.Port() == 0 {
		t.Fatalf("Addr() = %q, Host() = %q, Port() = %d", got, s.Host(), s.Port())
	}
	if got := s.Do(t, "PING"); got != "PONG" {
		t.Fatalf("PING = %q", got)
	}
	if n := s.Publish(t, "ch", "nobody"); n != 0 {
		t.Fatalf("Publish with no subscriber = %d, want 0", n)
	}

	sub := subscribe(t, s, false, "ch")
	psub := subscribe(t, s, true, "news.*")
	payload := "bin\x00\r\n\xff payload"
	if n := s.Publish(t, "ch", payload); n != 1 {
		t.Fatalf("Publish = %d, want 1", n)
	}
	if got, want := sub.next(t), "message ch "+payload; got != want {
		t.Fatalf("subscriber got %q, want %q", got, want)
	}
	if n := s.Publish(t, "news.eu", "x"); n != 1 {
		t.Fatalf("Publish to pattern = %d, want 1", n)
	}
	if got, want := psub.next(t), "pmessage news.* news.eu x"; got != want {
		t.Fatalf("pattern subscriber got %q, want %q", got, want)
	}
	if got := s.Do(t, "PUBSUB", "NUMSUB", "ch", "other"); got != "ch 1 other 0" {
		t.Fatalf("PUBSUB NUMSUB = %q", got)
	}
	if n, o := s.NumSub(t, "ch"), s.NumSub(t, "other"); n != 1 || o != 0 {
		t.Fatalf("NumSub = %d, %d; want 1, 0", n, o)
	}
	if got := s.Do(t, "PUBSUB", "NUMPAT"); got != "1" || s.NumPat(t) != 1 {
		t.Fatalf("PUBSUB NUMPAT = %q, want 1", got)
	}
	if got := s.Do(t, "PUBSUB", "CHANNELS"); got != "ch" {
		t.Fatalf("PUBSUB CHANNELS = %q", got)
	}
	if got := s.Do(t, "CLIENT", "LIST"); strings.Count(got, "cmd=") < 3 {
		t.Fatalf("CLIENT LIST lists fewer than 3 clients:\n%s", got)
	}

	addr := s.Addr()
	s.Kill(t)
	if _, err := s.Exec("PING"); err == nil {
		t.Fatal("PING succeeded after Kill")
	}
	select {
	case err := <-sub.done:
		if err == nil {
			t.Fatal("subscription ended without an error after Kill")
		}
	case m := <-sub.messages:
		t.Fatalf("subscriber got %q after Kill, want the connection to fail", m)
	case <-time.After(ioTimeout):
		t.Fatal("subscription still running after Kill")
	}
	s.Kill(t) // no-op on a dead server

	s.Restart(t)
	if s.Addr() != addr {
		t.Fatalf("Restart moved the server from %s to %s", addr, s.Addr())
	}
	if got := s.Do(t, "PUBSUB", "NUMPAT"); got != "0" {
		t.Fatalf("PUBSUB NUMPAT after restart = %q, want 0", got)
	}
	if n := s.Publish(t, "ch", "again"); n != 0 {
		t.Fatalf("Publish after restart = %d, want 0", n)
	}
	s.Restart(t) // restarting a running server kills it first
	if got := s.Do(t, "PING"); got != "PONG" {
		t.Fatalf("PING after second restart = %q", got)
	}
}

func TestStopAndOptions(t *testing.T) {
	s := Start(t, WithArgs("--client-output-buffer-limit", "pubsub 1mb 1mb 0"))
	if got := s.Do(t, "CONFIG", "GET", "client-output-buffer-limit"); !strings.Contains(got, "pubsub 1048576 1048576 0") {
		t.Fatalf("client-output-buffer-limit = %q", got)
	}
	if got := s.Do(t, "CONFIG", "GET", "save"); got != "save " {
		t.Fatalf("CONFIG GET save = %q, want persistence off", got)
	}
	var rerr *rueidis.RedisError
	if got, err := s.Exec("NOSUCHCOMMAND", "x"); !errors.As(err, &rerr) || !strings.Contains(err.Error(), "unknown command") {
		t.Fatalf("unknown command = %q, %v; want the error reply", got, err)
	}
	if msg := servertest.CatchFatal(t, func(tb testing.TB) { s.Do(tb, "NOSUCHCOMMAND", "x") }); !strings.Contains(msg, "unknown command") {
		t.Fatalf("Do of an unknown command failed with %q, want the error reply", msg)
	}
	if got := s.Do(t, "GET", "missing"); got != "(nil)" {
		t.Fatalf("GET missing = %q", got)
	}
	s.Stop(t)
	if _, err := s.Exec("PING"); err == nil {
		t.Fatal("PING succeeded after Stop")
	}
	s.Restart(t)
	if got := s.Do(t, "CONFIG", "GET", "client-output-buffer-limit"); !strings.Contains(got, "pubsub 1048576 1048576 0") {
		t.Fatalf("Restart lost WithArgs: %q", got)
	}
}

func TestParallelServers(t *testing.T) {
	for i := range 4 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			s := Start(t)
			if got := s.Do(t, "SET", "k", s.Addr()); got != "OK" {
				t.Fatalf("SET = %q", got)
			}
			if got := s.Do(t, "GET", "k"); got != s.Addr() {
				t.Fatalf("GET = %q, want %q", got, s.Addr())
			}
		})
	}
}

func TestMissingBinary(t *testing.T) {
	t.Setenv("REDIS_SERVER", "")
	t.Setenv("PATH", t.TempDir())
	if msg := servertest.CatchFatal(t, func(tb testing.TB) { lookBinary(tb) }); msg != notFoundMsg {
		t.Fatalf("missing binary message = %q", msg)
	}
	t.Setenv("REDIS_SERVER", "/nonexistent/redis-server")
	if msg := servertest.CatchFatal(t, func(tb testing.TB) { lookBinary(tb) }); !strings.Contains(msg, "REDIS_SERVER") {
		t.Fatalf("bad $REDIS_SERVER message = %q", msg)
	}
}

func TestMonitor(t *testing.T) {
	s := Start(t)
	m := s.Monitor(t)
	s.Do(t, "SET", "monitored", "v")
	servertest.WaitFor(t, ioTimeout, "MONITOR to show SET monitored", func() bool { return m.Saw("set", "monitored") })
	if m.Saw("DEL", "monitored") {
		t.Fatal("MONITOR shows a DEL nobody sent")
	}
}
