# Shared set-up of the command-line tests (tests/cli/test_*.sh), sourced as
#   source "$(dirname "${BASH_SOURCE[0]}")/../support/cli_common.sh" "$1"
# It gives: $bin (the orchard binary), $work (a scratch directory removed at
# exit, after the script's own cleanup_extra function if it defines one, e.g.
# to stop a server), $err, fail, orc (orchard on one thread) and expect_rc.
set -euo pipefail
bin="$1"
fail() { echo "FAIL: $*" >&2; exit 1; }
work="$(mktemp -d)"
err="$work/stderr"
cli_cleanup() {
  if declare -F cleanup_extra >/dev/null; then cleanup_extra || true; fi
  rm -rf "$work"
}
trap cli_cleanup EXIT
orc() { "$bin" --threads 1 "$@"; }

expect_rc() { # expect exit status $1 and stderr containing $2
  local want_rc="$1" want="$2"; shift 2
  set +e; "$@" 2>"$err" >"$work/stdout" </dev/null; local rc=$?; set -e
  [[ $rc -eq $want_rc ]] || fail "'$*' exited $rc, wanted $want_rc: $(cat "$err")"
  grep -q -- "$want" "$err" || fail "'$*' stderr lacks '$want': $(cat "$err")"
}
