#!/usr/bin/env bash
# `orchard tsmc` on a tiny random model: rollouts (file and summary), value
# training with both objectives (one sample marked correct by hand, since a
# random model never is), solve with every method on a question and on a
# task file (accuracy line), `orchard study` dispatch, study tsmc's --difficulty,
# --generator and own fine-tuning (seq from the data, the loss log, --sft-from, --unseen-rollouts), eval-value and train-value's held-out
# checks (--val-rollouts, --keep-best), and the bad inputs:
# N < 1, a method that needs a value model without one, a value model for
# another vocabulary, a rollouts file with a foreign token id, unknown
# method / resampler, twist training with no correct sample; scripts/tsmc_errors.py on a hand-made rollouts file.
source "$(dirname "${BASH_SOURCE[0]}")/../support/cli_common.sh" "$1"

prints "tsmc" "$bin" --help || fail "--help lists tsmc"
prints "usage: orchard tsmc rollouts" "$bin" help tsmc || fail "help tsmc"
expect_rc 2 "unknown subcommand" "$bin" tsmc bogus
expect_rc 2 "unknown study" "$bin" study nothing
expect_rc 2 "study tsmc: --difficulty" "$bin" study tsmc --model "$work/m" --out "$work/s" --difficulty 0-9
expect_rc 2 "sft-lr = 5" "$bin" study tsmc --model "$work/m" --out "$work/s" --sft-lr 5
expect_rc 2 "--keep-by is twist or pairs" "$bin" study tsmc --model "$work/m" --out "$work/s" --keep-by auc

"$bin" tasks generate --out "$work/tasks" --domains math --n 120 --seed 2 >/dev/null
cat >"$work/corpus.txt" <<'TXT'
Ava has 10 books. Ava receives another 7 books as a gift. How many books does Ava have now?
Ava starts with 10 books.
10 + 7 = 17
#### 17
Work through this problem step by step, then give the final number after '####'.
TXT
"$bin" tokenizer train --input "$work/corpus.txt" --vocab-size 300 --out "$work/tok" >/dev/null
echo '{"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
  "intermediate_size": 64, "vocab_size": 300, "max_position_embeddings": 512}' >"$work/cfg.json"
"$bin" init --config "$work/cfg.json" --tokenizer "$work/tok" --out "$work/gen" --seed 1 >/dev/null

# rollouts: 3 problems x 3 samples
"$bin" tsmc rollouts --model "$work/gen" --tasks "$work/tasks/train.jsonl" --problems 3 --k 3 --max-steps 2 \
  --out "$work/roll.jsonl" >"$work/out.json" 2>/dev/null
grep -q '"problems": 3' "$work/out.json" || fail "rollouts summary: $(cat "$work/out.json")"
[[ $(wc -l <"$work/roll.jsonl") -eq 3 ]] || fail "rollouts file has $(wc -l <"$work/roll.jsonl") lines"
grep -q '"step_end"' "$work/roll.jsonl" || fail "rollouts lack step ends"

# twist training needs a correct sample; the random model has none
if ! grep -q '"correct":true' "$work/roll.jsonl"; then
  expect_rc 1 "no rollout problem has a correct sample" \
    "$bin" tsmc train-value --model "$work/gen" --rollouts "$work/roll.jsonl" --out "$work/v" --steps 2
fi
sed -i '0,/"correct":false/s//"correct":true/' "$work/roll.jsonl"
"$bin" tsmc train-value --model "$work/gen" --rollouts "$work/roll.jsonl" --out "$work/v" --steps 3 \
  >"$work/out.json" 2>/dev/null
grep -q '"objective": "twist"' "$work/out.json" || fail "train-value twist: $(cat "$work/out.json")"
for f in config.json model.safetensors value_head.safetensors tokenizer.json; do
  [[ -s "$work/v/$f" ]] || fail "value model lacks $f"
done
"$bin" tsmc train-value --model "$work/gen" --rollouts "$work/roll.jsonl" --out "$work/vb" --steps 2 \
  --objective bce >"$work/out.json" 2>/dev/null
