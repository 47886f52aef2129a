package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/logship/logship/internal/testutil"
)

// The DaemonSet's manifests, rendered from the chart, and the local copy
// of the agent's ConfigMap (the contract with them).
const (
	daemonSetManifest = "../../deploy/kubernetes/logship.yaml"
	configMapCopy     = "testdata/kubernetes/logship-agent-configmap.yaml"
)

// TestKubernetesDaemonSetManifest runs the agent with the ConfigMap of
// deploy/kubernetes/logship.yaml on a fake node (see runKubernetesNode).
func TestKubernetesDaemonSetManifest(t *testing.T) {
	if _, err := os.Stat(daemonSetManifest); errors.Is(err, os.ErrNotExist) {
		t.Skip("SKIP: deploy/kubernetes/logship.yaml not there yet")
	}
	runKubernetesNode(t, agentConfigMap(t, daemonSetManifest))
}

// TestKubernetesAgentConfigMap is the same test on the local copy of the
// ConfigMap the manifests are expected to hold.
func TestKubernetesAgentConfigMap(t *testing.T) {
	runKubernetesNode(t, agentConfigMap(t, configMapCopy))
}

// agentConfigMap returns data["agent.yaml"] of the ConfigMap named
// logship-agent in a multi-document manifest file.
func agentConfigMap(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	for {
		var doc struct {
			Kind     string                `yaml:"kind"`
			Metadata struct{ Name string } `yaml:"metadata"`
			Data     map[string]string     `yaml:"data"`
		}
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if doc.Kind == "ConfigMap" && doc.Metadata.Name == "logship-agent" {
			cfg, ok := doc.Data["agent.yaml"]
			if !ok {
				t.Fatalf("%s: ConfigMap logship-agent has no agent.yaml", path)
			}
			return cfg
		}
	}
	t.Fatalf("%s: no ConfigMap named logship-agent", path)
	return ""
}

// k8sPod is a pod of the fake node.
type k8sPod struct {
	ns, name, uid string
	labels        map[string]string
	containers    []string
	listed        bool // the fake kubelet lists it
}

func (p k8sPod) containerID(c string) string {
	h := sha256.Sum256([]byte(p.ns + "/" + p.name + "/" + c))
	return hex.EncodeToString(h[:])
}

func (p k8sPod) image(c string) string { return "registry.example/" + c + ":1.0" }

// nodeRewrite is what the test changes in the ConfigMap's agent.yaml:
// only where files, state and ports are, the kubelet's CA and token, and
// the environment the DaemonSet sets.
type nodeRewrite struct {
	root        string // the fake host's / for /var/log
	dataDir     string
	httpListen  string
	caFile      string
	tokenFile   string
	kubeletURL  string
	aggregators string
	sharedKey   string
}

