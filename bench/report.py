#!/usr/bin/env python3
"""Turns compare.sh's measurements into markdown: medians per tool and step,
and the best peer's figure divided by Haven's (above 1: Haven is better).

    report.py RESULTS.tsv TOOL...

RESULTS.tsv rows: tool, step, wall seconds (or bytes), peak RSS kB.
"""
import statistics
import sys
from collections import defaultdict

path, tools = sys.argv[1], sys.argv[2:]
walls, rsss = defaultdict(list), defaultdict(list)
for line in open(path):
    tool, step, wall, rss = line.rstrip("\n").split("\t")
    walls[tool, step].append(float(wall))
    rsss[tool, step].append(float(rss))


def med(d, key):
    return statistics.median(d[key]) if key in d else None


peers = [t for t in tools if t != "haven"]
steps = ["initial", "unchanged", "after-1pct", "restore"]
runs = max((len(v) for v in walls.values()), default=0)

print("Wall seconds (median), peak client RSS in MB (median):")
print()
print("| step | " + " | ".join(tools) + " | best peer / Haven |")
print("|---|" + "---:|" * (len(tools) + 1))
for step in steps:
    cells = []
    for t in tools:
        w, r = med(walls, (t, step)), med(rsss, (t, step))
        cells.append("–" if w is None else f"{w:.2f} s, {r / 1024:.0f} MB")
    h = med(walls, ("haven", step))
    best = min(((med(walls, (p, step)), p) for p in peers if (p, step) in walls), default=None)
    ratio = f"{best[0] / h:.2f}× ({best[1]})" if best and h else "–"
    print(f"| {step} | " + " | ".join(cells) + f" | {ratio} |")
cells = []
for t in tools:
    b = med(walls, (t, "repository-bytes"))
    cells.append("–" if b is None else f"{b / 1e6:.1f} MB")
h = med(walls, ("haven", "repository-bytes"))
best = min(((med(walls, (p, "repository-bytes")), p) for p in peers if (p, "repository-bytes") in walls), default=None)
ratio = f"{best[0] / h:.3f}× ({best[1]})" if best and h else "–"
print("| repository | " + " | ".join(cells) + f" | {ratio} |")
print()
objects = med(walls, ("haven", "objects-bytes"))
if objects and h:
    print(f"Haven's repository is its server's object store and database ({(h - objects) / 1e6:.1f} MB of it);")
    print(f"the object store alone (packs and snapshot metadata) holds {objects / 1e6:.1f} MB.")
    print()
srv = med(rsss, ("haven-server", "peak-rss"))
if srv:
    print(f"Haven server peak RSS (median over runs): {srv / 1024:.0f} MB.")
    print()
print("Every figure per run (wall s / RSS MB), to see the spread:")
print()
for step in steps:
    for t in tools:
        if (t, step) in walls:
            each = ", ".join(f"{w:.2f}/{r / 1024:.0f}" for w, r in zip(walls[t, step], rsss[t, step]))
            print(f"- {step}, {t}: {each}")
print()
ceil = [(s, med(walls, ("ceiling", s))) for (t, s) in walls if t == "ceiling"]
if ceil:
    print("Reference ceilings on the same data:")
    print()
    print("| ceiling | wall s |")
    print("|---|---:|")
    for s, w in ceil:
        each = walls["ceiling", s]
        runs_of = f" ({'/'.join(f'{v:.2f}' for v in each)})" if len(each) > 1 else ""
        print(f"| {s} | {w:.2f}{runs_of} |")
print()
print(f"Runs: {runs}.")
