#!/usr/bin/env bash
# The GPU checks as one prepared run, for a session that is lent a GPU through the device tool:
#     run(command="bash benchmarks/gpu_check.sh", timeout_s=560)
# It uses the machine's own python3 (PyTorch with CUDA, transformers, tokenizers, safetensors, pytest are in its
# image) and installs nothing. Everything lands in $OUT (at most 8 files come back): gpu-check.log, then the
# benchmark reports (.md/.json/.png) for 350M fp16 and 2B fp16 (--quick). Copy them to benchmarks/results/.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu-check.log") 2>&1
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__, '|', torch.cuda.get_device_name())"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
echo "== GPU correctness: the CUDA-graph step against eager (fp16, bf16), logits against transformers"
timeout 180 python3 -m pytest -q -p no:cacheprovider -x tests/test_fast.py tests/test_model.py
echo "== benchmark: codegen-350M config, fp16, CUDA graphs"
timeout 150 python3 benchmarks/run.py --config 350M --device cuda --dtype float16 --out "$OUT"
echo "== benchmark: codegen-2B config, fp16, --quick"
timeout 180 python3 benchmarks/run.py --config 2B --device cuda --dtype float16 --quick --out "$OUT"
echo "== done"
