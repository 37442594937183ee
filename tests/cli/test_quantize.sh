#!/usr/bin/env bash
# orchard quantize / generate-q / eval-q with orchard's palettized schemes:
# pal4, pal2 (--group) and mixed:BITS (--calib) files load and run; eval-q
# prints eval's JSON keys, and on q8_0 its loss is close to the float model's
# `orchard eval`; mixed prints a per-tensor choice and meets its budget;
# a model whose FFN width is not a multiple of 32 keeps ffn_down in F16 (a
# note names it) and runs; usage errors exit 2, corrupt files exit 1 naming
# the tensor.
source "$(dirname "${BASH_SOURCE[0]}")/../support/cli_common.sh" "$1"
tmp="$work"

printf 'the theme of the thesis: 1234 then 5678, there and their other things.\nhello world, hello there; the world is there 42 times.\n' > "$tmp/corpus.txt"
"$bin" tokenizer train --input "$tmp/corpus.txt" --vocab-size 300 --out "$tmp/tok" >/dev/null
cat > "$tmp/cfg.json" <<'JSON'
{"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
 "intermediate_size": 128, "vocab_size": 300, "max_position_embeddings": 64, "tie_word_embeddings": false}
JSON
"$bin" init --config "$tmp/cfg.json" --tokenizer "$tmp/tok" --out "$tmp/m" --seed 5 >/dev/null

"$bin" quantize --model "$tmp/m" --scheme pal4 --out "$tmp/p4" > "$tmp/out" || fail "pal4"
grep -q "pal4" "$tmp/out" || fail "pal4 report: $(cat "$tmp/out")"
"$bin" inspect "$tmp/p4/model.gguf" > "$tmp/i4"
grep -Eq '^blk.0.ffn_up.weight.pal_lut +I8 +\[4, 16\]' "$tmp/i4" || fail "pal4 tables"
"$bin" quantize --model "$tmp/m" --scheme pal2 --group 32 --out "$tmp/p2.gguf" >/dev/null || fail "pal2"
"$bin" inspect "$tmp/p2.gguf" > "$tmp/i2"
grep -Eq '^blk.1.ffn_down.weight.pal_lut +I8 +\[4, 4\]' "$tmp/i2" || fail "pal2 tables"
"$bin" quantize --model "$tmp/m" --scheme q8_0 --out "$tmp/q8.gguf" >/dev/null || fail "q8_0"

"$bin" quantize --model "$tmp/m" --scheme mixed:5.5 --calib "$tmp/corpus.txt" --out "$tmp/mx.gguf" > "$tmp/mix" \
  || fail "mixed"
grep -q "blk.1.attn_output.weight" "$tmp/mix" || fail "mixed prints no per-tensor choice"
bpw="$(sed -n 's/^mixed:5.5: \([0-9.]*\) bits per weight$/\1/p' "$tmp/mix")"
[[ -n "$bpw" ]] || fail "mixed prints no bpw: $(cat "$tmp/mix")"
awk -v b="$bpw" 'BEGIN { exit !(b <= 5.5 && b > 4.3) }' || fail "mixed:5.5 reached $bpw bits per weight"

for f in "$tmp/p4" "$tmp/p2.gguf" "$tmp/mx.gguf"; do
  "$bin" generate-q --model "$f" --tokenizer "$tmp/tok/tokenizer.json" --prompt "the world" --temperature 0 \
    --max-tokens 5 >/dev/null 2>&1 || fail "generate-q $f"
done
"$bin" eval-q --model "$tmp/p4" --text "$tmp/corpus.txt" > "$tmp/e.json" || fail "eval-q"
for k in tokens loss ppl bits_per_byte bytes windows bits_per_weight; do
  grep -q "\"$k\"" "$tmp/e.json" || fail "eval-q JSON lacks $k: $(cat "$tmp/e.json")"
done
# q8_0 evaluates close to the float model (same tokens and bytes)
"$bin" eval --model "$tmp/m" --text "$tmp/corpus.txt" > "$tmp/f.json"
"$bin" eval-q --model "$tmp/q8.gguf" --text "$tmp/corpus.txt" --tokenizer "$tmp/tok/tokenizer.json" > "$tmp/q.json"
val() { sed -n "s/^ *\"$1\": \([-0-9.e+]*\),\{0,1\}$/\1/p" "$2"; }
[[ "$(val tokens "$tmp/f.json")" == "$(val tokens "$tmp/q.json")" ]] || fail "token counts differ"
[[ "$(val bytes "$tmp/f.json")" == "$(val bytes "$tmp/q.json")" ]] || fail "byte counts differ"
awk -v a="$(val loss "$tmp/f.json")" -v b="$(val loss "$tmp/q.json")" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d < 0.01) }' \
  || fail "q8_0 loss $(val loss "$tmp/q.json") vs float $(val loss "$tmp/f.json")"

