package deploy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/logship/logship/agent"
	"github.com/logship/logship/aggregator"
	"github.com/logship/logship/conf"
	"github.com/logship/logship/plugins/all"
)

const (
	chartDir       = "helm/logship"
	plainManifests = "kubernetes/logship.yaml"
)

// helmBin finds helm: $HELM, then bin/tools/helm (scripts/install-helm.sh,
// which `make test` runs), then PATH; the test is skipped without one.
func helmBin(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	if p, err := filepath.Abs("../bin/tools/helm"); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	t.Skip("SKIP: helm not found (scripts/install-helm.sh builds it into bin/tools)")
	return ""
}

func runHelm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helmBin(t), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String() + errb.String(), err
	}
	return out.String(), nil
}

func writeValues(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestHelmLint lints the chart strictly (a value used but not defined is an
// error) with the default values and with the combinations users choose.
func TestHelmLint(t *testing.T) {
	helmBin(t)
	for _, c := range []struct {
		name string
		set  []string
	}{
		{"defaults", nil},
		{"agent only", []string{"aggregator.enabled=false", "agent.aggregators[0]=agg.example:24224"}},
		{"aggregator only", []string{"agent.enabled=false"}},
		{"host port", []string{"agent.hostPort.enabled=true"}},
		{"existing secret, no persistence", []string{"sharedKey.existingSecret=mine", "aggregator.persistence.enabled=false"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"lint", "--strict", chartDir, "--namespace", "logship"}
			for _, s := range c.set {
				args = append(args, "--set", s)
			}
			out, err := runHelm(t, args...)
			if err != nil || !strings.Contains(out, "0 chart(s) failed") {
				t.Fatalf("helm lint: %v\n%s", err, out)
			}
		})
	}
}

// TestHelmSchemaRejects checks that values.schema.json refuses values of the
// wrong type or a misspelt key, naming the path, and accepts good ones.
func TestHelmSchemaRejects(t *testing.T) {
	helmBin(t)
	for _, c := range []struct {
		name, values, path string // path: "" for a values file that must pass
	}{
		{"bool as string", "agent:\n  enabled: \"yes\"\n", "/agent/enabled"},
		{"replicas as string", "aggregator:\n  replicas: two\n", "/aggregator/replicas"},
		{"tolerations as map", "agent:\n  tolerations:\n    operator: Exists\n", "/agent/tolerations"},
		{"misspelt key", "agent:\n  hostport:\n    enabled: true\n", "hostport"},
		{"unknown top-level key", "agents:\n  enabled: false\n", "agents"},
		{"bad size", "agent:\n  buffer:\n    maxBytes: 2 gigabytes\n", "/agent/buffer/maxBytes"},
		{"bad quantity", "aggregator:\n  persistence:\n    size: lots\n", "/aggregator/persistence/size"},
		{"port out of range", "agent:\n  hostPort:\n    port: 70000\n", "/agent/hostPort/port"},
		{"log level", "aggregator:\n  logLevel: verbose\n", "/aggregator/logLevel"},
		{"plugin without type", "aggregator:\n  extraOutputs:\n    - name: x\n", "/aggregator/extraOutputs/0"},
		{"good values", "agent:\n  buffer:\n    maxBytes: 512MiB\n  hostPort:\n    enabled: true\naggregator:\n  replicas: 3\n  persistence:\n    size: 100Gi\n    storageClass: fast\n  resources:\n    requests:\n      cpu: 1.5\n", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, err := runHelm(t, "template", "logship", chartDir, "--namespace", "logship", "-f", writeValues(t, c.values))
			if c.path == "" {
				if err != nil {
					t.Fatalf("good values refused: %v\n%s", err, out)
				}
				return
			}
			if err == nil {
				t.Fatalf("values accepted, want a schema error at %s:\n%s", c.path, c.values)
			}
			if !strings.Contains(out, "values don't meet the specifications of the schema") || !strings.Contains(out, c.path) {
				t.Fatalf("want a schema error naming %s, got:\n%s", c.path, out)
			}
		})
	}
}

// TestHelmAgentOnlyNeedsAggregators: without the chart's aggregators the
// agents must be told where to ship.
func TestHelmAgentOnlyNeedsAggregators(t *testing.T) {
	out, err := runHelm(t, "template", "logship", chartDir, "--set", "aggregator.enabled=false")
	if err == nil || !strings.Contains(out, "agent.aggregators must name the aggregators") {
		t.Fatalf("want a failure naming agent.aggregators, got %v:\n%s", err, out)
	}
	out, err = runHelm(t, "template", "logship", chartDir, "--set", "aggregator.enabled=false",
		"--set", "agent.aggregators={a.example:24224,b.example:24224}")
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	cfg := configMapData(t, []byte(out), "logship-agent", "agent.yaml")
	if !strings.Contains(cfg, "servers:\n      - \"a.example:24224\"\n      - \"b.example:24224\"\n") || strings.Contains(cfg, "AGGREGATORS") {
		t.Fatalf("agent config does not list the given aggregators:\n%s", cfg)
	}
}

