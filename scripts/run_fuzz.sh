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
  base="${name#fuzz_}"
  src="$(cd "$(dirname "$0")/.." && pwd)/fuzz"
  # fuzz/seeds_X.sh writes the seed corpus for fuzz/fuzz_X.c; fuzz_X.dict lists its format's tokens.
  if [[ -f "$src/seeds_$base.sh" ]]; then bash "$src/seeds_$base.sh" "$corpus"; fi
  dict=()
  if [[ -f "$src/fuzz_$base.dict" ]]; then dict=(-dict="$src/fuzz_$base.dict"); fi
  echo "fuzz: $name for ${secs}s"
  if ! "$bin" -max_total_time="$secs" -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 -artifact_prefix="$build/" "${dict[@]}" "$corpus" \
       > "$build/$name.log" 2>&1; then
    echo "fuzz: $name FAILED; the last lines of $build/$name.log:" >&2
    tail -40 "$build/$name.log" >&2
    status=1
  else
    grep -E "stat::number_of_executed_units" "$build/$name.log" || true
  fi
done
exit $status
