#!/usr/bin/env bash
# orchard export / import: a model directory -> GGUF -> a model directory gives
# the same greedy continuation and the same tokens; f16 export works; usage
# errors exit 2, bad files exit 1 naming the file.
source "$(dirname "${BASH_SOURCE[0]}")/../support/cli_common.sh" "$1"
tmp="$work"

printf 'the theme of the thesis: 1234 then 5678, there and their other things.\nhello world, hello there; the world is there 42 times.\n' > "$tmp/corpus.txt"
"$bin" tokenizer train --input "$tmp/corpus.txt" --vocab-size 300 --out "$tmp/tok" >/dev/null
cat > "$tmp/cfg.json" <<'JSON'
{"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
 "intermediate_size": 64, "vocab_size": 300, "max_position_embeddings": 64, "tie_word_embeddings": false}
JSON
"$bin" init --config "$tmp/cfg.json" --tokenizer "$tmp/tok" --out "$tmp/m" --seed 5 >/dev/null

"$bin" export --model "$tmp/m" --format gguf --out "$tmp/m.gguf" | grep -q "llama architecture, f32" || fail "export f32"
"$bin" inspect "$tmp/m.gguf" | grep -q 'tokenizer.ggml.pre .*"smollm"' || fail "pre-tokenizer key"
"$bin" inspect "$tmp/m.gguf" | grep -Eq '^blk.1.attn_k.weight +F32 +\[16, 32\]' || fail "tensor names"
"$bin" export --model "$tmp/m" --format gguf --out "$tmp/m16.gguf" --type f16 >/dev/null || fail "export f16"
"$bin" inspect "$tmp/m16.gguf" | grep -Eq '^blk.0.ffn_up.weight +F16 ' || fail "f16 tensors"

"$bin" import --gguf "$tmp/m.gguf" --out "$tmp/back" | grep -q "tokenizer.json (gpt2, pre-tokenizer smollm)" \
  || fail "import"
printf 'the world 1234' > "$tmp/p.txt"
"$bin" tokenize --model "$tmp/m" --text "$tmp/corpus.txt" > "$tmp/a.ids"
"$bin" tokenize --model "$tmp/back" --text "$tmp/corpus.txt" > "$tmp/b.ids"
cmp "$tmp/a.ids" "$tmp/b.ids" || fail "imported tokenizer encodes differently"
gen() { "$bin" generate --model "$1" --prompt-file "$tmp/p.txt" --temperature 0 --max-tokens 12 --ignore-eos --ids; }
[[ "$(gen "$tmp/m")" == "$(gen "$tmp/back")" ]] || fail "greedy continuation differs after the round trip"

expect_rc 2 "required" "$bin" export --model "$tmp/m" --format gguf
expect_rc 2 "f32 or f16" "$bin" export --model "$tmp/m" --format gguf --out "$tmp/x.gguf" --type q4
expect_rc 2 "not offered" "$bin" export --model "$tmp/m" --format onnx --out "$tmp/x.onnx"
expect_rc 2 "required" "$bin" import --gguf "$tmp/m.gguf"
head -c 100 "$tmp/m.gguf" > "$tmp/cut.gguf"
expect_rc 1 "cut.gguf" "$bin" import --gguf "$tmp/cut.gguf" --out "$tmp/cut"
mkdir -p "$tmp/notok" && cp "$tmp/m/config.json" "$tmp/m/model.safetensors" "$tmp/notok/"
expect_rc 1 "no-tokenizer" "$bin" export --model "$tmp/notok" --format gguf --out "$tmp/x.gguf"
echo "export ok"
