#!/usr/bin/env bash
# Chat templates from the command line: tiny random models whose tokenizers
# carry ChatML's or Llama-3's special tokens (added to a trained
# tokenizer.json) are served with that template (`orchard serve` names it and
# answers a chat request), `orchard chat` chats with them, --chat-template
# and a DIR/chat_template file override the choice (a template whose tokens
# the tokenizer lacks is refused naming the token), and an unknown name in
# either place exits 2 naming it.
source "$(dirname "${BASH_SOURCE[0]}")/../support/cli_common.sh" "$1"
command -v python3 >/dev/null || { echo "skipped: no python3 to edit tokenizer.json"; exit 0; }

for i in $(seq 1 40); do
  echo "The whale $i rose from the sea and the ship turned to follow it across the water."
done > "$work/text.txt"
"$bin" tokenizer train --input "$work/text.txt" --vocab-size 300 --out "$work/tok" >/dev/null 2>&1 \
  || fail "tokenizer train"
add_specials() { # add_specials DIR TOKEN...: a copy of the tokenizer with more special tokens
  local dir="$1"; shift
  mkdir -p "$dir"
  python3 - "$work/tok/tokenizer.json" "$dir/tokenizer.json" "$@" <<'PY'
import json, sys
src, dst, names = sys.argv[1], sys.argv[2], sys.argv[3:]
d = json.load(open(src))
top = max([t["id"] for t in d["added_tokens"]] + list(d["model"]["vocab"].values()))
for i, n in enumerate(names):
    d["added_tokens"].append({"id": top + 1 + i, "content": n, "single_word": False, "lstrip": False,
                              "rstrip": False, "normalized": False, "special": True})
json.dump(d, open(dst, "w"))
PY
}
add_specials "$work/tok_chatml" "<|im_start|>" "<|im_end|>" "<|endoftext|>"
add_specials "$work/tok_llama3" "<|start_header_id|>" "<|end_header_id|>" "<|eot_id|>"
cat > "$work/config.json" <<'JSON'
{"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
 "intermediate_size": 64, "vocab_size": 320, "max_position_embeddings": 128}
JSON
for t in chatml llama3; do
  "$bin" init --config "$work/config.json" --tokenizer "$work/tok_$t" --out "$work/m_$t" --seed 1 >/dev/null \
    || fail "init $t"
done

serve() { serve_start serve --model "$@" --port 0; } # serve MODEL_DIR [options]: start the server, set $port
stop() { serve_stop; }
chat_status() { # the HTTP status of a small chat request
  curl -s -o "$work/body" -w '%{http_code}' "http://127.0.0.1:$port/v1/chat/completions" \
    -H 'Content-Type: application/json' \
    -d '{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the whale"}],
         "max_tokens": 4, "temperature": 0}'
}

for t in chatml llama3; do
  serve "$work/m_$t"
  grep -q "$t chat template" "$work/serve.err" || fail "serve $t: $(cat "$work/serve.err")"
  [[ "$(chat_status)" == 200 ]] || fail "chat on $t: $(cat "$work/body")"
  grep -q '"completion_tokens"' "$work/body" || fail "chat on $t: $(cat "$work/body")"
  stop
  echo "the whale" | "$bin" chat --model "$work/m_$t" --max-tokens 4 >/dev/null 2>"$work/chat.err" \
    || fail "orchard chat on $t: $(cat "$work/chat.err")"
done

# --chat-template overrides the choice; the ChatML tokenizer has no Llama-3 tokens.
serve "$work/m_chatml" --chat-template llama3
grep -q "llama3 chat template" "$work/serve.err" || fail "--chat-template llama3: $(cat "$work/serve.err")"
[[ "$(chat_status)" == 400 ]] || fail "llama3 on a ChatML tokenizer should be 400: $(cat "$work/body")"
grep -q 'start_header_id' "$work/body" || fail "the 400 should name the missing token: $(cat "$work/body")"
stop
set +e
echo "hi" | "$bin" chat --model "$work/m_chatml" --chat-template llama3 >/dev/null 2>"$work/chat.err"; rc=$?
set -e
[[ $rc -eq 1 ]] && grep -q 'start_header_id' "$work/chat.err" || fail "chat --chat-template llama3: $rc $(cat "$work/chat.err")"

# A chat_template file in the model directory: a name or a Jinja template.
echo "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>' + message['content'] + '<|eot_id|>' }}" \
  > "$work/m_chatml/chat_template"
serve "$work/m_chatml"
grep -q "llama3 chat template" "$work/serve.err" || fail "chat_template file: $(cat "$work/serve.err")"
stop
echo "vicuna" > "$work/m_chatml/chat_template"
set +e
"$bin" serve --model "$work/m_chatml" --port 0 >/dev/null 2>"$work/serve.err"; rc=$?
set -e
[[ $rc -eq 2 ]] && grep -q "chat_template" "$work/serve.err" && grep -q vicuna "$work/serve.err" \
  || fail "an unknown template in the file: $rc $(cat "$work/serve.err")"
set +e
echo "hi" | "$bin" chat --model "$work/m_llama3" --chat-template vicuna >/dev/null 2>"$work/chat.err"; rc=$?
set -e
[[ $rc -eq 2 ]] && grep -q vicuna "$work/chat.err" || fail "chat --chat-template vicuna: $rc $(cat "$work/chat.err")"
echo "ok"
