package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/alicebob/miniredis/v2"
)

// embeddedState is what the embedded Redis keeps between runs in
// EMBEDDED_REDIS_FILE: its streams, entry by entry with their IDs, so
// that a client resuming a durable channel after a restart of the
// gateway (and of the miniredis inside it) finds its position again.
// Pub/sub has nothing to keep; other keys are not kept.
type embeddedState struct {
	Streams map[string][]miniredis.StreamEntry `json:"streams"`
}

// startEmbedded starts the in-process Redis on a free loopback port and,
// when file is set and exists, loads the streams saved there.
func startEmbedded(file string) (*miniredis.Miniredis, int, error) {
	mr := miniredis.NewMiniRedis()
	if err := mr.StartAddr("127.0.0.1:0"); err != nil {
		return nil, 0, fmt.Errorf("embedded redis: %w", err)
	}
	if file == "" {
		return mr, 0, nil
	}
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return mr, 0, nil
	}
	var st embeddedState
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	if err != nil {
		mr.Close()
		return nil, 0, fmt.Errorf("EMBEDDED_REDIS_FILE: %w", err)
	}
	n := 0
	for key, entries := range st.Streams {
		for _, e := range entries {
			if _, err := mr.XAdd(key, e.ID, e.Values); err != nil {
				mr.Close()
				return nil, 0, fmt.Errorf("EMBEDDED_REDIS_FILE: %s %s: %w", key, e.ID, err)
			}
			n++
		}
	}
	return mr, n, nil
}

// saveEmbedded writes the streams of mr to file (replaced at once, never
// left half written) and returns how many entries it holds.
func saveEmbedded(mr *miniredis.Miniredis, file string) (int, error) {
	st := embeddedState{Streams: map[string][]miniredis.StreamEntry{}}
	n := 0
	keys := mr.Keys()
	slices.Sort(keys)
	for _, k := range keys {
		if mr.Type(k) != "stream" {
			continue
		}
		entries, err := mr.Stream(k)
		if err != nil {
			return 0, fmt.Errorf("EMBEDDED_REDIS_FILE: %s: %w", k, err)
		}
		st.Streams[k] = entries
		n += len(entries)
	}
	b, err := json.Marshal(st)
	if err != nil {
		return 0, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), ".embedded-redis-*")
	if err != nil {
		return 0, fmt.Errorf("EMBEDDED_REDIS_FILE: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename: nothing to remove
	if _, err = tmp.Write(b); err == nil {
		err = tmp.Close()
	} else {
		tmp.Close()
	}
	if err == nil {
		err = os.Rename(tmp.Name(), file)
	}
	if err != nil {
		return 0, fmt.Errorf("EMBEDDED_REDIS_FILE: %w", err)
	}
	return n, nil
}
