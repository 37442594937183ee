#!/usr/bin/env bash
# LoRA from the command line: `orchard train --lora` writes a PEFT adapter
# (and refuses a rank above the layer or an unknown target); `orchard
# generate --adapter` gives the ids of the merged model (`orchard lora
# merge`); an adapter for another model size is refused naming the tensor;
# `orchard lora export` writes the GGUF LoRA keys and tensors; accuracy
# recovery (`--recover-from` a Q8_0 file) lowers the loss of the dequantized
# base (`orchard import` of the same file) under `orchard eval --adapter`.
# Optional: with ORCHARD_LLAMA_CLI set to a llama.cpp llama-cli binary, its
# greedy text with --lora must equal orchard's with --adapter.
source "$(dirname "${BASH_SOURCE[0]}")/../support/cli_common.sh" "$1"

prints "usage: orchard lora merge" "$bin" help lora || fail "help lora"
prints "lora" "$bin" --help || fail "--help lists lora"
prints "--recover-from" "$bin" help train || fail "help train lists --recover-from"
expect_rc 2 "subcommand" orc lora
expect_rc 2 "unknown subcommand" orc lora fold
expect_rc 2 "merge needs" orc lora merge --model x

for i in $(seq 1 40); do
  echo "{\"text\": \"document $i: the whale, the sea and the ship sailed on. the crew sang $i songs of the sea.\"}"
done > "$work/docs.jsonl"
orc tokenizer train --input "$work/docs.jsonl" --jsonl-field text --vocab-size 300 --out "$work/tok" \
  >/dev/null 2>&1 || fail "tokenizer train"
orc data prepare --input "$work/docs.jsonl" --tokenizer "$work/tok" --out "$work/data" --val-fraction 0.2 \
  >/dev/null 2>&1 || fail "data prepare"
cat > "$work/pre.json" <<EOF
{"model": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
           "intermediate_size": 64, "vocab_size": 320, "max_position_embeddings": 64},
 "tokenizer": "tok", "data": {"train": "data/train.bin", "val": "data/val.bin"},
 "batch": 4, "seq": 32, "steps": 30, "lr": 0.01, "min_lr": 0.001, "warmup": 3,
 "eval_every": 30, "eval_batches": 2, "save_every": 0, "log_every": 10, "seed": 3}
EOF
orc train --config "$work/pre.json" --out "$work/base" --quiet >/dev/null || fail "pretraining the base"
cat > "$work/ft.json" <<EOF
{"init_from": "base", "data": {"train": "data/train.bin", "val": "data/val.bin"},
 "batch": 4, "seq": 32, "steps": 12, "lr": 0.02, "min_lr": 0.002, "warmup": 2,
 "eval_every": 12, "eval_batches": 2, "save_every": 0, "log_every": 4, "seed": 5}
EOF

# Bad adapter specs.
expect_rc 1 "larger than the layer" orc train --config "$work/ft.json" --out "$work/bad" --lora rank=17
expect_rc 1 "unknown target 'foo'" orc train --config "$work/ft.json" --out "$work/bad" --lora rank=4,targets=q,foo

# An adapter: PEFT files, no base weights.
orc train --config "$work/ft.json" --out "$work/ad" --lora rank=4,alpha=8,targets=q,k,v,o,gate,up,down \
  > "$work/train.out" 2> "$err" || fail "train --lora: $(cat "$err")"
grep -q "lora: rank 4, alpha 8" "$err" || fail "train --lora notes the adapter: $(cat "$err")"
[[ -f "$work/ad/adapter_model.safetensors" && -f "$work/ad/adapter_config.json" ]] || fail "adapter files"
[[ ! -e "$work/ad/model.safetensors" ]] || fail "an adapter checkpoint holds no base weights"
grep -q '"peft_type": "LORA"' "$work/ad/adapter_config.json" || fail "peft_type"
grep -q '"q_proj"' "$work/ad/adapter_config.json" || fail "target_modules"
orc inspect "$work/ad/adapter_model.safetensors" | grep -q "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight" \
  || fail "PEFT tensor names"

