"""Summarise a py-spy raw profile (collapsed stacks): where the controller spends its CPU.

    python -m hack.profile_top bench-results/fleet-profile.txt [--top 25]

Prints the functions with the most samples on top of the stack (self) and the kubenova
functions with the most samples anywhere in the stack (inclusive).
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import sys

IDLE = ("concurrent/futures/thread.py", "selectors.py")  # threads waiting, not working


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.profile_top")
    parser.add_argument("profile", type=pathlib.Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in args.profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if any(idle in frames[-1] for idle in IDLE):
            continue
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    print(f"{total} busy samples (idle threads and the event loop's wait left out)")
    print("self:")
    for frame, n in own.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {frame}")
    print("inclusive, kubenova:")
    mine = [(f, n) for f, n in inclusive.most_common() if "kubenova/" in f]
    for frame, n in mine[: args.top]:
        print(f"  {100 * n / total:5.1f}%  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
