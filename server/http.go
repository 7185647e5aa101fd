package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/wsgw/gateway/fanout"
)

// appendHTTP appends a complete HTTP/1.1 response that closes the
// connection. extra holds additional header lines, each ending in \r\n.
func appendHTTP(dst []byte, status int, contentType string, extra string, body []byte) []byte {
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(status), 10)
	dst = append(dst, ' ')
	dst = append(dst, http.StatusText(status)...)
	dst = append(dst, "\r\nContent-Type: "...)
	dst = append(dst, contentType...)
	dst = append(dst, "\r\nContent-Length: "...)
	dst = strconv.AppendInt(dst, int64(len(body)), 10)
	dst = append(dst, "\r\nCache-Control: no-store\r\nConnection: close\r\n"...)
	dst = append(dst, extra...)
	dst = append(dst, "\r\n"...)
	return append(dst, body...)
}

// httpError is a plain-text error response.
func httpError(status int, msg string) []byte {
	return appendHTTP(nil, status, "text/plain; charset=utf-8", "", []byte(msg+"\n"))
}

func jsonResponse(status int, v any) []byte {
	body, err := json.Marshal(v)
	if err != nil {
		return httpError(http.StatusInternalServerError, "internal error")
	}
	return appendHTTP(nil, status, "application/json", "", append(body, '\n'))
}

// Stats is the JSON answer of GET /stats.
type Stats struct {
	Connections       int64  `json:"connections"`
	Streams           int    `json:"streams"`
	MessagesReceived  uint64 `json:"messages_received"`
	MessagesDelivered uint64 `json:"messages_delivered"`
	// MessagesDropped counts frames refused by a connection's full
	// queue, one per connection; HandoffDropped counts messages a shard
	// missed because it fell behind the Redis reader, one per shard.
	MessagesDropped uint64 `json:"messages_dropped"`
	HandoffDropped  uint64 `json:"handoff_dropped"`
	// Queues is how many connections hold a send queue right now: an
	// idle one gives its queue back within seconds.
	Queues        int64   `json:"queues"`
	UptimeSeconds float64 `json:"uptime_seconds"`
	Redis         struct {
		Connected  bool   `json:"connected"`
		Reconnects uint64 `json:"reconnects"`
		// Mode is "standalone", "sentinel" or "cluster" once connected;
		// Links counts the pub/sub connections (one, plus one per
		// Cluster node owning a followed sharded channel).
		Mode  string `json:"mode,omitempty"`
		Links int    `json:"links"`
	} `json:"redis"`
	Version string `json:"version,omitempty"`
	// Durable is the stream readers' counters (docs/DURABILITY.md),
	// when STREAM_CHANNELS names durable channels.
	Durable *fanout.StreamStats `json:"durable,omitempty"`
}

// Stats returns the figures /stats serves. Safe for concurrent use.
func (s *Server) Stats() Stats {
	hs := s.hub.Stats()
	var st Stats
	st.Connections = s.conns.Load()
	st.Streams = hs.Streams
	st.MessagesReceived = hs.MessagesReceived
	st.MessagesDelivered = hs.Delivered
	st.MessagesDropped = hs.Dropped
	st.HandoffDropped = hs.HandoffDropped
	st.Queues = hs.Queues
	st.UptimeSeconds = time.Since(s.started).Seconds()
	st.Redis.Connected = hs.RedisUp
	st.Redis.Reconnects = hs.Reconnects
	st.Redis.Mode = hs.RedisMode
	st.Redis.Links = hs.RedisLinks
	st.Version = s.cfg.Version
	if s.durableHub != nil {
		ds := s.durableHub.Streams().Stats()
		st.Durable = &ds
	}
	return st
}

// plainHTTP answers a non-WebSocket request. Event-loop only.
func (s *Server) plainHTTP(method, path string, upgrade bool) []byte {
	if method != http.MethodGet && method != http.MethodHead {
		return httpError(http.StatusMethodNotAllowed, "method not allowed")
	}
	switch path {
	case "/health":
		// Not ready while Redis is unreachable, nor while shutting down:
		// a load balancer then sends new clients to another gateway
		// rather than to one that answers their upgrades 503.
		up := s.hub.Healthy()
		status, text := http.StatusOK, "ok"
		switch {
		case s.draining.Load():
			status, text = http.StatusServiceUnavailable, "shutting_down"
		case !up:
			status, text = http.StatusServiceUnavailable, "redis_down"
		}
		return jsonResponse(status, map[string]any{"status": text, "redis": up})
	case "/stats":
		if s.cfg.StatsPrivate {
			break // served on the admin listener instead
		}
		return jsonResponse(http.StatusOK, s.Stats())
	case "/ws":
		return httpError(http.StatusBadRequest, "this endpoint speaks WebSocket: send an Upgrade request")
	}
	if resp := webAsset(path); resp != nil {
		return resp // the demo page and the browser client (web.go)
	}
	return httpError(http.StatusNotFound, "not found")
}

// hasToken reports whether a comma-separated header value contains token
// (case-insensitive), as in "Connection: keep-alive, Upgrade".
func hasToken(v, token string) bool {
	for _, part := range bytes.Split([]byte(v), []byte{','}) {
		if bytes.EqualFold(bytes.TrimSpace(part), []byte(token)) {
			return true
		}
	}
	return false
}
