#!/usr/bin/env python3
"""Writes the SentencePiece-style (`llama` kind) tokenizer fixture for
tests/tokenizer/test_spm.c.

1. tests/tokenizer/fixtures/spm_vocab.gguf: a GGUF v3 file with no tensors and
   a `llama` vocabulary (<unk>, <s>, </s>, the 256 <0xNN> byte tokens, then
   pieces learned here by a small BPE over the text below, with "▁" for a
   space and score = -rank), plus the hyper-parameter keys llama.cpp reads.
2. With --llama-tokenize PATH (llama.cpp's tool, a peer built outside this
   repository): tests/tokenizer/fixtures/spm_expected.json, the ids llama.cpp
   gives each test string, so orchard's encoder is checked against the peer.

Usage: python3 scripts/gen_spm_fixture.py [--llama-tokenize PATH]
"""
import json
import os
import struct
import subprocess
import sys
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "tests", "tokenizer", "fixtures")

TEXT = """
The State of the Union is strong, and the people of these United States have
worked hard for it. In 1863 the nation was divided; in 1865 it was whole again.
Call me Ishmael. Some years ago, never mind how long precisely, having little or
no money in my purse, I thought I would sail about a little and see the watery
part of the world. The whale, the whale! said the captain, there she blows.
Le café était très bon, et l'hôtel près de la mer était plein. Où êtes-vous?
Über den Wolken muß die Freiheit wohl grenzenlos sein. Größe, Straße, schön.
Η γλώσσα είναι ελληνική. Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 2024 3.14159
Tabs\tand
newlines, "quotes", (parentheses), [brackets], {braces}; colons: and semi;colons.
"""

TESTS = [
    "Hello world",
    "The whale, the whale!",
    " leading space",
    "two  spaces and   three",
    "trailing space ",
    "Call me Ishmael.\nSome years ago",
    "tabs\tand\nnewlines\n\n",
    "Le café était très bon.",
    "Über Größe und Straße",
    "Η γλώσσα",
    "emoji \U0001F600 and CJK \u4E2D\u6587 fall back to bytes",
    "digits 1234567890 and 3.14159",
    "unseen letters: qxzj QXZJ",
    "a",
    " ",
    "   ",
    "\u2581literal lower one eighth block",
    "worked hard for the nation in 1863",
]

N_MERGES = 600


def learn_pieces():
    words = Counter()
    for w in TEXT.replace("\n", " ").split(" "):
        if w:
            words["\u2581" + w] += 1
    chars = sorted({c for w in words for c in w})
    seqs = {w: list(w) for w in words}
    pieces = []
    for _ in range(N_MERGES):
        pairs = Counter()
        for w, f in words.items():
            s = seqs[w]
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += f
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], -len(kv[0][0] + kv[0][1]), kv[0]))
        (a, b), f = best
        if f < 2:
            break
        new = a + b
        pieces.append(new)
        for w in words:
            s = seqs[w]
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(new)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
    return chars, pieces


