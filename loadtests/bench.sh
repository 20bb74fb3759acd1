#!/usr/bin/env bash
# Switchboard's performance run: the mock alone, the gateway against direct
# (added latency, interleaved in one run), nginx as a plain reverse proxy on the
# same mock, streaming timing, many concurrent streams, and memory.
# Everything on 127.0.0.1, every run bounded in time. Results (JSON, SVG, logs)
# go to loadtests/results/DATE/. docs/performance.md quotes them.
#
#   loadtests/bench.sh            # full run (~4 minutes)
#   DURATION=3 STREAMS=2000 loadtests/bench.sh   # quicker
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
STREAMS=${STREAMS:-8000}
GW_WORKERS=${GW_WORKERS:-1}
OUT=loadtests/results/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
cargo build --release --bins -q
BIN=target/release
LOAD="$BIN/switchboard-load --quiet"

. loadtests/lib.sh

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

ulimit -n "$(ulimit -Hn)" || true
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {print int($2/1024/1024)}' /proc/meminfo) GiB, kernel $(uname -r)" | tee "$OUT/machine.txt"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo none)" | tee -a "$OUT/machine.txt"

# The mock upstream, one worker.
"$BIN/mock-upstream" --listen 127.0.0.1:0 > "$OUT/mock.log" 2>&1 & pids+=($!); MOCK=$!
wait_line "$OUT/mock.log" "listening on"
MOCK_URL=$(grep -oE 'http://[0-9.:]+/v1' "$OUT/mock.log" | head -1)
MOCK_HP=${MOCK_URL#http://}; MOCK_HP=${MOCK_HP%/v1}

# The gateway.
KEY=sk-bench-key
HASH=$("$BIN/switchboard" hash-key "$KEY")
cat > "$OUT/switchboard.toml" <<TOML
[server]
listen = "127.0.0.1:0"
workers = $GW_WORKERS
max_connections_per_worker = 20000

[[upstreams]]
name = "mock"
base_url = "$MOCK_URL"
api_key = "sk-upstream-bench"
pool_max_idle = 20000

[[models]]
name = "gpt-4o-mini"
targets = [{ upstream = "mock" }]

[[keys]]
id = "bench"
hash = "$HASH"
TOML
"$BIN/switchboard" serve --config "$OUT/switchboard.toml" > "$OUT/gateway.log" 2>&1 & pids+=($!); GW=$!
wait_line "$OUT/gateway.log" "listening on"
GW_URL="http://$(grep -oE 'listening on [0-9.:]+' "$OUT/gateway.log" | head -1 | cut -d' ' -f3)/v1"
sleep 0.5
echo "gateway idle RSS: $(rss_kb $GW) KiB" | tee "$OUT/idle-rss.txt"

# nginx as a plain reverse proxy on the same mock (one worker, keep-alive upstream, no buffering).
NGINX_PID=""
if command -v nginx >/dev/null; then
    NPORT=$(free_port)
    mkdir -p "$OUT/nginx"
    cat > "$OUT/nginx/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $PWD/$OUT/nginx/nginx.pid;
error_log $PWD/$OUT/nginx/error.log warn;
worker_rlimit_nofile 40000;
events { worker_connections 20000; }
http {
    access_log off;
    client_body_temp_path $PWD/$OUT/nginx/body;
    proxy_temp_path $PWD/$OUT/nginx/proxy;
    upstream mock { server $MOCK_HP; keepalive 1024; }
    server {
        listen 127.0.0.1:$NPORT reuseport;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
NGINX
    nginx -c "$PWD/$OUT/nginx/nginx.conf" -p "$PWD/$OUT/nginx" > "$OUT/nginx.log" 2>&1 & pids+=($!)
    sleep 0.5
    NGINX_PID=$(pgrep -f "nginx: worker process" | head -1 || true)
    NGINX_URL="http://127.0.0.1:$NPORT/v1"
fi

run() { # name, args... (every run is bounded by --duration)
    local name=$1; shift
    case " $* " in *" --duration "*) ;; *) set -- "$@" --duration "$DURATION" ;; esac
    echo; echo "== $name"; echo "   switchboard-load $*" | sed "s|$PWD/||g"
    $LOAD "$@" --json "$OUT/$name.json" --svg "$OUT/$name.svg" | tee "$OUT/$name.txt"
}

run mock-alone --url "$MOCK_URL" --connections 64 --pid "$MOCK"
run added-1conn --url "$GW_URL" --baseline "$MOCK_URL" --key "$KEY" --connections 1 --pid "$GW" --upstream-pid "$MOCK"
run added-64conn --url "$GW_URL" --baseline "$MOCK_URL" --key "$KEY" --connections 64 --pid "$GW" --upstream-pid "$MOCK"
# Below saturation: 64 connections carrying 10,000 requests/s (open loop).
run added-64conn-10krps --url "$GW_URL" --baseline "$MOCK_URL" --key "$KEY" --connections 64 --rate 10000 --pid "$GW"
if [ -n "$NGINX_PID" ]; then
    run nginx-64conn --url "$NGINX_URL" --baseline "$MOCK_URL" --key "$KEY" --connections 64 --pid "$NGINX_PID"
    run gateway-64conn-again --url "$GW_URL" --key "$KEY" --connections 64 --pid "$GW"
fi
run body-10k --url "$GW_URL" --key "$KEY" --connections 16 --prompt-bytes 10240 --pid "$GW"
run body-100k --url "$GW_URL" --key "$KEY" --connections 16 --prompt-bytes 102400 --pid "$GW"
run stream-added --url "$GW_URL" --baseline "$MOCK_URL" --key "$KEY" --connections 64 --stream-ratio 1 \
    --mock '{"tokens":20,"interval_ms":20}' --pid "$GW"
before=$(rss_kb $GW)
# Many concurrent streams: one token every 20 ms each; RSS sampled mid-run.
( sleep $((DURATION / 2 + 2)); echo "gateway RSS with $STREAMS streams open: $(rss_kb $GW) KiB (idle before: $before KiB)" > "$OUT/streams-rss.txt" ) &
run streams-$STREAMS --url "$GW_URL" --key "$KEY" --connections "$STREAMS" --stream-ratio 1 --timeout 60 \
    --mock '{"tokens":50,"interval_ms":20}' --pid "$GW" --warmup 2
cat "$OUT/streams-rss.txt"
run sweep --url "$GW_URL" --key "$KEY" --sweep 1,4,16,64,256,1024 --p99-target-ms 5 --duration 3 --pid "$GW"
echo; echo "results in $OUT"
