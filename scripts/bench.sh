#!/usr/bin/env bash
# Runs the standard load benchmarks of docs/benchmarks.md (its Targets section) with `beepmyphone bench` against a fresh relay:
# builds the release binary, starts a relay on a new temporary data directory, reads its initial
# admin token, runs the scenarios, writes each one's JSON report and human summary into a results
# directory (plus summary.txt for all of them), and stops the relay.
#
#   scripts/bench.sh                                      # the standard sizes
#   BENCH_DURATION=3 BENCH_CONNECTIONS=200 scripts/bench.sh   # a quick check
#
# Environment (all optional):
#   BENCH_SCENARIOS          scenarios to run, in order (default:
#                            "connections throughput throughput-batch latency latency-paced";
#                            also: connections-paced, burst, backlog)
#   BENCH_RESULTS            results directory (default: target/bench-results/YYYYmmdd-HHMMSS)
#   BENCH_PORT               port of the relay (default 18080, on 127.0.0.1; must be free)
#   BENCH_DURATION           seconds each timed scenario publishes or holds sockets (default 10)
#   BENCH_DRAIN              seconds to wait for outstanding deliveries (default 10)
#   BENCH_CONNECTIONS        idle sockets of `connections` (default 1000)
#   BENCH_THROUGHPUT_DEVICES devices of both throughput runs (default 100)
#   BENCH_PUBLISHERS         publisher tasks of the throughput runs (default 4)
#   BENCH_CONCURRENCY        requests in flight per publisher, throughput runs (default 16)
#   BENCH_BATCH              notifications per request of `throughput-batch` (default 100)
#   BENCH_LATENCY_DEVICES    devices online during `latency` (default 1000)
#   BENCH_RATE               notifications per second of `latency` and `latency-paced` (default 5000)
#   BENCH_PACED_PUBLISHERS   publishers of `latency-paced`, each one persistent connection waiting
#                            for its 202 before its next scheduled send (default 16)
#   BENCH_CONNECT_RATE       connects per second of `connections-paced` (default 2000)
#   BENCH_BURST_DEVICES      devices of `burst` (default 10); BENCH_BURST: burst size (default 100)
#   BENCH_BACKLOG_COUNT      notifications of `backlog` (default 100000); BENCH_BACKLOG_DEVICES (10)
#   BENCH_THREADS            load-generator threads (default: one per core)
#   BENCH_EXTRA              extra flags for every `beepmyphone bench` call
#   BENCH_NO_BUILD=1         skip `cargo build --release`
#   BENCH_RELAY_BIN          the relay binary to start (default: the release build, which is
#                            always the load generator), to measure an older build with today's
#                            generator
#
# The relay runs from its data directory (so no config.toml applies) with the built-in defaults
# and these settings (BEEP__… environment): log level warning, request bodies up to 1 MiB (a batch
# of 500 notifications is above the default 64 KiB), the per-IP socket limits lifted (every
# bench socket comes from 127.0.0.x), and the per-socket inbound frame rate lifted (a bench device
# acks every frame, and 100 devices at 10,000 notifications/s ack 100 frames/s each, above the
# default 50/s, which would close them with 4008).
# `backlog` restarts the relay between publishing and connecting (`--restart-cmd`).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN="$ROOT/target/release/beepmyphone"
RELAY_BIN=${BENCH_RELAY_BIN:-$BIN}

PORT=${BENCH_PORT:-18080} # below the ephemeral range, which the generator's sockets use
SERVER="http://127.0.0.1:$PORT"

# The relay, started and stopped by this script (and by its --restart-relay mode, for backlog).
start_relay() {
    if curl -sS -o /dev/null "$SERVER/health/live" 2>/dev/null; then
        echo "bench.sh: something already listens on port $PORT; set BENCH_PORT" >&2
        return 1
    fi
    (
        # From the data directory, so no ./config.toml is read: defaults plus the BEEP__ settings.
        cd "$BENCH_DATA"
        ulimit -n "$(ulimit -Hn)"
        exec env BEEP__LOG__LEVEL=warning \
            BEEP__LOG__FORMAT=json \
            BEEP__SERVER__MAX_BODY_BYTES=1048576 \
            BEEP__LIMITS__MAX_SOCKETS_PER_IP=0 \
            BEEP__LIMITS__WS_CONNECTS_PER_MINUTE=10000000 \
            BEEP__LIMITS__WS_FRAMES_PER_SECOND=1000000 \
            BEEP__LIMITS__WS_FRAME_BURST=1000000 \
            "$RELAY_BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$BENCH_DATA" \
            >>"$BENCH_DATA/relay.log" 2>&1
    ) &
    echo $! >"$BENCH_DATA/relay.pid"
    for _ in $(seq 1 200); do
        if ! kill -0 "$(cat "$BENCH_DATA/relay.pid")" 2>/dev/null; then
            echo "bench.sh: the relay exited; its log:" >&2
            cat "$BENCH_DATA/relay.log" >&2
            return 1
        fi
        if curl -fsS "$SERVER/health/ready" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    echo "bench.sh: the relay did not become ready" >&2
    return 1
}

