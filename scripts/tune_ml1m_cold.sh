#!/usr/bin/env bash
# Stage 2 continued from the P(Yes) ML-1M adapter (model_store/models/ml1m/adapter-pyes) with the learned
# unknown codes: the papers' train split has no cold item, so a seeded 35% of rows (about valid's cold share,
# 36.5%) show the codebook's unknown item code, and the model learns to rank rows whose item the encoder never
# saw. Same LoRA shape as that adapter (scripts/tune_ml1m.sh), a fresh seeded subsample of train rows,
# selection on valid_small.
# Usage: scripts/tune_ml1m_cold.sh OUT_DIR [extra `binllm llm tune` options, e.g. --resume]
set -euo pipefail
OUT=${1:?usage: scripts/tune_ml1m_cold.sh OUT_DIR [options]}
shift
D=${BINLLM_DATA:-../shared/data/ml-1m-collm}
M=model_store/models/ml1m
binllm llm tune --train "$D/train_ood2.jsonl.gz" --valid "$D/valid_small_ood2.jsonl.gz" \
    --codes "$M/codes" --init-adapter "$M/adapter-pyes" --out "$OUT" --stages 2 \
    --max-train-samples 2400 --max-valid-samples 600 --eval-every 50 --patience 3 --seed 1 \
    --lr 5e-4 --batch-size 16 --lora-r 16 --lora-alpha 32 --lora-top-layers 10 \
    --target-modules q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj \
    --layout serving --code-mode hex --unknown-codes learned --unknown-item-share 0.35 --no-progress "$@"
