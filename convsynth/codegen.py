"""``convsynth.load()`` and the ``CodeGen`` object: strings in, strings out."""
from __future__ import annotations

import os
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Iterator

import torch

from . import checkpoint
from .config import CodeGenConfig
from .errors import CheckpointError, OptionError
from .generate import Completion, DecodePath, Run, Sampling, check_prompt, iter_generation, locked_steps
from .stops import StopSpec, make_stop


_MODEL_RENAMED = "CodeGen.model is now CodeGen.module; the old name goes in the next release"
_model_alias_warned = False  # the old name warns once per process


class CodeGen:
    """A loaded CodeGen model with its tokenizer. Build one with ``convsynth.load()``.
    ``module`` is the torch module (``model.py``'s ``CodeGenModel``); ``model`` is its old name, deprecated."""

    def __init__(self, module, tokenizer, *, name: str = "", path: Path | None = None,
                 decoding: DecodePath | None = None):
        self.module, self.tokenizer = module, tokenizer
        self.config: CodeGenConfig = module.config
        self.name, self.path = name, path
        self.decoding = decoding if decoding is not None else DecodePath()  # how decode steps run; passed on
        self.fast: str | bool | None = "auto"  # the decode path asked for (load's fast); set_quantize reuses it
        self.weights = 0          # bumped when set_quantize changes the weights: keys/values cached before are stale
        self.load_seconds = 0.0
        self.lock = threading.Lock()  # one generation at a time per model (caches are per caller)
        self.speculate = "auto"   # speculative decoding: 'auto' (greedy, when it pays), 'on' or 'off'
        self.drafter = None       # set_draft(): a draft model's drafter; None drafts by prompt lookup

    @property
    def model(self):
        """Deprecated: the old name of ``module`` (``Session.model.model`` read twice the same word)."""
        _warn_model_renamed()
        return self.module

    @model.setter
    def model(self, module) -> None:
        _warn_model_renamed()
        self.module = module

    @property
    def device(self) -> str:
        return str(self.module.device)

    @property
    def decode_path(self) -> str:
        """Which decode step runs: 'eager', 'cuda_graphs', 'compile', 'onednn' (with the reason when a fast
        path that was asked for could not run) or, for int8 weights on a CPU, 'int8 (<kernel>)'."""
        return self.decoding.describe()

    def set_fast(self, fast: str | bool | None) -> None:
        """Choose the decode path again (the ``fast`` argument of ``load``); ``decode_path`` says what runs."""
        with self.lock:
            self.decoding, self.fast = set_fast(self.module, fast), fast

    @property
    def quantization(self) -> str | None:
        """'int8 (<kernel>)' when the weights are int8 (quant.py), else None."""
        quant = sys.modules.get("convsynth.quant")  # no weights are int8 before quant.py was imported
        return quant.describe(self.module) if quant is not None and quant.is_quantized(self.module) else None

    @property
    def dtype(self) -> str:
        return str(self.module.dtype).replace("torch.", "")

    def __repr__(self) -> str:
        c = self.config
        return (f"CodeGen({self.name!r}, n_layer={c.n_layer}, n_embd={c.n_embd}, params="
                f"{self.module.num_parameters() / 1e6:.1f}M, device={self.device}, dtype={self.dtype})")

    def set_quantize(self, quantize: str | None) -> None:
        """Switch the weights: 'int8' quantizes them in place; None reads the float weights again from the
        checkpoint (an int8 checkpoint has none). The decode path is chosen again (``fast`` as asked before), and
        ``weights`` changes, so prefix caches made with the old weights are dropped (``Session`` checks it)."""
        from .quant import check_mode
        mode = check_mode(quantize)
        with self.lock:
            if (mode is not None) == (self.quantization is not None):
                return  # the weights are that already
            if mode == "int8":
                set_quantize(self.module, mode)
            else:
                if self.config.quantization is not None or self.path is None:
                    raise OptionError(f"{self.name!r} was loaded from int8 weights: there are no float weights to "
                                      "go back to; load the float checkpoint instead.")
                self.module = checkpoint.load_weights(self.path, self.config, device=self.module.device,
                                                      dtype=self.module.dtype)
            self.decoding = set_fast(self.module, self.fast)
            self.weights += 1

    def set_draft(self, draft: "CodeGen | None") -> None:
        """Draft speculative tokens with ``draft`` (a smaller model with the same tokenizer), or with prompt
        lookup again (None)."""
        from .speculative import DraftModel, check_draft
        if draft is not None:
            check_draft(self, draft)
        self.drafter = DraftModel(draft) if draft is not None else None

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    @torch.inference_mode()
    def logits(self, ids: list[int]) -> torch.Tensor:
        """fp32 logits (len(ids), vocab) of a plain full forward pass, for checks against a reference."""
        check_prompt(len(ids), self.config.n_positions + 1)
        return self.module(torch.tensor([list(ids)], device=self.module.device))[0].float().cpu()

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
                 sampling: Sampling | None = None, speculate: str | None = None) -> Completion:
        """Like ``complete`` but returns the full Completion record (texts, token ids, finish reasons, timings)."""
        s = Sampling.of(sampling, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                        repetition_penalty=repetition_penalty, seed=seed)
        run = Run(self._iter(prompt, s, stop, num_samples, truncate_prompt, speculate))
        for _ in run:
            pass
        return run.result

    def complete(self, prompt: str, max_new_tokens: int | None = None, temperature: float | None = None,
                 top_p: float | None = None, top_k: int | None = None, repetition_penalty: float | None = None,
                 stop: StopSpec = None, num_samples: int = 1, seed: int | None = None, truncate_prompt: bool = False,
                 *, sampling: Sampling | None = None, speculate: str | None = None) -> str | list[str]:
        """The completion of ``prompt`` (a list of ``num_samples`` completions when more than one).
        Sampling settings: ``sampling`` (a ``Sampling``; default ``Sampling()``: 128 new tokens, temperature 0.2,
        top-p 0.95) with any single setting given here on top. ``temperature=0`` is greedy.
        ``stop``: None, 'codegen' (the original truncation rules), a regex or a list of regexes (multiline), or a
        callable text -> cut index. ``truncate_prompt`` keeps the prompt's last tokens when it does not fit the
        context window (otherwise that is an error). ``speculate``: speculative decoding for this call ('auto', 'on',
        'off'; default: the model's ``speculate``), see speculative.py."""
        out = self.generate(prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                            top_k=top_k, repetition_penalty=repetition_penalty, stop=stop, num_samples=num_samples,
                            seed=seed, truncate_prompt=truncate_prompt, sampling=sampling, speculate=speculate)
        return out.texts[0] if num_samples == 1 else out.texts

    def stream(self, prompt: str, max_new_tokens: int | None = None, temperature: float | None = None,
               top_p: float | None = None, top_k: int | None = None, repetition_penalty: float | None = None,
               stop: StopSpec = None, seed: int | None = None, truncate_prompt: bool = False, *,
               sampling: Sampling | None = None, speculate: str | None = None) -> Iterator[str]:
        """Yield the completion as text pieces while it is decoded; their concatenation equals ``complete()``."""
        s = Sampling.of(sampling, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                        repetition_penalty=repetition_penalty, seed=seed)
        yield from (piece for _, piece in self._iter(prompt, s, stop, 1, truncate_prompt, speculate))

    def _iter(self, prompt: str, s: Sampling, stop: StopSpec, num_samples: int, truncate_prompt: bool,
              speculate: str | None):
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples={num_samples!r} must be an integer >= 1")
        stop = make_stop(stop)
        ids = self._prompt_ids(prompt, truncate_prompt)
        spec = self.speculator(s, speculate, num_samples)
        cache = self.module.new_cache(batch=1)  # this call's own: only the model is shared, one step at a time
        return (yield from locked_steps(iter_generation(self.module, self.tokenizer, cache, ids, s, stop,
                                                        num_samples=num_samples, decode=self.decoding,
                                                        speculator=spec), self.lock))

    def speculator(self, s: Sampling, speculate: str | None = None, num_samples: int = 1):
        """The ``speculative.Speculator`` for one generation under ``speculate`` (default: this model's
        ``speculate``), or None when it does not speculate (off, several samples, 'auto' while sampling...).
        speculative.py is imported only when speculation is on or 'auto'."""
        mode = self.speculate if speculate is None else speculate
        if mode in ("off", None, False):
            return None
        from .speculative import check_mode, for_generation
        mode = check_mode(mode)
        return for_generation(mode, self.drafter, s, self.decoding) if num_samples == 1 else None


