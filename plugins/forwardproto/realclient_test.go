package forwardproto

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/fluent/fluent-logger-golang/fluent"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/logship/logship/internal/mpack"
)

// testServer is a minimal forward input built on the codec: it acks every
// request that asks for it and collects what it decoded.
type testServer struct {
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	reqs []summary
	errs []error
}

func startServer(t *testing.T) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go s.serve(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *testServer) serve(c net.Conn) {
	defer s.wg.Done()
	defer c.Close()
	d := NewDecoder(c, Limits{})
	var ack []byte
	for {
		req, err := d.Next()
		if err != nil {
			if err != io.EOF {
				s.mu.Lock()
				s.errs = append(s.errs, err)
				s.mu.Unlock()
			}
			return
		}
		s.mu.Lock()
		s.reqs = append(s.reqs, summarize(req))
		s.mu.Unlock()
		if req.HasChunk {
			ack = AppendAck(ack[:0], req.Chunk, req.JSON)
			if _, err := c.Write(ack); err != nil {
				return
			}
		}
	}
}

func (s *testServer) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

func (s *testServer) results() ([]summary, []error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]summary(nil), s.reqs...), append([]error(nil), s.errs...)
}

// TestFluentLoggerGolang: the real Go client, in each of its modes, with
// RequestAck: it fails unless the ack carries its chunk id.
func TestFluentLoggerGolang(t *testing.T) {
	tm := time.Unix(1700000000, 123456789)
	for _, c := range []struct {
		name string
		cfg  fluent.Config
		want mpack.EventTime
	}{
		{"Message int time", fluent.Config{}, mpack.EventTime{Sec: 1700000000}},
		{"Message EventTime", fluent.Config{SubSecondPrecision: true}, mpack.EventTime{Sec: 1700000000, Nsec: 123456789}},
		{"JSON", fluent.Config{MarshalAsJSON: true}, mpack.EventTime{Sec: 1700000000}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := startServer(t)
			cfg := c.cfg
			cfg.FluentHost, cfg.FluentPort = "127.0.0.1", s.port()
			cfg.RequestAck, cfg.ReadTimeout, cfg.Timeout, cfg.MaxRetry = true, 5*time.Second, 5*time.Second, 1
			logger, err := fluent.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				if err := logger.PostWithTime("app.golang", tm, map[string]any{"i": i, "msg": "hello"}); err != nil {
					t.Fatalf("post %d (ack check): %v", i, err)
				}
			}
			if err := logger.Close(); err != nil {
				t.Fatal(err)
			}
			reqs, errs := waitResults(t, s, 3)
			if len(errs) > 0 {
				t.Fatal(errs)
			}
			for i, r := range reqs {
				if r.Tag != "app.golang" || r.Mode != ModeMessage || r.Count != 1 || !r.HasChunk || r.JSON != cfg.MarshalAsJSON {
					t.Fatalf("request %d: %+v", i, r)
				}
				e := entriesOf(t, []byte(r.Entries))
				var rec map[string]any
				if err := msgpack.Unmarshal([]byte(e[0].Rec), &rec); err != nil {
					t.Fatal(err)
				}
				if e[0].T != c.want || rec["msg"] != "hello" || toInt(rec["i"]) != i {
					t.Fatalf("event %d: %v %v", i, e[0].T, rec)
				}
			}
		})
	}
}

func waitResults(t *testing.T, s *testServer, n int) ([]summary, []error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		reqs, errs := s.results()
		if len(reqs) >= n || len(errs) > 0 || time.Now().After(deadline) {
			if len(reqs) != n {
				t.Fatalf("%d requests, want %d (errors %v)", len(reqs), n, errs)
			}
			return reqs, errs
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestFluentLoggerGolangProtoTypes: frames built by fluent-logger-golang's
// msgp-generated protocol types (Message, MessageExt, Forward) decode.
func TestFluentLoggerGolangProtoTypes(t *testing.T) {
	rec := map[string]any{"k": "v"}
	tm := time.Unix(1700000000, 5)
	var stream []byte
	m := fluent.Message{Tag: "m", Time: 1700000000, Record: rec, Option: map[string]string{"chunk": "c1"}}
	b, err := m.MarshalMsg(nil)
	if err != nil {
		t.Fatal(err)
	}
	stream = append(stream, b...)
	me := fluent.MessageExt{Tag: "me", Time: fluent.EventTime(tm), Record: rec, Option: map[string]string{"chunk": "c2"}}
	if b, err = me.MarshalMsg(nil); err != nil {
		t.Fatal(err)
	}
	stream = append(stream, b...)
	fw := fluent.Forward{Tag: "fw", Entries: []fluent.Entry{{Time: 1700000000, Record: rec}, {Time: 1700000001, Record: rec}}, Option: map[string]string{"chunk": "c3", "size": "2"}}
	if b, err = fw.MarshalMsg(nil); err != nil {
		t.Fatal(err)
	}
	stream = append(stream, b...)
	fw.Option = nil
	if b, err = fw.MarshalMsg(nil); err != nil {
		t.Fatal(err)
	}
	stream = append(stream, b...)
	got := mustDecodeAll(t, stream)
	want := []struct {
		tag   string
		mode  Mode
		count int
		chunk string
		t0    mpack.EventTime
	}{
		{"m", ModeMessage, 1, "c1", mpack.EventTime{Sec: 1700000000}},
		{"me", ModeMessage, 1, "c2", mpack.EventTime{Sec: 1700000000, Nsec: 5}},
		{"fw", ModeForward, 2, "c3", mpack.EventTime{Sec: 1700000000}},
		{"fw", ModeForward, 2, "", mpack.EventTime{Sec: 1700000000}},
	}
	if len(got) != len(want) {
		t.Fatalf("%d requests", len(got))
	}
	for i, w := range want {
		g := got[i]
		if g.Tag != w.tag || g.Mode != w.mode || g.Count != w.count || g.Chunk != w.chunk || entriesOf(t, []byte(g.Entries))[0].T != w.t0 {
			t.Errorf("request %d: %+v", i, g)
		}
	}
	if !bytes.Contains([]byte(got[2].Entries), []byte{0xa1, 'k', 0xa1, 'v'}) {
		t.Fatal("record lost")
	}
}
