#!/usr/bin/env bash
# The residual (code-skip) objective over EVERY ML-1M train row, 2 epochs: the LLM learns what the codes miss.
# Starts from the P(Yes) adapter in model_store/models/ml1m/adapter-pyes (LoRA r16 on all projections of the
# top 10 layers) and trains the LoRA of the top 2 layers only, with the fusion head (w_llm, w_code, b per
# warm/cold row) trained jointly; the 8 layers below keep their weights and run once, in the cached trunk, kept
# on disk beside the run so that a restart resumes without recomputing it. Safe to rerun: it always resumes
# (checkpoints and trunk in OUT_DIR). The train rows read out-of-fold codes (`binllm codes oof`, made once in
# OUT_DIR): codes fitted on a row rank it far better than a new row, and a residual over them learns nothing.
# bf16 autocast where the CPU multiplies bf16 natively (AMX / AVX512-BF16), fp32 elsewhere.
# Usage: scripts/tune_ml1m_residual.sh OUT_DIR [extra `binllm llm tune` options]
set -euo pipefail
OUT=${1:?usage: scripts/tune_ml1m_residual.sh OUT_DIR [options]}
shift
D=${BINLLM_DATA:-../shared/data/ml-1m-collm}
M=model_store/models/ml1m
BINLLM=${BINLLM:-binllm}
[ -f "$OUT/oof-codes/folds.json" ] || "$BINLLM" codes oof --codes "$M/codes" --train "$D/train_ood2.jsonl.gz" \
    --valid "$D/valid_small_ood2.jsonl.gz" --out "$OUT/oof-codes"   # train rows read codes that never saw them
"$BINLLM" llm tune --oof-codes "$OUT/oof-codes" --train "$D/train_ood2.jsonl.gz" --valid "$D/valid_small_ood2.jsonl.gz" \
    --codes "$M/codes" --init-adapter "$M/adapter-pyes" --out "$OUT" --stages 2 \
    --objective residual --epochs 2 --max-valid-samples 1500 --eval-every 300 --patience 4 --seed 2 \
    --lr 1e-3 --batch-size 16 --lora-r 16 --lora-alpha 32 --lora-top-layers 10 --train-top-layers 2 \
    --target-modules q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj \
    --layout serving --code-mode hex --unknown-codes learned --unknown-item-share 0.35 \
    --trunk-cache-dir "$OUT/trunk" --log-every 25 --no-progress --resume "$@"
