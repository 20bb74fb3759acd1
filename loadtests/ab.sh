#!/usr/bin/env bash
# Before and after, in one command: build an older commit (OLD, default
# HEAD~1) beside the working tree, run both gateways on one mock upstream, and
# alternate closed-loop runs between them, reporting the gateway's CPU per
# request for each run and the medians. Loopback only, bounded in time.
#
#   loadtests/ab.sh                               # HEAD~1 vs the working tree
#   OLD=057feae RUNS=4 DURATION=4 MODE=admin STREAM_RATIO=0.3 loadtests/ab.sh
#
# MODE=admin runs both with the admin API and its SQLite database (usage
# accounting on, where the build has it); MODE=file runs from a config file.
# NEW_KEY_EXTRA adds lines to the new build's [[keys]] entry (e.g. limits the
# old build does not know: NEW_KEY_EXTRA='rpm = 100000000').
set -euo pipefail
cd "$(dirname "$0")/.."

OLD=${OLD:-HEAD~1}
RUNS=${RUNS:-4}
DURATION=${DURATION:-4}
CONNECTIONS=${CONNECTIONS:-64}
MODE=${MODE:-admin}
STREAM_RATIO=${STREAM_RATIO:-0}
OUT=loadtests/results/ab-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"

. loadtests/lib.sh
build_old_and_new "$OLD"

echo "machine: $(nproc) cores; date: $(date -u +%Y-%m-%dT%H:%MZ); old $OLD_REV, new $(git rev-parse --short HEAD)+worktree; mode $MODE" | tee "$OUT/machine.txt"

"$NEW_BIN/mock-upstream" --listen 127.0.0.1:0 > "$OUT/mock.log" 2>&1 & pids+=($!)
wait_line "$OUT/mock.log" "listening on"
MOCK_URL=$(grep -oE 'http://[0-9.:]+/v1' "$OUT/mock.log" | head -1)

KEY=sk-ab-key
HASH=$("$NEW_BIN/switchboard" hash-key "$KEY")
start_gateway() { # name bin [key extra] -> sets GW_PID GW_URL
    local dir="$OUT/$1"
    mkdir -p "$dir"
    local admin=""
    if [ "$MODE" = admin ]; then
        admin=$'[admin]\nlisten = "127.0.0.1:0"\ndatabase = "switchboard.db"\n'
    fi
    cat > "$dir/switchboard.toml" <<TOML
[server]
listen = "127.0.0.1:0"
workers = 1
max_connections_per_worker = 20000

$admin

[[upstreams]]
name = "mock"
base_url = "$MOCK_URL"
api_key = "sk-upstream-ab"
pool_max_idle = 20000
prices = [{ model = "gpt-4o-mini", prompt_per_mtok = 0.15, completion_per_mtok = 0.6 }]

[[models]]
name = "gpt-4o-mini"
targets = [{ upstream = "mock" }]

[[keys]]
id = "ab"
hash = "$HASH"
${3:-}
TOML
    SWITCHBOARD_ADMIN_TOKEN=sba-ab-token "$2/switchboard" serve --config "$dir/switchboard.toml" > "$dir/gateway.log" 2>&1 &
    GW_PID=$!
    pids+=("$GW_PID")
    wait_line "$dir/gateway.log" "data plane listening on"
    GW_URL="http://$(grep -oE 'data plane listening on [0-9.:]+' "$dir/gateway.log" | head -1 | awk '{print $5}')/v1"
}
start_gateway old "$OLD_BIN"; OLD_PID=$GW_PID; OLD_URL=$GW_URL
start_gateway new "$NEW_BIN" "${NEW_KEY_EXTRA:-}"; NEW_PID=$GW_PID; NEW_URL=$GW_URL

run() { # name url pid i
    "$NEW_BIN/switchboard-load" --quiet --url "$2" --key "$KEY" --connections "$CONNECTIONS" \
        --duration "$DURATION" --stream-ratio "$STREAM_RATIO" --pid "$3" --json "$OUT/$1-$4.json" > "$OUT/$1-$4.txt"
    python3 -c 'import json,sys; print("%.1f" % json.load(open(sys.argv[1]))["gateway_cpu_us_per_request"])' "$OUT/$1-$4.json"
}
new_runs=(); old_runs=()
for i in $(seq 1 "$RUNS"); do
    new_runs+=("$(run new "$NEW_URL" "$NEW_PID" "$i")")
    old_runs+=("$(run old "$OLD_URL" "$OLD_PID" "$i")")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
{
    echo "gateway CPU per request (us), $CONNECTIONS connections, stream ratio $STREAM_RATIO, ${DURATION}s runs alternated${NEW_KEY_EXTRA:+, new key with: $NEW_KEY_EXTRA}:"
    echo "new ($(git rev-parse --short HEAD)+worktree): ${new_runs[*]}  median $(median "${new_runs[@]}")"
    echo "old ($OLD_REV): ${old_runs[*]}  median $(median "${old_runs[@]}")"
} | tee "$OUT/summary.txt"
