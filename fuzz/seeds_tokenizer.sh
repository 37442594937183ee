#!/usr/bin/env bash
# Writes a few valid tokenizer.json seed files for fuzz/fuzz_tokenizer into
# DIR (created if needed). The JSON is spelled out here (the 256 byte tokens
# by GPT-2's byte-to-character rule), not produced by orchard's writer, so
# the seeds follow the format and not our code. Kept compact: libFuzzer runs
# with -max_len=4096.
# Usage: fuzz/seeds_tokenizer.sh DIR
set -euo pipefail
export LC_ALL=C
dir=${1:?usage: $0 DIR}
mkdir -p "$dir"

# The byte tokens as "c":id pairs, id = byte value, c = GPT-2's character.
byte_vocab() {
    local b n=0 cp fmt=""
    for ((b = 0; b < 256; b++)); do
        if (( (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174 )); then cp=$b; else cp=$((256 + n)); n=$((n + 1)); fi
        (( b )) && fmt+=","
        if (( cp == 34 || cp == 92 )); then fmt+='"\\'"$(printf '\\x%02x' "$cp")"'"'
        elif (( cp < 128 )); then fmt+='"'"$(printf '\\x%02x' "$cp")"'"'
        else fmt+='"'"$(printf '\\x%02x\\x%02x' $((0xC0 | (cp >> 6))) $((0x80 | (cp & 63))))"'"'
        fi
        fmt+=":$b"
    done
    printf "$fmt"
}
G=$'\xc4\xa0' # the character for the space byte
bytes=$(byte_vocab)
extra=",\"${G}t\":256,\"he\":257,\"${G}the\":258,\"in\":259,\"${G}in\":260,\"12\":261"
merges_str="\"h e\",\"${G} t\",\"${G}t he\",\"i n\",\"${G} in\",\"1 2\""
merges_pairs="[\"h\",\"e\"],[\"${G}\",\"t\"],[\"${G}t\",\"he\"],[\"i\",\"n\"],[\"${G}\",\"in\"],[\"1\",\"2\"]"
added='[{"id":262,"content":"<|endoftext|>","special":true},{"id":263,"content":"<|user|>","special":true}]'
bytelevel='{"type":"ByteLevel","add_prefix_space":false,"use_regex":true}'
digits='{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"[0-9]"},"behavior":"Isolated","invert":false},'"$bytelevel"']}'

# seed NAME ADDED PRE MODEL_EXTRA MERGES
seed() {
    printf '{"added_tokens":%s,"normalizer":null,"pre_tokenizer":%s,"decoder":{"type":"ByteLevel"},"model":{"type":"BPE"%s,"vocab":{%s%s},"merges":[%s]}}' \
        "$2" "$3" "$4" "$bytes" "$extra" "$5" > "$dir/$1"
}
seed gpt2.json "$added" "$bytelevel" '' "$merges_str"
seed digits_pairs.json "$added" "$digits" ',"dropout":null' "$merges_pairs"
seed prefix_space.json '[]' '{"type":"ByteLevel"}' ',"ignore_merges":true' "$merges_str"
seed digits_class.json "$added" '{"type":"Sequence","pretokenizers":[{"type":"Digits","individual_digits":true},{"type":"ByteLevel","add_prefix_space":false}]}' '' "$merges_pairs"

# SentencePiece kind: <0xNN> byte tokens, pieces with U+2581 for a space.
M=$'\xe2\x96\x81'
E=$'\xc3\xa9'
spm_bytes=$(for ((b = 0; b < 256; b++)); do (( b )) && printf ','; printf '"<0x%02X>":%d' "$b" "$b"; done)
spm_vocab="$spm_bytes,\"${M}\":256,\"t\":257,\"h\":258,\"e\":259,\"${M}t\":260,\"he\":261,\"${M}the\":262,\"${E}\":263"
spm_merges="[\"${M}\",\"t\"],[\"h\",\"e\"],[\"${M}t\",\"he\"]"
spm_added='[{"id":264,"content":"<s>","special":true},{"id":265,"content":"</s>","special":true}]'
printf '{"added_tokens":%s,"normalizer":{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"%s"},{"type":"Replace","pattern":{"String":" "},"content":"%s"}]},"pre_tokenizer":null,"model":{"type":"BPE","byte_fallback":true,"unk_token":null,"vocab":{%s},"merges":[%s]}}' \
    "$spm_added" "$M" "$M" "$spm_vocab" "$spm_merges" > "$dir/spm_normalizer.json"
printf '{"added_tokens":%s,"normalizer":null,"pre_tokenizer":{"type":"Metaspace","replacement":"%s","prepend_scheme":"first","split":false},"model":{"type":"BPE","byte_fallback":true,"vocab":{%s},"merges":[%s]}}' \
    "$spm_added" "$M" "$spm_vocab" "$spm_merges" > "$dir/spm_metaspace.json"
echo "wrote $(ls "$dir" | wc -l) seeds to $dir"
