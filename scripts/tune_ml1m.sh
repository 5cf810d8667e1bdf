#!/usr/bin/env bash
# The CPU recipe of the shipped ML-1M adapter (model_store/llm/adapters/ml1m/README.md): codes, then both stages.
# Usage: scripts/tune_ml1m.sh OUT_DIR [extra `binllm llm tune` options, e.g. --resume]
set -euo pipefail
OUT=${1:?usage: scripts/tune_ml1m.sh OUT_DIR [options]}
shift
D=${BINLLM_DATA:-../shared/data/ml-1m-collm}
binllm codes train --train "$D/train_ood2.jsonl.gz" --valid "$D/valid_small_ood2.jsonl.gz" --out "$OUT/codes"
binllm llm tune --train "$D/train_ood2.jsonl.gz" --valid "$D/valid_small_ood2.jsonl.gz" \
    --codes "$OUT/codes" --out "$OUT/llm" --stages 1,2 \
    --max-train-samples 4000 --max-valid-samples 600 --eval-every 125 --patience 3 \
    --lr 1e-3 --batch-size 16 --lora-r 16 --lora-alpha 32 --lora-top-layers 10 \
    --target-modules q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj \
    --layout serving --code-mode hex --no-progress "$@"
