package kubernetes

import (
	"strings"
	"testing"
)

const (
	id64  = "c842e7e9efb61e3cc052505d39c50d0e0ae82d6b04405ac03322df3549cdf6e0"
	uidV4 = "6f0e9d4c-1a2b-4c3d-8e9f-0a1b2c3d4e5f"
)

func TestParsePath(t *testing.T) {
	for _, tc := range []struct {
		path string
		want *fileMeta // nil: not a container log file
	}{
		{"/var/log/containers/web-7d4b9c8f5-x2x9q_default_nginx-" + id64 + ".log",
			&fileMeta{Namespace: "default", Pod: "web-7d4b9c8f5-x2x9q", Container: "nginx", ContainerID: id64, Restart: -1}},
		// dots and dashes in the pod's name, dashes in the namespace and container
		{"/var/log/containers/prometheus-k8s.example-0_monitoring-prod_config-reloader-" + id64 + ".log",
			&fileMeta{Namespace: "monitoring-prod", Pod: "prometheus-k8s.example-0", Container: "config-reloader", ContainerID: id64, Restart: -1}},
		// any directory: a test tree, a host mount
		{"/tmp/x/host/var/log/containers/a_b_c-" + id64 + ".log", &fileMeta{Namespace: "b", Pod: "a", Container: "c", ContainerID: id64, Restart: -1}},
		{"a_b_c-" + id64 + ".log", &fileMeta{Namespace: "b", Pod: "a", Container: "c", ContainerID: id64, Restart: -1}},
		// /var/log/pods
		{"/var/log/pods/default_web-7d4b9c8f5-x2x9q_" + uidV4 + "/nginx/0.log",
			&fileMeta{Namespace: "default", Pod: "web-7d4b9c8f5-x2x9q", Container: "nginx", PodUID: uidV4}},
		{"/var/log/pods/monitoring_prometheus-k8s.example-0_" + uidV4 + "/prometheus/12.log",
			&fileMeta{Namespace: "monitoring", Pod: "prometheus-k8s.example-0", Container: "prometheus", PodUID: uidV4, Restart: 12}},
		// a static pod's uid is 32 hex digits
		{"/var/log/pods/kube-system_kube-apiserver-node-a_4b3c2a1f0e9d8c7b6a5f4e3d2c1b0a99/kube-apiserver/3.log",
			&fileMeta{Namespace: "kube-system", Pod: "kube-apiserver-node-a", Container: "kube-apiserver", PodUID: "4b3c2a1f0e9d8c7b6a5f4e3d2c1b0a99", Restart: 3}},

		{"/var/log/syslog", nil},
		{"/var/log/app/service.log", nil},
		{"", nil},
		{"/var/log/containers/", nil},
		{"/var/log/containers/web_default_nginx.log", nil}, // no id
		{"/var/log/containers/web_default_nginx-" + id64[:63] + ".log", nil},             // short id
		{"/var/log/containers/web_default_nginx-" + strings.ToUpper(id64) + ".log", nil}, // not lowercase hex
		{"/var/log/containers/web_default_nginx-" + id64 + ".log.1", nil},                // rotated
		{"/var/log/containers/default_nginx-" + id64 + ".log", nil},                      // no pod
		{"/var/log/containers/we_b_default_nginx-" + id64 + ".log", nil},                 // '_' in a pod name
		{"/var/log/containers/Web_default_nginx-" + id64 + ".log", nil},                  // uppercase
		{"/var/log/containers/web_def.ault_nginx-" + id64 + ".log", nil},                 // '.' in a namespace
		{"/var/log/containers/web_default_ng.inx-" + id64 + ".log", nil},                 // '.' in a container
		{"/var/log/containers/web._default_nginx-" + id64 + ".log", nil},                 // empty label
		{"/var/log/pods/default_web_" + uidV4 + "/nginx/0.log.20240502-100000.gz", nil},  // rotated, compressed
		{"/var/log/pods/default_web_" + uidV4 + "/nginx/x.log", nil},                     // not a number
		{"/var/log/pods/default_web/nginx/0.log", nil},                                   // no uid
		{"/var/log/pods/default_web_" + uidV4 + "_x/nginx/0.log", nil},                   // '_' too many
		{"nginx/0.log", nil},
		{"0.log", nil},
		{"/var/log/pods/default_web_" + strings.Repeat("a", 65) + "/nginx/0.log", nil}, // uid too long
	} {
		got, ok := parsePath(tc.path)
		if tc.want == nil {
			if ok {
				t.Errorf("%q: got %+v, want none", tc.path, got)
			}
			continue
		}
		if !ok || got != *tc.want {
			t.Errorf("%q: got %+v (%v), want %+v", tc.path, got, ok, *tc.want)
		}
	}
}

func TestParseTag(t *testing.T) {
	for _, tc := range []struct {
		tag  string
		want *fileMeta
	}{
		{"kube.var.log.containers.web-7d4b9c8f5-x2x9q_default_nginx-" + id64 + ".log",
			&fileMeta{Namespace: "default", Pod: "web-7d4b9c8f5-x2x9q", Container: "nginx", ContainerID: id64, Restart: -1}},
		{"kube.var.log.containers.prometheus-k8s.example-0_monitoring_prometheus-" + id64 + ".log",
			&fileMeta{Namespace: "monitoring", Pod: "prometheus-k8s.example-0", Container: "prometheus", ContainerID: id64, Restart: -1}},
		{"containers.a_b_c-" + id64 + ".log", &fileMeta{Namespace: "b", Pod: "a", Container: "c", ContainerID: id64, Restart: -1}},
		{"kube.tmp.TestX.001.var.log.containers.a.b_c_d-" + id64 + ".log", &fileMeta{Namespace: "c", Pod: "a.b", Container: "d", ContainerID: id64, Restart: -1}},
		{"kube.var.log.pods.monitoring_prometheus-k8s.example-0_" + uidV4 + ".prometheus.1.log",
			&fileMeta{Namespace: "monitoring", Pod: "prometheus-k8s.example-0", Container: "prometheus", PodUID: uidV4, Restart: 1}},
		{"pods.default_web_" + uidV4 + ".nginx.0.log", &fileMeta{Namespace: "default", Pod: "web", Container: "nginx", PodUID: uidV4}},

		{"kube.var.log.syslog", nil},
		{"app.web", nil},
		{"", nil},
		// without the "containers" part, where the pod's name starts is not known
		{"kube.a.b_c_d-" + id64 + ".log", nil},
		{"kube.mycontainers.a_b_c-" + id64 + ".log", nil},
		{"kube.var.log.pods.default_web_" + uidV4 + ".nginx.log", nil},
		{"kube.var.log.xpods.default_web_" + uidV4 + ".nginx.0.log", nil},
		{"kube.var.log.pods.default_web_" + uidV4 + ".ng.inx.0.log", nil},
	} {
		got, ok := parseTag(tc.tag)
		if tc.want == nil {
			if ok {
				t.Errorf("%q: got %+v, want none", tc.tag, got)
			}
			continue
		}
		if !ok || got != *tc.want {
			t.Errorf("%q: got %+v (%v), want %+v", tc.tag, got, ok, *tc.want)
		}
	}
}
