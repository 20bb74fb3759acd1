#!/usr/bin/env bash
# A census of the gateway's user-space work per request and per relayed SSE
# event: heap allocations (mimalloc's entry points), clock reads (libc's
# clock_gettime, which std's Instant::now and SystemTime::now call), timers
# armed and cancelled (monoio's timer wheel), bytes moved by memcpy/memmove,
# SHA-256 block-function calls (key hashing), memmem searchers built. Counted
# with uprobes (`perf probe`, as root) in the gateway's process only, so the
# numbers are counts, independent of the machine's load.
#
#   loadtests/census.sh                               # the working tree's release build
#   BIN=/path/to/release N=2000 DRIVERS="io_uring legacy" loadtests/census.sh
#
# One gateway per driver (1 worker, file mode, the mock upstream). Three
# loads, each after a warm-up: N non-streaming requests at c=8; N/10
# streams of 10 tokens and N/10 streams of 50 tokens, 8 at a time. The
# per-event figure is the difference between the two stream loads divided
# by the 40 extra token events (so what a stream costs once is not in it).
# Loopback only, bounded (3 x N-ish requests per driver). Needs perf.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-2000}
DRIVERS=${DRIVERS:-"io_uring legacy"}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
OUT=loadtests/results/census-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
if [ "$(nproc)" -lt 2 ]; then PROXY_CPU=0; LOAD_CPU=0; fi

. loadtests/lib.sh
ensure_commands perf
if [ -z "${BIN:-}" ]; then
    echo "building the working tree (release)"
    cargo build --release --bins -q
    BIN=${CARGO_TARGET_DIR:-target}/release
fi
BIN=$(realpath "$BIN")
LIBC=$(ldd "$BIN/switchboard" | awk '/libc.so/ {print $3}')

# The probes: a group of our own, removed at exit.
GROUP=sbcensus$$
probes=()
add_probe() { # name binary spec
    if perf probe -q -x "$2" --add "$GROUP:$1=$3" 2>/dev/null; then probes+=("$GROUP:$1"); fi
}
remove_probes() {
    perf probe -q -d "$GROUP:*" >/dev/null 2>&1 || true
    local p
    for p in "${probes[@]}"; do echo "-:${p/://}" >> "${TRACEFS:-/sys/kernel/tracing}/uprobe_events" 2>/dev/null || true; done
}
trap 'remove_probes; cleanup' EXIT
for f in mi_malloc mi_malloc_aligned mi_zalloc mi_zalloc_aligned mi_realloc mi_realloc_aligned mi_free; do
    add_probe "$f" "$BIN/switchboard" "$f"
done
add_probe clock_gettime "$LIBC" clock_gettime
# Rust functions by their file offset, straight into tracefs (their mangled
# names carry characters perf's probe syntax does not take); each is a
# function the compiler kept out of line.
TRACEFS=/sys/kernel/tracing
[ -d $TRACEFS ] || TRACEFS=/sys/kernel/debug/tracing
read -r _ seg_off seg_vaddr _ < <(readelf -lW "$BIN/switchboard" | awk '$1 == "LOAD" && / R E /' | head -1)
TEXT_DELTA=$((seg_vaddr - seg_off))
add_sym() { # name regex-on-mangled-symbol
    local addr
    addr=$(nm "$BIN/switchboard" | awk -v re="$2" '$2 ~ /^[tT]$/ && $3 ~ re && !a {a = $1} END {print a}')
    [ -n "$addr" ] || return 0
    if echo "p:$GROUP/$1 $BIN/switchboard:$(printf '0x%x' $((0x$addr - TEXT_DELTA)))" >> $TRACEFS/uprobe_events 2>/dev/null; then
        probes+=("$GROUP:$1")
    fi
}
add_sym timer_arm '^_ZN6monoio4time6driver.*Handle.*10reregister'
add_sym timer_clear '^_ZN6monoio4time6driver.*Handle.*11clear_entry'
add_sym sha256_calls '^_ZN4sha26sha256(4soft8compress|3x8613digest_blocks)'
add_sym memmem_new '^_ZN6memchr6memmem8searcher8Searcher3new'
# glibc picks one memmove/memcpy per CPU (an IFUNC); probe the candidates
# with their length argument, count calls and sum bytes from a record. Each
# `__memcpy_*` is the same code at the same address as its `__memmove_*`
# (probing both would count every call twice).
copies=()
for f in __memmove_avx512_unaligned_erms __memmove_evex_unaligned_erms __memmove_avx_unaligned_erms \
    __memmove_sse2_unaligned_erms; do
    perf probe -q -x "$LIBC" --add "$GROUP:${f//_/}=$f len=%dx:u64" 2>/dev/null && copies+=("$GROUP:${f//_/}") || true