grep -q '"objective": "bce"' "$work/out.json" || fail "train-value bce"
# a learning rate of 1 saturates psi (every value alike): the held-out check says so
"$bin" tsmc train-value --model "$work/gen" --rollouts "$work/roll.jsonl" --out "$work/vsat" --steps 40 --lr 1 \
  --val-rollouts "$work/roll.jsonl" --eval-every 20 >/dev/null 2>"$err" || fail "train-value --lr 1: $(cat "$err")"
grep -q "step 40: warning: the held-out values are all but equal" "$err" || fail "no saturation warning: $(cat "$err")"

# held-out checks: eval-value's report (text and JSON), train-value scoring held-out rollouts and keeping the best
"$bin" tsmc eval-value --value "$work/v" --rollouts "$work/roll.jsonl" >"$work/ev.txt" 2>"$err" \
  || fail "eval-value: $(cat "$err")"
grep -q "^3 problems, 9 samples" "$work/ev.txt" || fail "eval-value counts: $(cat "$work/ev.txt")"
grep -q "picking among each problem's 3 samples: majority" "$work/ev.txt" || fail "eval-value picks"
"$bin" tsmc eval-value --value "$work/v" --rollouts "$work/roll.jsonl" --json >"$work/ev.json" 2>"$err"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["problems"]==3 and r["samples"]==9 and r["k"]==3' \
  "$work/ev.json" || fail "eval-value --json: $(cat "$work/ev.json")"
"$bin" tsmc train-value --model "$work/gen" --rollouts "$work/roll.jsonl" --out "$work/vk" --steps 4 \
  --val-rollouts "$work/roll.jsonl" --eval-every 2 --keep-best >"$work/out.json" 2>"$err" || fail "train-value --keep-best"
grep -q '"kept_step": [024]' "$work/out.json" || fail "train-value kept step: $(cat "$work/out.json")"
[[ $(grep -c "value eval step" "$err") -eq 3 ]] || fail "train-value evaluations: $(grep "value eval" "$err")"
# --keep-by pairs: the kept evaluation is the one with the highest right > wrong pair accuracy
"$bin" tsmc train-value --model "$work/gen" --rollouts "$work/roll.jsonl" --out "$work/vp" --steps 4 \
  --val-rollouts "$work/roll.jsonl" --eval-every 2 --keep-best --keep-by pairs >"$work/out.json" 2>"$err" \
  || fail "train-value --keep-by pairs: $(cat "$err")"
python3 - "$work/out.json" "$err" <<'EOF' || fail "train-value --keep-by pairs kept step"
import json, re, sys
out = json.load(open(sys.argv[1]))
evals = [(int(m.group(1)), float(m.group(2))) for m in
         re.finditer(r"value eval step (\d+): .*?right-vs-wrong final ([0-9.]+)", open(sys.argv[2]).read())]
assert len(evals) == 3, evals
best = max(p for _, p in evals)
first_best = next(s for s, p in evals if p == best)
assert out["kept_step"] == first_best, (out, evals)
EOF
grep -q "keeping the weights of step .* (held-out right > wrong" "$err" || fail "train-value --keep-by pairs note"
expect_rc 2 "--keep-by is twist or pairs" "$bin" tsmc train-value --model "$work/gen" --rollouts "$work/roll.jsonl" \
  --out "$work/vp2" --val-rollouts "$work/roll.jsonl" --keep-best --keep-by auc
expect_rc 2 "--keep-by needs --keep-best" "$bin" tsmc train-value --model "$work/gen" --rollouts "$work/roll.jsonl" \
  --out "$work/vp2" --val-rollouts "$work/roll.jsonl" --keep-by pairs
expect_rc 2 "need --val-rollouts" "$bin" tsmc train-value --model "$work/gen" --rollouts "$work/roll.jsonl" \
  --out "$work/vk2" --keep-best
expect_rc 1 "novalue" "$bin" tsmc eval-value --value "$work/novalue" --rollouts "$work/roll.jsonl"
expect_rc 2 "--rollouts is required" "$bin" tsmc eval-value --value "$work/v"

# --confidence: rollouts record each token's log-probability; the value head gets one more input (its weight
# starts at 1), eval-value and solve read that from the head; elsewhere the option is refused
python3 - "$work/roll.jsonl" <<'EOF' || fail "rollouts' logp"
import json, sys
for line in open(sys.argv[1]):
    for s in json.loads(line)["samples"]:
        assert len(s["logp"]) == len(s["ids"]) and all(x <= 0 for x in s["logp"]), s
