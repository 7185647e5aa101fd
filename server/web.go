package server

import (
	"embed"
	"net/http"
	"path"
)

// The demo page and the browser client, compiled into the
// binary so that `make run` needs nothing else. The Node test project in
// web/test is not embedded.
//
//go:embed web/*.html web/*.js web/*.d.ts web/*.css
var webFiles embed.FS

// webContentTypes by file extension; .d.ts is served as text so that a
// browser shows it rather than downloading it.
var webContentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".ts":   "text/plain; charset=utf-8",
	".css":  "text/css; charset=utf-8",
}

// webResponses maps a request path to its complete HTTP response, built
// once at start: the event loop only looks it up and writes it (what the
// socket does not take at once drains before the close, see handshake).
var webResponses = buildWebResponses()

func buildWebResponses() map[string][]byte {
	entries, err := webFiles.ReadDir("web")
	if err != nil {
		panic("server: embedded web assets: " + err.Error())
	}
	out := make(map[string][]byte, len(entries)+1)
	for _, e := range entries {
		body, err := webFiles.ReadFile("web/" + e.Name())
		if err != nil {
			panic("server: embedded web assets: " + err.Error())
		}
		ext := path.Ext(e.Name())
		ctype, ok := webContentTypes[ext]
		if !ok {
			continue
		}
		resp := appendHTTP(nil, http.StatusOK, ctype, "X-Content-Type-Options: nosniff\r\n", body)
		out["/"+e.Name()] = resp
		if e.Name() == "index.html" {
			out["/"] = resp
		}
	}
	return out
}

// webAsset returns the complete response for an embedded asset, or nil.
// Event-loop safe: the map is read-only after init.
func webAsset(p string) []byte { return webResponses[p] }
