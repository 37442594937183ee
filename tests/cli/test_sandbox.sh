#!/usr/bin/env bash
# `orchard sandbox`: usage errors, `tools` (text and JSON schemas), `call` on
# a fresh world (a result on stdout, a tool exception on stderr with exit 1),
# a saved state that keeps changes and logs calls across runs, `show` at a
# message index, and `gen-data` reproducing the shipped data set.
source "$(dirname "${BASH_SOURCE[0]}")/../support/cli_common.sh" "$1"
src="${ORCHARD_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}"

"$bin" help sandbox > "$work/help.txt"
grep -q "usage: orchard sandbox tools" "$work/help.txt" || fail "help sandbox"
"$bin" --help > "$work/help.txt"
grep -q "sandbox" "$work/help.txt" || fail "--help lists sandbox"
expect_rc 2 "missing subcommand" "$bin" sandbox
expect_rc 2 "not a subcommand" "$bin" sandbox bogus
expect_rc 2 "unknown argument" "$bin" sandbox tools --bogus
expect_rc 2 "missing the tool NAME" "$bin" sandbox call
expect_rc 2 "--state FILE.sqlite is required" "$bin" sandbox show

"$bin" sandbox tools > "$work/tools.txt"
grep -q "^send_message_with_phone_number" "$work/tools.txt" || fail "tools lists send_message"
"$bin" sandbox tools --json > "$work/tools.json"
grep -q '"type": "function"' "$work/tools.json" || fail "tools --json form"
grep -q '"name": "search_weather"' "$work/tools.json" || fail "tools --json has search_weather"

out=$("$bin" sandbox call get_wifi_status '{}')
[[ "$out" == '{"wifi":true}' ]] || fail "get_wifi_status: $out"
expect_rc 1 "exception: set_wifi_status: wifi is already on" "$bin" sandbox call set_wifi_status '{"on": true}'
expect_rc 1 "exception: no tool named 'nope'" "$bin" sandbox call nope '{}'
expect_rc 1 "missing required argument 'on'" "$bin" sandbox call set_wifi_status '{}'

# A saved state: changes persist and each call is logged.
state="$work/state.sqlite"
"$bin" sandbox call set_cellular_service_status '{"on": false}' --state "$state" > /dev/null
expect_rc 1 "cellular service is off" "$bin" sandbox call send_message_with_phone_number \
  '{"phone_number": "+15550003333", "content": "hi"}' --state "$state"
"$bin" sandbox call set_cellular_service_status '{"on": true}' --state "$state" > /dev/null
"$bin" sandbox call send_message_with_phone_number '{"phone_number": "+15550003333", "content": "hi"}' \
  --state "$state" | grep -q message_id || fail "send after enabling cellular"
"$bin" sandbox show --state "$state" --table log > "$work/log.json"
[[ $(grep -c '"tool_call_id"' "$work/log.json") -eq 4 ]] || fail "log has 4 replies: $(cat "$work/log.json")"
"$bin" sandbox show --state "$state" --table messages --at 2 | grep -q '^\[\]$' || fail "no message at index 2"
"$bin" sandbox show --state "$state" --table messages | grep -q '"content": "hi"' || fail "message now"
"$bin" sandbox show --state "$state" --table settings --at 0 | grep -q '"cellular": 0' || fail "cellular off at 0"
expect_rc 1 "no table 'bogus'" "$bin" sandbox show --state "$state" --table bogus
expect_rc 1 "cannot open" "$bin" sandbox show --state "$work/missing.sqlite"

"$bin" sandbox gen-data --out "$work/world.json"
cmp -s "$work/world.json" "$src/data/sandbox/world.json" || fail "gen-data differs from data/sandbox/world.json"
"$bin" sandbox gen-data --seed 10 --out "$work/world10.json"
cmp -s "$work/world10.json" "$work/world.json" && fail "seed 10 gives the same data"
expect_rc 1 "no stock matches 'x'" "$bin" sandbox call search_stock '{"query": "x"}' --data "$work/world.json"
expect_rc 1 "sandbox data set" "$bin" sandbox call get_wifi_status '{}' --data "$work/missing.json"
echo "ok"

# run / report: usage errors, then shipped scenarios replayed from their
# oracle trajectories score 1.0 in all 8 augmentations and the report tables
# them by category and augmentation; --augment picks a subset.
expect_rc 2 "are required" "$bin" sandbox run --agent script:x
expect_rc 2 "missing the run DIR" "$bin" sandbox report
expect_rc 1 "summary.json" "$bin" sandbox report "$work/nothing"
expect_rc 1 "cannot open scenario directory" "$bin" sandbox run --agent script:x --user script:x \
  --scenarios "$work/none" --out "$work/run0"
# (tests/sandbox/test_play.c plays every scenario in every augmentation; here
# one scenario per category keeps the command-line check quick under ASan.)
mkdir -p "$work/sc"
for s in send_message_phone message_contact message_multi_turn wifi_low_battery reminder_tomorrow \
         text_unknown_person weather_no_tool; do
  cp "$src/data/sandbox/scenarios/$s.json" "$work/sc/"
done
"$bin" sandbox run --agent "script:$src/data/sandbox/trajectories" --user "script:$src/data/sandbox/trajectories" \
  --scenarios "$work/sc" --out "$work/run" > "$work/run.txt"
grep -q " 0 errors, mean score 1.000" "$work/run.txt" || fail "oracle run: $(cat "$work/run.txt")"
n=$(ls "$work"/sc/*.json | wc -l)
grep -q "^$((n * 8)) played" "$work/run.txt" || fail "every scenario in 8 augmentations: $(tail -1 "$work/run.txt")"
[[ -f "$work/run/send_message_phone.tool_name_scrambled.trajectory.json" ]] || fail "augmented trajectory file"
"$bin" sandbox report "$work/run" > "$work/report.md"
grep -q "^| category | scenarios | distraction_0 | distraction_3 | distraction_10 | all_tools | tool_name_scrambled |" \
  "$work/report.md" || fail "report header: $(cat "$work/report.md")"
grep -q "^| insufficient_information | [0-9]* | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 |" \
  "$work/report.md" || fail "report: $(cat "$work/report.md")"
grep -q '"mean_score": 1' "$work/run/report.json" || fail "report.json"
"$bin" sandbox report "$work/run" --json > "$work/report.json"
grep -q '"by_augmentation"' "$work/report.json" || fail "report --json by augmentation"
# A chosen subset of augmentations; an unknown one is a usage error.
"$bin" sandbox run --agent "script:$src/data/sandbox/trajectories" --user "script:$src/data/sandbox/trajectories" \
  --scenarios "$work/sc" --out "$work/run2" --augment arg_type_scrambled > "$work/run2.txt"
grep -q "^$n played, 0 errors" "$work/run2.txt" || fail "--augment subset: $(tail -1 "$work/run2.txt")"
[[ -f "$work/run2/wifi_low_battery.arg_type_scrambled.trajectory.json" ]] || fail "subset trajectory file"
[[ ! -f "$work/run2/wifi_low_battery.distraction_0.trajectory.json" ]] || fail "subset ran distraction_0"
expect_rc 2 "unknown augmentation 'nope'" "$bin" sandbox run --agent script:x --user script:x \
  --scenarios "$work/none" --out "$work/run3" --augment distraction_3,nope
