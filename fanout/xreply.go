package fanout

// Walking the RESP2 replies of the stream commands the readers send,
// without building maps (rueidis's AsXRead makes one per entry). Every
// function takes the reply of one command and reads it in place: the
// strings handed out alias the reply.

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/rueidis"

	"github.com/wsgw/gateway/wsproto"
)

// errReply marks a reply whose shape is not what the command returns.
var errReply = errors.New("fanout: unexpected Redis reply")

// entry is one stream entry as read: its ID and the payload field.
type entry struct {
	id      wsproto.StreamID
	payload string // "null" when the entry lacks the field
}

// walkEntries calls fn for each entry of an XRANGE, XREVRANGE or (one key
// of) XREAD reply, with the value of field ("null" when the entry lacks
// it) and stops at fn's first false. It returns how many entries it read.
func walkEntries(m *rueidis.RedisMessage, field string, fn func(e entry) bool) (int, error) {
	if m.IsNil() {
		return 0, nil
	}
	items, err := m.ToArray()
	if err != nil {
		return 0, err
	}
	for i := range items {
		kv, err := items[i].ToArray()
		if err != nil || len(kv) != 2 {
			return i, fmt.Errorf("%w: entry %v", errReply, items[i])
		}
		ids, err := kv[0].ToString()
		if err != nil {
			return i, err
		}
		id, ok := wsproto.ParseStreamID(ids)
		if !ok {
			return i, fmt.Errorf("%w: entry ID %q", errReply, ids)
		}
		e := entry{id: id, payload: "null"}
		if fv, err := kv[1].ToArray(); err == nil {
			for j := 0; j+1 < len(fv); j += 2 {
				if f, _ := fv[j].ToString(); f == field {
					e.payload, _ = fv[j+1].ToString()
					break
				}
			}
		}
		if !fn(e) {
			return i + 1, nil
		}
	}
	return len(items), nil
}

// xreadKeys walks an XREAD reply: fn is called with each key's name and
// its entries' reply, in the order Redis gives them (the order of the
// command's keys, those without entries left out). A nil reply (the BLOCK
// timed out) calls nothing.
func xreadKeys(res rueidis.RedisResult, fn func(key string, entries *rueidis.RedisMessage) error) error {
	m, err := res.ToMessage()
	if err != nil {
		if rueidis.IsRedisNil(err) {
			return nil
		}
		return err
	}
	if m.IsNil() {
		return nil
	}
	keys, err := m.ToArray()
	if err != nil {
		return err
	}
	for i := range keys {
		kv, err := keys[i].ToArray()
		if err != nil || len(kv) != 2 {
			return fmt.Errorf("%w: XREAD element %v", errReply, keys[i])
		}
		k, err := kv[0].ToString()
		if err != nil {
			return err
		}
		if err := fn(k, &kv[1]); err != nil {
			return err
		}
	}
	return nil
}

// streamInfo is what a replay plan and the continuity check read from
// XINFO STREAM.
type streamInfo struct {
	exists   bool
	length   int64
	lastGen  wsproto.StreamID
	first    wsproto.StreamID // valid when length > 0 and hasFirst
	hasFirst bool
	// added is entries-added (Redis 7), -1 when the server does not say
	// (an older Redis, miniredis): then something may have been removed.
	added int64
}

// removed reports whether entries were ever removed from the stream
// (trimmed or deleted), as far as the server tells.
func (in *streamInfo) removed() bool { return in.added < 0 || in.added > in.length }

// trimmedAfter reports whether entries after position p are gone.
// Trimming removes from the head: a position at or above the first entry
// proves nothing after it went; only the first entry's immediate
// successor position proves it below. (max-deleted-entry-id would say
// more, but Redis 7.0's XTRIM leaves it at 0-0.)
func (in *streamInfo) trimmedAfter(p wsproto.StreamID) bool {
	switch {
	case !in.removed():
		return false
	case in.length == 0:
		return p.Less(in.lastGen)
	case in.hasFirst && p.Less(in.first):
		next, _ := p.Next()
		return next != in.first
	}
	return false
}

// parseXInfo reads an XINFO STREAM reply; a "no such key" error is a
// missing stream, not an error.
func parseXInfo(res rueidis.RedisResult) (streamInfo, error) {
	in := streamInfo{added: -1}
	m, err := res.ToMessage()
	if err != nil {
		if re, ok := rueidis.IsRedisErr(err); ok && strings.Contains(strings.ToLower(re.Error()), "no such key") {
			return streamInfo{added: 0}, nil
		}
		return in, err
	}
	kv, err := m.ToArray()
	if err != nil {
		return in, err
	}
	in.exists = true
	for i := 0; i+1 < len(kv); i += 2 {
		name, _ := kv[i].ToString()
		v := &kv[i+1]
		switch name {
		case "length":
			in.length, err = v.AsInt64()
		case "entries-added":
			in.added, err = v.AsInt64()
		case "last-generated-id":
			in.lastGen, err = idOf(v)
		case "first-entry":
			if v.IsNil() {
				continue
			}
			var e []rueidis.RedisMessage
			if e, err = v.ToArray(); err == nil && len(e) == 2 {
				in.first, err = idOf(&e[0])
				in.hasFirst = err == nil
			}
		}
		if err != nil {
			return in, fmt.Errorf("%w: XINFO STREAM %s: %w", errReply, name, err)
		}
	}
	return in, nil
}

// idOf reads an entry ID reply.
func idOf(m *rueidis.RedisMessage) (wsproto.StreamID, error) {
	s, err := m.ToString()
	if err != nil {
		return wsproto.StreamID{}, err
	}
	id, ok := wsproto.ParseStreamID(s)
	if !ok {
		return id, fmt.Errorf("%w: ID %q", errReply, s)
	}
	return id, nil
}

// parseTime reads a TIME reply as milliseconds since the epoch.
func parseTime(res rueidis.RedisResult) (uint64, error) {
	v, err := res.ToArray()
	if err != nil {
		return 0, err
	}
	if len(v) != 2 {
		return 0, fmt.Errorf("%w: TIME %v", errReply, v)
	}
	sec, err1 := v[0].ToString()
	usec, err2 := v[1].ToString()
	a, err3 := strconv.ParseUint(sec, 10, 64)
	b, err4 := strconv.ParseUint(usec, 10, 64)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return 0, fmt.Errorf("%w: TIME: %w", errReply, err)
	}
	return a*1000 + b/1000, nil
}

// parseScan reads a SCAN reply: the next cursor ("0" at the end) and the
// keys.
func parseScan(res rueidis.RedisResult) (string, []string, error) {
	v, err := res.ToArray()
	if err != nil {
		return "", nil, err
	}
	if len(v) != 2 {
		return "", nil, fmt.Errorf("%w: SCAN %v", errReply, v)
	}
	cursor, err := v[0].ToString()
	if err != nil {
		return "", nil, err
	}
	keys, err := v[1].AsStrSlice()
	return cursor, keys, err
}

// isWrongType reports whether err is Redis's WRONGTYPE reply.
func isWrongType(err error) bool {
	re, ok := rueidis.IsRedisErr(err)
	return ok && strings.HasPrefix(re.Error(), "WRONGTYPE")
}
