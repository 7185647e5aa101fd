// Package servertest is the test kit the gateway's tests share: a
// WebSocket client written on a bare TCP socket (for what a well-behaved
// client library refuses to do or send), polling with a deadline, JWT
// signing with generated keys, and a slog recorder.
//
// Role: test-only. It is imported only from _test.go files (server,
// cmd/gateway, auth, fanout) and never by production code. It imports no
// package of this module, so that the in-package tests of auth and fanout
// can use it without an import cycle; Redis helpers live in
// fanout/redistest.
//
// Goroutines: functions and methods that take a testing.TB report failures
// with tb.Fatalf, so they must run on the goroutine of the test (or
// subtest) whose tb they are given; the ones that return an error (DialErr,
// UpgradeErr, Conn.WriteFrame, Conn.ReadFrame) are for helper goroutines. A
// Conn is used by one goroutine at a time; LogRecorder is safe for
// concurrent use.
//
// What must not block: nothing here runs on a hot path, and every network
// operation carries a deadline, so a failing test fails instead of
// hanging.
package servertest
