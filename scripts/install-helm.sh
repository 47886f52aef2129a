#!/usr/bin/env bash
# Installs helm into bin/tools/helm, built from source through the Go module
# proxy (no release tarball is downloaded). The chart tests in deploy/ use it
# (they look for bin/tools/helm, then helm on PATH, and SKIP without either).
#
# A second run is instant: bin/tools/.helm-version records the version built,
# and nothing is done when it matches HELM_VERSION and the binary is there.
#
#   HELM_VERSION=v3.22.0 scripts/install-helm.sh
set -eu
cd "$(dirname "$0")/.."
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
GO="${GO:-go}"
dir="$PWD/bin/tools"
stamp="$dir/.helm-version"

if [ -x "$dir/helm" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$HELM_VERSION" ]; then
	exit 0
fi
command -v "$GO" >/dev/null 2>&1 || { echo "install-helm: $GO not found" >&2; exit 1; }
mkdir -p "$dir"
echo "install-helm: building helm $HELM_VERSION into bin/tools (go install: about three minutes on a cold module cache)"
start=$(date +%s)
# -trimpath and the version ldflag as helm's own Makefile sets it, so that
# `helm version` names the release instead of "v3.x-dev" or the like.
GOBIN="$dir" GOFLAGS="${GOFLAGS:-} -trimpath" "$GO" install \
	-ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
	"helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
echo "$HELM_VERSION" >"$stamp"
echo "install-helm: $("$dir/helm" version --short) in $(($(date +%s) - start))s"
