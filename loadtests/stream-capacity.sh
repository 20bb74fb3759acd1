#!/usr/bin/env bash
# Streams per proxy core at a paced token rate (30 tokens/s by default: one
# token per SSE event, 33 ms apart, 300 tokens a stream, so each stays open
# about 10 s), and the time the proxy adds at 64 streams.
#
# Capacity: for N in STEPS, `stream-hold` holds N streams open (ramped up at
# RAMP a second, each reopened as it ends) first straight at the mock, then
# through each proxy in PROXIES (the gateway per driver, one worker; nginx,
# one worker, the config vs-nginx.sh uses), each started fresh for the step
# and pinned to PROXY_CPU; the client and the mock are pinned to LOAD_CPU.
# Over a WINDOW-second steady window (after SETTLE seconds): token gap
# p50/p99/max and time to first token p99 as the client sees them, the proxy
# core's CPU (its process's, from /proc/PID/task/*/schedstat) and CPU per
# relayed SSE event, and the load side's share of its core (client + mock).
# A row whose load side used more than LOAD_MAX of its core, or waited on
# its run queue for more than LOAD_WAIT_MAX of the window, or whose direct
# run at the same N had a gap p99 more than DIRECT_OVER_MAX_US (3 ms: the
# mock's pacing has a 1 ms tick) over the pacing, is marked "load side":
# its gaps say nothing about the proxy; likewise "busy" when the proxy itself
# waited more than LOAD_WAIT_MAX on its run queue (something else ran on its
# core: a shared machine). A proxy holds N when its gap p99 is at most
# GAP_TARGET_US (1 ms) above direct's at the same N (what the proxy adds to
# the gaps' tail), no stream failed, stalled or lost a
# token, all N were open through the window and at most 0.1 % of reads
# carried two tokens. Capacity = the largest such N (every smaller step held
# too); where the load side gives out first it is "≥ N (load side limit)",
# with N / the proxy core's utilisation as a labelled extrapolation.
#
# Added latency: LAT_STREAMS (64) streams for each pacing in LAT_PACINGS
# (TOKENSxINTERVAL_MS: 30 tokens at 33 ms, and vs-nginx.sh's 50 at 10 ms),
# LAT_ROUNDS rounds of direct and every proxy in a rotating order; added =
# proxy p99 - direct p99 of the same round (first token, token gap), median
# over the rounds. LAT=0 skips it, CAPACITY=0 skips the capacity steps.
#
# Loopback only, ephemeral ports, every process stopped at exit; bounded:
# each run is ramp + SETTLE + WINDOW seconds, a proxy that fails a step is not
# tried at larger ones, and no step runs past the one where the load side
# gave out. About 8 minutes with the defaults on a quiet 2-core machine.
#
#   loadtests/stream-capacity.sh
#   STEPS="250 500" WINDOW=2 LAT_ROUNDS=1 loadtests/stream-capacity.sh   # smoke
#   PROXIES="io_uring nginx" STEPS="1000 2000 3000" loadtests/stream-capacity.sh
#   BIN=/path/to/release loadtests/stream-capacity.sh                    # another build
#   BIN=/path/to/release chrt -f 1 loadtests/stream-capacity.sh          # on a shared machine (root):
#       every process measured (SCHED_FIFO) ahead of other people's builds
set -euo pipefail
cd "$(dirname "$0")/.."

