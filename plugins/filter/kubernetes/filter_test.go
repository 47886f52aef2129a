package kubernetes

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/internal/testutil"
	"github.com/logship/logship/pipeline"
)

// TestKubeletFullMetadata: records of the kubelet's pods get every field,
// from both file layouts and from the tag; the rest pass unchanged; one
// request, with the token, serves them all.
func TestKubeletFullMetadata(t *testing.T) {
	k := newFake(t, serveFile(t, "kubelet-pods.json"))
	f, reg := newTestFilter(t, testConfig(t, k))

	promPods := "/var/log/pods/monitoring_prometheus-k8s.example-0_" + promUID + "/prometheus/"
	notMap := mpack.AppendString(nil, "a bare string")
	withKey := mpack.AppendMapHeader(nil, 2)
	withKey = mpack.AppendString(withKey, "log")
	withKey = mpack.AppendString(withKey, "x")
	withKey = mpack.AppendString(withKey, "kubernetes")
	withKey = mpack.AppendString(withKey, "already")
	in := chunk("kube.var.log.containers.web-7d4b9c8f5-x2x9q_default_nginx-"+webID+".log",
		rec("log", "hello", "file", webPath),
		rec("log", "current", "file", promPods+"1.log"),
		rec("log", "previous", "file", promPods+"0.log"),
		rec("log", "older", "file", promPods+"7.log"),
		rec("log", "by tag"),
		rec("log", "other", "file", "/var/log/syslog"),
		notMap,
		withKey,
		rec("log", "static", "file", "/var/log/pods/kube-system_kube-apiserver-node-a_4b3c2a1f0e9d8c7b6a5f4e3d2c1b0a99/kube-apiserver/0.log"),
	)
	orig := bytes.Clone(in.Entries)
	out, err := f.Filter(in)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(in.Entries, orig) {
		t.Fatal("the input chunk was modified")
	}
	if out.Tag != in.Tag || string(out.Source) != "src" || out.Count != in.Count {
		t.Fatalf("tag %q source %q count %d", out.Tag, out.Source, out.Count)
	}
	rs := records(t, out)
	webLabels := map[string]any{"app": "web", "pod-template-hash": "7d4b9c8f5", "app.kubernetes.io/version": "1.4.2"}
	webAnn := map[string]any{"prometheus.io/scrape": "true", "kubectl.kubernetes.io/restartedAt": "2024-05-02T09:59:00Z"}
	wantWeb := map[string]any{
		"pod_name": "web-7d4b9c8f5-x2x9q", "namespace_name": "default", "pod_id": webUID, "host": "node-a",
		"container_name": "nginx", "container_id": webID, "docker_id": webID, "container_image": nginxImage,
		"container_hash": "docker.io/library/nginx@sha256:72e04f57f9deafa860b76a62e4f5bc696733431a79e80d5e92fb25ba4d96a1c4",
		"labels":         webLabels, "annotations": webAnn,
	}
	if !reflect.DeepEqual(meta(rs[0]), wantWeb) {
		t.Errorf("web record:\n got %v\nwant %v", meta(rs[0]), wantWeb)
	}
	if rs[0]["log"] != "hello" || rs[0]["file"] != webPath || len(rs[0]) != 3 {
		t.Errorf("web record's own fields: %v", rs[0])
	}
	for i, want := range []string{promID, promLastID, ""} {
		m := meta(rs[1+i])
		if m["pod_id"] != promUID || m["pod_name"] != "prometheus-k8s.example-0" || m["container_name"] != "prometheus" ||
			m["container_image"] != "quay.io/prometheus/prometheus:v2.51.0" || m["labels"].(map[string]any)["app.kubernetes.io/name"] != "prometheus" {
			t.Errorf("record %d: %v", 1+i, m)
		}
		if got, _ := m["container_id"].(string); got != want {
			t.Errorf("record %d (%v): container_id %q, want %q", 1+i, rs[1+i]["file"], got, want)
		}
	}
	if !reflect.DeepEqual(meta(rs[4]), wantWeb) {
		t.Errorf("record by tag: %v", meta(rs[4]))
	}
	if len(rs[5]) != 2 || rs[6]["<not a map>"] == nil || len(rs[7]) != 2 || rs[7]["kubernetes"] != "already" {
		t.Errorf("records that are not container logs: %v %v %v", rs[5], rs[6], rs[7])
	}
	if m := meta(rs[8]); m["pod_id"] != "4b3c2a1f0e9d8c7b6a5f4e3d2c1b0a99" || m["labels"].(map[string]any)["component"] != "kube-apiserver" ||
		m["annotations"].(map[string]any)["kubernetes.io/config.source"] != "file" {
		t.Errorf("static pod: %v", m)
	}

	reqs, auths := k.requests()
	if len(reqs) != 1 || reqs[0].URL.Path != "/pods" || auths[0] != "Bearer token-1" {
		t.Fatalf("requests %d, first %v, auth %q", len(reqs), reqs[0].URL, auths[0])
	}
	for label, want := range map[string]float64{"full": 6, "file_name_only": 0, "none": 1, "present": 1, "not_a_map": 1} {
		if got := metric(t, reg, "logship_kubernetes_records_total", "metadata", label); got != want {
			t.Errorf("records_total{metadata=%s} = %v, want %v", label, got, want)
		}
	}
	if got := metric(t, reg, "logship_kubernetes_requests_total", "result", "ok", "source", "kubelet"); got != 1 {
		t.Errorf("requests ok %v", got)
	}
	if got := metric(t, reg, "logship_kubernetes_cache_misses_total"); got != 3 {
		t.Errorf("cache misses %v, want 3 (web, prometheus, kube-apiserver: before the first list)", got)
	}
	if got := metric(t, reg, "logship_kubernetes_pods_cached"); got != 3 {
		t.Errorf("pods cached %v", got)
	}

	// A chunk of records that name no container passes as it is, not
	// copied.
	plain := chunk("app.x", rec("log", "a"), rec("log", "b", "file", "/var/log/app.log"))
	out, _ = f.Filter(plain)
	if &out.Entries[0] != &plain.Entries[0] {
		t.Error("an untouched chunk was copied")
	}
	for range 100 {
		if _, err := f.Filter(chunk("kube.x", rec("log", "again", "file", webPath))); err != nil {
			t.Fatal(err)
		}
	}
	if n := k.count(); n != 1 {
		t.Fatalf("%d requests for known pods within cache_ttl, want 1", n)
	}
}

