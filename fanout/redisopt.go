package fanout

// The rueidis client options, built from Config: REDIS_URL through
// rueidis.ParseURL (checked here first: ParseURL ignores what it does not
// know and puts the password in its errors), or RedisAddr and its
// credentials; the TLS files; what each client mode needs (Sentinel,
// Cluster). Nothing here talks to Redis. Called at configuration time
// (Check, LoadTLS) and once by the control goroutine (clientOption).

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/wsgw/gateway/wsproto"
)

// urlKeys are the query parameters rueidis.ParseURL reads. It ignores any
// other without a word, so a typo ("master_Set") would quietly make a
// Sentinel URL a Cluster one: Check refuses unknown keys instead.
var urlKeys = []string{"addr", "client_cache", "client_name", "db", "dial_timeout",
	"master_set", "max_retries", "protocol", "skip_verify", "write_timeout"}

const (
	// dialTimeout bounds a connection attempt to a node or a sentinel
	// (rueidis leaves the sentinels' unbounded) unless the URL's
	// dial_timeout says otherwise.
	dialTimeout = 5 * time.Second
	// sentinelRefresh is how often rueidis asks the sentinels for the
	// master besides following their +switch-master events: its only
	// recovery from a missed event.
	sentinelRefresh = 5 * time.Second
	// clusterRefresh is how often rueidis reads the cluster's slot map
	// (CLUSTER SLOTS), so that a promoted replica shows in Nodes() soon
	// after a failover even when nothing else asks.
	clusterRefresh = time.Second
)

// RedactURL returns the Redis URL raw with its password masked, the form
// logs and /stats show. A URL that does not parse is not shown at all.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid REDIS_URL)"
	}
	return u.Redacted()
}

// Target names the Redis the configuration points at, without its
// password: the redacted RedisURL, else RedisAddr.
func (c *Config) Target() string {
	if c.RedisURL != "" {
		return RedactURL(c.RedisURL)
	}
	return c.RedisAddr
}

// checkURL returns why raw is not a Redis URL the gateway accepts, or "".
// The answer never quotes the user name or password.
func checkURL(raw string) string {
	const rule = "must be a Redis URL (redis://, rediss:// or unix://): "
	u, err := url.Parse(raw)
	if err != nil {
		// A *url.Error quotes the whole URL, password included; its
		// cause may quote a bad escape of the password.
		var ue *url.Error
		if errors.As(err, &ue) && !strings.Contains(raw, "@") {
			return rule + ue.Err.Error()
		}
		return rule + "it does not parse (are the user name and password percent-encoded?)"
	}
	if _, err := rueidis.ParseURL(raw); err != nil {
		// Past url.Parse, its errors quote one value (a scheme, a
		// path, a timeout), never the credentials.
		return rule + strings.TrimPrefix(err.Error(), "redis: ")
	}
	q := u.Query()
	for k := range q {
		if !slices.Contains(urlKeys, k) {
			return rule + fmt.Sprintf("unknown parameter %q (known: %s)", k, strings.Join(urlKeys, ", "))
		}
	}
	if u.Scheme == "unix" && (q.Has("addr") || q.Has("master_set")) {
		return rule + "unix:// takes no addr or master_set"
	}
	for _, a := range q["addr"] {
		// rueidis would take a missing port for the first host's, with
		// port 6379: a surprise nobody wants.
		if host, port, err := net.SplitHostPort(a); err != nil || host == "" || port == "" {
			return rule + fmt.Sprintf("addr=%s must be host:port", a)
		}
	}
	if q.Has("master_set") && q.Get("master_set") == "" {
		return rule + "master_set must name the master set"
	}
	return ""
}

// tlsFiles is what LoadTLS read from the TLS files.
type tlsFiles struct {
	roots *x509.CertPool    // nil: the system's
	certs []tls.Certificate // the client certificate, if any
}

// tlsSet reports whether any TLS setting is set.
func (c *Config) tlsSet() bool {
	return c.TLSCAFile != "" || c.TLSCertFile != "" || c.TLSKeyFile != "" || c.TLSServerName != ""
}

// checkTLS is Check's part for the TLS settings (no file is read).
func (c *Config) checkTLS() (field, rule string) {
	switch {
	case (c.TLSCertFile == "") != (c.TLSKeyFile == ""):
		if c.TLSCertFile == "" {
			return "TLSKeyFile", "must be set together with TLSCertFile"
		}
		return "TLSCertFile", "must be set together with TLSKeyFile"
	case c.RedisURL != "" && c.tlsSet() && !strings.HasPrefix(c.RedisURL, "rediss://") && !strings.HasPrefix(c.RedisURL, "valkeys://"):
		// The TLS files say TLS, the URL says clear text: which one
		// the user meant is not ours to guess.
		for _, f := range []struct{ name, v string }{
			{"TLSCAFile", c.TLSCAFile}, {"TLSCertFile", c.TLSCertFile}, {"TLSServerName", c.TLSServerName},
		} {
			if f.v != "" {
				return f.name, "is set but RedisURL is not rediss:// (TLS)"
			}
		}
	}
	return "", ""
}

