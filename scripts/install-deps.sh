#!/usr/bin/env bash
# Installs every Debian 12 package that tserve's build, tests, benchmarks and demo need.
# Idempotent: packages already present are not reinstalled, and apt is not touched at all
# when nothing is missing. Works as root or through sudo.
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake pkg-config git ca-certificates
  # libraries
  libboost-dev nlohmann-json3-dev libyaml-cpp-dev zlib1g-dev libspdlog-dev libfmt-dev
  libcli11-dev libzip-dev libcurl4-openssl-dev libjpeg62-turbo-dev libpng-dev
  # allowed_urls: linear-time regular expressions
  libre2-dev
  # serving: LibTorch (CPU) with OpenBLAS (2.4-30x faster Linear layers than the reference
  # BLAS), and Python's torch/torchvision to script the demo models at build time
  libtorch-dev libopenblas0-openmp python3-torch python3-torchvision python3-pil python3-yaml
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev prometheus-cpp-dev
  prometheus python3 python3-pytest python3-requests python3-prometheus-client
  curl wrk procps
  # fuzzing (libFuzzer) and sanitizers
  clang libclang-rt-14-dev
  # style
  clang-format clang-tidy
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# Node.js and npm run the test-only tooling in tests/js (make js-deps). The machines have
# Node 20; where no node is installed at all, Debian's own (18) is used.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-deps: need root or sudo to install: ${missing[*]}" >&2
    exit 1
  fi
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
