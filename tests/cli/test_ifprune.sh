#!/usr/bin/env bash
# `orchard ifprune`: usage errors; joint training (both stages) from a model
# made with `orchard init` on a task suite from `orchard tasks generate`; the
# JSONL log; generate through the compact model; the per-task compact model
# run by plain `orchard generate`; the overlap table (text and JSON); the bad
# inputs (k > FFN width, a predictor config whose vocab differs, an empty
# instruction, an ifprune.json whose layer count differs from the LM); and a
# tiny `ifprune study` that writes results.json and README.md.
source "$(dirname "${BASH_SOURCE[0]}")/../support/cli_common.sh" "$1"

prints "usage: orchard ifprune" "$bin" help ifprune || fail "help ifprune"
prints "ifprune" "$bin" --help || fail "--help lists ifprune"
expect_rc 2 "subcommand is required" orc ifprune
expect_rc 2 "unknown subcommand" orc ifprune bogus
expect_rc 2 "are required" orc ifprune train --model x
expect_rc 2 "give --corpus" orc ifprune train --model x --out y
expect_rc 2 "unknown argument" orc ifprune generate --model x --bogus
expect_rc 2 "are required" orc ifprune compact --model x --task t
expect_rc 2 "expects an integer" orc ifprune train --model x --out y --tasks t --k many

# Tasks (no corpus needed for math and strings), a tokenizer, a shard, a model.
orc tasks generate --domains math,strings --n 40 --seed 2 --out "$work/tasks" >/dev/null 2>&1 || fail "tasks"
orc tokenizer train --input "$work/tasks/train.jsonl" --jsonl-field solution --vocab-size 300 \
  --out "$work/tok" >/dev/null 2>&1 || fail "tokenizer train"
orc data prepare --input "$work/tasks/train.jsonl" --field solution --tokenizer "$work/tok" --out "$work/data" \
  --val-fraction 0.1 >/dev/null 2>&1 || fail "data prepare"
cat > "$work/cfg.json" <<EOF
{"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
 "intermediate_size": 24, "vocab_size": 320, "max_position_embeddings": 128}
EOF
orc init --config "$work/cfg.json" --tokenizer "$work/tok" --out "$work/lm" >/dev/null 2>&1 || fail "init"

train() { # $1 out dir, rest: extra flags
  local out="$1"; shift
  orc ifprune train --model "$work/lm" --out "$out" --corpus "$work/data/train.bin" --tasks "$work/tasks/train.jsonl" \
    --steps1 3 --steps2 3 --batch 2 --seq 48 --pred-seq 8 "$@"
}
train "$work/ifp" --k 8 --log "$work/log.jsonl" > "$work/train.out" 2> "$err" || fail "train: $(cat "$err")"
grep -q "^step 6: loss" "$work/train.out" || fail "train summary: $(cat "$work/train.out")"
grep -q "stage 2" "$err" || fail "progress line"
[[ $(wc -l < "$work/log.jsonl") -eq 6 ]] || fail "log lines"
[[ $(grep -c '"stage": 1' "$work/log.jsonl") -eq 3 ]] || fail "stage 1 lines"
for f in config.json model.safetensors tokenizer.json ifprune.json predictor/config.json predictor/model.safetensors; do
  [[ -s "$work/ifp/$f" ]] || fail "missing $f"
done
grep -q '"k": 8' "$work/ifp/ifprune.json" || fail "ifprune.json k"
grep -q '"lr_mult": 0.1' "$work/ifp/ifprune.json" || fail "ifprune.json lr_mult"
expect_rc 1 "already holds" train "$work/ifp" --k 8 --quiet
# --predictor-reads prompt: the predictor reads instruction + input; the
# inputs longer than --pred-seq are counted
train "$work/ifp_prompt" --k 8 --predictor-reads prompt > /dev/null 2> "$err" || fail "train prompt: $(cat "$err")"
grep -q "predictor inputs are longer than pred_seq = 8 tokens" "$err" || fail "cut count: $(cat "$err")"
expect_rc 2 "expects 'instruction' or 'prompt'" train "$work/bad0" --predictor-reads input

