#!/usr/bin/env bash
# Anthropic's Messages API against chat completions, passthrough and
# translated, in one gateway run: one mock upstream (it speaks both), one
# gateway with an OpenAI-kind provider and an Anthropic-kind provider on that
# mock, and closed-loop runs alternating between four shapes — chat to the
# OpenAI-kind provider and messages to the Anthropic-kind one (passthrough),
# messages to the OpenAI-kind one and chat to the Anthropic-kind one
# (translated) — reporting the gateway's CPU per request for each run, the
# medians, the ratios, and with streams the translation's cost per SSE event.
# Loopback only, bounded in time.
#
#   loadtests/messages.sh
#   RUNS=6 DURATION=4 STREAM_RATIO=1 MOCK='{"tokens":64}' loadtests/messages.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-4}
DURATION=${DURATION:-3}
CONNECTIONS=${CONNECTIONS:-32}
STREAM_RATIO=${STREAM_RATIO:-0}
MOCK=${MOCK:-'{"tokens":16}'}
OUT=loadtests/results/messages-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
cargo build --release --bins -q
BIN=${CARGO_TARGET_DIR:-target}/release

. loadtests/lib.sh
echo "machine: $(nproc) cores; date: $(date -u +%Y-%m-%dT%H:%MZ); $(git rev-parse --short HEAD)+worktree; stream ratio $STREAM_RATIO; mock $MOCK" | tee "$OUT/machine.txt"

"$BIN/mock-upstream" --listen 127.0.0.1:0 > "$OUT/mock.log" 2>&1 & pids+=($!)
wait_line "$OUT/mock.log" "listening on"
MOCK_URL=$(grep -oE 'http://[0-9.:]+/v1' "$OUT/mock.log" | head -1)
KEY=sk-messages-key
HASH=$("$BIN/switchboard" hash-key "$KEY")
cat > "$OUT/switchboard.toml" <<TOML
[server]
listen = "127.0.0.1:0"
workers = 1
max_connections_per_worker = 20000

[[providers]]
name = "openai"
base_url = "$MOCK_URL"
api_key = "sk-upstream-openai"
pool_max_idle = 20000

[[providers]]
name = "anthropic"
kind = "anthropic"
base_url = "$MOCK_URL"
api_key = "sk-upstream-anthropic"
pool_max_idle = 20000

[[routes]]
name = "gpt"
targets = [{ provider = "openai" }]

[[routes]]
name = "claude"
targets = [{ provider = "anthropic" }]

[[keys]]
id = "messages"
hash = "$HASH"
TOML
"$BIN/switchboard" serve --config "$OUT/switchboard.toml" > "$OUT/gateway.log" 2>&1 & GW_PID=$!; pids+=("$GW_PID")
wait_line "$OUT/gateway.log" "listening on"
GW_URL="http://$(grep -oE 'listening on [0-9.:]+' "$OUT/gateway.log" | head -1 | awk '{print $3}')/v1"

run() { # name path model i
    "$BIN/switchboard-load" --quiet --url "$GW_URL" --key "$KEY" --path "$2" --model "$3" --mock "$MOCK" \
        --connections "$CONNECTIONS" --duration "$DURATION" --stream-ratio "$STREAM_RATIO" --pid "$GW_PID" \
        --json "$OUT/$1-$4.json" > "$OUT/$1-$4.txt"
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert not d["gateway"]["errors"], d["gateway"]["errors"]; print("%.1f" % d["gateway_cpu_us_per_request"])' "$OUT/$1-$4.json"
}
chat=(); messages=(); m2c=(); c2m=()
for i in $(seq 1 "$RUNS"); do
    chat+=("$(run chat /chat/completions gpt "$i")")
    messages+=("$(run messages /messages claude "$i")")
    m2c+=("$(run messages-to-chat /messages gpt "$i")")
    c2m+=("$(run chat-to-messages /chat/completions claude "$i")")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
mc=$(median "${chat[@]}"); mm=$(median "${messages[@]}"); mmc=$(median "${m2c[@]}"); mcm=$(median "${c2m[@]}")
# The mock's token count: events per stream, for the per-event cost.
TOKENS=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("tokens", 16))' "$MOCK")
ratio() { python3 -c "print('%.3f' % ($1 / $2))"; }
per_event() { python3 -c "print('%.2f' % (($1 - $2) / $TOKENS))"; }
{
    echo "gateway CPU per request (us), $CONNECTIONS connections, stream ratio $STREAM_RATIO, ${DURATION}s runs alternated:"
    echo "chat completions passthrough:            ${chat[*]}  median $mc"
    echo "messages passthrough:                    ${messages[*]}  median $mm"
    echo "messages -> OpenAI-kind (translated):    ${m2c[*]}  median $mmc"
    echo "chat -> Anthropic-kind (translated):     ${c2m[*]}  median $mcm"
    echo "ratio messages / chat passthrough: $(ratio "$mm" "$mc")"
    echo "ratio messages translated / messages passthrough: $(ratio "$mmc" "$mm")"
    echo "ratio chat translated / chat passthrough: $(ratio "$mcm" "$mc")"
    if [ "$STREAM_RATIO" = 1 ]; then
        echo "translation per SSE event ($TOKENS tokens a stream), us: messages $(per_event "$mmc" "$mm"), chat $(per_event "$mcm" "$mc")"
    fi
} | tee "$OUT/summary.txt"
