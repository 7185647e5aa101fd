# Build, test and CI entry points. `make test` is what CI runs (via .ci/run);
# it works non-interactively (CI=true, no terminal).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

GO           ?= go
BIN          ?= bin
FUZZTIME     ?= 15s
TEST_TIMEOUT ?= 30m
# staticcheck 2026.2.2; needs a Go toolchain at least as new as the code.
STATICCHECK_VERSION ?= v0.8.2
STATICCHECK := $(BIN)/staticcheck-$(STATICCHECK_VERSION)
# Browser tests (server/browser_test.go: the demo page in headless Chromium)
# are on by default: `make deps` installs Debian's chromium when missing (root
# and apt-get) and the pinned playwright-core (npm ci in server/web/test).
# BROWSER_TESTS=0 skips that; the tests then skip themselves, except in CI
# (CI=true), where they fail.
BROWSER_TESTS ?= 1
WEB_TEST_DIR  := server/web/test

.PHONY: all run build test allocs deps vet staticcheck fuzz bench bench-load lint clean screenshot

all: build

## run: the gateway with an embedded miniredis, demo ticks and a durable
## demo channel; its streams survive a restart in $(BIN)/demo-streams.json
run:
	@mkdir -p $(BIN)
	$(GO) run ./cmd/gateway -embedded-redis -embedded-redis-file $(BIN)/demo-streams.json -demo

build:
	$(GO) build -o $(BIN)/gateway ./cmd/gateway

## test: vet, staticcheck, race-enabled tests (real redis-server), the
## allocation gates without -race, short fuzz
test: deps
	$(GO) vet ./...
	@$(MAKE) --no-print-directory staticcheck
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...
	@$(MAKE) --no-print-directory allocs
	@$(MAKE) --no-print-directory fuzz

## allocs: the testing.AllocsPerRun gates (Test*Allocs) and the exhaustive
## checks (Test*Exhaustive) once without -race: under -race sync.Pool drops
## items on purpose, so the wsproto gates skip themselves and the exhaustive
## checks sample. These tests are named so that this pattern finds them, and
## a test calling testing.AllocsPerRun under another name fails the target.
ALLOC_TESTS ?= Allocs$$|Exhaustive$$
allocs:
	@misnamed=$$(grep -rl --include='*_test.go' 'testing\.AllocsPerRun' . | \
		xargs awk '/^func /{name = $$2; sub(/\(.*/, "", name)} \
			/testing\.AllocsPerRun/ && name ~ /^Test/ && name !~ /Allocs$$/ {print FILENAME ": " name}' | sort -u); \
	if [ -n "$$misnamed" ]; then \
		echo "allocs: these tests call testing.AllocsPerRun but are not named Test*Allocs, so make allocs would not run them:" >&2; \
		echo "$$misnamed" >&2; \
		exit 1; \
	fi
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -run '$(ALLOC_TESTS)' ./...