STEPS=${STEPS:-"250 500 1000 2000 4000 8000 10000"}
PROXIES=${PROXIES:-"io_uring legacy nginx"}
TOKENS=${TOKENS:-300}
INTERVAL_MS=${INTERVAL_MS:-33}
RAMP=${RAMP:-2000}
SETTLE=${SETTLE:-2}
WINDOW=${WINDOW:-5}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
GAP_TARGET_US=${GAP_TARGET_US:-1000}
LOAD_MAX=${LOAD_MAX:-0.90}
LOAD_WAIT_MAX=${LOAD_WAIT_MAX:-0.10}
DIRECT_OVER_MAX_US=${DIRECT_OVER_MAX_US:-3000}
LAT=${LAT:-1}
CAPACITY=${CAPACITY:-1}
LAT_STREAMS=${LAT_STREAMS:-64}
LAT_PACINGS=${LAT_PACINGS:-"30x33 50x10"}
LAT_ROUNDS=${LAT_ROUNDS:-3}
LAT_WINDOW=${LAT_WINDOW:-4}
OUT=${OUT:-loadtests/results/stream-capacity-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"

for v in STEPS LAT_STREAMS; do
    for n in ${!v}; do
        [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 100000 ] || { echo "$v: $n is not 1 to 100000" >&2; exit 64; }
    done
done
if [ "$(nproc)" -lt 2 ]; then PROXY_CPU=0; LOAD_CPU=0; echo "one core: proxy and load side share it (numbers are not a capacity)"; fi

. loadtests/lib.sh
case " $PROXIES " in *" nginx "*) ensure_commands nginx ;; esac
if [ -z "${BIN:-}" ]; then
    echo "building the working tree (release)"
    # Built as ordinary, low-priority work even when the measurement runs
    # under a realtime policy (see above).
    chrt -o 0 nice -n 15 cargo build --release --bins -q
    BIN=${CARGO_TARGET_DIR:-target}/release
fi

# Open files: a proxied stream takes two in the proxy and one in the mock
# and in the client each; raise the limit (and, as root, the hard limit) to
# what the largest step needs.
max_step=0
for n in $STEPS $LAT_STREAMS; do [ "$n" -gt "$max_step" ] && max_step=$n; done
want=$((max_step * 3 + 4096))
nr_open=$(cat /proc/sys/fs/nr_open 2>/dev/null || echo 1048576)
[ "$want" -gt "$nr_open" ] && want=$nr_open
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$want" ] && [ "$(id -u)" = 0 ]; then
    ulimit -Hn "$want" 2>/dev/null || echo "could not raise the hard open-files limit to $want (no CAP_SYS_RESOURCE here); it stays $(ulimit -Hn)"
fi
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -ge "$want" ]; then ulimit -Sn "$want"; else ulimit -Sn "$hard"; fi
FDS=$(ulimit -Sn)

{
    echo "date: $(date -u +%Y-%m-%dT%H:%MZ); machine: $(nproc) cores, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "proxies on core $PROXY_CPU (1 worker each), client (stream-hold) and mock on core $LOAD_CPU; streams of $TOKENS tokens ${INTERVAL_MS} ms apart, ramp $RAMP/s, settle ${SETTLE}s, window ${WINDOW}s; open-files limit $FDS"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); niceness of every process measured: $(nice), scheduling policy: $(chrt -p $$ | head -1 | sed 's/.*: //')"
} | tee "$OUT/machine.txt"

