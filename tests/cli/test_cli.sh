#!/usr/bin/env bash
# The orchard command's global behaviour: --help, --version, help <cmd>,
# unknown commands and options exit 2 with a message on stderr.
set -euo pipefail
bin="$1"
fail() { echo "FAIL: $*" >&2; exit 1; }
tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT

"$bin" --version | grep -Eq '^orchard [0-9]+\.[0-9]+\.[0-9]+$' || fail "--version"
"$bin" --help | grep -q "usage: orchard" || fail "--help"
"$bin" --help | grep -q "info" || fail "--help lists commands"
"$bin" help info | grep -q "usage: orchard info" || fail "help info"
"$bin" info --help | grep -q "usage: orchard info" || fail "info --help"
"$bin" --threads 1 info | grep -q "threads: 1" || fail "--threads 1"

expect_usage_error() { # expect exit 2 and a stderr line containing $1
  local want="$1"; shift
  set +e; "$@" 2>"$tmp" >/dev/null; local rc=$?; set -e
  [[ $rc -eq 2 ]] || fail "'$*' exited $rc, wanted 2"
  grep -q -- "$want" "$tmp" || fail "'$*' stderr lacks '$want': $(cat "$tmp")"
}
expect_usage_error nosuchcmd "$bin" nosuchcmd
expect_usage_error threads "$bin" --threads zero info
expect_usage_error usage "$bin"
expect_usage_error "--bogus" "$bin" --bogus
# inspect: a valid file lists its tensors; a malformed one is an error naming the file.
src="${ORCHARD_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}"
seeds="$(mktemp -d)"
trap 'rm -f "$tmp"; rm -rf "$seeds"' EXIT
bash "$src/fuzz/seeds_safetensors.sh" "$seeds" >/dev/null
"$bin" inspect "$seeds/mixed.st" | grep -q "tensors," || fail "inspect table"
"$bin" inspect --json "$seeds/f32.st" | grep -q '"dtype": "F32"' || fail "inspect --json"
printf 'garbage!!' > "$seeds/bad.st"
set +e; "$bin" inspect "$seeds/bad.st" 2>"$tmp"; rc=$?; set -e
[[ $rc -eq 1 ]] || fail "inspect of a malformed file exited $rc"
grep -q "bad.st" "$tmp" || fail "inspect error names the file"
expect_usage_error "missing FILE" "$bin" inspect
# inspect: a GGUF file (found by its magic, whatever the name) lists key/values and tensors.
bash "$src/fuzz/seeds_gguf.sh" "$seeds" >/dev/null
cp "$seeds/mixed.gguf" "$seeds/mixed.bin"
"$bin" inspect "$seeds/mixed.bin" | grep -q "gguf version 2, alignment 64" || fail "inspect gguf header"
"$bin" inspect "$seeds/meta_only.gguf" | grep -q "tokenizer.ggml.tokens .*\[STRING x 3\]" || fail "inspect gguf arrays"
"$bin" inspect "$seeds/q8.gguf" | grep -Eq "^q +Q8_0 +\[32\] +34$" || fail "inspect gguf tensors"
"$bin" inspect --json "$seeds/f32.gguf" | grep -q '"general.architecture": "llama"' || fail "inspect gguf --json"
head -c 40 "$seeds/f32.gguf" > "$seeds/cut.gguf"
set +e; "$bin" inspect "$seeds/cut.gguf" 2>"$tmp"; rc=$?; set -e
[[ $rc -eq 1 ]] || fail "inspect of a truncated gguf exited $rc"
grep -q "cut.gguf" "$tmp" || fail "gguf error names the file"
echo "cli ok"
