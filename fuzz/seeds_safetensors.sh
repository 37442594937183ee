#!/usr/bin/env bash
# Writes a few valid safetensors seed files for fuzz/fuzz_safetensors into
# DIR (created if needed). Bytes are spelled out here, not produced by
# orchard's writer, so the seeds follow the format and not our code.
# Usage: fuzz/seeds_safetensors.sh DIR
set -euo pipefail
export LC_ALL=C
dir=${1:?usage: $0 DIR}
mkdir -p "$dir"

# seed NAME JSON DATA: DATA is a printf format of \x escapes for the buffer.
# The header is padded with spaces to a multiple of 8 bytes.
seed() {
    local name=$1 json=$2 data=$3
    while (( ${#json} % 8 )); do json+=" "; done
    local n=${#json} len="" i
    for i in 0 1 2 3 4 5 6 7; do len+=$(printf '\\x%02x' $(( (n >> (8 * i)) & 255 ))); done
    { printf "$len"; printf '%s' "$json"; printf "$data"; } > "$dir/$name"
}

seed empty.st '{}' ''
seed meta_only.st '{"__metadata__":{"format":"pt","k":"v"}}' ''
seed f32.st '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}' '\x00\x00\x80\x3f\x00\x00\x20\xc0'
seed mixed.st '{"__metadata__":{"format":"pt"},"b":{"dtype":"BF16","shape":[2],"data_offsets":[8,12]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"d":{"dtype":"U8","shape":[2,2],"data_offsets":[20,24]},"c":{"dtype":"I64","shape":[1],"data_offsets":[12,20]}}' \
    '\x00\x00\x80\x3f\x00\x00\x20\xc0\x80\x3f\x40\xc0\x00\x5e\xd0\xb2\x00\x00\x00\x00\x01\x02\x03\xff'
seed f16.st '{"h":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]}}' '\x00\x3c\x01\x00\xff\x7b\x00\x7e'
seed ints.st '{"i":{"dtype":"I32","shape":[],"data_offsets":[0,4]},"e":{"dtype":"F32","shape":[0,3],"data_offsets":[4,4]},"l":{"dtype":"I64","shape":[1],"data_offsets":[4,12]}}' \
    '\xff\xff\xff\xff\x07\x00\x00\x00\x00\x00\x00\x00'
seed raw.st '{"x":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},"y":{"dtype":"BOOL","shape":[1,1,1,1,1],"data_offsets":[8,9]}}' \
    '\x00\x00\x00\x00\x00\x00\xf0\x3f\x01'
echo "wrote $(ls "$dir" | wc -l) seeds to $dir"
