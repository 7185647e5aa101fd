package wsproto

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Limits on command fields (channel names at most 256 bytes,
// requestId at most 128 bytes).
const (
	MaxChannelLen   = 256
	MaxRequestIDLen = 128
)

// Action is a client command's verb.
type Action uint8

// The actions a client may send.
const (
	ActionSubscribe Action = iota + 1
	ActionUnsubscribe
	ActionPing
)

func (a Action) String() string {
	switch a {
	case ActionSubscribe:
		return "subscribe"
	case ActionUnsubscribe:
		return "unsubscribe"
	case ActionPing:
		return "ping"
	}
	return "unknown"
}

// Command is one parsed client command.
type Command struct {
	Action   Action
	Channels []string // deduplicated, in the order first given
	// RequestID is the raw JSON of the requestId (a string or a number),
	// echoed verbatim in replies; nil when absent. It aliases nothing:
	// ParseCommand copies it.
	RequestID []byte
}

// CommandError is a refused command: the code and message of the error
// frame to send, and the offending channels if any.
type CommandError struct {
	Code      ErrorCode
	Message   string
	Channels  []string
	RequestID []byte // echoed when the requestId itself could be parsed
}

func (e *CommandError) Error() string { return fmt.Sprintf("wsproto: %s: %s", e.Code, e.Message) }

// ErrBadChannel is wrapped by ValidateChannel's errors.
var ErrBadChannel = errors.New("wsproto: bad channel name")

// ValidateChannel is the gateway's one rule for channel names and patterns,
// applied to what clients send (ParseCommand) and to the patterns an ACL
// grants (package auth), so that configuration cannot name what no client
// could ask for: non-empty, at most MaxChannelLen bytes, valid UTF-8, no
// whitespace or control characters. It allocates only when it refuses.
func ValidateChannel(c string) error {
	switch {
	case c == "":
		return fmt.Errorf("%w: empty", ErrBadChannel)
	case len(c) > MaxChannelLen:
		return fmt.Errorf("%w: longer than %d bytes", ErrBadChannel, MaxChannelLen)
	case !utf8.ValidString(c):
		return fmt.Errorf("%w: invalid UTF-8", ErrBadChannel)
	}
	for _, r := range c {
		// Whitespace and control characters (C0, DEL, C1, Unicode spaces,
		// the zero-width space and the BOM) are refused: they make names
		// that look alike, or empty, in logs and UIs.
		if r <= 0x20 || r == 0x7f || (r >= 0x80 && r <= 0xa0) || r == 0x1680 ||
			(r >= 0x2000 && r <= 0x200b) || r == 0x2028 || r == 0x2029 ||
			r == 0x202f || r == 0x205f || r == 0x3000 || r == 0xfeff {
			return fmt.Errorf("%w: contains whitespace or a control character", ErrBadChannel)
		}
	}
	return nil
}

// ParseCommand parses one client text message. It never panics on any
// input (fuzzed by FuzzParseCommand). Event-loop use; allocates (commands
// are rare compared with deliveries).
func ParseCommand(p []byte) (Command, *CommandError) {
	var raw struct {
		Action    json.RawMessage `json:"action"`
		Channels  json.RawMessage `json:"channels"`
		RequestID json.RawMessage `json:"requestId"`
	}
	p = bytes.TrimSpace(p)
	if len(p) == 0 || p[0] != '{' {
		return Command{}, &CommandError{Code: CodeBadRequest, Message: "message is not a JSON object"}
	}
	if err := json.Unmarshal(p, &raw); err != nil {
		return Command{}, &CommandError{Code: CodeBadRequest, Message: "message is not valid JSON"}
	}
	var cmd Command
	if len(raw.RequestID) > 0 && !bytes.Equal(raw.RequestID, []byte("null")) {
		id, msg := parseRequestID(raw.RequestID)
		if msg != "" {
			return Command{}, &CommandError{Code: CodeBadRequest, Message: msg}
		}
		cmd.RequestID = id
	}
	fail := func(code ErrorCode, msg string, chans []string) (Command, *CommandError) {
		return Command{}, &CommandError{Code: code, Message: msg, Channels: chans, RequestID: cmd.RequestID}
	}
	var action string
	if len(raw.Action) == 0 {
		return fail(CodeBadRequest, `missing "action"`, nil)
	}
	if err := json.Unmarshal(raw.Action, &action); err != nil {
		return fail(CodeBadRequest, `"action" must be a string`, nil)
	}
	switch action {
	case "subscribe":
		cmd.Action = ActionSubscribe
	case "unsubscribe":
		cmd.Action = ActionUnsubscribe
	case "ping":
		cmd.Action = ActionPing
		return cmd, nil
	default:
		return fail(CodeUnknownAction, "unknown action (want subscribe, unsubscribe or ping)", nil)
	}
	if len(raw.Channels) == 0 || bytes.Equal(raw.Channels, []byte("null")) {
		return fail(CodeBadRequest, `missing "channels"`, nil)
	}
	var chans []string
	if err := json.Unmarshal(raw.Channels, &chans); err != nil {
		return fail(CodeBadRequest, `"channels" must be an array of strings`, nil)
	}
	if len(chans) == 0 {
		return fail(CodeBadRequest, `"channels" is empty`, nil)
	}
	var bad []string
	for _, c := range chans {
		if ValidateChannel(c) != nil {
			bad = append(bad, truncateName(c))
		}
	}
	if bad != nil {
		return fail(CodeBadRequest, "invalid channel name: names are 1 to 256 bytes with no whitespace or control characters", bad)
	}
	cmd.Channels = dedupe(chans)
	return cmd, nil
}

// parseRequestID accepts a JSON string of at most MaxRequestIDLen bytes or
// a JSON number, and returns its raw JSON (copied) for echoing.
func parseRequestID(raw json.RawMessage) ([]byte, string) {
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, `"requestId" is not a valid string`
		}
		if len(s) > MaxRequestIDLen {
			return nil, fmt.Sprintf(`"requestId" is longer than %d bytes`, MaxRequestIDLen)
		}
		// Re-encode: the echo is then canonical and cannot carry
		// anything the parser accepted but a client would choke on.
		return AppendJSONString(nil, s), ""
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		var n json.Number
		if err := json.Unmarshal(raw, &n); err != nil || len(raw) > MaxRequestIDLen {
			return nil, `"requestId" must be a string or a number`
		}
		return append([]byte(nil), raw...), ""
	}
	return nil, `"requestId" must be a string or a number`
}

// truncateName keeps error frames bounded when a client sends a huge name.
func truncateName(c string) string {
	if len(c) <= MaxChannelLen {
		return c
	}
	c = c[:MaxChannelLen]
	for len(c) > 0 && !utf8.ValidString(c) {
		c = c[:len(c)-1]
	}
	return c + "…"
}

func dedupe(chans []string) []string {
	if len(chans) < 2 {
		return chans
	}
	out := chans[:0]
	seen := make(map[string]struct{}, len(chans))
	for _, c := range chans {
		if _, ok := seen[c]; ok {
			continue
		}
		seen[c] = struct{}{}
		out = append(out, c)
	}
	return out
}