taskset -c "$LOAD_CPU" "$BIN/mock-upstream" --listen 127.0.0.1:0 > "$OUT/mock.log" 2>&1 & pids+=($!)
MOCK_PID=$!
wait_line "$OUT/mock.log" "listening on"
MOCK_URL=$(grep -oE 'http://[0-9.:]+/v1' "$OUT/mock.log" | head -1)
MOCK_HOSTPORT=${MOCK_URL#http://}; MOCK_HOSTPORT=${MOCK_HOSTPORT%/v1}
KEY=sk-stream-capacity-key
HASH=$("$BIN/switchboard" hash-key "$KEY")

# start_proxy NAME CONNECTIONS: sets PROXY_PID and PROXY_URL.
start_proxy() {
    local dir="$OUT/$1-$RANDOM"
    mkdir -p "$dir"
    if [ "$1" = nginx ]; then
        start_nginx "$dir" "$MOCK_HOSTPORT" "$PROXY_CPU" "$2"
        PROXY_PID=$NGINX_PID; PROXY_URL=$NGINX_URL/v1
        return
    fi
    gateway_toml "$1" "$MOCK_URL" "$HASH" "$2" > "$dir/switchboard.toml"
    (cd "$dir" && SWITCHBOARD_DRIVER= exec taskset -c "$PROXY_CPU" "$(realpath "$BIN")/switchboard" serve \
        --config switchboard.toml > gateway.log 2>&1) &
    PROXY_PID=$!
    pids+=("$PROXY_PID")
    wait_line "$dir/gateway.log" "data plane listening on"
    PROXY_URL="http://$(grep -oE 'data plane listening on [0-9.:]+' "$dir/gateway.log" | head -1 | awk '{print $5}')/v1"
}
stop_proxy() {
    kill "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
}

# hold NAME N URL TOKENS INTERVAL WINDOW SETTLE [--pid proxy=PID]: one run; its JSON in $OUT/NAME-N-...json.
hold() {
    local name=$1 n=$2 url=$3 tokens=$4 interval=$5 window=$6 settle=$7
    shift 7
    local json="$OUT/$name-$n-${tokens}x$interval-$RANDOM.json"
    if ! taskset -c "$LOAD_CPU" "$BIN/stream-hold" --url "$url" --key "$KEY" --streams "$n" --tokens "$tokens" \
        --interval-ms "$interval" --ramp "$RAMP" --settle "$settle" --window "$window" \
        --pid mock="$MOCK_PID" --cpu "$LOAD_CPU" --cpu "$PROXY_CPU" --json "$json" "$@" > "$json.txt" 2>&1; then
        echo "  $name $n: stream-hold failed: $(cat "$json.txt")" >&2
        return 1
    fi
    echo "$json"
}

# A step's verdict for one run: prints "ok", "fail REASON" or "load REASON".
verdict() { # json direct-json-or-empty
    python3 - "$1" "${2:-}" "$INTERVAL_MS" "$GAP_TARGET_US" "$LOAD_MAX" "$LOAD_WAIT_MAX" "$DIRECT_OVER_MAX_US" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
d = json.load(open(sys.argv[2])) if sys.argv[2] else None
interval_us, target, load_max, wait_max = int(sys.argv[3]) * 1000, int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
direct_max = int(sys.argv[7])
# The direct run is judged against what the load side can do on its own:
# the mock's one-millisecond tick puts up to ~2 ms of jitter into the gaps
# before any proxy is involved.
if d is None:
    target = direct_max
w = r["window_s"] * 1e9
cpu = r["cpu"]
load = sum((cpu.get(k) or {}).get("cpu_ns", 0) for k in ("client", "mock")) / w
wait = sum((cpu.get(k) or {}).get("wait_ns", 0) for k in ("client", "mock")) / w
why = []
if load > load_max:
    why.append(f"load side {load:.0%} of its core")
if wait > wait_max:
    why.append(f"load side waited {wait:.0%} on its run queue")
if d is not None and (d["gap_us"].get("p99", 10**9) - interval_us > direct_max or d["errors"]):
    why.append(f"direct's gap p99 more than {direct_max} us over the pacing")
if why:
    print("load " + "; ".join(why)); sys.exit()
proxy = cpu.get("proxy") or {}
if proxy.get("wait_ns", 0) / w > wait_max:
    print(f"busy proxy core: the proxy waited {proxy['wait_ns'] / w:.0%} of the window on its run queue (another process on its core)")
    sys.exit()
errors = sum(r["errors"].values())
p99 = r["gap_us"].get("p99")
if errors: why.append(f"{errors} errors")
if r["stalled"]: why.append(f"{r['stalled']} stalled")
if r["lost_tokens"]: why.append(f"{r['lost_tokens']} tokens lost")
if min(r["open_at_start"], r["open_at_end"]) < r["streams"]: why.append(f"only {min(r['open_at_start'], r['open_at_end'])} open")
if d is None:
    if p99 is None or p99 - interval_us > target: why.append(f"gap p99 {p99} us")
elif p99 is None or d["gap_us"].get("p99") is None or p99 - d["gap_us"]["p99"] > target:
    why.append(f"gap p99 {p99} us, direct {d['gap_us'].get('p99')} us")
if r["batched_reads"] > 0.001 * max(r["reads"], 1): why.append(f"{r['batched_reads']} batched reads")
print("fail " + "; ".join(why) if why else "ok")
PY
}

if [ "$CAPACITY" != 0 ]; then
    read -ra proxies <<< "$PROXIES"
    declare -A failed
    : > "$OUT/runs.txt"
    for n in $STEPS; do
        need=$((n * 2 + 256))
        if [ "$need" -gt "$FDS" ]; then
            echo "step $n: skipped: needs $need open files, the limit is $FDS" | tee -a "$OUT/runs.txt"
            continue
        fi
        echo "step $n streams (load average $(cut -d' ' -f1 /proc/loadavg))"
        direct=$(hold direct "$n" "$MOCK_URL" "$TOKENS" "$INTERVAL_MS" "$WINDOW" "$SETTLE") || direct=
        if [ -n "$direct" ]; then
            verdict "$direct" > "$OUT/verdict-direct-$n.txt"
            echo "  direct    $(cat "$direct.txt") -> $(cat "$OUT/verdict-direct-$n.txt")"
        fi
        echo "direct $n $direct" >> "$OUT/runs.txt"
        load_out=
        for p in "${proxies[@]}"; do
            if [ -n "${failed[$p]:-}" ]; then
                echo "  $p: skipped (failed at ${failed[$p]} streams)"
                continue
            fi
            start_proxy "$p" $((n * 2 + 1024))
            r=$(hold "$p" "$n" "$PROXY_URL" "$TOKENS" "$INTERVAL_MS" "$WINDOW" "$SETTLE" --pid proxy="$PROXY_PID") || r=
            stop_proxy
            if [ -z "$r" ]; then failed[$p]=$n; continue; fi
            v=$(verdict "$r" "$direct")
            echo "$v" > "$OUT/verdict-$p-$n.txt"
            printf '  %-9s %s -> %s\n' "$p" "$(cat "$r.txt")" "$v"
            echo "$p $n $r" >> "$OUT/runs.txt"
            case $v in
                fail*) failed[$p]=$n ;;
                load*|busy*) load_out=$v ;;
            esac
            sleep 1
        done
        if [ -n "$load_out" ]; then
            echo "  no valid measurement at $n streams (${load_out%% *}): no larger step"
            break
        fi
        all_failed=1
        for p in "${proxies[@]}"; do [ -z "${failed[$p]:-}" ] && all_failed=; done
        [ -n "$all_failed" ] && break
    done
