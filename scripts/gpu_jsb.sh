#!/usr/bin/env bash
# Second GPU session (issue: model/training): the JSB recipe that won the first session
# (scripts/gpu_session.sh: train with +-6 transposition, then fine-tune without it, since JSB's
# pieces are all in C) run from its best augmented config, three variants side by side; chosen on
# valid, test evaluated once, fp16 export.
#   DATA=... OUT=... [DEVICE=cuda] [AUG_MIN=2.4] [FT_MIN=0.6] bash scripts/gpu_jsb.sh
set -u
DEVICE=${DEVICE:-cuda}; AUG_MIN=${AUG_MIN:-2.4}; FT_MIN=${FT_MIN:-0.6}; PY=${PY:-python3}
DATA=${DATA:?}; OUT=${OUT:?}; RUNS=${RUNS:-/tmp/gpu_jsb}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$RUNS"
mr() { "$PY" -m musicrnn "$@"; }
jsb="$DATA/JSB_Chorales"
variant() {  # name, dropout, lr
  mr train "$jsb" -o "$RUNS/$1-aug" --hidden 512 --embedding 256 --dropout "$2" --augment-transpose 6 --batch-size 32 \
    --seq-len 128 --lr "$3" --eval-every 50 --device "$DEVICE" --threads 1 --seed 1 --time-limit "$AUG_MIN" > "$RUNS/$1-aug.log" 2>&1
  mr train "$jsb" -o "$RUNS/$1" --init-from "$RUNS/$1-aug/best.pt" --dropout "$2" --batch-size 32 --seq-len 128 \
    --lr 3e-4 --warmup-steps 10 --eval-every 20 --device "$DEVICE" --threads 1 --seed 2 --time-limit "$FT_MIN" > "$RUNS/$1.log" 2>&1
  mr eval "$RUNS/$1/best.pt" "$jsb" --split valid --json --device "$DEVICE" > "$RUNS/$1.valid.json"
}
variant jsb-f 0.3 2e-3 & variant jsb-g 0.3 3e-3 & variant jsb-h 0.35 2e-3 &
wait
for f in "$RUNS"/*.log; do echo "$(basename "$f"): $(tail -c 300 "$f" | tr '\r' '\n' | grep -v '^\s*$' | tail -1)"; done
"$PY" - "$RUNS" "$jsb" "$OUT" "$DEVICE" <<'PYEOF'
import json, pathlib, subprocess, sys
runs, data, out, device = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3]), sys.argv[4]
scores = {}
for name in ("jsb-f", "jsb-g", "jsb-h"):
    try:
        scores[name] = json.loads((runs / f"{name}.valid.json").read_text())
        print(f"{name}: valid NLL/frame {scores[name]['nll_per_frame']:.4f}")
    except Exception as exc:
        print(f"{name}: no valid result ({exc})")
name = min(scores, key=lambda n: scores[n]["nll_per_frame"])
t = subprocess.run([sys.executable, "-m", "musicrnn", "eval", str(runs / name / "best.pt"), data, "--split", "test",
                    "--json", "--device", device], capture_output=True, text=True)
print(f"chosen {name}: test {t.stdout.strip() or t.stderr[-300:]}")
subprocess.run([sys.executable, "-m", "musicrnn", "export", str(runs / name / "best.pt"), str(out / f"{name}.pt")])
PYEOF
tar czf "$OUT/jsb-runs.tar.gz" -C "$RUNS" --exclude='*.pt' .
