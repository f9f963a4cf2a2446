#!/usr/bin/env bash
# Evaluate a trained convsynth-tiny phase and, with --ship, make it the packaged model and refresh what shows it.
#   bash scripts/ship_tiny.sh NAME [WORK]          # export WORK's last checkpoint, score it on the step suite
#   bash scripts/ship_tiny.sh NAME [WORK] --ship   # then: copy that export into the package, rerun MTPB and
#                                                  # eval_tiny, re-execute the notebooks, retake the screenshot
# PRIVATE_TASKS=FILE also scores a held-aside task file (kept outside the repository). The two suites run in
# parallel, one core each (about 4 minutes); shipping takes about 15 minutes more on 2 cores. The model card
# and README figures are written by hand from what this prints and from the files it writes.
set -euo pipefail
cd "$(dirname "$0")/.."
name="$1"; work="${2:-.cache/tiny}"; ship="${3:-}"
PY="${PYTHON:-.venv/bin/python}"
export_dir="$work/$name-export"
result="evals/results/convsynth-tiny-$name.json"

if [ "$ship" != "--ship" ]; then
"$PY" scripts/train_tiny.py export --work "$work" --out "$export_dir"
OMP_NUM_THREADS=1 "$PY" scripts/eval_steps.py --model "$export_dir" --out "$result" --quiet &
if [ -n "${PRIVATE_TASKS:-}" ]; then
  OMP_NUM_THREADS=1 "$PY" scripts/eval_steps.py --model "$export_dir" --tasks "$PRIVATE_TASKS" \
    --out "$work/$name-private.json" --quiet &
fi
wait
"$PY" - "$result" "$work/$name-private.json" <<'EOF'
import json, sys
from pathlib import Path
for path in sys.argv[1:]:
    if Path(path).exists():
        r = json.loads(Path(path).read_text())
        cats = ", ".join(f"{c} {v['passed']}/{v['total']}" for c, v in r["per_category"].items())
        print(f"{path}: {r['overall']['passed']}/{r['overall']['total']} ({100 * r['overall']['rate']:.1f} %); {cats}")
EOF
exit 0
fi

pkg=convsynth/models/convsynth-tiny
cp "$export_dir"/{model.safetensors,config.json,tokenizer.json,train_info.json} "$pkg"/
mtpb=benchmarks/results/mtpb-convsynth-tiny-greedy
rm -f "$mtpb.jsonl" /tmp/mtpb-a.jsonl /tmp/mtpb-b.jsonl
OMP_NUM_THREADS=1 "$PY" -m convsynth mtpb --problems 1-57 --out /tmp/mtpb-a.jsonl >/dev/null &
OMP_NUM_THREADS=1 "$PY" -m convsynth mtpb --problems 58-115 --out /tmp/mtpb-b.jsonl >/dev/null &
wait
cat /tmp/mtpb-a.jsonl /tmp/mtpb-b.jsonl > "$mtpb.jsonl"
"$PY" -m convsynth mtpb --out "$mtpb.jsonl" --report "$mtpb.json" | tail -3
"$PY" scripts/eval_tiny.py --work "$work" | head -40
"$PY" -m jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.store_widget_state=False \
  notebooks/0*.ipynb
CONVSYNTH_UPDATE_SCREENSHOT=1 "$PY" -m pytest -q tests/test_browser.py -k jupyterlab
"$PY" -m convsynth demo
