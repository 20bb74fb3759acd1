#!/usr/bin/env bash
# Switchboard (each driver) against nginx as a plain reverse proxy, each
# pinned to the same core, the load generator (wrk) and the mock upstream
# pinned to another; rounds interleaved (nginx, io_uring, legacy in a
# rotating order), non-streaming at c=1/8/64 and streaming at 64 and 400
# streams. For every run: the proxy's CPU per request (summed over its
# threads from /proc/PID/task/*/schedstat, in ns) and its context switches
# per request; at the end, medians, spreads (min-max) and the ratios to
# nginx. Loopback only, bounded: ROUNDS x 5 shapes x 3 proxies x DURATION.
#
#   loadtests/vs-nginx.sh
#   ROUNDS=5 DURATION=6 STREAM_TOKENS=50 STREAM_INTERVAL_MS=10 loadtests/vs-nginx.sh
#   PROXY_CPU=1 LOAD_CPU=0 SHAPES="c8 s400" loadtests/vs-nginx.sh
#   OLD_BIN=/path/to/older/release PROXIES="io_uring old-io_uring" loadtests/vs-nginx.sh
#   PROXIES="io_uring io_uring+coop io_uring+sqpoll legacy" loadtests/vs-nginx.sh  # ring setups
#   COUNT=4000 loadtests/vs-nginx.sh      # counts per request instead (see below)
#
# MODE=admin runs the gateway with the admin API and its SQLite database
# (usage accounting on); MODE=file (default) from a config file alone. BIN
# is the directory of release binaries (default: built from the working tree
# into $CARGO_TARGET_DIR or target/). Needs nginx and wrk: installed with
# apt-get when missing (as root), like .ci/run does for its packages.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-3}
WARMUP=${WARMUP:-1}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
MODE=${MODE:-file}
SHAPES=${SHAPES:-"c1 c8 c64 s64 s400"}
STREAM_TOKENS=${STREAM_TOKENS:-50}
STREAM_INTERVAL_MS=${STREAM_INTERVAL_MS:-10}
PROXIES=${PROXIES:-"nginx io_uring legacy"}
OUT=loadtests/results/vs-nginx-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"

if [ "$(nproc)" -lt 2 ]; then PROXY_CPU=0; LOAD_CPU=0; fi

. loadtests/lib.sh
ensure_commands nginx wrk
if [ -z "${BIN:-}" ]; then
    echo "building the working tree (release)"
    cargo build --release --bins -q
    BIN=${CARGO_TARGET_DIR:-target}/release
fi

