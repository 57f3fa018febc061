# Sourced by the comparison benches (bench-metrics.sh, bench-tls.sh, bench-live.sh, …).
#
#   bench_prepare      # BIN (the release binary, which must exist), WORK (a temporary directory,
#                      # removed at exit with every relay whose pid file is in it), the fd limit raised
bench_prepare() {
    BIN="$ROOT/target/release/beepmyphone"
    WORK=$(mktemp -d)
    trap 'kill $(cat "$WORK"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$WORK"' EXIT
    [[ -x $BIN ]] || { echo "build it first: cargo build --release" >&2; exit 1; }
    ulimit -n "$(ulimit -Hn)"
}

# start_relay starts a relay for a
# load run the way scripts/bench.sh does (log level warning, per-IP socket and frame limits
# lifted), in $WORK/NAME, and waits until it answers (over http, or https for a relay started with
# BEEP__TLS__MODE: the liveness probe alone skips the certificate check).
#
#   start_relay NAME PORT BINARY [VAR=VALUE ...]     # extra settings as environment variables
start_relay() {
    local name=$1 port=$2 binary=$3 dir="$WORK/$1"
    shift 3
    mkdir -p "$dir"
    (
        cd "$dir"
        exec env BEEP__LOG__LEVEL=warning BEEP__SERVER__MAX_BODY_BYTES=1048576 \
            BEEP__LIMITS__MAX_SOCKETS_PER_IP=0 BEEP__LIMITS__WS_CONNECTS_PER_MINUTE=10000000 \
            BEEP__LIMITS__WS_FRAMES_PER_SECOND=1000000 BEEP__LIMITS__WS_FRAME_BURST=1000000 \
            "$@" "$binary" serve --listen "127.0.0.1:$port" --data-dir "$dir" >>"$dir/relay.log" 2>&1
    ) &
    echo $! >"$WORK/$name.pid"
    for _ in $(seq 1 200); do
        curl -fsS "http://127.0.0.1:$port/health/live" >/dev/null 2>&1 && return 0
        curl -fsSk "https://127.0.0.1:$port/health/live" >/dev/null 2>&1 && return 0
        sleep 0.1 # waiting for another process to listen
    done
    echo "the $name relay did not start:" >&2
    cat "$dir/relay.log" >&2
    return 1
}
