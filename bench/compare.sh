#!/usr/bin/env bash
# Haven against restic, rustic and BorgBackup on the same data, in one run,
# alternating tools, with warm caches. Prints a markdown table (absolute
# figures and ratios against the best peer) and writes it to
# bench/results-<date>.md.
#
#   bench/compare.sh [--quick] [--runs N] [--data DIR] [--no-restore]
#
# --no-restore skips the restores (the 200,000-small-files case measures
# backups only). Run as root, every restore writes into a freshly made
# ext4 file system on a loop device (see fresh_fs below).
#
# Needs release builds of Haven (cargo build --release); installs restic,
# borgbackup, zstd, b3sum and GNU time from apt and rustic with
# `cargo install rustic-rs --locked` when missing (rustic takes ~35 min to
# compile on 2 cores: start it early).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
quick=""
runs=1
no_restore=""
data=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick="--quick" ;;
        --runs) runs=$2; shift ;;
        --data) data=$2; shift ;;
        --no-restore) no_restore=1 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
work=${BENCH_DIR:-/var/tmp/haven-bench}
mkdir -p "$work"
mnt=$work/fresh-fs
image=$work/fresh-fs.img
data=${data:-$work/data${quick:+-quick}}

need=()
for t in restic borg zstd b3sum; do command -v $t >/dev/null || need+=("$t"); done
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
    pk=()
    for t in "${need[@]}"; do case $t in borg) pk+=(borgbackup) ;; *) pk+=("$t") ;; esac; done
    apt-get install -y -qq "${pk[@]}" >/dev/null
fi
# BENCH_TOOLS picks the peers (default: all of them).
read -r -a tools <<< "${BENCH_TOOLS:-haven restic rustic borg-lz4 borg-zstd}"
has() { [[ " ${tools[*]} " == *" $1 "* ]]; }
if has rustic && ! command -v rustic >/dev/null; then cargo install rustic-rs --locked; fi
haven=$repo/target/release/haven
server=$repo/target/release/haven-server
[ -x "$haven" ] && [ -x "$server" ] || (cd "$repo" && cargo build --release -p haven-cli -p haven-server)

[ -d "$data" ] || "$here/make-dataset.sh" "$data" ${quick:-}
base=$work/base
rm -rf "$base" && cp -a "$data" "$base"
export RESTIC_PASSWORD=bench-password RUSTIC_PASSWORD=bench-password BORG_PASSPHRASE=bench-password
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes

results=$work/results.tsv
: > "$results"
# Touches 3 GiB of memory and frees it, so that what the measured command
# allocates next (its heap, and the page cache of what it writes) is
# memory the machine used a moment ago. This machine is a VM that hands
# memory freed for more than a few seconds back to its host (free page
# reporting), and the next first touch of such a page costs a fault on the
# host: touching 4 GiB took 1.47 s right after the same had been freed,
# 6.87 s after 30 s idle (round 13). Without this, whichever command first
# wrote much after a pause paid for it: the first run's restores, every
# tool's, took up to twice as long.
# (At most a quarter of the memory available, so that on a smaller machine
# it evicts nothing the command is meant to find cached.)
prefault() {
    python3 -c '
import mmap
avail = next(int(l.split()[1]) << 10 for l in open("/proc/meminfo") if l.startswith("MemAvailable:"))
n = min(3 << 30, avail // 4) // 4096 * 4096
m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for i in range(0, n, 4096):
    m[i] = 1
'
}
# measure TOOL STEP CMD...: wall seconds and peak RSS (kB) of CMD.
measure() {
    local tool=$1 step=$2
    shift 2
    local t
    t=$(mktemp)
    # Every measurement starts with the page cache's dirty data written
    # out: otherwise a tool pays for the writeback of the one before it.
    sync
    prefault
    /usr/bin/time -v -o "$t" "$@" >/dev/null 2>"$work/last.err" || { cat "$work/last.err" >&2; echo "$tool $step failed" >&2; exit 1; }
    local wall rss
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$t" | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$t")
    printf '%s\t%s\t%s\t%s\n' "$tool" "$step" "$wall" "$rss" >> "$results"
    rm -f "$t"
}
# Reads a tree, so that the measured command finds it in the page cache.
# Needed right before each command: this machine (a VM) pages out what
# nobody touched for a minute (DAMON's `pageout` scheme: age of 12 rounds
# of 5 s, up to 128 MiB/s), so a repository written minutes before its
# restore is partly back on the disk.
warm() { tar cf - -C "$1" . | cat >/dev/null; }