// TestLabelsAnnotationsToggles: labels: false and annotations: false
// leave those maps out; the rest stays.
func TestLabelsAnnotationsToggles(t *testing.T) {
	k := newFake(t, serveFile(t, "kubelet-pods.json"))
	for _, tc := range []struct{ labels, annotations bool }{{true, true}, {true, false}, {false, true}, {false, false}} {
		t.Run(fmt.Sprintf("labels=%v,annotations=%v", tc.labels, tc.annotations), func(t *testing.T) {
			cfg := testConfig(t, k)
			cfg.Labels, cfg.Annotations = tc.labels, tc.annotations
			cfg.Key = "k8s"
			f, _ := newTestFilter(t, cfg)
			out, _ := f.Filter(chunk("t", rec("file", webPath)))
			m, _ := records(t, out)[0]["k8s"].(map[string]any)
			_, hasL := m["labels"]
			_, hasA := m["annotations"]
			if hasL != tc.labels || hasA != tc.annotations || m["pod_name"] != "web-7d4b9c8f5-x2x9q" || m["container_image"] != nginxImage {
				t.Fatalf("%v", m)
			}
			if a, ok := m["annotations"].(map[string]any); ok {
				if _, bad := a[lastAppliedConfig]; bad || len(a) != 2 {
					t.Fatalf("annotations %v", a)
				}
			}
		})
	}
}

