#!/usr/bin/env bash
# The console's pages with a big request log: fill a fresh admin database
# with ROWS requests over the last 30 days (console-fill, through the real
# accounting code), start `switchboard serve` on it, and time every API call
# each console page makes (REPS times each, one connection, after a warm-up):
# p50 and p99 in milliseconds, as a Markdown table (docs/performance.md).
#
#   loadtests/console.sh [ROWS]        # default 1000000; REPS=50 by default;
#                                      # NO_BUILD=1 uses the release binaries as they are
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
REPS=${REPS:-50}
[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet -p switchboard -p switchboard-loadtests --bins
BIN=${CARGO_TARGET_DIR:-target}/release
dir=$(mktemp -d)
gw=
cleanup() { [ -n "$gw" ] && kill "$gw" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT

echo "filling $ROWS rows..." >&2
start=$(date +%s)
"$BIN/console-fill" --db "$dir/switchboard.db" --rows "$ROWS" --days 30
echo "filled in $(( $(date +%s) - start )) s; database $(du -h "$dir/switchboard.db" | cut -f1)" >&2

cat > "$dir/switchboard.toml" <<TOML
[server]
listen = "127.0.0.1:0"
workers = 1

[admin]
listen = "127.0.0.1:0"
database = "switchboard.db"

[[upstreams]]
name = "openai"
base_url = "http://127.0.0.1:9/v1"

[[models]]
name = "gpt-4o-mini"
targets = [{ upstream = "openai" }]
TOML
TOKEN="sba-console-load-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
SWITCHBOARD_ADMIN_TOKEN=$TOKEN "$BIN/switchboard" serve --config "$dir/switchboard.toml" 2> "$dir/log" &
gw=$!
for _ in $(seq 100); do
    admin=$(sed -n 's/.*admin API listening on \([0-9.:]*\).*/\1/p' "$dir/log" | head -1)
    [ -n "$admin" ] && break
    sleep 0.1
done
[ -n "$admin" ] || { cat "$dir/log" >&2; exit 1; }
python3 loadtests/console_times.py "http://$admin" "$TOKEN" "$REPS" "$ROWS"
