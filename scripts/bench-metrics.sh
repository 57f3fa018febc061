#!/usr/bin/env bash
# What metrics cost, measured against the release binary (docs/benchmarks.md, "Metrics"):
#
# 1. throughput with metrics on and off, in one run: two fresh relays (metrics.enabled true and
#    false), `bench throughput` against each in turn, ROUNDS times, interleaved so that the
#    machine's other load falls on both alike;
# 2. the scrape time with SOCKETS device sockets open: `bench connections` holds them on the
#    metrics-on relay while `curl` scrapes /metrics SCRAPES times (time_total of each).
#
#   scripts/bench-metrics.sh                    # ROUNDS=2 SOCKETS=19000 SCRAPES=50
#   ROUNDS=1 SOCKETS=2000 scripts/bench-metrics.sh
#
# Relays run as scripts/bench.sh starts them (log level warning, per-IP socket and frame limits
# lifted) on ports 18091 (metrics on) and 18092 (off). Needs curl and a built target/release.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
ROUNDS=${ROUNDS:-2}
SOCKETS=${SOCKETS:-19000}
SCRAPES=${SCRAPES:-50}
DURATION=${DURATION:-10}

# shellcheck source=scripts/bench-relays.sh
source "$ROOT/scripts/bench-relays.sh"
bench_prepare

start_relay on 18091 "$BIN" BEEP__METRICS__ENABLED=true
start_relay off 18092 "$BIN" BEEP__METRICS__ENABLED=false
token() { tr -d '\n' <"$WORK/$1/initial-admin-token"; }

echo "== throughput, metrics on vs off (${DURATION} s each, ${ROUNDS} rounds)"
for round in $(seq 1 "$ROUNDS"); do
    for name in on off; do
        port=$([[ $name == on ]] && echo 18091 || echo 18092)
        "$BIN" bench throughput --server "http://127.0.0.1:$port" --token "$(token "$name")" \
            --devices 100 --publishers 4 --concurrency 16 --duration "$DURATION" \
            --pid "$(cat "$WORK/$name.pid")" --json "$WORK/$name-$round.json" >/dev/null
        python3 - "$WORK/$name-$round.json" "$name" "$round" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
t, c = r["throughput"], r["counts"]
print(f"round {sys.argv[3]} metrics {sys.argv[2]:>3}: {t['delivered_per_second']:,.0f} delivered/s, "
      f"{t['accepted_per_second']:,.0f} accepted/s, ok={r['ok']}")
EOF
    done
done

echo "== scrape time with $SOCKETS sockets open (metrics on)"
"$BIN" bench connections --server http://127.0.0.1:18091 --token "$(token on)" \
    --devices "$SOCKETS" --duration 3600 --pid "$(cat "$WORK/on.pid")" >"$WORK/connections.log" 2>&1 &
echo $! >"$WORK/bench.pid"
for _ in $(seq 1 1200); do
    open=$(curl -fsS -H "Authorization: Bearer $(token on)" http://127.0.0.1:18091/metrics |
        awk '$1 == "beepmyphone_sockets_open" {print $2}')
    [[ ${open:-0} -ge $SOCKETS ]] && break
    sleep 0.5 # waiting for the load generator to connect them all
done
echo "sockets open: $open"
for _ in $(seq 1 "$SCRAPES"); do
    curl -fsS -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $(token on)" \
        http://127.0.0.1:18091/metrics
done | sort -n | awk '{t[NR] = $1 * 1000} END {
    printf "scrape ms over %d: min %.2f, p50 %.2f, p90 %.2f, max %.2f\n", NR, t[1], t[int(NR*0.5)+1], t[int(NR*0.9)], t[NR]
}'
curl -fsS -H "Authorization: Bearer $(token on)" http://127.0.0.1:18091/metrics | wc -c |
    awk '{print "scrape size: " $1 " bytes"}'
