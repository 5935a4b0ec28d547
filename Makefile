# tserve — the two commands: `make run` and `make test`. Both install what is missing
# (Debian 12 packages, through scripts/install-deps.sh) and build first.

BUILD_DIR ?= build
JOBS ?= $(shell nproc)
PYTHON := /usr/bin/python3
CONFIG ?= config/config.properties

.PHONY: all deps build test unit unit-clang e2e run bench clean format fuzz fuzz-smoke test-asan \
	test-tsan sanitized-suites monitoring-check js-deps monitor bench-llm

FUZZ_SECONDS ?= 600
# Sanitizer runs: each an instrumented build (with LibTorch) beside the main one, its own demo
# models, then the unit and e2e suites against it (docs/reliability.md).
ASAN_DIR ?= $(BUILD_DIR)-asan
TSAN_DIR ?= $(BUILD_DIR)-tsan
ASAN_ENV = ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1 \
	LSAN_OPTIONS=suppressions=$(abspath tests/lsan.supp):print_suppressions=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
TSAN_ENV = TSAN_OPTIONS="suppressions=$(abspath tests/tsan.supp) halt_on_error=1 exitcode=66"

all: build

deps:
	@bash scripts/install-deps.sh

$(BUILD_DIR)/CMakeCache.txt:
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=Release

build: deps $(BUILD_DIR)/CMakeCache.txt
	cmake --build $(BUILD_DIR) -j $(JOBS)
	$(PYTHON) scripts/make_demo_models.py --out $(BUILD_DIR)/model_store --archiver $(BUILD_DIR)/tserve-archiver

unit: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

e2e: build js-deps
	TSERVE_BINARY=$(abspath $(BUILD_DIR))/tserve $(PYTHON) -m pytest -p no:cacheprovider -q tests/e2e

test: unit unit-clang e2e fuzz-smoke monitoring-check

# Lock discipline (docs/reliability.md): everything built with clang, -Wthread-safety -Werror
# (common/thread_annotations.h) and without LibTorch, and its unit tests. Debug: the analysis
# needs no optimizer, and -O0 compiles faster.
CLANG_DIR ?= $(BUILD_DIR)-clang
unit-clang: deps
	test -f $(CLANG_DIR)/CMakeCache.txt || CC=clang CXX=clang++ cmake -S . -B $(CLANG_DIR) \
		-DCMAKE_BUILD_TYPE=Debug -DTSERVE_WITH_TORCH=OFF
	cmake --build $(CLANG_DIR) -j $(JOBS)
	cd $(CLANG_DIR) && ctest --output-on-failure -j $(JOBS)

# libFuzzer targets (clang, ASan + UBSan) in build-fuzz: `make fuzz` runs each for
# FUZZ_SECONDS; `make test` runs each over its seed corpus plus a 15 s fuzz.
fuzz: deps
	bash tests/fuzz/run.sh -b $(BUILD_DIR)-fuzz -t $(FUZZ_SECONDS)

fuzz-smoke: deps
	FUZZ_BUILD_DIR=$(BUILD_DIR)-fuzz bash tests/fuzz/smoke.sh

# Prometheus rules and config (docs/monitoring.md): promtool check config/rules, the promtool
# unit tests of every recording rule and alert, and that every metric the rules read exists.
# Prometheus with the shipped config and rules next to a running tserve (docs/monitoring.md);
# TSERVE_METRICS_ADDRESS=host:port (default localhost:8082), PROMETHEUS_LISTEN (default
# 127.0.0.1:9090). In the foreground; Ctrl-C stops it.
monitor: deps
	bash scripts/monitor.sh

monitoring-check: deps js-deps
	bash tests/monitoring/run_promtool.sh
	$(PYTHON) tests/monitoring/check_dashboards.py
	node tests/js/validate_dashboards.mjs
	node tests/js/validate_kubernetes.mjs
	$(PYTHON) tests/monitoring/check_kubernetes.py

# Test-only npm tooling (tests/js: JSON Schema of the dashboards, Kubernetes models), exactly
# the versions tests/js/package-lock.json pins; reinstalled when the lock changes.
JS_STAMP := tests/js/node_modules/.tserve-installed
js-deps: $(JS_STAMP)
$(JS_STAMP): tests/js/package-lock.json tests/js/package.json
	cd tests/js && npm ci --no-audit --no-fund --loglevel=error
	touch $@

test-asan: deps
	$(MAKE) sanitized-suites SAN_DIR=$(ASAN_DIR) SAN=address,undefined SAN_ENV='$(ASAN_ENV)'

test-tsan: deps
	$(MAKE) sanitized-suites SAN_DIR=$(TSAN_DIR) SAN=thread SAN_ENV='$(TSAN_ENV)'

sanitized-suites:
	test -f $(SAN_DIR)/CMakeCache.txt || cmake -S . -B $(SAN_DIR) \
		-DCMAKE_BUILD_TYPE=RelWithDebInfo -DTSERVE_SANITIZE=$(SAN)
	cmake --build $(SAN_DIR) -j $(JOBS)
	$(SAN_ENV) $(PYTHON) scripts/make_demo_models.py --out $(SAN_DIR)/model_store \
		--archiver $(SAN_DIR)/tserve-archiver
	cd $(SAN_DIR) && $(SAN_ENV) ctest --output-on-failure -j $(JOBS)
	$(SAN_ENV) TSERVE_BINARY=$(abspath $(SAN_DIR))/tserve \
		TSERVE_DEMO_STORE=$(abspath $(SAN_DIR))/model_store \
		TSERVE_ARCHIVER=$(abspath $(SAN_DIR))/tserve-archiver \
		TSERVE_NVML_STANDIN=$(abspath $(SAN_DIR))/tests/libnvidia-ml-standin.so \
		$(PYTHON) -m pytest -p no:cacheprovider -q tests/e2e

run: build
	$(BUILD_DIR)/tserve --start --foreground --ts-config $(CONFIG)

# LLM serving throughput (docs/performance.md "LLM serving"): 16 streams with continuous
# batching against one request at a time and against a raw LibTorch decode loop, side by side.
bench-llm: build
	test -f $(BUILD_DIR)-bench/CMakeCache.txt || cmake -S . -B $(BUILD_DIR)-bench \
		-DCMAKE_BUILD_TYPE=Release -DTSERVE_BUILD_BENCHMARKS=ON
	cmake --build $(BUILD_DIR)-bench -j $(JOBS) --target llm_raw_decode
	$(PYTHON) bench/llm_bench.py --binary $(BUILD_DIR)/tserve --store $(BUILD_DIR)/model_store \
		--raw $(BUILD_DIR)-bench/bench/llm_raw_decode --repeats 3

bench: deps
	cmake -S . -B $(BUILD_DIR)-bench -DCMAKE_BUILD_TYPE=Release -DTSERVE_BUILD_BENCHMARKS=ON -DTSERVE_BUILD_TESTS=OFF
	cmake --build $(BUILD_DIR)-bench -j $(JOBS)
	bash bench/run.sh $(BUILD_DIR)-bench

format:
	clang-format -i $$(git ls-files '*.cc' '*.h' '*.c')

clean:
	rm -rf $(BUILD_DIR) $(BUILD_DIR)-bench $(BUILD_DIR)-fuzz $(ASAN_DIR) $(TSAN_DIR) $(CLANG_DIR)
