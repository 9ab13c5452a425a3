# Two commands set everything up on a fresh Debian machine with Go:
#   make demo   - a control plane on its embedded store with the guide's mesh
#   make test   - every test (installs what the tests need)
GO      ?= go
BIN     := $(CURDIR)/bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/kumametrics/mesh/pkg/version.Version=$(VERSION)
GOTEST_FLAGS ?=
# The Grafana datasource plugin: its own Go module (npm's node_modules inside
# it holds a stray Go package, hence the patterns rather than ./...).
PLUGIN      := grafana-datasource
PLUGIN_PKGS := ./pkg/... ./test/...

.PHONY: build test test-k8s lint test-deps test-tools k8s-bin prometheus-bin h2spec-bin bench fuzz demo generate clean plugin plugin-image test-plugin

# Static binaries (no cgo): what a proxy image ships, and ~1.3 MB less
# resident per kuma-dp than linking libc (docs/2026-12-06-kuma-dp-memory.md).
build:
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

# Builds and tests without the race detector use the configuration make
# build ships (no cgo): vet, the end-to-end tests' binaries, the allocation
# tests and the plugin share one compilation of the dependency tree instead
# of two (on a fresh machine: minutes). -race needs cgo.
NOCGO := CGO_ENABLED=0
# Test binaries are linked without DWARF (nothing reads it; stack traces
# and race reports come from the symbol table): ~17% less CPU per link,
# ~150 links. The -race builds (a compilation of their own) compile none
# either: 10-18% less CPU per package. (go vet takes no -gcflags: the
# builds that share its compilation keep the default.)
TESTLD := -ldflags=-w
RACE := -race -gcflags=all=-dwarf=false

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(NOCGO) $(GO) vet ./...
	cd test/interop && $(NOCGO) $(GO) vet ./...
	cd $(PLUGIN) && $(NOCGO) $(GO) vet $(PLUGIN_PKGS)

test-deps:
	./scripts/test-deps.sh

# Starts building kube-apiserver & co., Prometheus and h2spec in the
# background (niced; each script below waits for it through a lock), so
# that on a fresh machine they compile while lint and the plugin's tests
# run: the first thing make test does.
test-tools:
	@./scripts/test-tools.sh

# kube-apiserver, kube-controller-manager, kube-scheduler and kubectl built
# from k8s.io/kubernetes (once per machine, cached outside git) and Debian's
# etcd; the last line printed is their folder (envtest's KUBEBUILDER_ASSETS).
k8s-bin:
	@./scripts/k8s-tools.sh

# Prometheus built from its Go module (v3.16.0, with kuma_sd_configs; of the
# service discoveries only Kubernetes, Kuma's, file and HTTP) for the
# Kubernetes cluster test's Prometheus Pod (once per machine, cached outside
# git, built niced); the last line printed is the binary's path.
prometheus-bin:
	@./scripts/prometheus-tool.sh

# h2spec built from its Go module (v2.2.1), the HTTP/2 conformance tester
# the proxy's h2spec test runs against an http2 outbound (once per machine,
# cached outside git); the last line printed is the binary's path.
h2spec-bin:
	@./scripts/h2spec-tool.sh

# Every test: lint, unit and integration tests (with the race detector),
# Prometheus' own Kuma discovery against our control plane (test/interop, its
# own module), then the end-to-end tests that run the built binaries and
# Debian's Prometheus. CI=true turns a missing external program into a failure.
# h2spec (make h2spec-bin) checks the proxy's HTTP/2 (KUMA_TEST_H2SPEC).
# The Kubernetes tests run kube-apiserver, etcd and kubectl from the folder
# `make k8s-bin` prints (KUBEBUILDER_ASSETS; built once per machine).
# The allocation tests (names containing Alloc, plus TestLargeBodiesStreamed)
# skip their assertions under -race, whose own allocations blur the counts:
# they run once more without it.
ALLOC_TESTS := Alloc|TestLargeBodiesStreamed
# The packages whose tests run what test-tools builds (kube-apiserver & co.,
# h2spec; Prometheus: the e2e tests TestKubernetes*; test/interop runs the
# API server harness too). Every other test runs first, while on a fresh
# machine those programs still compile in the background: its waiting
# leaves them the CPUs.
TOOL_TEST_PKGS := ./internal/k8stest ./pkg/controlplane ./pkg/k8s/... ./pkg/kumactl \
	./pkg/store/kubernetes ./pkg/proxy
TOOL_E2E := ^TestKubernetes