# generate --adapter == the merged model, greedy, token for token.
orc lora merge --model "$work/base" --adapter "$work/ad" --out "$work/merged" >/dev/null || fail "lora merge"
[[ -f "$work/merged/tokenizer.json" ]] || fail "merge copies the tokenizer"
a=$(orc generate --model "$work/base" --adapter "$work/ad" --prompt "document 7: the" --temperature 0 \
      --max-tokens 24 --ids --ignore-eos)
b=$(orc generate --model "$work/merged" --prompt "document 7: the" --temperature 0 --max-tokens 24 --ids --ignore-eos)
[[ "$a" == "$b" ]] || fail "generate --adapter ($a) differs from the merged model ($b)"
expect_rc 1 "adapter_config.json is missing" orc generate --model "$work/base" --adapter "$work/nowhere" --prompt x

# An adapter for another model size: the error names the tensor and both shapes.
sed 's/"hidden_size": 32/"hidden_size": 64/' "$work/pre.json" > "$work/wide.json"
orc train --config "$work/wide.json" --out "$work/wide" --steps 3 --quiet >/dev/null || fail "wide base"
expect_rc 1 "self_attn.q_proj.lora_A.weight is \[4, 32\] but this model needs \[4, 64\]" \
  orc generate --model "$work/wide" --adapter "$work/ad" --prompt x

# GGUF LoRA export.
orc lora export --adapter "$work/ad" --model "$work/base" --out "$work/ad.gguf" >/dev/null || fail "lora export"
orc inspect "$work/ad.gguf" > "$work/inspect.txt"
for want in 'general.type *STRING *"adapter"' 'adapter.type *STRING *"lora"' 'adapter.lora.alpha *FLOAT32 *8' \
            'blk.1.attn_q.weight.lora_a' 'blk.0.ffn_down.weight.lora_b'; do
  grep -q "$want" "$work/inspect.txt" || fail "ad.gguf lacks $want: $(cat "$work/inspect.txt")"
done

# Accuracy recovery over a Q8_0 file.
orc quantize --model "$work/base" --scheme q8_0 --out "$work/q8.gguf" >/dev/null 2>&1 || fail "quantize"
orc train --config "$work/pre.json" --recover-from "$work/q8.gguf" --lora rank=4,alpha=8 --steps 20 \
  --out "$work/rec" --quiet >/dev/null || fail "train --recover-from"
grep -q '"recover_from"' "$work/rec/trainer_state.json" || fail "the saved recipe names the quantized base"
orc import --gguf "$work/q8.gguf" --out "$work/qbase" >/dev/null 2>&1 || fail "import q8"
l0=$(orc eval --model "$work/qbase" --text "$work/docs.jsonl" | sed -n 's/.*"loss": \([0-9.]*\).*/\1/p')
l1=$(orc eval --model "$work/qbase" --adapter "$work/rec" --text "$work/docs.jsonl" | sed -n 's/.*"loss": \([0-9.]*\).*/\1/p')
awk -v a="$l1" -v b="$l0" 'BEGIN { exit !(a < b) }' || fail "recovery adapter: loss $l1 not below the quantized base's $l0"

# Optional cross-check with llama.cpp (a peer binary the user points to).
if [[ -n "${ORCHARD_LLAMA_CLI:-}" && -x "${ORCHARD_LLAMA_CLI}" ]]; then
  orc export --model "$work/base" --format gguf --out "$work/base.gguf" >/dev/null
  want=$(orc generate --model "$work/base" --adapter "$work/ad" --prompt "document 7: the" --temperature 0 \
           --max-tokens 16 --no-bos)
  got=$("$ORCHARD_LLAMA_CLI" -m "$work/base.gguf" --lora "$work/ad.gguf" -p "document 7: the" -n 16 --temp 0 \
          -no-cnv -t 1 2>/dev/null)
  [[ "$got" == "document 7: the$want"* ]] || fail "llama-cli --lora gave '$got', orchard '$want'"
fi
echo "ok"
