#!/usr/bin/env bash
# What encryption at rest costs end to end (docs/benchmarks.md, "Encryption at rest"): the relay
# before encryption (BASE, by default the last commit without it) and the current one, side by
# side in one run: `bench throughput` and `bench latency` against each in turn, ROUNDS times,
# interleaved so that the machine's other load falls on both alike.
#
#   scripts/bench-encryption.sh                 # ROUNDS=3 DURATION=10 RATE=2000
#   BASE=<commit> ROUNDS=1 scripts/bench-encryption.sh
#
# BASE is built in a temporary worktree into target/bench-base (a release build, minutes the first
# time); the current relay is target/release (build it first). Relays run as scripts/bench.sh
# starts them (log level warning, per-IP socket and frame limits lifted) on ports 18093 (before)
# and 18094 (after). Needs curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BASE=${BASE:-d01d16b}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
RATE=${RATE:-2000}
AFTER="$ROOT/target/release/beepmyphone"
BEFORE="$ROOT/target/bench-base/release/beepmyphone"
WORK=$(mktemp -d)
trap 'kill $(cat "$WORK"/*.pid 2>/dev/null) 2>/dev/null || true; git -C "$ROOT" worktree remove --force "$WORK/base" 2>/dev/null || true; rm -rf "$WORK"' EXIT
[[ -x $AFTER ]] || { echo "build it first: cargo build --release" >&2; exit 1; }
if [[ ! -x $BEFORE || $(cat "$ROOT/target/bench-base/commit" 2>/dev/null) != "$BASE" ]]; then
    git -C "$ROOT" worktree add --detach "$WORK/base" "$BASE" >/dev/null
    (cd "$WORK/base" && cargo build --release --locked --target-dir "$ROOT/target/bench-base" >&2)
    echo "$BASE" >"$ROOT/target/bench-base/commit"
fi
ulimit -n "$(ulimit -Hn)"

# shellcheck source=scripts/bench-relays.sh
source "$ROOT/scripts/bench-relays.sh"

start_relay before 18093 "$BEFORE"
start_relay after 18094 "$AFTER"
token() { tr -d '\n' <"$WORK/$1/initial-admin-token"; }
port() { [[ $1 == before ]] && echo 18093 || echo 18094; }

echo "== throughput and latency, before ($BASE) vs after ($(git rev-parse --short HEAD)), ${DURATION} s each, ${ROUNDS} rounds"
for round in $(seq 1 "$ROUNDS"); do
    for name in before after; do
        "$AFTER" bench throughput --server "http://127.0.0.1:$(port $name)" --token "$(token $name)" \
            --devices 100 --publishers 4 --concurrency 16 --duration "$DURATION" \
            --pid "$(cat "$WORK/$name.pid")" --json "$WORK/t-$name-$round.json" >/dev/null
        "$AFTER" bench latency --server "http://127.0.0.1:$(port $name)" --token "$(token $name)" \
            --devices 100 --rate "$RATE" --duration "$DURATION" \
            --pid "$(cat "$WORK/$name.pid")" --json "$WORK/l-$name-$round.json" >/dev/null
    done
done
python3 - "$WORK" "$ROUNDS" <<'PY'
import json, sys, statistics
work, rounds = sys.argv[1], int(sys.argv[2])
def load(kind, name, r):
    return json.load(open(f"{work}/{kind}-{name}-{r}.json"))
rows = {}
for name in ("before", "after"):
    t = [load("t", name, r) for r in range(1, rounds + 1)]
    l = [load("l", name, r) for r in range(1, rounds + 1)]
    rows[name] = {
        "delivered/s": [x["throughput"]["delivered_per_second"] for x in t],
        "accepted/s": [x["throughput"]["accepted_per_second"] for x in t],
        "latency p50 ms": [x["latency_us"]["p50"] / 1000 for x in l],
        "latency p99 ms": [x["latency_us"]["p99"] / 1000 for x in l],
        "ok": all(x["ok"] for x in t + l),
    }
for name, row in rows.items():
    print(f"{name:>6}: " + ", ".join(
        f"{k} {' / '.join(f'{v:,.1f}' for v in vs)}" for k, vs in row.items() if k != "ok")
        + f", ok={row['ok']}")
for key in ("delivered/s", "accepted/s", "latency p50 ms", "latency p99 ms"):
    b, a = statistics.mean(rows["before"][key]), statistics.mean(rows["after"][key])
    print(f"{key:>15}: before {b:,.1f}, after {a:,.1f}, after/before {a / b:.3f}")
PY
