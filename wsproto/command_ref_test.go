//go:build !goexperiment.jsonv2

// The reference is encoding/json's v1 decoder; under the jsonv2 experiment
// encoding/json is a different implementation with its own answers, so the
// differential tests are built only without it.

package wsproto

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// parseCommandReference is ParseCommand as it was written with
// encoding/json, plus the "since" field decoded with encoding/json too. It
// is the specification ParseCommand is held to, input by input, by
// FuzzParseCommandDifferential.
func parseCommandReference(p []byte) (Command, *CommandError) {
	var raw struct {
		Action    json.RawMessage `json:"action"`
		Channels  json.RawMessage `json:"channels"`
		RequestID json.RawMessage `json:"requestId"`
		Since     json.RawMessage `json:"since"`
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
		id, msg := refParseRequestID(raw.RequestID)
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
	cmd.Channels = refDedupe(chans)
	if cmd.Action == ActionSubscribe && len(raw.Since) > 0 && !bytes.Equal(raw.Since, []byte("null")) {
		since, bad, msg := refParseSince(raw.Since)
		if msg != "" {
			return fail(CodeBadRequest, msg, bad)
		}
		cmd.Since = since
	}
	return cmd, nil
}

// refParseSince decodes "since" member by member with encoding/json's
// tokenizer (which unescapes exactly as Unmarshal does): every value must
// be a string, there may be at most MaxSinceEntries members, every key must
// be a valid channel name (in chans or not: the server decides); a repeated
// key keeps its first place and its last value, as a map[string]string
// keeps the last.
func refParseSince(raw json.RawMessage) ([]SinceEntry, []string, string) {
	const typeMsg = `"since" must be an object of strings`
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, nil, typeMsg
	}
	type member struct{ key, value string }
	var members []member
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			panic(err) // raw is valid JSON
		}
		v, err := dec.Token()
		if err != nil {
			panic(err)
		}
		s, ok := v.(string)
		if !ok {
			return nil, nil, typeMsg
		}
		members = append(members, member{k.(string), s})
	}
	if len(members) > MaxSinceEntries {
		return nil, nil, fmt.Sprintf(`"since" has more than %d entries`, MaxSinceEntries)
	}
	var bad []string
	for _, m := range members {
		if ValidateChannel(m.key) != nil {
			bad = append(bad, truncateName(m.key))
		}
	}
	if bad != nil {
		return nil, bad, `invalid "since" key: keys are channel names of 1 to 256 bytes with no whitespace or control characters`
	}
	var since []SinceEntry
	at := map[string]int{}
	for _, m := range members {
		if i, ok := at[m.key]; ok {
			since[i].ID = m.value
			continue
		}
		at[m.key] = len(since)
		since = append(since, SinceEntry{Channel: m.key, ID: m.value})
	}
	return since, nil, ""
}

// refParseRequestID accepts a JSON string of at most MaxRequestIDLen bytes
// or a JSON number, and returns its raw JSON (copied) for echoing.
func refParseRequestID(raw json.RawMessage) ([]byte, string) {
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, `"requestId" is not a valid string`
		}
		if len(s) > MaxRequestIDLen {
			return nil, fmt.Sprintf(`"requestId" is longer than %d bytes`, MaxRequestIDLen)
		}
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

func refDedupe(chans []string) []string {
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
