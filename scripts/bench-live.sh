#!/usr/bin/env bash
# What the live event stream costs, measured against the release binary (docs/benchmarks.md,
# "The live event stream"): two fresh relays, one with nobody watching and one with a dashboard's
# stream open (`GET /api/v1/events`, read by curl as a browser would), `bench throughput` against
# each in turn, ROUNDS times, interleaved so that the machine's other load falls on both alike.
# Every notification makes three events on the watched relay (published, delivered, acked).
#
#   scripts/bench-live.sh                 # ROUNDS=3 DURATION=10
#
# Relays run as scripts/bench.sh starts them, on ports 18095 (unwatched) and 18096 (watched).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}

# shellcheck source=scripts/bench-relays.sh
source "$ROOT/scripts/bench-relays.sh"
bench_prepare

start_relay quiet 18095 "$BIN"
start_relay watched 18096 "$BIN"
token() { tr -d '\n' <"$WORK/$1/initial-admin-token"; }
port() { if [[ $1 == watched ]]; then echo 18096; else echo 18095; fi; }

# The watcher: the stream's lines, counted at the end.
curl -sN -H "Authorization: Bearer $(token watched)" http://127.0.0.1:18096/api/v1/events \
    >"$WORK/events.txt" &
echo $! >"$WORK/curl.pid"

echo "== throughput, unwatched vs watched (${DURATION} s each, ${ROUNDS} rounds, 100 devices)"
for round in $(seq 1 "$ROUNDS"); do
    for name in quiet watched; do
        "$BIN" bench throughput --server "http://127.0.0.1:$(port $name)" --token "$(token $name)" \
            --devices 100 --publishers 4 --concurrency 16 --duration "$DURATION" \
            --pid "$(cat "$WORK/$name.pid")" --json "$WORK/$name-$round.json" >/dev/null 2>>"$WORK/bench.log"
        python3 - "$WORK/$name-$round.json" "$name" "$round" <<'PY'
import json, sys
path, name, round_ = sys.argv[1:4]
r = json.load(open(path))
t = r["throughput"]
p99 = r["latency_us"].get("p99")
print(f"round {round_} {name:>7}: {t['delivered_per_second']:,.0f} delivered/s, "
      f"{t['accepted_per_second']:,.0f} accepted/s"
      + (f", publish→receive p99 {p99/1000:.1f} ms" if p99 else "") + f", ok={r['ok']}")
PY
    done
done
echo "events read by the watcher: $(grep -c '^event: ' "$WORK/events.txt" || true)" \
    "(lagged: $(grep -c '^event: lagged' "$WORK/events.txt" || true))"
