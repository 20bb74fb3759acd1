#!/usr/bin/env bash
# Soak: the gateway under a steady, mixed load (open loop) for MINUTES minutes,
# its RSS sampled every 30 s. Reports growth from the end of warm-up to the end.
# MODE=admin runs it with the admin API and usage accounting in SQLite, and at
# the end checks that every routed request (per /metrics) is in the database
# after a SIGTERM drain.
#   MINUTES=30 RATE=2000 loadtests/soak.sh
#   MINUTES=5 RATE=2000 MODE=admin loadtests/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${MINUTES:-30}
RATE=${RATE:-2000}
MODE=${MODE:-file}
OUT=loadtests/results/soak-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
cargo build --release --bins -q
BIN=target/release
. loadtests/lib.sh

"$BIN/mock-upstream" --listen 127.0.0.1:0 > "$OUT/mock.log" 2>&1 & pids+=($!)
wait_line "$OUT/mock.log" "listening on"
MOCK_URL=$(grep -oE 'http://[0-9.:]+/v1' "$OUT/mock.log" | head -1)
KEY=sk-soak-key
ADMIN=""
if [ "$MODE" = admin ]; then
    ADMIN=$'[admin]\nlisten = "127.0.0.1:0"\ndatabase = "switchboard.db"'
fi
cat > "$OUT/switchboard.toml" <<TOML
[server]
listen = "127.0.0.1:0"
workers = 1
$ADMIN
[[upstreams]]
name = "mock"
base_url = "$MOCK_URL"
[[models]]
name = "gpt-4o-mini"
targets = [{ upstream = "mock" }]
[[keys]]
id = "soak"
hash = "$("$BIN/switchboard" hash-key "$KEY")"
TOML
"$BIN/switchboard" serve --config "$OUT/switchboard.toml" > "$OUT/gateway.log" 2>&1 & pids+=($!); GW=$!
wait_line "$OUT/gateway.log" "data plane listening on"
GW_URL="http://$(grep -oE 'data plane listening on [0-9.:]+' "$OUT/gateway.log" | head -1 | awk '{print $5}')/v1"

"$BIN/switchboard-load" --quiet --url "$GW_URL" --key "$KEY" --connections 64 --rate "$RATE" \
    --stream-ratio 0.3 --fail-ratio 0.01 --mock '{"tokens":10,"interval_ms":5}' \
    --duration $((MINUTES * 60)) --warmup 30 --pid "$GW" --json "$OUT/load.json" > "$OUT/load.txt" 2>&1 & pids+=($!); LOADER=$!
echo "minute,rss_kib" > "$OUT/rss.csv"
t=0
while kill -0 "$LOADER" 2>/dev/null; do
    echo "$(awk "BEGIN {print $t/60}"),$(awk '/VmRSS/ {print $2}' /proc/$GW/status)" >> "$OUT/rss.csv"
    sleep 30; t=$((t + 30))
done
cat "$OUT/load.txt"
first=$(sed -n 3p "$OUT/rss.csv" | cut -d, -f2); last=$(tail -1 "$OUT/rss.csv" | cut -d, -f2)
echo "RSS after warm-up: $first KiB; at the end: $last KiB; growth: $((last - first)) KiB over $MINUTES minutes" | tee "$OUT/summary.txt"
if [ "$MODE" = admin ]; then
    # Every routed request the gateway counted must be in the database after a drain.
    sleep 1
    routed=$(curl -s "${GW_URL%/v1}/metrics" | awk '/^switchboard_requests_total/ {s += $2} END {printf "%d", s}')
    lost=$(curl -s "${GW_URL%/v1}/metrics" | awk '/^switchboard_usage_records_lost_total/ {print $2}')
    kill -TERM "$GW"; wait "$GW" || true
    rows=$(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT COUNT(*) FROM request_log").fetchone()[0])' "$OUT/switchboard.db")
    echo "routed requests (metrics): $routed; request_log rows after SIGTERM: $rows; lost: $lost; db $(du -h "$OUT/switchboard.db" | cut -f1)" | tee -a "$OUT/summary.txt"
fi
echo "results in $OUT"
