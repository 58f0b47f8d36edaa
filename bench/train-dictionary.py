#!/usr/bin/env python3
"""Trains the zstd dictionary of the dictionary spike (docs/PERFORMANCE.md, round 16).

Usage: pip install zstandard; python3 bench/train-dictionary.py DATASET OUT

Trains a 110 KiB dictionary on 250 files between 64 bytes and 128 KiB of the
dataset, picked with a fixed seed, and writes it to OUT. Prints how many files
qualified, the dictionary's size and its zstd dictionary id.
"""

import os
import random
import sys

import zstandard


def main():
    root, out = sys.argv[1], sys.argv[2]
    small = []
    for d, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            p = os.path.join(d, f)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            if 64 <= os.path.getsize(p) < 128 * 1024:
                small.append(p)
    sample = []
    for p in random.Random(2).sample(small, 250):
        with open(p, "rb") as fh:
            sample.append(fh.read())
    dictionary = zstandard.train_dictionary(112640, sample)
    with open(out, "wb") as fh:
        fh.write(dictionary.as_bytes())
    print(len(small), len(dictionary.as_bytes()), dictionary.dict_id())


if __name__ == "__main__":
    main()
