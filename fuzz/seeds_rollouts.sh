#!/usr/bin/env bash
# Writes seed inputs for fuzz/fuzz_rollouts into DIR (created if needed): TSMC
# rollouts files (one problem per line: id, question, gold, prompt ids and the
# sampled solutions with their step ends, answer, label and token
# log-probabilities), spelled out by hand from docs/tsmc.md.
# Usage: fuzz/seeds_rollouts.sh DIR
set -euo pipefail
export LC_ALL=C
dir=${1:?usage: $0 DIR}
mkdir -p "$dir"

printf '%s\n' '{"id":"math-1","question":"Tom has 3 apples and buys 4 more.","gold":"7","prompt":[1,2,3],"samples":[{"ids":[10,11,12,13],"step_end":[1,3],"answer":"7","correct":true,"logp":[-0.1,-0.02,-3.5,0]},{"ids":[10,14],"step_end":[1],"answer":null,"correct":false}]}' > "$dir/two_samples.jsonl"
printf '%s\n%s\n' '{"id":"a","question":"q","gold":"1","prompt":[5],"samples":[]}' \
  '{"id":"b","question":"12 - 5","gold":"7","prompt":[299,0],"samples":[{"ids":[],"step_end":[],"correct":false,"logp":[]}]}' > "$dir/edge.jsonl"
printf '%s\r\n\r\n%s\n' '{"id":"c","question":"\u00e9","gold":"-2","prompt":[7,7],"samples":[{"ids":[1,2,3],"step_end":[0,1,2],"answer":"-2","correct":true,"logp":[-1e-4,-12.25,-0.5]}]}' \
  '{"id":"d","question":"x","gold":"0","prompt":[4],"samples":[{"ids":[8],"step_end":[0],"answer":"0","correct":true}]}' > "$dir/crlf.jsonl"
