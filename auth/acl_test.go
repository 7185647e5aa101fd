package auth

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/wsgw/gateway/wsproto"
)

func TestDefaultACLAllowed(t *testing.T) {
	acl := DefaultACL()
	tests := []struct {
		role, channel string
		want          bool
	}{
		{RoleUser, "market:tick:BANKNIFTY", true},
		{RoleUser, "market:tick:BANK*", true},
		{RoleUser, "market:tick:?", true},
		{RoleUser, "indicators:NIFTY", true},
		{RoleUser, "indicators:*", true},
		{RoleUser, "engine:signal:X", false},
		{RoleUser, "engine:decision:X", false},
		{RoleUser, "market:*", false},
		{RoleUser, "market:tick*", false},
		{RoleUser, "market:tick", false},
		{RoleUser, "*", false},
		{RoleUser, "m*", false},
		{RoleUser, "", false},
		{RoleUser, "market:tick:[A-Z]*", true},
		{RoleUser, "market:tick:\\*", true}, // literal channel "market:tick:\*"
		{RoleAdmin, "engine:signal:X", true},
		{RoleAdmin, "engine:decision:*", true},
		{RoleAdmin, "engine:*", false},
		{RoleAdmin, "market:tick:NIFTY", true},
		{RoleInternal, "*", true},
		{RoleInternal, "anything:at:all", true},
		{RoleInternal, "[a-z]*", true},
		{"nobody", "market:tick:NIFTY", false},
		{"", "market:tick:NIFTY", false},
		{RoleUser, "market:tick:" + strings.Repeat("x", 4096), true},                 // long exact channel: plain match
		{RoleUser, "market:tick:" + strings.Repeat("x", MaxPatternLen) + "*", false}, // long pattern: refused
	}
	for _, tc := range tests {
		name := tc.role + "/" + tc.channel
		if len(name) > 40 {
			name = name[:40]
		}
		t.Run(name, func(t *testing.T) {
			if got := acl.Allowed(tc.role, tc.channel); got != tc.want {
				t.Errorf("Allowed(%q, %q) = %v, want %v", tc.role, tc.channel, got, tc.want)
			}
		})
	}
}

func TestACLAccessors(t *testing.T) {
	acl := DefaultACL()
	if got, want := acl.Roles(), []string{RoleAdmin, RoleInternal, RoleUser}; !slices.Equal(got, want) {
		t.Errorf("Roles() = %q, want %q", got, want)
	}
	acl.Roles()[0] = "mutated"
	if !acl.HasRole(RoleAdmin) || acl.Roles()[0] != RoleAdmin {
		t.Error("Roles() must return a copy")
	}
	if acl.HasRole("guest") {
		t.Error("HasRole(guest) = true")
	}
	if got := patterns(acl, RoleUser); !slices.Equal(got, []string{"market:tick:*", "indicators:*"}) {
		t.Errorf("patterns(user) = %q", got)
	}
	if patterns(acl, "guest") != nil {
		t.Error("patterns(unknown) != nil")
	}
}

// patterns returns the patterns granted to role in definition order, or
// nil for an unknown role.
func patterns(a *ACL, role string) []string {
	ps, ok := a.roles[role]
	if !ok {
		return nil
	}
	out := make([]string, len(ps))
	for i := range ps {
		out[i] = ps[i].src
	}
	return out
}

