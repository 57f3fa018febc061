# Shared by the scripts of scripts/chaos/ (sourced, not run): builds the test binary, then runs
# one ignored chaos test of tests/api/chaos/ with its output shown.
#
#   chaos_run TEST_NAME   # e.g. chaos::kill::kill_9_every_few_seconds_under_load_loses_nothing_202d
#
# Environment (all optional, for every scenario):
#   CHAOS_TIMEOUT   seconds the test may run once built, a safety net over the test's own bounds
#                   (default 1800)
#   CHAOS_NO_BUILD  set to skip the separate build step (scripts/chaos/all builds once)
#   CARGO           the cargo to run (default: cargo)
# Each scenario's own CHAOS_… variables are read by the test itself; see its script.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
CARGO=${CARGO:-cargo}

chaos_run() {
    local test=$1
    if [ -z "${CHAOS_NO_BUILD:-}" ]; then
        "$CARGO" test --test api --no-run
    fi
    # The relay child inherits the limit: the reconnect storm holds 1,000+ sockets on each side.
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    echo "== $test" >&2
    timeout --kill-after=30 "${CHAOS_TIMEOUT:-1800}" \
        "$CARGO" test --test api "$test" -- --ignored --exact --nocapture
}
