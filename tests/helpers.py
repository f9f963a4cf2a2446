"""Helpers the tests share (`from helpers import reference_model`); fixtures stay in conftest.py.

Random-weight CodeGen checkpoints written by transformers (the reference) in every format, and what the
browser tests need (Chromium, a free port, stopping a Jupyter server).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

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


# ---- the browser tests -----------------------------------------------------------------------------------------
CHROMIUM = "/usr/bin/chromium"  # Debian's package; scripts/run.sh test installs it
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
T = 60_000  # ms: the longest any single wait may take (the machine may be busy)


def need_chromium() -> None:
    """Skip unless Chromium is installed (``bash scripts/run.sh test`` installs it; a test never does)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: run the suite with `bash scripts/run.sh test` (it installs Chromium "
                    "where it can), or apt-get install -y --no-install-recommends chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_server(server: subprocess.Popen) -> None:
    """SIGTERM the server's group (it shuts its kernels down), then kill whatever is left: the group and every
    process it started, kernels included (they lead their own sessions)."""
    import psutil
    try:
        family = psutil.Process(server.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server.wait()
    for p in family:
        try:
            for child in p.children(recursive=True):
                child.kill()
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=10)


KERNEL_READY = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.connectionStatus === 'connected' && k.status === 'idle';
}"""
