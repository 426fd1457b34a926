#!/usr/bin/env bash
# Builds annal and starts it on the default data directory, ./data.
# Installs the Debian packages it needs first (idempotently).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" --target annal-demo
exec build/examples/annal-demo "${@:-./data}"
