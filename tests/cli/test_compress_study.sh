#!/usr/bin/env bash
# `orchard study compress` on two tiny random models (--model twice) and a
# small generated text: each table has the seven rows plus the control
# (fp32 + the same recovery training), bits per weight fall in the expected
# order (fp32 > q8_0 > q4_0 > pal4 > mixed ~3.5 > pal2), the recovery rows
# name a saved adapter and it lowers the validation loss, the control's
# adapter trained over the float model; the second model's FFN (80) is not a
# multiple of 32, so its ffn_down stays F16 in every row and the note names
# it; OUT/results.md joins both tables; `eval-q --adapter` on the
# q8_0 file moves the loss by the same amount as `eval --adapter` moves the
# float model's (the quantized forward rounds activations to Q8_0, so the
# two agree to a few thousandths of a nat, far below the adapter's effect);
# `generate-q --adapter` runs; bad input (missing --text, unknown option,
# an existing study, a text too short to split, an adapter for another
# shape) gives a clear error.
source "$(dirname "${BASH_SOURCE[0]}")/../support/cli_common.sh" "$1"

python3 - "$work/text.txt" <<'PY'
import random, sys
random.seed(3)
words = ("the a river stone ship whale captain sea wind north south ran saw told over under "
         "quickly slowly bright dark morning night").split()
with open(sys.argv[1], "w") as f:
    for _ in range(100):
        f.write(" ".join(random.choice(words) for _ in range(random.randint(5, 14))) + ".\n")
PY
"$bin" tokenizer train --input "$work/text.txt" --vocab-size 300 --out "$work/tok" >/dev/null
echo '{"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
  "intermediate_size": 256, "vocab_size": 300, "max_position_embeddings": 256}' >"$work/cfg.json"
"$bin" init --config "$work/cfg.json" --tokenizer "$work/tok" --out "$work/m" --seed 1 >/dev/null
echo '{"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
  "intermediate_size": 80, "vocab_size": 300, "max_position_embeddings": 256}' >"$work/cfg_odd.json"
"$bin" init --config "$work/cfg_odd.json" --tokenizer "$work/tok" --out "$work/odd" --seed 2 >/dev/null

# bad input first (cheap)
expect_rc 2 "--model, --text and --out are required" "$bin" study compress --model "$work/m" --out "$work/x"
expect_rc 2 "unknown option '--bogus'" "$bin" study compress --model "$work/m" --text "$work/text.txt" \
  --out "$work/x" --bogus 1
expect_rc 2 "expects a number" "$bin" study compress --model "$work/m" --text "$work/text.txt" --out "$work/x" \
  --recovery-steps many
echo "one line without a newline" >"$work/short.txt"
expect_rc 1 "cannot be split" "$bin" study compress --model "$work/m" --text "$work/short.txt" --out "$work/x"
expect_rc 1 "no-such.txt" "$bin" study compress --model "$work/m" --text "$work/no-such.txt" --out "$work/x"

# the study, on both models
"$bin" study compress --model "$work/m" --model "$work/odd/" --text "$work/text.txt" --out "$work/all" \
  --recovery-steps 4 --decode-tokens 4 --calib-tokens 128 >"$work/table.md" 2>"$err" || fail "study: $(cat "$err")"
ln -s "$work/all/1_m" "$work/st"
for f in results.json results.md q8_0/model.gguf pal2/model.gguf mixed/model.gguf \
         recovery_mixed/adapter_model.safetensors recovery_pal2/adapter_config.json recovery_fp32/adapter_config.json; do
  [[ -s "$work/st/$f" ]] || fail "study output lacks $f"
