"""How fast can one decode step's weights stream through a matrix-vector product on this CPU?

A batch-1 decode step of the codegen-350M configuration multiplies one activation row by every weight matrix once
(per layer: qkv 3072x1024, out 1024x1024, fc_in 4096x1024, fc_out 1024x4096; then lm_head 51200x1024). This script
times exactly those products, without a model around them, through PyTorch's default path (``F.linear``, MKL on
x86) and through oneDNN on weights packed once (what ``convsynth.load(fast="onednn")`` uses), and compares the bytes
per second with the bandwidth of a plain ``sum`` over 1 GiB (the figure benchmarks/run.py uses for its floor). It
tells how much of the floor any decode built on these kernels can reach here.

    python benchmarks/gemv_ceiling.py [--threads N]
"""
from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F


def best_of(fn, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    big = torch.ones(1 << 28)  # 1 GiB of fp32
    bw = big.numel() * 4 / best_of(big.sum)
    del big
    g = torch.Generator().manual_seed(0)
    shapes = [(3072, 1024), (1024, 1024), (4096, 1024), (1024, 4096)] * 20 + [(51200, 1024)]
    ws = [torch.randn(s, generator=g) for s in shapes]
    xs = {k: torch.randn(1, k, generator=g) for k in (1024, 4096)}
    nbytes = sum(w.numel() * 4 for w in ws)
    floor = nbytes / bw

    def plain():
        for w in ws:
            F.linear(xs[w.shape[1]], w)
    rows = [("F.linear (PyTorch default, MKL)", best_of(plain))]
    try:
        packed = [(torch.ops.mkldnn._reorder_linear_weight(w, 1), w.shape[1]) for w in ws]

        def onednn():
            for w, k in packed:
                torch.ops.mkldnn._linear_pointwise(xs[k], w, None, "none", [None], "")
        rows.append(("oneDNN, packed weights", best_of(onednn)))
    except Exception as err:  # noqa: BLE001 -- a build without oneDNN: report the default path alone
        print(f"oneDNN path unavailable: {type(err).__name__}: {err}")
    print(f"threads {args.threads}; sum bandwidth {bw / 1e9:.1f} GB/s; weights {nbytes / 1e6:.0f} MB; "
          f"floor {floor * 1e3:.1f} ms per step")
    print("| kernel | ms per step | GB/s | share of the floor |\n|---|---|---|---|")
    for name, t in rows:
        print(f"| {name} | {t * 1e3:.1f} | {nbytes / t / 1e9:.1f} | {floor / t:.0%} |")


if __name__ == "__main__":
    main()
