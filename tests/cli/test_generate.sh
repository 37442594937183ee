#!/usr/bin/env bash
# `orchard init`, `generate`, `chat` and `eval` on a tiny random model made on
# the spot (a tokenizer trained here, a 2-layer config): greedy with and
# without the KV cache, seeds, --ids, --stats, --stop, a prompt longer than
# the context, bad flags (exit 2), a missing model and a tokenizer larger
# than the model's vocabulary (exit 1, naming the file), piped chat with
# /reset and turns dropped to fit the context, and eval's JSON on text and
# JSONL.
source "$(dirname "${BASH_SOURCE[0]}")/../support/cli_common.sh" "$1"

for i in $(seq 1 40); do
  echo "The whale $i rose from the sea and the ship turned to follow it across the water."
done > "$work/text.txt"
"$bin" tokenizer train --input "$work/text.txt" --vocab-size 300 --out "$work/tok" >/dev/null 2>&1 \
  || fail "tokenizer train"
cat > "$work/config.json" <<'EOF'
{"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
 "intermediate_size": 64, "vocab_size": 320, "max_position_embeddings": 64}
EOF
m="$work/model"
"$bin" init --config "$work/config.json" --tokenizer "$work/tok" --out "$m" --seed 1 >/dev/null || fail "init"
for f in config.json model.safetensors tokenizer.json; do [[ -s "$m/$f" ]] || fail "init wrote no $f"; done
grep -q '"bos_token_id"' "$m/config.json" || fail "init sets bos_token_id from the tokenizer"
prints "generate" "$bin" --help || fail "--help lists generate"
prints "^  init" "$bin" --help && fail "--help should not list init"
prints "usage: orchard init" "$bin" help init || fail "help init"
prints "--repeat-penalty" "$bin" help generate || fail "help generate"
expect_rc 2 "are required" "$bin" init --config "$work/config.json"
cat > "$work/small.json" <<'EOF'
{"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64, "vocab_size": 100}
EOF
expect_rc 1 "small.json has vocab_size 100" "$bin" init --config "$work/small.json" --tokenizer "$work/tok" \
  --out "$work/bad"

# generate: greedy with and without the cache, seeds, ids, stats.
g=("$bin" generate --model "$m" --prompt "The whale" --max-tokens 24)
"${g[@]}" --temperature 0 --ids > "$work/cached" || fail "greedy generate"
"${g[@]}" --temperature 0 --ids --no-cache > "$work/uncached" || fail "greedy generate --no-cache"
cmp -s "$work/cached" "$work/uncached" || fail "cache changed greedy output: $(cat "$work/cached") vs $(cat "$work/uncached")"
grep -Eq '^\[[0-9]+(, [0-9]+)*\]$' "$work/cached" || fail "--ids is not a JSON array: $(cat "$work/cached")"
"${g[@]}" --temperature 1 --seed 5 > "$work/s1" || fail "sampled generate"
"${g[@]}" --temperature 1 --seed 5 > "$work/s2" || fail "sampled generate again"
cmp -s "$work/s1" "$work/s2" || fail "same seed gave different text"
"${g[@]}" --temperature 1 --seed 5 --top-k 5 --top-p 0.9 --min-p 0.1 --repeat-penalty 1.3 --repeat-last-n 8 \
  --ignore-eos --stats > /dev/null 2> "$work/stats" || fail "generate with every sampler flag"
for key in prompt_tokens prompt_tokens_per_s decode_tokens decode_tokens_per_s; do
  grep -q "\"$key\": [0-9]" "$work/stats" || fail "--stats lacks $key: $(cat "$work/stats")"
done
grep -q '"decode_tokens": 23' "$work/stats" || fail "24 tokens take 23 decode steps: $(cat "$work/stats")"

# --stop: cut at a string that spans tokens of the greedy text (needs python3 for the bytes).
if command -v python3 >/dev/null; then
  "${g[@]}" --temperature 0 > "$work/greedy.txt"
  python3 - "$work/greedy.txt" "$work/stop" "$work/want" <<'EOF'
import sys
t = open(sys.argv[1], "rb").read()
for i in range(1, len(t) - 2):
    s = t[i:i + 3]
    if all(32 <= b < 127 for b in s):
        open(sys.argv[2], "wb").write(s)
        open(sys.argv[3], "wb").write(t[:t.find(s)])
        break
EOF
  if [[ -s "$work/stop" ]]; then
    "${g[@]}" --temperature 0 --stop "zzz-never" --stop "$(cat "$work/stop")" > "$work/stopped" || fail "--stop"
    cmp -s "$work/stopped" "$work/want" || fail "--stop '$(cat "$work/stop")' printed the wrong text"
  fi
fi

# Errors: bad values exit 2, a prompt longer than the context and bad models exit 1.
expect_rc 2 "--temperature expects" "${g[@]}" --temperature -1
expect_rc 2 "--top-p" "${g[@]}" --top-p 0
expect_rc 2 "--max-tokens expects" "${g[@]}" --max-tokens 0
expect_rc 2 "--min-p expects" "${g[@]}" --min-p 2
expect_rc 2 "unknown argument" "${g[@]}" --bogus
expect_rc 2 "are required" "$bin" generate --model "$m"
expect_rc 2 "are required" "$bin" generate --model "$m" --prompt a --prompt-file "$work/text.txt"
expect_rc 1 "has [0-9]* tokens but the context holds only 64" "$bin" generate --model "$m" \
  --prompt-file "$work/text.txt"
expect_rc 1 "$work/missing" "$bin" generate --model "$work/missing" --prompt hi
sed 's/"vocab_size": 320/"vocab_size": 300/' "$work/config.json" > "$work/config300.json"
"$bin" init --config "$work/config300.json" --tokenizer "$work/tok" --out "$work/bigtok" >/dev/null || fail "init 300"
"$bin" tokenizer train --input "$work/text.txt" --vocab-size 400 --out "$work/tok400" >/dev/null 2>&1
cp "$work/tok400/tokenizer.json" "$work/bigtok/" # more than 300 ids
expect_rc 1 "bigtok/tokenizer.json: the tokenizer has [0-9]* ids but .*bigtok/config.json has vocab_size 300" \
  "$bin" generate --model "$work/bigtok" --prompt hi
echo '{"hidden_size": 32' > "$work/bigtok/config.json"
expect_rc 1 "bigtok/config.json" "$bin" generate --model "$work/bigtok" --prompt hi

# chat: piped lines are messages; /reset and /exit; old turns dropped to fit the context.
printf 'hello there\n/reset\nthe whale\n/exit\nnever read\n' |
  "$bin" chat --model "$m" --max-tokens 5 --temperature 0 > "$work/chat.out" 2> "$work/chat.err" ||
  fail "chat: $(cat "$work/chat.err")"
[[ -s "$work/chat.out" ]] || fail "chat printed nothing"
grep -q "reset" "$work/chat.err" || fail "chat /reset notice"
printf 'the whale rose\nthe ship turned\nthe sea was wide\n' |
  "$bin" chat --model "$m" --max-tokens 4 --temperature 0 --context 40 --system "be brief" \
  > "$work/chat.out" 2> "$work/chat.err" || fail "chat with a short context: $(cat "$work/chat.err")"
grep -q "dropped the oldest turn" "$work/chat.err" || fail "chat never dropped a turn: $(cat "$work/chat.err")"
expect_rc 2 "unknown argument" "$bin" chat --model "$m" --bogus

# eval: JSON with the four numbers; JSONL with --field; overlapping windows score the same tokens.
"$bin" eval --model "$m" --text "$work/text.txt" > "$work/eval.json" || fail "eval"
for key in tokens loss ppl bits_per_byte; do
  grep -q "\"$key\": [0-9]" "$work/eval.json" || fail "eval lacks $key: $(cat "$work/eval.json")"
done
tokens=$(grep -o '"tokens": [0-9]*' "$work/eval.json" | grep -o '[0-9]*$')
loss=$(grep -o '"loss": [0-9.e+-]*' "$work/eval.json" | grep -o '[0-9.e+-]*$')
awk -v l="$loss" 'BEGIN { exit !(l > 4 && l < 7.5) }' || fail "a random model's loss $loss is far from ln(320)"
grep -q "\"bytes\": $(wc -c < "$work/text.txt")" "$work/eval.json" || fail "eval bytes: $(cat "$work/eval.json")"
"$bin" eval --model "$m" --text "$work/text.txt" --stride 16 > "$work/eval16.json" || fail "eval --stride"
grep -q "\"tokens\": $tokens," "$work/eval16.json" || fail "--stride changed the token count"
sed 's/.*/{"body": "&"}/' "$work/text.txt" > "$work/docs.jsonl"
"$bin" eval --model "$m" --text "$work/docs.jsonl" --field body > "$work/evalj.json" || fail "eval jsonl"
grep -q '"tokens": [0-9]' "$work/evalj.json" || fail "eval jsonl output"
expect_rc 1 "docs.jsonl" "$bin" eval --model "$m" --text "$work/docs.jsonl"
expect_rc 2 "are required" "$bin" eval --model "$m"
expect_rc 2 "--stride expects" "$bin" eval --model "$m" --text "$work/text.txt" --stride 0
expect_rc 2 "exceed the model" "$bin" eval --model "$m" --text "$work/text.txt" --stride 65
echo "ok"
