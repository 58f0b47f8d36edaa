#!/usr/bin/env bash
# Haven in one command: build, start the server with its embedded defaults
# (SQLite + packs under ./haven-data, listening on 127.0.0.1:8420), create an
# account for this device and run a first backup.
#
#   scripts/quickstart.sh [PATH]      # PATH defaults to your home directory
#
# Environment: HAVEN_EMAIL (default: $USER@localhost), HAVEN_PASSWORD (asked
# for if unset), HAVEN_DATA_DIR (default ./haven-data), HAVEN_LISTEN.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${1:-$HOME}"
data_dir="${HAVEN_DATA_DIR:-$PWD/haven-data}"
listen="${HAVEN_LISTEN:-127.0.0.1:8420}"
server="http://$listen"
host="${listen%:*}"; port="${listen##*:}"
up() { (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; }
email="${HAVEN_EMAIL:-${USER:-me}@localhost}"

echo "==> Building Haven (release; the first build takes a few minutes)"
cargo build --release --bin haven --bin haven-server
bin="$PWD/target/release"

mkdir -p "$data_dir"
if up; then
  echo "==> A Haven server already answers at $server"
else
  echo "==> Starting haven-server on $server (data in $data_dir, log in $data_dir/server.log)"
  nohup "$bin/haven-server" serve --data-dir "$data_dir" --listen "$listen" --allow-signup \
    >>"$data_dir/server.log" 2>&1 &
  echo $! >"$data_dir/server.pid"
  for _ in $(seq 1 50); do
    up && break
    sleep 0.2
  done
  up || { echo "the server did not start; see $data_dir/server.log" >&2; exit 1; }
fi

if "$bin/haven" backups list >/dev/null 2>&1; then
  echo "==> This device is already signed in"
else
  echo "==> Creating the account $email (set HAVEN_EMAIL to choose another)"
  "$bin/haven" signup --server "$server" --email "$email"
fi

echo "==> First backup of $target"
"$bin/haven" backup "$target"
"$bin/haven" backups list
cat <<TXT

Done. The server keeps running (pid $(cat "$data_dir/server.pid" 2>/dev/null || echo "?"); stop it with
kill \$(cat "$data_dir/server.pid")). Restore with:  $bin/haven restore latest --to /tmp/restore
Manage storage, devices and backups in the browser at $server/ (or: $bin/haven console).
Back up automatically with:  $bin/haven agent install
TXT