# an FFN width that is not a multiple of 32 (make run's 688 here 80): ffn_down stays F16 in q8_0 and q4_0,
# with a note naming it, the file runs, and q8_0 still evaluates close to the float model
sed 's/"intermediate_size": 128/"intermediate_size": 80/' "$tmp/cfg.json" > "$tmp/cfg_odd.json"
"$bin" init --config "$tmp/cfg_odd.json" --tokenizer "$tmp/tok" --out "$tmp/odd" --seed 5 >/dev/null
for s in q8_0 q4_0; do
  "$bin" quantize --model "$tmp/odd" --scheme $s --out "$tmp/odd_$s.gguf" >"$tmp/oout" 2>"$tmp/oerr" || fail "odd $s: $(cat "$tmp/oerr")"
  grep -q "note: blk.1.ffn_down.weight \[64, 80\]: .*kept in F16" "$tmp/oerr" || fail "odd $s: no note: $(cat "$tmp/oerr")"
  [[ $(grep -c "^note:" "$tmp/oerr") -eq 2 ]] || fail "odd $s: one note per ffn_down expected: $(cat "$tmp/oerr")"
  "$bin" inspect "$tmp/odd_$s.gguf" > "$tmp/oi"
  grep -Eq '^blk.1.ffn_down.weight +F16 +\[64, 80\]' "$tmp/oi" || fail "odd $s: ffn_down is not F16"
  grep -Eiq "^blk.1.ffn_up.weight +$s " "$tmp/oi" || fail "odd $s: ffn_up is not $s"
  "$bin" generate-q --model "$tmp/odd_$s.gguf" --tokenizer "$tmp/tok/tokenizer.json" --prompt "the world" \
    --temperature 0 --max-tokens 5 >/dev/null 2>&1 || fail "generate-q odd $s"
done
"$bin" eval --model "$tmp/odd" --text "$tmp/corpus.txt" > "$tmp/of.json"
"$bin" eval-q --model "$tmp/odd_q8_0.gguf" --text "$tmp/corpus.txt" --tokenizer "$tmp/tok/tokenizer.json" > "$tmp/oq.json"
awk -v a="$(val loss "$tmp/of.json")" -v b="$(val loss "$tmp/oq.json")" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d < 0.01) }' \
  || fail "odd q8_0 loss $(val loss "$tmp/oq.json") vs float $(val loss "$tmp/of.json")"

expect_rc 2 "calib" "$bin" quantize --model "$tmp/m" --scheme mixed:3.5 --out "$tmp/x.gguf"
expect_rc 2 "mixed:BITS" "$bin" quantize --model "$tmp/m" --scheme mixed:abc --out "$tmp/x.gguf"
expect_rc 2 "multiple of 16" "$bin" quantize --model "$tmp/m" --scheme pal4 --group 24 --out "$tmp/x.gguf"
expect_rc 1 "below" "$bin" quantize --model "$tmp/m" --scheme mixed:1 --calib "$tmp/corpus.txt" --out "$tmp/x.gguf"
expect_rc 1 "dividing the 64 columns" "$bin" quantize --model "$tmp/m" --scheme pal4 --group 48 --out "$tmp/x.gguf"
expect_rc 2 "required" "$bin" eval-q --model "$tmp/p4"
# a palettized file whose table tensor is cut short: the loader names it
python3 - "$tmp/p4/model.gguf" "$tmp/bad.gguf" <<'PY' || fail "could not build the corrupt file"
import sys
data = bytearray(open(sys.argv[1], 'rb').read())
name = b'blk.0.attn_v.weight.pal_lut'
i = data.index(name) + len(name)
# tensor info: n_dims u32, then dims u64 (ggml order: entries, groups); halve the groups
import struct
nd = struct.unpack_from('<I', data, i)[0]
assert nd == 2
g = struct.unpack_from('<Q', data, i + 4 + 8)[0]
struct.pack_into('<Q', data, i + 4 + 8, g // 2)
open(sys.argv[2], 'wb').write(data)
PY
expect_rc 1 "blk.0.attn_v.weight" "$bin" eval-q --model "$tmp/bad.gguf" --text "$tmp/corpus.txt" --tokenizer "$tmp/tok/tokenizer.json"
echo "quantize ok"
