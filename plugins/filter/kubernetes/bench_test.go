package kubernetes

import (
	"fmt"
	"net/http"
	"testing"
)

// BenchmarkFilter measures the cost per record of a tail chunk of 1000
// cri records (about 150 bytes each): all of one file (what the tail
// input emits), of 10 files (a forwarded chunk), of no container file
// (passed as is), and with labels and annotations left out.
//
//	go test -run '^$' -bench Filter -benchmem ./plugins/filter/kubernetes/
func BenchmarkFilter(b *testing.B) {
	for _, bc := range []struct {
		name       string
		paths      int
		noFile     bool
		noMaps     bool
		sourceNone bool
	}{
		{name: "one_file", paths: 1},
		{name: "ten_files", paths: 10},
		{name: "one_file_no_labels", paths: 1, noMaps: true},
		{name: "source_none", paths: 1, sourceNone: true},
		{name: "no_container_file", paths: 1, noFile: true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			k := newBenchFake(b)
			cfg := defaultConfig()
			cfg.KubeletURL, cfg.TLS.CAFile, cfg.TokenFile = k.srv.URL, k.ca, ""
			if bc.sourceNone {
				cfg.Source = SourceNone
			}
			if bc.noMaps {
				cfg.Labels, cfg.Annotations = false, false
			}
			f, _ := newTestFilter(b, cfg)
			const n = 1000
			recs := make([]any, n)
			for i := range recs {
				p := webPath
				if bc.paths > 1 && i%bc.paths != 0 {
					p = fmt.Sprintf("/var/log/containers/web-7d4b9c8f5-x2x9q_default_side%d-%s.log", i%bc.paths, webID)
				}
				if bc.noFile {
					p = "/var/log/app/service.log"
				}
				recs[i] = rec("log", fmt.Sprintf("2024-05-02T10:00:00.%06dZ GET /api/v1/items/%d 200 1532 bytes in 3.2ms user=alice", i, i), "stream", "stdout", "file", p)
			}
			c := chunk("kube.var.log.containers.x", recs...)
			out, err := f.Filter(c) // fills the cache
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(c.Entries)))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := f.Filter(c); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/record")
			b.ReportMetric(float64(len(out.Entries)-len(c.Entries))/n, "added_bytes/record")
		})
	}
}

func newBenchFake(b *testing.B) *fake {
	body := readTestdata(b, "kubelet-pods.json")
	return newFake(b, func(*http.Request, int) response { return response{body: body} })
}