EOF
"$bin" tsmc train-value --model "$work/gen" --rollouts "$work/roll.jsonl" --out "$work/vc" --steps 2 --confidence \
  >/dev/null 2>"$err" || fail "train-value --confidence: $(cat "$err")"
"$bin" inspect "$work/vc/value_head.safetensors" >"$work/ins.txt" 2>&1 || fail "inspect value head"
grep -q "value_head.weight.*\[1, 33\]" "$work/ins.txt" || fail "confidence head width: $(cat "$work/ins.txt")"
"$bin" tsmc eval-value --value "$work/vc" --rollouts "$work/roll.jsonl" >/dev/null 2>"$err" \
  || fail "eval-value (confidence): $(cat "$err")"
"$bin" tsmc solve --model "$work/gen" --value "$work/vc" --method tsmc --n 3 --max-steps 2 \
  --question "Ava has 10 books and gets 7 more. How many books?" >/dev/null 2>"$err" || fail "solve (confidence): $(cat "$err")"
python3 - "$work/roll.jsonl" "$work/roll_nolp.jsonl" <<'EOF'
import json, sys
with open(sys.argv[2], "w") as out:
    for line in open(sys.argv[1]):
        o = json.loads(line)
        for s in o["samples"]:
            del s["logp"]
        out.write(json.dumps(o) + "\n")
EOF
expect_rc 1 "no token log-probabilities" "$bin" tsmc train-value --model "$work/gen" --rollouts "$work/roll_nolp.jsonl" \
  --out "$work/vc2" --steps 2 --confidence
"$bin" tsmc eval-value --value "$work/v" --rollouts "$work/roll_nolp.jsonl" >/dev/null 2>"$err" \
  || fail "a plain value model reads rollouts without logp: $(cat "$err")"
expect_rc 2 "--confidence is a train-value" "$bin" tsmc solve --model "$work/gen" --value "$work/vc" --confidence \
  --question "1 + 1?"
expect_rc 1 "--confidence shapes the value models the study trains" "$bin" study tsmc --model "$work/gen" \
  --out "$work/sc" --value "$work/vc" --no-bce --confidence

# --mixed-only: value training draws only the problems with right and wrong samples (the edited file has one)
"$bin" tsmc train-value --model "$work/gen" --rollouts "$work/roll.jsonl" --out "$work/vm" --steps 2 --mixed-only \
  >/dev/null 2>"$err" || fail "train-value --mixed-only: $(cat "$err")"
grep -Eq "[1-3] of 3 rollout problems have both right and wrong samples" "$err" || fail "mixed-only count: $(cat "$err")"
sed 's/"correct":true/"correct":false/g' "$work/roll.jsonl" >"$work/roll_none.jsonl"
expect_rc 1 "both a right and a wrong sample (--mixed-only)" "$bin" tsmc train-value --model "$work/gen" \
  --rollouts "$work/roll_none.jsonl" --out "$work/vm2" --steps 2 --mixed-only --objective bce
expect_rc 2 "--mixed-only chooses value training" "$bin" tsmc eval-value --value "$work/v" \
  --rollouts "$work/roll.jsonl" --mixed-only
expect_rc 1 "--mixed-only chooses the problems of the value training" "$bin" study tsmc --model "$work/gen" \
  --out "$work/sm" --value "$work/v" --no-bce --mixed-only

# solve with every method
for m in greedy majority orm prm weighted tsmc; do
  "$bin" tsmc solve --model "$work/gen" --value "$work/v" --method "$m" --n 3 --max-steps 2 \
    --question "Ava has 10 books and gets 7 more. How many books?" >"$work/out.json" 2>"$err" \
    || fail "solve --method $m: $(cat "$err")"
  grep -q "\"method\": \"$m\"" "$work/out.json" || fail "solve $m output: $(cat "$work/out.json")"
  grep -q '"tokens": [1-9]' "$work/out.json" || fail "solve $m generated nothing"
done
"$bin" tsmc solve --model "$work/gen" --value "$work/v" --tasks "$work/tasks/test.jsonl" --problems 2 --n 2 \
  --max-steps 2 --resample stratified --ess 1 >"$work/out.jsonl" 2>/dev/null
