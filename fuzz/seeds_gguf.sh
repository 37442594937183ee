#!/usr/bin/env bash
# Writes a few valid GGUF seed files for fuzz/fuzz_gguf into DIR (created if
# needed). Bytes are spelled out here, not produced by orchard's writer, so
# the seeds follow the format and not our code.
# Usage: fuzz/seeds_gguf.sh DIR
set -euo pipefail
export LC_ALL=C
dir=${1:?usage: $0 DIR}
mkdir -p "$dir"

out=""                      # the file being written
le() {                      # le BYTES VALUE: VALUE little-endian in BYTES bytes
    local n=$1 v=$2 i s=""
    for ((i = 0; i < n; i++)); do s+=$(printf '\\x%02x' $(( (v >> (8 * i)) & 255 ))); done
    printf "$s" >> "$out"
}
u8() { le 1 "$1"; }
u32() { le 4 "$1"; }
u64() { le 8 "$1"; }
raw() { printf "$1" >> "$out"; }               # \x escapes
str() { u64 ${#1}; printf '%s' "$1" >> "$out"; } # GGUF string: u64 length + bytes
pad() {                                          # zero bytes up to a multiple of $1
    local size; size=$(wc -c < "$out")
    while (( size % $1 )); do printf '\x00' >> "$out"; size=$((size + 1)); done
}
header() { out="$dir/$1"; : > "$out"; raw 'GGUF'; u32 "$2"; u64 "$3"; u64 "$4"; } # name version tensors kvs
# value types
UINT8=0 INT8=1 UINT32=4 INT32=5 FLOAT32=6 BOOL=7 STRING=8 ARRAY=9 INT64=11 FLOAT64=12
# ggml types
F32=0 F16=1 Q4_0=2 Q8_0=8 I32=26 BF16=30
tensor() { str "$1"; u32 "$2"; shift 2; local d; for d in "${@:1:$#-2}"; do u64 "$d"; done; u32 "${@: -2:1}"; u64 "${@: -1}"; } # name n_dims dims... type offset

header empty.gguf 3 0 0

header meta_only.gguf 3 0 4
str general.architecture; u32 $STRING; str llama
str llama.context_length; u32 $UINT32; u32 128
str tokenizer.ggml.tokens; u32 $ARRAY; u32 $STRING; u64 3; str '<s>'; str a; str bc
str tokenizer.ggml.scores; u32 $ARRAY; u32 $FLOAT32; u64 3; raw '\x00\x00\x00\x00\x00\x00\x80\xbf\x00\x00\x20\xc0'

header f32.gguf 3 1 1                      # w: row-major [2, 1] = ggml dims [1, 2]: 1.0, -2.5
str general.architecture; u32 $STRING; str llama
tensor w 2 1 2 $F32 0
pad 32; raw '\x00\x00\x80\x3f\x00\x00\x20\xc0'; pad 32

header q8.gguf 3 1 0                       # d = 1.0 (f16 0x3c00), q = 0..31
tensor q 1 32 $Q8_0 0
pad 32; raw '\x00\x3c'; for i in $(seq 0 31); do u8 "$i"; done; pad 32

header q4.gguf 3 1 0                       # d = -2.0 (f16 0xc000), byte j = j | (15 - j) << 4
tensor q 1 32 $Q4_0 0
pad 32; raw '\x00\xc0'; for i in $(seq 0 15); do u8 $(( i | (15 - i) << 4 )); done; pad 32

header mixed.gguf 2 3 6                    # version 2, alignment 64, nested array
str general.alignment; u32 $UINT32; u32 64
str flag; u32 $BOOL; u8 1
str neg; u32 $INT64; u64 -5
str pi; u32 $FLOAT64; raw '\x18\x2d\x44\x54\xfb\x21\x09\x40'
str small; u32 $INT8; u8 255
str nest; u32 $ARRAY; u32 $ARRAY; u64 2; u32 $UINT8; u64 2; u8 1; u8 2; u32 $INT32; u64 1; u32 3
tensor h 1 2 $F16 0
tensor b 2 2 2 $BF16 64
tensor i 1 3 $I32 128
pad 64; raw '\x00\x3c\x00\xc0'; pad 64
raw '\x80\x3f\x00\x40\x40\x40\x80\xc0'; pad 64
raw '\x01\x00\x00\x00\xff\xff\xff\xff\x07\x00\x00\x00'; pad 64

echo "wrote $(ls "$dir" | wc -l) seeds to $dir"