// TestSourceNone: no request; the file-name fields and host only.
func TestSourceNone(t *testing.T) {
	cfg := defaultConfig()
	cfg.Source = SourceNone
	f, reg := newTestFilter(t, cfg)
	out, _ := f.Filter(chunk("t", rec("file", webPath)))
	want := map[string]any{"pod_name": "web-7d4b9c8f5-x2x9q", "namespace_name": "default", "container_name": "nginx",
		"container_id": webID, "docker_id": webID, "host": "node-a"}
	if m := meta(records(t, out)[0]); !reflect.DeepEqual(m, want) {
		t.Fatalf("%v", m)
	}
	if got := metric(t, reg, "logship_kubernetes_records_total", "metadata", "file_name_only"); got != 1 {
		t.Fatalf("file_name_only %v", got)
	}
}

// fileNameOnly is the metadata of webPath without a source.
func checkFileNameOnly(t *testing.T, out pipeline.Chunk) {
	t.Helper()
	for _, r := range records(t, out) {
		m := meta(r)
		if m["pod_name"] != "web-7d4b9c8f5-x2x9q" || m["namespace_name"] != "default" || m["container_id"] != webID || m["host"] != "node-a" {
			t.Fatalf("file-name metadata: %v", m)
		}
		if m["labels"] != nil || m["pod_id"] != nil || m["container_image"] != nil {
			t.Fatalf("metadata the source did not give: %v", m)
		}
	}
}

// TestDegrade: whatever goes wrong with the kubelet, records get the
// file-name metadata, the failure is counted by result, and however many
// chunks come, no more than one request is made per backoff.
func TestDegrade(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer response
		result string
	}{
		{"401", response{status: 401, body: []byte(`{"kind":"Status","code":401,"message":"Unauthorized"}`)}, "unauthorized"},
		{"403", response{status: 403, body: []byte(`Forbidden (user=system:serviceaccount:logging:logship, verb=get, resource=nodes, subresource=proxy)`)}, "unauthorized"},
		{"500", response{status: 500, body: []byte(`internal error`)}, "error"},
		{"garbage", response{body: []byte(`{"kind":"PodList","items":[{"metadata":`)}, "error"},
		{"not a pod list", response{body: []byte(`{"kind":"Status","status":"Success"}`)}, "error"},
		{"html", response{body: []byte(`<html><body>proxy</body></html>`)}, "error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newFake(t, func(*http.Request, int) response { return tc.answer })
			cfg := testConfig(t, k)
			cfg.RetryBackoff = cfg.CacheTTL // one hour: a single request in this test
			f, reg := newTestFilter(t, cfg)
			for range 200 {
				out, err := f.Filter(chunk("kube.x", rec("log", "l", "file", webPath), rec("log", "m", "file", webPath)))
				if err != nil {
					t.Fatal(err)
				}
				checkFileNameOnly(t, out)
			}
			if n := k.count(); n != 1 {
				t.Fatalf("%d requests, want 1", n)
			}
			if got := metric(t, reg, "logship_kubernetes_requests_total", "result", tc.result); got != 1 {
				t.Fatalf("requests_total{result=%s} = %v", tc.result, got)
			}
			if got := metric(t, reg, "logship_kubernetes_records_total", "metadata", "file_name_only"); got != 400 {
				t.Fatalf("file_name_only %v", got)
			}
		})
	}
}