done
[ ${#probes[@]} -gt 0 ] || { echo "no probe could be placed (run as root)" >&2; exit 1; }
echo "probes: ${probes[*]} ${copies[*]:-}" > "$OUT/probes.txt"

taskset -c "$LOAD_CPU" "$BIN/mock-upstream" --listen 127.0.0.1:0 > "$OUT/mock.log" 2>&1 & pids+=($!)
wait_line "$OUT/mock.log" "listening on"
MOCK_URL=$(grep -oE 'http://[0-9.:]+/v1' "$OUT/mock.log" | head -1)
KEY=sk-census-key
HASH=$("$BIN/switchboard" hash-key "$KEY")

load() { # url n conns stream tokens
    local mock=()
    [ "$4" = 1 ] && mock=(--mock "{\"tokens\": $5, \"interval_ms\": 1}")
    taskset -c "$LOAD_CPU" "$BIN/switchboard-load" --quiet --url "$1/v1" --key "$KEY" --connections "$3" \
        --warmup 0 --duration 600 --timeout 60 --max-requests "$2" --stream-ratio "$4" "${mock[@]}" > /dev/null
}
count() { # pid label -- load args
    local pid=$1 label=$2 events
    shift 3
    events=$(IFS=,; echo "${probes[*]}${copies[*]:+,${copies[*]}}")
    load "$@" # warm-up: the same shape, not counted
    perf stat -x, -e "$events" -p "$pid" -o "$OUT/stat-$label.csv" &
    local sp=$!
    local rp=
    if [ ${#copies[@]} -gt 0 ]; then
        perf record -q -m 16M -e "$(IFS=,; echo "${copies[*]}")" -p "$pid" -o "$OUT/copies-$label.data" 2>/dev/null &
        rp=$!
    fi
    sleep 0.5
    load "$@"
    sleep 0.2
    kill -INT "$sp" ${rp:+"$rp"}; wait "$sp" || true
    [ -n "$rp" ] && { wait "$rp" || true; }
    python3 - "$OUT/stat-$label.csv" > "$OUT/counts-$label.txt" <<'PY'
import sys
for line in open(sys.argv[1]):
    f = line.strip().split(",")
    if len(f) > 2 and f[0] and f[0][0].isdigit():
        print(f[2].split(":")[-1], f[0])
PY
    if [ -n "$rp" ]; then
        perf script -F event,trace -i "$OUT/copies-$label.data" 2>/dev/null | python3 -c '
import re, sys
n = b = 0
for line in sys.stdin:
    m = re.search(r"len=(\d+)", line)
    if m:
        n += 1; b += int(m.group(1))
print("recorded_copies", n); print("copied_bytes", b)' >> "$OUT/counts-$label.txt"
        rm -f "$OUT/copies-$label.data"
    fi
}

for d in $DRIVERS; do
    dir="$OUT/$d"; mkdir -p "$dir"
    gateway_toml "$d" "$MOCK_URL" "$HASH" 2000 > "$dir/switchboard.toml"
    (cd "$dir" && SWITCHBOARD_DRIVER= exec taskset -c "$PROXY_CPU" "$BIN/switchboard" serve --config switchboard.toml \
        > gateway.log 2>&1) & pids+=($!)
    gpid=$!
    wait_line "$dir/gateway.log" "data plane listening on"
    url="http://$(grep -oE 'data plane listening on [0-9.:]+' "$dir/gateway.log" | head -1 | awk '{print $5}')"
    count "$gpid" "$d-req" -- "$url" "$N" 8 0 0
    count "$gpid" "$d-s10" -- "$url" $((N / 10)) 8 1 10
    count "$gpid" "$d-s50" -- "$url" $((N / 10)) 8 1 50
    kill "$gpid"; wait "$gpid" 2>/dev/null || true
done

python3 - "$OUT" "$N" "$DRIVERS" <<'PY' | tee "$OUT/census.txt"
import sys
out, n, drivers = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
def read(label):
    v = {}
    for line in open(f"{out}/counts-{label}.txt"):
        k, x = line.split()
        v[k] = float(x)
    allocs = sum(x for k, x in v.items() if k.startswith("mi_") and k != "mi_free")
    return {"allocs": allocs, "frees": v.get("mi_free", 0), "clock reads": v.get("clock_gettime", 0),
            "timers armed": v.get("timer_arm", 0), "timers cleared": v.get("timer_clear", 0),
            "memcpy calls": sum(x for k, x in v.items() if k.startswith("memmove")),
            # Bytes from a record of each call: scaled up by the calls it lost, if any.
            "memcpy bytes": v.get("copied_bytes", 0) * sum(x for k, x in v.items() if k.startswith("memmove"))
            / max(v.get("recorded_copies", 0), 1),
            "sha256 calls": v.get("sha256_calls", 0), "memmem searchers": v.get("memmem_new", 0)}
print(f"census: per non-streaming request (c=8, {n} requests) and per relayed SSE event "
      f"(streams of 50 minus streams of 10 tokens, {n // 10} each, / 40)")
for d in drivers:
    req, s10, s50 = read(f"{d}-req"), read(f"{d}-s10"), read(f"{d}-s50")
    print(f"{d}:")
    for k in req:
        per_req = req[k] / n
        per_stream = s10[k] / (n // 10)
        per_event = (s50[k] - s10[k]) / (n // 10) / 40
        print(f"  {k:18} {per_req:9.2f} per request   {per_event:9.2f} per event   {per_stream:9.2f} per 10-token stream")
PY
echo "results in $OUT"
