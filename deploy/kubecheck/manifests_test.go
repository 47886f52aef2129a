package kubecheck

import (
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// logshipConfig is the part of a logship config these checks read.
type logshipConfig struct {
	Service struct {
		DataDir         string `json:"data_dir"`
		HTTPListen      string `json:"http_listen"`
		ShutdownTimeout string `json:"shutdown_timeout"`
		MemoryLimit     string `json:"memory_limit"`
	} `json:"service"`
	Inputs  []map[string]any `json:"inputs"`
	Filters []map[string]any `json:"filters"`
	Outputs []map[string]any `json:"outputs"`
}

func config(t *testing.T, o *objects, cm, key string) logshipConfig {
	t.Helper()
	m := mustGet(t, o.configMaps, "ConfigMap", cm)
	text, ok := m.Data[key]
	if !ok {
		t.Fatalf("ConfigMap %s has no key %s", cm, key)
	}
	var c logshipConfig
	if err := yaml.Unmarshal([]byte(text), &c); err != nil {
		t.Fatalf("ConfigMap %s: %s: %v", cm, key, err)
	}
	return c
}

func plugin(t *testing.T, list []map[string]any, typ, name string) map[string]any {
	t.Helper()
	for _, p := range list {
		if p["type"] == typ && p["name"] == name {
			return p
		}
	}
	t.Fatalf("no %s plugin named %s in %v", typ, name, list)
	return nil
}

func listenPort(t *testing.T, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	return int32(n)
}

// logshipSize parses the sizes these configs use (a count, KiB, MiB, GiB).
func logshipSize(t *testing.T, s string) int64 {
	t.Helper()
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("size %q: %v", s, err)
	}
	return n * mult
}

// checkProbes: liveness on /healthz and readiness on /readyz, both on the
// container port of the config's http_listen.
func checkProbes(t *testing.T, what string, c corev1.Container, cfg logshipConfig) {
	t.Helper()
	http := listenPort(t, cfg.Service.HTTPListen)
	if !strings.HasPrefix(cfg.Service.HTTPListen, "0.0.0.0:") {
		t.Errorf("%s: http_listen %q is not reachable by the kubelet's probes", what, cfg.Service.HTTPListen)
	}
	for _, p := range []struct {
		probe *corev1.Probe
		path  string
	}{{c.LivenessProbe, "/healthz"}, {c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: no HTTP probe for %s", what, p.path)
			continue
		}
		if p.probe.HTTPGet.Path != p.path || port(c, p.probe.HTTPGet.Port.StrVal) != http {
			t.Errorf("%s: probe %s on port %s (%d), want %s on %d (http_listen)", what,
				p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), port(c, p.probe.HTTPGet.Port.StrVal), p.path, http)
		}
	}
}

// checkStop: the pod's grace period leaves room for shutdown_timeout.
func checkStop(t *testing.T, what string, spec corev1.PodSpec, cfg logshipConfig) {
	t.Helper()
	d, err := time.ParseDuration(cfg.Service.ShutdownTimeout)
	if err != nil {
		t.Fatalf("%s: shutdown_timeout %q: %v", what, cfg.Service.ShutdownTimeout, err)
	}
	var grace int64
	if spec.TerminationGracePeriodSeconds != nil {
		grace = *spec.TerminationGracePeriodSeconds
	}
	if time.Duration(grace)*time.Second <= d {
		t.Errorf("%s: terminationGracePeriodSeconds %d not above shutdown_timeout %s", what, grace, d)
	}
}

// checkMemory: requests and a memory limit, and the config's
// service.memory_limit (GOMEMLIMIT) below that limit.
func checkMemory(t *testing.T, what string, c corev1.Container, cfg logshipConfig) {
	t.Helper()
	limit, ok := c.Resources.Limits[corev1.ResourceMemory]
	if !ok || c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		t.Fatalf("%s: resources %s: want cpu and memory requests and a memory limit", what, describe(c.Resources))
	}
	if gomem := logshipSize(t, cfg.Service.MemoryLimit); gomem <= 0 || gomem >= limit.Value() {
		t.Errorf("%s: service.memory_limit %s is not below the memory limit %s", what, cfg.Service.MemoryLimit, limit.String())
	}
}

func checkHardened(t *testing.T, what string, sc *corev1.SecurityContext) {
	t.Helper()
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		t.Errorf("%s: securityContext %s: want readOnlyRootFilesystem, no privilege escalation, capabilities drop [ALL]", what, describe(sc))
	}
}