// rewriteAgentConfig applies r to the config text and returns it with
// the environment to run it with (the DaemonSet's env: NODE_NAME,
// KUBELET_URL, AGGREGATORS, ...).
func rewriteAgentConfig(t *testing.T, text string, r nodeRewrite) (string, []string, bool) {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatalf("agent.yaml: %v", err)
	}
	root := doc.Content[0]
	env := []string{"NODE_NAME=node-a", "KUBELET_URL=" + r.kubeletURL, "AGGREGATORS=" + r.aggregators}
	// ${VAR} to set, else a value to write.
	envOrValue := func(n *yaml.Node, name, value string) {
		if strings.Contains(n.Value, "${"+name) {
			env = append(env, name+"="+value)
			return
		}
		n.Value, n.Tag, n.Style = value, "!!str", yaml.DoubleQuotedStyle
	}
	service := mapValue(root, "service")
	if service == nil {
		service = &yaml.Node{Kind: yaml.MappingNode}
		root.Content = append(root.Content, scalar("service"), service)
	}
	envOrValue(setDefault(service, "data_dir"), "LOGSHIP_DATA_DIR", r.dataDir)
	setDefault(service, "http_listen").Value = r.httpListen
	if n := mapValue(service, "node_name"); n != nil && !strings.Contains(n.Value, "${") {
		n.Value = "" // NODE_NAME from the environment, as in the DaemonSet
	}
	for _, in := range seqItems(mapValue(root, "inputs")) {
		if n := mapValue(in, "listen"); n != nil {
			n.Value = testutil.FreeAddr(t)
		}
		if typeOf(in) != "tail" {
			continue
		}
		for _, key := range []string{"paths", "exclude_paths"} {
			for _, p := range seqItems(mapValue(in, key)) {
				if strings.HasPrefix(p.Value, "/var/log/") {
					p.Value = r.root + p.Value
				}
			}
		}
	}
	filters := 0
	for _, fl := range seqItems(mapValue(root, "filters")) {
		if typeOf(fl) != "kubernetes" {
			continue
		}
		filters++
		for key, want := range map[string]string{"match": "kube.**", "source": "kubelet", "kubelet_url": "${KUBELET_URL"} {
			if v := mapValue(fl, key); v == nil || !strings.HasPrefix(v.Value, want) {
				t.Fatalf("the kubernetes filter's %s is not %s...: %v", key, want, v)
			}
		}
		tls := mapValue(fl, "tls")
		if tls == nil {
			tls = &yaml.Node{Kind: yaml.MappingNode}
			fl.Content = append(fl.Content, scalar("tls"), tls)
		}
		if tls.Kind == yaml.ScalarNode && (tls.Tag == "!!null" || tls.Value == "") {
			*tls = yaml.Node{Kind: yaml.MappingNode} // tls: (empty)
		}
		if tls.Kind != yaml.MappingNode {
			t.Fatalf("the kubernetes filter's tls is not a mapping: %v", tls.Value)
		}
		setDefault(tls, "ca_file").Value = r.caFile
		setDefault(fl, "token_file").Value = r.tokenFile
	}
	if filters != 1 {
		t.Fatalf("agent.yaml has %d kubernetes filters, want 1", filters)
	}
	sharedKey := false
	for _, out := range seqItems(mapValue(root, "outputs")) {
		if typeOf(out) != "forward" {
			continue
		}
		if s := mapValue(out, "servers"); s == nil || !strings.Contains(fmt.Sprint(nodeValues(s)), "${AGGREGATORS") {
			t.Fatalf("the forward output's servers do not come from ${AGGREGATORS}")
		}
		if tls := mapValue(out, "tls"); tls != nil && len(tls.Content) > 0 {
			t.Fatalf("the forward output has a tls block: the test does not set one up")
		}
		if k := mapValue(out, "shared_key"); k != nil && k.Value != "" {
			envOrValue(k, "LOGSHIP_SHARED_KEY", r.sharedKey)
			sharedKey = true
		}
	}
	b, err := yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), env, sharedKey
}

func scalar(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Value: v} }

