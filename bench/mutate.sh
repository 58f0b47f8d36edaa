#!/usr/bin/env bash
# A deterministic change of about 1% of the dataset: edited text files,
# pages rewritten in the middle of the SQLite files, new photos, deleted
# files and a renamed directory.
set -euo pipefail
d=${1:?usage: mutate.sh DIR}
python3 - "$d" <<'PY'
import os, random, sqlite3, sys
root = sys.argv[1]
rng = random.Random(42)
files = sorted(
    os.path.join(dp, f) for dp, _, fs in os.walk(root) for f in fs
)
texts = [f for f in files if f.endswith((".c", ".h", ".rst", ".txt"))]
for f in rng.sample(texts, min(300, len(texts))):
    with open(f, "a") as fh:
        fh.write("\n/* edited by the benchmark */\n")
for f in sorted(f for f in files if f.endswith(".sqlite")):
    db = sqlite3.connect(f)
    n = db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    for i in range(n // 3, n // 3 + 500):
        db.execute("UPDATE items SET body = ? WHERE id = ?", (rng.randbytes(300), i))
    db.commit()
    db.close()
pics = sorted(f for f in files if "/Pictures/" in f)
os.makedirs(os.path.join(root, "Pictures", "new"), exist_ok=True)
for i, f in enumerate(pics[:20]):
    data = bytearray(open(f, "rb").read())
    data[len(data) // 2 : len(data) // 2 + 64] = rng.randbytes(64)
    open(os.path.join(root, "Pictures", "new", f"new{i}.bin"), "wb").write(data)
others = [f for f in files if f not in texts and "/Pictures/" not in f and not f.endswith(".sqlite")]
for f in rng.sample(others, min(100, len(others))):
    if os.path.exists(f):
        os.remove(f)
dirs = sorted(dp for dp, _, _ in os.walk(os.path.join(root, "Documents")) if dp.count(os.sep) - root.count(os.sep) == 4)
if dirs:
    os.rename(dirs[len(dirs) // 2], dirs[len(dirs) // 2] + "-renamed")
PY