type agentWant struct {
	prefix, namespace string
	hostPort          int32    // 0: none
	servers           []string // the forward output's servers
}

// checkAgent asserts what docs/install.md says of the agent's DaemonSet.
func checkAgent(t *testing.T, o *objects, w agentWant) {
	t.Helper()
	name := w.prefix + "-agent"
	ds := mustGet(t, o.daemonSets, "DaemonSet", name)
	spec := ds.Spec.Template.Spec
	c := container(t, spec, "agent")
	cfg := config(t, o, name, "agent.yaml")
	what := "DaemonSet " + name

	if !slices.Equal(c.Args, []string{"agent", "-c", "/etc/logship/agent.yaml"}) {
		t.Errorf("%s: args %v", what, c.Args)
	}
	if m := mount(c, "config"); m == nil || m.MountPath != "/etc/logship" || volume(spec, "config").ConfigMap.Name != name {
		t.Errorf("%s: the ConfigMap %s is not mounted at /etc/logship", what, name)
	}
	// hostPath /var/log read-only; the buffer on the node, created if missing.
	v, m := volume(spec, "varlog"), mount(c, "varlog")
	if v == nil || v.HostPath == nil || v.HostPath.Path != "/var/log" || m == nil || m.MountPath != "/var/log" || !m.ReadOnly {
		t.Errorf("%s: want hostPath /var/log mounted read-only at /var/log: %s %s", what, describe(v), describe(m))
	}
	v, m = volume(spec, "buffer"), mount(c, "buffer")
	if v == nil || v.HostPath == nil || v.HostPath.Path != "/var/lib/logship" || v.HostPath.Type == nil ||
		*v.HostPath.Type != corev1.HostPathDirectoryOrCreate || m == nil || m.MountPath != "/var/lib/logship" || m.ReadOnly {
		t.Errorf("%s: want hostPath /var/lib/logship (DirectoryOrCreate) mounted writable at /var/lib/logship: %s %s", what, describe(v), describe(m))
	}
	if cfg.Service.DataDir != "${LOGSHIP_DATA_DIR:-/var/lib/logship}" {
		t.Errorf("%s: data_dir %q is not the buffer's mount", what, cfg.Service.DataDir)
	}
	// The downward API and the kubelet's address from it.
	_, nodeName := env(c, "NODE_NAME")
	iIP, nodeIP := env(c, "NODE_IP")
	iURL, url := env(c, "KUBELET_URL")
	if nodeName == nil || nodeName.ValueFrom == nil || nodeName.ValueFrom.FieldRef == nil || nodeName.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("%s: NODE_NAME is not spec.nodeName: %s", what, describe(nodeName))
	}
	if nodeIP == nil || nodeIP.ValueFrom == nil || nodeIP.ValueFrom.FieldRef == nil || nodeIP.ValueFrom.FieldRef.FieldPath != "status.hostIP" {
		t.Errorf("%s: NODE_IP is not status.hostIP: %s", what, describe(nodeIP))
	}
	if url == nil || url.Value != "https://$(NODE_IP):10250" || iURL < iIP {
		t.Errorf("%s: KUBELET_URL %s, want https://$(NODE_IP):10250 after NODE_IP", what, describe(url))
	}
	// Every node: one toleration with operator Exists and no key tolerates
	// every taint.
	everything := false
	for _, tol := range spec.Tolerations {
		everything = everything || (tol.Operator == corev1.TolerationOpExists && tol.Key == "" && tol.Effect == "")
	}
	if !everything {
		t.Errorf("%s: tolerations %s do not tolerate every taint", what, describe(spec.Tolerations))
	}
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType || ds.Spec.UpdateStrategy.RollingUpdate == nil ||
		ds.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable == nil {
		t.Errorf("%s: updateStrategy %s, want RollingUpdate with maxUnavailable", what, describe(ds.Spec.UpdateStrategy))
	}
	checkProbes(t, what, c, cfg)
	checkStop(t, what, spec, cfg)
	checkMemory(t, what, c, cfg)
	checkHardened(t, what, c.SecurityContext)
	if sc := c.SecurityContext; sc.RunAsUser == nil || *sc.RunAsUser != 0 || (sc.Privileged != nil && *sc.Privileged) {
		t.Errorf("%s: want runAsUser 0 (root-only logs) and not privileged: %s", what, describe(sc))
	}

	// The forward port: the config's listen port, a hostPort only when asked.
	fwd := plugin(t, cfg.Inputs, "forward", "apps")
	fp := listenPort(t, fwd["listen"].(string))
	var hostPort int32 = -1
	for _, p := range c.Ports {
		if p.Name == "forward" && p.ContainerPort == fp {
			hostPort = p.HostPort
		}
	}
	if hostPort != w.hostPort {
		t.Errorf("%s: forward port %d: hostPort %d, want %d", what, fp, hostPort, w.hostPort)
	}
	// The node-local Service for fluent-logger pods.
	svc := mustGet(t, o.services, "Service", name)
	if svc.Spec.InternalTrafficPolicy == nil || *svc.Spec.InternalTrafficPolicy != corev1.ServiceInternalTrafficPolicyLocal ||
		len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != fp || port(c, svc.Spec.Ports[0].TargetPort.StrVal) != fp ||
		!labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("Service %s: want internalTrafficPolicy Local on port %d of the agents: %s", name, fp, describe(svc.Spec))
	}

	// The pipeline agreed with the kubernetes filter and its e2e test.
	tail := plugin(t, cfg.Inputs, "tail", "containers")
	if tail["tag"] != "kube.*" || tail["format"] != "cri" || tail["path_key"] != "file" ||
		describe(tail["paths"]) != describe([]any{"/var/log/containers/*.log"}) {
		t.Errorf("%s: tail input %v", what, tail)
	}
	f := plugin(t, cfg.Filters, "kubernetes", "metadata")
	if f["match"] != "kube.**" || f["source"] != "kubelet" || f["kubelet_url"] != "${KUBELET_URL:-https://127.0.0.1:10250}" {
		t.Errorf("%s: kubernetes filter %v", what, f)
	}
	out := plugin(t, cfg.Outputs, "forward", "aggregators")
	if describe(out["servers"]) != describe(toAny(w.servers)) || out["shared_key"] != "${LOGSHIP_SHARED_KEY}" || out["require_ack"] != true {
		t.Errorf("%s: forward output %v, want servers %v with the shared key and acks", what, out, w.servers)
	}

	// RBAC: the agent's ServiceAccount bound to exactly what metadata needs.
	if spec.ServiceAccountName != name || (spec.AutomountServiceAccountToken != nil && !*spec.AutomountServiceAccountToken) {
		t.Errorf("%s: serviceAccountName %q (token mounted: %v), want %s with its token", what, spec.ServiceAccountName, spec.AutomountServiceAccountToken, name)
	}
	// Cluster-scoped objects carry the namespace in their name: two
	// releases of one name in two namespaces must not share them.
	roleName := w.namespace + "-" + name
	role := mustGet(t, o.clusterRoles, "ClusterRole", roleName)
	wantRules := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"nodes/proxy"}, Verbs: []string{"get"}},
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}},
	}
	if describe(role.Rules) != describe(wantRules) {
		t.Errorf("ClusterRole %s: rules %s, want exactly %s", roleName, describe(role.Rules), describe(wantRules))
	}
	b := mustGet(t, o.clusterRoleBindings, "ClusterRoleBinding", roleName)
	if b.RoleRef.Name != roleName || len(b.Subjects) != 1 || b.Subjects[0].Kind != "ServiceAccount" ||
		b.Subjects[0].Name != name || b.Subjects[0].Namespace != w.namespace {
		t.Errorf("ClusterRoleBinding %s: %s", roleName, describe(b))
	}
}

