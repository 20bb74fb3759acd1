# Sourced by the load scripts (not run): the processes they start, stopped at
# exit; waiting for a log line; building an older commit beside the working
# tree for before/after comparisons.

# Every process a script starts goes in `pids` (`cmd & pids+=($!)`): all are
# stopped when the script exits, however it exits.
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
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
