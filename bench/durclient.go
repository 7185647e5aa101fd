package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// The replay scenario's client: one goroutine per socket, subscribed to
// one durable channel, keeping every entry ID it receives so that the
// harness can check them against the stream. Its sockets are few (the
// live part's N, one for the replay of part a), so the simple blocking
// design is enough; the gnet pool of client.go is for the large runs.

// streamID is a Redis stream entry ID, <ms>-<seq>.
type streamID struct{ ms, seq uint64 }

func (a streamID) less(b streamID) bool { return a.ms < b.ms || (a.ms == b.ms && a.seq < b.seq) }

func (a streamID) String() string {
	return strconv.FormatUint(a.ms, 10) + "-" + strconv.FormatUint(a.seq, 10)
}

var errBadID = errors.New("bench: malformed stream entry ID")

// parseStreamID parses <ms>-<seq>.
func parseStreamID(s string) (streamID, error) {
	a, b, ok := bytes.Cut([]byte(s), []byte("-"))
	if !ok {
		return streamID{}, fmt.Errorf("%w: %q", errBadID, s)
	}
	ms, err1 := strconv.ParseUint(string(a), 10, 64)
	seq, err2 := strconv.ParseUint(string(b), 10, 64)
	if err1 != nil || err2 != nil {
		return streamID{}, fmt.Errorf("%w: %q", errBadID, s)
	}
	return streamID{ms, seq}, nil
}

var (
	dataAnyPrefix = []byte(`{"type":"data",`)
	idField       = []byte(`"id":"`)
	replayFlag    = []byte(`"replay":true`)
)

// scanDurable extracts the entry ID of a durable data message and whether
// it is a replayed one. ok is false for a message that is not a data
// message with an id.
func scanDurable(p []byte) (id streamID, replay bool, ok bool) {
	if !bytes.HasPrefix(p, dataAnyPrefix) {
		return id, false, false
	}
	head := p
	if d := bytes.Index(p, dataField); d >= 0 {
		head = p[:d]
	}
	i := bytes.Index(head, idField)
	if i < 0 {
		return id, false, false
	}
	rest := head[i+len(idField):]
	e := bytes.IndexByte(rest, '"')
	if e < 0 {
		return id, false, false
	}
	id, err := parseStreamID(string(rest[:e]))
	if err != nil {
		return id, false, false
	}
	return id, bytes.Contains(head, replayFlag), true
}

// replayedFrame is the end of a durable subscription's replay.
type replayedFrame struct {
	Channel string `json:"channel"`
	Count   int64  `json:"count"`
	LastID  string `json:"lastId"`
}

// exactness compares the IDs a client received, in the order received,
// with truth, the stream's entries the client was owed (ascending).
// missing counts entries of truth never received, dups IDs not above the
// one received before them (a duplicate, or one out of order), unknown
// IDs that are not in truth.
func exactness(truth, got []streamID) (missing, dups, unknown int64) {
	var prev streamID
	has := false
	j := 0
	for _, id := range got {
		if has && !prev.less(id) {
			dups++
			continue
		}
		prev, has = id, true
		for j < len(truth) && truth[j].less(id) {
			missing++
			j++
		}
		if j < len(truth) && truth[j] == id {
			j++
		} else {
			unknown++
		}
	}
	return missing + int64(len(truth)-j), dups, unknown
}

// durClient is one socket of the replay scenario. Its goroutine owns the
// connection; the runner reads the atomics while it runs and the rest
// under mu or once it has stopped.
type durClient struct {
	addr, ch string

	mu     sync.Mutex
	ids    []streamID // every entry received, in order
	start  streamID   // the seam of the first subscription (its replayed lastId)
	begun  bool       // start is set
	last   streamID   // where to resume: the last ID received or the seam
	lastOK bool

	replayed      atomic.Int32 // replayed frames received
	replayedAt    atomic.Int64 // unix nanos of the latest
	lastCount     atomic.Int64 // count of the latest
	replayFrames  atomic.Int64 // replayed entries received, in all
	liveFrames    atomic.Int64
	truncated     atomic.Int64 // replay_truncated errors
	otherErrors   atomic.Int64
	connects      atomic.Int64 // subscribes sent
	attempts      atomic.Int64 // dials, failed ones included
	refused       atomic.Int64 // upgrade answered other than 101
	lostAt        atomic.Int64 // unix nanos the last connection ended
	lastErr       atomic.Value
	firstReplayed atomic.Int64 // unix nanos of the first replayed frame
}

