#!/usr/bin/env bash
# The full ML-1M recipe on a lent CUDA machine (issue 8, part 7): all train rows, both stages, several epochs,
# the shipped codes (so the adapter can replace model_store/models/ml1m/adapter), selection on valid_small,
# then export and the report on the whole of valid. Runs there as device call 2 of scripts/gpu_carry.py
# (which carries the SmolLM2 GGUF in two parts, the splits and the missing wheels); $OUT comes back.
#   bash scripts/gpu_recipe.sh
# Knobs (environment): BINLLM_RECIPE_EPOCHS (2 per stage), BINLLM_RECIPE_TUNE_S (tuning time box, 420 s: the
# best adapter validated so far is used when it runs out), BINLLM_RECIPE_DEVICE (cuda), BINLLM_RECIPE_BASE (a
# base model dir instead of the carried SmolLM2), BINLLM_RECIPE_DATA (the splits), BINLLM_RECIPE_MAX_TRAIN
# (a seeded subsample; default every row), BINLLM_RECIPE_BATCH (64 prompts), OUT (results: ./gpu_out).
set -euo pipefail
CARRY=${BINLLM_CARRY:-.gpu_carry}
OUT=${OUT:-gpu_out}
RUN=${BINLLM_RECIPE_RUN:-/tmp/binllm-recipe}
DATA=${BINLLM_RECIPE_DATA:-$CARRY/b/data}
DEVICE=${BINLLM_RECIPE_DEVICE:-cuda}
PY=${PYTHON:-python3}
CODES=model_store/models/ml1m/codes
mkdir -p "$OUT" "$RUN"
export PYTHONUNBUFFERED=1 BINLLM_CACHE_DIR=${BINLLM_CACHE_DIR:-/tmp/binllm-cache}
if [ -d "$CARRY/b/wheels" ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$CARRY"/b/wheels/*.whl
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
BINLLM=("$PY" -c 'from model_store.cli import main; main()')  # the `binllm` entry point, nothing installed
step() { echo "[recipe $(date -u +%T)] $*" | tee -a "$OUT/recipe.log"; }

step "device $DEVICE: $("$PY" -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "torch", torch.__version__)')"
BASE=${BINLLM_RECIPE_BASE:-}
if [ -z "$BASE" ]; then
    "$PY" scripts/gpu_carry.py join --carry "$CARRY"
    BASE=$("$PY" -c 'from model_store.llm.models import ensure_smollm2; print(ensure_smollm2())')
fi
step "base $BASE"
set +e
timeout "${BINLLM_RECIPE_TUNE_S:-420}" "${BINLLM[@]}" llm tune \
    --train "$DATA/train_ood2.jsonl.gz" --valid "$DATA/valid_small_ood2.jsonl.gz" --base "$BASE" \
    --codes "$CODES" --out "$RUN/llm" --stages 1,2 --epochs "${BINLLM_RECIPE_EPOCHS:-2}" --device "$DEVICE" \
    ${BINLLM_RECIPE_MAX_TRAIN:+--max-train-samples "$BINLLM_RECIPE_MAX_TRAIN"} \
    --max-valid-samples 600 --eval-every 100 --patience 4 --batch-size "${BINLLM_RECIPE_BATCH:-64}" \
    --lr 1e-3 --lora-r 16 --lora-alpha 32 --lora-top-layers 10 \
    --target-modules q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj \
    --layout serving --code-mode hex --unknown-codes learned --unknown-item-share 0.35 --no-progress \
    > "$OUT/tune.log" 2>&1
TUNED=$?
set -e
tail -n 5 "$OUT/tune.log"
ADAPTER=$RUN/llm/adapter
if [ "$TUNED" -ne 0 ]; then  # time box ran out (124) or tuning failed: keep the best adapter validated so far
    ADAPTER=$RUN/llm/stage2/best
    [ -f "$ADAPTER/binllm_adapter.json" ] || { step "tune exited $TUNED with no stage-2 adapter"; exit 1; }
    step "tune exited $TUNED: using $ADAPTER"
fi
cp "$RUN/llm/metrics.json" "$OUT/tune_metrics.json" 2>/dev/null || true
"${BINLLM[@]}" llm export --adapter "$ADAPTER" --out "$RUN/merged" > /dev/null
step "eval on the whole of valid"
"${BINLLM[@]}" llm eval --model "$RUN/merged" --codes "$CODES" --split "$DATA/valid_ood2.jsonl.gz" --device "$DEVICE" \
    --batch-size 128 --no-progress --report "$RUN/report" | tee "$OUT/eval_valid.json"
tar -czf "$OUT/adapter_and_report.tar.gz" -C "$RUN" report -C "$(dirname "$ADAPTER")" "$(basename "$ADAPTER")"
step "done: $OUT"
