#!/usr/bin/env bash
# The README's fairness figures: one local-backend service (the demo model and snapshot, `make demo`) started
# twice, small-job calls off (BINLLM_LOCAL__SMALL_JOB_PROMPTS=0) then on (4, the default), each measured with
# scripts/loadtest_fairness.sh (LARGE=64, LARGE_USERS=2, SMALL_USERS=1). The deadline is raised to 120 s so
# every answer is the LLM's, not the code-only fallback. Knobs: PORT [8011], DURATION [150s], OUT [loadtest-results].
#
#   scripts/fairness_small_jobs.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PORT:-8011}"
OUT="${OUT:-loadtest-results}"
mkdir -p "$OUT"
for setting in 0 4; do
    BINLLM_LOCAL__SMALL_JOB_PROMPTS=$setting BINLLM_DEADLINE_S=120 BINLLM_SERVER__PORT=$PORT \
        .venv/bin/python -m app.server > "$OUT/server_small_job_prompts_$setting.log" 2>&1 &
    pid=$!
    trap 'kill $pid 2>/dev/null || true' EXIT
    for _ in $(seq 1 180); do curl -sf "http://127.0.0.1:$PORT/readyz" > /dev/null && break; sleep 1; done
    echo "BINLLM_LOCAL__SMALL_JOB_PROMPTS=$setting; $(uptime)"
    LOADTEST_SNAPSHOT_DIR=artifacts/demo/snapshot LARGE=64 LARGE_USERS=2 SMALL_USERS=1 \
        DURATION="${DURATION:-150s}" OUT_DIR="$OUT/small_job_prompts_$setting" \
        scripts/loadtest_fairness.sh "http://127.0.0.1:$PORT"
    kill "$pid"
    wait "$pid" || true
done
