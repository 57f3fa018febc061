#!/usr/bin/env bash
# What TLS costs, measured against the release binary (docs/benchmarks.md, "TLS"):
#
# 1. throughput over plain HTTP and over TLS in one run: two fresh relays (tls.mode off and
#    local-ca), `bench throughput` against each in turn, ROUNDS times, interleaved so that the
#    machine's other load falls on both alike; the TLS run pins the relay's CA as a device does;
# 2. connection set-up (TCP connect, TLS handshake, upgrade and token check, to `hello`):
#    `bench connections` with SOCKETS devices against each, paced by the bench's connect
#    concurrency.
#
#   scripts/bench-tls.sh                        # ROUNDS=3 DURATION=10 SOCKETS=2000
#   ROUNDS=1 DURATION=5 scripts/bench-tls.sh
#
# Relays run as scripts/bench.sh starts them (log level warning, per-IP socket and frame limits
# lifted) on ports 18093 (plain) and 18094 (TLS). Needs curl, openssl and a built target/release.
# The handshake alone (no HTTP, no relay): `cargo bench --bench tls`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
SOCKETS=${SOCKETS:-2000}

# shellcheck source=scripts/bench-relays.sh
source "$ROOT/scripts/bench-relays.sh"
bench_prepare

start_relay plain 18093 "$BIN" BEEP__TLS__MODE=off
start_relay tls 18094 "$BIN" BEEP__TLS__MODE=local-ca
token() { tr -d '\n' <"$WORK/$1/initial-admin-token"; }
PIN=$(openssl x509 -in "$WORK/tls/keys/tls/ca.crt" -noout -fingerprint -sha256 | sed 's/.*=//')
url() { if [[ $1 == tls ]]; then echo https://127.0.0.1:18094; else echo http://127.0.0.1:18093; fi; }
trust() { if [[ $1 == tls ]]; then echo --ca-fingerprint "$PIN"; fi; }

report() {
    python3 - "$@" <<'PY'
import json, sys
path, name, what = sys.argv[1:4]
r = json.load(open(path))
if what == "throughput":
    t = r["throughput"]
    p99 = r["latency_us"].get("p99")
    print(f"{name:>5}: {t['delivered_per_second']:,.0f} delivered/s, "
          f"{t['accepted_per_second']:,.0f} accepted/s"
          + (f", publish→receive p99 {p99/1000:.1f} ms" if p99 else "") + f", ok={r['ok']}")
else:
    c, p = r["connections"], r["connect_us"]
    print(f"{name:>5}: {c['established']} connected in {c['setup_seconds']:.2f} s "
          f"({c['per_second']:,.0f}/s), connect p50 {p['p50']/1000:.1f} ms, "
          f"p99 {p['p99']/1000:.1f} ms, max {p['max']/1000:.1f} ms, ok={r['ok']}")
PY
}

echo "== throughput, plain HTTP vs TLS (${DURATION} s each, ${ROUNDS} rounds, 100 devices)"
for round in $(seq 1 "$ROUNDS"); do
    for name in plain tls; do
        # shellcheck disable=SC2046 # trust is empty or two words
        "$BIN" bench throughput --server "$(url $name)" $(trust $name) --token "$(token $name)" \
            --devices 100 --publishers 4 --concurrency 16 --duration "$DURATION" \
            --pid "$(cat "$WORK/$name.pid")" --json "$WORK/$name-$round.json" >/dev/null
        echo -n "round $round "
        report "$WORK/$name-$round.json" "$name" throughput
    done
done

echo "== connection set-up, $SOCKETS sockets each"
for name in plain tls; do
    # shellcheck disable=SC2046
    "$BIN" bench connections --server "$(url $name)" $(trust $name) --token "$(token $name)" \
        --devices "$SOCKETS" --duration 2 --pid "$(cat "$WORK/$name.pid")" \
        --json "$WORK/$name-connections.json" >/dev/null
    report "$WORK/$name-connections.json" "$name" connections
done
