"""Exporting a CodeGen checkpoint for other engines: ``gptj`` (what vLLM, SGLang, TGI and transformers serve) or
``codegen`` (what ``convert`` writes: the same model as safetensors).

CodeGen is GPT-J's block with one difference: the fused ``qkv_proj``. Its output (3 * n_embd) is 4 fixed
"model-parallel" chunks, each [query | value | key] for a quarter of the heads. Viewing the weight as
(4, 3, n_embd/4, n_embd) and taking index 0, 2, 1 gives GPT-J's separate q, k and v projections with the heads in
the same order, so the exported model computes exactly the same function (fauxpilot's codegen_gptj_convert.py
does the same). Everything else keeps its name.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from . import checkpoint
from .config import MP_NUM, CodeGenConfig
from .errors import CheckpointError

FORMATS = ("gptj", "codegen")


def split_qkv(qkv: torch.Tensor, n_embd: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CodeGen's fused (3C, C) qkv weight -> GPT-J's q, k, v weights, each (C, C)."""
    w = qkv.reshape(MP_NUM, 3, n_embd // MP_NUM, n_embd)
    q, v, k = (w[:, i].reshape(n_embd, n_embd).contiguous() for i in range(3))
    return q, k, v


def gptj_config(config: CodeGenConfig, dtype: torch.dtype) -> dict:
    """config.json of the same model as ``GPTJForCausalLM``."""
    return {
        "architectures": ["GPTJForCausalLM"], "model_type": "gptj",
        "vocab_size": config.vocab_size, "n_positions": config.n_positions, "n_embd": config.n_embd,
        "n_layer": config.n_layer, "n_head": config.n_head, "rotary_dim": config.rotary_dim,
        "n_inner": config.n_inner, "activation_function": config.activation_function,
        "layer_norm_epsilon": config.layer_norm_epsilon, "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id, "tie_word_embeddings": config.tie_word_embeddings,
        "embd_pdrop": 0.0, "attn_pdrop": 0.0, "resid_pdrop": 0.0, "initializer_range": 0.02, "use_cache": True,
        "torch_dtype": str(dtype).replace("torch.", ""),
    }


def gptj_tensors(tensors, config: CodeGenConfig):
    """(name, tensor) in CodeGen naming -> (name, tensor) in GPT-J naming."""
    for name, t in tensors:
        if checkpoint.IGNORED.search(name):
            continue
        if name.endswith(".attn.qkv_proj.weight"):
            prefix = name[: -len("qkv_proj.weight")]
            q, k, v = split_qkv(t, config.n_embd)
            yield prefix + "q_proj.weight", q
            yield prefix + "k_proj.weight", k
            yield prefix + "v_proj.weight", v
        else:
            yield name, t.contiguous()


def export(src: str | Path | None, dst: str | Path, *, format: str = "gptj", dtype: str | None = None,
           revision: str | None = None) -> Path:
    """Write ``src`` (any checkpoint ``convsynth.load`` reads; None for the packaged model) to ``dst`` in
    ``format``: 'gptj' (config.json, model.safetensors and tokenizer files for GPTJForCausalLM) or 'codegen'
    (the same as ``convert``)."""
    if format not in FORMATS:
        raise CheckpointError(f"unknown export format {format!r}; use one of {', '.join(FORMATS)}.")
    if format == "codegen":
        return checkpoint.convert(src, dst, dtype=dtype, revision=revision)
    from safetensors.torch import save_file
    from .tokenizer import CodeGenTokenizer
    checkpoint.check_destination(dst)  # before the weights are read
    directory = checkpoint.resolve(src, revision)
    config = checkpoint.read_config(directory)
    torch_dtype = checkpoint.parse_dtype(dtype, torch.device("cpu")) if dtype else None
    tensors = dict(gptj_tensors(checkpoint.iter_tensors(checkpoint._find_weights(directory), torch_dtype), config))
    if "lm_head.weight" not in tensors and config.tie_word_embeddings:
        tensors["lm_head.weight"] = tensors["transformer.wte.weight"].clone()
    def fill(folder: Path) -> None:
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        saved_dtype = tensors["transformer.wte.weight"].dtype
        (folder / "config.json").write_text(json.dumps(gptj_config(config, saved_dtype), indent=2) + "\n")
        write_tokenizer(CodeGenTokenizer.from_pretrained(directory), folder, config.n_positions)
    return checkpoint.write_files(dst, fill)  # beside, then moved in: a failed export leaves dst as it was


def write_tokenizer(tokenizer, dst: Path, n_positions: int) -> None:
    """tokenizer.json plus the small files AutoTokenizer (transformers, vLLM, SGLang) looks for."""
    tokenizer.save(dst)
    eot = "<|endoftext|>"
    (dst / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GPT2Tokenizer", "bos_token": eot, "eos_token": eot, "unk_token": eot,
        "add_prefix_space": False, "model_max_length": n_positions, "clean_up_tokenization_spaces": False}, indent=2) + "\n")
    (dst / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": eot, "eos_token": eot, "unk_token": eot}, indent=2) + "\n")
