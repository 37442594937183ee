#!/usr/bin/env bash
# `orchard study moe-vs-dense`: bad input (budget, options, a missing corpus,
# --data without --tokenizer, a reused --out) gives a clear error and exit
# status, and a tiny run on a synthetic corpus (tokenizer and shards made here,
# no network) writes results.json, results.md and loss_vs_time.svg with one
# row and one curve per model (dense + 2 routers x 2 expert counts), the MoE
# models with the dense model's activated parameters and more in total.
source "$(dirname "${BASH_SOURCE[0]}")/../support/cli_common.sh" "$1"

prints "moe-vs-dense" "$bin" study --help || fail "study --help lists moe-vs-dense"
prints "--budget FLOPS" orc study moe-vs-dense --help || fail "moe-vs-dense --help"
expect_rc 2 "positive number of FLOPs" orc study moe-vs-dense --budget -5 --out "$work/o"
expect_rc 2 "positive number of FLOPs" orc study moe-vs-dense --budget 0 --out "$work/o"
expect_rc 2 "got 'lots'" orc study moe-vs-dense --budget lots --out "$work/o"
expect_rc 2 "unknown argument '--bogus'" orc study moe-vs-dense --out "$work/o" --bogus
expect_rc 2 "needs a value" orc study moe-vs-dense --out "$work/o" --budget
expect_rc 2 "--out is required" orc study moe-vs-dense --budget 1e9
expect_rc 2 "--experts expects" orc study moe-vs-dense --out "$work/o" --experts 4,x
expect_rc 1 "orchard data fetch" orc study moe-vs-dense --out "$work/o" --cache "$work/no-cache"

# Data: 40 small documents, a byte-level BPE tokenizer, train/val shards.
for i in $(seq 1 40); do
  echo "{\"text\": \"document $i: the whale, the sea and the ship sailed on. the crew sang $i songs of the sea.\"}"
done > "$work/docs.jsonl"
orc tokenizer train --input "$work/docs.jsonl" --jsonl-field text --vocab-size 300 --out "$work/tok" \
  >/dev/null 2>&1 || fail "tokenizer train"
orc data prepare --input "$work/docs.jsonl" --tokenizer "$work/tok" --out "$work/data" --val-fraction 0.2 \
  >/dev/null 2>&1 || fail "data prepare"
expect_rc 1 "go together" orc study moe-vs-dense --out "$work/o" --data "$work/data"
expect_rc 1 "too small" orc study moe-vs-dense --budget 1e6 --out "$work/small" --data "$work/data" --tokenizer "$work/tok"

small=(--data "$work/data" --tokenizer "$work/tok" --batch 4 --seq 16 --tokens-per-param 0.2
       --measure-steps 2 --measure-rounds 2 --evals 3 --quiet)
orc study moe-vs-dense --budget 1e9 --out "$work/s" "${small[@]}" > "$work/table" 2> "$err" \
  || fail "study: $(cat "$err")"
for f in results.json results.md loss_vs_time.svg; do [[ -s "$work/s/$f" ]] || fail "no $f"; done
cmp -s "$work/table" "$work/s/results.md" || fail "stdout is not results.md"
# The table: a header, a separator and 5 model rows of 13 cells.
rows=$(grep -c '^| \(dense\|moe-e[48]-\(top2\|ec\)\) |' "$work/s/results.md")
[[ $rows -eq 5 ]] || fail "table has $rows model rows: $(cat "$work/s/results.md")"
grep '^| ' "$work/s/results.md" | awk -F'|' 'NF != 15 { bad = 1 } END { exit bad }' \
  || fail "a table row lacks cells: $(cat "$work/s/results.md")"
grep -q '^| model | experts | router | total params | active params | ms/step' "$work/s/results.md" || fail "header"
# results.json: 5 models; MoE active params within 1% of dense, more total; curves with val points.
python3 - "$work/s/results.json" <<'PY' || fail "results.json: $(head -c 2000 "$work/s/results.json")"
import json, math, sys
r = json.load(open(sys.argv[1]))
ms = r["models"]
assert [m["name"] for m in ms] == ["dense", "moe-e4-top2", "moe-e4-ec", "moe-e8-top2", "moe-e8-ec"], ms
d = ms[0]
assert d["num_experts"] == 0 and d["total_params"] == d["active_params"]
assert d["tokens"] >= 0.2 * d["total_params"] and d["steps"] >= 10
for m in ms[1:]:
    assert abs(m["active_params"] - d["active_params"]) <= 0.01 * d["active_params"], m
    assert m["total_params"] > d["total_params"] and m["moe_every"] == 2
    assert m["steps"] >= 1 and m["step_seconds"] > 0
for m in ms:
    assert math.isfinite(m["final_val_loss"]) and m["final_val_loss"] > 0
    c = m["curve"]
    assert 1 <= len(c) <= 4 and c[-1]["step"] == m["steps"], c
    assert all(a["train_seconds"] <= b["train_seconds"] for a, b in zip(c, c[1:]))
    assert c[-1]["val_loss"] == m["final_val_loss"]
PY
[[ $(grep -c '<polyline' "$work/s/loss_vs_time.svg") -eq 5 ]] || fail "svg lines"
grep -q '</svg>' "$work/s/loss_vs_time.svg" || fail "svg not closed"
for n in dense moe-e4-top2 moe-e8-ec; do
  [[ -s "$work/s/runs/$n/model.safetensors" && -s "$work/s/runs/$n.jsonl" ]] || fail "run $n"
done
[[ -d "$work/s/runs/measure-moe-e8-ec-r2" && ! -e "$work/s/runs/measure-dense-r3" ]] || fail "timing rounds"
grep -q '"num_experts": 8' "$work/s/runs/moe-e8-ec/config.json" || fail "moe config"
grep -q '"router": "expert_choice"' "$work/s/runs/moe-e8-ec/config.json" || fail "expert choice config"
# A second study into the same --out is refused, not mixed with the first.
expect_rc 1 "already holds a study" orc study moe-vs-dense --budget 1e9 --out "$work/s" "${small[@]}"
echo "ok"