// run keeps the client subscribed until ctx ends: on a lost connection it
// dials again every retry (with up to as much jitter), and resumes with
// since = the last ID it saw. since, when not nil, is the position of
// the first subscribe.
func (c *durClient) run(ctx context.Context, since *streamID, retry time.Duration) {
	if since != nil {
		c.last, c.lastOK = *since, true
	}
	for ctx.Err() == nil {
		err := c.session(ctx)
		if err != nil {
			c.lastErr.Store(err.Error())
		}
		if ctx.Err() != nil {
			return
		}
		sleepCtx(ctx, retry+time.Duration(rand.Int64N(int64(retry)+1)))
	}
}

// session is one connection: dial, upgrade, subscribe, read until it
// ends.
func (c *durClient) session(ctx context.Context) error {
	c.attempts.Add(1)
	d := net.Dialer{Timeout: 2 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return err
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
		case <-done:
		}
		_ = conn.Close()
	}()
	req, accept := upgradeRequest(c.addr)
	if _, err := conn.Write(req); err != nil {
		return err
	}
	br := bufio.NewReaderSize(conn, 32<<10)
	var head []byte
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		head = append(head, line...)
		if len(line) <= 2 {
			break
		}
	}
	if status, ok := checkUpgrade(head, accept[:]); !ok {
		c.refused.Add(1)
		return fmt.Errorf("upgrade refused: HTTP %d", status)
	}
	c.mu.Lock()
	since, has := c.last, c.lastOK
	c.mu.Unlock()
	if _, err := conn.Write(clientFrame(ws.OpText, c.subscribeRequest(since, has))); err != nil {
		return err
	}
	c.connects.Add(1)
	err = c.read(conn, br)
	c.lostAt.Store(time.Now().UnixNano())
	return err
}

func (c *durClient) subscribeRequest(since streamID, has bool) []byte {
	ch, _ := json.Marshal(c.ch)
	b := []byte(`{"action":"subscribe","channels":[`)
	b = append(b, ch...)
	b = append(b, ']')
	if has {
		b = append(b, `,"since":{`...)
		b = append(b, ch...)
		b = append(b, `:"`...)
		b = append(b, since.String()...)
		b = append(b, `"}`...)
	}
	return append(b, `,"requestId":"r"}`...)
}

// read reads frames until the connection ends.
func (c *durClient) read(conn net.Conn, br *bufio.Reader) error {
	var payload []byte
	for {
		h, err := ws.ReadHeader(br)
		if err != nil {
			return err
		}
		if h.Length > 1<<30 {
			return errTooLarge
		}
		if int64(cap(payload)) < h.Length {
			payload = make([]byte, h.Length)
		}
		payload = payload[:h.Length]
		if _, err := io.ReadFull(br, payload); err != nil {
			return err
		}
		switch h.OpCode {
		case ws.OpText:
			c.frame(payload)
		case ws.OpPing:
			if _, err := conn.Write(clientFrame(ws.OpPong, payload)); err != nil {
				return err
			}
		case ws.OpClose:
			_, _ = conn.Write(clientFrame(ws.OpClose, nil))
			return io.EOF
		}
	}
}

// frame handles one text message.
func (c *durClient) frame(p []byte) {
	if id, replay, ok := scanDurable(p); ok {
		c.mu.Lock()
		c.ids = append(c.ids, id)
		c.last, c.lastOK = id, true
		c.mu.Unlock()
		if replay {
			c.replayFrames.Add(1)
		} else {
			c.liveFrames.Add(1)
		}
		return
	}
	if bytes.HasPrefix(p, replayedPfx) {
		var f replayedFrame
		if err := json.Unmarshal(p, &f); err != nil {
			c.otherErrors.Add(1)
			return
		}
		id, err := parseStreamID(f.LastID)
		c.mu.Lock()
		if err == nil {
			if !c.begun {
				c.start, c.begun = id, true
			}
			// The seam is the position when nothing was received
			// after it (an empty or quiet stream).
			if !c.lastOK || c.last.less(id) {
				c.last, c.lastOK = id, true
			}
		}
		c.mu.Unlock()
		now := time.Now().UnixNano()
		c.lastCount.Store(f.Count)
		c.replayedAt.Store(now)
		c.firstReplayed.CompareAndSwap(0, now)
		c.replayed.Add(1)
		return
	}
	switch code := errorCode(p); code {
	case "":
	case "replay_truncated":
		c.truncated.Add(1)
	default:
		c.otherErrors.Add(1)
		c.lastErr.Store("error frame: " + code)
	}
}

// position is where the client stands: the last ID it received, or its
// seam.
func (c *durClient) position() (streamID, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last, c.lastOK
}

// received returns the IDs received and the first seam.
func (c *durClient) received() ([]streamID, streamID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ids, c.start
}
