#!/usr/bin/env bash
# Run every libFuzzer target in a fuzz build for a short, fixed time each,
# starting from the seed corpus that the build's seed writer produces.
#   scripts/run_fuzz.sh BUILD_DIR SECONDS
set -euo pipefail
build="$1"
secs="${2:-20}"
shopt -s nullglob
status=0
for bin in "$build"/fuzz_*; do
  [[ -x "$bin" && -f "$bin" ]] || continue
  name="$(basename "$bin")"
  corpus="$build/corpus-$name"
  mkdir -p "$corpus"
  seeds="$build/seeds_${name#fuzz_}"   # fuzz/seeds_X.c writes the seed corpus for fuzz/fuzz_X.c
  if [[ -x "$seeds" ]]; then "$seeds" "$corpus"; fi
  echo "fuzz: $name for ${secs}s"
  if ! "$bin" -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 "$corpus" \
       > "$build/$name.log" 2>&1; then
    echo "fuzz: $name FAILED; the last lines of $build/$name.log:" >&2
    tail -40 "$build/$name.log" >&2
    status=1
  else
    grep -E "stat::number_of_executed_runs" "$build/$name.log" || true
  fi
done
exit $status