// TestSlowKubelet: an answer slower than request_timeout is a timeout;
// the chunk waited for it goes on with the file-name metadata, and the
// next chunks do not wait. Once the kubelet answers again, records get
// the full metadata.
func TestSlowKubelet(t *testing.T) {
	release := make(chan struct{})
	pods := readTestdata(t, "kubelet-pods.json")
	k := newFake(t, func(r *http.Request, n int) response {
		if n == 0 {
			select { // never answers in time
			case <-release:
			case <-r.Context().Done():
			}
		}
		return response{body: pods}
	})
	defer close(release)
	cfg := testConfig(t, k)
	cfg.RequestTimeout = conftypes.Duration(50 * time.Millisecond)
	cfg.RetryBackoff = conftypes.Duration(20 * time.Millisecond)
	cfg.CacheTTL = conftypes.Duration(time.Second)
	f, reg := newTestFilter(t, cfg)
	out, _ := f.Filter(chunk("kube.x", rec("file", webPath)))
	checkFileNameOnly(t, out)
	testutil.CheckFor(t, 10*time.Second, func() error {
		if got := metric(t, reg, "logship_kubernetes_requests_total", "result", "timeout"); got != 1 {
			return fmt.Errorf("timeouts %v", got)
		}
		return nil
	})
	// The kubelet answers now: within a few backoffs, records are full.
	testutil.CheckFor(t, 10*time.Second, func() error {
		out, _ := f.Filter(chunk("kube.x", rec("file", webPath)))
		if m := meta(records(t, out)[0]); m["labels"] == nil {
			return fmt.Errorf("no labels yet: %v", m)
		}
		return nil
	})
	if n := k.count(); n != 2 {
		t.Fatalf("%d requests, want 2 (the slow one, then one that answered)", n)
	}
}

// TestPodAppearsLater: a pod the first list did not hold is asked for
// when its first chunk comes; that chunk waits for the list and gets the
// metadata. A pod no list holds is asked for once per cache_ttl only.
func TestPodAppearsLater(t *testing.T) {
	k := newFake(t, serveFile(t, "kubelet-pods.json"))
	cfg := testConfig(t, k)
	f, reg := newTestFilter(t, cfg)
	out, _ := f.Filter(chunk("kube.x", rec("file", webPath)))
	if meta(records(t, out)[0])["labels"] == nil {
		t.Fatal("web: no labels")
	}
	// The batch pod starts: the kubelet lists it from now on.
	k.setAnswer(serveFile(t, "kubelet-pods-later.json"))
	out, _ = f.Filter(chunk("kube.x", rec("log", "first line", "file", latePath), rec("log", "second", "file", latePath)))
	for _, r := range records(t, out) {
		m := meta(r)
		if m["labels"] == nil || m["labels"].(map[string]any)["job-name"] != "batch-job-28571234" || m["pod_id"] != "c0ffee00-1111-4222-8333-444455556666" {
			t.Fatalf("the new pod's first chunk: %v", m)
		}
	}
	if n := k.count(); n != 2 {
		t.Fatalf("%d requests, want 2", n)
	}
	// A pod that no list holds (an old file of a deleted pod): one
	// request, then none for cache_ttl however many chunks come.
	gone := "/var/log/containers/old-1_default_app-" + strings.Repeat("ab", 32) + ".log"
	for range 300 {
		out, _ := f.Filter(chunk("kube.x", rec("file", gone)))
		if m := meta(records(t, out)[0]); m["pod_name"] != "old-1" || m["labels"] != nil {
			t.Fatalf("%v", m)
		}
	}
	if n := k.count(); n != 3 {
		t.Fatalf("%d requests, want 3", n)
	}
	if got := metric(t, reg, "logship_kubernetes_records_total", "metadata", "full"); got != 3 {
		t.Fatalf("full %v", got)
	}
	if got := metric(t, reg, "logship_kubernetes_records_total", "metadata", "file_name_only"); got != 300 {
		t.Fatalf("file_name_only %v", got)
	}
}

