#!/usr/bin/env bash
# Run every benchmark in a build folder; each prints a Markdown table with
# orchard's figure, the peer's figure from the same run, and their ratio.
#   scripts/run_bench.sh BUILD_DIR [extra options passed to every benchmark]
# LLAMA_BENCH=PATH (a llama.cpp llama-bench binary, never built here) adds the
# llama.cpp side by side to bench_decode and bench_quant; without it they skip it.
set -euo pipefail
build="$1"; shift || true
shopt -s nullglob
for bin in "$build"/bench_*; do
  [[ -x "$bin" && -f "$bin" ]] || continue
  echo "## $(basename "$bin")"
  peer=()
  # the benchmarks with a llama.cpp column get its llama-bench when LLAMA_BENCH names one
  case "$(basename "$bin")" in
    bench_decode|bench_quant) if [[ -n "${LLAMA_BENCH:-}" ]]; then peer=(--llama-bench "$LLAMA_BENCH"); fi ;;
  esac
  "$bin" "$@" ${peer[@]+"${peer[@]}"}
  echo
done