def gguf_string(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


GGUF_U32, GGUF_F32, GGUF_BOOL, GGUF_STRING, GGUF_ARRAY, GGUF_I32 = 4, 6, 7, 8, 9, 5


def kv(key, typ, value):
    out = gguf_string(key) + struct.pack("<I", typ)
    if typ == GGUF_U32:
        out += struct.pack("<I", value)
    elif typ == GGUF_F32:
        out += struct.pack("<f", value)
    elif typ == GGUF_BOOL:
        out += struct.pack("<B", 1 if value else 0)
    elif typ == GGUF_STRING:
        out += gguf_string(value)
    else:
        raise ValueError(typ)
    return out


def kv_array(key, elem, values):
    out = gguf_string(key) + struct.pack("<I", GGUF_ARRAY) + struct.pack("<IQ", elem, len(values))
    for v in values:
        if elem == GGUF_STRING:
            out += gguf_string(v)
        elif elem == GGUF_F32:
            out += struct.pack("<f", v)
        elif elem == GGUF_I32:
            out += struct.pack("<i", v)
    return out


def build_gguf(path):
    chars, pieces = learn_pieces()
    tokens = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)]
    types = [2, 3, 3] + [6] * 256  # UNKNOWN, CONTROL, CONTROL, BYTE
    scores = [0.0, 0.0, 0.0] + [0.0] * 256
    seen = set(tokens)
    # single characters first (low scores: never the result of a merge), then the learned pieces by rank
    for i, c in enumerate(chars):
        if c not in seen:
            tokens.append(c)
            types.append(1)
            scores.append(-1000.0 - i)
            seen.add(c)
    for r, p in enumerate(pieces):
        if p not in seen:
            tokens.append(p)
            types.append(1)
            scores.append(-float(r))
            seen.add(p)
    kvs = [
        kv("general.architecture", GGUF_STRING, "llama"),
        kv("general.name", GGUF_STRING, "orchard spm fixture"),
        kv("llama.context_length", GGUF_U32, 128),
        kv("llama.embedding_length", GGUF_U32, 64),
        kv("llama.block_count", GGUF_U32, 1),
        kv("llama.feed_forward_length", GGUF_U32, 128),
        kv("llama.attention.head_count", GGUF_U32, 4),
        kv("llama.attention.head_count_kv", GGUF_U32, 4),
        kv("llama.rope.dimension_count", GGUF_U32, 16),
        kv("llama.attention.layer_norm_rms_epsilon", GGUF_F32, 1e-5),
        kv("llama.vocab_size", GGUF_U32, len(tokens)),
        kv("tokenizer.ggml.model", GGUF_STRING, "llama"),
        kv_array("tokenizer.ggml.tokens", GGUF_STRING, tokens),
        kv_array("tokenizer.ggml.scores", GGUF_F32, scores),
        kv_array("tokenizer.ggml.token_type", GGUF_I32, types),
        kv("tokenizer.ggml.bos_token_id", GGUF_U32, 1),
        kv("tokenizer.ggml.eos_token_id", GGUF_U32, 2),
        kv("tokenizer.ggml.unknown_token_id", GGUF_U32, 0),
        kv("tokenizer.ggml.add_bos_token", GGUF_BOOL, False),
        kv("tokenizer.ggml.add_eos_token", GGUF_BOOL, False),
        kv("tokenizer.ggml.add_space_prefix", GGUF_BOOL, True),
    ]
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs)
    data += b"\0" * ((-len(data)) % 32)
    with open(path, "wb") as f:
        f.write(data)
    return len(tokens)


def main():
    os.makedirs(FIX, exist_ok=True)
    gguf = os.path.join(FIX, "spm_vocab.gguf")
    n = build_gguf(gguf)
    print("wrote %s (%d tokens)" % (gguf, n))
    if "--llama-tokenize" not in sys.argv:
        return
    tool = sys.argv[sys.argv.index("--llama-tokenize") + 1]
    cases = []
    for s in TESTS:
        out = subprocess.run([tool, "-m", gguf, "--ids", "--no-bos", "--no-escape", "--no-parse-special",
                              "--log-disable", "-p", s], capture_output=True, text=True, check=True).stdout
        line = [l for l in out.splitlines() if l.startswith("[")][-1]
        cases.append({"text": s, "ids": json.loads(line)})
    exp = os.path.join(FIX, "spm_expected.json")
    with open(exp, "w", encoding="utf-8") as f:
        f.write('{"source": "llama.cpp llama-tokenize --no-bos --no-parse-special",\n "cases": [\n')
        f.write(",\n".join("  " + json.dumps(c, ensure_ascii=False) for c in cases))
        f.write("\n ]\n}\n")
    print("wrote %s (%d cases)" % (exp, len(cases)))


if __name__ == "__main__":
    main()