# Generate through the compact model.
orc ifprune generate --model "$work/ifp" --prompt "Reverse the order of the words." --max-tokens 6 \
  --temperature 0 > "$work/gen.out" 2> "$err" || fail "generate: $(cat "$err")"
grep -q "k = 8 of 24 channels" "$err" || fail "generate stats: $(cat "$err")"
# `orchard generate --ifprune` is the same command
orc generate --ifprune --model "$work/ifp" --prompt "Reverse the order of the words." --max-tokens 6 \
  --temperature 0 > "$work/gen2.out" 2> "$err" || fail "generate --ifprune: $(cat "$err")"
cmp -s "$work/gen.out" "$work/gen2.out" || fail "generate --ifprune differs from ifprune generate"
orc ifprune generate --model "$work/ifp" --prompt "Reverse the words." --chat --max-tokens 4 --temperature 0 \
  --quiet > /dev/null 2> "$err" || fail "generate --chat: $(cat "$err")"

# Per-task mode: a normal model dir with FFN k that plain generate runs.
orc ifprune compact --model "$work/ifp" --task "Reverse the order of the words." --out "$work/task" \
  > /dev/null 2> "$err" || fail "compact: $(cat "$err")"
grep -q '"intermediate_size": 8' "$work/task/config.json" || fail "compact config"
[[ -s "$work/task/ifprune_task.json" && -s "$work/task/tokenizer.json" ]] || fail "compact files"
orc generate --model "$work/task" --prompt "hello" --max-tokens 4 --temperature 0 > /dev/null 2> "$err" \
  || fail "orchard generate on the compact model: $(cat "$err")"
# The same task twice gives the same model.
orc ifprune compact --model "$work/ifp" --task "Reverse the order of the words." --out "$work/task2" >/dev/null 2>&1
cmp -s "$work/task/model.safetensors" "$work/task2/model.safetensors" || fail "compact is not deterministic"
orc ifprune compact --model "$work/ifp" --task "Reverse the order of the words." --out "$work/task3" --hard-mask \
  >/dev/null 2>&1 || fail "compact --hard-mask"
grep -q '"hard_mask": true' "$work/task3/ifprune_task.json" || fail "hard mask recorded"

# Overlap.
orc ifprune overlap --model "$work/ifp" --tasks "$work/tasks/test.jsonl" --n 3 > "$work/ov.out" 2> "$err" \
  || fail "overlap: $(cat "$err")"
grep -q "| 1 |" "$work/ov.out" || fail "overlap table: $(cat "$work/ov.out")"
orc ifprune overlap --model "$work/ifp" --tasks "$work/tasks/test.jsonl" --n 3 --json > "$work/ov.json" 2>/dev/null
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert len(d['layers'])==2 and d['k']==8" "$work/ov.json" \
  || fail "overlap json"

# Bad input.
expect_rc 1 "k = 25" train "$work/bad1" --k 25 --quiet
sed 's/"vocab_size": 320/"vocab_size": 400/' "$work/cfg.json" > "$work/pcfg.json"
expect_rc 1 "vocab_size 400 does not match" train "$work/bad2" --predictor-config "$work/pcfg.json" --quiet
expect_rc 1 "instruction is empty" orc ifprune generate --model "$work/ifp" --prompt "   "
expect_rc 1 "instruction is empty" orc ifprune compact --model "$work/ifp" --task "" --out "$work/bad3"
cp -r "$work/ifp" "$work/ifp_bad"
sed -i 's/"lm_layers": 2/"lm_layers": 3/' "$work/ifp_bad/ifprune.json"
expect_rc 1 "built for 3 layers" orc ifprune generate --model "$work/ifp_bad" --prompt "x"

# A tiny study (no corpus: facts left out).
orc ifprune study --out "$work/study" --corpus "$work/none.jsonl" --steps1 2 --steps2 3 --n 20 --eval-n 1 \
  --hidden 16 --layers 1 --ffn 12 --vocab 300 --batch 2 --seq 48 --max-tokens 4 --difficulty 1-2 \
  --speed-rounds 2 --speed-tokens 3 --predictor-reads prompt --pred-seq 40 > /dev/null 2> "$err" \
  || fail "study: $(cat "$err")"