// TestRefreshBounded: many goroutines sending chunks of many pods the
// kubelet does not know make one request per pod at most, however many
// chunks; with a long backoff, one request in all.
func TestRefreshBounded(t *testing.T) {
	for _, tc := range []struct {
		name    string
		backoff time.Duration
		most    int
	}{
		{"long backoff", time.Hour, 1},
		{"short backoff", 10 * time.Millisecond, 1 + 40}, // at most one list per unknown pod
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newFake(t, serveFile(t, "kubelet-pods.json"))
			cfg := testConfig(t, k)
			cfg.RetryBackoff = conftypes.Duration(tc.backoff)
			f, reg := newTestFilter(t, cfg)
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 250 {
						p := fmt.Sprintf("/var/log/containers/unknown-%d_default_app-%064x.log", (g*250+i)%40, 1)
						out, err := f.Filter(chunk("kube.x", rec("file", p), rec("file", webPath)))
						if err != nil || out.Count != 2 {
							t.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			n := k.count()
			if n < 1 || n > tc.most {
				t.Fatalf("%d requests for 2000 chunks of 40 unknown pods, want 1..%d", n, tc.most)
			}
			if got := metric(t, reg, "logship_kubernetes_records_total", "metadata", "file_name_only"); got != 2000 {
				t.Fatalf("file_name_only %v", got)
			}
			t.Logf("%d requests", n)
		})
	}
}

// TestTokenReread: the token file is read again after a 401, so a
// rotated token is used at once.
func TestTokenReread(t *testing.T) {
	pods := readTestdata(t, "kubelet-pods.json")
	var mu sync.Mutex
	valid := "token-1"
	k := newFake(t, func(r *http.Request, _ int) response {
		mu.Lock()
		defer mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+valid {
			return response{status: 401, body: []byte(`Unauthorized`)}
		}
		return response{body: pods}
	})
	cfg := testConfig(t, k)
	f, reg := newTestFilter(t, cfg)
	if out, _ := f.Filter(chunk("kube.x", rec("file", webPath))); meta(records(t, out)[0])["labels"] == nil {
		t.Fatal("no labels")
	}
	// The kubelet's token rotates: the file gets the new one, the old is
	// refused from now on.
	mu.Lock()
	valid = "token-2"
	mu.Unlock()
	if err := os.WriteFile(cfg.TokenFile, []byte("token-2"), 0o600); err != nil {
		t.Fatal(err)
	}
	i := 0
	testutil.CheckFor(t, 10*time.Second, func() error {
		i++ // a pod not seen before asks for a list
		p := fmt.Sprintf("/var/log/containers/new-%d_default_app-%064x.log", i, 1)
		f.Filter(chunk("kube.x", rec("file", p)))
		_, auths := k.requests()
		if auths[len(auths)-1] != "Bearer token-2" {
			return fmt.Errorf("auths %q", auths)
		}
		return nil
	})
	_, auths := k.requests()
	if len(auths) < 3 || auths[0] != "Bearer token-1" || auths[1] != "Bearer token-1" {
		t.Fatalf("auths %q, want token-1, token-1 (refused), then token-2", auths)
	}
	for _, a := range auths[2:] {
		if a != "Bearer token-2" {
			t.Fatalf("auths %q, want token-1, token-1 (refused), then token-2", auths)
		}
	}
	if got := metric(t, reg, "logship_kubernetes_requests_total", "result", "unauthorized"); got != 1 {
		t.Fatalf("unauthorized %v", got)
	}
}

// TestMalformedChunk: entries that do not parse pass unchanged.
func TestMalformedChunk(t *testing.T) {
	cfg := defaultConfig()
	cfg.Source = SourceNone
	f, _ := newTestFilter(t, cfg)
	good := chunk("t", rec("file", webPath)).Entries
	for _, e := range [][]byte{
		{0xc1},
		good[:len(good)-3],
		append([]byte{0x93}, good[1:]...),
		append(bytes.Clone(good), 0x92),
	} {
		c := pipeline.Chunk{Tag: "t", Entries: e, Count: 1}
		out, err := f.Filter(c)
		if err != nil || !bytes.Equal(out.Entries, e) {
			t.Fatalf("%x: %v %x", e, err, out.Entries)
		}
	}
}