func TestNewACL(t *testing.T) {
	tests := []struct {
		name    string
		roles   map[string][]string
		wantErr string // substring; "" means success
	}{
		{"ok", map[string][]string{"user": {"a:*"}}, ""},
		{"empty role list allowed", map[string][]string{"banned": nil}, ""},
		{"no roles", map[string][]string{}, "no roles"},
		{"nil", nil, "no roles"},
		{"empty role name", map[string][]string{"": {"a"}}, "is empty"},
		{"space in role", map[string][]string{"us er": {"a"}}, "whitespace"},
		{"empty pattern", map[string][]string{"user": {"a", ""}}, `role "user": pattern 1 "": wsproto: bad channel name: empty`},
		{"long pattern", map[string][]string{"user": {strings.Repeat("a", MaxPatternLen+1)}}, "longer than 256"},
		{"max pattern", map[string][]string{"user": {strings.Repeat("a", MaxPatternLen)}}, ""},
		{"space", map[string][]string{"user": {"a *"}}, "whitespace"},
		{"tab", map[string][]string{"user": {"a\t*"}}, "whitespace"},
		{"newline", map[string][]string{"user": {"a*\n"}}, "whitespace"},
		{"control", map[string][]string{"user": {"a\x01"}}, "control"},
		{"nbsp", map[string][]string{"user": {"a\u00a0b"}}, "whitespace"},
		{"zero width space", map[string][]string{"user": {"a\u200b*"}}, "whitespace"},
		{"BOM", map[string][]string{"user": {"\ufeffa:*"}}, "whitespace"},
		{"invalid utf8", map[string][]string{"user": {"a\xff"}}, "UTF-8"},
		{"high range", map[string][]string{"user": {"[a-é]"}}, "0x80"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			acl, err := NewACL(tc.roles)
			if tc.wantErr == "" {
				if err != nil || acl == nil {
					t.Fatalf("NewACL: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidACL) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("NewACL error = %v, want ErrInvalidACL containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestACLPatternsAreChannelNames: an ACL accepts exactly the patterns a
// client may send. The ACL used to check Unicode's White_Space and control
// classes while the command parser also refused U+200B (zero-width space)
// and U+FEFF (BOM), so an ACL could grant a pattern no client could name.
func TestACLPatternsAreChannelNames(t *testing.T) {
	check := func(t *testing.T, p string) {
		t.Helper()
		_, aclErr := NewACL(map[string][]string{"r": {p}})
		chanErr := wsproto.ValidateChannel(p)
		if (aclErr == nil) != (chanErr == nil) {
			t.Errorf("pattern %q: NewACL error %v, but ValidateChannel error %v", p, aclErr, chanErr)
		}
	}
	for r := rune(0); r < 0x10000; r++ {
		check(t, "a:"+string(r)+"*")
	}
	for _, r := range []rune{0x10000, 0x1f600, 0xe0001, 0xe007f, 0x10ffff} {
		check(t, "a:"+string(r)+"*")
	}
	for _, p := range []string{"", "*", "a\xff", "\xed\xa0\x80", strings.Repeat("x", MaxPatternLen), strings.Repeat("x", MaxPatternLen+1)} {
		check(t, p)
	}
	if _, err := NewACL(map[string][]string{"r": {"a b"}}); !errors.Is(err, wsproto.ErrBadChannel) {
		t.Errorf("NewACL error %v does not wrap wsproto.ErrBadChannel", err)
	}
}

func TestNewACLCopiesAndDedupes(t *testing.T) {
	roles := map[string][]string{"user": {"a:*", "b:*", "a:*"}}
	acl, err := NewACL(roles)
	if err != nil {
		t.Fatal(err)
	}
	roles["user"][0] = "*"
	roles["admin"] = []string{"*"}
	if got := patterns(acl, "user"); !slices.Equal(got, []string{"a:*", "b:*"}) {
		t.Errorf("patterns = %q", got)
	}
	if acl.Allowed("user", "zzz") || acl.HasRole("admin") {
		t.Error("ACL changed after its input map was mutated")
	}
}

func writeFile(tb testing.TB, dir, name, content string) string {
	tb.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

func TestLoadACL(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		content string
		wantErr string // substring; "" means success
		check   func(t *testing.T, acl *ACL)
	}{
		{
			name:    "wrapped",
			content: `{"roles": {"user": ["market:tick:*"], "ops": ["*"]}}`,
			check: func(t *testing.T, acl *ACL) {
				if !slices.Equal(acl.Roles(), []string{"ops", "user"}) || !acl.Allowed("user", "market:tick:X") {
					t.Errorf("roles %q", acl.Roles())
				}
			},
		},
		{
			name:    "bare",
			content: `{"user": ["indicators:*"], "admin": ["*"]}`,
			check: func(t *testing.T, acl *ACL) {
				if !acl.Allowed("user", "indicators:X") || acl.Allowed("user", "market:tick:X") {
					t.Error("bare form decoded wrongly")
				}
			},
		},
		{
			name:    "bare role named roles",
			content: `{"roles": ["x:*"], "user": ["y:*"]}`,
			check: func(t *testing.T, acl *ACL) {
				if !acl.Allowed("roles", "x:1") || !acl.Allowed("user", "y:1") {
					t.Error("role named roles not honoured")
				}
			},
		},
		{name: "empty file", content: ``, wantErr: "not a JSON object"},
		{name: "null", content: `null`, wantErr: "not a JSON object"},
		{name: "array", content: `["a"]`, wantErr: "not a JSON object"},
		{name: "no roles", content: `{}`, wantErr: "no roles"},
		{name: "wrapped empty", content: `{"roles": {}}`, wantErr: "no roles"},
		{name: "syntax", content: `{"user": ["a",]}`, wantErr: "not a JSON object"},
		{name: "trailing", content: `{"user": ["a"]} {"x": []}`, wantErr: "trailing data"},
		{name: "siblings", content: `{"roles": {"user": ["a"]}, "admin": ["*"]}`, wantErr: "next to \"roles\""},
		{name: "pattern not string", content: `{"user": [1]}`, wantErr: "not a JSON object"},
		{name: "bad pattern", content: `{"roles": {"viewer": ["ok:*", "bad pattern"]}}`, wantErr: `role "viewer": pattern 1 "bad pattern"`},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, dir, "acl"+string(rune('a'+i))+".json", tc.content)
			acl, err := LoadACL(path)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("LoadACL: %v", err)
				}
				tc.check(t, acl)
				return
			}
			if !errors.Is(err, ErrInvalidACL) {
				t.Fatalf("error %v does not wrap ErrInvalidACL", err)
			}
			if !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q should contain %q and the path", err, tc.wantErr)
			}
		})
	}
}