repos=$work/repos
port=18499
spid=""
trap '[ -n "$spid" ] && kill $spid 2>/dev/null; drop_fs' EXIT
export HAVEN_PASSWORD=bench-password-long

backup() { # TOOL STEP
    case $1 in
        haven) measure haven "$2" "$haven" backup "$base" ;;
        restic) measure restic "$2" restic -r "$repos/restic" backup --compression auto -q "$base" ;;
        rustic) measure rustic "$2" rustic -r "$repos/rustic" backup "$base" ;;
        borg-lz4) measure borg-lz4 "$2" borg create "$repos/borg-lz4::$2" "$base" ;;
        borg-zstd) measure borg-zstd "$2" borg create --compression zstd,3 "$repos/borg-zstd::$2" "$base" ;;
    esac
}

# Every restore (and the `cp -a` ceiling) writes into a freshly made ext4
# file system on a loop device, so that every tool meets the same, empty
# file system. On the machine's own disk the figures depended on what the
# benchmark had deleted before: ext4 skips inodes freed less than 60 s ago
# when it allocates new ones (the `recently_deleted` check on file systems
# without a journal, like this machine's root), and perf put a third of a
# restore's time, whichever tool's, in that scan after a run's clean-up. The
# loop device does direct I/O, so its image's pages are not cached twice.
# Without root or losetup, targets go under $work after a settled minute.
fresh_fs() { # prints the directory to write into
    drop_fs
    if [ "$(id -u)" = 0 ] && command -v losetup >/dev/null; then
        local need
        need=$(( ($(du -sb "$base" | cut -f1) * 2 >> 20) + 1024 ))M
        rm -f "$image" && truncate -s "$need" "$image"
        # Inodes for every entry twice over: ext4's default of one per
        # 16 KiB runs out on the 200,000 small files.
        mkfs.ext4 -q -F -N $(( $(find "$base" | wc -l) * 2 + 10000 )) "$image"
        local dev
        dev=$(losetup -f --show --direct-io=on "$image")
        mkdir -p "$mnt" && mount "$dev" "$mnt"
        echo "$mnt"
    else
        rm -rf "$work/target" && sync && sleep 61
        mkdir -p "$work/target" && echo "$work/target"
    fi
}
drop_fs() {
    if mountpoint -q "$mnt" 2>/dev/null; then
        local dev
        dev=$(findmnt -n -o SOURCE "$mnt")
        umount "$mnt" && losetup -d "$dev" 2>/dev/null || true
    fi
    rm -f "$image"
}

restore() { # TOOL
    local dst
    dst=$(fresh_fs)/restore-$1
    mkdir -p "$dst"
    case $1 in
        haven) warm "$hs"; measure haven restore "$haven" restore latest --to "$dst" ;;
        restic) warm "$repos/restic"; measure restic restore restic -r "$repos/restic" restore latest --target "$dst" ;;
        rustic) warm "$repos/rustic"; measure rustic restore rustic -r "$repos/rustic" restore latest "$dst" ;;
        borg-lz4) warm "$repos/borg-lz4"; (cd "$dst" && measure borg-lz4 restore borg extract "$repos/borg-lz4::after-1pct") ;;
        borg-zstd) warm "$repos/borg-zstd"; (cd "$dst" && measure borg-zstd restore borg extract "$repos/borg-zstd::after-1pct") ;;
    esac
    diff -r "$base" "$dst$base" >/dev/null || { echo "$1 restored something else" >&2; exit 1; }
}

size() { du -sbc "$@" | tail -n 1 | cut -f1; }

