"""Command-line flags that choose the model, shared by the ``convsynth`` verbs (cli.py), the MTPB harness
(mtpb.py) and the server (serve.py): one definition, the same names, defaults and help everywhere."""
from __future__ import annotations

FAST_CHOICES = ["auto", "cuda_graphs", "compile", "onednn", "eager"]


def model_flags(p, *, fast: bool = True) -> None:
    """``--model``, ``--device``, ``--dtype`` and (unless ``fast=False``) ``--fast``."""
    p.add_argument("--model", default=None, help="checkpoint directory or hub id (default: the packaged model)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    if fast:
        p.add_argument("--fast", default="auto", choices=FAST_CHOICES,
                       help="decode step: auto = CUDA graphs on a GPU, oneDNN-packed weights on a CPU (when they "
                            "fit)")