// TestNonStringKeys: keys that are not strings are skipped, not taken for
// the path.
func TestNonStringKeys(t *testing.T) {
	cfg := defaultConfig()
	cfg.Source = SourceNone
	f, _ := newTestFilter(t, cfg)
	r := mpack.AppendMapHeader(nil, 3)
	r = mpack.AppendInt(r, 7)
	r = mpack.AppendString(r, "seven")
	r = mpack.AppendString(r, "nested")
	r = append(r, 0x81, 0xa4, 'f', 'i', 'l', 'e', 0xa1, 'x')
	r = mpack.AppendString(r, "file")
	r = mpack.AppendString(r, webPath)
	out, err := f.Filter(chunk("t", r))
	if err != nil {
		t.Fatal(err)
	}
	if m := meta(records(t, out)[0]); m["pod_name"] != "web-7d4b9c8f5-x2x9q" {
		t.Fatalf("%v", records(t, out)[0])
	}
}

func TestConfigValidate(t *testing.T) {
	ok := defaultConfig()
	if err := ok.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, tc := range []struct {
		set  func(*Config)
		want string
	}{
		{func(c *Config) { c.Source = "etcd" }, "source"},
		{func(c *Config) { c.KubeletURL = "" }, "kubelet_url"},
		{func(c *Config) { c.KubeletURL = "127.0.0.1:10250" }, "kubelet_url"},
		{func(c *Config) { c.KubeletURL = "https://x:10250/pods?x=1" }, "kubelet_url"},
		{func(c *Config) { c.Source, c.APIServerURL = SourceAPIServer, "ftp://x" }, "api_server_url"},
		{func(c *Config) { c.NodeName = "Node_1" }, "node_name"},
		{func(c *Config) { c.Key = "" }, "key"},
		{func(c *Config) { c.PathKey = "" }, "path_key"},
		{func(c *Config) { c.PathKey = c.Key }, "path_key"},
		{func(c *Config) { c.CacheTTL = conftypes.Duration(time.Millisecond) }, "cache_ttl"},
		{func(c *Config) { c.CacheTTL = conftypes.Duration(25 * time.Hour) }, "cache_ttl"},
		{func(c *Config) { c.RequestTimeout = 0 }, "request_timeout"},
		{func(c *Config) { c.RequestTimeout = conftypes.Duration(2 * time.Minute) }, "request_timeout"},
		{func(c *Config) { c.RetryBackoff = conftypes.Duration(time.Millisecond) }, "retry_backoff"},
		{func(c *Config) { c.RetryBackoff = conftypes.Duration(2 * time.Minute) }, "retry_backoff"}, // > cache_ttl
		{func(c *Config) { c.TLS.CertFile = "client.crt" }, "tls"},                                  // without key_file
		{func(c *Config) { c.TLS.KeyFile = "client.key" }, "tls"},                                   // without cert_file
	} {
		c := defaultConfig()
		tc.set(c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want+":") {
			t.Errorf("want an error about %s, got %v", tc.want, err)
		}
	}
	// source: none checks no URL
	c := defaultConfig()
	c.Source, c.KubeletURL = SourceNone, ""
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	// api_server needs a node name
	c = defaultConfig()
	c.Source = SourceAPIServer
	if _, err := New(pipeline.Settings{Name: "x", Metrics: pipeline.NopMetrics(pipeline.KindFilter, "x")}, c); err == nil || !strings.Contains(err.Error(), "node") {
		t.Fatalf("api_server without a node: %v", err)
	}
}

