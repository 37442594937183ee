#!/usr/bin/env bash
# `orchard tasks`: usage errors, the missing-corpus error, generate with a
# tiny SOTU-like corpus (files, manifest, same output for the same seed, a
# different one for another seed), and eval of perfect and empty predictions.
source "$(dirname "${BASH_SOURCE[0]}")/../support/cli_common.sh" "$1"

prints "usage: orchard tasks generate" "$bin" help tasks || fail "help tasks"
prints "tasks" "$bin" --help || fail "--help lists tasks"
expect_rc 2 "missing subcommand" "$bin" tasks
expect_rc 2 "not a subcommand" "$bin" tasks bogus
expect_rc 2 "unknown domain 'poetry'" "$bin" tasks generate --out "$work/x" --domains math,poetry
expect_rc 2 "--out DIR is required" "$bin" tasks generate --n 3
expect_rc 2 "required" "$bin" tasks eval --tasks "$work/none.jsonl"
expect_rc 1 "orchard data fetch" "$bin" tasks generate --out "$work/x" --domains facts --corpus "$work/absent.jsonl"
ORCHARD_CACHE="$work/empty-cache" expect_rc 1 "orchard data fetch" "$bin" tasks generate --out "$work/x" --n 2

cat >"$work/sotu.jsonl" <<'JSON'
{"year": 1861, "name": "Abraham Lincoln", "party": "Republican", "text": "..."}
{"year": 1862, "name": "Abraham Lincoln", "party": "Republican", "text": "..."}
{"year": 1934, "name": "Franklin D Roosevelt", "party": "Democratic", "text": "..."}
JSON
"$bin" tasks generate --out "$work/a" --n 200 --seed 3 --corpus "$work/sotu.jsonl" >/dev/null
"$bin" --threads 1 tasks generate --out "$work/b" --n 200 --seed 3 --corpus "$work/sotu.jsonl" >/dev/null
"$bin" tasks generate --out "$work/c" --n 200 --seed 4 --corpus "$work/sotu.jsonl" >/dev/null
for f in train.jsonl val.jsonl test.jsonl manifest.json; do
  [[ -s "$work/a/$f" ]] || fail "missing $f"
  cmp -s "$work/a/$f" "$work/b/$f" || fail "$f differs between runs with the same seed"
done
cmp -s "$work/a/train.jsonl" "$work/c/train.jsonl" && fail "seeds 3 and 4 gave the same train.jsonl"
total=$(cat "$work/a"/{train,val,test}.jsonl | wc -l)
[[ $total -eq 1000 ]] || fail "expected 1000 items, got $total"
grep -q '"n_per_domain": 200' "$work/a/manifest.json" || fail "manifest"
grep -q '"held_out_phrasing":true' "$work/a/train.jsonl" && fail "held-out phrasing in train"
grep -q '"held_out_phrasing":true' "$work/a/test.jsonl" || fail "no held-out phrasing in test"

# A difficulty range: only those difficulties, recorded in the manifest; bad ranges are errors.
"$bin" tasks generate --out "$work/easy" --domains math,strings --n 100 --difficulty 1-2 >/dev/null || fail "difficulty 1-2"
grep -q '"difficulty":[345]' "$work/easy/train.jsonl" "$work/easy/test.jsonl" && fail "difficulty above 2 in a 1-2 suite"
grep -q '"difficulty":2' "$work/easy/train.jsonl" || fail "no difficulty 2 item in a 1-2 suite"
for bad in 0-2 3-1 6 2x; do
    "$bin" tasks generate --out "$work/bad" --domains math --n 5 --difficulty "$bad" 2>"$work/err" && fail "--difficulty $bad accepted"
    grep -q "difficulty" "$work/err" || fail "--difficulty $bad: unclear error"
done

# Distractors: K extra sentences per math problem, recorded in the manifest; the solutions unchanged; K > 3 refused.
"$bin" tasks generate --out "$work/dis" --domains math --n 50 --difficulty 2 --distractors 1 >/dev/null || fail "distractors 1"
tr -d ' \n' <"$work/dis/manifest.json" | grep -q '"distractors":1' || fail "distractors not in the manifest"
"$bin" tasks generate --out "$work/nodis" --domains math --n 50 --difficulty 2 >/dev/null || fail "difficulty 2"
python3 - "$work/dis/train.jsonl" "$work/nodis/train.jsonl" <<'PY' || fail "distractor items"
import json, sys
a = {json.loads(l)["id"]: json.loads(l) for l in open(sys.argv[1])}
b = {json.loads(l)["id"]: json.loads(l) for l in open(sys.argv[2])}
both = set(a) & set(b)
assert both and all(a[i]["solution"] == b[i]["solution"] for i in both)
assert all(a[i]["input"].count(".") == b[i]["input"].count(".") + 1 for i in both)
PY
"$bin" tasks generate --out "$work/bad" --domains math --n 5 --distractors 4 2>"$work/err" && fail "--distractors 4 accepted"
grep -q "distractors" "$work/err" || fail "--distractors 4: unclear error"

# Perfect predictions: the worked solutions themselves.
python3 - "$work/a/test.jsonl" "$work/perfect.jsonl" <<'PY'
import json, sys
with open(sys.argv[2], "w") as out:
    for line in open(sys.argv[1]):
        t = json.loads(line)
        out.write(json.dumps({"id": t["id"], "output": t["solution"]}) + "\n")
PY
"$bin" tasks eval --tasks "$work/a/test.jsonl" --predictions "$work/perfect.jsonl" >"$work/report"
grep -q '"accuracy": 1' "$work/report" || fail "perfect predictions not scored 1: $(head -20 "$work/report")"
grep -q '| \*\*all\*\* |' "$work/report" || fail "no markdown table"
: >"$work/empty.jsonl"
"$bin" tasks eval --tasks "$work/a/test.jsonl" --predictions "$work/empty.jsonl" >"$work/report"
grep -q '"accuracy": 0' "$work/report" || fail "empty predictions not scored 0"
echo "ok"