done
grep -q "| mixed:3.5 + recovery |" "$work/table.md" || fail "printed table lacks the recovery row: $(cat "$work/table.md")"
grep -q "| fp32 + recovery (control) |" "$work/table.md" || fail "printed table lacks the control row"
grep -q "^### 1. $work/m\$" "$work/all/results.md" || fail "joined table lacks model 1: $(cat "$work/all/results.md")"
grep -q "^### 2. $work/odd/\$" "$work/all/results.md" || fail "joined table lacks model 2"
[[ $(grep -c "^| q8_0 |" "$work/all/results.md") -eq 2 ]] || fail "joined table lacks a q8_0 row per model"
grep -q "note: blk.1.ffn_down.weight \[64, 80\].*F16" "$err" || fail "no fallback note on stderr: $(cat "$err")"
"$bin" inspect "$work/all/2_odd/q4_0/model.gguf" >"$work/odd_q4.txt"
grep -Eq '^blk.0.ffn_down.weight +F16 +\[64, 80\]' "$work/odd_q4.txt" || fail "odd ffn_down is not F16 in the q4_0 file"
grep -Eq '^blk.0.ffn_up.weight +Q4_0 ' "$work/odd_q4.txt" || fail "odd ffn_up is not Q4_0"
python3 - "$work/all/2_odd/results.json" <<'PY' || fail "odd model results.json checks"
import json, math, sys
r = json.load(open(sys.argv[1]))
assert r["intermediate_size"] == 80, r
assert "blk.0.ffn_down.weight [64, 80]" in r["fallback_note"], r.get("fallback_note")
rows = {x["name"]: x for x in r["rows"]}
assert len(rows) == 8, list(rows)
for x in rows.values():
    assert math.isfinite(x["val_loss"]) and x["decode_tokens_per_cpu_s"] > 0, x
# 16-bit ffn_down: q8_0 above 8.5 bits per weight, and every row above all-pal2 without the fallback
assert rows["q8_0"]["bits_per_weight"] > 8.6, rows["q8_0"]
PY
python3 - "$work/st/results.json" <<'PY' || fail "results.json checks"
import json, math, os, sys
r = json.load(open(sys.argv[1]))
assert "fallback_note" not in r, r["fallback_note"]
rows = r["rows"]
names = [x["name"] for x in rows]
want = ["fp32", "q8_0", "q4_0", "pal4", "mixed:3.5", "mixed:3.5 + recovery", "pal2 + recovery",
        "fp32 + recovery (control)"]
assert names == want, names
bpw = {x["name"]: x["bits_per_weight"] for x in rows}
assert bpw["fp32"] == 32.0, bpw
order = [bpw[n] for n in ["fp32", "q8_0", "q4_0", "pal4", "mixed:3.5", "pal2 + recovery"]]
assert all(a > b for a, b in zip(order, order[1:])), order
assert 3.0 < bpw["mixed:3.5"] <= 3.5, bpw
assert bpw["mixed:3.5 + recovery"] == bpw["mixed:3.5"], bpw
assert bpw["fp32 + recovery (control)"] == 32.0, bpw
for x in rows:
    assert math.isfinite(x["val_loss"]) and x["val_loss"] > 0, x
    assert x["val_tokens"] == rows[0]["val_tokens"] > 0, x
    assert x["decode_tokens_per_s"] > 0 and x["decode_tokens_per_cpu_s"] > 0, x
    assert (x["adapter"] is not None) == ("recovery" in x["name"]), x
    if x["adapter"]:
        assert os.path.isfile(os.path.join(x["adapter"], "adapter_model.safetensors")), x
        # rank 16 x (in + out) over q 64x64, k, v 32x64, o 64x64, gate, up 256x64, down 64x256; 2 layers
        assert x["adapter_params"] == 2 * 16 * (128 + 96 + 96 + 128 + 320 + 320 + 320), x
