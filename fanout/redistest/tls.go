package redistest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// CA is a certificate authority made by a test, with its certificate in
// a PEM file.
type CA struct {
	// File is the CA certificate (PEM), for a client's or a server's
	// trust store.
	File string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	dir  string
}

// KeyPair is a certificate issued by a CA, and its key, in PEM files.
type KeyPair struct {
	CertFile, KeyFile string
}

var serial atomic.Int64

// NewCA makes a CA (ECDSA P-256, valid from an hour ago for a day) in a
// temporary directory of tb.
func NewCA(tb testing.TB, name string) *CA {
	tb.Helper()
	key := newKey(tb)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatalf("redistest: CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("redistest: CA certificate: %v", err)
	}
	ca := &CA{cert: cert, key: key, dir: tb.TempDir()}
	ca.File = ca.write(tb, name, der, key).CertFile
	return ca
}

// Issue makes a certificate signed by ca for 127.0.0.1 and the DNS names
// given. A server certificate also serves as a client one: a redis-server
// is a TLS client too when it replicates. client makes a client-only
// certificate.
func (ca *CA) Issue(tb testing.TB, name string, client bool, dns ...string) KeyPair {
	tb.Helper()
	key := newKey(tb)
	now := time.Now()
	usage := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	if client {
		usage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usage,
		DNSNames:     dns,
		IPAddresses:  []net.IP{net.ParseIP(host)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		tb.Fatalf("redistest: certificate %s: %v", name, err)
	}
	return ca.write(tb, name, der, key)
}

func newKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("redistest: key: %v", err)
	}
	return key
}

func (ca *CA) write(tb testing.TB, name string, der []byte, key *ecdsa.PrivateKey) KeyPair {
	tb.Helper()
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatalf("redistest: key: %v", err)
	}
	kp := KeyPair{CertFile: filepath.Join(ca.dir, name+".crt"), KeyFile: filepath.Join(ca.dir, name+".key")}
	if err := os.WriteFile(kp.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(kp.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		tb.Fatal(err)
	}
	return kp
}

// tlsConfig is WithTLS's.
type tlsConfig struct {
	ca         *CA
	pair       KeyPair
	clientAuth bool
}

// WithTLS adds a TLS port (TLSAddr) with a certificate issued by ca; the
// plain port stays, for the helpers (Do, Publish...). clientAuth makes
// the server require a client certificate issued by ca.
func WithTLS(ca *CA, pair KeyPair, clientAuth bool) Option {
	return func(c *config) { c.tls = &tlsConfig{ca: ca, pair: pair, clientAuth: clientAuth} }
}

// args are the redis-server arguments of c on port.
func (c *tlsConfig) args(port int) []string {
	if c == nil {
		return nil
	}
	auth := "no"
	if c.clientAuth {
		auth = "yes"
	}
	return []string{
		"--tls-port", strconv.Itoa(port),
		"--tls-cert-file", c.pair.CertFile,
		"--tls-key-file", c.pair.KeyFile,
		"--tls-ca-cert-file", c.ca.File,
		"--tls-auth-clients", auth,
	}
}

// TLSAddr returns "127.0.0.1:P" of the TLS port (WithTLS).
func (s *Server) TLSAddr() string { return net.JoinHostPort(host, strconv.Itoa(s.tlsPort)) }
