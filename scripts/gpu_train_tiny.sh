#!/usr/bin/env bash
# Train convsynth-tiny on a lent GPU in one prepared device call (issue 11), then evaluate and ship it here.
#
#   bash scripts/gpu_train_tiny.sh pack [WORK]   # here: WORK's corpus arrays, xz-compressed, into .gpu-carry/
#                                                # (ignored by git; about 12 MB: the device call carries 64 MiB
#                                                # with the working tree, which is ~46 MB)
#   run(command="bash scripts/gpu_train_tiny.sh train", carry=[".gpu-carry"], timeout_s=580)
#                                                # there: step programs, training, a compact fp16 checkpoint in
#                                                # $OUT in 15 MiB parts at every save (8 files and
#                                                # 64 MiB come back at most): a run cut short
#                                                # still returns its last save
#   bash scripts/gpu_train_tiny.sh unpack FILES_AT WORK   # here: rejoin into WORK/ckpt, then
#   bash scripts/ship_tiny.sh NAME WORK          # export and score it as any other phase
#
# Settings of `train`, by environment (defaults in brackets): MINUTES [6] of training, SEED [1401] of the data
# and the run, PROGRAMS [200000] step programs, BATCH [256], LR, WARMUP, and the start:
#   WIDTH unset: continue the packaged model (12 layers of 160; LR [6e-4], WARMUP [50]);
#   WIDTH=256:   a new model from scratch, LAYERS [12] deep, HEADS [4] (LR [2e-3], WARMUP [300]).
# The device runs its own python3 (torch with CUDA, numpy, tokenizers, safetensors, tqdm are in its image) and
# installs nothing. `DEVICE=cpu` runs the same pipeline on the CPU (how it was tested: no GPU has been lent yet).
set -euo pipefail
cd "$(dirname "$0")/.."
verb="${1:?pack | train | unpack}"
ARRAYS="counts heldout heldout_templates train_code train_struct train_drill"

case "$verb" in
pack)
  work="${2:-.cache/tiny}"
  mkdir -p .gpu-carry
  for a in $ARRAYS; do xz -T0 -6 -c "$work/$a.npy" > ".gpu-carry/$a.npy.xz"; done
  cp "$work/data_stats.json" .gpu-carry/
  du -sh .gpu-carry
  ;;
train)
  PY="${PYTHON:-python3}"
  OUT="${OUT:-/tmp/gpu-train-out}"
  DEVICE="${DEVICE:-cuda}"
  work=/tmp/tiny-gpu
  mkdir -p "$work" "$OUT"
  deadline=$((SECONDS + ${BUDGET_S:-540}))  # keep under the call's timeout_s: training gets what is left
  exec > >(tee "$OUT/train.log") 2>&1
  tee_pid=$!
  trap 'exec >&- 2>&-; wait $tee_pid' EXIT  # the log's last lines (a traceback) must reach $OUT too
  export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true
  "$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
  "$PY" - "$work" $ARRAYS <<'EOF'
import lzma, shutil, sys  # Python's lzma: the device image need not have the xz program
for a in sys.argv[2:]:
    with lzma.open(f".gpu-carry/{a}.npy.xz") as src, open(f"{sys.argv[1]}/{a}.npy", "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
EOF
  cp .gpu-carry/data_stats.json "$work/"
  seed="${SEED:-1401}"
  "$PY" scripts/train_tiny.py steps --work "$work" --seed "$seed" --n-steps-programs "${PROGRAMS:-200000}"
  cp "$work/steps_stats.json" "$OUT/"
  # MINUTES, or less if the step programs took long: 60 s stay for the final evaluation and the last save
  minutes=$(awk -v left=$((deadline - SECONDS - 60)) -v m="${MINUTES:-6}" \
    'BEGIN { x = left / 60; if (x < 0.5) x = 0.5; if (x > m) x = m; print x }')
  echo "training for $minutes minutes"
  common=(--work "$work" --device "$DEVICE" --bf16 --batch "${BATCH:-256}" --minutes "$minutes"
          --seed "$seed" --steps-frac 0.6875 --drill-frac 0.125 --struct-frac 0 --eval-every 1000
          --save-minutes 1.5 --parts-out "$OUT" --threads "${THREADS:-8}")
  if [ -z "${WIDTH:-}" ]; then
    "$PY" scripts/train_tiny.py train "${common[@]}" --init-from convsynth/models/convsynth-tiny --layers 12 \
      --lr "${LR:-6e-4}" --warmup "${WARMUP:-50}" \
      --note "GPU phase: the packaged model, then $minutes minutes on a lent GPU, batch ${BATCH:-256}."
  else
    "$PY" scripts/train_tiny.py train "${common[@]}" --width "$WIDTH" --layers "${LAYERS:-12}" \
      --heads "${HEADS:-4}" --lr "${LR:-2e-3}" --warmup "${WARMUP:-300}" \
      --note "From scratch at width $WIDTH on a lent GPU, $minutes minutes, batch ${BATCH:-256}."
  fi
  # every save wrote the compact checkpoint (active rows only) in fp16 parts into $OUT (--parts-out)
  total=$(cat "$OUT"/last-fp16.pt.part* | wc -c)
  [ "$total" -lt 62000000 ] || echo "the checkpoint is $total bytes: over what a device call brings back" >&2
  ls -la "$OUT"
  ;;
unpack)
  from="${2:?FILES_AT: where the files of the device call came back}"
  work="${3:?WORK: a work folder for this phase}"
  mkdir -p "$work/ckpt"
  cat "$from"/last-fp16.pt.part* > "$work/ckpt/last-fp16.pt"  # part00, part01, ... in order
  cp "$from/vocab.json" "$work/ckpt/vocab.json"
  cp "$from/steps_stats.json" "$work/steps_stats.json"
  "${PYTHON:-.venv/bin/python}" - "$work" <<'EOF'
import sys, torch
from pathlib import Path
ckpt = Path(sys.argv[1]) / "ckpt"
ck = torch.load(ckpt / "last-fp16.pt", weights_only=False)
ck["model"] = {k: v.float() for k, v in ck["model"].items()}  # export copies into fp32 matrices
torch.save(ck, ckpt / "last.pt")
print(f"{ckpt}/last.pt: step {ck['step']}, {len(ck['model'])} tensors")
EOF
  # the corpus files that export and eval_tiny read (held-out text, counts): CORPUS, the folder that was packed
  for a in $ARRAYS data_stats file_list; do
    for ext in npy json; do
      src="${CORPUS:-.cache/tiny}/$a.$ext"
      [ -e "$work/$a.$ext" ] || [ ! -e "$src" ] || ln -s "$(realpath "$src")" "$work/$a.$ext"
    done
  done
  ;;
*)
  echo "usage: $0 pack [WORK] | train | unpack FILES_AT WORK" >&2; exit 2 ;;
esac
