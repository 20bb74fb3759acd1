#!/usr/bin/env bash
# What the node path costs, in one command: one gateway (admin API on), one
# mock upstream used four ways — as a provider, and as the local server of a
# node agent in outbound mode, of one in direct mode (TLS, pinned) and of one
# in direct mode with --plain-http — and closed-loop runs alternated between
# the four routes. Reports latency (p50, p99), requests/s,
# and CPU per request of the gateway and of the agents. Loopback only,
# bounded in time.
#
#   loadtests/nodes.sh
#   RUNS=3 DURATION=4 CONNECTIONS=16 STREAM_RATIO=0.5 loadtests/nodes.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-4}
CONNECTIONS=${CONNECTIONS:-16}
STREAM_RATIO=${STREAM_RATIO:-0}
OUT=loadtests/results/nodes-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
cargo build --release --bins -q
BIN=target/release

. loadtests/lib.sh
WAIT_TRIES=300
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
echo "machine: $(nproc) cores; date: $(date -u +%Y-%m-%dT%H:%MZ); build $(git rev-parse --short HEAD)+worktree" | tee "$OUT/machine.txt"

"$BIN/mock-upstream" --listen 127.0.0.1:0 > "$OUT/mock.log" 2>&1 & pids+=($!)
wait_line "$OUT/mock.log" "listening on"
MOCK=$(grep -oE 'http://[0-9.:]+' "$OUT/mock.log" | head -1)

KEY=sk-nodes-bench-key
HASH=$("$BIN/switchboard" hash-key "$KEY")
ADMIN_TOKEN=sba-nodes-bench-token
cat > "$OUT/switchboard.toml" <<TOML
[server]
listen = "127.0.0.1:0"
workers = 1
max_connections_per_worker = 20000

[admin]
listen = "127.0.0.1:0"
database = "switchboard.db"
node_heartbeat_ms = 1000

[[upstreams]]
name = "provider"
base_url = "$MOCK/v1"
pool_max_idle = 20000

[[models]]
name = "provider"
targets = [{ upstream = "provider", model = "mock-model" }]

[[models]]
name = "outbound"
targets = [{ nodes = "outbound" }]

[[models]]
name = "direct"
targets = [{ nodes = "direct" }]

[[models]]
name = "direct-plain"
targets = [{ nodes = "direct-plain" }]

[[keys]]
id = "bench"
hash = "$HASH"
org = "bench"
TOML
SWITCHBOARD_ADMIN_TOKEN=$ADMIN_TOKEN "$BIN/switchboard" serve --config "$OUT/switchboard.toml" > "$OUT/gateway.log" 2>&1 &
GW_PID=$!; pids+=("$GW_PID")
wait_line "$OUT/gateway.log" "data plane listening on"
GW=$(grep -oE 'data plane listening on [0-9.:]+' "$OUT/gateway.log" | head -1 | awk '{print $5}')
ADMIN=$(grep -oE 'admin API listening on [0-9.:]+' "$OUT/gateway.log" | head -1 | awk '{print $5}')

token() {
    curl -sf "http://$ADMIN/v1/admin/enrollment-tokens" -H "Authorization: Bearer $ADMIN_TOKEN" \
        -H 'Content-Type: application/json' -d '{"org":"bench"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])'
}
agent() { # name mode-args...
    local name=$1; shift
    "$BIN/switchboard" node --admin "http://$ADMIN" --enroll "$(token)" --local "$MOCK" --name "$name" \
        --identity "$OUT/$name.json" --capacity 1024 --rename "mock-model=$name" "$@" > "$OUT/$name.log" 2>&1 &
    AGENT_PID=$!; pids+=("$AGENT_PID")
    for _ in $(seq 1 200); do
        curl -sf "http://$ADMIN/v1/admin/nodes/$name" -H "Authorization: Bearer $ADMIN_TOKEN" | grep -q '"routable":true' && return 0
        sleep 0.05
    done
    echo "node $name did not come online" >&2; cat "$OUT/$name.log" >&2; return 1
}
agent outbound --connect "http://$GW" --connections "$CONNECTIONS"; OUT_PID=$AGENT_PID
agent direct --listen 127.0.0.1:0; DIR_PID=$AGENT_PID
agent direct-plain --listen 127.0.0.1:0 --plain-http; PLAIN_PID=$AGENT_PID
sleep 1.5  # attached connections are counted, and the warm-up is short

run() { # model i agent-pid
    local before after
    before=$([ -n "$3" ] && cpu_ticks "$3" || echo 0)
    "$BIN/switchboard-load" --quiet --url "http://$GW/v1" --key "$KEY" --model "$1" --connections "$CONNECTIONS" \
        --duration "$DURATION" --stream-ratio "$STREAM_RATIO" --pid "$GW_PID" --json "$OUT/$1-$2.json" > "$OUT/$1-$2.txt"
    after=$([ -n "$3" ] && cpu_ticks "$3" || echo 0)
    python3 - "$OUT/$1-$2.json" "$((after - before))" "$(getconf CLK_TCK)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); g = r["gateway"]
errors = g["errors"]
errors = sum(errors.values()) if isinstance(errors, dict) else errors
n = g["ok"] + errors
agent_us = int(sys.argv[2]) * 1e6 / int(sys.argv[3]) / max(n, 1)
print("%d %.0f %.0f %.1f %.1f %d" % (g["requests_per_sec"], g["latency_us"]["p50"], g["latency_us"]["p99"],
      r["gateway_cpu_us_per_request"] or 0, agent_us, errors))
PY
}
declare -A rows
for i in $(seq 1 "$RUNS"); do
    rows[provider]+="$(run provider "$i" "")"$'\n'
    rows[outbound]+="$(run outbound "$i" "$OUT_PID")"$'\n'
    rows[direct]+="$(run direct "$i" "$DIR_PID")"$'\n'
    rows[direct-plain]+="$(run direct-plain "$i" "$PLAIN_PID")"$'\n'
done
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
{
    echo "$CONNECTIONS connections, stream ratio $STREAM_RATIO, ${DURATION}s runs x$RUNS alternated; medians:"
    printf '%-12s %9s %9s %9s %14s %12s %7s\n' route "req/s" "p50 us" "p99 us" "gateway us/req" "agent us/req" errors
    for route in provider outbound direct direct-plain; do
        col() { printf '%s' "${rows[$route]}" | awk -v c="$1" 'NF {print $c}' | median; }
        printf '%-12s %9s %9s %9s %14s %12s %7s\n' "$route" "$(col 1)" "$(col 2)" "$(col 3)" "$(col 4)" "$(col 5)" "$(col 6)"
    done
} | tee "$OUT/summary.txt"
