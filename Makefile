# tserve — the two commands: `make run` and `make test`. Both install what is missing
# (Debian 12 packages, through scripts/install-deps.sh) and build first.

BUILD_DIR ?= build
JOBS ?= $(shell nproc)
PYTHON := /usr/bin/python3
CONFIG ?= config/config.properties

.PHONY: all deps build test unit e2e run bench clean format

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

e2e: build
	TSERVE_BINARY=$(abspath $(BUILD_DIR))/tserve $(PYTHON) -m pytest -p no:cacheprovider -q tests/e2e

test: unit e2e

run: build
	$(BUILD_DIR)/tserve --start --foreground --ts-config $(CONFIG)

bench: deps
	cmake -S . -B $(BUILD_DIR)-bench -DCMAKE_BUILD_TYPE=Release -DTSERVE_BUILD_BENCHMARKS=ON -DTSERVE_BUILD_TESTS=OFF
	cmake --build $(BUILD_DIR)-bench -j $(JOBS)
	bash bench/run.sh $(BUILD_DIR)-bench

format:
	clang-format -i $$(git ls-files '*.cc' '*.h' '*.c')

clean:
	rm -rf $(BUILD_DIR) $(BUILD_DIR)-bench
