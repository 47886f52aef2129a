// Package deploy holds what installs logship on a host or a cluster: the
// systemd units (systemd/), the .deb builder (deb/), the Helm chart
// (helm/logship) and the plain Kubernetes manifests rendered from it
// (kubernetes/), the container image (docker/), and the tests that check
// them; deploy/kubecheck (its own module) decodes the rendered objects into
// the Kubernetes API types. It has no code of its own; see docs/install.md.
package deploy
