# Shared set-up of the command-line tests (tests/cli/test_*.sh), sourced as
#   source "$(dirname "${BASH_SOURCE[0]}")/../support/cli_common.sh" "$1"
# It gives: $bin (the orchard binary), $work (a scratch directory removed at
# exit, after the script's own cleanup_extra function if it defines one),
# $err, fail, orc (orchard on one thread), expect_rc, prints, and serve_start /
# serve_stop for tests that talk to `orchard serve` (a server still running at
# exit is killed).
set -euo pipefail
bin="$1"
fail() { echo "FAIL: $*" >&2; exit 1; }
work="$(mktemp -d)"
err="$work/stderr"
server_pid=""
cli_cleanup() {
  if declare -F cleanup_extra >/dev/null; then cleanup_extra || true; fi
  if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
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

# prints PATTERN CMD...: CMD's stdout holds PATTERN (grep). The output is read
# whole before grep: `CMD | grep -q` fails under pipefail when grep exits at
# its first match and CMD still writes (SIGPIPE), e.g. a help text over the
# 4 KB stdio buffer.
prints() {
  local want="$1" out; shift
  out="$("$@")" || return 1
  grep -q -- "$want" <<<"$out"
}

# serve_start ARGS...: run `orchard ARGS...` (a serve command with --port 0) in
# the background, stdout to $work/serve.out and stderr to $work/serve.err, and
# wait for its "listening on port N" line; sets server_pid, port and url.
serve_start() {
  : >"$work/serve.out"
  "$bin" "$@" >"$work/serve.out" 2>"$work/serve.err" &
  server_pid=$!
  port=""
  for _ in $(seq 1 200); do
    port="$(sed -n 's/^listening on port \([0-9]*\)$/\1/p' "$work/serve.out")"
    if [[ -n "$port" ]]; then url="http://127.0.0.1:$port"; return 0; fi
    kill -0 "$server_pid" 2>/dev/null || fail "$* exited: $(cat "$work/serve.err")"
    sleep 0.1
  done
  fail "$* printed no port: $(cat "$work/serve.err")"
}

# serve_stop: SIGTERM the server started by serve_start; it must exit 0.
serve_stop() {
  kill -TERM "$server_pid"
  wait "$server_pid" || fail "serve exited non-zero after SIGTERM"
  server_pid=""
}
