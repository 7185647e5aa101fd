package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/subtle"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Identity.Method values.
const (
	MethodAnonymous = "anonymous"
	MethodAPIKey    = "apikey"
	MethodJWT       = "jwt"
)

// DefaultRoleClaim is the JWT claim read for the role when Config.RoleClaim
// is empty.
const DefaultRoleClaim = "role"

// APIKeySubject is Identity.Subject for clients authenticated by API key.
const APIKeySubject = "apikey"

// MinSecretLen is the shortest accepted Config.JWTSecret. RFC 7518 §3.2
// requires an HMAC key at least as long as the hash output; shorter secrets
// are brute-forceable offline from a single captured token.
const MinSecretLen = 32

// minRSABits refuses RSA keys that no longer resist factoring.
const minRSABits = 2048

// maxTokenLen bounds the work one presented token can cause (base64 and JSON
// decoding happen before the signature check). Real tokens are well under
// 2 KiB.
const maxTokenLen = 8 << 10

// Config configures an Authenticator.
type Config struct {
	// RequireAuth refuses clients that present no token. When false they
	// get DefaultRole.
	RequireAuth bool
	// DefaultRole is the role of clients without a token when RequireAuth
	// is false; it must be defined by the ACL.
	DefaultRole string
	// APIKey, when non-empty, is a shared secret; a client presenting it
	// gets role "admin" (which the ACL must define).
	APIKey string
	// JWTSecret, when non-empty, enables HS256, HS384 and HS512 tokens. It
	// must be at least MinSecretLen bytes.
	JWTSecret []byte
	// JWTPublicKeyPEM, when non-empty, enables tokens signed by the matching
	// private key: RS256 for an RSA key (at least 2048 bits), ES256, ES384 or
	// ES512 for an ECDSA P-256, P-384 or P-521 key, EdDSA for an Ed25519
	// key. The first PEM block must be a "PUBLIC KEY" (PKIX), an "RSA PUBLIC
	// KEY" (PKCS #1) or a "CERTIFICATE" (only its key is used; validity
	// dates and chain are not checked).
	JWTPublicKeyPEM []byte
	// Issuer and Audience, when non-empty, must match the token's "iss" and
	// one of its "aud" values.
	Issuer, Audience string
	// RoleClaim names the string claim holding the role; empty means
	// DefaultRoleClaim.
	RoleClaim string
	// Leeway is the clock skew tolerated on "exp" and "nbf". It is used as
	// given (zero means none) and must not be negative.
	Leeway time.Duration
}

// Identity is the outcome of a successful authentication.
type Identity struct {
	// Role is the ACL role the client acts as.
	Role string
	// Subject is the JWT "sub" claim, APIKeySubject for an API key, or ""
	// for an anonymous client.
	Subject string
	// Method is MethodAnonymous, MethodAPIKey or MethodJWT.
	Method string
	// Expires is when the credential stops being valid, so the server can
	// close the connection then; zero means never (API key, anonymous, JWT
	// without "exp").
	Expires time.Time
}

// Authenticator turns presented tokens into identities. It is immutable
// after construction and safe for concurrent use; Authenticate does no I/O.
type Authenticator struct {
	requireAuth bool
	defaultRole string
	apiKey      []byte
	acl         *ACL
	roleClaim   string

	hmacSecret []byte
	pubKey     crypto.PublicKey // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
	pubAlg     string           // the one algorithm pubKey verifies

	// baseOpts are the parser options fixed at construction; Authenticate
	// appends its per-call clock. Never appended to in place (cap == len).
	baseOpts []jwt.ParserOption
}

