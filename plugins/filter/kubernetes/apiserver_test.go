package kubernetes

import (
	"bytes"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/internal/testutil"
)

// TestAPIServerListWatch: source api_server lists this node's pods (from
// the watch cache), then watches from the list's resourceVersion: a pod
// added, a label changed and a pod deleted reach the records without
// another list. A watch that ends is started again from where it left
// off; a 410 Gone lists again.
func TestAPIServerListWatch(t *testing.T) {
	list := readTestdata(t, "apiserver-pods.json")
	events := bytes.SplitAfter(bytes.TrimSpace(readTestdata(t, "apiserver-watch.jsonl")), []byte("\n"))
	var mu sync.Mutex
	hold := make(chan struct{})
	gone := []byte(`{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version: 12349 (12400)","reason":"Expired","code":410}}` + "\n")
	a := newFake(t, func(r *http.Request, n int) response {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Query().Get("watch") == "" {
			return response{body: list}
		}
		switch n {
		case 1: // the first watch: the events, then open until hold is closed
			return response{stream: events, hold: hold}
		case 2: // the second: its resourceVersion is too old
			return response{stream: [][]byte{gone}}
		}
		return response{hold: make(chan struct{})} // open until the test ends
	})
	cfg := testConfig(t, a)
	cfg.Source = SourceAPIServer
	cfg.CacheTTL = conftypes.Duration(30 * time.Second)
	f, reg := newTestFilter(t, cfg)

	web := func() map[string]any {
		out, _ := f.Filter(chunk("kube.x", rec("file", webPath)))
		return meta(records(t, out)[0])
	}
	if m := web(); m["labels"] == nil || m["labels"].(map[string]any)["release"] != nil {
		t.Fatalf("after the list: %v", m)
	}
	// The watch brings the batch pod, web's new label and prometheus's
	// deletion (whose metadata is kept for its last lines).
	testutil.CheckFor(t, 10*time.Second, func() error {
		out, _ := f.Filter(chunk("kube.x", rec("file", latePath)))
		if m := meta(records(t, out)[0]); m["labels"] == nil || m["container_image"] != "ghcr.io/example/worker:2.0" {
			return fmt.Errorf("batch pod: %v", m)
		}
		if m := web(); m["labels"].(map[string]any)["release"] != "canary" {
			return fmt.Errorf("web: %v", m)
		}
		return nil
	})
	promPath := "/var/log/pods/monitoring_prometheus-k8s.example-0_" + promUID + "/prometheus/1.log"
	out, _ := f.Filter(chunk("kube.x", rec("file", promPath)))
	if m := meta(records(t, out)[0]); m["labels"] == nil || m["container_id"] != promID {
		t.Fatalf("deleted pod: %v", m)
	}
	if n := a.count(); n != 2 {
		t.Fatalf("%d requests, want 2 (list, watch)", n)
	}

	// The server ends the watch: the next chunks start another from the
	// bookmark's resourceVersion; that one is too old (410), so the pods
	// are listed again and watched from the new list.
	close(hold)
	testutil.CheckFor(t, 10*time.Second, func() error {
		web()
		if n := a.count(); n < 5 {
			return fmt.Errorf("%d requests", n)
		}
		return nil
	})
	reqs, auths := a.requests()
	want := []struct{ watch, rv string }{{"", "0"}, {"1", "12345"}, {"1", "12349"}, {"", "0"}, {"1", "12345"}}
	for i, w := range want {
		q := reqs[i].URL.Query()
		if reqs[i].URL.Path != "/api/v1/pods" || q.Get("fieldSelector") != "spec.nodeName=node-a" || q.Get("watch") != w.watch || q.Get("resourceVersion") != w.rv || auths[i] != "Bearer token-1" {
			t.Errorf("request %d: %s (auth %q), want watch=%q resourceVersion=%s", i, reqs[i].URL, auths[i], w.watch, w.rv)
		}
		if w.watch != "" && (q.Get("allowWatchBookmarks") != "true" || q.Get("timeoutSeconds") != "30") {
			t.Errorf("request %d: %s", i, reqs[i].URL)
		}
	}
	if len(reqs) != len(want) {
		t.Errorf("%d requests, want %d", len(reqs), len(want))
	}
	if got := metric(t, reg, "logship_kubernetes_requests_total", "source", "api_server", "result", "ok"); got != 5 {
		t.Errorf("requests ok %v, want 5", got)
	}
}

// TestAPIServerForbidden: without RBAC on pods, records get the file-name
// metadata and the 403 is counted.
func TestAPIServerForbidden(t *testing.T) {
	a := newFake(t, func(*http.Request, int) response {
		return response{status: 403, body: []byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","message":"pods is forbidden: User \"system:serviceaccount:logging:logship\" cannot list resource \"pods\" in API group \"\" at the cluster scope","reason":"Forbidden","code":403}`)}
	})
	cfg := testConfig(t, a)
	cfg.Source = SourceAPIServer
	cfg.RetryBackoff = cfg.CacheTTL
	f, reg := newTestFilter(t, cfg)
	for range 50 {
		out, _ := f.Filter(chunk("kube.x", rec("file", webPath)))
		checkFileNameOnly(t, out)
	}
	if n := a.count(); n != 1 {
		t.Fatalf("%d requests", n)
	}
	if got := metric(t, reg, "logship_kubernetes_requests_total", "source", "api_server", "result", "unauthorized"); got != 1 {
		t.Fatalf("unauthorized %v", got)
	}
}

// TestAPIServerSlowWatch: a watch whose answer does not begin within
// request_timeout is a timeout; the records keep the listed metadata.
func TestAPIServerSlowWatch(t *testing.T) {
	list := readTestdata(t, "apiserver-pods.json")
	a := newFake(t, func(r *http.Request, n int) response {
		if r.URL.Query().Get("watch") == "" {
			return response{body: list}
		}
		<-r.Context().Done() // no answer at all
		return response{}
	})
	cfg := testConfig(t, a)
	cfg.Source = SourceAPIServer
	cfg.RequestTimeout = conftypes.Duration(50 * time.Millisecond)
	cfg.RetryBackoff = cfg.CacheTTL
	f, reg := newTestFilter(t, cfg)
	out, _ := f.Filter(chunk("kube.x", rec("file", webPath)))
	if m := meta(records(t, out)[0]); m["labels"] == nil {
		t.Fatalf("%v", m)
	}
	testutil.CheckFor(t, 10*time.Second, func() error {
		if got := metric(t, reg, "logship_kubernetes_requests_total", "result", "timeout"); got != 1 {
			return fmt.Errorf("timeouts %v", got)
		}
		return nil
	})
	out, _ = f.Filter(chunk("kube.x", rec("file", webPath)))
	if m := meta(records(t, out)[0]); m["labels"] == nil {
		t.Fatalf("after the watch timed out: %v", m)
	}
}
