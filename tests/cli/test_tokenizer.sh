#!/usr/bin/env bash
# orchard tokenizer train / tokenize / detokenize: train on generated text
# (plain and JSON lines), check the printed summary and tokenizer.json, a
# byte-exact round trip through the ids, and the usage and format errors.
source "$(dirname "${BASH_SOURCE[0]}")/../support/cli_common.sh" "$1"

# A few hundred KB of text from a fixed word list.
words=(the of and to in a is that it was for on are as with his they at be this from have or one had by word but not what all were we when your can said there use an each which she do how their if will up other about out many then them these so some her would make like him into time has look two more write go see number no way could people my than first water been call who oil its now find long down day did get come made may part 1999 2024 "don't" "it's" caf$'\xc3\xa9')
: > "$work/corpus.txt"
: > "$work/corpus.jsonl"
for ((i = 0; i < 4000; i++)); do
  line=""
  for ((k = 0; k < 12; k++)); do line+="${words[(i * 7 + k * 13 + (i * k) % 11) % ${#words[@]}]} "; done
  printf '%s.\n' "$line" >> "$work/corpus.txt"
  printf '{"id": %d, "text": "%s.\\n"}\n' "$i" "$line" >> "$work/corpus.jsonl"
done

"$bin" tokenizer train --input "$work/corpus.txt" --vocab-size 400 --out "$work/tok" > "$work/out.txt"
grep -q "vocab size: 400" "$work/out.txt" || fail "train summary: $(cat "$work/out.txt")"
grep -q "bytes per token" "$work/out.txt" || fail "train prints the compression"
[[ -f "$work/tok/tokenizer.json" ]] || fail "train writes tokenizer.json"
grep -q '"Isolated"' "$work/tok/tokenizer.json" || fail "digit splitting is stored"
grep -q '"<|assistant|>"' "$work/tok/tokenizer.json" || fail "special tokens are stored"

# The JSON-lines input gives the same tokenizer as the plain text.
"$bin" tokenizer train --input "$work/corpus.jsonl" --jsonl-field text --vocab-size 400 --out "$work/tok2" > /dev/null
cmp -s "$work/tok/tokenizer.json" "$work/tok2/tokenizer.json" || fail "jsonl and plain training differ"

# Round trip, including bytes that are not UTF-8.
{ head -c 3000 "$work/corpus.txt"; printf '\x00\xff\xfe<|user|>'; } > "$work/sample.bin"
"$bin" tokenize --model "$work/tok" --text "$work/sample.bin" > "$work/ids.json"
[[ $(wc -l < "$work/ids.json") -eq 1 ]] || fail "tokenize prints one line"
grep -Eq '^\[[0-9]+(, [0-9]+)*\]$' "$work/ids.json" || fail "tokenize prints a JSON array"
"$bin" detokenize --model "$work/tok" --ids "$work/ids.json" > "$work/back.bin"
cmp -s "$work/sample.bin" "$work/back.bin" || fail "detokenize(tokenize(x)) != x"
# --special turns <|user|> into one id.
printf '<|user|>' > "$work/special.txt"
"$bin" tokenize --model "$work/tok" --text "$work/special.txt" --special | grep -Eq '^\[[0-9]+\]$' || fail "--special"

expect_exit() { # expect exit $1 and a stderr line containing $2
  local want_rc="$1" want="$2"; shift 2
  set +e; "$@" 2>"$work/err" >/dev/null; local rc=$?; set -e
  [[ $rc -eq $want_rc ]] || fail "'$*' exited $rc, wanted $want_rc"
  grep -q -- "$want" "$work/err" || fail "'$*' stderr lacks '$want': $(cat "$work/err")"
}
expect_exit 2 "required" "$bin" tokenizer train --input "$work/corpus.txt"
expect_exit 2 "expected \`train\`" "$bin" tokenizer
expect_exit 2 "vocab-size" "$bin" tokenizer train --input x --vocab-size 10 --out "$work/t3"
expect_exit 1 "nonexistent" "$bin" tokenizer train --input "$work/nonexistent" --vocab-size 300 --out "$work/t3"
expect_exit 2 "required" "$bin" tokenize --model "$work/tok"
printf '{"model": {"type": "Unigram"}}' > "$work/bad.json"
expect_exit 1 "bad.json" "$bin" tokenize --model "$work/bad.json" --text "$work/special.txt"
printf '[1, 99999]' > "$work/badids.json"
expect_exit 1 "99999" "$bin" detokenize --model "$work/tok" --ids "$work/badids.json"
prints "usage: orchard tokenizer train" "$bin" help tokenizer || fail "help tokenizer"
echo "tokenizer cli ok"