// TestTLSFiles: the tls block's files are read when the filter is made.
// The default ca_file (the service account's) may be missing, any other
// may not; a ca_file without a certificate, a missing cert_file, and a
// key that is not cert_file's are errors.
func TestTLSFiles(t *testing.T) {
	set := pipeline.Settings{Name: "x", Metrics: pipeline.NopMetrics(pipeline.KindFilter, "x")}
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(notPEM, []byte("not pem"), 0o644); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, _ := writeClientCert(t, "a")
	_, otherKey, _ := writeClientCert(t, "b")
	for _, tc := range []struct {
		name    string
		tls     conftypes.TLS
		want    string // "" for no error
		missing bool   // the error is a missing file
	}{
		{"system roots", conftypes.TLS{}, "", false},
		{"ca_file holds no certificate", conftypes.TLS{CAFile: notPEM}, "tls.ca_file: no PEM certificate", false},
		{"ca_file missing", conftypes.TLS{CAFile: filepath.Join(dir, "missing.crt")}, "tls.ca_file", true},
		{"cert_file missing", conftypes.TLS{CertFile: filepath.Join(dir, "missing.crt"), KeyFile: keyFile}, "tls.cert_file", true},
		{"key_file not cert_file's", conftypes.TLS{CertFile: certFile, KeyFile: otherKey}, "tls.cert_file", false},
		{"client certificate", conftypes.TLS{CertFile: certFile, KeyFile: keyFile}, "", false},
	} {
		c := defaultConfig()
		c.TLS = tc.tls
		if err := c.Validate(); err != nil {
			t.Fatalf("%s: Validate: %v", tc.name, err)
		}
		f, err := New(set, c)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: want an error with %q, got %v", tc.name, tc.want, err)
		case tc.missing && !errors.Is(err, os.ErrNotExist):
			t.Errorf("%s: want a missing file, got %v", tc.name, err)
		}
		if f != nil {
			_ = f.Close()
		}
	}

	// The default ca_file: outside a pod it does not exist, and the
	// system's roots are used, with a warning.
	if _, err := os.Stat(DefaultCAFile); err == nil {
		t.Logf("%s exists here: the missing default is not tested", DefaultCAFile)
		return
	}
	core, logs := observer.New(zap.WarnLevel)
	set.Logger = zap.New(core)
	c := defaultConfig()
	if c.TLS.CAFile != DefaultCAFile {
		t.Fatalf("default ca_file %q", c.TLS.CAFile)
	}
	f, err := New(set, c)
	if err != nil {
		t.Fatalf("default ca_file missing: %v", err)
	}
	_ = f.Close()
	if n := logs.FilterMessageSnippet("system's roots").FilterField(zap.String("ca_file", DefaultCAFile)).Len(); n != 1 {
		t.Fatalf("%d warnings about the missing default ca_file: %v", n, logs.All())
	}
}

// TestVerifiesTLS: without the CA (and without insecure_skip_verify) the
// self-signed server is refused, and the log's hint names
// tls.insecure_skip_verify; with insecure_skip_verify it is used;
// server_name is the name verified.
func TestVerifiesTLS(t *testing.T) {
	k := newFake(t, serveFile(t, "kubelet-pods.json"))
	cfg := testConfig(t, k)
	cfg.TLS.CAFile = ""
	cfg.RetryBackoff = cfg.CacheTTL
	core, logs := observer.New(zap.WarnLevel)
	f, reg := newTestFilterLog(t, cfg, zap.New(core))
	out, _ := f.Filter(chunk("kube.x", rec("file", webPath)))
	checkFileNameOnly(t, out)
	if got := metric(t, reg, "logship_kubernetes_requests_total", "result", "error"); got != 1 {
		t.Fatalf("errors %v", got)
	}
	checkTLSHint(t, logs)

	cfg = testConfig(t, k)
	cfg.TLS.CAFile = ""
	cfg.TLS.InsecureSkipVerify = true
	f, _ = newTestFilter(t, cfg)
	out, _ = f.Filter(chunk("kube.x", rec("file", webPath)))
	if meta(records(t, out)[0])["labels"] == nil {
		t.Fatal("no labels with tls.insecure_skip_verify")
	}

	// httptest's certificate is for 127.0.0.1, ::1 and example.com: a
	// server_name it does not name is refused, example.com is not.
	cfg = testConfig(t, k)
	cfg.TLS.ServerName = "kubelet.example.org"
	cfg.RetryBackoff = cfg.CacheTTL
	core, logs = observer.New(zap.WarnLevel)
	f, reg = newTestFilterLog(t, cfg, zap.New(core))
	out, _ = f.Filter(chunk("kube.x", rec("file", webPath)))
	checkFileNameOnly(t, out)
	if got := metric(t, reg, "logship_kubernetes_requests_total", "result", "error"); got != 1 {
		t.Fatalf("errors with a server_name not in the certificate: %v", got)
	}
	checkTLSHint(t, logs)
	cfg = testConfig(t, k)
	cfg.TLS.ServerName = "example.com"
	f, _ = newTestFilter(t, cfg)
	out, _ = f.Filter(chunk("kube.x", rec("file", webPath)))
	if meta(records(t, out)[0])["labels"] == nil {
		t.Fatal("no labels with server_name: example.com")
	}
}

