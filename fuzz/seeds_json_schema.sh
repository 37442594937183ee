#!/usr/bin/env bash
# Writes seed inputs for fuzz/fuzz_json_schema into DIR (created if needed):
# a JSON schema, a NUL byte, then output bytes for the matcher. Written by
# hand from the JSON Schema specification and OpenAI's tool examples.
# Usage: fuzz/seeds_json_schema.sh DIR
set -euo pipefail
export LC_ALL=C
dir=${1:?usage: $0 DIR}
mkdir -p "$dir"

seed() { printf '%s\0%s' "$2" "$3" > "$dir/$1"; }

seed object.bin '{"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"}},"required":["city"]}' '{"city": "Oslo", "days": 3}'
seed enum.bin '{"enum":["red","green",1,12,null,{"a":[true]}]}' '{"a":[true]}'
seed array.bin '{"type":"array","items":{"type":"number"},"minItems":1,"maxItems":3}' '[1.5, -2e3, 0]'
seed anyof.bin '{"anyOf":[{"type":"object","properties":{"x":{"type":"integer"}},"required":["x"]},{"type":"string","maxLength":3},{"type":"null"}]}' '{"x":-0}'
seed types.bin '{"type":["string","boolean","null"]}' '"a\u00e9\n\"\\"'
seed any.bin '{}' '{"k":[1,{"b":null},"\u20ac",false],"z":-1.25E+2}'
seed additional.bin '{"type":"object","properties":{"a":{"const":1}},"additionalProperties":{"type":"boolean"}}' '{"a":1,"b":true,"c":false}'
seed string.bin '{"type":"string","minLength":2,"maxLength":5,"description":"d","format":"date"}' '"caf\xc3\xa9"'
seed bad.bin '{"type":"object","properties":{"a":{"pattern":"x"}}}' '{}'
seed nested.bin '{"type":"object","properties":{"p":{"type":"object","properties":{"q":{"type":"array","items":{"oneOf":[{"type":"integer"},{"type":"string"}]}}},"required":["q"]}},"required":["p"]}' '{"p":{"q":[1,"a",2]}}'
seed ordered.bin '{"type":"object","properties":{"name":{"const":"f"},"arguments":{}},"required":["name","arguments"],"additionalProperties":false,"x-orchard-ordered":true}' '{"name":"f", "arguments":{"a":[1]}}'
seed empty_schema.bin '' '{"any": [1, 2]}'
echo "wrote $(ls "$dir" | wc -l) seeds to $dir"
