# Sourced by the load scripts (not run): the processes they start, stopped at
# exit; waiting for a log line; building an older commit beside the working
# tree for before/after comparisons.

# Every process a script starts goes in `pids` (`cmd & pids+=($!)`): all are
# stopped when the script exits, however it exits.
pids=()
# A script run under a real-time policy (`chrt -f 1`, see stream-capacity.sh)
# goes back to ordinary scheduling first: a SCHED_FIFO shell or nginx left
# spinning or unlinking can starve the kernel workers it waits on (seen: 40
# minutes stuck in an unlink's discard at 88 % of a core).
cleanup() {
    if command -v chrt >/dev/null 2>&1; then
        for p in $$ "${pids[@]}"; do chrt -o -a -p 0 "$p" >/dev/null 2>&1 || true; done
    fi
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

# wait_line FILE PATTERN [TRIES]: until FILE has a line matching PATTERN,
# checking every 50 ms, TRIES times (default WAIT_TRIES, else 200: 10 s).
wait_line() {
    for _ in $(seq 1 "${3:-${WAIT_TRIES:-200}}"); do grep -qE "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
    echo "timed out waiting for $2 in $1" >&2; cat "$1" >&2; return 1
}

# build_old_and_new REV: REV built in release from a git worktree under
# target/ (into target/ab-old), and the working tree (into target/); sets
# OLD_REV, OLD_BIN and NEW_BIN.
build_old_and_new() {
    OLD_REV=$(git rev-parse --short "$1")
    local wt=target/ab-src-$OLD_REV
    if [ ! -d "$wt" ]; then
        git worktree add --detach "$wt" "$OLD_REV" >/dev/null
    fi
    echo "building $OLD_REV and the working tree (release)"
    CARGO_TARGET_DIR=target/ab-old cargo build --release --bins -q --manifest-path "$wt/Cargo.toml"
    cargo build --release --bins -q
    OLD_BIN=target/ab-old/release
    NEW_BIN=target/release
}

# ensure_commands CMD...: install the Debian packages of the same names that
# are missing (apt-get, as root), like .ci/run does; fail otherwise.
ensure_commands() {
    local missing=() c
    for c in "$@"; do
        command -v "$c" >/dev/null || [ -x "/usr/sbin/$c" ] || missing+=("$c")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing ${missing[*]}"
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "needs ${missing[*]} (apt-get install ${missing[*]})" >&2; return 1
    fi
}

# A free loopback port (for nginx, which cannot report a port 0 bind).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# gateway_toml DRIVER MOCK_URL KEY_HASH [CONNECTIONS] [EXTRA]: the gateway's
# configuration for the pinned comparisons: one worker, the mock as the one
# upstream (keep-alive pool), one key; room for CONNECTIONS client
# connections (default 20000) and as many idle upstream ones. EXTRA (TOML)
# goes after [server], e.g. an [admin] table.
gateway_toml() {
    local conns=${4:-20000} pool=${4:-20000}
    [ "$pool" -gt 65536 ] && pool=65536
    cat <<TOML
[server]
listen = "127.0.0.1:0"
workers = 1
driver = "$1"
max_connections_per_worker = $conns

${5:-}

[[upstreams]]
name = "mock"
base_url = "$2"
api_key = "sk-upstream-vs"
pool_max_idle = $pool
prices = [{ model = "gpt-4o-mini", prompt_per_mtok = 0.15, completion_per_mtok = 0.6 }]

[[models]]
name = "gpt-4o-mini"
targets = [{ upstream = "mock" }]

[[keys]]
id = "vs"
hash = "$3"
TOML
}

# start_nginx DIR UPSTREAM_HOSTPORT CPU [CONNECTIONS]: nginx as a plain
# reverse proxy (one worker, no master, keep-alive upstream, proxy_buffering
# off, its config and temp dirs in a new folder under DIR, an ephemeral
# loopback port), pinned to CPU, with room for CONNECTIONS connections in
# all (default 20000; a proxied stream takes two). Sets NGINX_PID and
# NGINX_URL once it answers; the process goes in `pids`.
start_nginx() {
    local dir port conns=${4:-20000}
    dir=$(mktemp -d "$(realpath "$1")/nginx.XXXXXX")
    port=$(free_port)
    cat > "$dir/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile $((conns + 1024 > 65536 ? conns + 1024 : 65536));
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections $conns; }
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 1000000;
    upstream mock { server $2; keepalive $conns; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
CONF
    local nginx
    nginx=$(command -v nginx || echo /usr/sbin/nginx)
    taskset -c "$3" "$nginx" -p "$dir" -c "$dir/nginx.conf" > "$dir/stdout.log" 2>&1 &
    NGINX_PID=$!
    pids+=("$NGINX_PID")
    NGINX_URL="http://127.0.0.1:$port"
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "$NGINX_URL/v1/models" && return 0
        sleep 0.05
    done
    echo "nginx did not start" >&2; cat "$dir/error.log" "$dir/stdout.log" >&2; return 1
}
