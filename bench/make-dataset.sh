#!/usr/bin/env bash
# Builds the benchmark datasets from real files, deterministically:
#   make-dataset.sh DIR            ~1.5 GB "device": a Linux source tree, Debian
#                                  wallpapers, SQLite databases, binaries
#   make-dataset.sh DIR --quick    a ~300 MB subset of the same
#   make-dataset.sh DIR --small    200,000 files of 0-8 KiB
# Packages come from Debian's archive (apt-get download); everything else
# is generated from fixed seeds, so two runs build the same bytes.
set -euo pipefail
out=${1:?usage: make-dataset.sh DIR [--quick|--small]}
mode=${2:-full}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ "$mode" = "--small" ]; then
    python3 - "$out" <<'PY'
import os, random, sys
root = sys.argv[1]
rng = random.Random(20261124)
for i in range(200_000):
    d = os.path.join(root, f"d{i // 1000:03d}", f"e{(i // 50) % 20:02d}")
    os.makedirs(d, exist_ok=True)
    n = rng.randint(0, 8192)
    # Half text-like (compressible), half random.
    data = (bytes(rng.choice(b"abcdefghij klmnop\n") for _ in range(n)) if i % 2
            else rng.randbytes(n))
    with open(os.path.join(d, f"f{i}.dat"), "wb") as f:
        f.write(data)
PY
    echo "small-files dataset in $out: $(find "$out" -type f | wc -l) files, $(du -sh "$out" | cut -f1)"
    exit 0
fi

cd "$work"
pkgs=(desktop-base gnome-backgrounds coreutils)
if [ "$mode" = "--quick" ]; then pkgs+=(linux-source-6.1); else pkgs+=(linux-source-6.1); fi
apt-get download "${pkgs[@]}" >/dev/null
for p in *.deb; do dpkg -x "$p" "$work/x"; done

# The source tree: the whole kernel, or a few subsystems for --quick.
src=$(ls "$work"/x/usr/src/linux-source-*.tar.xz)
mkdir -p "$out/Documents/src"
if [ "$mode" = "--quick" ]; then
    tar -xJf "$src" -C "$out/Documents/src" --wildcards '*/fs/*' '*/net/*' '*/Documentation/*'
else
    tar -xJf "$src" -C "$out/Documents/src"
fi
# Photos: the wallpapers (PNG, JPEG, SVG), as a camera roll would hold them.
mkdir -p "$out/Pictures"
find "$work/x/usr/share" \( -name '*.jpg' -o -name '*.png' -o -name '*.svg' -o -name '*.jxl' -o -name '*.webp' \) \
    -exec cp -n {} "$out/Pictures/" \;
# Binaries.
mkdir -p "$out/.local/bin"
cp -a "$work"/x/usr/bin/. "$out/.local/bin/"
# Databases: SQLite files of a few MB, as apps keep them.
mkdir -p "$out/.local/share/app"
python3 - "$out/.local/share/app" "$mode" <<'PY'
import os, random, sqlite3, sys
root, mode = sys.argv[1], sys.argv[2]
rng = random.Random(7)
for n in range(2 if mode == "--quick" else 6):
    path = os.path.join(root, f"db{n}.sqlite")
    if os.path.exists(path):
        os.remove(path)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, body BLOB)")
    for i in range(20_000):
        db.execute("INSERT INTO items (name, body) VALUES (?, ?)",
                   (f"item {i} {rng.random()}", rng.randbytes(rng.randint(50, 400))))
    db.commit()
    db.close()
PY
echo "dataset in $out: $(find "$out" -type f | wc -l) files, $(du -sh "$out" | cut -f1)"
