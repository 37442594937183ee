#!/usr/bin/env bash
# `orchard serve` with a quantized model, end to end: a tiny model trained a
# few steps, quantized to q8_0 (a GGUF file) and q4_0 (a directory), a LoRA
# adapter trained over the float model and an accuracy-recovery adapter
# trained over the q4_0 base (`train --recover-from`). Each quantized model
# is served with the adapter selectable per request; a chat, a completion
# and a streamed completion (greedy) give the text `orchard generate-q`
# gives on the same prompt (the chat's prompt rendered in the orchard
# template; a completion's with its begin token), and so does a completion
# under the adapter (generate-q --adapter); /v1/models, embeddings, echo
# with logprobs, n = 2 and /metrics answer. Served with --recovery, every
# request runs over the recovery adapter: a completion equals generate-q
# --adapter REC, and one under the adapter equals --adapter REC,ADAPTER.
# Bad input: --recovery for a float model (exit 2), a recovery adapter for
# another shape (exit 1 naming the tensor), a truncated GGUF (exit 1).
source "$(dirname "${BASH_SOURCE[0]}")/../support/cli_common.sh" "$1"

command -v curl >/dev/null || { echo "skipped: curl is not installed"; exit 0; }
command -v python3 >/dev/null || { echo "skipped: python3 is not installed"; exit 0; }
prints "--recovery" "$bin" help serve || fail "help serve lists --recovery"

for i in $(seq 1 30); do
  echo "{\"text\": \"log $i: the whale and the ship sailed on the grey sea, and the crew sang $i songs.\"}"
done > "$work/docs.jsonl"
# the adapters learn other text, so that each changes the greedy answers
for i in $(seq 1 30); do echo "{\"text\": \"the ship sank, and the moon rose over the crew $i times.\"}"; done > "$work/moon.jsonl"
for i in $(seq 1 30); do echo "{\"text\": \"the ship and the whale sang songs $i nights.\"}"; done > "$work/songs.jsonl"
orc tokenizer train --input "$work/docs.jsonl" --jsonl-field text --vocab-size 300 --out "$work/tok" \
  >/dev/null 2>&1 || fail "tokenizer train"
for d in docs moon songs; do
  orc data prepare --input "$work/$d.jsonl" --tokenizer "$work/tok" --out "$work/data_$d" --val-fraction 0.2 \
    >/dev/null 2>&1 || fail "data prepare $d"
done
echo '{"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
 "intermediate_size": 64, "vocab_size": 320, "max_position_embeddings": 128}' > "$work/config.json"
orc init --config "$work/config.json" --tokenizer "$work/tok" --out "$work/init" --seed 1 >/dev/null || fail "init"
train_cfg() { # $1: init_from, $2: steps, $3: data set, $4: learning rate
  cat <<EOF
{"init_from": "$1", "data": {"train": "data_$3/train.bin", "val": "data_$3/val.bin"},
 "batch": 4, "seq": 32, "steps": $2, "lr": $4, "min_lr": $(awk "BEGIN { print $4 / 10 }"), "warmup": 2,
 "eval_every": $2, "eval_batches": 1, "save_every": 0, "log_every": $2, "seed": 5}
EOF
}
train_cfg init 40 docs 0.03 > "$work/pre.json"
orc train --config "$work/pre.json" --out "$work/m" --quiet >/dev/null 2>"$err" || fail "train: $(cat "$err")"
orc quantize --model "$work/m" --scheme q8_0 --out "$work/q8.gguf" >/dev/null 2>&1 || fail "quantize q8_0"
orc quantize --model "$work/m" --scheme q4_0 --out "$work/q4" >/dev/null 2>&1 || fail "quantize q4_0"
train_cfg m 10 moon 0.01 > "$work/ft.json"
orc train --config "$work/ft.json" --out "$work/style" --lora rank=4,alpha=8 --quiet >/dev/null 2>"$err" \
  || fail "train --lora: $(cat "$err")"
train_cfg m 20 songs 0.02 > "$work/rt.json"
orc train --config "$work/rt.json" --recover-from "$work/q4/model.gguf" --lora rank=4,alpha=8 \
  --out "$work/rec" --quiet >/dev/null 2>"$err" || fail "train --recover-from: $(cat "$err")"

# Greedy text of generate-q after PROMPT ($1; special tokens allowed), with more options after it.
gen_q() {
  local model="$1" prompt="$2"; shift 2
  local out
  out="$(orc generate-q --model "$model" --prompt "$prompt" --temperature 0 "$@" 2>"$err")" \
    || fail "generate-q $model: $(cat "$err")"
  printf '%s' "${out#"$prompt"}"
}

# POST $2 to $url$1; the body on stdout.
post() { curl -sf "$url$1" -H 'Content-Type: application/json' -d "$2" || fail "POST $1 $2"; }

# The answer text of a JSON body ($1: chat or completion), or of an SSE stream ($1: stream).
answer() {
  python3 -c '
import json, sys
kind, body = sys.argv[1], sys.stdin.read()
if kind == "stream":
    text, reason = "", None
    for line in body.splitlines():
        if line.startswith("data: {"):
            c = json.loads(line[6:])["choices"][0]
            text += c.get("text") or ""
            reason = c.get("finish_reason") or reason
    print(json.dumps([text, reason]))
else:
    c = json.loads(body)["choices"][0]
    print(json.dumps([c["message"]["content"] if kind == "chat" else c["text"], c["finish_reason"]]))
' "$1"
}

