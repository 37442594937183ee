#!/usr/bin/env bash
# `orchard train`: usage and recipe errors, the progress line and JSONL log,
# checkpoint files, 20 steps straight == 10 steps (--stop-after) + --resume,
# and Ctrl-C: SIGINT to a running job saves a checkpoint and exits 130, and
# resuming from it continues with the losses of an uninterrupted run. The
# tokenizer and shards are made here with `orchard tokenizer train` and
# `orchard data prepare` on generated documents.
pid=""
cleanup_extra() { if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; fi; }
source "$(dirname "${BASH_SOURCE[0]}")/../support/cli_common.sh" "$1"

losses() { sed -E 's/, "lr".*//' "$1"; } # {"step": N, "loss": X

prints "usage: orchard train" "$bin" help train || fail "help train"
prints "train" "$bin" --help || fail "--help lists train"
expect_rc 2 "are required" orc train
expect_rc 2 "are required" orc train --config x.json
expect_rc 2 "unknown argument" orc train --out "$work/o" --config x.json --bogus
expect_rc 2 "expects an integer" orc train --out "$work/o" --config x.json --steps zero
expect_rc 2 "positive number" orc train --out "$work/o" --config x.json --lr -1

# Data: 40 small documents, a byte-level BPE tokenizer, train/val shards.
for i in $(seq 1 40); do
  echo "{\"text\": \"document $i: the whale, the sea and the ship sailed on. the crew sang $i songs of the sea.\"}"
done > "$work/docs.jsonl"
orc tokenizer train --input "$work/docs.jsonl" --jsonl-field text --vocab-size 300 --out "$work/tok" \
  >/dev/null 2>&1 || fail "tokenizer train"
orc data prepare --input "$work/docs.jsonl" --tokenizer "$work/tok" --out "$work/data" --val-fraction 0.2 \
  >/dev/null 2>&1 || fail "data prepare"

recipe() { # $1 file, $2 steps, $3 eval_every, $4 save_every, $5 extra keys
  cat > "$1" <<EOF
{"model": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
           "intermediate_size": 64, "vocab_size": 320, "max_position_embeddings": 64},
 "tokenizer": "tok", "data": {"train": "data/train.bin", "val": "data/val.bin"},
 "batch": 4, "seq": 16, "accum": 2, "steps": $2, "lr": 0.01, "min_lr": 0.001, "warmup": 3,
 "eval_every": $3, "eval_batches": 2, "save_every": $4, "log_every": 5, "seed": 3${5:-}}
EOF
}

# Recipe errors name the file and the key.
recipe "$work/typo.json" 20 5 7 ', "warmpu": 3'
expect_rc 1 'typo.json: unknown key "warmpu"' orc train --config "$work/typo.json" --out "$work/typo"
recipe "$work/r.json" 20 5 7
expect_rc 1 "warmup" orc train --config "$work/r.json" --out "$work/o" --steps 2
expect_rc 1 "no checkpoint" orc train --config "$work/r.json" --out "$work/empty" --resume
# a model config file that does not load: its own error, not the preset lookup's
echo '{"hidden_size": 32}' > "$work/badcfg.json"
tr -d '\n' < "$work/r.json" | sed 's#"model": {[^}]*}#"model": "badcfg.json"#' > "$work/r_badcfg.json"
expect_rc 1 "badcfg.json" orc train --config "$work/r_badcfg.json" --out "$work/bc"
grep -q "preset" "$err" && fail "a broken config file reported as an unknown preset: $(cat "$err")"

# 20 steps straight, with the log and the progress line.
orc train --config "$work/r.json" --out "$work/a" --log "$work/a.jsonl" > "$work/a.out" 2> "$err" \
  || fail "train: $(cat "$err")"
grep -q "tok/s" "$err" && grep -q "ETA" "$err" || fail "progress line: $(cat "$err")"
grep -q "val_bpb" "$err" || fail "eval line: $(cat "$err")"
[[ $(wc -l < "$work/a.jsonl") -eq 20 ]] || fail "log has $(wc -l < "$work/a.jsonl") lines"
head -1 "$work/a.jsonl" | grep -Eq '^\{"step": 1, "loss": [0-9.e+-]+, "lr": [0-9.e+-]+, "tokens_per_s": [0-9.]+' \
  || fail "log line: $(head -1 "$work/a.jsonl")"
sed -n 5p "$work/a.jsonl" | grep -q '"val_loss": .*"val_bpb": ' || fail "val fields: $(sed -n 5p "$work/a.jsonl")"
for f in config.json model.safetensors tokenizer.json optimizer.safetensors trainer_state.json; do
  [[ -s "$work/a/$f" ]] || fail "checkpoint lacks $f"
done
orc inspect "$work/a/model.safetensors" | grep -q "model.layers.1.self_attn.q_proj.weight" || fail "tensor names"
expect_rc 1 "already holds a checkpoint" orc train --config "$work/r.json" --out "$work/a"

# 10 steps, then --resume without --config (the checkpoint's recipe): the same 20 losses
orc train --config "$work/r.json" --out "$work/b" --log "$work/b.jsonl" --stop-after 10 >/dev/null 2>&1 \
  || fail "train --stop-after"
[[ $(wc -l < "$work/b.jsonl") -eq 10 ]] || fail "stop-after log"
# (on another thread count: kernels are deterministic for any count)
"$bin" --threads 2 train --out "$work/b" --resume --log "$work/b.jsonl" > /dev/null 2> "$err" || fail "resume: $(cat "$err")"
diff <(losses "$work/a.jsonl") <(losses "$work/b.jsonl") > "$work/diff" || fail "resume differs: $(cat "$work/diff")"
cmp "$work/a/model.safetensors" "$work/b/model.safetensors" || fail "final weights differ after resume"

# Ctrl-C: a long job, interrupted once it has logged a few steps.
recipe "$work/long.json" 100000 0 0
"$bin" --threads 1 train --config "$work/long.json" --out "$work/c" --log "$work/c.jsonl" > /dev/null 2> "$work/c.err" &
pid=$!
for _ in $(seq 1 600); do
  [[ -f "$work/c.jsonl" && $(wc -l < "$work/c.jsonl") -ge 3 ]] && break
  kill -0 "$pid" 2>/dev/null || fail "the long job ended early: $(cat "$work/c.err")"
  sleep 0.1
done
kill -INT "$pid"
set +e; wait "$pid"; rc=$?; set -e
pid=""
[[ $rc -eq 130 ]] || fail "interrupted train exited $rc: $(cat "$work/c.err")"
k=$(wc -l < "$work/c.jsonl")
grep -q "interrupted at step $k: checkpoint saved in $work/c" "$work/c.err" || fail "interrupt message: $(cat "$work/c.err")"
grep -q "\"step\": $k," "$work/c/trainer_state.json" || fail "trainer_state step is not $k"
orc train --config "$work/long.json" --out "$work/c" --resume --log "$work/c.jsonl" --stop-after $((k + 3)) \
  >/dev/null 2>&1 || fail "resume after Ctrl-C"
orc train --config "$work/long.json" --out "$work/d" --log "$work/d.jsonl" --stop-after $((k + 3)) \
  >/dev/null 2>&1 || fail "straight run to step $((k + 3))"
diff <(losses "$work/c.jsonl") <(losses "$work/d.jsonl") > "$work/diff" \
  || fail "losses after Ctrl-C + resume differ: $(head -5 "$work/diff")"
echo "train ok (interrupted at step $k)"
