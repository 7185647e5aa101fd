package fanout

import (
	"sync/atomic"
	"time"

	"github.com/wsgw/gateway/wsproto"
)

// Loss accounting: the frames a full queue could not take, kept so that
// the connection is told, once it has caught up, which streams lost
// messages and which ones (wsproto.NewMessagesLost). Without this, a
// client that missed the tail of a burst would learn of it only from the
// seq of the stream's next message, which on a quiet channel may be hours
// away.
//
// Nothing here runs for a frame that is queued: the producer comes here
// only when a push fails, and the consumer's check (TakeLoss) is one
// atomic load of a nil pointer per drained batch.
//
// Ownership and threading, without a lock:
//   - Subscriber.loss is nil until the first drop. The producer (whoever
//     pushes into the queue: the shard goroutine today) then allocates the
//     lossState and stores it, once; it is never replaced. The consumer
//     (the connection's event loop) only loads it.
//   - lossState.dropped is a counter: the producer adds, anyone loads.
//   - lossState.report carries the losses not yet told from the producer
//     to the consumer. Each side takes it out of the slot with Swap(nil)
//     and, while it holds it, is the only one to touch it. The producer
//     takes it (or starts a new one when the consumer has claimed the
//     last), adds the drop and stores it back; the consumer takes it to
//     build the notice and keeps it, so the producer's next drop starts a
//     new report. A consumer that looks while the producer holds the
//     report sees an empty slot: so after every store the producer marks
//     the subscriber ready, and the consumer looks again at its next
//     flush.

// lossState is a subscriber's loss record, allocated on its first drop.
type lossState struct {
	dropped atomic.Uint64 // frames not queued, in all (Subscriber.Dropped)
	report  atomic.Pointer[lossReport]
}

// lossReport is what the connection has not been told yet: per stream,
// the last run of data frames lost.
type lossReport struct {
	runs []lostRun
}

// lostRun is a stream's frames lastSeq+1 … lastSeq+lost, dropped in a row.
type lostRun struct {
	st      *stream
	lastSeq uint64
	lost    uint64
}

// drop notes that f was not queued: a data frame of stream st, or (st
// nil) a reply or notice, which is counted but not reported. Producer
// only.
func (s *Subscriber) drop(st *stream, f *wsproto.Frame) {
	s.shard.dropped.Add(1)
	ls := s.loss.Load()
	if ls == nil {
		ls = new(lossState)
		s.loss.Store(ls)
	}
	ls.dropped.Add(1)
	seq := f.Seq()
	if st == nil || seq == 0 {
		return
	}
	r := ls.report.Swap(nil)
	if r == nil {
		r = new(lossReport)
	}
	r.addRun(st, seq-1, 1)
	ls.report.Store(r)
	s.markReady()
}

// lostUpstream notes that the messages lastSeq+1 … lastSeq+n of st never
// reached the queue: the hub could not hand them to the shard. They are
// reported as dropped frames are, but not counted as the connection's
// drops (Dropped, which the slow-client policy reads): the connection did
// nothing to lose them. Producer only.
func (s *Subscriber) lostUpstream(st *stream, lastSeq, n uint64) {
	ls := s.loss.Load()
	if ls == nil {
		ls = new(lossState)
		s.loss.Store(ls)
	}
	r := ls.report.Swap(nil)
	if r == nil {
		r = new(lossReport)
	}
	r.addRun(st, lastSeq, n)
	ls.report.Store(r)
	s.markReady()
}

// addRun records the loss of lastSeq+1 … lastSeq+n on st. A loss that
// does not follow the stream's last one starts a new run: the frames in
// between were queued, so the client sees that earlier gap in the seq of
// the next frame it reads, and the notice is about what came after them.
func (r *lossReport) addRun(st *stream, lastSeq, n uint64) {
	for i := range r.runs {
		run := &r.runs[i]
		if run.st != st {
			continue
		}
		if lastSeq != run.lastSeq+run.lost {
			run.lastSeq, run.lost = lastSeq, 0
		}
		run.lost += n
		return
	}
	r.runs = append(r.runs, lostRun{st: st, lastSeq: lastSeq, lost: n})
}

// TakeLoss returns the messages_lost notice owed to the connection for
// the data frames dropped since its last notice, or nil when there is
// none. The owner calls it when Pop has just returned nil (the connection
// has caught up) and writes the notice before any further frame. The
// caller owns the returned reference. Event-loop only (the consumer).
func (s *Subscriber) TakeLoss() *wsproto.Frame {
	if ls := s.loss.Load(); ls != nil && ls.report.Load() != nil {
		return ls.take()
	}
	return nil
}

func (ls *lossState) take() *wsproto.Frame {
	r := ls.report.Swap(nil)
	if r == nil {
		return nil // the producer holds it; it marks the subscriber ready
	}
	streams := make([]wsproto.LostStream, len(r.runs))
	for i, run := range r.runs {
		streams[i] = wsproto.LostStream{Stream: run.st.name, LastSeq: run.lastSeq, Lost: run.lost}
	}
	return wsproto.NewMessagesLost(streams, time.Now())
}