# expect_text WHAT GOT_JSON WANT: the server's greedy text equals generate-q's
# (when the server stopped on a stop token, generate-q's continues it).
expect_text() {
  python3 -c '
import json, sys
what, (got, reason), want = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
ok = got == want if reason == "length" else want.startswith(got)
if not ok or not got:
    sys.exit("FAIL: %s: the server said %r (%s), generate-q %r" % (what, got, reason, want))
' "$1" "$2" "$3" || exit 1
}

N=8
plain="$(gen_q "$work/q4" "<|begin_of_text|>the ship" --max-tokens $N)"
for a in "$work/style" "$work/rec" "$work/rec,$work/style"; do
  other="$(gen_q "$work/q4" "<|begin_of_text|>the ship" --max-tokens $N --adapter "$a")"
  [[ "$other" != "$plain" ]] || fail "adapter $a does not change the greedy text '$plain'"
done
chat_prompt=$'<|begin_of_text|><|user|>\nthe whale<|end|>\n<|assistant|>\n'
for q in q8.gguf q4; do
  serve_start --threads 1 serve --model "$work/$q" --name qm --port 0 --parallel 2 --adapter style="$work/style"
  grep -q "quantized model" "$work/serve.err" || fail "$q: serve names the quantized model: $(cat "$work/serve.err")"

  want="$(gen_q "$work/$q" "$chat_prompt" --max-tokens $N)"
  got="$(post /v1/chat/completions '{"messages": [{"role": "user", "content": "the whale"}], "max_tokens": '$N', "temperature": 0}' | answer chat)"
  expect_text "$q chat" "$got" "$want"

  want="$(gen_q "$work/$q" "<|begin_of_text|>the ship" --max-tokens $N)"
  got="$(post /v1/completions '{"prompt": "the ship", "max_tokens": '$N', "temperature": 0}' | answer completion)"
  expect_text "$q completion" "$got" "$want"
  got="$(post /v1/completions '{"prompt": "the ship", "max_tokens": '$N', "temperature": 0, "stream": true}' | answer stream)"
  expect_text "$q streamed completion" "$got" "$want"

  want="$(gen_q "$work/$q" "<|begin_of_text|>the ship" --max-tokens $N --adapter "$work/style")"
  got="$(post /v1/completions '{"model": "style", "prompt": "the ship", "max_tokens": '$N', "temperature": 0}' | answer completion)"
  expect_text "$q completion under the adapter" "$got" "$want"

  models="$(curl -sf "$url/v1/models")" || fail "GET /v1/models"
  grep -q '"id":"qm"' <<<"$models" && grep -q '"parent":"qm"' <<<"$models" || fail "$q /v1/models: $models"
  emb="$(post /v1/embeddings '{"input": ["the whale", "the grey sea"]}')"
  python3 -c 'import json,sys; d=json.load(sys.stdin)["data"]; assert len(d)==2 and len(d[1]["embedding"])==32, d' \
    <<<"$emb" || fail "$q embeddings: $emb"
  echo_lp="$(post /v1/completions '{"prompt": "the whale", "max_tokens": 2, "echo": true, "logprobs": 1, "n": 2, "temperature": 0.7, "seed": 3}')"
  python3 -c '
import json,sys
c=json.load(sys.stdin)["choices"]
assert len(c)==2 and all(x["text"].startswith("the whale") for x in c), c
assert len(c[0]["logprobs"]["tokens"]) >= 3, c[0]["logprobs"]' <<<"$echo_lp" || fail "$q echo, logprobs, n: $echo_lp"
  metrics="$(curl -sf "$url/metrics")" || fail "GET /metrics"
  grep -q '^orchard_adapter_requests_total{adapter="style"} 1$' <<<"$metrics" || fail "$q metrics: $metrics"
  serve_stop
done

# The recovery adapter under every request.
serve_start --threads 1 serve --model "$work/q4" --name qm --port 0 --recovery "$work/rec" --adapter style="$work/style"
grep -q "1 recovery adapter" "$work/serve.err" || fail "serve --recovery: $(cat "$work/serve.err")"
want="$(gen_q "$work/q4" "<|begin_of_text|>the ship" --max-tokens $N --adapter "$work/rec")"
got="$(post /v1/completions '{"prompt": "the ship", "max_tokens": '$N', "temperature": 0}' | answer completion)"
expect_text "completion over the recovery adapter" "$got" "$want"
want="$(gen_q "$work/q4" "<|begin_of_text|>the ship" --max-tokens $N --adapter "$work/rec,$work/style")"
got="$(post /v1/completions '{"model": "style", "prompt": "the ship", "max_tokens": '$N', "temperature": 0, "stream": true}' | answer stream)"
expect_text "streamed completion under the adapter over the recovery adapter" "$got" "$want"
serve_stop

# Bad input, refused before serving.
expect_rc 2 "is for a quantized model" orc serve --model "$work/m" --port 0 --recovery "$work/rec"
sed 's/"intermediate_size": 64/"intermediate_size": 96/' "$work/config.json" > "$work/wide.json"
orc init --config "$work/wide.json" --tokenizer "$work/tok" --out "$work/wbase" --seed 1 >/dev/null || fail "wide init"
train_cfg wbase 2 docs 0.01 > "$work/wft.json"
orc train --config "$work/wft.json" --out "$work/wide" --lora rank=2 --quiet >/dev/null 2>&1 || fail "wide adapter"
expect_rc 1 "mlp.gate_proj.lora_B.weight" orc serve --model "$work/q4" --port 0 --recovery "$work/wide"
grep -q -- "--recovery" "$err" || fail "the refusal names --recovery: $(cat "$err")"
head -c 3000 "$work/q8.gguf" > "$work/cut.gguf"
expect_rc 1 "cut.gguf" orc serve --model "$work/cut.gguf" --port 0
echo "ok"