{
    echo "date: $(date -u +%Y-%m-%dT%H:%MZ); machine: $(nproc) cores, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "proxies on core $PROXY_CPU (1 worker each), wrk (1 thread) and the mock on core $LOAD_CPU; $ROUNDS rounds of ${DURATION}s runs; mode $MODE; streams: $STREAM_TOKENS tokens, ${STREAM_INTERVAL_MS} ms apart"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/machine.txt"

taskset -c "$LOAD_CPU" "$BIN/mock-upstream" --listen 127.0.0.1:0 > "$OUT/mock.log" 2>&1 & pids+=($!)
wait_line "$OUT/mock.log" "listening on"
MOCK_URL=$(grep -oE 'http://[0-9.:]+/v1' "$OUT/mock.log" | head -1)
MOCK_HOSTPORT=${MOCK_URL#http://}; MOCK_HOSTPORT=${MOCK_HOSTPORT%/v1}

KEY=sk-vs-nginx-key
HASH=$("$BIN/switchboard" hash-key "$KEY")
declare -A PID URL
start_gateway() { # driver, old-DRIVER for the build in OLD_BIN, io_uring+SETUP for a ring setup
    local dir="$OUT/$1" driver=${1#old-} bin=$BIN setup=
    [ "$1" != "$driver" ] && bin=${OLD_BIN:?old-$driver needs OLD_BIN, a directory of older release binaries}
    case $driver in *+*) setup=${driver#*+}; driver=${driver%%+*} ;; esac
    mkdir -p "$dir"
    local admin=""
    if [ "$MODE" = admin ]; then
        admin=$'[admin]\nlisten = "127.0.0.1:0"\ndatabase = "switchboard.db"\n'
    fi
    gateway_toml "$driver" "$MOCK_URL" "$HASH" 20000 "$admin" > "$dir/switchboard.toml"
    (cd "$dir" && SWITCHBOARD_DRIVER= SWITCHBOARD_URING_SETUP=$setup SWITCHBOARD_ADMIN_TOKEN=sba-vs-token exec taskset -c "$PROXY_CPU" \
        "$(realpath "$bin")/switchboard" serve --config switchboard.toml > gateway.log 2>&1) &
    PID[$1]=$!
    pids+=("${PID[$1]}")
    wait_line "$dir/gateway.log" "data plane listening on"
    URL[$1]="http://$(grep -oE 'data plane listening on [0-9.:]+' "$dir/gateway.log" | head -1 | awk '{print $5}')"
}
start_nginx_here() {
    start_nginx "$OUT" "$MOCK_HOSTPORT" "$PROXY_CPU"
    PID[nginx]=$NGINX_PID
    URL[nginx]=$NGINX_URL
}
for p in $PROXIES; do
    case $p in
        nginx) start_nginx_here ;;
        *) start_gateway "$p" ;;
    esac
done

# The wrk scripts: one POST, the gateway's key (nginx passes it through).
body() { # stream(true/false) -> JSON
    local mock=""
    [ "$1" = true ] && mock=", \"mock\": {\"tokens\": $STREAM_TOKENS, \"interval_ms\": $STREAM_INTERVAL_MS}"
    printf '{"model": "gpt-4o-mini", "stream": %s, "messages": [{"role": "system", "content": "You are a helpful assistant that answers briefly."}, {"role": "user", "content": "Summarise the plot of a short story about a lighthouse keeper who finds a message in a bottle and decides to answer it, in two sentences please."}]%s}' "$1" "$mock"
}
for s in false true; do
    cat > "$OUT/wrk-$s.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
wrk.body = '$(body $s)'
LUA
done
# Check each proxy answers both shapes before measuring.
for p in $PROXIES; do
    for s in false true; do
        code=$(curl -s -o "$OUT/check-$p-$s.txt" -w '%{http_code}' -H "Authorization: Bearer $KEY" \
            -H 'Content-Type: application/json' --data "$(body $s)" "${URL[$p]}/v1/chat/completions")
        if [ "$code" != 200 ]; then echo "$p answered $code to stream=$s" >&2; cat "$OUT/check-$p-$s.txt" >&2; exit 1; fi
    done
done

# COUNT=N: instead of timed runs, count what each proxy does for N requests
# (c=8) and N/10 streams (64 at a time): syscalls, io_uring_enter calls,
# io_uring submissions (SQEs), completions, internal poll arms, io-wq punts
# and context switches, from perf's tracepoints in the proxy's own threads
# (load-independent: counts, not times), plus `strace -c -f` over N/4
# requests for the syscall names. Needs perf (linux-perf) and strace.
if [ -n "${COUNT:-}" ]; then
    command -v perf >/dev/null || { echo "COUNT needs perf" >&2; exit 1; }
    events=raw_syscalls:sys_enter,syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_ctl
    events=$events,io_uring:io_uring_submit_req,io_uring:io_uring_complete,io_uring:io_uring_poll_arm
    events=$events,io_uring:io_uring_queue_async_work,io_uring:io_uring_task_work_run,io_uring:io_uring_local_work_run
    events=$events,context-switches,task-clock
    load() { # url n conns stream_ratio
        local mock=()
        [ "$4" = 1 ] && mock=(--mock "{\"tokens\": $STREAM_TOKENS, \"interval_ms\": $STREAM_INTERVAL_MS}")
        taskset -c "$LOAD_CPU" "$BIN/switchboard-load" --quiet --url "$1/v1" --key "$KEY" --connections "$3" \
            --warmup 0 --duration 600 --timeout 60 --max-requests "$2" --stream-ratio "$4" "${mock[@]}" > /dev/null
    }
    for p in $PROXIES; do
        for shape in c8 s64; do
            n=$COUNT; conns=8; ratio=0
            if [ "$shape" = s64 ]; then n=$((COUNT / 10)); conns=64; ratio=1; fi
            load "${URL[$p]}" 200 "$conns" "$ratio" # warm-up
            perf stat -x, -e "$events" -p "${PID[$p]}" -o "$OUT/perf-$p-$shape.csv" &
            perf_pid=$!
            sleep 0.3
            load "${URL[$p]}" "$n" "$conns" "$ratio"
            kill -INT "$perf_pid"; wait "$perf_pid" || true
            python3 - "$OUT/perf-$p-$shape.csv" "$n" "$p $shape" <<'PY' | tee -a "$OUT/counts.txt"
import sys
n = int(sys.argv[2])
vals = {}
for line in open(sys.argv[1]):
    f = line.strip().split(",")
    if len(f) > 2 and f[0] and f[0][0].isdigit():
        vals[f[2].split(":")[-1]] = float(f[0])
short = {"sys_enter": "syscalls", "sys_enter_io_uring_enter": "enter", "sys_enter_epoll_wait": "epoll_wait",
         "sys_enter_epoll_ctl": "epoll_ctl", "io_uring_submit_req": "SQEs", "io_uring_complete": "CQEs",
         "io_uring_poll_arm": "poll_arms", "io_uring_queue_async_work": "io-wq", "io_uring_task_work_run": "tw_runs",
         "io_uring_local_work_run": "local_tw", "context-switches": "ctxsw", "task-clock": "cpu_us"}
cells = []
for k, name in short.items():
    v = vals.get(k, 0.0)
    if k == "task-clock":
        v = v * 1000  # ms -> us
    cells.append(f"{name} {v / n:.2f}")
print(f"{sys.argv[3]:14} per request: " + ", ".join(cells))
PY
            strace -c -f -p "${PID[$p]}" -o "$OUT/strace-$p-$shape.txt" 2>/dev/null &
            strace_pid=$!
            sleep 0.3
            load "${URL[$p]}" $((n / 4)) "$conns" "$ratio"
            kill -INT "$strace_pid"; wait "$strace_pid" || true
            echo "  strace, $((n / 4)) requests: $(awk 'NR > 2 && $NF != "total" && $4 ~ /^[0-9]+$/ {printf "%s %d, ", $NF, $4}' "$OUT/strace-$p-$shape.txt")" | tee -a "$OUT/counts.txt"
        done
    done
    echo "results in $OUT"
    exit 0
fi

# CPU ns and context switches, summed over the process's threads.
cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s+=$1} END {printf "%.0f", s}'; }
ctxsw() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {s+=$2} END {printf "%.0f", s}'; }
# User and system time of the whole process, in clock ticks (utime stime):
# coarse (100 Hz), used only for the user/kernel split of schedstat's total.
ticks() { awk '{print $14, $15}' /proc/"$1"/stat 2>/dev/null || echo "0 0"; }