# training on the training part lowers the held-out loss of the random model
mixed = [x for x in rows if x["name"] == "mixed:3.5"][0]
rec = [x for x in rows if x["name"] == "mixed:3.5 + recovery"][0]
assert rec["val_loss"] < mixed["val_loss"] - 0.01, (rec, mixed)
ctl = rows[-1]
assert ctl["val_loss"] < rows[0]["val_loss"] - 0.01, (ctl, rows[0])
cfg = json.load(open(os.path.join(os.path.dirname(sys.argv[1]), "recovery_fp32.json")))
assert "init_from" in cfg and "recover_from" not in cfg, cfg
assert r["train_bytes"] + r["val_bytes"] == os.path.getsize(r["text"]), r
PY
expect_rc 1 "already holds a study" "$bin" study compress --model "$work/m" --text "$work/text.txt" --out "$work/st"
expect_rc 1 "already holds a study" "$bin" study compress --model "$work/m" --model "$work/odd" \
  --text "$work/text.txt" --out "$work/all"

# eval-q --adapter vs eval --adapter: the same loss change on the q8_0 file and the float model
ad="$work/st/recovery_mixed"
head -30 "$work/text.txt" >"$work/eval.txt"
"$bin" eval --model "$work/m" --text "$work/eval.txt" >"$work/f0.json"
"$bin" eval --model "$work/m" --text "$work/eval.txt" --adapter "$ad" >"$work/f1.json"
"$bin" eval-q --model "$work/st/q8_0" --tokenizer "$work/m/tokenizer.json" --text "$work/eval.txt" >"$work/q0.json"
"$bin" eval-q --model "$work/st/q8_0" --tokenizer "$work/m/tokenizer.json" --text "$work/eval.txt" \
  --adapter "$ad" >"$work/q1.json"
python3 - "$work" <<'PY' || fail "eval-q --adapter does not match eval --adapter"
import json, sys
w = sys.argv[1]
f0, f1, q0, q1 = (json.load(open(f"{w}/{n}.json"))["loss"] for n in ("f0", "f1", "q0", "q1"))
df, dq = f1 - f0, q1 - q0
# The adapter is a large effect (it was trained); Q8_0 weights and activation
# rounding move the base loss by ~1e-4 here, and the adapter's delta through
# the same perturbed activations by a like amount, so 2% of the effect + 2e-3.
assert df < -0.02, (f0, f1)
assert abs(dq - df) <= 0.02 * abs(df) + 2e-3, (f0, f1, q0, q1)
assert abs(q0 - f0) < 5e-3, (f0, q0)
PY
json_adapter=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("adapter",""))' "$work/q1.json")
[[ "$json_adapter" == "$ad" ]] || fail "eval-q JSON lacks the adapter: $json_adapter"

# generate-q --adapter: greedy output differs from the base (the adapter acts) and is deterministic
"$bin" generate-q --model "$work/st/q8_0" --tokenizer "$work/m/tokenizer.json" --prompt "the sea" \
  --max-tokens 12 --temperature 0 --adapter "$ad" >"$work/g1.txt" 2>/dev/null
"$bin" generate-q --model "$work/st/q8_0" --tokenizer "$work/m/tokenizer.json" --prompt "the sea" \
  --max-tokens 12 --temperature 0 --adapter "$ad" >"$work/g2.txt" 2>/dev/null
cmp -s "$work/g1.txt" "$work/g2.txt" || fail "generate-q --adapter is not deterministic"
[[ $(wc -c <"$work/g1.txt") -gt 8 ]] || fail "generate-q --adapter printed nothing"

# an adapter for another shape: an error naming the tensor
echo '{"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
  "intermediate_size": 64, "vocab_size": 300, "max_position_embeddings": 256}' >"$work/cfg3.json"
"$bin" init --config "$work/cfg3.json" --tokenizer "$work/tok" --out "$work/m3" --seed 1 >/dev/null
"$bin" quantize --model "$work/m3" --scheme q8_0 --out "$work/q3" >/dev/null
expect_rc 1 "lora_A" "$bin" eval-q --model "$work/q3" --tokenizer "$work/m/tokenizer.json" --text "$work/eval.txt" \
  --adapter "$ad"
expect_rc 1 "adapter" "$bin" generate-q --model "$work/q3" --tokenizer "$work/m/tokenizer.json" --prompt "the" \
  --adapter "$work/no-such-adapter"
echo ok
