package forwardproto

import (
	"runtime"
	"testing"
)

// TestSyncSenderReusesBuffers: a client that waits for each ack sends a
// large request, then nothing until the answer: the decoder gives its
// large buffer back while it waits (an idle connection keeps IdleBytes at
// most) and must get one again for the next request without allocating
// (and zeroing) it, nor doubling its way up from initialBuffer. Before,
// every 300 KB request allocated about 450 KB.
func TestSyncSenderReusesBuffers(t *testing.T) {
	if raceEnabled {
		t.Skip("SKIP: the race detector makes sync.Pool drop buffers on purpose")
	}
	big := frame(t, "t", binOf(t, entriesN(t, 3000)))
	if len(big) < 200<<10 {
		t.Fatalf("request of %d bytes, want a large one", len(big))
	}
	const n = 200
	parts := make([][]byte, n)
	for i := range parts {
		parts[i] = append([]byte(nil), big...) // one Read each: the decoder idles between
	}
	d := newTestDecoder(&splitReader{parts: parts}, Limits{})
	if _, err := d.Next(); err != nil { // warm up: the first buffers are new
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 1; i < n; i++ {
		req, err := d.Next()
		if err != nil {
			t.Fatal(err)
		}
		if req.Count != 3000 {
			t.Fatalf("request %d: %d events", i, req.Count)
		}
	}
	runtime.ReadMemStats(&after)
	perRequest := (after.TotalAlloc - before.TotalAlloc) / (n - 1)
	t.Logf("%d bytes allocated per %d-byte request", perRequest, len(big))
	// A pool may be emptied by a GC now and then: allow some refills.
	if perRequest > uint64(len(big))/4 {
		t.Fatalf("%d bytes allocated per %d-byte request: the read buffer is not reused", perRequest, len(big))
	}
}
