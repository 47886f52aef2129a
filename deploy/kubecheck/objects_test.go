package kubecheck

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

const (
	plainManifests = "../kubernetes/logship.yaml"
	chartDir       = "../helm/logship"
)

// objects is a rendered set of manifests, decoded into the API types.
type objects struct {
	namespaces          map[string]*corev1.Namespace
	configMaps          map[string]*corev1.ConfigMap
	secrets             map[string]*corev1.Secret
	services            map[string]*corev1.Service
	serviceAccounts     map[string]*corev1.ServiceAccount
	daemonSets          map[string]*appsv1.DaemonSet
	statefulSets        map[string]*appsv1.StatefulSet
	pdbs                map[string]*policyv1.PodDisruptionBudget
	clusterRoles        map[string]*rbacv1.ClusterRole
	clusterRoleBindings map[string]*rbacv1.ClusterRoleBinding
	count               int
}

// kinds maps each kind the chart may render to its apiVersion and a
// decoder into its type.
var kinds = map[string]struct {
	apiVersion string
	add        func(o *objects, doc []byte) (string, error)
}{
	"Namespace":           {"v1", decodeInto(func(o *objects) map[string]*corev1.Namespace { return o.namespaces })},
	"ConfigMap":           {"v1", decodeInto(func(o *objects) map[string]*corev1.ConfigMap { return o.configMaps })},
	"Secret":              {"v1", decodeInto(func(o *objects) map[string]*corev1.Secret { return o.secrets })},
	"Service":             {"v1", decodeInto(func(o *objects) map[string]*corev1.Service { return o.services })},
	"ServiceAccount":      {"v1", decodeInto(func(o *objects) map[string]*corev1.ServiceAccount { return o.serviceAccounts })},
	"DaemonSet":           {"apps/v1", decodeInto(func(o *objects) map[string]*appsv1.DaemonSet { return o.daemonSets })},
	"StatefulSet":         {"apps/v1", decodeInto(func(o *objects) map[string]*appsv1.StatefulSet { return o.statefulSets })},
	"PodDisruptionBudget": {"policy/v1", decodeInto(func(o *objects) map[string]*policyv1.PodDisruptionBudget { return o.pdbs })},
	"ClusterRole":         {"rbac.authorization.k8s.io/v1", decodeInto(func(o *objects) map[string]*rbacv1.ClusterRole { return o.clusterRoles })},
	"ClusterRoleBinding":  {"rbac.authorization.k8s.io/v1", decodeInto(func(o *objects) map[string]*rbacv1.ClusterRoleBinding { return o.clusterRoleBindings })},
}

// named is what every API object has: its metadata.
type named interface{ GetName() string }

// decodeInto decodes one document strictly into a new T (a field the type
// lacks, a duplicate key or a wrong type is an error) and files it by name.
func decodeInto[T any, P interface {
	*T
	named
}](m func(*objects) map[string]P) func(o *objects, doc []byte) (string, error) {
	return func(o *objects, doc []byte) (string, error) {
		p := P(new(T))
		if err := yaml.UnmarshalStrict(doc, p); err != nil {
			return "", err
		}
		name := p.GetName()
		if _, dup := m(o)[name]; dup {
			return name, errors.New("rendered twice")
		}
		m(o)[name] = p
		return name, nil
	}
}

// decode splits a multi-document stream and decodes every object strictly
// into its k8s.io/api type; an unknown kind or apiVersion fails the test.
func decode(t *testing.T, stream []byte) *objects {
	t.Helper()
	o := &objects{
		namespaces: map[string]*corev1.Namespace{}, configMaps: map[string]*corev1.ConfigMap{},
		secrets: map[string]*corev1.Secret{}, services: map[string]*corev1.Service{},
		serviceAccounts: map[string]*corev1.ServiceAccount{}, daemonSets: map[string]*appsv1.DaemonSet{},
		statefulSets: map[string]*appsv1.StatefulSet{}, pdbs: map[string]*policyv1.PodDisruptionBudget{},
		clusterRoles: map[string]*rbacv1.ClusterRole{}, clusterRoleBindings: map[string]*rbacv1.ClusterRoleBinding{},
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		if head.Kind == "" && head.APIVersion == "" {
			continue // comments only
		}
		k, ok := kinds[head.Kind]
		if !ok {
			t.Fatalf("document %d: kind %q is not one kubecheck knows; add its type to kinds", i, head.Kind)
		}
		if head.APIVersion != k.apiVersion {
			t.Errorf("%s: apiVersion %q, want %q", head.Kind, head.APIVersion, k.apiVersion)
		}
		name, err := k.add(o, doc)
		if err != nil {
			t.Fatalf("%s %s: %v", head.Kind, name, err)
		}
		o.count++
	}
	return o
}