python3 -c 'import json,sys; assert json.load(open(sys.argv[1]))["difficulty"] == [1, 2]' \
  "$work/study/tasks/manifest.json" || fail "study --difficulty 1-2 not passed to the task generator"
grep -q "leaving out the facts domain" "$err" || fail "study facts note"
python3 - "$work/study/results.json" <<'EOF' || fail "study results.json"
import json, sys
d = json.load(open(sys.argv[1]))
names = [m["model"] for m in d["models"]]
assert names == ["dense-full", "dense-small", "ifprune"], names
assert [m["ffn"] for m in d["models"]] == [12, 4, 12]
assert d["models"][2]["active"] == 4
assert "facts" not in d["models"][0]["domains"] and "math" in d["models"][0]["domains"]
assert len(d["overlap"]) == 1
# the same LM token budget for every model
assert len({m["train_tokens"] for m in d["models"]}) == 1
# the back-to-back decode-speed rounds ran for all three models
assert all(m["decode_tokens_per_s"] > 0 for m in d["models"]), d["models"]
s = d["settings"]
assert (s["min_difficulty"], s["max_difficulty"], s["speed_rounds"], s["speed_tokens"]) == (1, 2, 2, 3), s
assert (s["predictor_reads"], s["pred_seq"]) == ("prompt", 40), s
assert d["ifprune_minus_dense_small_se"] >= 0, d
# the items with a held-out phrasing are counted apart (a subset of those scored)
for m in d["models"]:
    h = m["held_out_phrasing"]
    assert 0 <= h["correct"] <= h["total"] <= sum(v["total"] for v in m["domains"].values()), m
EOF
grep -q "phrasing held out of training" "$work/study/README.md" || fail "study README held-out phrasings"
grep -q "| dense-small | 4 | 4 |" "$work/study/README.md" || fail "study README table"
grep -q -- "--pred-seq 40 --predictor-reads prompt" "$work/study/README.md" || fail "study README command"
expect_rc 2 "difficulty" orc ifprune study --out "$work/study_bad" --difficulty 4-2
# --baselines: the same data and settings but another temperature; the dense arms are linked, not retrained,
# and score as they did; a study on other data (another seed) is refused
tiny=(--corpus "$work/none.jsonl" --steps1 2 --steps2 3 --n 20 --eval-n 1 --hidden 16 --layers 1 --ffn 12 --vocab 300
  --batch 2 --seq 48 --max-tokens 4 --difficulty 1-2 --speed-rounds 2 --speed-tokens 3 --predictor-reads prompt
  --pred-seq 40)
orc ifprune study --out "$work/study_b" "${tiny[@]}" --temperature 0.2 --predictor-steps 3 --baselines "$work/study" \
  >/dev/null 2>"$err" \
  || fail "study --baselines: $(cat "$err")"
[[ -L $work/study_b/dense_full && -L $work/study_b/dense_small && ! -L $work/study_b/ifprune ]] \
  || fail "study --baselines links"
grep -q "dense-full from .*not retrained" "$err" || fail "study --baselines note"
python3 - "$work/study/results.json" "$work/study_b/results.json" <<'EOF' || fail "study --baselines results"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
for i in (0, 1):
    assert a["models"][i]["domains"] == b["models"][i]["domains"], (a["models"][i], b["models"][i])
    assert a["models"][i]["train_tokens"] == b["models"][i]["train_tokens"]
