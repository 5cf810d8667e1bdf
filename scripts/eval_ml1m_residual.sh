#!/usr/bin/env bash
# The whole-valid table of the model card for the residual run: export the adapter that
# scripts/tune_ml1m_residual.sh left in RUN_DIR, then score all 10,401 valid rows with it and with a baseline
# adapter (default: model_store/models/ml1m/adapter-pyes, the P(Yes) adapter the run started from), each with
# the codes alone on the same rows and the paired bootstrap interval of served minus codes; --report adds the
# ROC and calibration plots, and each report's scores.csv gives the paired interval of residual minus baseline
# (`binllm llm compare`). Prints the markdown table and that interval last.
# BASELINE may also be the eval directory of an earlier run of this script (its baseline.json and
# baseline-report/ are reused, saving the baseline's ~20 min).
# Usage: scripts/eval_ml1m_residual.sh RUN_DIR [BASELINE_ADAPTER | EARLIER_RUN_DIR/eval]
set -euo pipefail
RUN=${1:?usage: scripts/eval_ml1m_residual.sh RUN_DIR [BASELINE_ADAPTER | EARLIER_RUN_DIR/eval]}
BASELINE=${2:-model_store/models/ml1m/adapter-pyes}
D=${BINLLM_DATA:-../shared/data/ml-1m-collm}
M=model_store/models/ml1m
BINLLM=${BINLLM:-binllm}
OUT="$RUN/eval"
mkdir -p "$OUT"
score() {  # NAME ADAPTER: export it, then eval on the whole valid split, timed
    local name=$1 adapter=$2
    [ -s "$OUT/$name.json" ] && return 0   # done before: a rerun only scores what is missing
    "$BINLLM" llm export --adapter "$adapter" --out "$RUN/$name-merged" --no-progress > /dev/null
    /usr/bin/time -f "$name eval wall %e s" "$BINLLM" llm eval --model "$RUN/$name-merged" --codes "$M/codes" \
        --split "$D/valid_ood2.jsonl.gz" --no-progress --report "$OUT/$name-report" > "$OUT/$name.part"
    mv "$OUT/$name.part" "$OUT/$name.json"
}
if [ -f "$BASELINE/baseline.json" ] && [ ! -s "$OUT/baseline.json" ]; then   # scored before: reuse it
    cp "$BASELINE/baseline.json" "$OUT/baseline.json"
    rm -rf "$OUT/baseline-report" && cp -r "$BASELINE/baseline-report" "$OUT/baseline-report"
fi
score residual "$RUN/adapter"
score baseline "$BASELINE"
python3 scripts/eval_table.py --whole "$OUT/baseline.json" "$OUT/residual.json"
if [ -f "$OUT/baseline-report/scores.csv" ]; then   # reports from before scores.csv existed have none
    "$BINLLM" llm compare "$OUT/baseline-report" "$OUT/residual-report"
fi
