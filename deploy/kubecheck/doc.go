// Package kubecheck checks what deploy/ ships for Kubernetes and containers
// against the real types, in a module of its own so that logship's go.mod
// never gains k8s.io dependencies:
//
//   - every object of deploy/kubernetes/logship.yaml, and of the chart
//     rendered with other values (when helm is installed), decodes strictly
//     (an unknown field is an error) into its k8s.io/api type, and holds
//     what docs/install.md promises (mounts, probes, RBAC rules, names);
//   - deploy/docker/Dockerfile parses with BuildKit's parser and is
//     multi-stage, static, non-root, and fetches nothing by URL.
//
// It has no code of its own: `cd deploy/kubecheck && go test ./...`.
package kubecheck
