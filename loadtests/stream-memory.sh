#!/usr/bin/env bash
# Gateway memory per open stream: the release gateway (one worker) in front of
# the mock upstream, N streams held open (a token every INTERVAL_MS), the
# gateway's RSS sampled before (after one short stream) and while the streams are
# open. KiB per stream = (RSS while open - RSS before) / streams open (ss).
# Loopback only; every process stops at exit; each round is bounded in time.
#
#   loadtests/stream-memory.sh                       # 500 and 1500 streams, both drivers
#   COUNTS=1500 DRIVERS=io_uring loadtests/stream-memory.sh
#   BIN=/path/to/release loadtests/stream-memory.sh  # another build
set -euo pipefail
cd "$(dirname "$0")/.."

COUNTS=${COUNTS:-"500 1500"}
DRIVERS=${DRIVERS:-"io_uring legacy"}
INTERVAL_MS=${INTERVAL_MS:-200}
TOKENS=${TOKENS:-40}
if [ -z "${BIN:-}" ]; then
    nice -n 15 cargo build --release --bins -q
    BIN=${CARGO_TARGET_DIR:-target}/release
fi
OUT=${OUT:-loadtests/results/stream-memory-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"

. loadtests/lib.sh

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
anon_kb() { awk '/^Anonymous/ {print $2}' "/proc/$1/smaps_rollup"; }
ulimit -n "$(ulimit -Hn)" || true

"$BIN/mock-upstream" --listen 127.0.0.1:0 > "$OUT/mock.log" 2>&1 & pids+=($!)
wait_line "$OUT/mock.log" "listening on"
MOCK_URL=$(grep -oE 'http://[0-9.:]+/v1' "$OUT/mock.log" | head -1)
KEY=sk-memory-key
HASH=$("$BIN/switchboard" hash-key "$KEY")
# A stream lasts TOKENS * INTERVAL_MS; the sample is taken in its middle.
STREAM_S=$(( TOKENS * INTERVAL_MS / 1000 ))

for driver in $DRIVERS; do
    cat > "$OUT/$driver.toml" <<TOML
[server]
listen = "127.0.0.1:0"
workers = 1
driver = "$driver"
max_connections_per_worker = 20000

[[upstreams]]
name = "mock"
base_url = "$MOCK_URL"
api_key = "sk-upstream-memory"
pool_max_idle = 20000

[[routes]]
name = "gpt-4o-mini"
targets = [{ provider = "mock" }]

[[keys]]
id = "memory"
hash = "$HASH"
TOML
    for n in $COUNTS; do
        # A fresh gateway per count: its idle RSS is the baseline.
        log="$OUT/gateway-$driver-$n.log"
        "$BIN/switchboard" serve --config "$OUT/$driver.toml" > "$log" 2>&1 & pids+=($!); GW=$!
        wait_line "$log" "listening on"
        HP=$(grep -oE 'listening on [0-9.:]+' "$log" | head -1 | cut -d' ' -f3)
        # One short stream first, so what every connection shares (the upstream's
        # address, the first allocations) is in the baseline.
        "$BIN/switchboard-load" --quiet --url "http://$HP/v1" --key "$KEY" --connections 1 --stream-ratio 1 \
            --mock '{"tokens":2,"interval_ms":10}' --max-requests 1 --duration 2 > /dev/null
        sleep 0.5
        idle=$(rss_kb $GW); idle_anon=$(anon_kb $GW)
        "$BIN/switchboard-load" --quiet --url "http://$HP/v1" --key "$KEY" --connections "$n" --stream-ratio 1 \
            --mock "{\"tokens\":$TOKENS,\"interval_ms\":$INTERVAL_MS}" --duration $(( STREAM_S / 2 + 1 )) \
            --timeout $(( STREAM_S + 30 )) > "$OUT/load-$driver-$n.txt" 2>&1 & LOAD=$!; pids+=($LOAD)
        sleep $(( STREAM_S / 2 ))
        open=$(ss -Htn state established "( sport = :${HP##*:} )" | wc -l)
        during=$(rss_kb $GW); during_anon=$(anon_kb $GW)
        wait $LOAD || true
        sleep 1
        after=$(rss_kb $GW)
        per=$(awk -v d="$during" -v b="$idle" -v n="$open" 'BEGIN { printf "%.1f", (d - b) / n }')
        per_anon=$(awk -v d="$during_anon" -v b="$idle_anon" -v n="$open" 'BEGIN { printf "%.1f", (d - b) / n }')
        line="driver=$driver streams=$n open=$open idle=${idle}KiB during=${during}KiB after=${after}KiB per_stream=${per}KiB anon=${idle_anon}->${during_anon}KiB (${per_anon}KiB)"
        echo "$line" | tee -a "$OUT/summary.txt"
        kill $GW; wait $GW 2>/dev/null || true
    done
done
