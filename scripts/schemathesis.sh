#!/usr/bin/env bash
# Fuzzes the HTTP API with schemathesis against a live relay: every operation of the OpenAPI
# document (docs/openapi.json, the same one the relay serves at /api/v1/openapi.json) gets
# schema-valid and schema-invalid requests with an admin token; the run fails on any 5xx, any
# response that breaks the document (status, content type, body schema, headers), any accepted
# invalid input, any refused valid input, and any operation that ignores authentication.
#
#   scripts/schemathesis.sh                  # debug build, 40 examples per operation
#   ST_MAX_EXAMPLES=200 scripts/schemathesis.sh
#
# Environment: ST_MAX_EXAMPLES (default 40), ST_PORT (default 38181), ST_SEED (default 1: the
# same cases every run), BEEP_BIN (default target/debug/beepmyphone, built if missing),
# ST_REPORT (directory for the JUnit report, default target/schemathesis).
#
# The relay runs with the built-in defaults plus BEEP__ settings that let a fuzzer through: rate
# limits lifted (a fuzzer's hundreds of failed logins from one address would block it, which is
# the relay doing its job), bcrypt at its minimum cost of 10 (each login still hashes).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${BEEP_BIN:-$ROOT/target/debug/beepmyphone}
PORT=${ST_PORT:-38181}
REPORT=${ST_REPORT:-$ROOT/target/schemathesis}

# Pinned, so the seeded run generates the same cases on every machine.
ST_VERSION=4.32.5
if ! st --version 2>/dev/null | grep -q "$ST_VERSION"; then
  python3 -m pip install --quiet --disable-pip-version-check "schemathesis==$ST_VERSION"
fi
command -v st >/dev/null 2>&1 || { echo "schemathesis (st) is not on PATH" >&2; exit 1; }
[ -x "$BIN" ] || cargo build --bin beepmyphone

# The committed document must be what the code generates (the test suite checks it too).
"$BIN" openapi | diff -q - docs/openapi.json >/dev/null || {
  echo "docs/openapi.json is stale: run \`$BIN openapi > docs/openapi.json\`" >&2
  exit 1
}

DATA=$(mktemp -d)
LOG="$DATA/relay.log"
cleanup() {
  [ -n "${RELAY:-}" ] && kill "$RELAY" 2>/dev/null && wait "$RELAY" 2>/dev/null || true
  rm -rf "$DATA"
}
trap cleanup EXIT

(
  cd "$DATA"
  exec env BEEP__LOG__LEVEL=warning BEEP__LOG__FORMAT=json \
    BEEP__AUTH__BCRYPT_COST=10 \
    BEEP__LIMITS__ENABLED=false \
    "$BIN" serve --data-dir "$DATA" --listen "127.0.0.1:$PORT"
) >"$LOG" 2>&1 &
RELAY=$!

for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/health/live" >/dev/null 2>&1 && break
  kill -0 "$RELAY" 2>/dev/null || { cat "$LOG" >&2; echo "the relay did not start" >&2; exit 1; }
  sleep 0.1
done
TOKEN=$(cat "$DATA/initial-admin-token")

mkdir -p "$REPORT"
status=0
st --config-file .ci/schemathesis.toml run docs/openapi.json \
  --url "http://127.0.0.1:$PORT" \
  --header "Authorization: Bearer $TOKEN" \
  --exclude-path /api/v1/events \
  --checks all \
  --max-examples "${ST_MAX_EXAMPLES:-40}" \
  --seed "${ST_SEED:-1}" \
  --generation-database none \
  --workers 2 \
  --request-timeout 10 \
  --no-color \
  --report junit --report-junit-path "$REPORT/junit.xml" || status=$?

# The session-only operations (GET/DELETE /auth/sessions, logout) again, as a logged-in admin:
# a dashboard session cookie and its CSRF token instead of the API token.
"$BIN" admin add --data-dir "$DATA" --password-stdin fuzz-admin <<<"fuzz-admin-password" >/dev/null
LOGIN=$(curl -fsS -c "$DATA/cookies" -H 'Content-Type: application/json' \
  -d '{"username":"fuzz-admin","password":"fuzz-admin-password"}' \
  "http://127.0.0.1:$PORT/api/v1/auth/login")
CSRF=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["csrfToken"])' <<<"$LOGIN")
SESSION=$(awk '$6 == "beep_session" {print $7}' "$DATA/cookies")
[ -n "$SESSION" ] || { echo "no session cookie from the login" >&2; exit 1; }
st --config-file .ci/schemathesis.toml run docs/openapi.json \
  --url "http://127.0.0.1:$PORT" \
  --include-tag auth \
  --header "Cookie: beep_session=$SESSION" \
  --header "X-CSRF-Token: $CSRF" \
  --exclude-path /api/v1/events \
  --checks all \
  --max-examples "${ST_MAX_EXAMPLES:-40}" \
  --seed "${ST_SEED:-1}" \
  --generation-database none \
  --workers 1 \
  --request-timeout 10 \
  --no-color \
  --report junit --report-junit-path "$REPORT/junit-session.xml" || status=$?

# A panic or error in the relay's log fails the run even if every response looked right.
if grep -E '"level":"(ERRO|CRIT)"|panicked' "$LOG" >/dev/null; then
  echo "the relay logged errors during the run:" >&2
  grep -E '"level":"(ERRO|CRIT)"|panicked' "$LOG" | head -20 >&2
  status=1
fi
kill -0 "$RELAY" 2>/dev/null || { echo "the relay died during the run" >&2; status=1; }
exit $status
