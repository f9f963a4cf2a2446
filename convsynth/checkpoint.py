"""Finding and reading CodeGen checkpoints: a local directory, a hub id, or the model packaged with convsynth.

Weights are read tensor by tensor into a model built on the meta device, so loading never holds a second full
copy of the weights. ``.bin`` files are read with ``torch.load(weights_only=True, mmap=True)`` only.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import torch

from .config import CodeGenConfig
from .errors import CheckpointError, OptionError
from .model import CodeGenModel

PACKAGED = Path(__file__).parent / "models" / "convsynth-tiny"
IGNORED = re.compile(r"\.attn\.(causal_mask|masked_bias|bias)$")  # buffers some checkpoints carry
META_FILES = ["config.json", "tokenizer.json", "vocab.json", "merges.txt", "added_tokens.json",
              "special_tokens_map.json", "tokenizer_config.json"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve(name_or_path: str | Path | None, revision: str | None = None) -> Path:
    """A local checkpoint directory for ``name_or_path`` (downloading hub ids through huggingface_hub)."""
    if name_or_path is None:
        if not (PACKAGED / "config.json").exists():
            raise CheckpointError(f"the packaged model is missing from {PACKAGED}; reinstall convsynth, or pass "
                                  "a checkpoint directory or hub id to convsynth.load().")
        return PACKAGED
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path} is a file; convsynth.load() wants the checkpoint's directory "
                                  "(with config.json and the weights).")
        if not (path / "config.json").exists():
            raise CheckpointError(f"{path} has no config.json: is this a CodeGen checkpoint directory? It needs "
                                  "config.json plus model.safetensors or pytorch_model.bin (or sharded *.index.json).")
        return path
    name = str(name_or_path)
    if not _HUB_ID.match(name):
        raise CheckpointError(f"no such checkpoint directory: {name!r}. Pass an existing directory with "
                              "config.json and weights, a hub id such as 'Salesforce/codegen-350M-mono', or "
                              "None for the packaged model.")
    return _download(name, revision)


def _download(repo_id: str, revision: str | None) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - a core dependency
        raise CheckpointError("huggingface_hub is needed to download hub checkpoints: pip install huggingface_hub")
    try:
        local = Path(snapshot_download(repo_id, revision=revision, allow_patterns=META_FILES + [
            "*.safetensors", "*.safetensors.index.json"]))
        if not _find_weights(local, required=False):
            local = Path(snapshot_download(repo_id, revision=revision, allow_patterns=META_FILES + [
                "pytorch_model*.bin", "pytorch_model.bin.index.json"]))
    except Exception as e:  # offline, unknown repo, gated, interrupted download...
        raise CheckpointError(
            f"could not get {repo_id!r} from the Hugging Face hub ({type(e).__name__}: {e}). If this machine is "
            f"offline, download the checkpoint elsewhere (e.g. `hf download {repo_id} --local-dir DIR`), copy the "
            "directory here and pass its path to convsynth.load().") from None
    return local


def _find_weights(directory: Path, required: bool = True) -> list[Path]:
    files = _weight_files(directory, required)
    for f in files:
        if f.is_symlink() and not f.exists():  # else reading it says "truncated or corrupt"
            raise CheckpointError(f"{f} is a symbolic link that loops or points nowhere ({os.readlink(f)}); "
                                  "point it at the weights file or replace it with the file.")
    return files


def _weight_files(directory: Path, required: bool) -> list[Path]:
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (directory / index).exists():
            try:
                weight_map = json.loads((directory / index).read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise CheckpointError(f"{directory / index} is not a valid shard index ({e}).") from None
            shards = sorted(set(weight_map.values()))
            missing = [s for s in shards if not (directory / s).exists()]
            if missing:
                raise CheckpointError(f"{directory / index} lists shards that are missing: {', '.join(missing)}")
            return [directory / s for s in shards]
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (directory / single).exists():
            return [directory / single]
    others = sorted(p.name for p in directory.glob("*.safetensors")) or sorted(p.name for p in directory.glob("*.bin"))
    if len(others) == 1:
        return [directory / others[0]]
    if required:
        raise CheckpointError(f"no weights in {directory}: expected model.safetensors, pytorch_model.bin, or a "
                              "sharded *.index.json with its shards.")
    return []


def iter_tensors(files: list[Path], dtype: torch.dtype | None = None, *,
                 quantized: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every tensor in the weight files, one at a time. Tensors come memory-mapped (no copy)
    unless they are to be converted to ``dtype``: then each one's source memory is let go once it is read, so
    converting never holds the whole checkpoint twice. Integer tensors are refused unless ``quantized`` (the int8
    weights quant.py reads, with ``dtype`` None)."""
    for f in files:
        if f.suffix == ".safetensors":
            yield from _iter_safetensors(f, dtype, quantized)
        else:
            yield from _iter_bin(f, dtype, quantized)


