package fanout

// The configuration of durable channels (docs/DURABILITY.md) and the rule
// that says which channels and patterns are durable.

import (
	"errors"
	"fmt"
	"time"

	"github.com/wsgw/gateway/auth"
)

// StreamConfig is the configuration of durable channels, read from
// STREAM_CHANNELS, STREAM_KEY_PREFIX, STREAM_FIELD, MAX_REPLAY,
// STREAM_READER_KEYS, STREAM_DISCOVERY and STREAM_SCAN_INTERVAL. Passed by
// value.
type StreamConfig struct {
	// Channels are the globs of the durable channels; none: no channel
	// is durable.
	Channels []string
	// KeyPrefix + channel is a durable channel's stream key.
	KeyPrefix string
	// Field is the entry field sent as a frame's data.
	Field string
	// MaxReplay bounds the entries one subscription replays, across the
	// channels of a pattern (1 to 1,000,000).
	MaxReplay int
	// ReaderKeys bounds the stream keys one reader follows (1 to 4096),
	// but for the keys of one pattern, which stay in one reader.
	ReaderKeys int
	// Discovery is how a durable pattern finds keys created later:
	// DiscoveryAuto (SCAN, plus keyspace notifications when Redis has
	// them on) or DiscoveryScan.
	Discovery string
	// ScanInterval is the period of the SCAN sweep for new keys (1s to
	// 1h).
	ScanInterval time.Duration
}

// The values of StreamConfig.Discovery.
const (
	DiscoveryAuto = "auto"
	DiscoveryScan = "scan"
)

// Bounds of StreamConfig.
const (
	maxMaxReplay       = 1_000_000
	maxReaderKeys      = 4096
	minScanInterval    = time.Second
	maxScanInterval    = time.Hour
	durableRole        = "durable"
	defaultMaxReplay   = 1000
	defaultReaderKeys  = 64
	defaultScanEvery   = 30 * time.Second
	defaultStreamField = "data"
)

// ErrStreamConfig is wrapped by the errors of NewDurability.
var ErrStreamConfig = errors.New("fanout: invalid durable channel configuration")

// Check returns the first field whose value is out of its bounds and the
// rule it breaks, or two empty strings; cmd/gateway reports it under the
// setting's name (see Config.Check).
func (c *StreamConfig) Check() (field, rule string) {
	if _, err := NewDurability(c.Channels); err != nil {
		return "Channels", "must be channel names or globs (1 to 256 bytes, no whitespace or control characters, no class range with a byte >= 0x80)"
	}
	switch {
	case c.Field == "":
		return "Field", "must not be empty"
	case c.MaxReplay < 1 || c.MaxReplay > maxMaxReplay:
		return "MaxReplay", "must be between 1 and 1000000"
	case c.ReaderKeys < 1 || c.ReaderKeys > maxReaderKeys:
		return "ReaderKeys", "must be between 1 and 4096"
	case c.Discovery != DiscoveryAuto && c.Discovery != DiscoveryScan:
		return "Discovery", "must be auto or scan"
	case c.ScanInterval < minScanInterval || c.ScanInterval > maxScanInterval:
		return "ScanInterval", "must be between 1s and 1h"
	}
	return "", ""
}

// withDefaults fills the fields a test or embedder left zero with the
// settings' defaults (cmd/gateway sets every field itself).
func (c StreamConfig) withDefaults() StreamConfig {
	if c.Field == "" {
		c.Field = defaultStreamField
	}
	if c.MaxReplay == 0 {
		c.MaxReplay = defaultMaxReplay
	}
	if c.ReaderKeys == 0 {
		c.ReaderKeys = defaultReaderKeys
	}
	if c.Discovery == "" {
		c.Discovery = DiscoveryAuto
	}
	if c.ScanInterval == 0 {
		c.ScanInterval = defaultScanEvery
	}
	return c
}

// Durability decides which channels and patterns are durable. Immutable;
// safe for concurrent use.
type Durability struct {
	acl *auth.ACL
}

// NewDurability compiles the globs of STREAM_CHANNELS. They follow the
// rules of ACL patterns (auth.NewACL), since they are read with the same
// matcher.
func NewDurability(globs []string) (*Durability, error) {
	acl, err := auth.NewACL(map[string][]string{durableRole: globs})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStreamConfig, err)
	}
	return &Durability{acl: acl}, nil
}

// Durable reports whether name is durable: an exact channel that one of
// the globs matches, or a pattern every channel of which one glob matches
// (auth's glob containment, whose work is bounded: a pattern too costly to
// decide is not durable, and is served by pub/sub). A nil Durability has
// no durable channel. Cheap enough for an event loop, once per channel of
// a subscribe.
func (d *Durability) Durable(name string) bool {
	return d != nil && d.acl.Allowed(durableRole, name)
}
