package forwardproto

import (
	"bytes"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/logship/logship/broker"
	"github.com/logship/logship/internal/mpack"
)

// TestDetach: the memory a large PackedForward or Forward request was read
// into is handed over with its entries, uncopied, when nothing was read
// beyond it; the request stays readable, the decoder reads on into other
// memory, and the memory counts in Limits.Memory until the decoder waits
// for the next request. Small, rewritten, compressed and JSON requests,
// and one followed by bytes already read, hand nothing over.
func TestDetach(t *testing.T) {
	big := entriesN(t, 3000)
	small := entriesN(t, 3)
	var rewritten []byte // times of 0: rewritten to the time of decoding
	for i, r := range testRecords(t) {
		if i < 100 {
			rewritten = mpack.AppendEntry(rewritten, mpack.EventTime{}, r)
		}
	}
	for len(rewritten) < 100<<10 {
		rewritten = append(rewritten, rewritten...)
	}
	packed := frame(t, "t", binOf(t, big), map[string]any{"chunk": "c1"})
	cases := []struct {
		name   string
		parts  [][]byte
		detach bool
	}{
		{"packed", [][]byte{packed, frame(t, "t", binOf(t, small))}, true},
		{"forward", [][]byte{frame(t, "t", msgpack.RawMessage(append(mpack.AppendArrayHeader(nil, 3000), big...))), frame(t, "t", binOf(t, small))}, true},
		{"small", [][]byte{frame(t, "t", binOf(t, small)), frame(t, "t", binOf(t, small))}, false},
		{"rewritten", [][]byte{frame(t, "t", binOf(t, rewritten)), frame(t, "t", binOf(t, small))}, false},
		{"gzip", [][]byte{frame(t, "t", binOf(t, gzipStd(t, big)), map[string]any{"compressed": "gzip"}), frame(t, "t", binOf(t, small))}, false},
		{"more buffered", [][]byte{cat(packed, frame(t, "t", binOf(t, small)))}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := &fakeMemory{}
			d := newTestDecoder(&splitReader{parts: tc.parts}, Limits{Memory: m})
			req, err := d.Next()
			if err != nil {
				t.Fatal(err)
			}
			ents := req.Entries // req is the decoder's: the next Next rewrites it
			want := append([]byte(nil), ents...)
			charged := m.n
			own := d.Detach()
			if (own != nil) != tc.detach {
				t.Fatalf("Detach handed over %v, want %v", own != nil, tc.detach)
			}
			if own == nil {
				if _, err := d.Next(); err != nil {
					t.Fatal(err)
				}
				return
			}
			if d.Detach() != nil {
				t.Fatal("a second Detach handed over again")
			}
			if !bytes.Equal(req.Entries, want) || req.Count != 3000 {
				t.Fatal("the request changed when its memory was handed over")
			}
			if len(*own) != cap(*own) {
				t.Fatal("handed over a slice that is not the whole buffer")
			}
			in := false
			for i := range *own {
				if &(*own)[i] == &req.Entries[0] {
					in = true
					break
				}
			}
			if !in {
				t.Fatal("the entries do not lie in the memory handed over")
			}
			if m.n != charged {
				t.Fatalf("the memory handed over stopped counting at once: %d, was %d", m.n, charged)
			}
			next, err := d.Next() // reads into other memory
			if err != nil {
				t.Fatal(err)
			}
			if next.Count != 3 || !bytes.Equal(ents, want) {
				t.Fatalf("the next request (%d events) was read into the memory handed over", next.Count)
			}
			if m.n != max(0, d.footprint()-IdleBytes) {
				t.Fatalf("told %d, holds %d once the next request was read", m.n, d.footprint())
			}
			broker.PutBuffer(own)
		})
	}
}
