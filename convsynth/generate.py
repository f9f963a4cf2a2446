"""Generation: sampling (HF semantics), the token generator, and turning tokens into streamed, stopped text.

``decode_tokens`` is the hot loop: a generator of token ids that prefills, then feeds back one token per step.
Detokenizing, stop checks and callbacks live in ``iter_generation`` outside it.
"""
from __future__ import annotations

import dataclasses
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

import torch

from .cache import KVCache
from .errors import ContextWindowError, SamplingError
from .stops import StopRule, per_sample


@dataclass(frozen=True)
class Sampling:
    """Sampling settings as Hugging Face users know them; temperature 0 means greedy."""
    max_new_tokens: int = 128
    temperature: float = 0.2
    top_p: float = 0.95
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self):
        t = self.temperature
        if not isinstance(t, (int, float)) or math.isnan(t) or t < 0 or math.isinf(t):
            raise SamplingError(f"temperature={t!r} must be a finite number >= 0 (0 means greedy decoding).")
        if not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise SamplingError(f"top_p={self.top_p!r} must be in (0, 1]; 1 turns nucleus sampling off.")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise SamplingError(f"top_k={self.top_k!r} must be an integer >= 0; 0 turns top-k off.")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise SamplingError(f"max_new_tokens={self.max_new_tokens!r} must be an integer >= 1.")
        rp = self.repetition_penalty
        if not isinstance(rp, (int, float)) or math.isnan(rp) or rp <= 0:
            raise SamplingError(f"repetition_penalty={rp!r} must be > 0 (1.0 turns it off).")
        if self.seed is not None and not isinstance(self.seed, int):
            raise SamplingError(f"seed={self.seed!r} must be an integer or None.")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def replace(self, **changes) -> "Sampling":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def process_logits(logits: torch.Tensor, s: Sampling, seen: torch.Tensor | None) -> torch.Tensor:
    """Apply repetition penalty, temperature, top-k and top-p in Hugging Face's order. logits (B, V) fp32."""
    if s.repetition_penalty != 1.0 and seen is not None:
        penalised = torch.where(logits < 0, logits * s.repetition_penalty, logits / s.repetition_penalty)
        logits = torch.where(seen, penalised, logits)
    if s.greedy:
        return logits
    logits = logits / s.temperature
    if s.top_k:
        kth = torch.topk(logits, min(s.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if s.top_p < 1.0:
        # HF: drop the low tail whose cumulative probability is <= 1 - top_p, always keeping the top token.
        sorted_logits, order = torch.sort(logits, descending=False, dim=-1)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = cum <= (1 - s.top_p)
        drop_sorted[:, -1] = False
        drop = drop_sorted.scatter(1, order, drop_sorted)
        logits = logits.masked_fill(drop, -math.inf)
    return logits


def sample(logits: torch.Tensor, s: Sampling, seen: torch.Tensor | None, gen: torch.Generator | None) -> torch.Tensor:
    """(B, V) logits -> (B,) next token ids."""
    logits = process_logits(logits, s, seen)
    if s.greedy:
        return logits.argmax(dim=-1)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=gen).squeeze(1)


@torch.inference_mode()
def decode_tokens(model, cache: KVCache, prompt: torch.Tensor, s: Sampling, gen: torch.Generator | None,
                  seen: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
    """Prefill ``prompt`` (B, T) into ``cache``, then yield (B,) token ids forever; the caller stops it.
    After k tokens were yielded, the cache holds the prompt and the first k-1 of them. One-token steps go through
    ``model.fast_decoder`` (CUDA graphs / compiled, see fast.py) when one is attached."""
    fast = getattr(model, "fast_decoder", None)
    logits = model(prompt, cache, last_only=True)[:, -1]                   # (B, V)
    while True:
        tok = sample(logits, s, seen, gen)                                  # (B,)
        if seen is not None:
            seen[torch.arange(tok.shape[0], device=tok.device), tok] = True
        yield tok
        if fast is not None:
            logits = fast.step(tok, cache)                                  # (B, V), a static buffer
        else:
            logits = model(tok[:, None], cache, last_only=True)[:, -1]


@dataclass
class Completion:
    """What one generation produced. Times in seconds; ``prefill_tokens`` were computed, ``cached_tokens``
    served from the KV cache."""
    texts: list[str]
    token_ids: list[list[int]]          # the kept tokens of each sample (cut at the stop)
    finish_reasons: list[str]           # "stop" | "eos" | "length" | "cancelled"
    prefill_tokens: int = 0
    cached_tokens: int = 0
    time_to_first_token: float = 0.0
    decode_tokens_per_s: float = 0.0
    generated_tokens: int = 0
    raw_ids: list[list[int]] = field(default_factory=list)  # every sampled token, EOS and cut ones included
    acceptance_rate: float | None = None  # speculative decoding: share of drafted tokens kept (None: no drafts)
    drafted_tokens: int = 0


class _Detok:
    """Incremental decoding of one sample, holding back incomplete UTF-8 and any text a stop rule might still cut.
    Byte-level BPE decodes by concatenation, so only the ids after the last point where the text ended on a whole
    character are decoded again (re-decoding everything made each step cost O(length))."""

    def __init__(self, tokenizer, stop: StopRule | None):
        self.tok = tokenizer
        self.ids: list[int] = []
        self.emitted = 0
        self.cut: int | None = None  # number of ids kept once stopped
        self.text = ""
        self._whole, self._whole_text = 0, ""  # ids[:_whole] decode to _whole_text, ending on a whole character
        self._incremental = getattr(tokenizer, "decodes_by_concatenation", False)  # else: whole re-decode
        # Incremental text only grows by appending, so the codegen rule can scan just the new part.
        self.stop = per_sample(stop) if self._incremental else stop

    def push(self, token: int) -> str:
        self.ids.append(token)
        tail = self.tok.decode(self.ids[self._whole:])
        self.text = self._whole_text + tail
        if self._incremental and tail and not tail.endswith("\ufffd"):  # a partial UTF-8 sequence decodes to U+FFFD until completed
            self._whole, self._whole_text = len(self.ids), self.text
        if self.stop is not None:
            cut = self.stop(self.text)
            if cut is not None:
                self.text = self.text[:cut]
                self.cut = self._ids_for(cut)
                return self._flush()
        safe = len(self.text)
        if self.text.endswith("\ufffd"):
            safe = len(self.text.rstrip("\ufffd"))
        if self.stop is not None:
            safe = min(safe, _stable_end(self.text))
        piece = self.text[self.emitted:safe] if safe > self.emitted else ""
        self.emitted = max(self.emitted, safe)
        return piece

    def _ids_for(self, cut: int) -> int:
        # The fewest tokens whose text covers the kept text: they are what the cache should keep.
        for n in range(len(self.ids) + 1):
            if len(self.tok.decode(self.ids[:n])) >= cut:
                return n
        return len(self.ids)

    def _flush(self) -> str:
        piece = self.text[self.emitted:]
        self.emitted = len(self.text)
        return piece


def _stable_end(text: str) -> int:
    """Stop rules cut at line starts or inside runs of newlines, so text up to the current line (less its
    trailing newlines) is final; an indented current line cannot start a top-level trigger, so it goes too."""
    line_start = text.rfind("\n") + 1
    line = text[line_start:]
    if line and line[0] in " \t":
        return len(text)
    return len(text[:line_start].rstrip("\n"))


def check_prompt(n_prompt: int, n_positions: int) -> None:
    if n_prompt == 0:
        raise ContextWindowError("the prompt is empty: give some text (for code, e.g. a function signature "
                                 "or a '# comment' saying what to write).")
    if n_prompt >= n_positions:
        raise ContextWindowError(f"the prompt is {n_prompt} tokens but the model's context window is {n_positions} "
                                 "tokens, with room needed for at least one new token. Shorten the prompt, or pass "
                                 "truncate_prompt=True to keep only its last tokens.")


def iter_generation(model, tokenizer, cache: KVCache, new_ids: list[int], s: Sampling, stop: StopRule | None,
                    *, num_samples: int = 1, cancel: threading.Event | None = None,
                    context_ids: list[int] | None = None, speculate: str = "off",
                    drafter=None) -> Iterator[tuple[int, str]]:
    """Prefill ``new_ids`` after what ``cache`` holds, then sample. Yields (sample index, text piece) and returns
    a Completion. With several samples, the prompt is prefilled once and the cache is expanded to a batch.
    ``context_ids`` (the cached ids plus new_ids) feed the repetition penalty and prompt-lookup drafts.
    ``speculate`` ('auto', 'on', 'off') and ``drafter`` (a draft model's drafter, else prompt lookup): speculative
    decoding for a single sample (speculative.py, imported only then)."""
    n_pos = model.config.n_positions
    cached = cache.length
    room = n_pos - cached - len(new_ids)
    if room < 1:
        raise ContextWindowError(f"{cached + len(new_ids)} tokens do not leave room for a new token in the "
                                 f"context window of {n_pos}.")
    max_new = min(s.max_new_tokens, room)
    device = model.device
    gen = None
    if s.seed is not None and not s.greedy:
        gen = torch.Generator(device=device).manual_seed(s.seed)
    t0 = time.perf_counter()
    if num_samples > 1:  # prefill once with batch 1, then share the prefix between samples
        with torch.inference_mode():
            if len(new_ids) > 1:
                model(torch.tensor([new_ids[:-1]], device=device), cache, last_only=True)
        cache = cache.expand(num_samples, capacity=cache.length + 1 + max_new)
        prompt = torch.tensor([new_ids[-1:]] * num_samples, device=device)
    else:
        cache.reserve(cached + len(new_ids) + max_new)
        prompt = torch.tensor([new_ids], device=device)
    seen = None
    if s.repetition_penalty != 1.0:
        seen = torch.zeros(num_samples, model.config.vocab_size, dtype=torch.bool, device=device)
        seen[:, torch.tensor(context_ids or new_ids, device=device)] = True
    detoks = [_Detok(tokenizer, stop) for _ in range(num_samples)]
    reasons: list[str | None] = [None] * num_samples
    eos = tokenizer.eos_token_id
    steps, ttft, t_first = 0, 0.0, 0.0
    raw: list[list[int]] = [[] for _ in range(num_samples)]
    spec = None
    if speculate not in ("off", None, False) and num_samples == 1:
        from .speculative import for_generation
        spec = for_generation(speculate, drafter, s, model)
    if spec is not None:
        tokens = spec.tokens(model, cache, prompt, s, gen, seen, context_ids or new_ids)
    else:
        tokens = decode_tokens(model, cache, prompt, s, gen, seen)
    try:
        for step in range(max_new):
            if cancel is not None and cancel.is_set():
                reasons = [r or "cancelled" for r in reasons]
                break
            ids = next(tokens).tolist()
            steps += 1
            if step == 0:
                t_first = time.perf_counter()
                ttft = t_first - t0
            for i, t in enumerate(ids):
                raw[i].append(t)
                if reasons[i]:
                    continue
                if t == eos:
                    reasons[i] = "eos"
                    continue
                piece = detoks[i].push(t)
                if detoks[i].cut is not None:
                    reasons[i] = "stop"
                if piece:
                    yield i, piece
            if all(reasons):
                break
    finally:
        tokens.close()
    for i, d in enumerate(detoks):
        if not reasons[i]:
            reasons[i] = "length"
        rest = d._flush()
        if rest:
            yield i, rest
    elapsed = time.perf_counter() - t_first if t_first else 0.0
    return Completion(
        texts=[d.text for d in detoks],
        token_ids=[d.ids[:d.cut] if d.cut is not None else list(d.ids) for d in detoks],
        finish_reasons=list(reasons),
        prefill_tokens=len(new_ids), cached_tokens=cached,
        time_to_first_token=ttft,
        decode_tokens_per_s=(steps - 1) / elapsed if steps > 1 and elapsed > 0 else 0.0,
        generated_tokens=steps, raw_ids=raw,
        acceptance_rate=spec.stats.acceptance_rate if spec is not None else None,
        drafted_tokens=spec.stats.drafted if spec is not None else 0,
    )