[[ $(grep -c '"gold"' "$work/out.jsonl") -eq 2 ]] || fail "solve --tasks lines"
grep -q '"accuracy"' "$work/out.jsonl" || fail "solve --tasks summary"

# bad input
expect_rc 1 "N = 0" "$bin" tsmc solve --model "$work/gen" --value "$work/v" --n 0 --question "1 + 1?"
expect_rc 1 "needs a value model" "$bin" tsmc solve --model "$work/gen" --method orm --question "1 + 1?"
expect_rc 2 "unknown --method" "$bin" tsmc solve --model "$work/gen" --method best --question "1 + 1?"
expect_rc 2 "unknown --resample" "$bin" tsmc solve --model "$work/gen" --resample wheel --question "1 + 1?"
expect_rc 1 "empty question" "$bin" tsmc solve --model "$work/gen" --method greedy --question ""
echo '{"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
  "intermediate_size": 64, "vocab_size": 320, "max_position_embeddings": 512}' >"$work/cfg2.json"
"$bin" init --config "$work/cfg2.json" --tokenizer "$work/tok" --out "$work/other" --seed 1 >/dev/null
"$bin" tsmc train-value --model "$work/other" --rollouts "$work/roll.jsonl" --out "$work/v2" --steps 1 >/dev/null 2>&1
# study tsmc --generator: a missing generator is an error naming it (after the tasks, before any work)
expect_rc 1 "nogen" "$bin" study tsmc --model "$work/gen" --generator "$work/nogen" --out "$work/s" --tasks 20 \
  --difficulty 1-2 --distractors 2
tr -d ' \n' <"$work/s/tasks/manifest.json" | grep -q '"difficulty":\[1,2\]' || fail "study tsmc --difficulty reaches the task generator"
tr -d ' \n' <"$work/s/tasks/manifest.json" | grep -q '"distractors":2' || fail "study tsmc --distractors reaches the task generator"
expect_rc 2 "distractors" "$bin" study tsmc --model "$work/gen" --out "$work/s" --distractors 4
# study tsmc's own fine-tuning: the recipe's seq is the longest training conversation (rounded up to 16, not
# the model's 512), the loss curve lands in sft_log.jsonl; the random generator then has no correct rollout
expect_rc 1 "no rollout problem has a correct sample" "$bin" study tsmc --model "$work/gen" --out "$work/s2" \
  --tasks 20 --difficulty 1 --sft-steps 2 --rollouts 2 --k 2 --value-steps 1 --test 1 --n 2 --temperature 1.5
seq=$(tr -d ' \n' <"$work/s2/sft_recipe.json" | sed -n 's/.*"seq":\([0-9]*\).*/\1/p')
[[ -n $seq && $seq -ge 16 && $seq -lt 512 && $((seq % 16)) -eq 0 ]] || fail "study sft seq = '$seq'"
[[ $(wc -l <"$work/s2/sft_log.jsonl") -eq 2 ]] || fail "study sft log: $(cat "$work/s2/sft_log.jsonl")"
# --sft-from starts the fine-tuning from another LM (recorded in the recipe); --unseen-rollouts leaves the rollout
# problems (the first --rollouts of the train split) out of the SFT file; both need the study's own fine-tuning
expect_rc 1 "no rollout problem has a correct sample" "$bin" study tsmc --model "$work/other" --sft-from "$work/gen" \
  --unseen-rollouts --out "$work/s6" --tasks 20 --difficulty 1 --sft-steps 2 --rollouts 3 --k 2 --value-steps 1 \
  --test 1 --n 2 --temperature 1.5
[[ $(wc -l <"$work/s6/sft_train.jsonl") -eq $(($(wc -l <"$work/s6/tasks/train.jsonl") - 3)) ]] \
  || fail "--unseen-rollouts: sft_train.jsonl has $(wc -l <"$work/s6/sft_train.jsonl") lines"
python3 -c 'import json,sys
sft = [json.loads(l)["messages"][1]["content"] for l in open(sys.argv[1])]
train = [json.loads(l)["solution"] for l in open(sys.argv[2])]
assert sft == train[3:], "the SFT file is not the train split less its first 3 problems"' \
  "$work/s6/sft_train.jsonl" "$work/s6/tasks/train.jsonl" || fail "--unseen-rollouts: SFT problems"
