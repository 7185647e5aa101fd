package main

import (
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestDeployHAProxyConfig checks docs/deploy/haproxy.cfg with haproxy -c
// and against docs/deploy/compose.yaml: every server it balances over is
// a gateway service there, and the gateways trust HAProxy's address (and
// only that) for the PROXY header the file makes HAProxy send.
func TestDeployHAProxyConfig(t *testing.T) {
	const cfgPath, composePath = "../../docs/deploy/haproxy.cfg", "../../docs/deploy/compose.yaml"
	checkHAProxyConfig(t, cfgPath)
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	compose, err := os.ReadFile(composePath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg), "send-proxy-v2") {
		t.Fatal("haproxy.cfg does not send the PROXY protocol v2 header")
	}
	servers := regexp.MustCompile(`(?m)^\s*server\s+\S+\s+([a-z0-9-]+):8889\b`).FindAllStringSubmatch(string(cfg), -1)
	if len(servers) < 2 {
		t.Fatalf("haproxy.cfg balances over %d gateways, want at least 2", len(servers))
	}
	for _, s := range servers {
		if !regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(s[1]) + `:`).Match(compose) {
			t.Errorf("haproxy.cfg's server %s is not a service of compose.yaml", s[1])
		}
	}
	ip := regexp.MustCompile(`ipv4_address:\s*(\S+)`).FindSubmatch(compose)
	trusted := regexp.MustCompile(`TRUSTED_PROXIES:\s*(\S+)`).FindSubmatch(compose)
	if ip == nil || trusted == nil {
		t.Fatal("compose.yaml must pin HAProxy's address (ipv4_address) and set TRUSTED_PROXIES to it")
	}
	addr, err := netip.ParseAddr(string(ip[1]))
	if err != nil {
		t.Fatal(err)
	}
	pfx, err := netip.ParsePrefix(string(trusted[1]))
	if err != nil {
		t.Fatalf("compose.yaml TRUSTED_PROXIES: %v", err)
	}
	if !pfx.Contains(addr) || pfx.Bits() != addr.BitLen() {
		t.Fatalf("compose.yaml TRUSTED_PROXIES=%s, want exactly HAProxy's %s", pfx, addr)
	}
}