// helm finds helm as deploy/helm_test.go does; the renders with other
// values are skipped without it.
func helm(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	if p, err := filepath.Abs("../../bin/tools/helm"); err == nil {
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

func render(t *testing.T, release, namespace string, set ...string) []byte {
	t.Helper()
	args := []string{"template", release, chartDir, "--namespace", namespace}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	cmd := exec.Command(helm(t), args...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out
}

// checkGeneric holds for every render: valid names and labels, selectors
// that select their pod templates, and references (ConfigMaps, Secrets,
// ServiceAccounts, named ports, volumes) that resolve within the set.
// existingSecret names a Secret the user creates outside the set.
func checkGeneric(t *testing.T, o *objects, namespace, existingSecret string) {
	t.Helper()
	checkMeta := func(kind, name, ns string, lbls map[string]string, namespaced bool) {
		for _, e := range validation.IsDNS1123Subdomain(name) {
			t.Errorf("%s %q: name: %s", kind, name, e)
		}
		if namespaced && ns != namespace {
			t.Errorf("%s %s: namespace %q, want %q", kind, name, ns, namespace)
		}
		if !namespaced && ns != "" {
			t.Errorf("%s %s is cluster-scoped but has namespace %q", kind, name, ns)
		}
		for k, v := range lbls {
			for _, e := range append(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)...) {
				t.Errorf("%s %s: label %s=%s: %s", kind, name, k, v, e)
			}
		}
	}
	for n, x := range o.namespaces {
		checkMeta("Namespace", n, x.Namespace, x.Labels, false)
	}
	for n, x := range o.configMaps {
		checkMeta("ConfigMap", n, x.Namespace, x.Labels, true)
	}
	for n, x := range o.secrets {
		checkMeta("Secret", n, x.Namespace, x.Labels, true)
	}
	for n, x := range o.serviceAccounts {
		checkMeta("ServiceAccount", n, x.Namespace, x.Labels, true)
	}
	for n, x := range o.pdbs {
		checkMeta("PodDisruptionBudget", n, x.Namespace, x.Labels, true)
	}
	for n, x := range o.clusterRoles {
		checkMeta("ClusterRole", n, x.Namespace, x.Labels, false)
	}
	for n, x := range o.clusterRoleBindings {
		checkMeta("ClusterRoleBinding", n, x.Namespace, x.Labels, false)
		if _, ok := o.clusterRoles[x.RoleRef.Name]; !ok || x.RoleRef.Kind != "ClusterRole" {
			t.Errorf("ClusterRoleBinding %s: roleRef %s %s is not rendered", n, x.RoleRef.Kind, x.RoleRef.Name)
		}
		for _, s := range x.Subjects {
			if _, ok := o.serviceAccounts[s.Name]; !ok || s.Kind != "ServiceAccount" || s.Namespace != namespace {
				t.Errorf("ClusterRoleBinding %s: subject %+v is not a rendered ServiceAccount", n, s)
			}
		}
	}

	// Every pod template: its labels, its selector, its references.
	type workload struct {
		kind, name string
		selector   map[string]string
		tmpl       corev1.PodTemplateSpec
	}
	var ws []workload
	for n, x := range o.daemonSets {
		checkMeta("DaemonSet", n, x.Namespace, x.Labels, true)
		ws = append(ws, workload{"DaemonSet", n, x.Spec.Selector.MatchLabels, x.Spec.Template})
	}
	for n, x := range o.statefulSets {
		checkMeta("StatefulSet", n, x.Namespace, x.Labels, true)
		ws = append(ws, workload{"StatefulSet", n, x.Spec.Selector.MatchLabels, x.Spec.Template})
	}
	for _, w := range ws {
		what := w.kind + " " + w.name
		if len(w.selector) == 0 || !labels.SelectorFromSet(w.selector).Matches(labels.Set(w.tmpl.Labels)) {
			t.Errorf("%s: selector %v does not select its pods %v", what, w.selector, w.tmpl.Labels)
		}
		for k, v := range w.tmpl.Labels {
			for _, e := range append(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)...) {
				t.Errorf("%s: pod label %s=%s: %s", what, k, v, e)
			}
		}
		spec := w.tmpl.Spec
		if _, ok := o.serviceAccounts[spec.ServiceAccountName]; !ok {
			t.Errorf("%s: serviceAccountName %q is not rendered", what, spec.ServiceAccountName)
		}
		vols := map[string]bool{}
		for _, v := range spec.Volumes {
			vols[v.Name] = true
			if v.ConfigMap != nil {
				if _, ok := o.configMaps[v.ConfigMap.Name]; !ok {
					t.Errorf("%s: volume %s: ConfigMap %q is not rendered", what, v.Name, v.ConfigMap.Name)
				}
			}
		}
		if sts, ok := o.statefulSets[w.name]; ok && w.kind == "StatefulSet" {
			for _, c := range sts.Spec.VolumeClaimTemplates {
				if vols[c.Name] {
					t.Errorf("%s: %s is both a volume and a volumeClaimTemplate", what, c.Name)
				}
				vols[c.Name] = true
			}
		}
		for _, c := range spec.Containers {
			ports := map[string]int32{}
			for _, p := range c.Ports {
				for _, e := range validation.IsValidPortName(p.Name) {
					t.Errorf("%s: port name %q: %s", what, p.Name, e)
				}
				ports[p.Name] = p.ContainerPort
			}
			for _, m := range c.VolumeMounts {
				if !vols[m.Name] {
					t.Errorf("%s: mount %s of a volume that does not exist", what, m.Name)
				}
			}
			for _, pr := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe} {
				if pr == nil || pr.HTTPGet == nil {
					t.Errorf("%s: container %s lacks an HTTP probe", what, c.Name)
					continue
				}
				if _, ok := ports[pr.HTTPGet.Port.StrVal]; !ok {
					t.Errorf("%s: probe port %q is no container port", what, pr.HTTPGet.Port.String())
				}
			}
			defined := map[string]bool{}
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					ref := e.ValueFrom.SecretKeyRef
					if s, ok := o.secrets[ref.Name]; ok {
						if _, ok := s.Data[ref.Key]; !ok {
							t.Errorf("%s: env %s: Secret %s has no key %s", what, e.Name, ref.Name, ref.Key)
						}
					} else if ref.Name != existingSecret {
						t.Errorf("%s: env %s: Secret %q is neither rendered nor the existing one", what, e.Name, ref.Name)
					}
				}
				// $(VAR) expands only from variables defined earlier.
				for _, ref := range dollarRefs(e.Value) {
					if !defined[ref] {
						t.Errorf("%s: env %s refers to $(%s), not defined before it", what, e.Name, ref)
					}
				}
				defined[e.Name] = true
			}
		}
	}

	// Every Service selects a workload's pods and targets its named ports.
	for n, s := range o.services {
		checkMeta("Service", n, s.Namespace, s.Labels, true)
		var pods *corev1.PodTemplateSpec
		for i := range ws {
			if labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(ws[i].tmpl.Labels)) {
				pods = &ws[i].tmpl
			}
		}
		if len(s.Spec.Selector) == 0 || pods == nil {
			t.Errorf("Service %s: selector %v selects no rendered pods", n, s.Spec.Selector)
			continue
		}
		for _, p := range s.Spec.Ports {
			if port(pods.Spec.Containers[0], p.TargetPort.StrVal) == 0 {
				t.Errorf("Service %s: targetPort %q is no container port", n, p.TargetPort.String())
			}
		}
	}
	for n, p := range o.pdbs {
		sel := p.Spec.Selector.MatchLabels
		hit := false
		for _, w := range ws {
			hit = hit || labels.SelectorFromSet(sel).Matches(labels.Set(w.tmpl.Labels))
		}
		if len(sel) == 0 || !hit {
			t.Errorf("PodDisruptionBudget %s: selector %v selects no rendered pods", n, sel)
		}
	}
}

// dollarRefs returns the names in Kubernetes $(VAR) references.
func dollarRefs(s string) []string {
	var refs []string
	for {
		i := strings.Index(s, "$(")
		if i < 0 {
			return refs
		}
		j := strings.IndexByte(s[i:], ')')
		if j < 0 {
			return refs
		}
		refs = append(refs, s[i+2:i+j])
		s = s[i+j:]
	}
}

// port returns the container port of that name, 0 without one.
func port(c corev1.Container, name string) int32 {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

func container(t *testing.T, spec corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %s", name)
	return corev1.Container{}
}

func env(c corev1.Container, name string) (int, *corev1.EnvVar) {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return i, &c.Env[i]
		}
	}
	return -1, nil
}

func volume(spec corev1.PodSpec, name string) *corev1.Volume {
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == name {
			return &spec.Volumes[i]
		}
	}
	return nil
}

func mount(c corev1.Container, name string) *corev1.VolumeMount {
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].Name == name {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

func mustGet[T any](t *testing.T, m map[string]*T, kind, name string) *T {
	t.Helper()
	x, ok := m[name]
	if !ok {
		t.Fatalf("no %s %s rendered", kind, name)
	}
	return x
}

func describe(v any) string { return fmt.Sprintf("%+v", v) }
