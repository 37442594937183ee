#!/usr/bin/env bash
# Writes seed bodies for fuzz/fuzz_chat_request into DIR (created if needed):
# the first byte picks the endpoint (0 chat, 1 completions, 2 embeddings),
# the rest is a JSON body as OpenAI's clients send it. Written by hand from
# OpenAI's API reference, not by orchard's code.
# Usage: fuzz/seeds_chat_request.sh DIR
set -euo pipefail
export LC_ALL=C
dir=${1:?usage: $0 DIR}
mkdir -p "$dir"

seed() { printf '%b%s' "$2" "$3" > "$dir/$1"; }

seed chat_min.bin '\x00' '{"model":"tiny","messages":[{"role":"user","content":"Hello"}]}'
seed chat_full.bin '\x00' '{"model":"tiny","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi "},{"type":"text","text":"there"}]},{"role":"assistant","content":null},{"role":"tool","content":"42","tool_call_id":"c1"}],"temperature":0.7,"top_p":0.9,"max_tokens":32,"max_completion_tokens":16,"stop":["\n\n","END"],"seed":-3,"n":2,"logprobs":true,"top_logprobs":5,"stream":true,"stream_options":{"include_usage":true},"presence_penalty":0,"frequency_penalty":0.0,"logit_bias":{},"user":"u1","response_format":{"type":"text"},"tool_choice":"none"}'
seed chat_tools.bin '\x00' '{"messages":[{"role":"user","content":"weather?"}],"tools":[{"type":"function","function":{"name":"get","parameters":{"type":"object"}}}],"tool_choice":"auto"}'
seed chat_schema.bin '\x00' '{"messages":[{"role":"developer","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{}}}}'
seed chat_bad.bin '\x00' '{"messages":[{"role":"user","content":"\u00e9\ud83d\ude00"}],"temperature":2,"top_k":40,"min_p":0.05,"repeat_penalty":1.1,"stop":"x"}'
seed completion.bin '\x01' '{"model":"tiny","prompt":"Once upon a time","max_tokens":16,"temperature":0,"echo":true,"logprobs":3,"best_of":1,"suffix":"","stop":null}'
seed completion_array.bin '\x01' '{"prompt":["a","b",""],"n":3,"seed":9,"stream":false}'
seed completion_ids.bin '\x01' '{"prompt":[1,2,3]}'
seed embeddings.bin '\x02' '{"model":"tiny","input":"The food was delicious","encoding_format":"float"}'
seed embeddings_array.bin '\x02' '{"input":["a","b"],"encoding_format":"base64","dimensions":32}'
echo "wrote $(ls "$dir" | wc -l) seeds to $dir"
