#!/usr/bin/env bash
# The whole-valid figures of a CoLLM run (scripts/tune_ml1m_collm.sh): export RUN_DIR/adapter with its
# projector and the codes directory's embeddings as vocabulary tokens, then score all 10,401 valid rows as
# /predict serves them (the codes alone on the same rows, the paired bootstrap interval of served minus codes,
# --report's ROC and calibration plots). A rerun only scores what is missing. Prints the eval line last.
# Usage: scripts/eval_ml1m_collm.sh RUN_DIR
# Then: python3 scripts/eval_table.py --runs "BinLLM=A.json" "CoLLM=RUN_DIR/eval/collm.json" ...
set -euo pipefail
RUN=${1:?usage: scripts/eval_ml1m_collm.sh RUN_DIR}
D=${BINLLM_DATA:-../shared/data/ml-1m-collm}
M=model_store/models/ml1m
BINLLM=${BINLLM:-binllm}
OUT="$RUN/eval"
mkdir -p "$OUT"
if [ ! -s "$OUT/collm.json" ]; then
    [ -f "$RUN/merged/binllm.json" ] || "$BINLLM" llm export --adapter "$RUN/adapter" --codes "$M/codes" \
        --out "$RUN/merged" --no-progress > /dev/null
    /usr/bin/time -f "collm eval wall %e s" "$BINLLM" llm eval --model "$RUN/merged" --codes "$M/codes" \
        --split "$D/valid_ood2.jsonl.gz" --no-progress --report "$OUT/collm-report" > "$OUT/collm.part"
    mv "$OUT/collm.part" "$OUT/collm.json"
fi
tail -n 1 "$OUT/collm.json"