run() { # proxy shape round
    local p=$1 shape=$2 conns=${2#?} stream=false
    [ "${shape:0:1}" = s ] && stream=true
    local log="$OUT/$p-$shape-$3.txt"
    # Warm-up (connections opened, pools filled), not counted; WARMUP=0
    # skips it (wrk refuses -d0s).
    if [ "$WARMUP" != 0 ]; then
        taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${WARMUP}s" --timeout 10s -s "$OUT/wrk-$stream.lua" \
            "${URL[$p]}/v1/chat/completions" > /dev/null
    fi
    local c0 x0 c1 x1 t0 t1
    c0=$(cpu_ns "${PID[$p]}"); x0=$(ctxsw "${PID[$p]}"); t0=$(ticks "${PID[$p]}")
    taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${DURATION}s" --timeout 10s -s "$OUT/wrk-$stream.lua" \
        "${URL[$p]}/v1/chat/completions" > "$log"
    c1=$(cpu_ns "${PID[$p]}"); x1=$(ctxsw "${PID[$p]}"); t1=$(ticks "${PID[$p]}")
    local n bad
    n=$(awk '/requests in/ {print $1}' "$log")
    bad=$(awk '/Non-2xx|Socket errors/ {print}' "$log" | tr '\n' ' ')
    [ -n "$bad" ] && echo "  $p $shape round $3: $bad" >&2
    printf '%s %s %s %s %s %s %s\n' "$p" "$shape" "$3" "$n" "$((c1 - c0))" "$((x1 - x0))" \
        "$(echo "$t0 $t1" | awk '{print $3 - $1, $4 - $2}')" >> "$OUT/runs.txt"
    printf '  %-8s %-5s round %s: %8s requests, %7.1f us CPU/request\n' "$p" "$shape" "$3" "$n" \
        "$(awk -v c=$((c1 - c0)) -v n="$n" 'BEGIN {print (n > 0 ? c / n / 1000 : 0)}')"
}
read -ra proxies <<< "$PROXIES"
for r in $(seq 1 "$ROUNDS"); do
    echo "round $r (load average $(cut -d' ' -f1 /proc/loadavg))"
    for shape in $SHAPES; do
        # Rotate the order each round so no proxy always runs first.
        for i in $(seq 0 $((${#proxies[@]} - 1))); do
            run "${proxies[$(((i + r) % ${#proxies[@]}))]}" "$shape" "$r"
        done
    done
done
# Added latency at 64 streams (proxy minus the mock direct, interleaved by
# switchboard-load): time to first token and gap between tokens, p50/p99.
if [ "${LATENCY:-1}" != 0 ]; then
    echo "added latency, 64 streams (proxy - direct, us; ${LATENCY_DURATION:-4}s):" | tee "$OUT/latency.txt"
    for p in $PROXIES; do
        taskset -c "$LOAD_CPU" "$BIN/switchboard-load" --quiet --url "${URL[$p]}/v1" --baseline "$MOCK_URL" \
            --key "$KEY" --connections 64 --stream-ratio 1 --duration "${LATENCY_DURATION:-4}" --warmup 1 \
            --mock "{\"tokens\": $STREAM_TOKENS, \"interval_ms\": $STREAM_INTERVAL_MS}" \
            --json "$OUT/latency-$p.json" > /dev/null
        python3 -c 'import json, sys
a = json.load(open(sys.argv[1]))["added"]
f = lambda m: "p50 %s, p99 %s" % (a[m]["p50"], a[m]["p99"])
print("%-18s first token: %s; token gap: %s" % (sys.argv[2], f("ttft_us"), f("token_gap_us")))' \
            "$OUT/latency-$p.json" "$p" | tee -a "$OUT/latency.txt"
    done
fi
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt"

python3 - "$OUT/runs.txt" "$STREAM_TOKENS" "$PROXIES" "$SHAPES" <<'PY' | tee "$OUT/summary.txt"
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
tokens = int(sys.argv[2])
proxies, shapes = sys.argv[3].split(), sys.argv[4].split()
runs = {}
for p, shape, _r, n, cpu, cs, ut, st in rows:
    n, cpu, cs, ut, st = int(n), int(cpu), int(cs), int(ut), int(st)
    if n > 0:
        share = ut / (ut + st) if ut + st > 0 else 0.0
        runs.setdefault((p, shape), []).append((cpu / n / 1000, cs / n, share))
def med(p, s, i=0):
    v = [x[i] for x in runs.get((p, s), [])]
    return statistics.median(v) if v else None
name = lambda s: f"c={s[1:]}" if s[0] == "c" else f"{s[1:]} streams"
print("CPU per request (us; per stream for streams), median [min-max]; context switches per request (median)")
print(f"{'':18}" + "".join(f"{name(s):>28}" for s in shapes))
for p in proxies:
    cells = []
    for s in shapes:
        v = [x[0] for x in runs.get((p, s), [])]
        cells.append(f"{statistics.median(v):.1f} [{min(v):.1f}-{max(v):.1f}] {med(p, s, 1):.2f}cs" if v else "-")
    cells = [" " + c for c in cells]
    print(f"{p:18}" + "".join(f"{c:>28}" for c in cells))
if any(s[0] == "s" for s in shapes):
    print(f"per relayed SSE event ({tokens} tokens + role, usage and [DONE] events), us:")
    for p in proxies:
        print(f"{p:18}" + ", ".join(f"{name(s)}: {(med(p, s) or 0) / (tokens + 3):.2f}" for s in shapes if s[0] == "s"))
# Where the CPU went: user space (the proxy's own code) against the kernel
# (TCP, the ring or epoll), from the process's utime/stime ticks (coarse:
# read the split, not the third digit).
print("user space / kernel, us per request (per stream for streams): median total x median user share (utime/stime ticks)")
for p in proxies:
    cells = []
    for s in shapes:
        t, u = med(p, s), med(p, s, 2)
        cells.append(f"{t * u:.1f} / {t * (1 - u):.1f}" if t else "-")
    print(f"{p:18}" + "".join(f"{c:>28}" for c in cells))
print("ratios of medians:")
pairs = [("io_uring", "nginx"), ("legacy", "nginx"), ("io_uring", "legacy")]
pairs += [(p[4:], p) for p in proxies if p.startswith("old-")]
pairs += [(p, p.split("+")[0]) for p in proxies if "+" in p]
pairs = [(a, b) for a, b in pairs if a in proxies and b in proxies]
for a, b in pairs:
    cells = []
    for s in shapes:
        x, y = med(a, s), med(b, s)
        cells.append(f"{x / y:.2f}" if x and y else "-")
    print(f"{a + '/' + b:18}" + "".join(f"{c:>28}" for c in cells))
PY
if [ -f "$OUT/latency.txt" ]; then tee -a "$OUT/summary.txt" < "$OUT/latency.txt"; fi
echo "results in $OUT"
