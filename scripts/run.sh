#!/usr/bin/env bash
# Builds annal and starts annald on the default data directory, ./data,
# listening on 127.0.0.1:7411 (metrics on :7412). Extra arguments go to
# annald (annald --help lists them). Installs the Debian packages it needs
# first (idempotently). Stop it with Ctrl-C: it finishes what is in flight,
# writes a checkpoint and exits.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" --target annald annal_cli
exec build/server/annald --data-dir ./data "$@"
