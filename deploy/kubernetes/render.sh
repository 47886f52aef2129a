#!/usr/bin/env bash
# Prints the plain manifests (deploy/kubernetes/logship.yaml): the chart
# deploy/helm/logship rendered with its default values as the release
# "logship" in the namespace "logship", after a Namespace object.
# `make manifests` writes them; TestPlainManifestsUpToDate (deploy/) fails when
# the file differs from what this prints.
#
# The only value set: sharedKey.existingSecret, so that the file holds no
# key (helm would put a random one in a Secret); users create that Secret.
set -euo pipefail
cd "$(dirname "$0")/../.."
helm="${HELM:-}"
if [ -z "$helm" ]; then
	if [ -x bin/tools/helm ]; then helm=bin/tools/helm; else helm=helm; fi
fi
cat <<'HEADER'
# logship on Kubernetes: the agent DaemonSet and the aggregator StatefulSet.
# Generated from the Helm chart deploy/helm/logship (default values, release
# "logship", namespace "logship") by `make manifests`: edit the chart, not
# this file. docs/install.md explains every object.
#
# The agents and aggregators prove a shared key to each other; create it
# before the pods can start:
#   kubectl create namespace logship
#   kubectl -n logship create secret generic logship-shared-key \
#     --from-literal=shared-key="$(head -c 30 /dev/urandom | base64)"
#   kubectl apply -f logship.yaml
---
apiVersion: v1
kind: Namespace
metadata:
  name: logship
  labels:
    app.kubernetes.io/name: logship
    # The agent mounts hostPath volumes (/var/log, its buffer), which the
    # baseline and restricted Pod Security levels forbid.
    pod-security.kubernetes.io/enforce: privileged
HEADER
"$helm" template logship deploy/helm/logship --namespace logship \
	--set sharedKey.existingSecret=logship-shared-key