func mapValue(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// setDefault returns the value of key, added as "" when missing.
func setDefault(m *yaml.Node, key string) *yaml.Node {
	if v := mapValue(m, key); v != nil {
		return v
	}
	v := scalar("")
	m.Content = append(m.Content, scalar(key), v)
	return v
}

func seqItems(n *yaml.Node) []*yaml.Node {
	if n == nil || n.Kind != yaml.SequenceNode {
		return nil
	}
	return n.Content
}

func typeOf(n *yaml.Node) string {
	if v := mapValue(n, "type"); v != nil {
		return v.Value
	}
	return ""
}

func nodeValues(n *yaml.Node) []string {
	if n.Kind == yaml.ScalarNode {
		return []string{n.Value}
	}
	var out []string
	for _, c := range n.Content {
		out = append(out, nodeValues(c)...)
	}
	return out
}

// fakeKubelet serves GET /pods (a v1 PodList of the listed pods) over TLS
// to the bearer token only.
type fakeKubelet struct {
	srv   *httptest.Server
	ca    string
	mu    sync.Mutex
	reqs  int
	auths map[string]int
}

func newFakeKubelet(t *testing.T, pods []k8sPod, token string) *fakeKubelet {
	t.Helper()
	var items []map[string]any
	for _, p := range pods {
		if !p.listed {
			continue
		}
		var specs, statuses []map[string]any
		for _, c := range p.containers {
			specs = append(specs, map[string]any{"name": c, "image": p.image(c), "imagePullPolicy": "IfNotPresent"})
			statuses = append(statuses, map[string]any{
				"name": c, "ready": true, "restartCount": 0, "started": true,
				"state": map[string]any{"running": map[string]any{"startedAt": "2024-05-02T10:00:05Z"}},
				"image": p.image(c), "imageID": p.image(c) + "@sha256:" + p.containerID(c+"-image"),
				"containerID": "containerd://" + p.containerID(c),
			})
		}
		items = append(items, map[string]any{
			"metadata": map[string]any{"name": p.name, "namespace": p.ns, "uid": p.uid, "labels": p.labels,
				"annotations": map[string]any{"kubectl.kubernetes.io/default-container": p.containers[0]}},
			"spec":   map[string]any{"nodeName": "node-a", "containers": specs, "restartPolicy": "Always"},
			"status": map[string]any{"phase": "Running", "hostIP": "10.0.0.11", "podIP": "10.244.1.7", "containerStatuses": statuses},
		})
	}
	body, err := json.Marshal(map[string]any{"kind": "PodList", "apiVersion": "v1", "metadata": map[string]any{}, "items": items})
	if err != nil {
		t.Fatal(err)
	}
	k := &fakeKubelet{auths: map[string]int{}}
	k.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k.mu.Lock()
		k.reqs++
		k.auths[r.Header.Get("Authorization")]++
		k.mu.Unlock()
		if r.URL.Path != "/pods" {
			http.NotFound(w, r)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	k.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	k.srv.StartTLS()
	t.Cleanup(k.srv.Close)
	k.ca = filepath.Join(t.TempDir(), "kubelet-ca.crt")
	writeFile(t, k.ca, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.srv.Certificate().Raw})))
	return k
}

// criMessage is one message written to a container's log, maybe in
// several partial (P) lines.
type criMessage struct {
	stream string
	parts  []string
}

func (m criMessage) text() string { return strings.Join(m.parts, "") }

// containerMessages are the messages of one container: stdout and stderr,
// some split by the runtime into partial lines.
func containerMessages(pod, container string, n int) []criMessage {
	var out []criMessage
	for i := range n {
		body := fmt.Sprintf("%s/%s message %d %s", pod, container, i, strings.Repeat("x", i%40))
		m := criMessage{stream: "stdout", parts: []string{body}}
		switch {
		case i%7 == 3:
			m.stream = "stderr"
		case i%10 == 4: // a long line the runtime cut in three
			m.parts = []string{body[:5], body[5:12], body[12:] + " (merged)"}
		}
		out = append(out, m)
	}
	return out
}