def _warn_model_renamed() -> None:
    global _model_alias_warned
    if not _model_alias_warned:
        _model_alias_warned = True
        warnings.warn(_MODEL_RENAMED, DeprecationWarning, stacklevel=3)


def load(name_or_path: str | Path | None = None, *, device: str = "auto", dtype: str = "auto",
         revision: str | None = None, fast: str | bool = "auto", quantize: str | None = None,
         speculate: str = "auto", draft: "CodeGen | None" = None) -> CodeGen:
    """Load a CodeGen checkpoint: None (the small model packaged with convsynth), a local directory with
    config.json and weights (.safetensors or .bin, sharded or not), or a hub id such as
    'Salesforce/codegen-350M-mono' (downloaded through huggingface_hub; needs network the first time).
    ``fast``: the decode step: 'auto' (CUDA graphs on a GPU; on a CPU, weights packed for oneDNN when the
    packed copy fits easily in memory, else eager), 'cuda_graphs', 'compile', 'onednn' (pack on a CPU regardless),
    or False/'eager'. A fast path that cannot run warns once and decoding stays eager (``.decode_path`` says which).
    ``quantize="int8"``: int8 weights for every linear layer and the output layer (convsynth/quant.py), made at
    load time from any checkpoint; a checkpoint written by ``convsynth convert --quantize int8`` is int8 already.
    ``speculate``: speculative decoding ('auto': greedy decoding, paused while it does not pay; 'on': sampling
    too; 'off'), drafting by prompt lookup, or with ``draft`` (a loaded smaller CodeGen with the same tokenizer)."""
    from .tokenizer import PACKAGED as PACKAGED_TOKENIZER, CodeGenTokenizer
    from .speculative import check_mode
    _check_options(name_or_path, dtype, fast, quantize, draft)  # before any weight is read: that may take minutes
    speculate = check_mode(speculate)
    t0 = time.perf_counter()
    directory = checkpoint.resolve(name_or_path, revision)
    config = checkpoint.read_config(directory)
    dev = checkpoint.parse_device(device)
    if config.quantization is not None:  # written by convsynth convert --quantize: int8 weights and their scales
        from . import quant
        model = quant.load_int8(directory, config, device=dev, dtype=checkpoint.parse_dtype(dtype, dev))
    else:
        model = checkpoint.load_weights(directory, config, device=dev, dtype=checkpoint.parse_dtype(dtype, dev))
    set_quantize(model, quantize)
    decoding = set_fast(model, fast)
    tokenizer = CodeGenTokenizer.from_pretrained(directory)
    if len(tokenizer) > config.vocab_size and tokenizer.source != str(PACKAGED_TOKENIZER):
        # The checkpoint ships this tokenizer: its ids past the embedding rows would crash at the first prompt.
        raise CheckpointError(f"the tokenizer in {directory} has {len(tokenizer)} tokens but the model has only "
                              f"{config.vocab_size} embedding rows (vocab_size): they do not belong together. "
                              "Use the tokenizer files that came with these weights.")
    name = str(name_or_path) if name_or_path is not None else "convsynth-tiny"
    cg = CodeGen(model, tokenizer, name=name, path=directory, decoding=decoding)
    cg.fast = fast
    cg.speculate = speculate
    if draft is not None:
        cg.set_draft(draft)
    cg.load_seconds = time.perf_counter() - t0
    return cg