func toAny(s []string) []any {
	a := make([]any, len(s))
	for i, x := range s {
		a[i] = x
	}
	return a
}

type aggregatorWant struct {
	prefix, namespace string
	replicas          int32
	persistence       bool
}

// checkAggregator asserts what docs/install.md says of the aggregator's
// StatefulSet, Services and PodDisruptionBudget.
func checkAggregator(t *testing.T, o *objects, w aggregatorWant) {
	t.Helper()
	name := w.prefix + "-aggregator"
	sts := mustGet(t, o.statefulSets, "StatefulSet", name)
	spec := sts.Spec.Template.Spec
	c := container(t, spec, "aggregator")
	cfg := config(t, o, name, "aggregator.yaml")
	what := "StatefulSet " + name

	if !slices.Equal(c.Args, []string{"aggregator", "-c", "/etc/logship/aggregator.yaml"}) {
		t.Errorf("%s: args %v", what, c.Args)
	}
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != w.replicas {
		t.Errorf("%s: replicas %v, want %d", what, sts.Spec.Replicas, w.replicas)
	}
	// The buffer on a PersistentVolumeClaim per pod.
	m := mount(c, "data")
	if m == nil || m.MountPath != "/var/lib/logship" || cfg.Service.DataDir != "${LOGSHIP_DATA_DIR:-/var/lib/logship}" {
		t.Errorf("%s: the data volume is not the data_dir: %s, data_dir %q", what, describe(m), cfg.Service.DataDir)
	}
	if w.persistence {
		if len(sts.Spec.VolumeClaimTemplates) != 1 {
			t.Fatalf("%s: %d volumeClaimTemplates, want 1", what, len(sts.Spec.VolumeClaimTemplates))
		}
		pvc := sts.Spec.VolumeClaimTemplates[0]
		size := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
		buf := resource.NewQuantity(8<<30, resource.BinarySI)
		if pvc.Name != "data" || !slices.Equal(pvc.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) || size.Cmp(*buf) <= 0 {
			t.Errorf("%s: volumeClaimTemplate %s, want data, ReadWriteOnce, larger than the 8GiB buffer", what, describe(pvc))
		}
	} else if v := volume(spec, "data"); len(sts.Spec.VolumeClaimTemplates) != 0 || v == nil || v.EmptyDir == nil {
		t.Errorf("%s: persistence off, want an emptyDir and no volumeClaimTemplates", what)
	}
	// Non-root, hardened, no API access.
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser != 65532 ||
		psc.FSGroup == nil || *psc.FSGroup != 65532 {
		t.Errorf("%s: pod securityContext %s, want runAsNonRoot, runAsUser and fsGroup 65532", what, describe(psc))
	}
	checkHardened(t, what, c.SecurityContext)
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("%s: the ServiceAccount token is mounted", what)
	}
	sa := mustGet(t, o.serviceAccounts, "ServiceAccount", name)
	if spec.ServiceAccountName != name || sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
		t.Errorf("%s: want its own ServiceAccount %s with automountServiceAccountToken false", what, name)
	}
	for _, b := range o.clusterRoleBindings {
		for _, s := range b.Subjects {
			if s.Name == name {
				t.Errorf("ClusterRoleBinding %s grants the aggregator's ServiceAccount a role", b.Name)
			}
		}
	}
	checkProbes(t, what, c, cfg)
	checkStop(t, what, spec, cfg)
	checkMemory(t, what, c, cfg)
	// Spread over nodes.
	aa := spec.Affinity
	if aa == nil || aa.PodAntiAffinity == nil || len(aa.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 {
		t.Fatalf("%s: want a preferred podAntiAffinity", what)
	}
	term := aa.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm
	if term.TopologyKey != "kubernetes.io/hostname" || term.LabelSelector == nil ||
		!labels.SelectorFromSet(term.LabelSelector.MatchLabels).Matches(labels.Set(sts.Spec.Template.Labels)) {
		t.Errorf("%s: podAntiAffinity term %s does not spread its own pods over hostnames", what, describe(term))
	}

	// The headless Service the agents resolve: the StatefulSet's serviceName,
	// no cluster IP, ready pods only, on the forward input's port.
	fwd := plugin(t, cfg.Inputs, "forward", "agents")
	fp := listenPort(t, fwd["listen"].(string))
	if fwd["shared_key"] != "${LOGSHIP_SHARED_KEY}" || fwd["dedup"] != true {
		t.Errorf("%s: forward input %v, want the shared key and dedup", what, fwd)
	}
	h := mustGet(t, o.services, "Service", sts.Spec.ServiceName)
	if sts.Spec.ServiceName != name || h.Spec.ClusterIP != corev1.ClusterIPNone || h.Spec.PublishNotReadyAddresses ||
		len(h.Spec.Ports) != 1 || h.Spec.Ports[0].Port != fp || port(c, h.Spec.Ports[0].TargetPort.StrVal) != fp ||
		!labels.SelectorFromSet(h.Spec.Selector).Matches(labels.Set(sts.Spec.Template.Labels)) {
		t.Errorf("Service %s: want headless (clusterIP None), ready pods only, port %d of the aggregators: %s", sts.Spec.ServiceName, fp, describe(h.Spec))
	}
	// The PodDisruptionBudget: one aggregator down at a time.
	pdb := mustGet(t, o.pdbs, "PodDisruptionBudget", name)
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.MinAvailable != nil ||
		!labels.SelectorFromSet(pdb.Spec.Selector.MatchLabels).Matches(labels.Set(sts.Spec.Template.Labels)) {
		t.Errorf("PodDisruptionBudget %s: %s, want maxUnavailable 1 over the aggregators", name, describe(pdb.Spec))
	}
	// The file output writes under the data volume.
	file := plugin(t, cfg.Outputs, "file", "files")
	if p, _ := file["path"].(string); !strings.HasPrefix(p, cfg.Service.DataDir+"/") || !strings.Contains(p, "{tag}") {
		t.Errorf("%s: file output path %q is not a file per tag under data_dir", what, p)
	}
}

