#!/usr/bin/env bash
# Before and after, counted in instructions rather than seconds: the same
# fixed number of requests through an older build (OLD, default HEAD~1) and
# the working tree, each gateway run under valgrind's callgrind, counting
# from after a warm-up to after the last request (every thread of the
# process: workers, usage pipeline, SQLite writer). Instruction counts do not
# depend on what else the machine is doing, so this is the comparison to
# trust on a shared or busy machine; CPU time (loadtests/ab.sh) is the one
# to quote for speed. Loopback only, bounded in requests.
#
#   loadtests/instructions.sh                          # HEAD~1 vs the working tree
#   OLD=b1659b8 REQUESTS=3000 STREAM_RATIO=0.5 loadtests/instructions.sh
#
# Needs valgrind (Debian's package). The gateway runs on the epoll driver
# (valgrind does not emulate io_uring), one worker, with the admin API and
# its SQLite database (usage accounting on).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }

OLD=${OLD:-HEAD~1}
REQUESTS=${REQUESTS:-2000}
WARMUP=${WARMUP:-200}
CONNECTIONS=${CONNECTIONS:-8}
STREAM_RATIO=${STREAM_RATIO:-0}
OUT=loadtests/results/instructions-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"

. loadtests/lib.sh
WAIT_TRIES=1200 # valgrind starts slowly
build_old_and_new "$OLD"

echo "machine: $(nproc) cores; date: $(date -u +%Y-%m-%dT%H:%MZ); old $OLD_REV, new $(git rev-parse --short HEAD)+worktree; $REQUESTS requests, $CONNECTIONS connections, stream ratio $STREAM_RATIO" | tee "$OUT/machine.txt"

"$NEW_BIN/mock-upstream" --listen 127.0.0.1:0 > "$OUT/mock.log" 2>&1 & pids+=($!)
wait_line "$OUT/mock.log" "listening on"
MOCK_URL=$(grep -oE 'http://[0-9.:]+/v1' "$OUT/mock.log" | head -1)
KEY=sk-instr-key
HASH=$("$NEW_BIN/switchboard" hash-key "$KEY")

count() { # name bin -> prints instructions per request
    local dir="$OUT/$1"
    mkdir -p "$dir"
    cat > "$dir/switchboard.toml" <<TOML
[server]
listen = "127.0.0.1:0"
workers = 1
driver = "legacy"

[admin]
listen = "127.0.0.1:0"
database = "switchboard.db"

[[upstreams]]
name = "mock"
base_url = "$MOCK_URL"
api_key = "sk-upstream-instr"
prices = [{ model = "gpt-4o-mini", prompt_per_mtok = 0.15, completion_per_mtok = 0.6 }]

[[models]]
name = "gpt-4o-mini"
targets = [{ upstream = "mock" }]

[[keys]]
id = "instr"
hash = "$HASH"
TOML
    SWITCHBOARD_ADMIN_TOKEN=sba-instr-token valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$dir/callgrind.out" "$2/switchboard" serve --config "$dir/switchboard.toml" \
        > "$dir/gateway.log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    wait_line "$dir/gateway.log" "data plane listening on"
    local url
    url="http://$(grep -oE 'data plane listening on [0-9.:]+' "$dir/gateway.log" | head -1 | awk '{print $5}')/v1"
    load() { "$NEW_BIN/switchboard-load" --quiet --url "$url" --key "$KEY" --connections "$CONNECTIONS" \
        --warmup 0 --duration 600 --timeout 120 --max-requests "$1" --stream-ratio "$STREAM_RATIO" --json "$2" > /dev/null; }
    load "$WARMUP" "$dir/warmup.json"
    callgrind_control -i on "$pid" > /dev/null 2>&1
    load "$REQUESTS" "$dir/load.json"
    callgrind_control -d "$pid" > /dev/null 2>&1
    callgrind_control -i off "$pid" > /dev/null 2>&1
    kill "$pid"; wait "$pid" 2>/dev/null || true
    # The measured window is the explicit dump (`callgrind.out.1`); the one
    # at exit counted nothing (and its summary line can wrap).
    python3 - "$dir" <<'PY'
import glob, sys
total = 0
for f in glob.glob(sys.argv[1] + "/callgrind.out.[0-9]*"):
    for line in open(f, errors="replace"):
        if line.startswith("totals:"):
            total += int(line.split()[1])
            break
print(total)
PY
}
old_total=$(count old "$OLD_BIN")
new_total=$(count new "$NEW_BIN")
python3 - "$old_total" "$new_total" "$REQUESTS" <<'PY' | tee "$OUT/summary.txt"
import sys
old, new, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
print(f"instructions per request (whole process, {n} requests after warm-up):")
print(f"  old: {old / n:,.0f}")
print(f"  new: {new / n:,.0f}")
print(f"  new/old: {new / old:.3f}")
PY