// LoadTLS reads the TLS files once, so that an unreadable or invalid one
// stops the start, reported under its field; the result travels with
// the Config. field is "" when all is well (or no file is set). Validate
// calls it when the caller has not.
func (c *Config) LoadTLS() (field string, err error) {
	c.tls = nil
	if c.TLSCAFile == "" && c.TLSCertFile == "" {
		return "", nil
	}
	m := &tlsFiles{}
	if c.TLSCAFile != "" {
		pem, err := os.ReadFile(c.TLSCAFile)
		if err != nil {
			return "TLSCAFile", err
		}
		m.roots = x509.NewCertPool()
		if !m.roots.AppendCertsFromPEM(pem) {
			return "TLSCAFile", fmt.Errorf("no PEM certificate in %s", c.TLSCAFile)
		}
	}
	if c.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) && pe.Path == c.TLSKeyFile {
				return "TLSKeyFile", err
			}
			return "TLSCertFile", err
		}
		m.certs = []tls.Certificate{cert}
	}
	c.tls = m
	return "", nil
}

// ClientOption builds the options of the hub's rueidis client from a
// validated Config (with LoadTLS done). cmd/gateway's demo publisher
// uses it too, to publish where the hub subscribes.
func (c *Config) ClientOption() rueidis.ClientOption {
	var opt rueidis.ClientOption
	if c.RedisURL != "" {
		opt, _ = rueidis.ParseURL(c.RedisURL) // checked by Check
	} else {
		opt.InitAddress = []string{c.RedisAddr}
		opt.Username, opt.Password = c.RedisUsername, c.RedisPassword
		if c.tlsSet() {
			// REDIS_HOST has no scheme: the TLS settings are what
			// ask for TLS.
			host, _, _ := net.SplitHostPort(c.RedisAddr)
			opt.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
		}
	}
	unix := opt.DialCtxFn != nil // ParseURL's dialer for unix://
	if opt.TLSConfig != nil {
		if c.tls != nil {
			opt.TLSConfig.RootCAs = c.tls.roots
			opt.TLSConfig.Certificates = c.tls.certs
		}
		if c.TLSServerName != "" {
			opt.TLSConfig.ServerName = c.TLSServerName
		}
		if !unix {
			opt.DialCtxFn = dialTLS(c.TLSServerName)
		}
	}
	opt.DisableCache = true
	opt.AlwaysRESP2 = opt.AlwaysRESP2 || c.RESP2
	opt.ForceSingleClient = opt.ForceSingleClient || c.Standalone
	if opt.ClientName == "" {
		opt.ClientName = "ws-gateway"
	}
	if opt.Dialer.Timeout == 0 {
		opt.Dialer.Timeout = dialTimeout
	}
	if opt.Sentinel.MasterSet != "" {
		// The sentinels are spoken to with the URL's credentials and
		// TLS, as most deployments configure them alike; rueidis would
		// otherwise send them none.
		s := &opt.Sentinel
		s.Username, s.Password = opt.Username, opt.Password
		if s.Password != "" && s.Username == "" && opt.AlwaysRESP2 {
			// RESP2's one-argument AUTH fails on a sentinel without a
			// password; AUTH default <password> passes.
			s.Username = "default"
		}
		s.TLSConfig = opt.TLSConfig
		s.Dialer = opt.Dialer
		s.ClientName = opt.ClientName
		s.TopologyRefreshInterval = sentinelRefresh
	}
	opt.ClusterOption.ShardsRefreshInterval = clusterRefresh
	return opt
}

// dialTLS dials a node over TLS verifying the certificate against that
// node's own host name (or serverName when set): rueidis dials every node
// of a Cluster, and the master a Sentinel names, with one tls.Config whose
// ServerName is the URL's first host, which only fits nodes that share
// one certificate name. A nil cfg (a sentinel without TLS) dials in clear.
func dialTLS(serverName string) func(context.Context, string, *net.Dialer, *tls.Config) (net.Conn, error) {
	return func(ctx context.Context, dst string, d *net.Dialer, cfg *tls.Config) (net.Conn, error) {
		if cfg == nil {
			return d.DialContext(ctx, "tcp", dst)
		}
		cfg = cfg.Clone()
		if serverName != "" {
			cfg.ServerName = serverName
		} else if host, _, err := net.SplitHostPort(dst); err == nil {
			cfg.ServerName = host
		}
		return (&tls.Dialer{NetDialer: d, Config: cfg}).DialContext(ctx, "tcp", dst)
	}
}

// checkSharded returns why ShardedChannels holds a glob the gateway
// cannot use, or "".
func (c *Config) checkSharded() string {
	for _, g := range c.ShardedChannels {
		if g == "" || len(g) > wsproto.MaxChannelLen {
			return fmt.Sprintf("must hold globs of 1 to %d bytes", wsproto.MaxChannelLen)
		}
	}
	return ""
}