var aggregatorsRef = regexp.MustCompile(`^\$\{AGGREGATORS:-([^}]*)\}$`)

// checkAgentsReachAggregators: the name in the agent config's default is
// NAME.NAMESPACE.svc.cluster.local:PORT of the rendered headless Service.
func checkAgentsReachAggregators(t *testing.T, o *objects, prefix string) {
	t.Helper()
	cfg := config(t, o, prefix+"-agent", "agent.yaml")
	servers, _ := plugin(t, cfg.Outputs, "forward", "aggregators")["servers"].([]any)
	if len(servers) != 1 {
		t.Fatalf("agent forward output servers %v, want one", servers)
	}
	m := aggregatorsRef.FindStringSubmatch(servers[0].(string))
	if m == nil {
		t.Fatalf("agent server %q is not ${AGGREGATORS:-HOST:PORT}", servers[0])
	}
	host, p, err := net.SplitHostPort(m[1])
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.SplitN(host, ".", 3)
	if len(parts) != 3 || parts[2] != "svc.cluster.local" {
		t.Fatalf("agent server host %q is not NAME.NAMESPACE.svc.cluster.local", host)
	}
	svc := mustGet(t, o.services, "Service", parts[0])
	sts := mustGet(t, o.statefulSets, "StatefulSet", prefix+"-aggregator")
	if svc.Namespace != parts[1] || svc.Spec.ClusterIP != corev1.ClusterIPNone || sts.Spec.ServiceName != svc.Name ||
		strconv.Itoa(int(svc.Spec.Ports[0].Port)) != p {
		t.Errorf("agent server %s does not name the aggregators' headless Service %s/%s port %d", m[1], svc.Namespace, svc.Name, svc.Spec.Ports[0].Port)
	}
}