// runKubernetesNode runs the agent with agentYAML (the DaemonSet's
// ConfigMap) on a fake node: a /var/log/pods tree of CRI files with the
// /var/log/containers symbolic links into it, as the kubelet lays them
// out, a fake kubelet listing the pods, and a logship aggregator taking
// what the agent forwards. Every message written arrives once, merged,
// with its pod's metadata: the file-name fields for all, labels and the
// rest from the kubelet for the pods it lists.
func runKubernetesNode(t *testing.T, agentYAML string) {
	dir := t.TempDir()
	root := filepath.Join(dir, "host")
	pods := []k8sPod{
		{ns: "default", name: "web-6b7f9c5d4-abcde", uid: "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f",
			labels: map[string]string{"app": "web", "pod-template-hash": "6b7f9c5d4"}, containers: []string{"nginx"}, listed: true},
		{ns: "shop", name: "checkout.v2-0", uid: "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
			labels: map[string]string{"app": "checkout", "tier": "backend"}, containers: []string{"api", "envoy"}, listed: true},
		// a pod the kubelet does not know (gone already): file-name
		// metadata only
		{ns: "default", name: "ghost-1", uid: "99999999-0000-4000-8000-000000000001", containers: []string{"app"}},
	}
	const perContainer = 150
	const token = "e2e-service-account-token"
	kubelet := newFakeKubelet(t, pods, token)
	tokenFile := filepath.Join(dir, "token")
	writeFile(t, tokenFile, token+"\n")

	// The aggregator.
	aggAddr := testutil.FreeAddr(t)
	out := filepath.Join(dir, "aggregator-out.log")
	r := nodeRewrite{
		root: root, dataDir: filepath.Join(dir, "agent-data"), httpListen: testutil.FreeAddr(t),
		caFile: kubelet.ca, tokenFile: tokenFile, kubeletURL: kubelet.srv.URL, aggregators: aggAddr, sharedKey: "e2e-shared-key",
	}
	cfgText, env, sharedKey := rewriteAgentConfig(t, agentYAML, r)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent.yaml as run, with %q:\n%s", env, cfgText)
		}
	})
	aggKey := ""
	if sharedKey {
		aggKey = "shared_key: " + r.sharedKey
	}
	aggCfg := filepath.Join(dir, "aggregator.yaml")
	writeFile(t, aggCfg, fmt.Sprintf(`
service: {data_dir: %s, http_listen: ""}
inputs:
  - type: forward
    listen: %s
    self_hostname: aggregator
    %s
outputs:
  - {type: file, path: %s, tag_key: tag}
`, filepath.Join(dir, "agg-data"), aggAddr, aggKey, out))
	agg := start(t, "aggregator", "-c", aggCfg)
	waitListening(t, aggAddr)

	// The agent, on an empty node: the pods start after it.
	for _, d := range []string{"var/log/containers", "var/log/pods"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	agentCfg := filepath.Join(dir, "agent.yaml")
	writeFile(t, agentCfg, cfgText)
	started := time.Now()
	agent := startEnv(t, env, "agent", "-c", agentCfg)
	testutil.CheckFor(t, 20*time.Second, func() error {
		code, _, err := httpGet("http://" + r.httpListen + "/readyz")
		if err != nil || code != 200 {
			return fmt.Errorf("readyz: %d %v", code, err)
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(r.dataDir, "buffer")); err != nil {
		t.Fatalf("the agent's data_dir is not the one set: %v", err)
	}

	// The kubelet starts the containers: /var/log/pods/<ns>_<pod>_<uid>/<c>/0.log
	// and the /var/log/containers/<pod>_<ns>_<c>-<id>.log links to them;
	// the runtime writes CRI lines, a few at a time.
	type container struct {
		pod  k8sPod
		name string
		msgs []criMessage
		f    *os.File
	}
	var cs []*container
	for _, p := range pods {
		for _, c := range p.containers {
			d := filepath.Join(root, "var/log/pods", p.ns+"_"+p.name+"_"+p.uid, c)
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(filepath.Join(d, "0.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			link := filepath.Join(root, "var/log/containers", p.name+"_"+p.ns+"_"+c+"-"+p.containerID(c)+".log")
			if err := os.Symlink(filepath.Join(d, "0.log"), link); err != nil {
				t.Fatal(err)
			}
			cs = append(cs, &container{pod: p, name: c, msgs: containerMessages(p.name, c, perContainer), f: f})
		}
	}
	ts := time.Date(2024, 5, 2, 10, 0, 0, 0, time.UTC)
	for i := 0; i < perContainer; i += 10 {
		for _, c := range cs {
			var b bytes.Buffer
			for _, m := range c.msgs[i:min(i+10, perContainer)] {
				for j, part := range m.parts {
					tag := "F"
					if j < len(m.parts)-1 {
						tag = "P"
					}
					ts = ts.Add(time.Millisecond)
					fmt.Fprintf(&b, "%s %s %s %s\n", ts.Format(time.RFC3339Nano), m.stream, tag, part)
				}
			}
			if _, err := c.f.Write(b.Bytes()); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}

	total := perContainer * len(cs)
	testutil.CheckFor(t, 60*time.Second, func() error {
		if n := countLines(out); n < total {
			return fmt.Errorf("%d of %d records at the aggregator", n, total)
		}
		return nil
	})
	page := scrape(t, r.httpListen)
	agent.signal(syscall.SIGTERM)
	if code := agent.wait(30 * time.Second); code != 0 {
		t.Fatalf("agent exit %d", code)
	}
	agg.signal(syscall.SIGTERM)
	if code := agg.wait(30 * time.Second); code != 0 {
		t.Fatalf("aggregator exit %d", code)
	}

	lines := readJSONLines(t, out)
	if len(lines) != total {
		t.Fatalf("%d records at the aggregator, want %d", len(lines), total)
	}
	want := map[string]*container{} // message text -> its container
	for _, c := range cs {
		for _, m := range c.msgs {
			want[m.text()] = c
		}
	}
	stream := map[string]string{}
	for _, c := range cs {
		for _, m := range c.msgs {
			stream[m.text()] = m.stream
		}
	}
	seen := map[string]bool{}
	full, fileOnly := 0, 0
	for i, l := range lines {
		msg, _ := l["log"].(string)
		c := want[msg]
		if c == nil || seen[msg] {
			t.Fatalf("record %d: unknown or repeated message %q: %v", i, msg, l)
		}
		seen[msg] = true
		if l["stream"] != stream[msg] {
			t.Fatalf("record %d: stream %v, want %s", i, l["stream"], stream[msg])
		}
		if !strings.HasPrefix(l["tag"].(string), "kube.") || !strings.HasSuffix(l["file"].(string), c.pod.containerID(c.name)+".log") {
			t.Fatalf("record %d: tag %v file %v", i, l["tag"], l["file"])
		}
		m, _ := l["kubernetes"].(map[string]any)
		id := c.pod.containerID(c.name)
		fields := map[string]any{
			"namespace_name": c.pod.ns, "pod_name": c.pod.name, "container_name": c.name,
			"container_id": id, "docker_id": id, "host": "node-a",
		}
		if c.pod.listed {
			labels := map[string]any{}
			for k, v := range c.pod.labels {
				labels[k] = v
			}
			fields["pod_id"] = c.pod.uid
			fields["labels"] = labels
			fields["annotations"] = map[string]any{"kubectl.kubernetes.io/default-container": c.pod.containers[0]}
			fields["container_image"] = c.pod.image(c.name)
			fields["container_hash"] = c.pod.image(c.name) + "@sha256:" + c.pod.containerID(c.name+"-image")
			full++
		} else {
			fileOnly++
		}
		if !reflect.DeepEqual(m, fields) {
			t.Fatalf("record %d (%s):\n got %v\nwant %v", i, msg, m, fields)
		}
	}
	wantFull := perContainer * 3 // web/nginx, checkout/api, checkout/envoy
	if full != wantFull || fileOnly != perContainer {
		t.Fatalf("%d records with the kubelet's metadata, %d with the file name's; want %d and %d", full, fileOnly, wantFull, perContainer)
	}
	if got := metricSum(page, "logship_kubernetes_records_total", `metadata="full"`); got != float64(wantFull) {
		t.Errorf("records_total{metadata=full} = %v, want %d", got, wantFull)
	}
	if got := metricSum(page, "logship_kubernetes_records_total", `metadata="file_name_only"`); got != perContainer {
		t.Errorf("records_total{metadata=file_name_only} = %v, want %d", got, perContainer)
	}
	kubelet.mu.Lock()
	defer kubelet.mu.Unlock()
	// One list serves the known pods; the unknown one is asked for once
	// more at most; after that, one list per cache_ttl (a minute) for
	// staleness and one for the unknown pod.
	most := 3 + 2*int(time.Since(started)/time.Minute)
	if kubelet.reqs < 1 || kubelet.reqs > most || kubelet.auths["Bearer "+token] != kubelet.reqs {
		t.Errorf("the kubelet saw %d requests (want 1 to %d), with tokens %v", kubelet.reqs, most, kubelet.auths)
	}
	t.Logf("%d records, %d with the kubelet's metadata; %d requests to the kubelet", total, full, kubelet.reqs)
}
