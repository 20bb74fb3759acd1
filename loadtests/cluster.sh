#!/usr/bin/env bash
# The cost of exact global limits, in one command: N data planes (default 3:
# one `switchboard serve` with the admin API and N-1 `switchboard dataplane
# --admin URL`) in front of one mock upstream, twice side by side — one group
# with `[cluster]` on one real redis-server, one group without — and one key
# with request and token limits (and a daily token quota) used through all of
# them. Closed-loop runs alternate between the groups:
#   * 1 connection per process, one process at a time: latency p50 (the
#     added p50 of [cluster] = on - off);
#   * CONNECTIONS per process on all N processes of a group at once:
#     per-process throughput and gateway CPU per request (from /proc).
# Loopback only, bounded in time (about RUNS x (N x 2 + 2) x DURATION s).
#
#   loadtests/cluster.sh
#   N=3 RUNS=5 DURATION=3 CONNECTIONS=8 loadtests/cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-3}
RUNS=${RUNS:-3}
DURATION=${DURATION:-3}
CONNECTIONS=${CONNECTIONS:-8}
OUT=loadtests/results/cluster-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install redis-server)" >&2; exit 1; }
cargo build --release --bins -q
BIN=${CARGO_TARGET_DIR:-target}/release

. loadtests/lib.sh
WAIT_TRIES=300
echo "machine: $(nproc) cores; date: $(date -u +%Y-%m-%dT%H:%MZ); build $(git rev-parse --short HEAD)+worktree; $(redis-server --version | cut -d' ' -f1-3)" | tee "$OUT/machine.txt"

REDIS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$OUT/redis"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$OUT/redis" > "$OUT/redis.log" 2>&1 & pids+=($!)
wait_line "$OUT/redis.log" "Ready to accept connections"

"$BIN/mock-upstream" --listen 127.0.0.1:0 > "$OUT/mock.log" 2>&1 & pids+=($!)
wait_line "$OUT/mock.log" "listening on"
MOCK=$(grep -oE 'http://[0-9.:]+' "$OUT/mock.log" | head -1)

KEY=sk-cluster-bench-key
HASH=$("$BIN/switchboard" hash-key "$KEY")
ADMIN_TOKEN=sba-cluster-bench-token

start_group() { # name cluster-section -> sets URLS_<name>, PIDS_<name>
    local name=$1 dir="$OUT/$1"
    mkdir -p "$dir"
    cat > "$dir/admin.toml" <<TOML
[server]
listen = "127.0.0.1:0"
workers = 1
max_connections_per_worker = 20000

[admin]
listen = "127.0.0.1:0"
database = "switchboard.db"

$2

[[upstreams]]
name = "mock"
base_url = "$MOCK/v1"
pool_max_idle = 20000
prices = [{ model = "gpt-4o-mini", prompt_per_mtok = 0.15, completion_per_mtok = 0.6 }]

[[models]]
name = "gpt-4o-mini"
targets = [{ upstream = "mock" }]

[[orgs]]
name = "bench"
rpm = 1000000000
tpm = 1000000000

[[keys]]
id = "bench"
org = "bench"
hash = "$HASH"
rpm = 1000000000
tpm = 1000000000
quotas = [{ period = "day", max_tokens = 1000000000000000 }]
TOML
    SWITCHBOARD_ADMIN_TOKEN=$ADMIN_TOKEN "$BIN/switchboard" serve --config "$dir/admin.toml" > "$dir/serve.log" 2>&1 &
    local pid=$!; pids+=("$pid")
    wait_line "$dir/serve.log" "data plane listening on"
    local admin
    admin=$(grep -oE 'admin API listening on [0-9.:]+' "$dir/serve.log" | head -1 | awk '{print $5}')
    local urls=("http://$(grep -oE 'data plane listening on [0-9.:]+' "$dir/serve.log" | head -1 | awk '{print $5}')/v1")
    local ps=("$pid")
    for i in $(seq 2 "$N"); do
        printf '[server]\nlisten = "127.0.0.1:0"\nworkers = 1\nmax_connections_per_worker = 20000\n\n[usage]\nspill_file = "%s"\n' \
            "$dir/dp$i.spill" > "$dir/dp$i.toml"
        SWITCHBOARD_ADMIN_TOKEN=$ADMIN_TOKEN "$BIN/switchboard" dataplane --admin "http://$admin" --config "$dir/dp$i.toml" > "$dir/dp$i.log" 2>&1 &
        pid=$!; pids+=("$pid")
        wait_line "$dir/dp$i.log" "data plane listening on"
        urls+=("http://$(grep -oE 'data plane listening on [0-9.:]+' "$dir/dp$i.log" | head -1 | awk '{print $5}')/v1")
        ps+=("$pid")
    done
    eval "URLS_$name=(\"\${urls[@]}\")"
    eval "PIDS_$name=(\"\${ps[@]}\")"
}
start_group on "$(printf '[cluster]\nredis_url = "redis://127.0.0.1:%s"\non_redis_down = "deny"' "$REDIS_PORT")"
start_group off ""
echo "groups: on = ${URLS_on[*]}; off = ${URLS_off[*]}" | tee -a "$OUT/machine.txt"

