#!/usr/bin/env bash
# The fuzz smoke `make test` runs: every target over its seed corpus plus a short fuzz
# (FUZZ_SMOKE_SECONDS, default 15) in build-fuzz. docs/reliability.md.
exec "$(dirname "$0")/run.sh" -b "${FUZZ_BUILD_DIR:-build-fuzz}" -t "${FUZZ_SMOKE_SECONDS:-15}" "$@"
