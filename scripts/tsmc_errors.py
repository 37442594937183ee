#!/usr/bin/env python3
"""Classifies the wrong samples of a TSMC rollouts file on one-step math
problems (`orchard tsmc rollouts`, difficulty 1): did the sample copy the
question's first number, use the question's two numbers as operands, and get
the arithmetic of its `a +/- b = c` line right? docs/tsmc.md (the fifth run)
uses it to show what the value model would have to detect.

usage: scripts/tsmc_errors.py ROLLOUTS.jsonl TOKENIZER.json

The tokenizer is orchard's tokenizer.json (byte-level BPE: every token is a
string of the 256 byte symbols, as written by `orchard tokenizer train`).
Standard library only.
"""
import collections
import json
import re
import sys


def byte_decoder():
    """The byte-level alphabet: printable bytes stand for themselves, the rest
    are shifted above 255 (the same table the tokenizer writes with)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(keep, chars)}


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.split("\n\n")[1])
    vocab = json.load(open(sys.argv[2]))["model"]["vocab"]
    pieces = {i: p for p, i in vocab.items()}
    dec = byte_decoder()

    def text(ids):
        return bytes(dec[ch] for i in ids for ch in pieces[i]).decode("utf-8", "replace")

    kinds = collections.Counter()
    right = wrong = 0
    for line_no, line in enumerate(open(sys.argv[1]), 1):
        prob = json.loads(line)
        question = prob["question"].split("\n", 1)[-1]
        nums = [int(x) for x in re.findall(r"\d+", question)]
        for s in prob["samples"]:
            if s["correct"]:
                right += 1
                continue
            wrong += 1
            lines = text(s["ids"]).split("\n")
            first = [int(x) for x in re.findall(r"\d+", lines[0])]
            eq = re.match(r"\s*(\d+)\s*([+-])\s*(\d+)\s*=\s*(\d+)", lines[1] if len(lines) > 1 else "")
            copied = bool(first and nums and first[0] == nums[0])
            if not eq:
                kinds["no a +/- b = c line"] += 1
                continue
            a, op, b, c = int(eq[1]), eq[2], int(eq[3]), int(eq[4])
            operands = len(nums) >= 2 and sorted([a, b]) == sorted(nums[:2])
            arith = (a + b == c) if op == "+" else (a - b == c)
            if not copied:
                kinds["miscopied the first number"] += 1
            elif not operands:
                kinds["wrong operands"] += 1
            elif not arith:
                kinds["right operands, arithmetic wrong"] += 1
            else:
                kinds["right operands and arithmetic, wrong answer line"] += 1
    print(f"{right + wrong} samples, {right} right, {wrong} wrong")
    for k, n in kinds.most_common():
        print(f"  {n:6d}  {100.0 * n / max(wrong, 1):5.1f}%  {k}")


if __name__ == "__main__":
    main()