func TestLoadACLMissingAndHuge(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope.json")
	_, err := LoadACL(missing)
	if !errors.Is(err, ErrInvalidACL) || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: %v", err)
	}
	huge := writeFile(t, dir, "huge.json", `{"user": ["`+strings.Repeat("a", maxACLFileSize)+`"]}`)
	if _, err := LoadACL(huge); !errors.Is(err, ErrInvalidACL) || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("huge file: %v", err)
	}
}

func TestACLConcurrent(t *testing.T) {
	acl := DefaultACL()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				if !acl.Allowed(RoleUser, "market:tick:BANK*") || acl.Allowed(RoleUser, "market:*") {
					t.Error("wrong answer under concurrency")
					return
				}
			}
		})
	}
	wg.Wait()
}

func BenchmarkACLAllowedExact(b *testing.B) {
	acl := DefaultACL()
	b.ReportAllocs()
	for b.Loop() {
		if !acl.Allowed(RoleAdmin, "indicators:NIFTY") {
			b.Fatal("want allowed")
		}
	}
}

func BenchmarkACLAllowedPattern(b *testing.B) {
	acl := DefaultACL()
	b.ReportAllocs()
	for b.Loop() {
		if !acl.Allowed(RoleAdmin, "indicators:NIFTY*") {
			b.Fatal("want allowed")
		}
	}
}

func BenchmarkACLAllowedPatternDenied(b *testing.B) {
	acl := DefaultACL()
	b.ReportAllocs()
	for b.Loop() {
		if acl.Allowed(RoleAdmin, "market:*") {
			b.Fatal("want denied")
		}
	}
}
