#!/usr/bin/env bash
# Purpose: compose four new pieces from the command line, with piano-roll pictures, into out/compose.
#
#   bash examples/compose.sh                                  # the bundled model
#   bash examples/compose.sh --model runs/jsb/best.pt --key A:minor --bars 16
#
# Extra arguments go to `musicrnn compose` (later ones win). OUT picks the folder; a rerun
# replaces the pieces of the last run there (--overwrite).
set -euo pipefail
OUT="${OUT:-out/compose}"
musicrnn compose -n 4 --bars 8 --seed 1 --temperature 0.9 --png --overwrite -o "$OUT" "$@"
echo "MIDI files and PNGs in $OUT"
