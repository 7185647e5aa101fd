package redistest

import (
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// client returns the client of Do and Exec, connecting it on first use
// after Start or Restart.
func (s *Server) client() (rueidis.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rc != nil {
		return s.rc, nil
	}
	c, err := newClient(s.Addr(), ioTimeout)
	if err != nil {
		return nil, err
	}
	s.rc = c
	return c, nil
}

// newClient connects a rueidis client to addr: one standalone server,
// spoken to in RESP2 so that replies read as redis-cli shows them (CONFIG
// GET a list, not a map), without client-side caching (which needs RESP3)
// and without retries, so that a test sees every failure.
func newClient(addr string, timeout time.Duration) (rueidis.Client, error) {
	return rueidis.NewClient(rueidis.ClientOption{
		InitAddress:       []string{addr},
		ForceSingleClient: true,
		AlwaysRESP2:       true,
		DisableCache:      true,
		DisableRetry:      true,
		Dialer:            net.Dialer{Timeout: timeout},
		ConnWriteTimeout:  timeout,
		ClientName:        "redistest",
	})
}

// render renders a reply as one line of text: integers in decimal,
// strings (bulk or simple) byte for byte, nil as "(nil)", arrays with
// their elements rendered and joined by single spaces (nested arrays
// flatten). A transport failure or an error reply is returned as the
// error.
func render(r rueidis.RedisResult) (string, error) {
	m, err := r.ToMessage()
	if err != nil {
		if rueidis.IsRedisNil(err) {
			return "(nil)", nil
		}
		return "", err
	}
	return renderMessage(&m)
}

func renderMessage(m *rueidis.RedisMessage) (string, error) {
	switch {
	case m.IsNil():
		return "(nil)", nil
	case m.IsInt64():
		n, err := m.AsInt64()
		return strconv.FormatInt(n, 10), err
	case m.IsArray():
		vs, err := m.ToArray()
		if err != nil {
			return "", err
		}
		parts := make([]string, len(vs))
		for i := range vs {
			if parts[i], err = renderMessage(&vs[i]); err != nil {
				return "", err
			}
		}
		return strings.Join(parts, " "), nil
	}
	return m.ToString()
}