assert b["settings"]["temperature"] == 0.2 and b["settings"]["predictor_steps"] == 3, b["settings"]
EOF
grep -q -- "--baselines $work/study" "$work/study_b/README.md" || fail "study --baselines README"
grep -q "predictor frozen from step 4 on" "$err" || fail "study --predictor-steps: $(cat "$err")"
grep -q "frozen from step 4 on (\`--predictor-steps 3\`)" "$work/study_b/README.md" || fail "study --predictor-steps README"
# --dense-steps: IFPruning's LM trains dense first, then masked; the switch must fall inside the run
# (and --balance: the mask-balance term on the masked steps, logged and recorded)
orc ifprune study --out "$work/study_d" "${tiny[@]}" --dense-steps 2 --anneal-steps 2 --balance 0.5 \
  --baselines "$work/study" >/dev/null 2>"$err" \
  || fail "study --dense-steps: $(cat "$err")"
grep -q "masks on from step 3 (dense before)" "$err" || fail "study --dense-steps stderr: $(cat "$err")"
grep -q "masked from step 3 on (\`--dense-steps 2\`)" "$work/study_d/README.md" || fail "study --dense-steps README"
grep -q "fell linearly from 12 to 4 over its first 2 masked steps" "$work/study_d/README.md" \
  || fail "study --anneal-steps README"
python3 - "$work/study_d" <<'EOF' || fail "study --dense-steps/--anneal-steps settings and log"
import json, sys
d = sys.argv[1]
s = json.load(open(d + "/results.json"))["settings"]
assert (s["dense_steps"], s["anneal_steps"], s["balance"]) == (2, 2, 0.5), s
log = [json.loads(l) for l in open(d + "/ifprune.log.jsonl")]
assert [r["active"] for r in log] == [12, 12, 8, 4, 4], log
assert ["balance" in r for r in log] == [False, False, True, True, True], log
assert all(0 < r["balance"] <= 3 + 1e-6 for r in log[2:]), log
EOF
grep -q "mask-balance term .* with weight 0.5 (\`--balance 0.5\`)" "$work/study_d/README.md" || fail "study --balance README"
expect_rc 2 "option --balance expects a number in \[0," orc ifprune study --out "$work/study_e" "${tiny[@]}" --balance -1
expect_rc 1 "dense-steps 5 must be below the 5 steps" orc ifprune study --out "$work/study_e" "${tiny[@]}" --dense-steps 5
[[ ! -e $work/study_e ]] || fail "study --dense-steps 5 started before refusing"
expect_rc 1 "anneal-steps 4 exceed the 5 steps" orc ifprune study --out "$work/study_e" "${tiny[@]}" --dense-steps 2 \
  --anneal-steps 4
expect_rc 1 "predictor-steps 2 must come after" orc ifprune study --out "$work/study_e" "${tiny[@]}" --dense-steps 2 \
  --predictor-steps 2
expect_rc 1 "run on other data" orc ifprune study --out "$work/study_c" "${tiny[@]}" --seed 5 --baselines "$work/study"
# summary: the same tiny study with another seed; the two studies' rows, means and the interval over seeds
orc ifprune study --out "$work/study_s2" "${tiny[@]}" --seed 2 >/dev/null 2>"$err" || fail "study --seed 2: $(cat "$err")"
orc ifprune summary "$work/study" "$work/study_s2" >"$work/summary.txt" 2>"$err" || fail "summary: $(cat "$err")"
grep -q "dense-small over 2 seeds: .* 95% interval" "$work/summary.txt" || fail "summary text: $(cat "$work/summary.txt")"
grep -q "dense-full over 2 seeds: .* 95% interval" "$work/summary.txt" || fail "summary text (dense-full)"
orc ifprune summary "$work/study" "$work/study_s2" --json >"$work/summary.json" || fail "summary --json"
python3 - "$work/study/results.json" "$work/study_s2/results.json" "$work/summary.json" <<'EOF' \
  || fail "summary numbers"
