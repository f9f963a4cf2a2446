"""``convsynth.load()`` and the ``CodeGen`` object: strings in, strings out."""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import torch

from . import checkpoint
from .config import CodeGenConfig
from .errors import CheckpointError
from .generate import Completion, DecodePath, Run, Sampling, check_prompt, iter_generation, locked_steps
from .stops import StopSpec, make_stop


class CodeGen:
    """A loaded CodeGen model with its tokenizer. Build one with ``convsynth.load()``."""

    def __init__(self, model, tokenizer, *, name: str = "", path: Path | None = None,
                 decoding: DecodePath | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.config: CodeGenConfig = model.config
        self.name, self.path = name, path
        self.decoding = decoding if decoding is not None else DecodePath()  # how decode steps run; passed on
        self.load_seconds = 0.0
        self.lock = threading.Lock()  # one generation at a time per model (caches are per caller)

    @property
    def device(self) -> str:
        return str(self.model.device)

    @property
    def decode_path(self) -> str:
        """Which decode step runs: 'eager', 'cuda_graphs', 'compile' or 'onednn' (with the reason when a fast
        path that was asked for could not run)."""
        return self.decoding.describe()

    def set_fast(self, fast: str | bool | None) -> None:
        """Choose the decode path again (the ``fast`` argument of ``load``); ``decode_path`` says what runs."""
        with self.lock:
            self.decoding = set_fast(self.model, fast)

    @property
    def dtype(self) -> str:
        return str(self.model.dtype).replace("torch.", "")

    def __repr__(self) -> str:
        c = self.config
        return (f"CodeGen({self.name!r}, n_layer={c.n_layer}, n_embd={c.n_embd}, params="
                f"{self.model.num_parameters() / 1e6:.1f}M, device={self.device}, dtype={self.dtype})")

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    @torch.inference_mode()
    def logits(self, ids: list[int]) -> torch.Tensor:
        """fp32 logits (len(ids), vocab) of a plain full forward pass, for checks against a reference."""
        check_prompt(len(ids), self.config.n_positions + 1)
        return self.model(torch.tensor([list(ids)], device=self.model.device))[0].float().cpu()

    def _prompt_ids(self, prompt: str, truncate_prompt: bool) -> list[int]:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, not {type(prompt).__name__}")
        ids = self.tokenizer.encode(prompt)
        if truncate_prompt and len(ids) >= self.config.n_positions:
            ids = ids[-(self.config.n_positions - 1):]  # keep the end: that is what the model continues
        check_prompt(len(ids), self.config.n_positions)
        if max(ids) >= self.config.vocab_size:
            raise CheckpointError(f"the tokenizer gives id {max(ids)} but the model has only {self.config.vocab_size} "
                             "embedding rows: the tokenizer files do not belong to this checkpoint.")
        return ids

    def generate(self, prompt: str, *, max_new_tokens: int | None = None, temperature: float | None = None,
                 top_p: float | None = None, top_k: int | None = None, repetition_penalty: float | None = None,
                 stop: StopSpec = None, num_samples: int = 1, seed: int | None = None, truncate_prompt: bool = False,
                 sampling: Sampling | None = None) -> Completion:
        """Like ``complete`` but returns the full Completion record (texts, token ids, finish reasons, timings)."""
        s = Sampling.of(sampling, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                        repetition_penalty=repetition_penalty, seed=seed)
        run = Run(self._iter(prompt, s, stop, num_samples, truncate_prompt))
        for _ in run:
            pass
        return run.result

    def complete(self, prompt: str, max_new_tokens: int | None = None, temperature: float | None = None,
                 top_p: float | None = None, top_k: int | None = None, repetition_penalty: float | None = None,
                 stop: StopSpec = None, num_samples: int = 1, seed: int | None = None, truncate_prompt: bool = False,
                 *, sampling: Sampling | None = None) -> str | list[str]:
        """The completion of ``prompt`` (a list of ``num_samples`` completions when more than one).
        Sampling settings: ``sampling`` (a ``Sampling``; default ``Sampling()``: 128 new tokens, temperature 0.2,
        top-p 0.95) with any single setting given here on top. ``temperature=0`` is greedy.
        ``stop``: None, 'codegen' (the original truncation rules), a regex or a list of regexes (multiline), or a
        callable text -> cut index. ``truncate_prompt`` keeps the prompt's last tokens when it does not fit the
        context window (otherwise that is an error)."""
        out = self.generate(prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                            top_k=top_k, repetition_penalty=repetition_penalty, stop=stop, num_samples=num_samples,
                            seed=seed, truncate_prompt=truncate_prompt, sampling=sampling)
        return out.texts[0] if num_samples == 1 else out.texts

    def stream(self, prompt: str, max_new_tokens: int | None = None, temperature: float | None = None,
               top_p: float | None = None, top_k: int | None = None, repetition_penalty: float | None = None,
               stop: StopSpec = None, seed: int | None = None, truncate_prompt: bool = False, *,
               sampling: Sampling | None = None) -> Iterator[str]:
        """Yield the completion as text pieces while it is decoded; their concatenation equals ``complete()``."""
        s = Sampling.of(sampling, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                        repetition_penalty=repetition_penalty, seed=seed)
        yield from (piece for _, piece in self._iter(prompt, s, stop, 1, truncate_prompt))

    def _iter(self, prompt: str, s: Sampling, stop: StopSpec, num_samples: int, truncate_prompt: bool):
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples={num_samples!r} must be an integer >= 1")
        stop = make_stop(stop)
        ids = self._prompt_ids(prompt, truncate_prompt)
        cache = self.model.new_cache(batch=1)  # this call's own: only the model is shared, one step at a time
        return (yield from locked_steps(iter_generation(self.model, self.tokenizer, cache, ids, s, stop,
                                                        num_samples=num_samples, decode=self.decoding), self.lock))


def load(name_or_path: str | Path | None = None, *, device: str = "auto", dtype: str = "auto",
         revision: str | None = None, fast: str | bool = "auto") -> CodeGen:
    """Load a CodeGen checkpoint: None (the small model packaged with convsynth), a local directory with
    config.json and weights (.safetensors or .bin, sharded or not), or a hub id such as
    'Salesforce/codegen-350M-mono' (downloaded through huggingface_hub; needs network the first time).
    ``fast``: the decode step: 'auto' (CUDA graphs on a GPU; on a CPU, weights packed for oneDNN when the
    packed copy fits easily in memory, else eager), 'cuda_graphs', 'compile', 'onednn' (pack on a CPU regardless),
    or False/'eager'. A fast path that cannot run warns once and decoding stays eager (``.decode_path`` says which)."""
    from .tokenizer import PACKAGED as PACKAGED_TOKENIZER, CodeGenTokenizer
    t0 = time.perf_counter()
    directory = checkpoint.resolve(name_or_path, revision)
    config = checkpoint.read_config(directory)
    dev = checkpoint.parse_device(device)
    model = checkpoint.load_weights(directory, config, device=dev, dtype=checkpoint.parse_dtype(dtype, dev))
    decoding = set_fast(model, fast)
    tokenizer = CodeGenTokenizer.from_pretrained(directory)
    if len(tokenizer) > config.vocab_size and tokenizer.source != str(PACKAGED_TOKENIZER):
        # The checkpoint ships this tokenizer: its ids past the embedding rows would crash at the first prompt.
        raise CheckpointError(f"the tokenizer in {directory} has {len(tokenizer)} tokens but the model has only "
                              f"{config.vocab_size} embedding rows (vocab_size): they do not belong together. "
                              "Use the tokenizer files that came with these weights.")
    name = str(name_or_path) if name_or_path is not None else "convsynth-tiny"
    cg = CodeGen(model, tokenizer, name=name, path=directory, decoding=decoding)
    cg.load_seconds = time.perf_counter() - t0
    return cg


def set_fast(model, fast: str | bool | None) -> DecodePath:
    """The decode path asked for, made ready for ``model`` (its layers packed for oneDNN, or a fast decoder built);
    ``CodeGen`` holds it and hands it to generation. fast.py (and onednn.py) are imported only when that path could
    run. Layers packed by an earlier call go back to plain ones first."""
    if "convsynth.onednn" in sys.modules:  # nothing can be packed before onednn.py was imported
        sys.modules["convsynth.onednn"].unpack(model)
    if fast == "onednn" or (fast in ("auto", True) and model.device.type == "cpu"):
        # CPU: oneDNN-packed weights for the ordinary forward (decode and prefill alike). "auto" takes it quietly
        # when it can run and the packed copy fits easily; asked for by name, it warns when it cannot run.
        from . import onednn
        if fast != "onednn":
            why = onednn.unavailable(model) or onednn.no_room(model)
            if why:
                return DecodePath("eager", f"auto: {why}")
        return onednn.pack(model, auto=fast != "onednn")
    if fast in (False, None, "eager") or (fast in ("auto", True) and model.device.type != "cuda"):
        return DecodePath()
    from . import fast as fast_mod
    return fast_mod.attach(model, fast)
