#!/usr/bin/env bash
# Run every benchmark in a build folder; each prints a Markdown table with
# orchard's figure, the peer's figure from the same run, and their ratio.
#   scripts/run_bench.sh BUILD_DIR [extra options passed to every benchmark]
set -euo pipefail
build="$1"; shift || true
shopt -s nullglob
for bin in "$build"/bench_*; do
  [[ -x "$bin" && -f "$bin" ]] || continue
  echo "## $(basename "$bin")"
  "$bin" "$@"
  echo
done