import json, sys
a, b, s = (json.load(open(p)) for p in sys.argv[1:])
assert s["n"] == 2 and [r["seed"] for r in s["studies"]] == [1, 2], s
gains = [r["models"][2]["mean_accuracy"] - r["models"][1]["mean_accuracy"] for r in (a, b)]
assert abs(s["mean_gain"] - sum(gains) / 2) < 1e-9, (s, gains)
assert abs(s["gain_ci95"] - 12.706 * abs(gains[0] - gains[1]) / 2 ** 0.5 / 2 ** 0.5) < 1e-6, (s, gains)
vs_full = [r["models"][2]["mean_accuracy"] - r["models"][0]["mean_accuracy"] for r in (a, b)]
assert abs(s["ifprune_minus_dense_full"] - sum(vs_full) / 2) < 1e-9, (s, vs_full)
EOF
# --versus: study_d (--dense-steps) against study, seed 1 with itself: B - A is the two gains' difference
orc ifprune summary "$work/study" --versus "$work/study_d" --json >"$work/versus.json" 2>"$err" \
  || fail "summary --versus: $(cat "$err")"
python3 - "$work/study/results.json" "$work/study_d/results.json" "$work/versus.json" <<'EOF' || fail "versus numbers"
import json, sys
a, b, v = (json.load(open(p)) for p in sys.argv[1:])
gain = lambda r: r["models"][2]["mean_accuracy"] - r["models"][1]["mean_accuracy"]
assert "dense_steps" in v["b_minus_a"]["settings"], v
assert abs(v["b_minus_a"]["mean_diff"] - (gain(b) - gain(a))) < 1e-9, v
assert v["b_minus_a"]["diff_ci95"] is None and v["a"]["n"] == 1, v
EOF
prints "B - A, paired by seed (B sets differently: .*dense_steps" orc ifprune summary "$work/study" --versus \
  "$work/study_d" || fail "summary --versus text"
expect_rc 1 "seed 2 .* has no study in the --versus set" orc ifprune summary "$work/study_s2" --versus "$work/study_d"
expect_rc 2 "after --versus" orc ifprune summary "$work/study" --versus
expect_rc 1 "differ in setting \"dense_steps\"" orc ifprune summary "$work/study" "$work/study_d"
expect_rc 1 "both seed 1" orc ifprune summary "$work/study" "$work/study"
expect_rc 2 "give the directories" orc ifprune summary
# --speed-only: the decode-speed rounds alone on the models the study left
orc ifprune study --out "$work/study" --speed-only --speed-rounds 2 --speed-tokens 3 >/dev/null 2>"$err" \
  || fail "study --speed-only: $(cat "$err")"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["rounds"] == 2 and len(d["cpu_tokens_per_s"]) == 3 \
  and all(t > 0 for t in d["cpu_tokens_per_s"]), d' "$work/study/speed.json" || fail "study speed.json"
expect_rc 1 "test.jsonl" orc ifprune study --out "$work/study_bad" --speed-only
# `orchard serve --ifprune-task`: the compact model of one task behind the HTTP API
"$bin" --threads 1 serve --model "$work/ifp" --ifprune-task "Reverse the order of the words." --port 0 \
  >"$work/serve.out" 2>"$work/serve.err" &
server_pid=$!
port=""
for _ in $(seq 1 200); do
  port="$(sed -n 's/^listening on port \([0-9]*\)$/\1/p' "$work/serve.out")"
  [[ -n "$port" ]] && break
  kill -0 "$server_pid" 2>/dev/null || fail "serve --ifprune-task exited: $(cat "$work/serve.err")"
  sleep 0.1
done
[[ -n "$port" ]] || { kill "$server_pid"; fail "serve printed no port: $(cat "$work/serve.err")"; }
grep -q "8 of 24 FFN channels" "$work/serve.err" || { kill "$server_pid"; fail "serve: $(cat "$work/serve.err")"; }
code=$(curl -s -o "$work/body" -w '%{http_code}' "http://127.0.0.1:$port/v1/completions" \
  -H 'Content-Type: application/json' -d '{"prompt": "hello", "max_tokens": 3, "temperature": 0}')
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
[[ "$code" == 200 ]] || fail "completion from the compact model: $code $(cat "$work/body")"
grep -q '"completion_tokens"' "$work/body" || fail "completion body: $(cat "$work/body")"
expect_rc 1 "ifprune" "$bin" serve --model "$work/task" --ifprune-task "x" --port 0

echo "ok"
