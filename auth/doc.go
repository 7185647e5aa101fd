// Package auth decides who a WebSocket client is and which Redis channels it
// may subscribe to.
//
// It has two halves:
//
//   - Authentication: [Authenticator] turns the credential presented with the
//     HTTP upgrade request (see [TokenFromRequest]) into an [Identity]: an API
//     key, a JWT (HMAC, RSA, ECDSA or Ed25519), or no token at all when
//     anonymous access is enabled. A token that is present but invalid is
//     always refused; it is never downgraded to the anonymous role, because
//     that would turn a forged or expired credential into access.
//   - Authorisation: [ACL] maps each role to a set of Redis glob patterns and
//     answers whether a role may subscribe to an exact channel or to a
//     pattern. Pattern subscriptions are checked by language containment
//     ([PatternContains]), so a client cannot widen its access with a broader
//     glob than the ones it was granted.
//
// Glob semantics are exactly those of Redis's stringmatchlen (util.c), which
// Redis uses to route PUBLISH messages to PSUBSCRIBE patterns; matching the
// server byte for byte is what makes the ACL decision mean the same thing as
// the delivery decision Redis will make later.
//
// # Callers and goroutines
//
// The server calls [TokenFromRequest] and [Authenticator.Authenticate] during
// the HTTP upgrade, and [ACL.Allowed] on every subscribe command, from its
// event loops. Those loops serve many connections each, so nothing in this
// package may block them: after construction no function performs I/O, takes
// a lock that could be contended for long, or runs unbounded work
// (containment analysis has a fixed work budget and answers "not allowed"
// when it runs out). [ACL] and [Authenticator] are immutable after
// construction and safe for concurrent use from any goroutine.
//
// Only [LoadACL] and [NewAuthenticator] do I/O or expensive parsing, and they
// are meant to run once at start-up (or on a configuration reload, building a
// new value that replaces the old one).
//
// # Errors
//
// Every error wraps one of the package's sentinel errors (ErrNoToken,
// ErrInvalidToken, ErrExpired, ErrNoRole, ErrUnknownRole, ErrConfig,
// ErrInvalidACL), so callers classify with [errors.Is]. Error messages never
// contain the presented token, because they end up in logs.
package auth
