package servertest

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Keys generated once per test binary (RSA generation is slow, more so
// under -race). The Other keys sign tokens no gateway trusts.
var (
	RSAKey = sync.OnceValue(func() *rsa.PrivateKey {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		return k
	})
	ECKey      = sync.OnceValue(newECKey)
	OtherECKey = sync.OnceValue(newECKey)
	EdKey      = sync.OnceValue(newEdKey)
	OtherEdKey = sync.OnceValue(newEdKey)
)

func newECKey() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

func newEdKey() ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

// Sign signs claims with method and key (golang-jwt/jwt/v5).
func Sign(tb testing.TB, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	tb.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		tb.Fatalf("sign %s: %v", method.Alg(), err)
	}
	return s
}

// Claims is a claim set for role issued a minute before now and valid
// for an hour after it, with each map of overrides applied in order: a
// nil value deletes the claim.
func Claims(role string, now time.Time, overrides ...map[string]any) jwt.MapClaims {
	c := jwt.MapClaims{
		"sub":  "client-7",
		"role": role,
		"iat":  now.Add(-time.Minute).Unix(),
		"exp":  now.Add(time.Hour).Unix(),
	}
	for _, o := range overrides {
		for k, v := range o {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
	}
	return c
}
