"""Shared fixtures: random-weight CodeGen checkpoints written by transformers (the reference), in every format."""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # our machines cannot reach the hub; never wait on it
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]

# ---- The tests read nothing outside the repository (a fresh clone must test what CI tests). An audit hook sees
# every open() in this process; reads under the repository's parent folder but outside the repository (a sibling
# such as ../shared) are recorded, and the test that made them fails (`no_reads_outside_the_repository`). The
# Python environment and the temporary folder are allowed even when they sit beside the repository.
# Subprocesses are not seen here: tests/test_self_contained.py also greps the sources.
_ALLOWED = [Path(p).resolve() for p in {sys.prefix, sys.base_prefix, sys.exec_prefix, tempfile.gettempdir()}]
OUTSIDE_READS: list[str] = []


def outside_repository(path) -> bool:
    """True for a path under the repository's parent folder, outside the repository and the allowed places."""
    try:
        p = Path(os.fsdecode(path))
        p = Path(os.path.abspath(p))
    except (TypeError, ValueError):
        return False  # a file descriptor, not a path
    def under(base: Path) -> bool:
        return p == base or base in p.parents
    return under(ROOT.parent) and not under(ROOT) and not any(under(a) for a in _ALLOWED)


def _audit(event: str, args: tuple) -> None:
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)) and outside_repository(args[0]):
        OUTSIDE_READS.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # cannot be removed; it only records


@pytest.fixture(autouse=True)
def no_reads_outside_the_repository():
    seen = len(OUTSIDE_READS)
    yield
    if len(OUTSIDE_READS) > seen:
        pytest.fail(f"this test opened files outside the repository: {sorted(set(OUTSIDE_READS[seen:]))[:5]}; "
                    "copy what it needs into the repository", pytrace=False)

SHAPES = {
    # rotary_dim < head_dim (16), 4 heads, the real vocabulary: text prompts work
    "tiny": dict(n_embd=64, n_layer=2, n_head=4, rotary_dim=8, vocab_size=51200),
    # head size 80 as in codegen-2B, 8 heads; a small vocabulary keeps it light (ids-only checks)
    "head80": dict(n_embd=640, n_layer=2, n_head=8, rotary_dim=32, vocab_size=1024),
    # 16 heads as in codegen-350M, rotary over half the head
    "heads16": dict(n_embd=128, n_layer=3, n_head=16, rotary_dim=4, vocab_size=51200),
}
FORMATS = ["safetensors", "safetensors-sharded", "bin", "bin-sharded"]


def reference_model(shape: str, seed: int = 0):
    import torch
    from transformers import CodeGenConfig, CodeGenForCausalLM
    torch.manual_seed(seed)
    cfg = CodeGenConfig(n_positions=2048, n_ctx=2048, **SHAPES[shape])
    model = CodeGenForCausalLM(cfg).eval()
    with torch.no_grad():  # transformers zero-inits biases and unit-inits LayerNorms: randomise them too
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln" in name:
                p.add_(torch.randn_like(p) * 0.02)
    return model


def write_checkpoint(model, directory: Path, fmt: str, dtype=None) -> Path:
    """Save like the hub does: transformers' save_pretrained for safetensors, torch.save for .bin
    (the classic format, with the causal_mask/masked_bias buffers old checkpoints carry)."""
    import torch
    directory.mkdir(parents=True, exist_ok=True)
    if fmt.startswith("safetensors"):
        model.save_pretrained(directory, max_shard_size="2MB" if fmt.endswith("sharded") else "50GB")
        return directory
    model.config.save_pretrained(directory)
    sd = {k: (v.to(dtype) if dtype else v).contiguous() for k, v in model.state_dict().items()}
    n = model.config.n_positions
    for i in range(model.config.n_layer):
        sd[f"transformer.h.{i}.attn.causal_mask"] = torch.tril(torch.ones(n, n, dtype=torch.bool))[None, None][..., :8, :8]
        sd[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e9)
    if fmt == "bin":
        torch.save(sd, directory / "pytorch_model.bin")
        return directory
    names = sorted(sd)
    parts = [names[i::3] for i in range(3)]
    weight_map = {}
    for j, part in enumerate(parts, 1):
        fname = f"pytorch_model-{j:05d}-of-{len(parts):05d}.bin"
        torch.save({k: sd[k] for k in part}, directory / fname)
        weight_map.update({k: fname for k in part})
    (directory / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return directory


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """checkpoints(shape, fmt) -> (directory, reference model), made once per session."""
    made = {}

    def get(shape: str, fmt: str = "safetensors"):
        key = (shape, fmt)
        if key not in made:
            ref = reference_model(shape)
            made[key] = (write_checkpoint(ref, tmp_path_factory.mktemp(f"{shape}-{fmt}"), fmt), ref)
        return made[key]
    return get


@pytest.fixture(scope="session")
def tiny(checkpoints):
    """The 'tiny' random checkpoint loaded with convsynth, and its transformers reference."""
    import convsynth
    directory, ref = checkpoints("tiny")
    return convsynth.load(directory), ref
