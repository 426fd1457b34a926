#!/usr/bin/env bash
# Builds annal's libFuzzer targets with clang into build-fuzz, writes their
# seeds into fuzz/corpus/, replays fuzz/regressions/, then fuzzes each target
# for a bounded time.
#
#   fuzz/run.sh [seconds-per-target]     (default 20)
#
# Exits non-zero when any target crashes (or a regression input still
# crashes); crash inputs land in build-fuzz/fuzz/artifacts/<target>/. Inputs
# the fuzzer finds interesting go to build-fuzz/fuzz/work/<target>/, so the
# checked-in seed corpus stays as make_seeds wrote it.
set -euo pipefail

seconds="${1:-20}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [seconds-per-target]  (a positive integer, default 20)" >&2
  exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
build="$root/build-fuzz"
targets=(fuzz_record fuzz_batch fuzz_checkpoint fuzz_segment_index fuzz_sealed fuzz_frame)

"$root/scripts/install-deps.sh" --with-clang

cmake -S . -B "$build" -DCMAKE_CXX_COMPILER=clang++ -DANNAL_FUZZ=ON \
  -DANNAL_BUILD_TESTS=OFF -DANNAL_BUILD_BENCHMARKS=OFF
cmake --build "$build" -j "$(nproc)" --target make_seeds "${targets[@]}"

"$build/fuzz/make_seeds" "$root/fuzz/corpus"

# Targets that read files (fuzz_segment_index, fuzz_sealed) keep a scratch
# directory under TMPDIR; one that dies on a crash cannot remove it, so keep
# them in the build tree.
export TMPDIR="$build/fuzz/tmp"
rm -rf "$TMPDIR"
mkdir -p "$TMPDIR"

failed=()
for t in "${targets[@]}"; do
  bin="$build/fuzz/$t"
  artifacts="$build/fuzz/artifacts/$t"
  work="$build/fuzz/work/$t"
  mkdir -p "$artifacts" "$work"

  # Inputs that once crashed must stay harmless.
  regressions=("$root/fuzz/regressions/$t"/*)
  if [[ -e "${regressions[0]}" ]]; then
    echo "=== $t: replaying ${#regressions[@]} regression input(s)"
    if ! "$bin" -artifact_prefix="$artifacts/" "${regressions[@]}"; then
      failed+=("$t (regression)")
      continue
    fi
  fi

  echo "=== $t: fuzzing for ${seconds}s"
  if ! "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$artifacts/" \
      "$work" "$root/fuzz/corpus/$t"; then
    failed+=("$t")
  fi
done

if ((${#failed[@]})); then
  echo "fuzz: FAILED: ${failed[*]}; crash inputs under $build/fuzz/artifacts/" >&2
  exit 1
fi
echo "fuzz: all targets ran ${seconds}s without a crash"
