package wsproto

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
	"unsafe"
)

// Limits on command fields.
const (
	// MaxChannelLen is the longest channel name or pattern, in bytes.
	MaxChannelLen = 256
	// MaxRequestIDLen is the longest requestId: a string's unescaped
	// bytes, or a number's digits.
	MaxRequestIDLen = 128
	// MaxSinceEntries is the most members a subscribe's "since" object may
	// have, repeated keys included: it bounds the parser's and the server's
	// work on hostile input. A client resuming more channels than that
	// splits them over several subscribes.
	MaxSinceEntries = 1024
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
	// Since is a subscribe's "since" object: for names of Channels, or
	// for concrete channels their patterns match, the stream entry ID the
	// client has seen last. One entry per key, in the order first given,
	// holding the last ID given for it (so a repeated key reads as in
	// encoding/json or a browser's JSON.parse). Every key is a valid
	// channel name; whether it names or matches one of Channels, and the
	// ID (as sent, unchecked), are for the server to check, after the ACL.
	// nil when "since" is absent, null or {}, and for other actions, which
	// ignore the field.
	Since []SinceEntry
	// RequestID is the raw JSON of the requestId (a string or a number),
	// echoed verbatim in replies; nil when absent. It aliases nothing:
	// ParseCommand copies it.
	RequestID []byte
}