// NewAuthenticator validates cfg against acl and returns an Authenticator.
// It fails with ErrConfig when nobody could ever connect (RequireAuth with
// neither API key nor JWT key), when a role it would grant is not in the
// ACL, or when a key is unusable.
func NewAuthenticator(cfg Config, acl *ACL) (*Authenticator, error) {
	if acl == nil {
		return nil, fmt.Errorf("%w: nil ACL", ErrConfig)
	}
	a := &Authenticator{
		requireAuth: cfg.RequireAuth,
		acl:         acl,
		roleClaim:   cfg.RoleClaim,
	}
	if a.roleClaim == "" {
		a.roleClaim = DefaultRoleClaim
	}
	if !cfg.RequireAuth {
		if !acl.HasRole(cfg.DefaultRole) {
			return nil, fmt.Errorf("%w: default role %q is not defined by the ACL", ErrConfig, cfg.DefaultRole)
		}
		a.defaultRole = cfg.DefaultRole
	}
	if cfg.Leeway < 0 {
		return nil, fmt.Errorf("%w: negative leeway %v", ErrConfig, cfg.Leeway)
	}
	if cfg.APIKey != "" {
		if !acl.HasRole(RoleAdmin) {
			return nil, fmt.Errorf("%w: API key grants role %q, which the ACL does not define", ErrConfig, RoleAdmin)
		}
		a.apiKey = []byte(cfg.APIKey)
	}

	var methods []string
	if len(cfg.JWTSecret) > 0 {
		if len(cfg.JWTSecret) < MinSecretLen {
			return nil, fmt.Errorf("%w: JWT secret is %d bytes, need at least %d", ErrConfig, len(cfg.JWTSecret), MinSecretLen)
		}
		a.hmacSecret = slices.Clone(cfg.JWTSecret)
		methods = append(methods, "HS256", "HS384", "HS512")
	}
	if len(cfg.JWTPublicKeyPEM) > 0 {
		key, alg, err := parsePublicKey(cfg.JWTPublicKeyPEM)
		if err != nil {
			return nil, fmt.Errorf("%w: JWT public key: %w", ErrConfig, err)
		}
		a.pubKey, a.pubAlg = key, alg
		methods = append(methods, alg)
	}
	if len(methods) == 0 && (cfg.Issuer != "" || cfg.Audience != "") {
		// Probably a key that failed to load from the environment: say so
		// rather than silently accepting no JWTs at all.
		return nil, fmt.Errorf("%w: issuer or audience set but no JWT secret or public key", ErrConfig)
	}
	if cfg.RequireAuth && a.apiKey == nil && len(methods) == 0 {
		return nil, fmt.Errorf("%w: authentication required but no API key, JWT secret or public key configured", ErrConfig)
	}

	if len(methods) > 0 {
		opts := []jwt.ParserOption{
			jwt.WithValidMethods(methods),
			jwt.WithLeeway(cfg.Leeway),
		}
		if cfg.Issuer != "" {
			opts = append(opts, jwt.WithIssuer(cfg.Issuer))
		}
		if cfg.Audience != "" {
			opts = append(opts, jwt.WithAudience(cfg.Audience))
		}
		a.baseOpts = slices.Clip(opts)
	}
	return a, nil
}

// parsePublicKey reads the first PEM block and returns the key with the one
// JWT algorithm it will verify. Tying each key to a single algorithm is what
// rules out algorithm-substitution attacks.
func parsePublicKey(data []byte) (crypto.PublicKey, string, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, "", errors.New("no PEM block found")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			key = cert.PublicKey
		}
	default:
		// Notably refuses private keys pasted by mistake.
		return nil, "", fmt.Errorf("PEM block type %q is not a public key or certificate", block.Type)
	}
	if err != nil {
		return nil, "", err
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return nil, "", fmt.Errorf("RSA key is %d bits, need at least %d", k.N.BitLen(), minRSABits)
		}
		return k, "RS256", nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return k, "ES256", nil
		case elliptic.P384():
			return k, "ES384", nil
		case elliptic.P521():
			return k, "ES512", nil
		}
		return nil, "", errors.New("unsupported ECDSA curve")
	case ed25519.PublicKey:
		return k, "EdDSA", nil
	}
	return nil, "", fmt.Errorf("unsupported public key type %T", key)
}

