#!/usr/bin/env bash
# MoE language models from the command line: `orchard train` with MoE keys in
# the recipe's model config (token choice and expert choice), the MoE fields
# of the JSONL log and the progress line, expert tensor names in the
# checkpoint, resume, `orchard generate` (greedy, with and without the KV
# cache when capacity never drops) and `orchard eval`, and bad MoE keys
# rejected with the key named. Tokenizer and shards are made here.
source "$(dirname "${BASH_SOURCE[0]}")/../support/cli_common.sh" "$1"

for i in $(seq 1 40); do
  echo "{\"text\": \"document $i: the whale, the sea and the ship sailed on. the crew sang $i songs of the sea.\"}"
done > "$work/docs.jsonl"
orc tokenizer train --input "$work/docs.jsonl" --jsonl-field text --vocab-size 300 --out "$work/tok" \
  >/dev/null 2>&1 || fail "tokenizer train"
orc data prepare --input "$work/docs.jsonl" --tokenizer "$work/tok" --out "$work/data" --val-fraction 0.2 \
  >/dev/null 2>&1 || fail "data prepare"

recipe() { # $1 file, $2 MoE keys
  cat > "$1" <<JSON
{"model": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
           "intermediate_size": 64, "vocab_size": 320, "max_position_embeddings": 64, $2},
 "tokenizer": "tok", "data": {"train": "data/train.bin", "val": "data/val.bin"},
 "batch": 4, "seq": 16, "accum": 2, "steps": 8, "lr": 0.01, "min_lr": 0.001, "warmup": 2,
 "eval_every": 4, "eval_batches": 2, "save_every": 0, "log_every": 2, "seed": 3}
JSON
}

# Token choice, every layer MoE, capacity that never drops (so decoding
# token by token routes like the full forward).
recipe "$work/tc.json" '"num_experts": 4, "router": "top2", "moe_intermediate_size": 32, "capacity_factor": 8'
orc train --config "$work/tc.json" --out "$work/tc" --log "$work/tc.jsonl" > /dev/null 2> "$err" \
  || fail "train token choice: $(cat "$err")"
grep -q "moe: 4 experts (token_choice" "$err" || fail "moe summary line: $(cat "$err")"
grep -q "moe drop 0.0% H " "$err" || fail "progress line lacks moe stats: $(cat "$err")"
[[ $(wc -l < "$work/tc.jsonl") -eq 8 ]] || fail "log lines"
head -1 "$work/tc.jsonl" | grep -Eq '"moe_tokens_per_expert": \[\[[0-9]+, [0-9]+, [0-9]+, [0-9]+\], \[' \
  || fail "log lacks tokens per expert: $(head -1 "$work/tc.jsonl")"
head -1 "$work/tc.jsonl" | grep -q '"moe_dropped": 0, "moe_router_entropy": [0-9.]*, "moe_aux_loss": [0-9.]' \
  || fail "log lacks moe stats: $(head -1 "$work/tc.jsonl")"
grep -q '"num_experts": 4' "$work/tc/config.json" || fail "config.json lacks num_experts"
grep -q '"router": "token_choice"' "$work/tc/config.json" || fail "config.json lacks router"
orc inspect "$work/tc/model.safetensors" > "$work/names" || fail "inspect"
for n in model.layers.0.mlp.gate.weight model.layers.1.mlp.experts.gate_proj.weight \
         model.layers.1.mlp.experts.up_proj.weight model.layers.1.mlp.experts.down_proj.weight; do
  grep -q "$n" "$work/names" || fail "checkpoint lacks $n"
done
grep -q "model.layers.0.mlp.gate_proj.weight" "$work/names" && fail "MoE layer still has a dense FFN"
# The loss went down.
first=$(head -1 "$work/tc.jsonl" | sed -E 's/.*"loss": ([0-9.e+-]+).*/\1/')
last=$(tail -1 "$work/tc.jsonl" | sed -E 's/.*"loss": ([0-9.e+-]+).*/\1/')
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }' || fail "loss did not fall: $first -> $last"