tr -d ' \n' <"$work/s6/sft_recipe.json" | grep -q '"init_from":"[^"]*/gen"' || fail "--sft-from not in the recipe"
[[ $(wc -l <"$work/s2/sft_train.jsonl") -eq $(wc -l <"$work/s2/tasks/train.jsonl") ]] || fail "SFT without holdout"
expect_rc 1 "leaves none to fine-tune on" "$bin" study tsmc --model "$work/gen" --unseen-rollouts --out "$work/s7" \
  --tasks 20 --difficulty 1 --sft-steps 2 --rollouts 1000
expect_rc 1 "unseen-rollouts needs the study's own fine-tuning" "$bin" study tsmc --model "$work/gen" \
  --generator "$work/gen" --unseen-rollouts --out "$work/s7"
expect_rc 1 "sft-from needs the study's own fine-tuning" "$bin" study tsmc --model "$work/gen" \
  --generator "$work/gen" --sft-from "$work/gen" --out "$work/s7"
# study tsmc --value: a value model trained before is used as it is (no value training, so the random generator's
# rollouts need no right sample), scored on the held-out rollouts, and recorded; one for another tokenizer is refused
"$bin" study tsmc --model "$work/gen" --out "$work/s4" --tasks 60 --difficulty 1 --generator "$work/gen" --rollouts 2 --k 2 \
  --test 6 --n 2 --val-problems 2 --value "$work/v" --no-bce --keep-by pairs --alpha 2 --ess 1 --resample stratified \
  >/dev/null 2>"$err" || fail "study --value: $(tail -3 "$err")"
# TSMC's settings reach it and are recorded; with --ess 1 every step with particles left resamples
python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))
assert r["tsmc_alpha"] == 2 and r["tsmc_ess"] == 1 and r["tsmc_resample"] == "stratified", r
rows = r["tsmc_resampling"]
assert len(rows) == 1 and rows[0]["value"] == "twist" and rows[0]["n"] == 2 and rows[0]["total"] == 6, rows
assert rows[0]["rounds"] >= rows[0]["problems_resampled"] >= 1 and rows[0]["problems_resampled"] <= 6, rows' \
  "$work/s4/results.json" || fail "study TSMC settings: $(cat "$work/s4/results.json")"
grep -q "TSMC's resampling (alpha 2, resampling when the ESS falls below 1 N, stratified)" "$work/s4/results.md" \
  || fail "results.md lacks the resampling table"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); v=r["value_heldout"][0]
assert r["value"].endswith("/v") and r["test_problems"]==6 and 1 <= r["val_rollout_problems"] <= 2 and v["kept_step"]==-1
assert r["value_keep_by"] == "pairs" and r["distractors"] == 0 and r["rollout_problems"] == 0' \
  "$work/s4/results.json" || fail "study --value results: $(cat "$work/s4/results.json")"
[[ -s $work/s4/rollouts_val.jsonl && ! -e $work/s4/value ]] || fail "study --value trained or lacks held-out rollouts"
[[ ! -e $work/s4/rollouts.jsonl ]] || fail "study --value sampled training rollouts it does not use"
grep -q "Value models on [12] held-out validation problems.*the weights kept (given by --value, trained before)" \
  "$work/s4/results.md" || fail "results.md lacks the value check"
# each method's accuracy also split by phrasing: the test problems in held-out phrasings apart from the others
python3 - "$work/s4/results.json" "$work/s4/tasks/test.jsonl" <<'EOF' || fail "study phrasing split: $(cat "$work/s4/results.json")"
import json, sys
r = json.load(open(sys.argv[1]))
held = sum(json.loads(l)["held_out_phrasing"] for l in open(sys.argv[2]).readlines()[:6])
assert 0 < held < 6, held  # the first 6 test problems of these tasks mix both
for row in r["accuracy"]:
    s, h = row["seen_phrasing"], row["held_out_phrasing"]
    assert h["total"] == held and s["total"] + h["total"] == row["total"], row
    assert s["correct"] + h["correct"] == row["correct"] and 0 <= h["correct"] <= h["total"], row
EOF
grep -q "The same by phrasing: the [0-9]* test problems in the phrasings training used" "$work/s4/results.md" \
  || fail "results.md lacks the phrasing table"