field() { python3 -c 'import json,sys; v=json.load(open(sys.argv[1])); [v:=v[k] for k in sys.argv[2].split(".")]; print("%.1f" % v)' "$1" "$2"; }
load() { # url pid json connections
    "$BIN/switchboard-load" --quiet --url "$1" --key "$KEY" --connections "$4" --duration "$DURATION" \
        --warmup 0.5 --pid "$2" --json "$3" > "${3%.json}.txt"
}
declare -A p50 cpu rps
for r in $(seq 1 "$RUNS"); do
    for g in on off; do
        eval "urls=(\"\${URLS_$g[@]}\")"; eval "ps=(\"\${PIDS_$g[@]}\")"
        # Latency at one connection, one process at a time.
        for i in $(seq 0 $((N - 1))); do
            load "${urls[$i]}" "${ps[$i]}" "$OUT/$g-p$i-c1-$r.json" 1
            p50[$g]+="$(field "$OUT/$g-p$i-c1-$r.json" gateway.latency_us.p50) "
        done
        # Throughput and CPU: all processes of the group at once.
        loads=()
        for i in $(seq 0 $((N - 1))); do
            load "${urls[$i]}" "${ps[$i]}" "$OUT/$g-p$i-cN-$r.json" "$CONNECTIONS" & loads+=($!)
        done
        for l in "${loads[@]}"; do wait "$l"; done
        for i in $(seq 0 $((N - 1))); do
            cpu[$g]+="$(field "$OUT/$g-p$i-cN-$r.json" gateway_cpu_us_per_request) "
            rps[$g]+="$(field "$OUT/$g-p$i-cN-$r.json" gateway.requests_per_sec) "
        done
    done
done
median() { printf '%s\n' $@ | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
{
    echo "N=$N data planes per group, $RUNS runs of ${DURATION}s alternated; key + org rpm/tpm limits and a daily token quota"
    for g in on off; do
        echo "[cluster] $g: p50 at 1 connection (us): ${p50[$g]} median $(median ${p50[$g]})"
        echo "[cluster] $g: per-process req/s at $CONNECTIONS connections each: ${rps[$g]} median $(median ${rps[$g]})"
        echo "[cluster] $g: gateway CPU per request (us): ${cpu[$g]} median $(median ${cpu[$g]})"
    done
    echo "added p50 (on - off, medians): $(python3 -c "print('%.1f' % ($(median ${p50[on]}) - $(median ${p50[off]})))") us"
    echo "added CPU per request (on - off, medians): $(python3 -c "print('%.1f' % ($(median ${cpu[on]}) - $(median ${cpu[off]})))") us"
    echo "Redis: $(redis-cli -p "$REDIS_PORT" info stats 2>/dev/null | grep -E 'total_commands_processed' | tr -d '\r')"
} | tee "$OUT/summary.txt"