// SinceEntry is one member of a subscribe's "since" object.
type SinceEntry struct {
	Channel string // a channel name: one of the command's Channels (the same string), or not
	ID      string // the stream entry ID, as sent
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

// Error messages of refused commands.
const (
	msgNotObject     = "message is not a JSON object"
	msgNotJSON       = "message is not valid JSON"
	msgRequestIDType = `"requestId" must be a string or a number`
	msgActionMissing = `missing "action"`
	msgActionType    = `"action" must be a string`
	msgActionUnknown = "unknown action (want subscribe, unsubscribe or ping)"
	msgChansMissing  = `missing "channels"`
	msgChansType     = `"channels" must be an array of strings`
	msgChansEmpty    = `"channels" is empty`
	msgBadChannel    = "invalid channel name: names are 1 to 256 bytes with no whitespace or control characters"
	msgSinceType     = `"since" must be an object of strings`
	msgSinceBadKey   = `invalid "since" key: keys are channel names of 1 to 256 bytes with no whitespace or control characters`
)

var (
	msgRequestIDLong = `"requestId" is longer than ` + strconv.Itoa(MaxRequestIDLen) + ` bytes`
	msgSinceTooMany  = `"since" has more than ` + strconv.Itoa(MaxSinceEntries) + ` entries`
)

// ParseCommand parses one client text message. It never panics on any
// input (fuzzed by FuzzParseCommand) and answers every input exactly as
// decoding it with encoding/json into the command's fields would (fuzzed
// against that by FuzzParseCommandDifferential): the same documents are
// invalid, keys match fields without regard to case, the last of repeated
// keys wins, strings unescape alike.
//
// Event-loop use. A valid command allocates only what it keeps: the
// channel names, the slice of them, the requestId and the since IDs and
// their slice. p is not modified and nothing returned aliases it.
func ParseCommand(p []byte) (Command, *CommandError) {
	p = bytes.TrimSpace(p)
	if len(p) == 0 || p[0] != '{' {
		return Command{}, &CommandError{Code: CodeBadRequest, Message: msgNotObject}
	}
	var f commandFields
	if !f.scan(p) {
		return Command{}, &CommandError{Code: CodeBadRequest, Message: msgNotJSON}
	}
	var cmd Command
	if v := f.value(p, fieldRequestID); v != nil && v[0] != 'n' {
		id, msg := parseRequestID(v)
		if msg != "" {
			return Command{}, &CommandError{Code: CodeBadRequest, Message: msg}
		}
		cmd.RequestID = id
	}

	v := f.value(p, fieldAction)
	switch {
	case v == nil:
		return cmd.fail(CodeBadRequest, msgActionMissing, nil)
	case v[0] == '"':
		var buf [len("unsubscribe") + utf8.UTFMax]byte
		if name, ok := appendUnquoted(buf[:0], v[1:len(v)-1], len("unsubscribe")); ok {
			for a := ActionSubscribe; a <= ActionPing; a++ {
				if string(name) == a.String() {
					cmd.Action = a
				}
			}
		}
	case v[0] != 'n': // null decodes to "", no action
		return cmd.fail(CodeBadRequest, msgActionType, nil)
	}
	switch cmd.Action {
	case 0:
		return cmd.fail(CodeUnknownAction, msgActionUnknown, nil)
	case ActionPing:
		return cmd, nil
	}

	v = f.value(p, fieldChannels)
	if v == nil || v[0] == 'n' {
		return cmd.fail(CodeBadRequest, msgChansMissing, nil)
	}
	chans, index, bad, msg := parseChannels(v)
	if msg != "" {
		return cmd.fail(CodeBadRequest, msg, bad)
	}
	cmd.Channels = chans

	if v = f.value(p, fieldSince); cmd.Action == ActionSubscribe && v != nil && v[0] != 'n' {
		since, bad, msg := parseSince(v, chans, index)
		if msg != "" {
			return cmd.fail(CodeBadRequest, msg, bad)
		}
		cmd.Since = since
	}
	return cmd, nil
}

// fail refuses the command, echoing its requestId.
func (cmd *Command) fail(code ErrorCode, msg string, chans []string) (Command, *CommandError) {
	return Command{}, &CommandError{Code: code, Message: msg, Channels: chans, RequestID: cmd.RequestID}
}

// The command's fields, as indexes into commandFields.spans.
const (
	fieldAction = iota
	fieldChannels
	fieldRequestID
	fieldSince
	numFields
	fieldNone = -1
)

// fieldUpper holds the fields' names upper-cased, for matching keys.
var fieldUpper = [numFields]string{"ACTION", "CHANNELS", "REQUESTID", "SINCE"}

// maxFieldKeyLen bounds the unescaped key that can name a field: three
// bytes per letter (the Kelvin sign folds to K).
const maxFieldKeyLen = 3 * len("REQUESTID")

// commandFields records where in the message the value of each field is.
type commandFields struct {
	spans [numFields]struct{ start, end int } // end 0: absent
}

// scan checks that p, which starts with '{' and has no surrounding
// whitespace, is exactly one valid JSON object, and records the value of
// the last key naming each field.
func (f *commandFields) scan(p []byte) bool {
	i := skipSpace(p, 1)
	if i < len(p) && p[i] == '}' {
		return skipSpace(p, i+1) == len(p)
	}
	for {
		if i >= len(p) || p[i] != '"' {
			return false
		}
		end, flags, ok := scanString(p, i)
		if !ok {
			return false
		}
		field := matchField(p[i+1:end-1], flags)
		if i = skipSpace(p, end); i >= len(p) || p[i] != ':' {
			return false
		}
		start := skipSpace(p, i+1)
		if i, ok = skipValue(p, start, 1); !ok {
			return false
		}
		if field != fieldNone {
			f.spans[field].start, f.spans[field].end = start, i
		}
		if i = skipSpace(p, i); i >= len(p) {
			return false
		}
		switch p[i] {
		case ',':
			i = skipSpace(p, i+1)
		case '}':
			return skipSpace(p, i+1) == len(p)
		default:
			return false
		}
	}
}

// value returns the raw JSON of field, or nil when absent.
func (f *commandFields) value(p []byte, field int) []byte {
	s := f.spans[field]
	if s.end == 0 {
		return nil
	}
	return p[s.start:s.end]
}

// matchField returns the field the key with content k names, or fieldNone.
func matchField(k []byte, flags uint8) int {
	if flags == 0 {
		for field, upper := range fieldUpper {
			if len(k) == len(upper) && foldedKeyEqual(k, upper) {
				return field
			}
		}
		return fieldNone
	}
	var buf [maxFieldKeyLen + utf8.UTFMax]byte
	k, ok := appendUnquoted(buf[:0], k, maxFieldKeyLen)
	if !ok {
		return fieldNone
	}
	for field, upper := range fieldUpper {
		if foldedKeyEqual(k, upper) {
			return field
		}
	}
	return fieldNone
}

// parseRequestID accepts a JSON string of at most MaxRequestIDLen bytes or
// a JSON number, and returns its raw JSON (copied) for echoing. v is
// checked JSON, not null.
func parseRequestID(v []byte) ([]byte, string) {
	switch v[0] {
	case '"':
		var buf [MaxRequestIDLen + utf8.UTFMax]byte
		s, ok := appendUnquoted(buf[:0], v[1:len(v)-1], MaxRequestIDLen)
		if !ok {
			return nil, msgRequestIDLong
		}
		// Re-encode: the echo is then canonical and cannot carry anything
		// the parser accepted but a client would choke on. s is valid
		// UTF-8 and lives only for this call.
		out := make([]byte, 0, quotedLen(s))
		return AppendJSONString(out, unsafe.String(unsafe.SliceData(s), len(s))), ""
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		if len(v) > MaxRequestIDLen {
			return nil, msgRequestIDType
		}
		return bytes.Clone(v), ""
	}
	return nil, msgRequestIDType
}

// quotedLen is the length of AppendJSONString's encoding of valid UTF-8 s.
func quotedLen(s []byte) int {
	n := 2
	for _, c := range s {
		switch {
		case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t':
			n += 2
		case c < 0x20:
			n += len(`\u0000`)
		default:
			n++
		}
	}
	return n
}

// linearMax is the count up to which names are looked up by comparing
// them one by one; beyond it a map keeps hostile lists linear.
const linearMax = 16

// parseChannels reads the "channels" value v (checked JSON, not null). Its
// elements must be strings or null (which encoding/json reads as "", an
// invalid name). It returns the valid names deduplicated in first-given
// order, allocating only those, and for long lists an index of them; or an
// error message and the offending names (truncated).
func parseChannels(v []byte) (chans []string, index map[string]int, bad []string, msg string) {
	if v[0] != '[' {
		return nil, nil, nil, msgChansType
	}
	// First the shape and the count, so that the slice is allocated once.
	n := 0
	for i := skipSpace(v, 1); v[i] != ']'; n++ {
		switch v[i] {
		case '"':
			i, _, _ = scanString(v, i)
		case 'n':
			i += len("null")
		default:
			return nil, nil, nil, msgChansType
		}
		if i = skipSpace(v, i); v[i] == ',' {
			i = skipSpace(v, i+1)
		}
	}
	if n == 0 {
		return nil, nil, nil, msgChansEmpty
	}

	chans = make([]string, 0, n)
	if n > linearMax {
		index = make(map[string]int, n)
	}
	var buf [MaxChannelLen + utf8.UTFMax]byte
	for i := skipSpace(v, 1); v[i] != ']'; {
		var name []byte
		long := false
		if v[i] == 'n' {
			i += len("null")
		} else {
			end, flags, _ := scanString(v, i)
			name, long = unquoteName(buf[:0], v[i+1:end-1], flags)
			i = end
		}
		if i = skipSpace(v, i); v[i] == ',' {
			i = skipSpace(v, i+1)
		}
		switch {
		case long:
			bad = append(bad, truncateName(string(name[:MaxChannelLen+1])))
			continue
		case ValidateChannel(unsafe.String(unsafe.SliceData(name), len(name))) != nil:
			bad = append(bad, string(name))
			continue
		case bad != nil || lookup(chans, index, name) >= 0:
			continue
		}
		c := string(name)
		if index != nil {
			index[c] = len(chans)
		}
		chans = append(chans, c)
	}
	if bad != nil {
		return nil, nil, bad, msgBadChannel
	}
	return chans, index, nil, ""
}

// unquoteName returns the unescaped name with content s: s itself when it
// needs no unescaping, else unescaped into buf (which has MaxChannelLen +
// utf8.UTFMax bytes). long reports a name over MaxChannelLen bytes, of
// which at least the first MaxChannelLen+1 are returned.
func unquoteName(buf, s []byte, flags uint8) (name []byte, long bool) {
	if plainString(s, flags) {
		return s, len(s) > MaxChannelLen
	}
	name, ok := appendUnquoted(buf, s, MaxChannelLen)
	return name, !ok
}

// lookup returns the index of name in chans, or -1.
func lookup(chans []string, index map[string]int, name []byte) int {
	if index != nil {
		if j, ok := index[string(name)]; ok {
			return j
		}
		return -1
	}
	for j, c := range chans {
		if c == string(name) {
			return j
		}
	}
	return -1
}

// parseSince reads a subscribe's "since" value v (checked JSON, not null):
// an object of at most MaxSinceEntries members whose values are strings and
// whose keys are valid channel names (ValidateChannel). A key may be one of
// chans or not (a concrete channel matched by one of its patterns): which
// keys a subscription accepts is the server's decision, made after the
// ACL. It returns the entries, or an error message and the offending keys
// (truncated, in the order given).
func parseSince(v []byte, chans []string, index map[string]int) (since []SinceEntry, bad []string, msg string) {
	if v[0] != '{' {
		return nil, nil, msgSinceType
	}
	n := 0
	for i := skipSpace(v, 1); v[i] != '}'; n++ {
		i, _ = scanMember(v, i)
		if v[i] != '"' {
			return nil, nil, msgSinceType
		}
		i, _, _ = scanString(v, i)
		if i = skipSpace(v, i); v[i] == ',' {
			i = skipSpace(v, i+1)
		}
	}
	switch {
	case n > MaxSinceEntries:
		return nil, nil, msgSinceTooMany
	case n == 0:
		return nil, nil, ""
	}

	// slots[j] is 1 + the index in since of chans[j]'s entry, 0 if none.
	var slotBuf [linearMax]int32
	var slots []int32
	if len(chans) <= len(slotBuf) {
		slots = slotBuf[:len(chans)]
	} else {
		slots = make([]int32, len(chans))
	}
	since = make([]SinceEntry, 0, min(n, len(chans)))
	// Keys that are not in chans are found among the entries, through a
	// map once there are many (hostile input stays linear).
	var extra map[string]int
	var buf [MaxChannelLen + utf8.UTFMax]byte
	for i := skipSpace(v, 1); v[i] != '}'; {
		end, flags, _ := scanString(v, i)
		key, long := unquoteName(buf[:0], v[i+1:end-1], flags)
		vi, _ := scanMember(v, i)
		vEnd, vFlags, _ := scanString(v, vi)
		if i = skipSpace(v, vEnd); v[i] == ',' {
			i = skipSpace(v, i+1)
		}
		switch {
		case long:
			bad = append(bad, truncateName(string(key[:MaxChannelLen+1])))
			continue
		case ValidateChannel(unsafe.String(unsafe.SliceData(key), len(key))) != nil:
			bad = append(bad, string(key))
			continue
		case bad != nil:
			continue
		}
		id := unquoteString(v[vi+1:vEnd-1], vFlags)
		if j := lookup(chans, index, key); j >= 0 {
			if s := slots[j]; s > 0 {
				since[s-1].ID = id
				continue
			}
			since = append(since, SinceEntry{Channel: chans[j], ID: id})
			slots[j] = int32(len(since))
			continue
		}
		if k := findSince(since, extra, key); k >= 0 {
			since[k].ID = id
			continue
		}
		c := string(key)
		since = append(since, SinceEntry{Channel: c, ID: id})
		switch {
		case extra != nil:
			extra[c] = len(since) - 1
		case len(since) > linearMax:
			extra = make(map[string]int, n)
			for k, e := range since {
				extra[e.Channel] = k
			}
		}
	}
	if bad != nil {
		return nil, bad, msgSinceBadKey
	}
	return since, nil, ""
}

// findSince returns the index of the entry of since whose Channel is key,
// or -1; extra indexes since by Channel once it is long, else nil.
func findSince(since []SinceEntry, extra map[string]int, key []byte) int {
	if extra != nil {
		if k, ok := extra[string(key)]; ok {
			return k
		}
		return -1
	}
	for k := range since {
		if since[k].Channel == string(key) {
			return k
		}
	}
	return -1
}

// unquoteString returns the unescaped string with content s.
func unquoteString(s []byte, flags uint8) string {
	if plainString(s, flags) {
		return string(s)
	}
	var buf [64]byte
	u, _ := appendUnquoted(buf[:0], s, -1)
	return string(u)
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
