#!/usr/bin/env python3
"""Classifies the wrong samples of a TSMC rollouts file on the math word
problems (`orchard tsmc rollouts`, any difficulty) by their first mistake:
did the sample copy the question's first number, and in each `a +/- b = c`
line carry the previous result (the first number for the first line), take
the question's next number and get the arithmetic right; was the answer line
the last result? A sample with every line right and a wrong answer chose an
operation wrongly; one that uses the number of a distractor sentence
(`--distractors`) took the wrong step. Wrong operands are split by what
was taken instead. docs/tsmc.md (the fifth and later runs) uses it to show
what the value model would have to detect. It also prints, per problem,
how much a perfect verifier could gain over voting: the share of problems
with at least one right sample (pass@K), the share that majority voting
over the K samples gets right (ties go to the earliest sample's answer) and
the problems by their number of right samples; then each problem that
voting gets wrong though a sample is right, with each answer's votes and,
when the file records token log-probabilities, the lowest one any sample
of that answer holds (the confidence input's view: docs/tsmc.md, run 13).

usage: scripts/tsmc_errors.py ROLLOUTS.jsonl TOKENIZER.json [TASKS.jsonl]

With the task file the rollouts were drawn from (`orchard tasks generate`
output), it also splits the samples' accuracy between problems in the
phrasings training used and those in the task suite's held-out phrasings.

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


def is_distractor(sentence):
    """The irrelevant sentences of `orchard tasks generate --distractors`:
    another person has / buys some, or the person also has another object
    (the story's own sentences never say "has" after the first, and its
    purchases say "more")."""
    if " also has " in sentence:
        return True
    if " has " in sentence and "How many" not in sentence:
        return True
    return " buys " in sentence and " more " not in sentence


def question_numbers(question):
    """(the numbers the solution uses in order, the distractors' numbers)."""
    sentences = re.findall(r"[^.?]*[.?]", question)
    used, unused = [], []
    for i, sentence in enumerate(sentences):
        found = [int(x) for x in re.findall(r"\d+", sentence)]
        (unused if i > 0 and is_distractor(sentence) else used).extend(found)
    return used, unused


def first_mistake(solution, nums, distractors=()):
    """The first thing a wrong solution got wrong, as a label."""
    lines = solution.split("\n")
    first = [int(x) for x in re.findall(r"\d+", lines[0])]
    if not (first and nums and first[0] == nums[0]):
        return "miscopied the first number"
    prev, step = nums[0], 0
    for line in lines[1:]:
        eq = re.match(r"\s*(\d+)\s*([+-])\s*(\d+)\s*=\s*(\d+)", line)
        if not eq:
            break
        step += 1
        a, op, b, c = int(eq[1]), eq[2], int(eq[3]), int(eq[4])
        # in either order, as the labels of the earlier runs in docs/tsmc.md counted them
        if step >= len(nums) or sorted([a, b]) != sorted([prev, nums[step]]):
            other = b if a == prev else a if b == prev else None
            if other is None:
                return f"step {step}: wrong operands (not the previous result)"
            if other in distractors:
                return f"step {step}: wrong operands (a distractor's number)"
            if other in nums:
                return f"step {step}: wrong operands (another step's number)"
            return f"step {step}: wrong operands (a miscopied number)"
        if c != (a + b if op == "+" else a - b):
            return f"step {step}: arithmetic wrong"
        prev = c
    if step == 0:
        return "no a +/- b = c line"
    answer = re.search(r"####\s*(-?\d+)", solution)
    if not answer or int(answer[1]) != prev:
        return "right steps, the answer line differs from the last result"
    if step < len(nums) - 1:
        return f"right steps, stopped after {step} of {len(nums) - 1}"
    return "right operands and arithmetic, an operation chosen wrongly"


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__.split("\n\n")[1])
    held_out = {}
    if len(sys.argv) == 4:
        for line in open(sys.argv[3]):
            t = json.loads(line)
            held_out[t["id"]] = bool(t.get("held_out_phrasing"))
    by_phrasing = collections.defaultdict(lambda: [0, 0, 0])  # held out? -> [problems, samples, right]
    tok = json.load(open(sys.argv[2]))
    pieces = {i: p for p, i in tok["model"]["vocab"].items()}
    special = {t["id"] for t in tok.get("added_tokens", [])}  # end of turn etc.: no text
    dec = byte_decoder()

    def text(ids):
        return bytes(dec[ch] for i in ids if i not in special for ch in pieces[i]).decode("utf-8", "replace")

    kinds = collections.Counter()
    right = wrong = 0
    problems = any_right = majority_right = 0
    by_right = collections.Counter()
    missed = []  # (line, gold, [(answer, votes, lowest logp or None)]) where voting is wrong but a sample is right
    for line_no, line in enumerate(open(sys.argv[1]), 1):
        prob = json.loads(line)
        question = prob["question"].split("\n", 1)[-1]
        nums, distractors = question_numbers(question)
        n_right = sum(bool(s["correct"]) for s in prob["samples"])
        votes = collections.Counter(s["answer"] for s in prob["samples"] if s.get("answer") is not None)
        problems += 1
        if held_out:
            if prob["id"] not in held_out:
                sys.exit(f"{sys.argv[1]}:{line_no}: problem {prob['id']} is not in {sys.argv[3]}")
            acc = by_phrasing[held_out[prob["id"]]]
            acc[0] += 1
            acc[1] += len(prob["samples"])
            acc[2] += n_right
        any_right += n_right > 0
        by_right[n_right] += 1
        if votes:  # most_common keeps first-seen order among equal counts
            top = votes.most_common(1)[0][0]
            top_right = any(s["correct"] and s["answer"] == top for s in prob["samples"])
            majority_right += top_right
            if not top_right and n_right:
                lows = {a: [min(s["logp"]) for s in prob["samples"] if s.get("answer") == a and s.get("logp")]
                        for a in votes}
                missed.append((line_no, prob["gold"], [(a, n, min(lows[a]) if lows[a] else None)
                                                        for a, n in votes.most_common()]))
        for s in prob["samples"]:
            if s["correct"]:
                right += 1
                continue
            wrong += 1
            kinds[first_mistake(text(s["ids"]), nums, distractors)] += 1
    print(f"{right + wrong} samples, {right} right, {wrong} wrong")
    for k, n in kinds.most_common():
        print(f"  {n:6d}  {100.0 * n / max(wrong, 1):5.1f}%  {k}")
    if problems:
        k_max = max(by_right)
        print(f"{problems} problems: at least one right sample {100.0 * any_right / problems:.1f}%, "
              f"majority vote right {100.0 * majority_right / problems:.1f}%")
        print("  problems by right samples (0..%d): %s" % (k_max, " ".join(str(by_right[i]) for i in range(k_max + 1))))
    for held, name in ((False, "in the phrasings training used"), (True, "in held-out phrasings")):
        if held_out:
            n_p, n_s, n_r = by_phrasing[held]
            print(f"problems {name}: {n_p}, samples right {100.0 * n_r / max(n_s, 1):.1f}%")
    print(f"{len(missed)} problems where voting is wrong and a sample is right (answer: votes, lowest token logp):")
    for line_no, gold, answers in missed:
        shown = ", ".join(f"{a}: {n}" + (f", {lp:.2f}" if lp is not None else "") for a, n, lp in answers)
        print(f"  line {line_no}, gold {gold}: {shown}")


if __name__ == "__main__":
    main()