// chartImage is the image the chart runs by default, from Chart.yaml.
func chartImage(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(chartDir + "/Chart.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ch struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(b, &ch); err != nil {
		t.Fatal(err)
	}
	return "ghcr.io/logship/logship:" + ch.AppVersion
}

// TestPlainManifests checks deploy/kubernetes/logship.yaml, the chart with
// its default values, object by object (no helm needed).
func TestPlainManifests(t *testing.T) {
	b, err := os.ReadFile(plainManifests)
	if err != nil {
		t.Fatal(err)
	}
	o := decode(t, b)
	// Namespace, 2 ConfigMaps, 3 Services, 2 ServiceAccounts, DaemonSet,
	// StatefulSet, PDB, ClusterRole, ClusterRoleBinding; no Secret (users
	// create logship-shared-key).
	if o.count != 13 || len(o.secrets) != 0 || len(o.namespaces) != 1 || o.namespaces["logship"] == nil {
		t.Errorf("%d objects (%d Secrets, namespaces %v), want 13, no Secret, the Namespace logship", o.count, len(o.secrets), o.namespaces)
	}
	checkGeneric(t, o, "logship", "logship-shared-key")
	checkAgent(t, o, agentWant{prefix: "logship", namespace: "logship",
		servers: []string{"${AGGREGATORS:-logship-aggregator.logship.svc.cluster.local:24224}"}})
	checkAggregator(t, o, aggregatorWant{prefix: "logship", namespace: "logship", replicas: 2, persistence: true})
	checkAgentsReachAggregators(t, o, "logship")
	img := chartImage(t)
	for _, spec := range []corev1.PodSpec{o.daemonSets["logship-agent"].Spec.Template.Spec, o.statefulSets["logship-aggregator"].Spec.Template.Spec} {
		if spec.Containers[0].Image != img {
			t.Errorf("image %s, want %s (what deploy/docker/Dockerfile is tagged)", spec.Containers[0].Image, img)
		}
	}
	if ns := o.namespaces["logship"]; ns != nil && ns.Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
		t.Errorf("Namespace logship: the agent's hostPath volumes need pod-security enforce=privileged")
	}
}

