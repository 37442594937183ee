#!/usr/bin/env bash
# `orchard serve --adapter` end to end: a tiny random model (`orchard init`)
# and two adapters trained on it (`orchard train --lora`, a few steps); the
# server starts with `--adapter style=DIR` and a bare `--adapter DIR` (named
# after its directory), lists both in /v1/models with the base as parent,
# answers a chat under `model` = an adapter (the answer names it) and a
# completion under an "adapters" stack, refuses an unknown adapter with 400
# naming it, counts requests per adapter in /metrics and stops on SIGTERM.
# An adapter for another model size, a missing adapter directory and a bad
# --adapter spec are refused before the server starts.
source "$(dirname "${BASH_SOURCE[0]}")/../support/cli_common.sh" "$1"

command -v curl >/dev/null || { echo "skipped: curl is not installed"; exit 0; }
prints "--adapter NAME=PATH" "$bin" help serve || fail "help serve lists --adapter"

for i in $(seq 1 30); do
  echo "{\"text\": \"log $i: the whale and the ship sailed on the grey sea, and the crew sang $i songs.\"}"
done > "$work/docs.jsonl"
orc tokenizer train --input "$work/docs.jsonl" --jsonl-field text --vocab-size 300 --out "$work/tok" \
  >/dev/null 2>&1 || fail "tokenizer train"
orc data prepare --input "$work/docs.jsonl" --tokenizer "$work/tok" --out "$work/data" --val-fraction 0.2 \
  >/dev/null 2>&1 || fail "data prepare"
model_cfg='"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
 "intermediate_size": 64, "vocab_size": 320, "max_position_embeddings": 128'
echo "{$model_cfg}" > "$work/config.json"
orc init --config "$work/config.json" --tokenizer "$work/tok" --out "$work/base" --seed 1 >/dev/null || fail "init"
cat > "$work/ft.json" <<EOF
{"init_from": "base", "data": {"train": "data/train.bin", "val": "data/val.bin"},
 "batch": 2, "seq": 32, "steps": 3, "lr": 0.05, "min_lr": 0.005, "warmup": 1,
 "eval_every": 3, "eval_batches": 1, "save_every": 0, "log_every": 3, "seed": 5}
EOF
orc train --config "$work/ft.json" --out "$work/style" --lora rank=4,alpha=8 --quiet >/dev/null 2>"$err" \
  || fail "train --lora style: $(cat "$err")"
orc train --config "$work/ft.json" --out "$work/recovery" --lora rank=2,alpha=4,targets=q,v --quiet \
  >/dev/null 2>"$err" || fail "train --lora recovery: $(cat "$err")"

# Refused before serving: another model size (the tensor named), no such directory, a bad spec.
sed 's/"intermediate_size": 64/"intermediate_size": 96/' "$work/config.json" > "$work/wide.json"
orc init --config "$work/wide.json" --tokenizer "$work/tok" --out "$work/wbase" --seed 1 >/dev/null || fail "wide init"
sed 's/"init_from": "base"/"init_from": "wbase"/' "$work/ft.json" > "$work/wft.json"
orc train --config "$work/wft.json" --out "$work/wide" --lora rank=4 --quiet >/dev/null 2>&1 || fail "wide adapter"
expect_rc 1 "mlp.gate_proj.lora_B.weight" orc serve --model "$work/base" --port 0 --adapter big="$work/wide"
grep -q "adapter 'big'" "$err" || fail "the refusal names the adapter: $(cat "$err")"
expect_rc 1 "adapter_config.json is missing" orc serve --model "$work/base" --port 0 --adapter x="$work/nowhere"
expect_rc 2 "needs NAME=PATH" orc serve --model "$work/base" --port 0 --adapter
expect_rc 1 "want NAME=PATH" orc serve --model "$work/base" --port 0 --adapter "=$work/style"
expect_rc 1 "already loaded" orc serve --model "$work/base" --port 0 --adapter a="$work/style" --adapter a="$work/recovery"

serve_start --threads 1 serve --model "$work/base" --name base --port 0 --parallel 2 --adapter style="$work/style" \
  --adapter "$work/recovery/"
grep -q "2 adapters" "$work/serve.err" || fail "serve counts its adapters: $(cat "$work/serve.err")"

models="$(curl -sf "$url/v1/models")" || fail "GET /v1/models"
for id in base style recovery; do
  grep -q "\"id\":\"$id\"" <<<"$models" || fail "/v1/models lacks $id: $models"
done
[[ "$(grep -o '"parent":"base"' <<<"$models" | wc -l)" -eq 2 ]] || fail "adapters' parent: $models"

chat="$(curl -sf "$url/v1/chat/completions" -H 'Content-Type: application/json' \
  -d '{"model": "style", "messages": [{"role": "user", "content": "the whale"}], "max_tokens": 6, "temperature": 0}')" \
  || fail "chat under style"
grep -q '"model":"style"' <<<"$chat" || fail "the answer names the adapter: $chat"
grep -q '"object":"chat.completion"' <<<"$chat" || fail "chat shape: $chat"
text="$(curl -sf "$url/v1/completions" -H 'Content-Type: application/json' \
  -d '{"prompt": "the ship", "max_tokens": 4, "temperature": 0, "adapters": ["style", {"name": "recovery", "weight": 0.5}]}')" \
  || fail "completion under a stack"
grep -q '"model":"base"' <<<"$text" || fail "a stack by \"adapters\" answers as the base: $text"

code="$(curl -s -o "$work/bad.json" -w '%{http_code}' "$url/v1/completions" -H 'Content-Type: application/json' \
  -d '{"prompt": "x", "adapters": ["nope"]}')"
[[ "$code" == 400 ]] || fail "unknown adapter: HTTP $code $(cat "$work/bad.json")"
grep -q "nope" "$work/bad.json" && grep -q '"param":"adapters"' "$work/bad.json" || fail "400 body: $(cat "$work/bad.json")"

metrics="$(curl -sf "$url/metrics")" || fail "GET /metrics"
grep -q '^orchard_adapter_requests_total{adapter="style"} 2$' <<<"$metrics" || fail "style count: $metrics"
grep -q '^orchard_adapter_requests_total{adapter="recovery"} 1$' <<<"$metrics" || fail "recovery count: $metrics"

serve_stop
echo "ok"
