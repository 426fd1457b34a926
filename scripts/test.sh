#!/usr/bin/env bash
# Builds annal and runs every test. Installs the Debian packages it needs
# first (idempotently).
#   scripts/test.sh              release build with debug info, in build/
#   scripts/test.sh --sanitize   the same under ASan+UBSan, in build-asan/
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir=build
cmake_args=()
if [[ "${1:-}" == "--sanitize" ]]; then
  build_dir=build-asan
  cmake_args+=(-DANNAL_SANITIZE=ON -DANNAL_BUILD_BENCHMARKS=OFF)
fi

scripts/install-deps.sh
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "${cmake_args[@]}" >/dev/null
cmake --build "$build_dir" -j "$(nproc)"
cd "$build_dir"
ctest --output-on-failure -j "$(nproc)"