stop_relay() {
    local pid
    pid=$(cat "$BENCH_DATA/relay.pid" 2>/dev/null || true)
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

if [ "${1:-}" = "--restart-relay" ]; then
    # Called by `beepmyphone bench backlog --restart-cmd`, with BENCH_DATA exported.
    stop_relay
    start_relay
    exit 0
fi

SCENARIOS=${BENCH_SCENARIOS:-"connections throughput throughput-batch latency latency-paced"}
RESULTS=${BENCH_RESULTS:-"$ROOT/target/bench-results/$(date +%Y%m%d-%H%M%S)"}
DURATION=${BENCH_DURATION:-10}
DRAIN=${BENCH_DRAIN:-10}
CONNECTIONS=${BENCH_CONNECTIONS:-1000}
THROUGHPUT_DEVICES=${BENCH_THROUGHPUT_DEVICES:-100}
PUBLISHERS=${BENCH_PUBLISHERS:-4}
CONCURRENCY=${BENCH_CONCURRENCY:-16}
BATCH=${BENCH_BATCH:-100}
LATENCY_DEVICES=${BENCH_LATENCY_DEVICES:-1000}
RATE=${BENCH_RATE:-5000}
PACED_PUBLISHERS=${BENCH_PACED_PUBLISHERS:-16}
CONNECT_RATE=${BENCH_CONNECT_RATE:-2000}
BURST_DEVICES=${BENCH_BURST_DEVICES:-10}
BURST=${BENCH_BURST:-100}
BACKLOG_COUNT=${BENCH_BACKLOG_COUNT:-100000}
BACKLOG_DEVICES=${BENCH_BACKLOG_DEVICES:-10}
read -r -a EXTRA <<<"${BENCH_EXTRA:-}"
if [ -n "${BENCH_THREADS:-}" ]; then
    EXTRA+=(--threads "$BENCH_THREADS")
fi

if [ -z "${BENCH_NO_BUILD:-}" ]; then
    cargo build --release
fi
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
BENCH_DATA=$(mktemp -d "${TMPDIR:-/tmp}/beepmyphone-bench.XXXXXX")
export BENCH_DATA BENCH_PORT="$PORT"
trap 'stop_relay; cp "$BENCH_DATA/relay.log" "$RESULTS/relay.log" 2>/dev/null || true; rm -rf "$BENCH_DATA"' EXIT

ulimit -n "$(ulimit -Hn)"
start_relay
TOKEN=$(tr -d '[:space:]' <"$BENCH_DATA/initial-admin-token")
export BEEP_SERVER="$SERVER" BEEP_TOKEN="$TOKEN"

{
    echo "beepmyphone bench, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(uname -srm), $(nproc) cores"
    echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (modified)')"
    echo "scenarios: $SCENARIOS; duration ${DURATION}s"
    echo
} >"$RESULTS/summary.txt"

status=0
run() {
    local name=$1
    shift
    local cmd=("$BIN" bench "$@" --pid "$(cat "$BENCH_DATA/relay.pid")" --drain-seconds "$DRAIN"
        --json "$RESULTS/$name.json" "${EXTRA[@]}")
    echo "== $name: beepmyphone bench $*" | tee -a "$RESULTS/summary.txt"
    if ! "${cmd[@]}" | tee "$RESULTS/$name.txt"; then
        echo "bench.sh: $name FAILED" | tee -a "$RESULTS/summary.txt"
        status=1
    fi
    cat "$RESULTS/$name.txt" >>"$RESULTS/summary.txt"
    echo >>"$RESULTS/summary.txt"
}

for scenario in $SCENARIOS; do
    case $scenario in
    connections)
        run connections connections --devices "$CONNECTIONS" --duration "$DURATION" ;;
    throughput)
        run throughput throughput --devices "$THROUGHPUT_DEVICES" --duration "$DURATION" \
            --publishers "$PUBLISHERS" --concurrency "$CONCURRENCY" ;;
    throughput-batch)
        run throughput-batch throughput --devices "$THROUGHPUT_DEVICES" --duration "$DURATION" \
            --publishers "$PUBLISHERS" --concurrency "$CONCURRENCY" --batch "$BATCH" ;;
    connections-paced)
        run connections-paced connections --devices "$CONNECTIONS" --duration "$DURATION" \
            --connect-rate "$CONNECT_RATE" ;;
    latency)
        run latency latency --devices "$LATENCY_DEVICES" --rate "$RATE" --duration "$DURATION" ;;
    latency-paced)
        # The shape of HTTP client libraries: each publisher one keep-alive connection, one request
        # at a time, sending at its scheduled time or as soon as its previous 202 came.
        run latency-paced latency --devices "$LATENCY_DEVICES" --rate "$RATE" \
            --duration "$DURATION" --publishers "$PACED_PUBLISHERS" --concurrency 1 ;;
    burst)
        run burst burst --devices "$BURST_DEVICES" --burst "$BURST" --duration "$DURATION" ;;
    backlog)
        run backlog backlog --devices "$BACKLOG_DEVICES" --count "$BACKLOG_COUNT" --batch 500 \
            --restart-cmd "$ROOT/scripts/bench.sh --restart-relay" ;;
    *)
        echo "bench.sh: unknown scenario $scenario" >&2
        status=2 ;;
    esac
done

if command -v jq >/dev/null; then
    {
        printf 'scenario\taccepted/s\tdelivered/s\tp50_ms\tp99_ms\tp99.9_ms\tlost\tdup\tframes/ntf\tconnect_p99_ms\tKiB/conn\n'
        for f in "$RESULTS"/*.json; do
            jq -r --arg name "$(basename "$f" .json)" '[$name,
                .throughput.accepted_per_second, .throughput.delivered_per_second,
                (.latency_us.p50/1000), (.latency_us.p99/1000), (.latency_us.p999/1000),
                .counts.lost, .counts.duplicates, .frames.frames_per_notification,
                (.connect_us.p99/1000), (.rss.kb_per_connection // "-")]
                | map(tostring) | join("\t")' "$f"
        done
    } | column -t -s $'\t' | tee -a "$RESULTS/summary.txt"
fi
echo "results in $RESULTS"
exit "$status"
