// Package redistest starts a real redis-server child process for
// integration tests. It is never a mock: tests that use it talk to the same
// server binary production talks to, so pub/sub semantics, output-buffer
// limits, connection drops and restarts behave exactly as they do in
// production.
//
// Role: test-only helper. It is imported only from _test.go files of other
// packages (fanout, server, cmd/...) and must never be imported by
// production code.
//
// Its Do, Exec, Publish, NumSub and NumPat talk to the server through a
// rueidis client (the library the gateway uses, in RESP2, without retries
// or a cache). Only Monitor reads a connection by hand: MONITOR streams
// lines that no client library reads.
//
// Goroutine: the test's. Start, Kill, Restart, Stop, Do, Publish, NumSub,
// NumPat and Monitor report failures with tb.Fatalf, so they must be
// called from the goroutine running the test (the testing package forbids
// FailNow elsewhere). Exec is the error-returning variant of Do for use
// from helper goroutines. All methods are safe for concurrent use.
//
// What must not block: nothing here runs on a hot path. Every network
// operation carries a deadline, readiness is awaited by polling with a
// 10s deadline (no fixed sleeps), and each Server is killed and reaped by a
// tb.Cleanup, so a failing test cannot leak a redis-server. On Linux the
// child also gets SIGKILL if the test binary dies (e.g. on -timeout panic).
// Polling a condition of a test is servertest.WaitFor's (server/servertest).
//
// The redis-server binary is looked up in $REDIS_SERVER, then in PATH; `make
// deps` (run by `make test`) installs Debian's redis-server package.
package redistest
