package redistest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// subscriber is a raw RESP connection in subscribe mode.
type subscriber struct {
	conn net.Conn
	r    *bufio.Reader
}

func subscribe(t *testing.T, s *Server, cmd string, args ...string) *subscriber {
	t.Helper()
	conn, err := net.DialTimeout("tcp", s.Addr(), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	sub := &subscriber{conn: conn, r: bufio.NewReader(conn)}
	if _, err := conn.Write(appendCommand(nil, append([]string{cmd}, args...))); err != nil {
		t.Fatal(err)
	}
	for range args {
		if got := sub.next(t); !strings.HasPrefix(got, strings.ToLower(cmd)+" ") {
			t.Fatalf("%s confirmation = %q", cmd, got)
		}
	}
	return sub
}

func (sub *subscriber) next(t *testing.T) string {
	t.Helper()
	if err := sub.conn.SetReadDeadline(time.Now().Add(ioTimeout)); err != nil {
		t.Fatal(err)
	}
	v, err := readReply(sub.r)
	if err != nil {
		t.Fatalf("subscriber read: %v", err)
	}
	return v
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

	sub := subscribe(t, s, "SUBSCRIBE", "ch")
	psub := subscribe(t, s, "PSUBSCRIBE", "news.*")
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
	if got := s.Do(t, "PUBSUB", "NUMPAT"); got != "1" {
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
	if err := sub.conn.SetReadDeadline(time.Now().Add(ioTimeout)); err != nil {
		t.Fatal(err)
	}
	if v, err := readReply(sub.r); err == nil {
		t.Fatalf("subscriber read %q after Kill, want connection error", v)
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
	if got := s.Do(t, "NOSUCHCOMMAND", "x"); !strings.HasPrefix(got, "-ERR") {
		t.Fatalf("unknown command reply = %q, want -ERR...", got)
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

func TestReadReply(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"+OK\r\n", "OK"},
		{"-ERR unknown command\r\n", "-ERR unknown command"},
		{":42\r\n", "42"},
		{":-7\r\n", "-7"},
		{"$5\r\nhello\r\n", "hello"},
		{"$0\r\n\r\n", ""},
		{"$6\r\na\r\nb\x00c\r\n", "a\r\nb\x00c"},
		{"$-1\r\n", "(nil)"},
		{"*-1\r\n", "(nil)"},
		{"*0\r\n", ""},
		{"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n", "subscribe ch 1"},
		{"*2\r\n*2\r\n$1\r\na\r\n:1\r\n*1\r\n$1\r\nb\r\n", "a 1 b"},
		{"*2\r\n$1\r\na\r\n$-1\r\n", "a (nil)"},
		{"_\r\n", "(nil)"},
		{"#t\r\n", "true"},
		{",3.5\r\n", "3.5"},
		{"(12345678901234567890\r\n", "12345678901234567890"},
		{"=7\r\ntxt:abc\r\n", "abc"},
		{"!5\r\nERR x\r\n", "-ERR x"},
		{"%1\r\n+k\r\n:1\r\n", "k 1"},
		{"|1\r\n+ttl\r\n:3\r\n+OK\r\n", "OK"},
	} {
		got, err := readReply(bufio.NewReader(strings.NewReader(tc.in)))
		if err != nil || got != tc.want {
			t.Errorf("readReply(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{
		"", "\r\n", "+OK\n", "+OK", ":x\r\n", "$3\r\nab\r\n", "$2\r\nabc\r\n",
		"$-2\r\n", "*2\r\n:1\r\n", "?\r\n", "#x\r\n", "=2\r\nab\r\n",
		strings.Repeat("*1\r\n", maxDepth+2) + ":1\r\n",
	} {
		if got, err := readReply(bufio.NewReader(strings.NewReader(in))); err == nil {
			t.Errorf("readReply(%q) = %q, want error", in, got)
		}
	}
}

func TestAppendCommandRoundTrip(t *testing.T) {
	args := []string{"PUBLISH", "ch", "x\r\ny\x00", ""}
	got, err := readReply(bufio.NewReader(bytes.NewReader(appendCommand(nil, args))))
	if want := strings.Join(args, " "); err != nil || got != want {
		t.Fatalf("round trip = %q, %v; want %q", got, err, want)
	}
}

// fatalTB captures Fatal* instead of ending the test.
type fatalTB struct {
	testing.TB
	msg string
}

type fatalPanic struct{}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatal(args ...any) {
	f.msg = fmt.Sprint(args...)
	panic(fatalPanic{})
}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic(fatalPanic{})
}

func catchFatal(t *testing.T, fn func(tb testing.TB)) string {
	t.Helper()
	f := &fatalTB{TB: t}
	func() {
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(fatalPanic); !ok {
					panic(r)
				}
			}
		}()
		fn(f)
	}()
	return f.msg
}

func TestWaitFor(t *testing.T) {
	n := 0
	WaitFor(t, time.Second, "three polls", func() bool { n++; return n == 3 })
	msg := catchFatal(t, func(tb testing.TB) {
		WaitFor(tb, 20*time.Millisecond, "godot", func() bool { return false })
	})
	if msg != "timed out after 20ms waiting for godot" {
		t.Fatalf("WaitFor failure message = %q", msg)
	}
}

func TestMissingBinary(t *testing.T) {
	t.Setenv("REDIS_SERVER", "")
	t.Setenv("PATH", t.TempDir())
	if msg := catchFatal(t, func(tb testing.TB) { lookBinary(tb) }); msg != notFoundMsg {
		t.Fatalf("missing binary message = %q", msg)
	}
	t.Setenv("REDIS_SERVER", "/nonexistent/redis-server")
	if msg := catchFatal(t, func(tb testing.TB) { lookBinary(tb) }); !strings.Contains(msg, "REDIS_SERVER") {
		t.Fatalf("bad $REDIS_SERVER message = %q", msg)
	}
}

func FuzzReadReply(f *testing.F) {
	for _, seed := range []string{
		"+OK\r\n", "$6\r\na\r\nb\x00c\r\n", "*2\r\n*1\r\n:1\r\n$-1\r\n", "%1\r\n+k\r\n_\r\n",
		"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$3\r\nhi!\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// Arbitrary input must give a value or an error, never a panic or hang.
		_, _ = readReply(bufio.NewReader(bytes.NewReader(data)))

		// Any command encodes to bulk strings that parse back verbatim.
		args := strings.Split(string(data), "|")
		got, err := readReply(bufio.NewReader(bytes.NewReader(appendCommand(nil, args))))
		if want := strings.Join(args, " "); err != nil || got != want {
			t.Fatalf("round trip of %q = %q, %v", args, got, err)
		}
	})
}
