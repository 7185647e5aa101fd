package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"unicode"
	"unicode/utf8"

	"github.com/wsgw/gateway/wsproto"
)

// Built-in role names. RoleAdmin is also the role an API key grants.
const (
	RoleUser     = "user"
	RoleAdmin    = "admin"
	RoleInternal = "internal"
)

// maxACLFileSize caps how much LoadACL reads, so a wrong path (a log file, a
// device) fails fast instead of being slurped into memory.
const maxACLFileSize = 1 << 20

// ACL maps roles to the Redis glob patterns they may subscribe to. It is
// immutable after construction and safe for concurrent use; patterns are
// compiled once so that checks on the subscribe path do no parsing.
type ACL struct {
	roles map[string][]aclPattern
	names []string // sorted
}

type aclPattern struct {
	src string
	g   glob
}

// DefaultACL returns the built-in policy: "user" may read market ticks and
// indicators, "admin" additionally the engine's signal and decision
// channels, and "internal" everything.
func DefaultACL() *ACL {
	a, err := NewACL(map[string][]string{
		RoleUser:     {"market:tick:*", "indicators:*"},
		RoleAdmin:    {"market:tick:*", "engine:signal:*", "engine:decision:*", "indicators:*"},
		RoleInternal: {"*"},
	})
	if err != nil {
		// The literal above is fixed; failing here is a programming error.
		panic(err)
	}
	return a
}

// NewACL builds an ACL from role names to patterns. It requires at least one
// role; role names must be non-empty, valid UTF-8 without whitespace or
// control characters, and patterns valid channel names by the rule clients
// are held to (wsproto.ValidateChannel), so that no pattern grants what no
// client could ask for. Class ranges with an endpoint >= 0x80 are refused
// because Redis reads them differently on different platforms. A role with
// no patterns is allowed: it may connect but subscribe to nothing. The map
// is copied.
func NewACL(roles map[string][]string) (*ACL, error) {
	return newACL(roles, "")
}

// LoadACL reads an ACL from a JSON file, either {"roles": {"user":
// ["market:tick:*"], ...}} or the bare {"user": [...], ...}, and validates
// it as NewACL does. Errors name the file and, where relevant, the role.
func LoadACL(path string) (*ACL, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidACL, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxACLFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidACL, path, err)
	}
	if len(data) > maxACLFileSize {
		return nil, fmt.Errorf("%w: %s: larger than %d bytes", ErrInvalidACL, path, maxACLFileSize)
	}
	roles, err := decodeACL(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidACL, path, err)
	}
	return newACL(roles, path)
}

// errACLSyntax carries decode failures up to LoadACL, which adds the file
// name and the ErrInvalidACL sentinel.
var errACLSyntax = errors.New("not a JSON object of role name to pattern list")

// decodeACL accepts the wrapped and the bare form. The wrapped form is
// recognised by a "roles" key holding an object; in the bare form a role
// named "roles" holds an array, so the two cannot be confused.
func decodeACL(data []byte) (map[string][]string, error) {
	var top map[string]json.RawMessage
	if err := decodeStrict(data, &top); err != nil {
		return nil, fmt.Errorf("%w: %w", errACLSyntax, err)
	}
	if top == nil {
		return nil, errACLSyntax
	}
	if raw, ok := top["roles"]; ok && isJSONObject(raw) {
		if len(top) != 1 {
			// Any sibling key is most likely a role put at the wrong level,
			// which would otherwise be silently ignored.
			return nil, fmt.Errorf("%w: unexpected keys next to \"roles\"", errACLSyntax)
		}
		data = raw
	}
	var roles map[string][]string
	if err := decodeStrict(data, &roles); err != nil {
		return nil, fmt.Errorf("%w: %w", errACLSyntax, err)
	}
	return roles, nil
}

// decodeStrict decodes exactly one JSON value, refusing trailing data so a
// truncated or concatenated file is not half-read.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

func isJSONObject(raw json.RawMessage) bool {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	return len(raw) > 0 && raw[0] == '{'
}

func newACL(roles map[string][]string, source string) (*ACL, error) {
	where := ""
	if source != "" {
		where = source + ": "
	}
	if len(roles) == 0 {
		return nil, fmt.Errorf("%w: %sno roles defined", ErrInvalidACL, where)
	}
	a := &ACL{roles: make(map[string][]aclPattern, len(roles))}
	for role, patterns := range roles {
		if reason := badRoleName(role); reason != "" {
			return nil, fmt.Errorf("%w: %srole %q: name %s", ErrInvalidACL, where, role, reason)
		}
		compiled := make([]aclPattern, 0, len(patterns))
		for i, p := range patterns {
			if err := wsproto.ValidateChannel(p); err != nil {
				return nil, fmt.Errorf("%w: %srole %q: pattern %d %q: %w", ErrInvalidACL, where, role, i, p, err)
			}
			g := compileGlob(p, rangeUnsigned)
			if g.highRange {
				return nil, fmt.Errorf("%w: %srole %q: pattern %d %q has a class range with a byte >= 0x80, which Redis reads differently per platform",
					ErrInvalidACL, where, role, i, p)
			}
			if slices.ContainsFunc(compiled, func(c aclPattern) bool { return c.src == p }) {
				continue
			}
			compiled = append(compiled, aclPattern{src: p, g: g})
		}
		a.roles[role] = compiled
		a.names = append(a.names, role)
	}
	slices.Sort(a.names)
	return a, nil
}

// badRoleName explains why s is unusable as a role name, or returns "".
// Whitespace and control characters are refused because they are almost
// always copy-paste accidents in configuration and are invisible in logs.
// (Patterns are channel names and follow wsproto.ValidateChannel.)
func badRoleName(s string) string {
	switch {
	case s == "":
		return "is empty"
	case !utf8.ValidString(s):
		return "is not valid UTF-8"
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return "contains whitespace or control characters"
		}
	}
	return ""
}

// HasRole reports whether the ACL defines role.
func (a *ACL) HasRole(role string) bool {
	_, ok := a.roles[role]
	return ok
}

// Roles returns the defined role names, sorted. The slice is a copy.
func (a *ACL) Roles() []string {
	return slices.Clone(a.names)
}

// Allowed reports whether role may subscribe to channel. An exact channel
// (see IsPattern) is allowed when one of the role's patterns matches it; a
// pattern is allowed only when one of the role's patterns matches every
// channel it could match (PatternContains), so a glob cannot widen access.
// An unknown role is allowed nothing. An exact channel is judged as the
// literal name, backslashes included, so the caller must subscribe to it with
// SUBSCRIBE, not PSUBSCRIBE. Allowed does no I/O and its work is
// bounded (workBudget per pattern asked for; a pattern that would need more
// is refused), so it is safe to call on an event loop for every subscribe.
func (a *ACL) Allowed(role, channel string) bool {
	ps, ok := a.roles[role]
	if !ok || len(ps) == 0 {
		return false
	}
	if !IsPattern(channel) {
		for i := range ps {
			if ps[i].g.match(channel) {
				return true
			}
		}
		return false
	}
	if len(channel) > MaxPatternLen {
		return false
	}
	for i := range ps {
		if ps[i].src == channel {
			return true
		}
	}
	// One budget for the whole decision, whatever the number of the
	// role's patterns: the cost of a request is bounded by the number of
	// channels it names.
	w := work{left: workBudget - len(channel)}
	in := compileGlob(channel, rangeUnion)
	for i := range ps {
		if containsGlob(&ps[i].g, &in, &w) {
			return true
		}
		if w.left < 0 {
			return false
		}
	}
	return false
}