FAST = ("auto", "onednn", "cuda_graphs", "compile", "eager")


def _check_options(name_or_path, dtype, fast, quantize, draft) -> None:
    """load()'s options that need no weights, refused in one line (an OptionError) before anything loads."""
    if name_or_path is not None and not isinstance(name_or_path, (str, os.PathLike)):
        raise OptionError(f"name_or_path={name_or_path!r}: give None (the packaged model), a checkpoint folder or a "
                          "hub id such as 'Salesforce/codegen-350M-mono'.")
    checkpoint.parse_dtype(dtype, torch.device("cpu"))  # the device's own default is chosen later
    if fast not in (*FAST, True, False, None):
        raise OptionError(f"fast={fast!r}: choose one of {', '.join(FAST)} (or False for eager).")
    if quantize not in (None, False):
        from .quant import check_mode  # quant.py is needed anyway when a quantize value is given
        check_mode(quantize)
    if draft is not None and not isinstance(draft, CodeGen):
        raise OptionError(f"draft={draft!r:.80} must be a loaded model: draft=convsynth.load() for the packaged one, "
                          "or convsynth.load(PATH) for a smaller checkpoint with the same tokenizer.")


def set_quantize(model, quantize: str | None) -> None:
    """int8 weights when asked for (quant.py, imported only then); going back to float needs a reload."""
    if quantize in (None, False):
        return
    from . import quant
    if quant.check_mode(quantize) == "int8" and not quant.is_quantized(model):
        quant.quantize(model)


def set_fast(model, fast: str | bool | None) -> DecodePath:
    """The decode path asked for, made ready for ``model`` (its layers packed for oneDNN, or a fast decoder built);
    ``CodeGen`` holds it and hands it to generation. fast.py (and onednn.py) are imported only when that path could
    run. Layers packed by an earlier call go back to plain ones first. int8 weights on a CPU run their own kernel
    (quant.py): that is the decode path."""
    quant = sys.modules.get("convsynth.quant")  # no weights are int8 before quant.py was imported
    if quant is not None and quant.is_quantized(model) and model.device.type == "cpu":
        return DecodePath(quant.describe(model))
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
