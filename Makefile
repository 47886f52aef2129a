# logship: the targets people expect.
SHELL     := /bin/bash
GO        ?= go
BIN       := bin/logship
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
PKGS      := ./...
# -race on the packages whose concurrency matters most; the rest without,
# to keep `make test` well inside CI's time on 2 cores.
RACE_PKGS := ./pipeline/... ./broker/... ./plugins/...

.PHONY: all build test test-unit run bench fuzz lint lint-install fmt vet docs peers clean install manifests

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/logship

# The whole test suite: what .ci/run calls. Optional peers (npm and Python
# forward clients) are installed first when the registries can be reached;
# tests that lack one print SKIP with the reason.
# The packages whose tests use third-party peers (and deploy/, whose tests
# need helm, systemd-analyze, dpkg or a Docker engine) run verbosely, so
# that a missing peer's "SKIP: reason" shows in the output. deploy/kubecheck
# is a module of its own (k8s.io types stay out of go.mod).
PEER_PKGS := ./test/e2e/ ./plugins/output/forward/ ./deploy/...
test: peers
	$(GO) vet $(PKGS)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) test -count=1 -timeout 20m $$($(GO) list $(PKGS) | grep -v -e /test/e2e -e /plugins/output/forward -e /deploy)
	set -o pipefail; $(GO) test -count=1 -timeout 20m -v $(PEER_PKGS) | grep -E '^(--- |ok|FAIL|PASS)|SKIP|^\s+\S+_test\.go:'
	$(GO) test -count=1 -race -short -timeout 20m $(RACE_PKGS)
	set -o pipefail; cd deploy/kubecheck && $(GO) vet ./... && $(GO) test -count=1 -v ./... | grep -E '^(--- |ok|FAIL|PASS)|SKIP|^\s+\S+_test\.go:'

test-unit:
	$(GO) test -count=1 -short $(PKGS)

# The main job on this machine: an agent tailing a growing log and listening
# for forward clients, shipping to an aggregator that writes a file per tag
# (./demo/out/<tag>.log). Ctrl-C stops both.
run: build
	@bash scripts/run-demo.sh

bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2s ./pipeline/... ./broker/... ./plugins/...

FUZZTIME ?= 2m
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecoder -fuzztime $(FUZZTIME) ./plugins/forwardproto/

peers:
	@bash scripts/install-peers.sh || echo "peers: install failed; the tests that need them will SKIP"
	@bash scripts/install-helm.sh || echo "peers: helm install failed; the chart tests will SKIP"

# The plain Kubernetes manifests, rendered from the Helm chart; a test in
# deploy/ fails when they are stale.
manifests:
	bash scripts/install-helm.sh
	bash deploy/kubernetes/render.sh > deploy/kubernetes/logship.yaml.tmp
	mv deploy/kubernetes/logship.yaml.tmp deploy/kubernetes/logship.yaml

GOLANGCI_VERSION ?= v2.6.2
lint-install:
	$(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)

lint:
	@command -v golangci-lint >/dev/null 2>&1 || $(MAKE) lint-install
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" golangci-lint run ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet $(PKGS)

docs:
	$(GO) run ./internal/docgen/cmd > docs/config-reference.md

clean:
	rm -rf bin data out

# Install on a VM: the binary in $(PREFIX)/bin, the units (pointing at it) in
# $(UNITDIR), the example configs in $(SYSCONFDIR)/logship unless already
# there. DESTDIR stages the tree; without it, as root, it also creates the
# logship system user and reloads systemd. docs/install.md has the details.
PREFIX     ?= /usr/local
SYSCONFDIR ?= /etc
UNITDIR    ?= $(PREFIX)/lib/systemd/system
install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/logship
	install -d -m 0755 $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/logship
	for u in deploy/systemd/*.service; do \
	  sed -e '/^Exec/s#/usr/bin/logship#$(PREFIX)/bin/logship#g' -e '/^Exec/s#/etc/logship/#$(SYSCONFDIR)/logship/#g' $$u > $(DESTDIR)$(UNITDIR)/$$(basename $$u) && \
	  chmod 0644 $(DESTDIR)$(UNITDIR)/$$(basename $$u) || exit 1; \
	done
	for c in agent aggregator; do \
	  if [ -e $(DESTDIR)$(SYSCONFDIR)/logship/$$c.yaml ]; then echo "keeping $(DESTDIR)$(SYSCONFDIR)/logship/$$c.yaml"; \
	  else install -m 0640 conf/examples/$$c.yaml $(DESTDIR)$(SYSCONFDIR)/logship/$$c.yaml || exit 1; fi; \
	done
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then \
	  getent passwd logship >/dev/null || useradd --system --user-group --home-dir /var/lib/logship --no-create-home --shell /usr/sbin/nologin logship; \
	  for g in adm systemd-journal; do getent group $$g >/dev/null && usermod -a -G $$g logship; done; \
	  chgrp logship $(SYSCONFDIR)/logship/agent.yaml $(SYSCONFDIR)/logship/aggregator.yaml; \
	  if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi; \
	fi
