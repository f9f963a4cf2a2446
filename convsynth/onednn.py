"""CPU decode on oneDNN-packed weights (``convsynth.load(..., fast="onednn")``).

At batch 1 a decode step is one matrix-vector product per weight matrix, so its speed is the speed at which the
weights stream from memory. PyTorch's default CPU path (``addmm`` through MKL) streams a (1, K) x (K, N) product at
well under the machine's bandwidth on small machines; oneDNN's inner-product kernel on a weight reordered once into
its blocked layout streams it markedly faster (on the 2-core EPYC where convsynth was built: 49 ms against 69 ms for
the 350M model's matrices, 1.27x end to end; see benchmarks/).

The packed copy lives beside each ``nn.Linear``'s own weight, which stays as it is (state dicts, conversion and the
reference comparisons keep working), so the weights take twice the memory. Packing is for inference: no gradients
flow through the packed copy, and a weight changed after packing is not seen until ``pack`` runs again.
Imported only when asked for.
"""
from __future__ import annotations

import types
import warnings

import torch
import torch.nn as nn


def unavailable(model) -> str:
    """Why the packed path cannot run for ``model`` ('' when it can)."""
    if model.device.type != "cpu":
        return f"oneDNN packing is a CPU path (the model is on {model.device})"
    if not torch.backends.mkldnn.is_available():
        return "this PyTorch build has no oneDNN (mkldnn)"
    if model.dtype not in (torch.float32, torch.bfloat16):
        return f"oneDNN packing supports float32 and bfloat16 (the model is {str(model.dtype).replace('torch.', '')})"
    return ""


def _packed_forward(self, x: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [None], "")


def pack(model) -> str:
    """Pack every ``nn.Linear`` of ``model`` for oneDNN and route its forward through the packed copy. Returns
    the decode path that now runs: 'onednn', or 'eager (asked for onednn: <why not>)' after a warning."""
    why = unavailable(model)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not why:
        try:
            with torch.no_grad():
                packed = [torch.ops.mkldnn._reorder_linear_weight(m.weight.detach(), 1) for m in linears]
        except RuntimeError as err:  # e.g. bfloat16 on a CPU without the instructions oneDNN needs for it
            why = f"oneDNN could not pack the weights ({(str(err).splitlines() or [''])[0][:200]})"
    if why:
        warnings.warn(f"convsynth fast decode: {why}; decoding runs on the eager path.", RuntimeWarning,
                      stacklevel=3)
        return f"eager (asked for onednn: {why})"
    for m, w in zip(linears, packed):
        m.packed_weight = w
        m.forward = types.MethodType(_packed_forward, m)
    return "onednn"


def unpack(model) -> None:
    """Back to the plain ``nn.Linear`` forward (and free the packed copies)."""
    for m in model.modules():
        if isinstance(m, nn.Linear) and "packed_weight" in m.__dict__:
            del m.packed_weight
            m.__dict__.pop("forward", None)