fi

if [ "$LAT" != 0 ]; then
    : > "$OUT/latency-runs.txt"
    read -ra targets <<< "direct $PROXIES"
    declare -A LURL LPID
    for p in $PROXIES; do
        start_proxy "$p" 20000
        LURL[$p]=$PROXY_URL; LPID[$p]=$PROXY_PID
    done
    LURL[direct]=$MOCK_URL
    for pacing in $LAT_PACINGS; do
        tokens=${pacing%x*}; interval=${pacing#*x}
        for r in $(seq 1 "$LAT_ROUNDS"); do
            echo "added latency, $LAT_STREAMS streams, $tokens tokens ${interval} ms apart, round $r (load average $(cut -d' ' -f1 /proc/loadavg))"
            for i in $(seq 0 $((${#targets[@]} - 1))); do
                t=${targets[$(((i + r) % ${#targets[@]}))]}
                extra=(--stamp)
                [ "$t" != direct ] && extra+=(--pid proxy="${LPID[$t]}")
                j=$(hold "$t" "$LAT_STREAMS" "${LURL[$t]}" "$tokens" "$interval" "$LAT_WINDOW" 1 "${extra[@]}") || continue
                printf '  %-9s %s\n' "$t" "$(cat "$j.txt")"
                echo "$pacing $r $t $j" >> "$OUT/latency-runs.txt"
            done
        done
    done
fi
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt"

python3 - "$OUT" "$INTERVAL_MS" "$GAP_TARGET_US" "$LOAD_MAX" "$LOAD_WAIT_MAX" "$PROXIES" "$CAPACITY" "$LAT" <<'PY' | tee "$OUT/summary.txt"
import json, os, statistics, sys
out, interval_ms, target, load_max, wait_max = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
proxies, capacity, lat = sys.argv[6].split(), sys.argv[7] != "0", sys.argv[8] != "0"
interval = interval_ms * 1000
ms = lambda us: "-" if us is None else f"{us / 1000:.1f}"
def load_of(r):
    w = r["window_s"] * 1e9
    c = r["cpu"]
    return (sum((c.get(k) or {}).get("cpu_ns", 0) for k in ("client", "mock")) / w,
            sum((c.get(k) or {}).get("wait_ns", 0) for k in ("client", "mock")) / w)
if capacity and os.path.exists(f"{out}/runs.txt"):
    runs, skipped = {}, []
    for line in open(f"{out}/runs.txt"):
        f = line.split()
        if f[0] == "step":
            skipped.append(line.strip()); continue
        if len(f) == 3:
            runs[(f[0], int(f[1]))] = json.load(open(f[2]))
    steps = sorted({n for _, n in runs})
    print(f"Streams held at {1000 / interval_ms:.0f} tokens/s ({interval_ms} ms apart); gap and first token as the client sees them, ms;")
    print(f"'over' = gap p99 - {interval_ms} ms; 'added' = the proxy's p99 - direct's at the same N, ms (gap target <= {target / 1000:g} ms)")
    print("proxy = its core's share used by the proxy (run-queue wait); load = client + mock share of their core (wait)")
    hdr = f"{'N':>6} {'target':9} {'open':>6} {'gap p50':>8} {'p99':>7} {'max':>7} {'over':>6} {'ttft99':>7} {'added gap/ttft':>15} {'batched':>8} {'err':>4} {'proxy':>12} {'us/event':>9} {'load':>11}  verdict"
    print(hdr)
    verdicts = {}
    for n in steps:
        d = runs.get(("direct", n))
        for t in ["direct"] + proxies:
            r = runs.get((t, n))
            if r is None:
                continue
            g, tt = r["gap_us"], r["ttft_us"]
            load, wait = load_of(r)
            err = sum(r["errors"].values())
            over = None if g.get("p99") is None else g["p99"] - interval
            if t == "direct":
                added, proxy, per_event = "", "", ""
            else:
                a = lambda k: None if d is None or r[k].get("p99") is None or d[k].get("p99") is None else r[k]["p99"] - d[k]["p99"]
                added = f"{ms(a('gap_us'))}/{ms(a('ttft_us'))}"
                pc = r["cpu"].get("proxy") or {}
                w = r["window_s"] * 1e9
                proxy = f"{pc.get('cpu_ns', 0) / w:.0%} ({pc.get('wait_ns', 0) / w:.0%})"
                per_event = f"{pc.get('cpu_ns', 0) / 1000 / max(r['events'], 1):.2f}"
            verdict = open(f"{out}/verdict-{t}-{n}.txt").read().strip() if os.path.exists(f"{out}/verdict-{t}-{n}.txt") else ""
            if t != "direct":
                verdicts[(t, n)] = (verdict, r)
            print(f"{n:>6} {t:9} {min(r['open_at_start'], r['open_at_end']):>6} {ms(g.get('p50')):>8} {ms(g.get('p99')):>7} {ms(g.get('max')):>7} "
                  f"{ms(over):>6} {ms(tt.get('p99')):>7} {added:>15} {r['batched_reads']:>8} {err:>4} {proxy:>12} {per_event:>9} "
                  f"{f'{load:.0%} ({wait:.0%})':>11}  {verdict}")
    for s in skipped:
        print(s)
    print()
    print("Capacity per proxy core (the largest N held, every smaller step held too):")
    for p in proxies:
        best, last_valid, limit = None, None, None
        for n in steps:
            if (p, n) not in verdicts:
                continue
            v, r = verdicts[(p, n)]
            if v.startswith("ok"):
                best, last_valid = n, r
            elif v.startswith("load") or v.startswith("busy"):
                limit = (n, "load side limit" if v.startswith("load") else "the proxy's core busy with other work")
                break
            else:
                break
        else:
            limit = "end"
        if best is None:
            why = f" (no valid measurement: {limit[1]} at {limit[0]})" if isinstance(limit, tuple) else ""
            print(f"  {p:9} not shown at {steps[0]} streams{why}")
            continue
        util = (last_valid["cpu"].get("proxy") or {}).get("cpu_ns", 0) / (last_valid["window_s"] * 1e9)
        est = f"; extrapolation: {best} / {util:.0%} proxy core = ~{best / util:,.0f} streams if the proxy scaled linearly" if util > 0 else ""
        if limit == "end":
            print(f"  {p:9} >= {best} streams (the largest step){est}")
        elif limit is not None:
            print(f"  {p:9} >= {best} streams ({limit[1]} at {limit[0]}){est}")
        else:
            print(f"  {p:9} {best} streams")
if lat and os.path.exists(f"{out}/latency-runs.txt"):
    runs = {}
    for line in open(f"{out}/latency-runs.txt"):
        pacing, rnd, t, j = line.split()
        runs[(pacing, rnd, t)] = json.load(open(j))
    print()
    print("Added latency at 64 streams: proxy p99 - direct p99 of the same round, us; median [min-max] over rounds")
    for pacing in sorted({k[0] for k in runs}, key=lambda p: -int(p.split("x")[1])):
        tok, iv = pacing.split("x")
        print(f"  {tok} tokens {iv} ms apart:")
        rounds = sorted({k[1] for k in runs if k[0] == pacing})
        for p in proxies:
            cells = []
            for metric, name in (("ttft_us", "first token"), ("gap_us", "token gap"), ("transit_us", "token transit")):
                diffs = [runs[(pacing, r, p)][metric]["p99"] - runs[(pacing, r, "direct")][metric]["p99"]
                         for r in rounds if (pacing, r, p) in runs and (pacing, r, "direct") in runs
                         and runs[(pacing, r, p)][metric].get("p99") is not None and runs[(pacing, r, "direct")][metric].get("p99") is not None]
                cells.append(f"{name} {statistics.median(diffs):.0f} [{min(diffs)}-{max(diffs)}]" if diffs else f"{name} -")
            print(f"    {p:9} " + "; ".join(cells))
        d = [runs[(pacing, r, "direct")] for r in rounds if (pacing, r, "direct") in runs]
        if d:
            print(f"    {'direct':9} first token p99 {statistics.median(x['ttft_us'].get('p99', 0) for x in d):.0f}; token gap p99 {statistics.median(x['gap_us'].get('p99', 0) for x in d):.0f}; token transit p99 {statistics.median(x.get('transit_us', {}).get('p99', 0) for x in d):.0f} (absolute, median)")
        # Transit p50 too: the typical relay cost of one event, next to its tail.
        for p in proxies:
            diffs = [runs[(pacing, r, p)]["transit_us"]["p50"] - runs[(pacing, r, "direct")]["transit_us"]["p50"]
                     for r in rounds if (pacing, r, p) in runs and (pacing, r, "direct") in runs
                     and runs[(pacing, r, p)].get("transit_us", {}).get("p50") is not None
                     and runs[(pacing, r, "direct")].get("transit_us", {}).get("p50") is not None]
            if diffs:
                print(f"    {p:9} token transit p50 added {statistics.median(diffs):.0f} [{min(diffs)}-{max(diffs)}]")
PY
echo "results in $OUT"