# Resume continues to more steps.
orc train --out "$work/tc" --resume --steps 10 > /dev/null 2> "$err" || fail "resume: $(cat "$err")"
grep -q '"step": 10' "$work/tc/trainer_state.json" || fail "resume did not reach step 10"

# Generate and eval.
g=("$bin" generate --model "$work/tc" --prompt "the whale" --max-tokens 12 --temperature 0 --ids)
"${g[@]}" > "$work/cached" 2> "$err" || fail "generate: $(cat "$err")"
"${g[@]}" --no-cache > "$work/uncached" 2> "$err" || fail "generate --no-cache: $(cat "$err")"
grep -Eq '^\[[0-9]+(, [0-9]+)*\]$' "$work/cached" || fail "generate output: $(cat "$work/cached")"
cmp -s "$work/cached" "$work/uncached" || fail "cache changed greedy output: $(cat "$work/cached") vs $(cat "$work/uncached")"
head -c 2000 "$work/docs.jsonl" | sed -E 's/.*"text": "([^"]*)".*/\1/' > "$work/text.txt"
"$bin" eval --model "$work/tc" --text "$work/text.txt" > "$work/eval" 2> "$err" || fail "eval: $(cat "$err")"
grep -q '"bits_per_byte"\|"loss"\|"ppl"' "$work/eval" || fail "eval output: $(cat "$work/eval")"

# Expert choice, MoE every second layer, with routing groups.
recipe "$work/ec.json" '"num_experts": 4, "router": "expert_choice", "moe_every": 2, "moe_group_size": 32'
orc train --config "$work/ec.json" --out "$work/ec" --log "$work/ec.jsonl" > /dev/null 2> "$err" \
  || fail "train expert choice: $(cat "$err")"
orc inspect "$work/ec/model.safetensors" > "$work/names" || fail "inspect"
grep -q "model.layers.0.mlp.gate_proj.weight" "$work/names" || fail "layer 0 should be dense"
grep -q "model.layers.1.mlp.experts.down_proj.weight" "$work/names" || fail "layer 1 should be MoE"
# every expert takes ceil(32 * 2 / 4) = 16 tokens of each of the 2 groups, in each of 2 micro-batches
head -1 "$work/ec.jsonl" | grep -q '"moe_tokens_per_expert": \[\[64, 64, 64, 64\]\]' \
  || fail "expert choice loads: $(head -1 "$work/ec.jsonl")"
"$bin" generate --model "$work/ec" --prompt "the sea" --max-tokens 8 --temperature 0 > /dev/null 2> "$err" \
  || fail "generate expert choice: $(cat "$err")"

# GGUF has no place for orchard's MoE layers yet: a clear refusal, not a crash.
set +e; "$bin" export --model "$work/ec" --format gguf --out "$work/ec.gguf" > /dev/null 2> "$err"; rc=$?; set -e
[[ $rc -eq 1 ]] && grep -q 'mixture-of-experts' "$err" || fail "export of an MoE model: exit $rc: $(cat "$err")"
[[ ! -e "$work/ec.gguf" ]] || fail "export of an MoE model left a file"

# Bad MoE keys name the key.
recipe "$work/bad.json" '"num_experts": 4, "router": "soft"'
set +e; orc train --config "$work/bad.json" --out "$work/bad" > /dev/null 2> "$err"; rc=$?; set -e
[[ $rc -ne 0 ]] && grep -q '"router"' "$err" || fail "bad router accepted or unnamed: $(cat "$err")"
recipe "$work/bad.json" '"num_experts": 4, "moe_top_k": 5'
set +e; orc train --config "$work/bad.json" --out "$work/bad" > /dev/null 2> "$err"; rc=$?; set -e
[[ $rc -ne 0 ]] && grep -q 'moe_top_k' "$err" || fail "bad moe_top_k accepted or unnamed: $(cat "$err")"
echo "moe ok"