// TestChartRenders renders the chart with other values and checks each
// render as the plain manifests are checked.
func TestChartRenders(t *testing.T) {
	helm(t)
	t.Run("generated shared key", func(t *testing.T) {
		o := decode(t, render(t, "logship", "logship"))
		checkGeneric(t, o, "logship", "")
		s := mustGet(t, o.secrets, "Secret", "logship-shared-key")
		if len(s.Data["shared-key"]) != 40 {
			t.Errorf("Secret logship-shared-key: key of %d bytes, want a random 40", len(s.Data["shared-key"]))
		}
		checkAgent(t, o, agentWant{prefix: "logship", namespace: "logship",
			servers: []string{"${AGGREGATORS:-logship-aggregator.logship.svc.cluster.local:24224}"}})
		checkAggregator(t, o, aggregatorWant{prefix: "logship", namespace: "logship", replicas: 2, persistence: true})
	})
	t.Run("another release and namespace", func(t *testing.T) {
		o := decode(t, render(t, "obs", "monitoring", "sharedKey.value=s3cret"))
		checkGeneric(t, o, "monitoring", "")
		if got := string(mustGet(t, o.secrets, "Secret", "obs-logship-shared-key").Data["shared-key"]); got != "s3cret" {
			t.Errorf("shared key %q, want the value given", got)
		}
		checkAgent(t, o, agentWant{prefix: "obs-logship", namespace: "monitoring",
			servers: []string{"${AGGREGATORS:-obs-logship-aggregator.monitoring.svc.cluster.local:24224}"}})
		checkAggregator(t, o, aggregatorWant{prefix: "obs-logship", namespace: "monitoring", replicas: 2, persistence: true})
		checkAgentsReachAggregators(t, o, "obs-logship")
	})
	t.Run("agent only", func(t *testing.T) {
		o := decode(t, render(t, "logship", "logship", "aggregator.enabled=false",
			"agent.aggregators={agg-0.example:24224,agg-1.example:24224}", "sharedKey.existingSecret=mine"))
		checkGeneric(t, o, "logship", "mine")
		if len(o.statefulSets)+len(o.pdbs)+len(o.secrets) != 0 || o.services["logship-aggregator"] != nil ||
			o.configMaps["logship-aggregator"] != nil || o.serviceAccounts["logship-aggregator"] != nil {
			t.Errorf("aggregator objects rendered with aggregator.enabled=false")
		}
		checkAgent(t, o, agentWant{prefix: "logship", namespace: "logship",
			servers: []string{"agg-0.example:24224", "agg-1.example:24224"}})
	})
	t.Run("aggregator only", func(t *testing.T) {
		o := decode(t, render(t, "logship", "logship", "agent.enabled=false", "aggregator.replicas=3"))
		checkGeneric(t, o, "logship", "")
		if len(o.daemonSets)+len(o.clusterRoles)+len(o.clusterRoleBindings) != 0 ||
			o.configMaps["logship-agent"] != nil || o.serviceAccounts["logship-agent"] != nil || o.services["logship-agent"] != nil {
			t.Errorf("agent objects rendered with agent.enabled=false")
		}
		checkAggregator(t, o, aggregatorWant{prefix: "logship", namespace: "logship", replicas: 3, persistence: true})
	})
	t.Run("host port, no persistence", func(t *testing.T) {
		o := decode(t, render(t, "logship", "logship", "agent.hostPort.enabled=true",
			"aggregator.persistence.enabled=false", "agent.priorityClassName=system-node-critical"))
		checkGeneric(t, o, "logship", "")
		checkAgent(t, o, agentWant{prefix: "logship", namespace: "logship", hostPort: 24224,
			servers: []string{"${AGGREGATORS:-logship-aggregator.logship.svc.cluster.local:24224}"}})
		checkAggregator(t, o, aggregatorWant{prefix: "logship", namespace: "logship", replicas: 2, persistence: false})
		if pc := o.daemonSets["logship-agent"].Spec.Template.Spec.PriorityClassName; pc != "system-node-critical" {
			t.Errorf("priorityClassName %q", pc)
		}
	})
}