test: test-tools lint test-deps test-plugin
	@set -x && \
	  $(GO) test $(RACE) -count=1 $(TESTLD) $(GOTEST_FLAGS) $$($(GO) list ./... | grep -v /test/e2e | \
	    grep -vxF -e "$$($(GO) list $(TOOL_TEST_PKGS))") && \
	  $(NOCGO) $(GO) test -count=1 -run '$(ALLOC_TESTS)' $(TESTLD) $(GOTEST_FLAGS) ./pkg/... && \
	  CI=$${CI:-true} $(NOCGO) $(GO) test -count=1 -timeout 20m -skip '$(TOOL_E2E)' $(TESTLD) $(GOTEST_FLAGS) ./test/e2e/... && \
	  { set +x; } 2>/dev/null && \
	  assets=$$(./scripts/k8s-tools.sh | tail -n 1) && test -d "$$assets" && \
	  prom=$$(./scripts/prometheus-tool.sh | tail -n 1) && test -x "$$prom" && \
	  h2spec=$$(./scripts/h2spec-tool.sh | tail -n 1) && test -x "$$h2spec" && \
	  export KUBEBUILDER_ASSETS="$$assets" KUMA_TEST_PROMETHEUS="$$prom" KUMA_TEST_H2SPEC="$$h2spec" && \
	  set -x && \
	  $(GO) test $(RACE) -count=1 $(TESTLD) $(GOTEST_FLAGS) $(TOOL_TEST_PKGS) && \
	  (cd test/interop && $(NOCGO) $(GO) test -count=1 $(TESTLD) $(GOTEST_FLAGS) ./...) && \
	  CI=$${CI:-true} $(NOCGO) $(GO) test -count=1 -timeout 20m -run '$(TOOL_E2E)' $(TESTLD) $(GOTEST_FLAGS) ./test/e2e/

# The Kubernetes cluster test alone (also part of make test): kube-apiserver,
# kube-controller-manager, kube-scheduler, the test node agent running the
# Pods as processes in network namespaces (root, iptables), kuma-cp on the
# host, and the guide end to end with Prometheus built from its module.
test-k8s: test-deps
	@assets=$$(./scripts/k8s-tools.sh | tail -n 1) && test -d "$$assets" && \
	  prom=$$(./scripts/prometheus-tool.sh | tail -n 1) && test -x "$$prom" && \
	  export KUBEBUILDER_ASSETS="$$assets" KUMA_TEST_PROMETHEUS="$$prom" && \
	  set -x && \
	  $(GO) test $(RACE) -count=1 -run 'TestCluster$$' $(TESTLD) $(GOTEST_FLAGS) ./internal/k8stest/ && \
	  CI=$${CI:-true} $(NOCGO) $(GO) test -count=1 -timeout 20m -run '^TestKubernetesCluster$$' -v $(TESTLD) $(GOTEST_FLAGS) ./test/e2e/

# The Kuma datasource plugin for Grafana (grafana-datasource/): dist/ (the
# frontend, plugin.json, img, README.md, LICENSE, the backend
# gpx_kuma_linux_amd64 and _arm64) and bin/kumahq-kuma-datasource-<version>.zip,
# the zip Grafana installs. Needs node >= 20.19 and npm; npm ci runs only when
# package-lock.json changed.
plugin:
	GO=$(GO) ./scripts/plugin.sh build

# The image kumactl install metrics' init container copies the plugin from
# (PLUGIN_IMAGE, default the one kumactl of this VERSION names).
PLUGIN_IMAGE ?= docker.io/kumametrics/kuma-grafana-datasource:$(VERSION)
plugin-image: plugin
	docker build -t $(PLUGIN_IMAGE) $(PLUGIN)

# The plugin's tests: the frontend's type check and unit tests and the build
# (scripts/plugin.sh test; without node, skipped unless CI=true), the
# backend's Go tests with the race detector, then its end-to-end test: the
# built backend launched as Grafana launches it, against the demo (and the
# demo's kumactl install metrics with the zip just built).
test-plugin:
	CI=$${CI:-true} GO=$(GO) ./scripts/plugin.sh test
	cd $(PLUGIN) && $(GO) test $(RACE) -count=1 $(TESTLD) $(GOTEST_FLAGS) ./pkg/...
	cd $(PLUGIN) && CI=$${CI:-true} $(NOCGO) $(GO) test -count=1 -timeout 20m $(TESTLD) $(GOTEST_FLAGS) ./test/...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./pkg/...

# Every fuzz target for FUZZTIME each, one after the other (bounded; the seed
# corpora run as plain tests in make test).
FUZZTIME ?= 60s
FUZZ_TARGETS := pkg/resource:FuzzDecode pkg/mads:FuzzFetchRequest pkg/metricsendpoint:FuzzParseApplication \
	pkg/authn:FuzzVerify pkg/k8s/webhook:FuzzReview pkg/proxy/http1:FuzzParseRequest pkg/proxy/http1:FuzzParseResponse pkg/proxy/http1:FuzzChunked
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
	  echo "== $${t#*:} ($(FUZZTIME))"; \
	  $(GO) test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME) ./$${t%%:*} 2>&1 | tail -n 3; \
	done

demo: build
	./scripts/demo.sh

generate:
	./scripts/generate.sh

clean:
	rm -rf $(BIN) .demo
