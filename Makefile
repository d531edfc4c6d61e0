# The two commands for a fresh machine are `make demo` and `make test`; both
# install what they need (Go modules, a Vault binary built and cached by
# scripts/vault.sh; for `make test` also an Ory Hydra binary, scripts/hydra.sh).
SHELL := /bin/bash
GO ?= go
VERSION ?= v0.1.0
COMMIT := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
# The version the plugin reports to Vault (vault plugin info -version=...).
PLUGIN_VERSION := $(VERSION)+$(COMMIT)
LDFLAGS := -X github.com/iadvize/vault-plugin-secrets-iadvize.Version=$(PLUGIN_VERSION)
BUILD_DIR := $(CURDIR)/build
PLUGIN_DIR := $(BUILD_DIR)/plugins
PLUGIN_BIN := $(PLUGIN_DIR)/vault-plugin-secrets-iadvize
FAKE_BIN := $(BUILD_DIR)/fake-iadvize

.PHONY: all build vault hydra test unit e2e lint demo dev bench clean fuzz release

all: build

build:
	@mkdir -p $(PLUGIN_DIR)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(PLUGIN_BIN) ./cmd/vault-plugin-secrets-iadvize
	$(GO) build -trimpath -o $(FAKE_BIN) ./cmd/fake-iadvize

# Release archives for linux and darwin on amd64 and arm64, and SHA256SUMS, in
# build/release beside other versions' (scripts/release.sh --help): make release
# VERSION=v0.2.0, which needs a "## [v0.2.0]" section in CHANGELOG.md.
# PLATFORMS=linux/amd64 builds one platform; RELEASE_DIR=build/v0.2.0 writes
# into a directory of its own (one version's files, to publish).
RELEASE_DIR ?= $(BUILD_DIR)/release
release:
	GO=$(GO) OUT_DIR=$(RELEASE_DIR) scripts/release.sh "$(if $(filter file,$(origin VERSION)),,$(VERSION))"

# Prints the version make build stamps into the plugin (VERSION+commit).
.PHONY: plugin-version
plugin-version:
	@echo '$(PLUGIN_VERSION)'

# Prints the cached Vault binary, building it on first use (VAULT_BIN overrides).
vault:
	@scripts/vault.sh

# Prints the cached Ory Hydra binary (a real OAuth2 server for the end-to-end
# suite), building it on first use (HYDRA_BIN overrides).
hydra:
	@scripts/hydra.sh

# gofmt, go vet and staticcheck over every package. staticcheck is pinned
# (STATICCHECK_VERSION in scripts/staticcheck.sh) and installed from the Go
# module proxy into the cache outside the repository on first use (about a
# minute); STATICCHECK_BIN overrides it. A run takes about a minute on 2 cores.
lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	@staticcheck=$$(scripts/staticcheck.sh) && echo "staticcheck ./..." && "$$staticcheck" ./...

# Every test: unit tests and the end-to-end suites against a real Vault (and a
# real Ory Hydra).
test: lint build
	VAULT_BIN=$$(scripts/vault.sh) HYDRA_BIN=$$(scripts/hydra.sh) PLUGIN_BIN=$(PLUGIN_BIN) FAKE_BIN=$(FAKE_BIN) \
	  $(GO) test -race -count=1 -timeout 60m ./...

# Go native fuzzing of the token-answer classifier and the secret redactor, each
# for FUZZTIME (their seed corpora already run in make test).
FUZZTIME ?= 60s
fuzz:
	@for target in FuzzClassifyAnswer FuzzRedactor; do \
	  echo "fuzzing $$target for $(FUZZTIME)"; \
	  $(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) . || exit 1; \
	done

# Unit tests only (no Vault needed).
unit:
	$(GO) test -race -count=1 -short ./...

# The demos (cmd/demo, on internal/vaulttest like the end-to-end tests): the
# fake iAdvize, a dev Vault, a role, 200 concurrent cold reads and one login;
# everything is stopped at the end (or on failure or Ctrl-C).
DEMO_BIN := $(BUILD_DIR)/demo
DEMO := VAULT_BIN=$$(scripts/vault.sh) FAKE_BIN=$(FAKE_BIN) $(DEMO_BIN) -plugin-dir $(PLUGIN_DIR)
.PHONY: demo-bin
demo-bin:
	@$(GO) build -o $(DEMO_BIN) ./cmd/demo

demo: build demo-bin
	$(DEMO) demo

# Vault (dev server, plugin registered, no mount) and the fake iAdvize left
# running for the README's Quickstart; their settings are in build/dev.env. A
# second make dev stops the first.
dev: build demo-bin
	$(DEMO) -dev-env $(BUILD_DIR)/dev.env -plugin-version '$(PLUGIN_VERSION)' dev

# Benchmarks on a real Vault (cmd/bench): writes BENCHMARKS.md, about 35 minutes
# on 2 cores, of which the restart run with 100,000 roles takes about 20.
# BENCH_FLAGS="-duration 2m -rounds 3 -cell 1.5s -leases 2000 -roles 2000 -restart-roles 2000" for a shorter run.
NOOP_PLUGIN_BIN := $(BUILD_DIR)/bench/bench-noop-plugin
BENCH_FLAGS ?=
bench: build
	$(GO) build -trimpath -o $(NOOP_PLUGIN_BIN) ./cmd/bench-noop-plugin
	VAULT_BIN=$$(scripts/vault.sh) PLUGIN_BIN=$(PLUGIN_BIN) FAKE_BIN=$(FAKE_BIN) NOOP_PLUGIN_BIN=$(NOOP_PLUGIN_BIN) \
	  $(GO) run ./cmd/bench -out BENCHMARKS.md $(BENCH_FLAGS)

clean:
	rm -rf $(BUILD_DIR)

# A three-node Vault HA cluster (integrated storage) with the plugin and a role
# against the fake iAdvize; it runs until Ctrl-C (cmd/demo).
.PHONY: demo-ha
demo-ha: build demo-bin
	$(DEMO) ha