// Authenticate checks token at time now and returns the client's identity.
// An empty token yields the default role, or ErrNoToken when authentication
// is required. A non-empty token must be the API key or a valid JWT; if it
// is neither it is refused, never downgraded to the default role. Errors
// wrap ErrNoToken, ErrInvalidToken, ErrExpired, ErrNoRole or ErrUnknownRole
// and never contain the token.
func (a *Authenticator) Authenticate(token string, now time.Time) (Identity, error) {
	if token == "" {
		if a.requireAuth {
			return Identity{}, ErrNoToken
		}
		return Identity{Role: a.defaultRole, Method: MethodAnonymous}, nil
	}
	if len(token) > maxTokenLen {
		return Identity{}, fmt.Errorf("%w: longer than %d bytes", ErrInvalidToken, maxTokenLen)
	}
	// Constant time so response timing does not reveal how much of a guess
	// was right; only the key's length can leak.
	if a.apiKey != nil && subtle.ConstantTimeCompare([]byte(token), a.apiKey) == 1 {
		return Identity{Role: RoleAdmin, Subject: APIKeySubject, Method: MethodAPIKey}, nil
	}
	if a.baseOpts == nil {
		return Identity{}, fmt.Errorf("%w: not the API key and JWTs are not enabled", ErrInvalidToken)
	}
	return a.authenticateJWT(token, now)
}

func (a *Authenticator) authenticateJWT(token string, now time.Time) (Identity, error) {
	// The clock is per call (callers pass now for testability and to use
	// one timestamp per event-loop tick), so the parser is built per call;
	// that is a few small allocations next to a signature check.
	opts := append(a.baseOpts, jwt.WithTimeFunc(func() time.Time { return now }))
	claims := jwt.MapClaims{}
	if _, err := jwt.NewParser(opts...).ParseWithClaims(token, claims, a.keyFor); err != nil {
		return Identity{}, classifyJWTError(err)
	}

	id := Identity{Method: MethodJWT}
	sub, err := claims.GetSubject()
	if err != nil {
		return Identity{}, fmt.Errorf("%w: \"sub\" claim is not a string", ErrInvalidToken)
	}
	id.Subject = sub
	exp, err := claims.GetExpirationTime()
	if err != nil { // unreachable after validation, which parses exp too
		return Identity{}, fmt.Errorf("%w: malformed \"exp\" claim", ErrInvalidToken)
	}
	if exp != nil {
		id.Expires = exp.Time
	}

	raw, ok := claims[a.roleClaim]
	if !ok {
		return Identity{}, fmt.Errorf("%w: claim %q missing", ErrNoRole, a.roleClaim)
	}
	role, ok := raw.(string)
	if !ok || role == "" {
		return Identity{}, fmt.Errorf("%w: claim %q is not a non-empty string", ErrNoRole, a.roleClaim)
	}
	if !a.acl.HasRole(role) {
		// The role comes from a verified token, so it is issuer-controlled;
		// it is quoted and truncated to keep logs readable anyway.
		return Identity{}, fmt.Errorf("%w: %.64q", ErrUnknownRole, role)
	}
	id.Role = role
	return id, nil
}

// keyFor hands the parser the key for the token's algorithm family only. The
// parser has already restricted alg to the configured list; checking the
// method type again here means a public key can never be used as an HMAC
// secret and "none" can never verify, even if that list were wrong.
func (a *Authenticator) keyFor(t *jwt.Token) (any, error) {
	switch t.Method.(type) {
	case *jwt.SigningMethodHMAC:
		if a.hmacSecret != nil {
			return a.hmacSecret, nil
		}
	case *jwt.SigningMethodRSA, *jwt.SigningMethodECDSA, *jwt.SigningMethodEd25519:
		if a.pubKey != nil && t.Method.Alg() == a.pubAlg {
			return a.pubKey, nil
		}
	}
	return nil, errors.New("algorithm not enabled")
}

// classifyJWTError maps the library's error to a sentinel with a fixed
// reason. The library's own text is deliberately dropped: some of it echoes
// parts of the token (such as the alg header).
func classifyJWTError(err error) error {
	var reason string
	// Expiry is checked after the other claim failures (the library reports
	// all of them together): "expired" invites the client to refresh, which
	// is pointless when the issuer or audience is wrong anyway.
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		reason = "malformed"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		reason = "algorithm not enabled"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		reason = "bad signature or algorithm not enabled"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		reason = "not valid yet"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		reason = "wrong issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		reason = "wrong audience"
	case errors.Is(err, jwt.ErrTokenExpired):
		return ErrExpired
	case errors.Is(err, jwt.ErrTokenInvalidClaims):
		reason = "invalid claims"
	default:
		reason = "rejected"
	}
	return fmt.Errorf("%w: %s", ErrInvalidToken, reason)
}
