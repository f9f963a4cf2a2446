#!/usr/bin/env python
"""The int8 kernels PyTorch ships for a CPU, on the 350M model's matrix shapes, at decode (1 and 5 tokens: one step
and a speculative verification) and prefill (512 tokens): fp32 (F.linear), fp32 oneDNN-packed (onednn.py), int8
through the quantized engine with per-token activations (quant.py's fbgemm kernel) and weight-only int8
(torch._weight_int8pack_mm). quant.py uses the fastest int8 kernel of this table on a CPU.

    python benchmarks/int8_kernels.py [--threads N] [--repeats 20]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from convsynth.quant import Int8Linear  # noqa: E402

SHAPES = [("qkv", 1024, 3072), ("out", 1024, 1024), ("fc_in", 1024, 4096), ("fc_out", 4096, 1024),
          ("lm_head", 1024, 51200)]


def ms(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


@torch.inference_mode()
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, quantized engine "
          f"{torch.backends.quantized.engine}\n")
    print("| matrix | tokens | fp32 ms | fp32 oneDNN ms | int8 fbgemm ms | int8 weight-only ms |")
    print("|---|---|---|---|---|---|")
    for name, k, n in SHAPES:
        lin = torch.nn.Linear(k, n)
        packed = torch.ops.mkldnn._reorder_linear_weight(lin.weight, 1)
        q = Int8Linear.from_linear(lin)
        for t in (1, 5, 512):
            if name == "lm_head" and t == 512:
                continue
            x = torch.randn(t, k)
            row = [ms(lambda: F.linear(x, lin.weight, lin.bias), args.repeats),
                   ms(lambda: torch.ops.mkldnn._linear_pointwise(x, packed, lin.bias, "none", [None], ""),
                      args.repeats)]
            for kernel in ("fbgemm", "weight_only"):
                q.prepare(kernel)
                row.append(ms(lambda: q(x), max(2, args.repeats // (10 if kernel == "weight_only" else 1))))
            print(f"| {name} {k}x{n} | {t} | " + " | ".join(f"{v:.3f}" for v in row) + " |")


if __name__ == "__main__":
    main()
