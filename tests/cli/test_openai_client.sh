#!/usr/bin/env bash
# `orchard serve` driven by OpenAI's official Node client: installs the npm
# `openai` package (v4) into a temporary folder, builds a tiny random model
# (`orchard tokenizer train` + `orchard init`), serves it on an ephemeral
# port with an API key and runs tests/server/openai_client.mjs (a chat
# completion, the same one streamed, the model list, a tool call round trip
# and a json_object answer, and the error objects the client parses: 400
# naming the field, 401, 404). Without node,
# npm or the npm registry it prints "skipped" and passes.
source "$(dirname "${BASH_SOURCE[0]}")/../support/cli_common.sh" "$1"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
client="$here/../server/openai_client.mjs"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "skipped: node or npm is not installed"; exit 0
fi
mkdir -p "$work/npm"
( cd "$work/npm" && echo '{"name": "orchard-openai-test", "private": true, "type": "module"}' > package.json &&
  timeout 180 npm install --no-audit --no-fund --loglevel=error openai@4 >"$work/npm.log" 2>&1 ) || {
  echo "skipped: npm install openai@4 failed (no registry?): $(tail -3 "$work/npm.log")"; exit 0
}
cp "$client" "$work/npm/openai_client.mjs"

for i in $(seq 1 40); do
  echo "The whale $i rose from the sea and the ship turned to follow it across the water."
done > "$work/text.txt"
"$bin" tokenizer train --input "$work/text.txt" --vocab-size 300 --out "$work/tok" >/dev/null 2>&1 \
  || fail "tokenizer train"
cat > "$work/config.json" <<'JSON'
{"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
 "intermediate_size": 64, "vocab_size": 320, "max_position_embeddings": 1024}
JSON
"$bin" init --config "$work/config.json" --tokenizer "$work/tok" --out "$work/tiny" --seed 1 >/dev/null || fail "init"

serve_start serve --model "$work/tiny" --port 0 --parallel 2 --api-key sekrit
grep -q "orchard chat template" "$work/serve.err" || fail "serve does not name its chat template: $(cat "$work/serve.err")"

( cd "$work/npm" && timeout 120 node openai_client.mjs "http://127.0.0.1:$port/v1" tiny sekrit ) \
  || fail "the openai client checks failed (server log: $(tail -5 "$work/serve.err"))"
serve_stop
echo "ok"
