package fanout

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDurability(t *testing.T) {
	d, err := NewDurability([]string{"engine:signal:*", "engine:decision:*", "orders"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		want bool
	}{
		{"engine:signal:NIFTY", true},
		{"engine:decision:X", true},
		{"orders", true},
		{"orders2", false},
		{"market:tick:NIFTY", false},
		{"engine:signal:*", true},   // every channel it matches is durable
		{"engine:signal:N*", true},  // contained
		{"engine:signal:?", true},   // contained
		{"engine:*", false},         // matches engine:other too: mixed, pub/sub
		{"engine:[sd]*", false},     // engine:s... need not be engine:signal:
		{"*", false},                // everything
		{"order?", false},           // matches orders and orderx
		{"engine:signal:\\*", true}, // an exact channel, escaped
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := d.Durable(tt.name); got != tt.want {
				t.Fatalf("Durable(%q) = %v, want %v", tt.name, got, tt.want)
			}
		})
	}
	var none *Durability
	if none.Durable("orders") {
		t.Error("a nil Durability found a durable channel")
	}
	empty, err := NewDurability(nil)
	if err != nil || empty.Durable("orders") || empty.Durable("*") {
		t.Errorf("no globs: %v, durable channels found", err)
	}
	if _, err := NewDurability([]string{"a b"}); !errors.Is(err, ErrStreamConfig) {
		t.Errorf("glob with a space: %v, want ErrStreamConfig", err)
	}
}

func TestStreamConfigCheck(t *testing.T) {
	ok := StreamConfig{Channels: []string{"e:*"}, KeyPrefix: "stream:", Field: "data", MaxReplay: 1000,
		ReaderKeys: 64, Discovery: DiscoveryAuto, ScanInterval: 30 * time.Second}
	if f, r := ok.Check(); f != "" {
		t.Fatalf("valid config refused: %s %s", f, r)
	}
	if d := (StreamConfig{}).withDefaults(); d.Field != "data" || d.MaxReplay != 1000 || d.ReaderKeys != 64 ||
		d.Discovery != DiscoveryAuto || d.ScanInterval != 30*time.Second {
		t.Fatalf("withDefaults = %+v", d)
	}
	tests := []struct {
		name  string
		edit  func(*StreamConfig)
		field string
	}{
		{"bad glob", func(c *StreamConfig) { c.Channels = []string{"e:*", strings.Repeat("x", 257)} }, "Channels"},
		{"no field", func(c *StreamConfig) { c.Field = "" }, "Field"},
		{"max replay 0", func(c *StreamConfig) { c.MaxReplay = 0 }, "MaxReplay"},
		{"max replay too big", func(c *StreamConfig) { c.MaxReplay = 1_000_001 }, "MaxReplay"},
		{"reader keys 0", func(c *StreamConfig) { c.ReaderKeys = 0 }, "ReaderKeys"},
		{"discovery", func(c *StreamConfig) { c.Discovery = "notify" }, "Discovery"},
		{"scan too often", func(c *StreamConfig) { c.ScanInterval = time.Millisecond }, "ScanInterval"},
		{"scan too rare", func(c *StreamConfig) { c.ScanInterval = 2 * time.Hour }, "ScanInterval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.edit(&c)
			if f, r := c.Check(); f != tt.field || r == "" {
				t.Fatalf("Check() = %q %q, want field %q", f, r, tt.field)
			}
		})
	}
}