def _iter_safetensors(f: Path, dtype: torch.dtype | None, quantized: bool):
    from safetensors import safe_open
    try:
        with safe_open(str(f), framework="pt", device="cpu") as st:
            names = list(st.keys())
            converting = dtype is not None and any(st.get_slice(n).get_dtype() != _ST_NAMES.get(dtype) for n in names)
            if not converting:  # zero-copy: the model keeps the mapped tensors
                for name in names:
                    yield name, _float(f, name, st.get_tensor(name), quantized)
                return
        for name in names:  # reopen per tensor so each mapping (and its resident pages) is dropped after use
            with safe_open(str(f), framework="pt", device="cpu") as st:
                t = _float(f, name, st.get_tensor(name), quantized)
            yield name, t.to(dtype)
            del t
    except CheckpointError:
        raise
    except Exception as e:  # SafetensorError, OSError on truncated files, ...
        raise CheckpointError(f"cannot read {f}: {type(e).__name__}: {e}. The file is truncated or corrupt: "
                              "download it again.") from None


def _float(f: Path, name: str, t: torch.Tensor, quantized: bool = False) -> torch.Tensor:
    # A cast would silently turn quantized (int8, ...) weights into garbage: refuse them, unless the caller reads
    # quantized weights. The buffers that old checkpoints carry (causal_mask, a bool) are skipped by the loader anyway.
    if not quantized and not t.is_floating_point() and not IGNORED.search(name):
        raise CheckpointError(f"{f}: tensor {name} is {str(t.dtype).replace('torch.', '')}; convsynth reads "
                              "float32, float16 or bfloat16 weights, not quantized ones. Use the unquantized "
                              "checkpoint.")
    return t


_ST_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def _iter_bin(f: Path, dtype: torch.dtype | None, quantized: bool):
    import pickle
    try:
        sd = _torch_load(f, mmap=True)
        first = next((t for t in sd.values() if isinstance(t, torch.Tensor) and t.is_floating_point()), None) \
            if isinstance(sd, dict) else None
        if dtype is not None and first is not None and first.dtype != dtype:
            del sd, first  # converting: per-storage loading lets each source tensor go once converted
            sd = _torch_load(f, mmap=False)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{f} cannot be loaded safely: it needs unsafe unpickling ({str(e).splitlines()[0]}). convsynth only "
            "loads .bin files with torch.load(weights_only=True). If you trust the file, convert it yourself to "
            "safetensors, or save a plain state dict.") from None
    except Exception as e:
        raise CheckpointError(f"cannot read {f}: {type(e).__name__}: {e}. The file is truncated, corrupt or not a "
                              "PyTorch checkpoint.") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{f} does not hold a state dict (a mapping of names to tensors) but "
                              f"{type(sd).__name__}.")
    for name in list(sd):
        t = _float(f, name, sd.pop(name), quantized)  # pop so each source tensor can be freed once it is placed
        yield name, (t.to(dtype) if dtype is not None else t)
        del t


def _torch_load(f: Path, mmap: bool):
    try:
        return torch.load(str(f), map_location="cpu", weights_only=True, mmap=mmap)
    except RuntimeError as e:
        if mmap and "mmap" in str(e):  # legacy (non-zip) format cannot be mapped
            return torch.load(str(f), map_location="cpu", weights_only=True)
        raise


