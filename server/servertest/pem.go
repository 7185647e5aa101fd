package servertest

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"testing"
)

// PublicPEM is pub as a PEM "PUBLIC KEY" block (PKIX), the form
// JWT_PUBLIC_KEY_FILE takes.
func PublicPEM(tb testing.TB, pub crypto.PublicKey) []byte {
	tb.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}