## deps: redis-server, redis-sentinel, redis-cli (redis-tools) and haproxy on PATH
## (integration tests start real ones, see fanout/redistest and cmd/gateway)
deps:
	@if [ -n "$${REDIS_SERVER:-}" ] && [ -x "$${REDIS_SERVER}" ]; then \
		echo "deps: using REDIS_SERVER=$${REDIS_SERVER}"; \
	elif command -v redis-server >/dev/null 2>&1; then \
		echo "deps: $$(command -v redis-server): $$(redis-server --version)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "deps: installing redis-server with apt-get"; \
		apt-get update; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server; \
		: "tests start their own servers; stop the daemon the package may have started"; \
		service redis-server stop >/dev/null 2>&1 || true; \
		echo "deps: $$(command -v redis-server): $$(redis-server --version)"; \
	else \
		echo "deps: error: redis-server is not on PATH and cannot be installed automatically" >&2; \
		echo "deps: (needs root and apt-get). Install it (Debian: apt-get install redis-server)" >&2; \
		echo "deps: or set REDIS_SERVER=/path/to/redis-server." >&2; \
		exit 1; \
	fi
	@: "Sentinel, Cluster and load-balancer tests: redis-sentinel, redis-cli, haproxy"; \
	missing=""; \
	for pair in redis-sentinel:redis-sentinel:REDIS_SENTINEL redis-cli:redis-tools:REDIS_CLI haproxy:haproxy:HAPROXY; do \
		cmd=$${pair%%:*}; rest=$${pair#*:}; pkg=$${rest%%:*}; var=$${rest#*:}; \
		if [ -n "$${!var:-}" ] && [ -x "$${!var}" ]; then \
			echo "deps: using $$var=$${!var}"; \
		elif PATH="$$PATH:/usr/sbin:/sbin" command -v $$cmd >/dev/null 2>&1; then \
			echo "deps: $$(PATH="$$PATH:/usr/sbin:/sbin" command -v $$cmd)"; \
		else \
			missing="$$missing $$pkg"; \
		fi; \
	done; \
	if [ -z "$$missing" ]; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "deps: installing$$missing with apt-get"; \
		apt-get update; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
		: "tests start their own; stop the daemons the packages may have started"; \
		service redis-sentinel stop >/dev/null 2>&1 || true; \
		service haproxy stop >/dev/null 2>&1 || true; \
	else \
		echo "deps: error: missing$$missing and cannot install (needs root and apt-get)." >&2; \
		echo "deps: Install them (Debian: apt-get install$$missing) or set REDIS_SENTINEL, REDIS_CLI, HAPROXY." >&2; \
		exit 1; \
	fi
ifneq ($(BROWSER_TESTS),0)
	@if command -v chromium >/dev/null 2>&1; then \
		echo "deps: $$(command -v chromium)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "deps: installing chromium with apt-get (browser tests; BROWSER_TESTS=0 skips)"; \
		apt-get update; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; \
		echo "deps: $$(command -v chromium)"; \
	elif [ "$${CI:-}" = true ]; then \
		echo "deps: error: chromium is missing and cannot be installed (needs root and apt-get)" >&2; \
		exit 1; \
	else \
		echo "deps: warning: chromium is missing and cannot be installed (needs root and apt-get); browser tests will skip" >&2; \
	fi
	@if [ -f "$(WEB_TEST_DIR)/node_modules/playwright-core/package.json" ]; then \
		echo "deps: $(WEB_TEST_DIR)/node_modules: playwright-core installed"; \
	elif command -v npm >/dev/null 2>&1; then \
		echo "deps: npm ci in $(WEB_TEST_DIR) (playwright-core, pinned by package-lock.json)"; \
		(cd "$(WEB_TEST_DIR)" && npm ci --no-audit --no-fund); \
	elif [ "$${CI:-}" = true ]; then \
		echo "deps: error: npm (Node.js 20 or later) is needed for the browser tests" >&2; \
		exit 1; \
	else \
		echo "deps: warning: npm (Node.js 20 or later) is missing; browser tests will skip" >&2; \
	fi
endif

## screenshot: docs/demo.png, taken by the browser test's run of the demo page
screenshot: deps
	GATEWAY_DEMO_SCREENSHOT=$(CURDIR)/docs/demo.png $(GO) test -count=1 -run '^TestBrowserDemo$$' ./server

vet:
	$(GO) vet ./...

## staticcheck: pinned version; if it cannot be fetched (offline) warn and go on,
## but findings do fail.
staticcheck:
	@if [ ! -x "$(STATICCHECK)" ]; then \
		mkdir -p "$(BIN)"; \
		tmp=$$(mktemp -d); \
		if GOBIN="$$tmp" $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION); then \
			mv "$$tmp/staticcheck" "$(STATICCHECK)"; \
		fi; \
		rm -rf "$$tmp"; \
	fi; \
	if [ -x "$(STATICCHECK)" ]; then \
		echo "$(STATICCHECK) ./..."; \
		"$(STATICCHECK)" ./...; \
	else \
		echo "WARNING: staticcheck $(STATICCHECK_VERSION) could not be fetched; skipping it" >&2; \
	fi

## fuzz: every Fuzz* target in the module, one at a time, FUZZTIME each
fuzz:
	FUZZTIME=$(FUZZTIME) GO=$(GO) bash .ci/fuzz.sh

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

## bench-load: the load harness (go run ./bench -help lists the scenarios)
BENCH_ARGS ?= -scenario fanout
bench-load:
	$(GO) run ./bench $(BENCH_ARGS)

lint:
	@out=$$(gofmt -l $$(find . -name '*.go' -not -path './.git/*' -not -path './vendor/*' -not -path './$(BIN)/*')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:" >&2; echo "$$out" >&2; exit 1; fi
	$(GO) vet ./...
	@$(MAKE) --no-print-directory staticcheck

clean:
	rm -rf $(BIN)
	$(GO) clean ./...
