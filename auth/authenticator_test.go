package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/wsgw/gateway/server/servertest"
)

var (
	testNow    = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	testSecret = []byte("0123456789abcdef0123456789abcdef") // MinSecretLen bytes
	testAPIKey = "ak_live_4f9c2e7d1b8a6f3e"
	testLeeway = 5 * time.Second
)

func certPEM(tb testing.TB, priv crypto.Signer) []byte {
	tb.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "issuer"},
		NotBefore:    testNow.Add(-time.Hour),
		NotAfter:     testNow.Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// claims returns a valid claim set for role at testNow, with overrides
// applied; a nil override value deletes the claim.
func claims(role string, overrides map[string]any) jwt.MapClaims {
	return servertest.Claims(role, testNow, map[string]any{
		"sub": "client-42",
		"iss": "https://issuer.example",
		"aud": "wsgw",
	}, overrides)
}

func newAuth(tb testing.TB, cfg Config) *Authenticator {
	tb.Helper()
	a, err := NewAuthenticator(cfg, DefaultACL())
	if err != nil {
		tb.Fatalf("NewAuthenticator: %v", err)
	}
	return a
}

func TestAuthenticate(t *testing.T) {
	hmacAuth := newAuth(t, Config{
		RequireAuth: true, APIKey: testAPIKey, JWTSecret: testSecret,
		Issuer: "https://issuer.example", Audience: "wsgw", Leeway: testLeeway,
	})
	rsaPEM := servertest.PublicPEM(t, &servertest.RSAKey().PublicKey)
	rsaAuth := newAuth(t, Config{RequireAuth: true, JWTPublicKeyPEM: rsaPEM, Leeway: testLeeway})
	rsaPKCS1Auth := newAuth(t, Config{RequireAuth: true, Leeway: testLeeway, JWTPublicKeyPEM: pem.EncodeToMemory(
		&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&servertest.RSAKey().PublicKey)})})
	ecAuth := newAuth(t, Config{RequireAuth: true, JWTPublicKeyPEM: servertest.PublicPEM(t, &servertest.ECKey().PublicKey)})
	ecCertAuth := newAuth(t, Config{RequireAuth: true, JWTPublicKeyPEM: certPEM(t, servertest.ECKey())})
	edAuth := newAuth(t, Config{RequireAuth: true, JWTPublicKeyPEM: servertest.PublicPEM(t, servertest.EdKey().Public())})
	openAuth := newAuth(t, Config{DefaultRole: RoleUser, JWTSecret: testSecret, Leeway: testLeeway})
	customClaimAuth := newAuth(t, Config{RequireAuth: true, JWTSecret: testSecret, RoleClaim: "wsgw_role"})

	hs := func(c jwt.MapClaims) string { return servertest.Sign(t, jwt.SigningMethodHS256, testSecret, c) }
	noneTok := servertest.Sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(RoleAdmin, nil))

	tests := []struct {
		name    string
		a       *Authenticator
		token   string
		want    Identity
		wantErr error
	}{
		{"hs256 ok", hmacAuth, hs(claims(RoleUser, nil)),
			Identity{Role: RoleUser, Subject: "client-42", Method: MethodJWT, Expires: testNow.Add(time.Hour)}, nil},
		{"hs384 ok", hmacAuth, servertest.Sign(t, jwt.SigningMethodHS384, testSecret, claims(RoleAdmin, nil)),
			Identity{Role: RoleAdmin, Subject: "client-42", Method: MethodJWT, Expires: testNow.Add(time.Hour)}, nil},
		{"no exp never expires", hmacAuth, hs(claims(RoleUser, map[string]any{"exp": nil})),
			Identity{Role: RoleUser, Subject: "client-42", Method: MethodJWT}, nil},
		{"no sub", hmacAuth, hs(claims(RoleUser, map[string]any{"sub": nil, "exp": nil})),
			Identity{Role: RoleUser, Method: MethodJWT}, nil},
		{"expired", hmacAuth, hs(claims(RoleUser, map[string]any{"exp": testNow.Add(-time.Minute).Unix()})), Identity{}, ErrExpired},
		{"expired within leeway", hmacAuth, hs(claims(RoleUser, map[string]any{"exp": testNow.Add(-3 * time.Second).Unix()})),
			Identity{Role: RoleUser, Subject: "client-42", Method: MethodJWT, Expires: testNow.Add(-3 * time.Second)}, nil},
		{"nbf in future", hmacAuth, hs(claims(RoleUser, map[string]any{"nbf": testNow.Add(time.Minute).Unix()})), Identity{}, ErrInvalidToken},
		{"nbf within leeway", hmacAuth, hs(claims(RoleUser, map[string]any{"nbf": testNow.Add(3 * time.Second).Unix(), "exp": nil})),
			Identity{Role: RoleUser, Subject: "client-42", Method: MethodJWT}, nil},
		{"expired and wrong issuer reports issuer", hmacAuth, hs(claims(RoleUser, map[string]any{
			"exp": testNow.Add(-time.Hour).Unix(), "iss": "evil"})), Identity{}, ErrInvalidToken},
		{"wrong secret", hmacAuth, servertest.Sign(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-32"), claims(RoleUser, nil)), Identity{}, ErrInvalidToken},
		{"alg none", hmacAuth, noneTok, Identity{}, ErrInvalidToken},
		{"alg none open mode", openAuth, noneTok, Identity{}, ErrInvalidToken},
		{"wrong issuer", hmacAuth, hs(claims(RoleUser, map[string]any{"iss": "https://evil.example"})), Identity{}, ErrInvalidToken},
		{"missing issuer", hmacAuth, hs(claims(RoleUser, map[string]any{"iss": nil})), Identity{}, ErrInvalidToken},
		{"wrong audience", hmacAuth, hs(claims(RoleUser, map[string]any{"aud": "other"})), Identity{}, ErrInvalidToken},
		{"audience list", hmacAuth, hs(claims(RoleUser, map[string]any{"aud": []string{"other", "wsgw"}, "exp": nil})),
			Identity{Role: RoleUser, Subject: "client-42", Method: MethodJWT}, nil},
		{"missing role", hmacAuth, hs(claims(RoleUser, map[string]any{"role": nil})), Identity{}, ErrNoRole},
		{"empty role", hmacAuth, hs(claims("", nil)), Identity{}, ErrNoRole},
		{"non-string role", hmacAuth, hs(claims(RoleUser, map[string]any{"role": []string{"admin"}})), Identity{}, ErrNoRole},
		{"unknown role", hmacAuth, hs(claims("superuser", nil)), Identity{}, ErrUnknownRole},
		{"non-string sub", hmacAuth, hs(claims(RoleUser, map[string]any{"sub": 42})), Identity{}, ErrInvalidToken},
		{"custom role claim", customClaimAuth, hs(claims(RoleUser, map[string]any{"wsgw_role": RoleAdmin, "exp": nil})),
			Identity{Role: RoleAdmin, Subject: "client-42", Method: MethodJWT}, nil},
		{"malformed", hmacAuth, "not.a.jwt", Identity{}, ErrInvalidToken},
		{"garbage", hmacAuth, "garbage", Identity{}, ErrInvalidToken},
		{"too long", hmacAuth, strings.Repeat("a", maxTokenLen+1), Identity{}, ErrInvalidToken},

		{"rs256 ok", rsaAuth, servertest.Sign(t, jwt.SigningMethodRS256, servertest.RSAKey(), claims(RoleInternal, map[string]any{"exp": nil})),
			Identity{Role: RoleInternal, Subject: "client-42", Method: MethodJWT}, nil},
		{"rs256 pkcs1 pem", rsaPKCS1Auth, servertest.Sign(t, jwt.SigningMethodRS256, servertest.RSAKey(), claims(RoleUser, map[string]any{"exp": nil})),
			Identity{Role: RoleUser, Subject: "client-42", Method: MethodJWT}, nil},
		{"rs384 not enabled", rsaAuth, servertest.Sign(t, jwt.SigningMethodRS384, servertest.RSAKey(), claims(RoleUser, nil)), Identity{}, ErrInvalidToken},
		{"hs256 keyed with the public key", rsaAuth, servertest.Sign(t, jwt.SigningMethodHS256, rsaPEM, claims(RoleAdmin, nil)), Identity{}, ErrInvalidToken},
		{"hs256 when only rsa", rsaAuth, hs(claims(RoleUser, nil)), Identity{}, ErrInvalidToken},
		{"es256 ok", ecAuth, servertest.Sign(t, jwt.SigningMethodES256, servertest.ECKey(), claims(RoleUser, map[string]any{"exp": nil})),
			Identity{Role: RoleUser, Subject: "client-42", Method: MethodJWT}, nil},
		{"es256 from certificate", ecCertAuth, servertest.Sign(t, jwt.SigningMethodES256, servertest.ECKey(), claims(RoleUser, map[string]any{"exp": nil})),
			Identity{Role: RoleUser, Subject: "client-42", Method: MethodJWT}, nil},
		{"rs256 at ec key", ecAuth, servertest.Sign(t, jwt.SigningMethodRS256, servertest.RSAKey(), claims(RoleUser, nil)), Identity{}, ErrInvalidToken},
		{"eddsa ok", edAuth, servertest.Sign(t, jwt.SigningMethodEdDSA, servertest.EdKey(), claims(RoleAdmin, map[string]any{"exp": nil})),
			Identity{Role: RoleAdmin, Subject: "client-42", Method: MethodJWT}, nil},
		{"eddsa other key", edAuth, func() string {
			_, other, _ := ed25519.GenerateKey(rand.Reader)
			return servertest.Sign(t, jwt.SigningMethodEdDSA, other, claims(RoleAdmin, nil))
		}(), Identity{}, ErrInvalidToken},

		{"api key", hmacAuth, testAPIKey, Identity{Role: RoleAdmin, Subject: APIKeySubject, Method: MethodAPIKey}, nil},
		{"api key wrong", hmacAuth, "nope", Identity{}, ErrInvalidToken},
		{"api key same length wrong", hmacAuth, testAPIKey[:len(testAPIKey)-1] + "X", Identity{}, ErrInvalidToken},
		{"api key prefix", hmacAuth, testAPIKey[:8], Identity{}, ErrInvalidToken},

		{"empty token required", hmacAuth, "", Identity{}, ErrNoToken},
		{"empty token open", openAuth, "", Identity{Role: RoleUser, Method: MethodAnonymous}, nil},
		{"invalid token open is refused", openAuth, "garbage", Identity{}, ErrInvalidToken},
		{"expired token open is refused", openAuth, hs(claims(RoleUser, map[string]any{"exp": testNow.Add(-time.Hour).Unix()})), Identity{}, ErrExpired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.a.Authenticate(tc.token, testNow)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Authenticate error = %v, want %v", err, tc.wantErr)
				}
				if got != (Identity{}) {
					t.Errorf("identity %+v returned with an error", got)
				}
				if len(tc.token) >= 8 && strings.Contains(err.Error(), tc.token) {
					t.Errorf("error message leaks the token: %v", err)
				}
				for _, part := range strings.Split(tc.token, ".") {
					if len(part) >= 8 && strings.Contains(err.Error(), part) {
						t.Errorf("error message leaks part of the token: %v", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Authenticate: %v", err)
			}
			if !got.Expires.Equal(tc.want.Expires) {
				t.Errorf("Expires = %v, want %v", got.Expires, tc.want.Expires)
			}
			got.Expires, tc.want.Expires = time.Time{}, time.Time{}
			if got != tc.want {
				t.Errorf("identity = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestNewAuthenticatorConfig(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(servertest.ECKey())
	if err != nil {
		t.Fatal(err)
	}
	noAdmin, err := NewACL(map[string][]string{RoleUser: {"a:*"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cfg     Config
		acl     *ACL
		wantErr string // substring; "" means success
	}{
		{"open with default role", Config{DefaultRole: RoleUser}, nil, ""},
		{"open with unknown default role", Config{DefaultRole: "guest"}, nil, "default role"},
		{"open without default role", Config{}, nil, "default role"},
		{"required with nothing", Config{RequireAuth: true}, nil, "no API key"},
		{"required with api key", Config{RequireAuth: true, APIKey: "k"}, nil, ""},
		{"api key without admin role", Config{RequireAuth: true, APIKey: "k"}, noAdmin, "admin"},
		{"short secret", Config{RequireAuth: true, JWTSecret: []byte("secret")}, nil, "at least 32"},
		{"negative leeway", Config{RequireAuth: true, APIKey: "k", Leeway: -time.Second}, nil, "leeway"},
		{"issuer without keys", Config{RequireAuth: true, APIKey: "k", Issuer: "x"}, nil, "issuer"},
		{"not pem", Config{RequireAuth: true, JWTPublicKeyPEM: []byte("nope")}, nil, "no PEM block"},
		{"private key pem", Config{RequireAuth: true, JWTPublicKeyPEM: pem.EncodeToMemory(
			&pem.Block{Type: "PRIVATE KEY", Bytes: privDER})}, nil, "not a public key"},
		{"corrupt pem", Config{RequireAuth: true, JWTPublicKeyPEM: pem.EncodeToMemory(
			&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2, 3}})}, nil, "JWT public key"},
		{"small rsa", Config{RequireAuth: true, JWTPublicKeyPEM: servertest.PublicPEM(t, &small.PublicKey)}, nil, "1024 bits"},
		{"p384 is es384", Config{RequireAuth: true, JWTPublicKeyPEM: servertest.PublicPEM(t, &p384.PublicKey)}, nil, ""},
		{"nil acl", Config{RequireAuth: true, APIKey: "k"}, nil, "nil ACL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			acl := tc.acl
			if acl == nil && tc.name != "nil acl" {
				acl = DefaultACL()
			}
			a, err := NewAuthenticator(tc.cfg, acl)
			if tc.wantErr == "" {
				if err != nil || a == nil {
					t.Fatalf("NewAuthenticator: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want ErrConfig containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestAuthenticateES384(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	a := newAuth(t, Config{RequireAuth: true, JWTPublicKeyPEM: servertest.PublicPEM(t, &k.PublicKey)})
	if _, err := a.Authenticate(servertest.Sign(t, jwt.SigningMethodES384, k, claims(RoleUser, nil)), testNow); err != nil {
		t.Fatalf("ES384 with a P-384 key: %v", err)
	}
	if _, err := a.Authenticate(servertest.Sign(t, jwt.SigningMethodES256, servertest.ECKey(), claims(RoleUser, nil)), testNow); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("ES256 at a P-384 key: %v", err)
	}
}

func TestAuthenticateConfigIsCopied(t *testing.T) {
	secret := append([]byte(nil), testSecret...)
	a := newAuth(t, Config{RequireAuth: true, JWTSecret: secret})
	tok := servertest.Sign(t, jwt.SigningMethodHS256, testSecret, claims(RoleUser, nil))
	secret[0] ^= 0xff
	if _, err := a.Authenticate(tok, testNow); err != nil {
		t.Fatalf("mutating the caller's secret changed the authenticator: %v", err)
	}
}

func TestAuthenticateConcurrent(t *testing.T) {
	a := newAuth(t, Config{RequireAuth: true, JWTSecret: testSecret, APIKey: testAPIKey})
	tok := servertest.Sign(t, jwt.SigningMethodHS256, testSecret, claims(RoleUser, nil))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 100 {
				now := testNow.Add(time.Duration(g*100+i) * time.Second)
				if id, err := a.Authenticate(tok, now); err != nil || id.Role != RoleUser {
					t.Errorf("Authenticate: %+v, %v", id, err)
					return
				}
				if _, err := a.Authenticate("wrong", now); !errors.Is(err, ErrInvalidToken) {
					t.Errorf("wrong key: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func BenchmarkAuthenticateHS256(b *testing.B) {
	a := newAuth(b, Config{RequireAuth: true, JWTSecret: testSecret})
	tok := servertest.Sign(b, jwt.SigningMethodHS256, testSecret, claims(RoleUser, nil))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Authenticate(tok, testNow); err != nil {
			b.Fatal(err)
		}
	}
}
