#!/usr/bin/env bash
# CoLLM on ML-1M: the codes directory's CF embeddings (the BinMF encoder's values before the sign) as one soft
# token per side, through a projector trained on seeded whole (user, history) groups of train_ood2.
# Starts from the P(Yes) adapter in model_store/models/ml1m/adapter-pyes (LoRA r16 on all projections of the
# top 10 layers, tuned on text and codes);
# by default the LoRA stays frozen and only the projector learns (CoLLM's stage 2); pass
# --train-lora-with-projector to train both. No trunk cache: the projector feeds layer 0, so every layer runs.
# Safe to rerun: it always resumes (checkpoints in OUT_DIR).
# Usage: scripts/tune_ml1m_collm.sh OUT_DIR [extra `binllm llm tune` options]
set -euo pipefail
OUT=${1:?usage: scripts/tune_ml1m_collm.sh OUT_DIR [options]}
shift
D=${BINLLM_DATA:-../shared/data/ml-1m-collm}
M=model_store/models/ml1m
BINLLM=${BINLLM:-binllm}
"$BINLLM" llm tune --train "$D/train_ood2.jsonl.gz" --valid "$D/valid_small_ood2.jsonl.gz" \
    --codes "$M/codes" --init-adapter "$M/adapter-pyes" --out "$OUT" --stages 2 --encoding embeddings \
    --max-train-samples 4000 --max-valid-samples 600 --epochs 1 --eval-every 50 --patience 4 --seed 3 \
    --lr 1e-3 --batch-size 16 --lora-r 16 --lora-alpha 32 --lora-top-layers 10 \
    --target-modules q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj \
    --layout serving --code-mode hex --unknown-codes learned --unknown-item-share 0.35 \
    --log-every 10 --no-progress --resume "$@"