def load_weights(directory: Path, config: CodeGenConfig, *, device: torch.device, dtype: torch.dtype) -> CodeGenModel:
    """Build the model without allocating it, then place each checkpoint tensor (converted) into it."""
    files = _find_weights(directory)
    with torch.device("meta"):
        model = CodeGenModel(config)
    expected = dict(model.named_parameters())
    problems, seen = [], set()
    for name, tensor in iter_tensors(files, dtype):
        if IGNORED.search(name):
            continue
        if name not in expected:
            problems.append(f"unexpected tensor {name} {tuple(tensor.shape)}")
            continue
        want = expected[name]
        if tuple(tensor.shape) != tuple(want.shape):
            problems.append(f"{name} has shape {tuple(tensor.shape)}, the config needs {tuple(want.shape)}")
            continue
        _assign(model, name, torch.nn.Parameter(tensor.to(device=device, dtype=dtype), requires_grad=False))
        seen.add(name)
    if "lm_head.weight" not in seen and config.tie_word_embeddings and "transformer.wte.weight" in seen:
        _assign(model, "lm_head.weight", model.transformer.wte.weight)
        seen.add("lm_head.weight")
    missing = [n for n in expected if n not in seen]
    problems += [f"missing tensor {n} {tuple(expected[n].shape)}" for n in missing]
    if problems:
        shown = "\n  ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise CheckpointError(f"the weights in {directory} do not fit its config.json "
                              f"(n_embd={config.n_embd}, n_layer={config.n_layer}, vocab_size={config.vocab_size}):"
                              f"\n  {shown}")
    return model.eval()


def _assign(model: torch.nn.Module, name: str, param: torch.nn.Parameter) -> None:
    owner_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(owner_name), attr, param)


def read_config(directory: Path) -> CodeGenConfig:
    return CodeGenConfig.from_json(directory / "config.json")


def convert(src: str | Path | None, dst: str | Path, *, dtype: str | None = None, revision: str | None = None) -> Path:
    """Write ``src`` (any checkpoint load() reads) to ``dst`` as config.json + model.safetensors + tokenizer.
    (int8 weights: ``quant.convert``, ``convsynth convert --quantize int8``.)"""
    torch_dtype = parse_dtype(dtype, torch.device("cpu")) if dtype else None  # checked before any work
    directory = resolve(src, revision)
    config = read_config(directory)
    check_destination(dst)
    tensors = {}
    for name, t in iter_tensors(_find_weights(directory), torch_dtype):
        if IGNORED.search(name):
            continue
        tensors[name] = t.contiguous()
    return write(dst, tensors, config, directory)


def check_destination(dst: str | Path) -> None:
    if Path(dst).exists() and not Path(dst).is_dir():
        raise CheckpointError(f"{dst} is a file; convert and export write a checkpoint directory: pass a folder "
                              "path.")


def write_files(dst: str | Path, fill) -> Path:
    """``dst`` as a checkpoint directory holding the files ``fill(folder)`` writes, into a folder beside them
    first and then moved in: a failed write leaves ``dst`` as it was, and an older checkpoint's weights and index
    there (which would take priority over the new ones) go."""
    dst = Path(dst)
    check_destination(dst)
    try:
        dst.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".convert-", dir=dst) as tmp:
            tmp = Path(tmp)
            fill(tmp)
            for old in [*dst.glob("*.safetensors"), *dst.glob("pytorch_model*.bin"), *dst.glob("*.index.json")]:
                old.unlink()
            for new in tmp.iterdir():
                os.replace(new, dst / new.name)
    except OSError as e:
        raise CheckpointError(f"cannot write the checkpoint to {dst}: {e.strerror or e}"
                              f"{' (the disk is full)' if e.errno == 28 else ''}.") from None
    return dst


def write(dst: str | Path, tensors: dict[str, torch.Tensor], config: CodeGenConfig, tokenizer_from: Path) -> Path:
    """``dst`` as a checkpoint directory: ``tensors`` in model.safetensors, ``config`` as config.json and the
    tokenizer of ``tokenizer_from`` (``write_files``)."""
    from safetensors.torch import save_file
    from .tokenizer import CodeGenTokenizer

    def fill(folder: Path) -> None:
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        (folder / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        CodeGenTokenizer.from_pretrained(tokenizer_from).save(folder)
    return write_files(dst, fill)


def parse_dtype(dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise OptionError(f"dtype {dtype} is not one the model computes in; use torch.float32, torch.float16 "
                              "or torch.bfloat16 (int8 weights: quantize='int8').")
        return dtype
    if dtype in (None, "auto"):
        return torch.float16 if device.type == "cuda" else torch.float32  # CPU half precision is slow
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in table:
        raise OptionError(f"unknown dtype {dtype!r}; use 'auto', 'float32', 'float16' or 'bfloat16'")
    return table[dtype]


def parse_device(device) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise OptionError(f"unknown device {device!r} ({str(e).splitlines()[0]}); use 'auto', 'cpu', 'cuda' or "
                          "'cuda:N'") from None
    if device.type not in ("cpu", "cuda"):
        raise OptionError(f"device {str(device)!r} is not supported; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OptionError("device='cuda' was asked for but no CUDA GPU is available; use device='auto' or 'cpu'")
    return device