// checkTLSHint: one request failure was logged, with the hint that names
// the tls block's keys.
func checkTLSHint(t *testing.T, logs *observer.ObservedLogs) {
	t.Helper()
	entries := logs.FilterMessageSnippet("request to the kubelet failed").All()
	if len(entries) != 1 {
		t.Fatalf("%d request failures logged, want 1: %v", len(entries), logs.All())
	}
	hint, _ := entries[0].ContextMap()["hint"].(string)
	for _, want := range []string{"tls.insecure_skip_verify: true", "tls.ca_file"} {
		if !strings.Contains(hint, want) {
			t.Errorf("the hint %q does not name %s", hint, want)
		}
	}
	if strings.Contains(hint, "tls_insecure_skip_verify") {
		t.Errorf("the hint %q names the old key", hint)
	}
}

// TestClientCertificate: a kubelet that requires a client certificate
// (x509 client authentication, its token authentication off) refuses the
// filter without tls.cert_file and tls.key_file, and answers with them;
// it sees the certificate's name.
func TestClientCertificate(t *testing.T) {
	certFile, keyFile, pool := writeClientCert(t, "system:serviceaccount:logging:logship-agent")
	var mu sync.Mutex
	var peers []string
	pods := readTestdata(t, "kubelet-pods.json")
	k := newFakeTLS(t, func(r *http.Request, _ int) response {
		mu.Lock()
		peers = append(peers, r.TLS.PeerCertificates[0].Subject.CommonName)
		mu.Unlock()
		return response{body: pods}
	}, &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool})

	cfg := testConfig(t, k)
	cfg.TokenFile = ""
	cfg.RetryBackoff = cfg.CacheTTL
	f, reg := newTestFilter(t, cfg)
	out, _ := f.Filter(chunk("kube.x", rec("file", webPath)))
	checkFileNameOnly(t, out)
	if got := metric(t, reg, "logship_kubernetes_requests_total", "result", "error"); got != 1 {
		t.Fatalf("errors without a client certificate: %v", got)
	}
	if n := k.count(); n != 0 {
		t.Fatalf("%d requests reached the handler without a client certificate", n)
	}

	cfg = testConfig(t, k)
	cfg.TokenFile = ""
	cfg.TLS.CertFile, cfg.TLS.KeyFile = certFile, keyFile
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	f, reg = newTestFilter(t, cfg)
	out, _ = f.Filter(chunk("kube.x", rec("file", webPath)))
	m := meta(records(t, out)[0])
	if m["labels"] == nil || m["pod_id"] != webUID {
		t.Fatalf("with a client certificate: %v", m)
	}
	if got := metric(t, reg, "logship_kubernetes_requests_total", "result", "ok"); got != 1 {
		t.Fatalf("ok requests with a client certificate: %v", got)
	}
	_, auths := k.requests()
	mu.Lock()
	defer mu.Unlock()
	if !reflect.DeepEqual(peers, []string{"system:serviceaccount:logging:logship-agent"}) || !reflect.DeepEqual(auths, []string{""}) {
		t.Fatalf("the kubelet saw client certificates %q and Authorization %q", peers, auths)
	}
}
