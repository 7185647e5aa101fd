package auth

import "errors"

// Sentinel errors. Every error returned by this package wraps exactly one of
// them, so callers can map failures to responses with errors.Is without
// parsing messages.
var (
	// ErrNoToken means the client presented no credential and anonymous
	// access is disabled.
	ErrNoToken = errors.New("auth: no token")

	// ErrInvalidToken means a credential was presented but is malformed, has
	// a bad signature, uses a disallowed algorithm, has the wrong issuer or
	// audience, is not valid yet, or was supplied ambiguously.
	ErrInvalidToken = errors.New("auth: invalid token")

	// ErrExpired means a JWT's "exp" claim has passed (beyond the leeway).
	// It is separate from ErrInvalidToken so the server can tell the client
	// to refresh rather than to re-authenticate from scratch.
	ErrExpired = errors.New("auth: token expired")

	// ErrNoRole means a valid JWT carries no usable role claim.
	ErrNoRole = errors.New("auth: token has no role")

	// ErrUnknownRole means a valid JWT names a role the ACL does not define.
	ErrUnknownRole = errors.New("auth: unknown role")

	// ErrConfig means the authenticator configuration is unusable.
	ErrConfig = errors.New("auth: invalid configuration")

	// ErrInvalidACL means an ACL definition or file is unusable.
	ErrInvalidACL = errors.New("auth: invalid ACL")
)