# One run: fresh repositories, the four steps, repository sizes. The
# tools take turns in a different order each run (rotated by the run
# number), so none is always first or last.
one_run() {
    run=$1
    local all=("${tools[@]}")
    local k=$(( (run - 1) % ${#all[@]} ))
    local order=("${all[@]:k}" "${all[@]:0:k}")
    rm -rf "$base" && cp -a "$data" "$base"
    rm -rf "$repos" && mkdir -p "$repos"
    # Haven: its server on loopback with the embedded defaults.
    hs=$repos/haven-server
    "$server" serve --data-dir "$hs" --listen 127.0.0.1:$port --allow-signup 2>"$work/server.log" &
    spid=$!
    sleep 1
    export HAVEN_CONFIG_DIR=$repos/haven-client
    "$haven" signup --server http://127.0.0.1:$port --email bench@example.org --device bench >/dev/null
    printf 'exclude_caches = false\n' > "$HAVEN_CONFIG_DIR/config.toml"
    has restic && restic init -r "$repos/restic" --repository-version 2 >/dev/null
    has rustic && rustic init -r "$repos/rustic" >/dev/null 2>&1
    has borg-lz4 && borg init -e repokey "$repos/borg-lz4" >/dev/null
    has borg-zstd && borg init -e repokey "$repos/borg-zstd" >/dev/null
    for step in initial unchanged; do
        warm "$base"
        for t in "${order[@]}"; do backup "$t" "$step"; done
    done
    "$here/mutate.sh" "$base"
    warm "$base"
    for t in "${order[@]}"; do backup "$t" after-1pct; done
    if [ -z "$no_restore" ]; then
        for t in "${order[@]}"; do restore "$t"; done
        # The restores' yardstick, in the same conditions: a plain copy.
        cp_to=$(fresh_fs)/cp && warm "$base" && measure ceiling cp-a cp -a "$base" "$cp_to"
        drop_fs
    fi
    for t in "${tools[@]}"; do
        [ "$t" = haven ] || printf '%s\trepository-bytes\t%s\t0\n' "$t" "$(size "$repos/$t")" >> "$results"
    done
    printf 'haven-server\tpeak-rss\t0\t%s\n' "$(awk '/VmHWM/ {print $2}' /proc/$spid/status)" >> "$results"
    kill $spid 2>/dev/null || true
    wait $spid 2>/dev/null || true
    spid=""
    # What the stopped server holds: its object store and its database,
    # write-ahead log included. The peers' repositories hold their index
    # too; until 2026-12-07 Haven's figure was the object store alone,
    # which is still recorded beside it.
    printf 'haven\trepository-bytes\t%s\t0\n' "$(size "$hs/objects" "$hs"/haven.db*)" >> "$results"
    printf 'haven\tobjects-bytes\t%s\t0\n' "$(size "$hs/objects")" >> "$results"
}
for r in $(seq 1 "$runs"); do one_run "$r"; done

# Reference ceilings on the same data.
warm "$base"
measure ceiling read-all sh -c "tar cf - -C '$base' . | cat >/dev/null"
measure ceiling b3sum sh -c "find '$base' -type f -print0 | xargs -0 b3sum >/dev/null"
measure ceiling tar-zstd sh -c "tar cf - -C '$base' . | zstd -T0 -3 >/dev/null"
if [ -n "$no_restore" ]; then cp_to=$(fresh_fs)/cp && measure ceiling cp-a cp -a "$base" "$cp_to" && drop_fs; fi
measure ceiling find-walk sh -c "find '$base' -printf '%s %T@ %p\n' >/dev/null"

{
    echo "# Benchmark $(date -u +%Y-%m-%dT%H:%MZ)${quick:+ (quick)}, median of $runs run(s)"
    echo
    echo "Machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM, $(uname -r)."
    echo "Dataset: $(find "$data" -type f | wc -l) files, $(du -sh "$data" | cut -f1)."
    echo "Versions: $(restic version 2>/dev/null | cut -d' ' -f1-2), $(rustic --version 2>/dev/null), $(borg --version 2>/dev/null)."
    echo
    python3 "$here/report.py" "$results" "${tools[@]}"
} | tee "$here/results-$(date -u +%Y%m%d-%H%M)${quick:+-quick}.md"
