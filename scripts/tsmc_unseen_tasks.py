#!/usr/bin/env python3
"""Picks math problems a TSMC generator was not fine-tuned on, for rollouts
beyond the study's own (docs/tsmc.md, run 15).

Task items are pure functions of (seed, domain, index), so generating more
items with the study's seed and difficulty (`orchard tasks generate --n
40000` where the study used `--tasks 6000`) repeats the study's items first
and then adds new ones. This keeps the train-split items of TASKS.jsonl from
index FROM on (the new ones) whose question text is not the user turn of any
conversation in SFT.jsonl (the study's `sft_train.jsonl`: an underlying
problem can come up again at a new index), skips the first SKIP of those,
and writes at most COUNT to OUT.jsonl. It prints how many it kept and how
many it dropped as repeats. `--split val` picks validation items instead
(more problems to check a value model on than the study's own).

usage: scripts/tsmc_unseen_tasks.py TASKS.jsonl SFT.jsonl OUT.jsonl --from N [--skip S] [--count C]
                                    [--split train|val]

Standard library only.
"""
import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tasks")
    ap.add_argument("sft")
    ap.add_argument("out")
    ap.add_argument("--from", dest="first", type=int, required=True, help="first item index that is new")
    ap.add_argument("--skip", type=int, default=0)
    ap.add_argument("--count", type=int, default=None)
    ap.add_argument("--split", choices=("train", "val"), default="train")
    a = ap.parse_args()
    seen = set()
    with open(a.sft) as f:
        for line in f:
            turn = json.loads(line)["messages"][0]["content"]
            # the study's user turn is instruction + "\n" + input
            seen.add(turn.split("\n", 1)[1] if "\n" in turn else turn)
    kept = repeats = skipped = 0
    with open(a.tasks) as f, open(a.out, "w") as out:
        for n, line in enumerate(f, 1):
            item = json.loads(line)
            try:
                index = int(item["id"].rsplit("-", 1)[1])
            except (KeyError, ValueError, IndexError):
                sys.exit(f"{a.tasks}:{n}: an item id like math-000123 expected, got {item.get('id')!r}")
            if item.get("split") != a.split or index < a.first:
                continue
            if item["input"] in seen:
                repeats += 1
                continue
            if skipped < a.skip:
                skipped += 1
                continue
            if a.count is not None and kept >= a.count:
                break
            out.write(line)
            kept += 1
    print(f"kept {kept} {a.split} items from index {a.first} on (skipped {skipped}; "
          f"{repeats} repeat a fine-tuning problem)")


if __name__ == "__main__":
    main()