expect_rc 1 "another tokenizer" "$bin" study tsmc --model "$work/gen" --out "$work/s5" --tasks 20 --difficulty 1 \
  --generator "$work/gen" --rollouts 2 --k 2 --test 1 --n 2 --value "$work/v2" --no-bce
expect_rc 1 "temperature = -1" "$bin" study tsmc --model "$work/gen" --out "$work/s3" --temperature -1
expect_rc 1 "ESS threshold 2" "$bin" study tsmc --model "$work/gen" --out "$work/s3" --ess 2
expect_rc 2 "unknown --resample 'wheel'" "$bin" study tsmc --model "$work/gen" --out "$work/s3" --resample wheel
expect_rc 1 "another tokenizer" "$bin" tsmc solve --model "$work/gen" --value "$work/v2" --question "1 + 1?"
sed -i '1s/"ids":\[/"ids":[99999,/' "$work/roll.jsonl"
expect_rc 1 "roll.jsonl:1:" "$bin" tsmc train-value --model "$work/gen" --rollouts "$work/roll.jsonl" --out "$work/v3"
# scripts/tsmc_errors.py on a hand-made rollouts file: problem 1 has one right sample and two that add wrongly
# (majority wrong), problem 2 three right ones: first-mistake labels and the voting headroom lines
script="$(dirname "${BASH_SOURCE[0]}")/../../scripts/tsmc_errors.py"
q="Work through this problem step by step, then give the final number after '####'.\nAva has 10 books. Ava receives another 7 books as a gift. How many books does Ava have now?"
ids() { printf '%b' "$1" >"$work/t.txt"; "$bin" tokenize --model "$work/tok" --text "$work/t.txt"; }
right=$(ids "Ava starts with 10 books.\n10 + 7 = 17\n#### 17")
wrong=$(ids "Ava starts with 10 books.\n10 + 7 = 18\n#### 18")
sample() { echo "{\"ids\":$1,\"step_end\":[0],\"answer\":\"$2\",\"correct\":$3}"; }
{
  echo "{\"id\":\"a\",\"question\":\"$q\",\"gold\":\"17\",\"prompt\":[1],\"samples\":[$(sample "$right" 17 true),$(sample "$wrong" 18 false),$(sample "$wrong" 18 false)]}"
  echo "{\"id\":\"b\",\"question\":\"$q\",\"gold\":\"17\",\"prompt\":[1],\"samples\":[$(sample "$right" 17 true),$(sample "$right" 17 true),$(sample "$right" 17 true)]}"
} >"$work/hand.jsonl"
python3 "$script" "$work/hand.jsonl" "$work/tok/tokenizer.json" >"$work/errs.txt" || fail "tsmc_errors.py: $(cat "$work/errs.txt")"
grep -q "^6 samples, 4 right, 2 wrong" "$work/errs.txt" || fail "tsmc_errors counts: $(cat "$work/errs.txt")"
grep -q "2  100.0%  step 1: arithmetic wrong" "$work/errs.txt" || fail "tsmc_errors labels: $(cat "$work/errs.txt")"
grep -q "^2 problems: at least one right sample 100.0%, majority vote right 50.0%" "$work/errs.txt" \
  || fail "tsmc_errors headroom: $(cat "$work/errs.txt")"
grep -q "problems by right samples (0..3): 0 1 0 1" "$work/errs.txt" || fail "tsmc_errors by right: $(cat "$work/errs.txt")"
grep -q "^1 problems where voting is wrong and a sample is right" "$work/errs.txt" \
  || fail "tsmc_errors missed count: $(cat "$work/errs.txt")"
grep -q "^  line 1, gold 17: 18: 2, 17: 1$" "$work/errs.txt" || fail "tsmc_errors missed line: $(cat "$work/errs.txt")"
# with the task file: the samples' accuracy by phrasing; with token log-probabilities: each answer's lowest
printf '%s\n%s\n' '{"id":"a","held_out_phrasing":false}' '{"id":"b","held_out_phrasing":true}' >"$work/hand_tasks.jsonl"
sed '1s/"correct":false}/"correct":false,"logp":[-0.25]}/g' "$work/hand.jsonl" >"$work/hand_lp.jsonl"
python3 "$script" "$work/hand_lp.jsonl" "$work/tok/tokenizer.json" "$work/hand_tasks.jsonl" >"$work/errs.txt" \
  || fail "tsmc_errors.py with tasks: $(cat "$work/errs.txt")"
