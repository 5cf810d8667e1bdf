#!/usr/bin/env bash
# The figures of model_store/models/ml1m/MODEL_CARD.md and the README: every model on the same seeded
# subsample of ML-1M valid (whole (user, history) groups), warm/cold by the split's not_cold column.
# Usage: scripts/eval_ml1m.sh RUN_DIR N_VALID N_FIT   (RUN_DIR as left by scripts/tune_ml1m.sh)
set -euo pipefail
RUN=${1:?usage: scripts/eval_ml1m.sh RUN_DIR N_VALID N_FIT}
N=${2:?}
NFIT=${3:?}
D=${BINLLM_DATA:-../shared/data/ml-1m-collm}
V="$D/valid_ood2.jsonl.gz"
OUT="$RUN/eval"
mkdir -p "$OUT"
run() { local name=$1; shift; /usr/bin/time -f "$name wall %e s" "$@" > "$OUT/$name.json"; cat "$OUT/$name.json"; }
run codes_full binllm codes eval --codes "$RUN/codes" --split "$V" --report "$OUT/codes_full_report"
binllm llm export --adapter "$RUN/llm/adapter" --out "$RUN/merged" > /dev/null
binllm llm blend --model "$RUN/merged" --codes "$RUN/codes" --adapter "$RUN/llm/adapter" \
    --split "$D/valid_small_ood2.jsonl.gz" --max-samples "$NFIT" --no-progress > "$OUT/blend_fit.json"
binllm llm export --adapter "$RUN/llm/adapter" --out "$RUN/merged" > /dev/null   # now with the blend
run binllm_blend binllm llm eval --model "$RUN/merged" --codes "$RUN/codes" --split "$V" --max-samples "$N" \
    --no-progress --report "$OUT/binllm_report"
run text_only binllm llm eval --model "$(binllm llm fetch-smollm2)" --adapter "$RUN/llm/stage1/best" \
    --layout serving --code-mode hex \
    --split "$V" --max-samples "$N" --no-progress --report "$OUT/text_only_report"
binllm llm export --out "$RUN/untuned" --with-codes --layout serving --code-mode hex > /dev/null
run untuned binllm llm eval --model "$RUN/untuned" --codes "$RUN/codes" --split "$V" --max-samples "$N" \
    --no-progress
