"""Command-line flags that choose the model, shared by the ``convsynth`` verbs (cli.py), the MTPB harness
(mtpb.py) and the server (serve.py): one definition, the same names, defaults and help everywhere."""
from __future__ import annotations

FAST_CHOICES = ["auto", "cuda_graphs", "compile", "onednn", "eager"]


def check_output(flag: str, path: str | None) -> None:
    """A file a verb writes at its end (``--out``, ``--save``...), refused before the work when it cannot be."""
    from pathlib import Path
    from .errors import UsageError
    if path and not Path(path).resolve().parent.is_dir():
        raise UsageError(f"{flag} {path}: the folder {Path(path).resolve().parent} does not exist; create it first.")
    if path and Path(path).is_dir():
        raise UsageError(f"{flag} {path} is a directory; give a file path.")


def model_flags(p, *, fast: bool = True) -> None:
    """``--model``, ``--device``, ``--dtype`` and (unless ``fast=False``) ``--fast``."""
    p.add_argument("--model", default=None, help="checkpoint directory or hub id (default: the packaged model)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    if fast:
        p.add_argument("--fast", default="auto", choices=FAST_CHOICES,
                       help="decode step: auto = CUDA graphs on a GPU, oneDNN-packed weights on a CPU (when they "
                            "fit)")


def engine_flags(p) -> None:
    """``--quantize``, ``--speculate`` and ``--draft``: how the loaded model runs (cli.py's verbs and serve.py)."""
    p.add_argument("--quantize", default=None, choices=["int8"], help="int8 weights (made at load time)")
    p.add_argument("--speculate", default="auto", choices=["auto", "on", "off"],
                   help="speculative decoding: auto = greedy decoding, paused while it does not pay")
    p.add_argument("--draft", default=None,
                   help="draft model for speculation ('packaged' or a checkpoint; default: prompt lookup)")


def load_model(args):
    """The model ``model_flags`` and ``engine_flags`` ask for (weights, decode path, speculation and its draft)."""
    import convsynth
    fast = getattr(args, "fast", "auto")
    draft = None
    if args.draft:
        draft = convsynth.load(None if args.draft == "packaged" else args.draft, device=args.device,
                               dtype=args.dtype, fast=fast)
    return convsynth.load(args.model, device=args.device, dtype=args.dtype, fast=fast, quantize=args.quantize,
                          speculate=args.speculate, draft=draft)
