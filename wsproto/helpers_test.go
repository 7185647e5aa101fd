package wsproto

import (
	"bytes"
	"encoding/json"
	"io"
	"testing"

	"github.com/gobwas/ws"
)

// testMask is the masking key of every client frame built by the tests; it
// is non-zero in every byte so that forgetting to unmask shows.
var testMask = [4]byte{0x37, 0xfa, 0x21, 0x3d}

// clientFrame builds one masked client frame with gobwas/ws.
func clientFrame(tb testing.TB, op ws.OpCode, fin bool, payload []byte) []byte {
	tb.Helper()
	f := ws.NewFrame(op, fin, bytes.Clone(payload))
	f = ws.MaskFrameInPlaceWith(f, testMask)
	b, err := ws.CompileFrame(f)
	if err != nil {
		tb.Fatalf("CompileFrame: %v", err)
	}
	return b
}

// rawFrame builds a frame from an arbitrary header (RSV bits, unmasked,
// ...). When h.Masked is set the payload is masked with h.Mask.
func rawFrame(tb testing.TB, h ws.Header, payload []byte) []byte {
	tb.Helper()
	h.Length = int64(len(payload))
	p := bytes.Clone(payload)
	if h.Masked {
		ws.Cipher(p, h.Mask, 0)
	}
	var buf bytes.Buffer
	if err := ws.WriteHeader(&buf, h); err != nil {
		tb.Fatalf("WriteHeader: %v", err)
	}
	buf.Write(p)
	return buf.Bytes()
}

func concat(frames ...[]byte) []byte {
	var out []byte
	for _, f := range frames {
		out = append(out, f...)
	}
	return out
}

// readServerFrame decodes one server frame with gobwas/ws and checks that it
// is a single unmasked FIN frame with no RSV bits spanning all of b. It
// returns the header, its size on the wire and the payload.
func readServerFrame(tb testing.TB, b []byte) (ws.Header, int, []byte) {
	tb.Helper()
	r := bytes.NewReader(b)
	h, err := ws.ReadHeader(r)
	if err != nil {
		tb.Fatalf("ReadHeader: %v", err)
	}
	hl := len(b) - r.Len()
	if !h.Fin || h.Masked || h.Rsv != 0 {
		tb.Fatalf("header %+v: want FIN, unmasked, no RSV", h)
	}
	p, err := io.ReadAll(r)
	if err != nil {
		tb.Fatal(err)
	}
	if int64(len(p)) != h.Length {
		tb.Fatalf("payload is %d bytes, header says %d", len(p), h.Length)
	}
	return h, hl, p
}

// objectKeys returns the keys of the JSON object p in order (duplicates
// included) and the raw value of each.
func objectKeys(tb testing.TB, p []byte) ([]string, map[string]json.RawMessage) {
	tb.Helper()
	dec := json.NewDecoder(bytes.NewReader(p))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		tb.Fatalf("%s: not a JSON object (%v, %v)", p, tok, err)
	}
	var keys []string
	vals := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			tb.Fatalf("%s: %v", p, err)
		}
		k := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			tb.Fatalf("%s: value of %q: %v", p, k, err)
		}
		keys = append(keys, k)
		vals[k] = v
	}
	if _, err := dec.Token(); err != nil {
		tb.Fatalf("%s: %v", p, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		tb.Fatalf("%s: trailing data after the object", p)
	}
	return keys, vals
}

func jsonString(tb testing.TB, raw json.RawMessage) string {
	tb.Helper()
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		tb.Fatalf("%s is not a JSON string: %v", raw, err)
	}
	return s
}

// mustPanic runs f and fails unless it panics.
func mustPanic(tb testing.TB, what string, f func()) {
	tb.Helper()
	defer func() {
		tb.Helper()
		if recover() == nil {
			tb.Errorf("%s did not panic", what)
		}
	}()
	f()
}
