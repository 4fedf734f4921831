#!/usr/bin/env bash
# Purpose: train an LSTM on the JSB Chorales piano rolls, evaluate it (NLL per frame), compose with it.
#
#   bash examples/train_jsb.sh                        # the full run: 2x512 LSTM, 50 epochs (GPU if present)
#   MAX_STEPS=3 HIDDEN=16 LAYERS=1 bash examples/train_jsb.sh   # a smoke test in seconds
#
# Settings (environment variables): JSB (the .mat file), WORK (where data/ and runs/ go),
# EPOCHS, MAX_STEPS, HIDDEN, LAYERS, EMBEDDING, BATCH, SEQ_LEN, DROPOUT, THREADS.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
JSB="${JSB:-$HERE/../tests/fixtures/pianoroll/JSB_Chorales.mat}"
WORK="${WORK:-.}"
EPOCHS="${EPOCHS:-50}"
HIDDEN="${HIDDEN:-512}"
LAYERS="${LAYERS:-2}"
EMBEDDING="${EMBEDDING:-256}"
BATCH="${BATCH:-32}"
SEQ_LEN="${SEQ_LEN:-128}"
DROPOUT="${DROPOUT:-0.4}"

if [ ! -f "$JSB" ]; then
  echo "error: $JSB not found; set JSB=/path/to/JSB_Chorales.mat (see datasets/README.md)" >&2
  exit 1
fi
extra=()
[ -n "${MAX_STEPS:-}" ] && extra+=(--max-steps "$MAX_STEPS")
[ -n "${THREADS:-}" ] && extra+=(--threads "$THREADS")

# 1. piano rolls -> grid-codec tokens, keeping the published train/valid/test split
musicrnn data prepare "$JSB" -o "$WORK/data/jsb" --codec grid
# 2. train (Ctrl-C saves last.pt; add --resume to continue)
musicrnn train "$WORK/data/jsb" -o "$WORK/runs/jsb" --epochs "$EPOCHS" --hidden "$HIDDEN" --layers "$LAYERS" \
  --embedding "$EMBEDDING" --batch-size "$BATCH" --seq-len "$SEQ_LEN" --dropout "$DROPOUT" ${extra[@]+"${extra[@]}"}
# 3. NLL per frame on the test split, comparable with the published tables (docs/benchmarks.md)
musicrnn eval "$WORK/runs/jsb/best.pt" "$WORK/data/jsb" --split test
# 4. two new chorales
musicrnn compose --model "$WORK/runs/jsb/best.pt" -n 2 --bars 8 --seed 1 -o "$WORK/out/jsb"
