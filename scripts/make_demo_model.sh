#!/usr/bin/env bash
# Rebuild the shipped model models/demo-unet/ (one command, reproducible: same seed, data and CPU -> same weights):
#
#   bash scripts/make_demo_model.sh            # writes models/demo-unet (refuses if it exists; pass --force)
#
# 1. generate the default demo experiment (python -m core demo: 10 steps of 40x256x256, seed 0) in a temp folder;
# 2. random-forest ground truth of the demo scribbles on the label step (python -m core rf, default settings);
# 3. train a small U-Net (width 16, depth 4, ~1.9 MB float32, 2.5D: each slice with its two neighbours, --context 1)
#    on those ground-truth slices, seed 0, on the CPU.
# Takes about 2-3 minutes on a 2-core CPU. The bundle's card records the settings, seed and provenance.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-models/demo-unet}
if [ -e "$OUT" ]; then
  if [ "${1:-}" = "--force" ]; then rm -rf "$OUT"; else echo "$OUT exists; pass --force to rebuild it." >&2; exit 1; fi
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$PY" -m core -q demo "$TMP/demo" --seed 0
STEP=$("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["steps"][d["label_step"]]["scan"])' "$TMP/demo/dataset.json")
"$PY" -m core -q rf --scan "$TMP/demo/$STEP" --scribbles "$TMP/demo/scribbles.tif" --out "$TMP/rf" --seed 0
"$PY" -m core -q train --scan "$TMP/demo/$STEP" --ground-truth "$TMP/rf/ground_truth.tif" --out "$OUT" \
  --device cpu --seed 0 --width 16 --depth 4 --patch 64 --stride-ratio 0.5 --batch 16 --epochs 40 --patience 8 \
  --val-fraction 0.25 --loss ce+dice --optimizer adam --lr 0.002 --context 1
# record the recipe in the card (the CLI stores only the temp paths): generator config, step, command
"$PY" - "$TMP/demo/dataset.json" "$OUT/card.json" <<'PYEOF'
import json, sys
from core.atomic import atomic_write_json
d = json.load(open(sys.argv[1]))
card = json.load(open(sys.argv[2]))
card["provenance"].update({
    "recipe": "bash scripts/make_demo_model.sh",
    "data": "default demo experiment (python -m core demo --seed 0)",
    "demo_config": d["config"],
    "label_step": d["label_step"], "step_name": d["steps"][d["label_step"]]["name"],
    "ground_truth_kind": "random forest of the demo scribbles (python -m core rf --seed 0, default settings)",
})
atomic_write_json(sys.argv[2], card)
PYEOF
"$PY" -m core models
du -sh "$OUT"