grep -q "^problems in the phrasings training used: 1, samples right 33.3%" "$work/errs.txt" \
  || fail "tsmc_errors seen phrasings: $(cat "$work/errs.txt")"
grep -q "^problems in held-out phrasings: 1, samples right 100.0%" "$work/errs.txt" \
  || fail "tsmc_errors held-out phrasings: $(cat "$work/errs.txt")"
grep -q "^  line 1, gold 17: 18: 2, -0.25, 17: 1$" "$work/errs.txt" || fail "tsmc_errors logp: $(cat "$work/errs.txt")"
echo '{"id":"zz","held_out_phrasing":false}' >"$work/other_tasks.jsonl"
expect_rc 1 "problem a is not in" python3 "$script" "$work/hand.jsonl" "$work/tok/tokenizer.json" "$work/other_tasks.jsonl"
# scripts/tsmc_unseen_tasks.py: 80 items repeat the first 40 (same seed), so the train items from index 40 on are
# new, less those whose question a fine-tuning conversation holds (one planted repeat here)
"$bin" tasks generate --out "$work/t40" --domains math --n 40 --seed 3 >/dev/null 2>&1 || fail "tasks generate 40"
"$bin" tasks generate --out "$work/t80" --domains math --n 80 --seed 3 >/dev/null 2>&1 || fail "tasks generate 80"
head -c 2000 "$work/t40/train.jsonl" | cmp -s - <(head -c 2000 "$work/t80/train.jsonl") || fail "items are not a prefix"
python3 - "$work/t40/train.jsonl" "$work/t80/train.jsonl" "$work/sft.jsonl" <<'EOF' || fail "sft file"
import json, sys
items = [json.loads(l) for l in open(sys.argv[1])]
late = next(json.loads(l) for l in open(sys.argv[2]) if int(json.loads(l)["id"].split("-")[1]) >= 40)
with open(sys.argv[3], "w") as out:
    for t in items + [late]:
        out.write(json.dumps({"messages": [{"role": "user", "content": t["instruction"] + "\n" + t["input"]},
                                           {"role": "assistant", "content": t["solution"]}]}) + "\n")
EOF
unseen="$(dirname "${BASH_SOURCE[0]}")/../../scripts/tsmc_unseen_tasks.py"
python3 "$unseen" "$work/t80/train.jsonl" "$work/sft.jsonl" "$work/new.jsonl" --from 40 >"$work/unseen.txt" \
  || fail "tsmc_unseen_tasks.py: $(cat "$work/unseen.txt")"
want=$(python3 -c 'import json,sys; print(sum(int(json.loads(l)["id"].split("-")[1]) >= 40 for l in open(sys.argv[1])) - 1)' \
  "$work/t80/train.jsonl")
grep -q "^kept $want train items from index 40 on (skipped 0; 1 repeat a fine-tuning problem)" "$work/unseen.txt" \
  || fail "tsmc_unseen_tasks counts (want $want): $(cat "$work/unseen.txt")"
[[ $(wc -l <"$work/new.jsonl") -eq $want ]] || fail "tsmc_unseen_tasks wrote $(wc -l <"$work/new.jsonl") items"
python3 "$unseen" "$work/t80/train.jsonl" "$work/sft.jsonl" "$work/new2.jsonl" --from 40 --skip 1 --count 2 \
  >/dev/null || fail "tsmc_unseen_tasks --skip"
[[ "$(sed -n 2,3p "$work/new.jsonl")" == "$(cat "$work/new2.jsonl")" ]] || fail "tsmc_unseen_tasks --skip/--count"
python3 "$unseen" "$work/t80/val.jsonl" "$work/sft.jsonl" "$work/newval.jsonl" --from 40 --split val >/dev/null \
  || fail "tsmc_unseen_tasks --split val"
python3 -c 'import json,sys; v=[json.loads(l) for l in open(sys.argv[1])]; assert v and all(
  t["split"] == "val" and int(t["id"].split("-")[1]) >= 40 for t in v)' "$work/newval.jsonl" \
  || fail "tsmc_unseen_tasks --split val items"
echo "test_tsmc.sh: all passed"
