#!/usr/bin/env python3
"""What other compression settings would store, on a dataset's files.

Usage: pip install zstandard; python3 bench/compression.py DATASET

Cuts every file into pieces of at most 512 KiB (Haven's average chunk) and
compresses each piece on its own, as Haven compresses each blob, keeping a
piece raw when zstd does not shrink it. Prints, for the whole dataset, the
bytes stored at zstd levels 3 to 7 with the time each took, then, for the
files under 128 KiB (one blob each), the bytes stored at level 3 without and
with a dictionary trained on a deterministic sample of N of them. No
encryption, no pack index: the figures compare settings, they are not a
repository size.
"""

import os
import random
import sys
import time

import zstandard

PIECE = 512 * 1024
SMALL = 128 * 1024


def pieces(root):
    for d, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            p = os.path.join(d, f)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            with open(p, "rb") as fh:
                data = fh.read()
            for i in range(0, max(len(data), 1), PIECE):
                yield data[i : i + PIECE]


def stored(compressor, items):
    return sum(min(len(compressor.compress(x)), len(x)) if len(x) >= 64 else len(x) for x in items)


def main():
    root = sys.argv[1]
    items = list(pieces(root))
    print(f"{len(items)} pieces, {sum(map(len, items))} bytes")
    for level in range(3, 8):
        start = time.time()
        total = stored(zstandard.ZstdCompressor(level=level), items)
        print(f"level {level}: {total} bytes stored, {time.time() - start:.2f} s")
    small = [x for x in items if 64 <= len(x) < SMALL]
    plain = stored(zstandard.ZstdCompressor(level=3), small)
    print(f"{len(small)} pieces under {SMALL} bytes: {plain} bytes stored at level 3")
    rng = random.Random(2)
    for n in (250, 500, 1000, 2000):
        sample = rng.sample(small, n)
        start = time.time()
        dictionary = zstandard.train_dictionary(112640, sample)
        trained = time.time() - start
        total = stored(zstandard.ZstdCompressor(level=3, dict_data=dictionary), small)
        print(
            f"dictionary of {len(dictionary.as_bytes())} bytes from {n} files "
            f"({sum(map(len, sample))} bytes, trained in {trained:.2f} s): "
            f"{total} bytes stored, {plain - total} saved"
        )


if __name__ == "__main__":
    main()
