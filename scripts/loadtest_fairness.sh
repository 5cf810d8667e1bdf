#!/usr/bin/env bash
# Fairness under mixed load: p99 of 1-candidate requests while large requests run, from two locust runs side
# by side against one running service (tests/load/locustfile.py); prints both summaries.
#
#   LOADTEST_SNAPSHOT_DIR=artifacts/demo/snapshot scripts/loadtest_fairness.sh http://127.0.0.1:8000
#
# Knobs: LARGE [64] candidates per large request, LARGE_USERS [2] clients sending them back to back,
# SMALL_USERS [1] clients sending 1-candidate requests, DURATION [60s], OUT_DIR [loadtest-results/fairness-<UTC>].
set -euo pipefail
cd "$(dirname "$0")/.."

HOST="${1:-http://127.0.0.1:8000}"
LARGE="${LARGE:-64}"
LARGE_USERS="${LARGE_USERS:-2}"
SMALL_USERS="${SMALL_USERS:-1}"
DURATION="${DURATION:-60s}"
OUT_DIR="${OUT_DIR:-loadtest-results/fairness-$(date -u +%Y%m%dT%H%M%SZ)}"
LOCUST="${LOCUST:-.venv/bin/locust}"
mkdir -p "$OUT_DIR"
export LOADTEST_COLD_SHARE=0 LOADTEST_UNKNOWN_SHARE=0 LOADTEST_UNKNOWN_USER_SHARE=0 LOADTEST_MAX_WAIT_S=0
export LOADTEST_TIMEOUT_S="${LOADTEST_TIMEOUT_S:-60}"

run() {  # name candidates users
    LOADTEST_CANDIDATES="$2" LOADTEST_SUMMARY_CSV="$OUT_DIR/$1.csv" "$LOCUST" -f tests/load/locustfile.py \
        --headless --host "$HOST" --users "$3" --spawn-rate "$3" --run-time "$DURATION" --stop-timeout 60 \
        --csv "$OUT_DIR/$1" --only-summary --loglevel WARNING
}

status=0
run large "$LARGE" "$LARGE_USERS" > "$OUT_DIR/large.log" 2>&1 &
large_pid=$!
sleep 2  # the large requests are queued first
run small 1 "$SMALL_USERS" > "$OUT_DIR/small.log" 2>&1 || status=$?
wait "$large_pid" || status=$?
for name in large small; do
    echo "fairness: $name requests ($OUT_DIR/$name.csv)"
    column -s, -t < "$OUT_DIR/$name.csv" 2>/dev/null || cat "$OUT_DIR/$name.csv"
done
exit "$status"