// TestPlainManifestsUpToDate renders the chart as `make manifests` does and
// fails when deploy/kubernetes/logship.yaml differs.
func TestPlainManifestsUpToDate(t *testing.T) {
	h := helmBin(t)
	cmd := exec.Command("bash", "kubernetes/render.sh")
	cmd.Env = append(os.Environ(), "HELM="+h)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	got, err := cmd.Output()
	if err != nil {
		t.Fatalf("render.sh: %v\n%s", err, errb.String())
	}
	want, err := os.ReadFile(plainManifests)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		for i := 0; i < len(gl) || i < len(wl); i++ {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Fatalf("deploy/%s is stale (run `make manifests`): line %d is %q, the chart renders %q", plainManifests, i+1, w, g)
			}
		}
	}
}

// The filter block agreed with the kubernetes filter (plugins/filter/
// kubernetes) and its e2e test, which loads this ConfigMap.
const kubernetesFilter = `
filters:
  - type: kubernetes
    name: metadata
    match: "kube.**"
    # Pod metadata from the kubelet on this node (no load on the API
    # server); file-name metadata alone when it does not answer.
    source: kubelet
    kubelet_url: ${KUBELET_URL:-https://127.0.0.1:10250}
`

// TestPlainManifestConfigs checks the configs in the committed manifests
// (no helm needed): the agent's holds the agreed pipeline, and both load.
func TestPlainManifestConfigs(t *testing.T) {
	b, err := os.ReadFile(plainManifests)
	if err != nil {
		t.Fatal(err)
	}
	agentCfg := configMapData(t, b, "logship-agent", "agent.yaml")
	for _, want := range []string{
		"  data_dir: ${LOGSHIP_DATA_DIR:-/var/lib/logship}\n",
		"  - type: tail\n", "    tag: kube.*\n", "    paths: [/var/log/containers/*.log]\n",
		"    format: cri\n", "    path_key: file\n",
		"  - type: forward\n    name: apps\n    listen: 0.0.0.0:24224\n",
		"    servers:\n      - ${AGGREGATORS:-logship-aggregator.logship.svc.cluster.local:24224}\n",
		"    shared_key: ${LOGSHIP_SHARED_KEY}\n",
	} {
		if !strings.Contains(agentCfg, want) {
			t.Errorf("agent.yaml lacks %q", want)
		}
	}
	if !strings.Contains(agentCfg, kubernetesFilter) {
		t.Errorf("agent.yaml lacks the agreed kubernetes filter block:\n%s", kubernetesFilter)
	}

	dir := t.TempDir()
	t.Setenv("LOGSHIP_SHARED_KEY", "test-key")
	t.Setenv("LOGSHIP_DATA_DIR", dir)
	c := loadConfig(t, configMapData(t, b, "logship-aggregator", "aggregator.yaml"), aggregator.Role)
	if c.Service.DataDir != dir {
		t.Errorf("aggregator data_dir %q, want LOGSHIP_DATA_DIR %q", c.Service.DataDir, dir)
	}
	c = loadConfig(t, agentCfg, agent.Role)
	if c.Service.DataDir != dir || len(c.Filters) != 1 || len(c.Inputs) != 2 || len(c.Outputs) != 1 {
		t.Errorf("agent config: data_dir %q, %d inputs, %d filters, %d outputs; want LOGSHIP_DATA_DIR, 2, 1, 1",
			c.Service.DataDir, len(c.Inputs), len(c.Filters), len(c.Outputs))
	}
}

// TestHelmMetadataOptions: the chart's kubernetes filter options render
// into a config the filter accepts.
func TestHelmMetadataOptions(t *testing.T) {
	out, err := runHelm(t, "template", "logship", chartDir, "--namespace", "logship",
		"--set", "agent.metadata.source=api_server", "--set", "agent.metadata.kubeletInsecureSkipVerify=true")
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	cfg := configMapData(t, []byte(out), "logship-agent", "agent.yaml")
	for _, want := range []string{"\n    source: api_server\n", "\n    tls:\n      insecure_skip_verify: true\n"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("agent.yaml lacks %q", want)
		}
	}
	t.Setenv("LOGSHIP_SHARED_KEY", "test-key")
	t.Setenv("LOGSHIP_DATA_DIR", t.TempDir())
	loadConfig(t, cfg, agent.Role)
}

// loadConfig loads a config text as `logship validate` does.
func loadConfig(t *testing.T, text string, role conf.Role) *conf.Config {
	t.Helper()
	p := filepath.Join(t.TempDir(), role.Name+".yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := conf.Load(p, role, all.Registry())
	if err != nil {
		t.Fatalf("%s config: %v", role.Name, err)
	}
	return c
}

// configMapData returns data[key] of the ConfigMap name in a multi-document
// YAML stream.
func configMapData(t *testing.T, stream []byte, name, key string) string {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(stream))
	for {
		var obj struct {
			Kind     string
			Metadata struct{ Name string }
			Data     map[string]string
		}
		err := dec.Decode(&obj)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("decoding manifests: %v", err)
		}
		if obj.Kind == "ConfigMap" && obj.Metadata.Name == name {
			v, ok := obj.Data[key]
			if !ok {
				t.Fatalf("ConfigMap %s has no key %s", name, key)
			}
			return v
		}
	}
	t.Fatalf("no ConfigMap %s", name)
	return ""
}
