package servertest

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
)

// LogRecorder keeps every record logged through its Logger, at every
// level, as one line "msg k=v k=v" (attributes added with With and groups
// included, as "group.k=v"), for tests that check why something happened
// or that something never appears in the logs. The zero value is ready;
// safe for concurrent use.
type LogRecorder struct {
	mu    sync.Mutex
	lines []string
}

// Logger returns a logger writing to r.
func (r *LogRecorder) Logger() *slog.Logger { return slog.New(&recordHandler{r: r}) }

// Lines returns a copy of the lines recorded so far.
func (r *LogRecorder) Lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.lines)
}

// String is every line recorded so far, each ending in a newline.
func (r *LogRecorder) String() string {
	var b strings.Builder
	for _, l := range r.Lines() {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.String()
}

// Find returns the first line whose message is msg (or starts with it)
// and that contains every substring of also.
func (r *LogRecorder) Find(msg string, also ...string) (string, bool) {
next:
	for _, l := range r.Lines() {
		if !strings.HasPrefix(l, msg) {
			continue
		}
		for _, s := range also {
			if !strings.Contains(l, s) {
				continue next
			}
		}
		return l, true
	}
	return "", false
}

// recordHandler is the slog.Handler of a LogRecorder; With and WithGroup
// give handlers that prefix what they add.
type recordHandler struct {
	r      *LogRecorder
	attrs  string // " k=v" for each attribute added by With
	prefix string // group names, each followed by a dot
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *recordHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.attrs)
	for _, a := range attrs {
		appendAttr(&b, h.prefix, a)
	}
	return &recordHandler{r: h.r, attrs: b.String(), prefix: h.prefix}
}

func (h *recordHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &recordHandler{r: h.r, attrs: h.attrs, prefix: h.prefix + name + "."}
}

func (h *recordHandler) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Message)
	b.WriteString(h.attrs)
	rec.Attrs(func(a slog.Attr) bool {
		appendAttr(&b, h.prefix, a)
		return true
	})
	h.r.mu.Lock()
	h.r.lines = append(h.r.lines, b.String())
	h.r.mu.Unlock()
	return nil
}

func appendAttr(b *strings.Builder, prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		for _, g := range v.Group() {
			appendAttr(b, prefix+a.Key+".", g)
		}
		return
	}
	fmt.Fprintf(b, " %s%s=%v", prefix, a.Key, v)
}
