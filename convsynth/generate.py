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
    """Sampling settings as Hugging Face users know them; temperature 0 means greedy. The one place their defaults
    and checks live: every entry point (``CodeGen.generate/complete/stream``, ``Session``, the widget's settings)
    takes a ``Sampling`` (``sampling=``) and/or single settings, and builds the settings with ``Sampling.of``."""
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

    @classmethod
    def of(cls, base: "Sampling | None" = None, **settings) -> "Sampling":
        """``base`` (default: ``Sampling()``) with the ``settings`` given; a setting left None keeps the base's."""
        if base is not None and not isinstance(base, cls):
            raise SamplingError(f"sampling={base!r} must be a convsynth Sampling (or None for the defaults).")
        return (base if base is not None else cls()).replace(**settings)

    def replace(self, **changes) -> "Sampling":
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise SamplingError(f"unknown sampling setting {unknown[0]!r}; the settings are "
                                f"{', '.join(f.name for f in dataclasses.fields(self))}.")
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


@dataclass
class DecodePath:
    """How a model's one-token decode steps run. ``CodeGen.decoding`` holds one and passes it to generation.

    ``path``: 'eager', 'onednn' (the model's layers are oneDNN-packed, see onednn.py: the eager step runs on them),
    'cuda_graphs' or 'compile'; ``reason``: why it is not the path that was asked for ('' when it is, else
    "auto: ..." or "asked for X: ..."); ``decoder``: the fast.FastDecoder whose ``step`` replaces the eager step
    (CUDA graphs, compile), None otherwise. Verbs: ``step`` and ``describe``."""
    path: str = "eager"
    reason: str = ""
    decoder: object | None = None

    def step(self, model, tok: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """tok (B,) at position cache.length -> logits (B, V); the cache advances by one. A fast decoder's result
        may be a static buffer that the next step overwrites."""
        if self.decoder is not None:
            return self.decoder.step(tok, cache)
        return model(tok[:, None], cache, last_only=True)[:, -1]

    def describe(self) -> str:
        """What ``CodeGen.decode_path`` says: the path, and in brackets why not the one asked for (a fast decoder
        that fell back says so itself)."""
        if self.decoder is not None:
            return self.decoder.describe()
        return self.path + (f" ({self.reason})" if self.reason else "")


EAGER = DecodePath()


@torch.inference_mode()
def decode_tokens(model, cache: KVCache, prompt: torch.Tensor, s: Sampling, gen: torch.Generator | None,
                  seen: torch.Tensor | None = None, *, decode: DecodePath = EAGER) -> Iterator[torch.Tensor]:
    """Prefill ``prompt`` (B, T) into ``cache``, then yield (B,) token ids forever; the caller stops it.
    After k tokens were yielded, the cache holds the prompt and the first k-1 of them. One-token steps run along
    ``decode`` (CUDA graphs / compiled, see fast.py, when it holds a fast decoder)."""
    logits = model(prompt, cache, last_only=True)[:, -1]                   # (B, V)
    while True:
        tok = sample(logits, s, seen, gen)                                  # (B,)
        if seen is not None:
            seen[torch.arange(tok.shape[0], device=tok.device), tok] = True
        yield tok
        logits = decode.step(model, tok, cache)                             # (B, V), maybe a static buffer


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
    accepted_tokens: int = 0            # of those, kept (a count: the server reports it as is)


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


class Run:
    """A generator being consumed, and what it returned: iterate it for its items; once it is exhausted, ``result``
    holds its return value (a Completion; a Turn for ``Session.ask_stream``), so callers read an attribute instead
    of catching ``StopIteration.value``. ``close()`` ends it early (``result`` stays None)."""

    def __init__(self, gen: Iterator):
        self._gen = gen
        self.result = None

    def __iter__(self) -> "Run":
        return self

    def __next__(self):
        try:
            return next(self._gen)
        except StopIteration as end:
            self.result = end.value
            raise StopIteration from None

    def close(self) -> None:
        self._gen.close()


def locked_steps(gen: Iterator, lock) -> Iterator:
    """``gen`` with ``lock`` held around each step and released at every yield, so that nothing waits on the lock
    while a consumer holds the generator: a callback (``on_text``), a second generation in the same thread
    (``zip`` of two streams), a stream left half-consumed or finished in another thread. Returns what ``gen``
    returns. One decode step never depends on model state left by the previous one (the cache is the caller's)."""
    try:
        while True:
            with lock:
                try:
                    item = next(gen)
                except StopIteration as done:
                    return done.value
            yield item
    finally:
        gen.close()  # no model work (the token loop just stops), so no lock: this may run inside the collector


def _start(model, cache: KVCache, new_ids: list[int], num_samples: int, max_new: int):
    """The cache and the prompt tensor the token loop starts from, room reserved for ``max_new`` tokens. Several
    samples share one prefill: all but the last id run with batch 1, then the cache is expanded to the batch."""
    device = model.device
    if num_samples > 1:
        with torch.inference_mode():
            if len(new_ids) > 1:
                model(torch.tensor([new_ids[:-1]], device=device), cache, last_only=True)
        cache = cache.expand(num_samples, capacity=cache.length + 1 + max_new)
        return cache, torch.tensor([new_ids[-1:]] * num_samples, device=device)
    cache.reserve(cache.length + len(new_ids) + max_new)
    return cache, torch.tensor([new_ids], device=device)


def _seen(model, s: Sampling, num_samples: int, context_ids: list[int]) -> torch.Tensor | None:
    """The repetition penalty's record of the ids seen so far, one row a sample (None when it is off)."""
    if s.repetition_penalty == 1.0:
        return None
    seen = torch.zeros(num_samples, model.config.vocab_size, dtype=torch.bool, device=model.device)
    seen[:, torch.tensor(context_ids, device=model.device)] = True
    return seen


def _take(token: int, eos: int | None, detok: "_Detok") -> tuple[str | None, str]:
    """One sampled token for a sample still going: (why it ended now, or None: 'eos' or 'stop'; the text it
    adds)."""
    if token == eos:
        return "eos", ""
    piece = detok.push(token)
    return ("stop" if detok.cut is not None else None), piece


def iter_generation(model, tokenizer, cache: KVCache, new_ids: list[int], s: Sampling, stop: StopRule | None,
                    *, num_samples: int = 1, cancel: threading.Event | None = None,
                    context_ids: list[int] | None = None, decode: DecodePath = EAGER,
                    speculator=None) -> Iterator[tuple[int, str]]:
    """Prefill ``new_ids`` after what ``cache`` holds, then sample. Yields (sample index, text piece) and returns
    a Completion. With several samples, the prompt is prefilled once and the cache is expanded to a batch.
    ``context_ids`` (the cached ids plus new_ids) feed the repetition penalty and prompt-lookup drafts.
    ``decode``: how one-token steps run (the model's ``CodeGen.decoding``; default: eager). ``speculator``: a
    ``speculative.Speculator`` (``CodeGen.speculator`` makes one, for a single sample) that produces the tokens
    instead, drafting and verifying; the Completion reports its acceptance rate."""
    if speculator is not None and num_samples != 1:
        raise ValueError("speculative decoding draws one sample at a time (num_samples=1)")
    n_pos = model.config.n_positions
    cached = cache.length
    room = n_pos - cached - len(new_ids)
    if room < 1:
        raise ContextWindowError(f"{cached + len(new_ids)} tokens do not leave room for a new token in the "
                                 f"context window of {n_pos}.")
    max_new = min(s.max_new_tokens, room)
    gen = None
    if s.seed is not None and not s.greedy:
        gen = torch.Generator(device=model.device).manual_seed(s.seed)
    t0 = time.perf_counter()
    cache, prompt = _start(model, cache, new_ids, num_samples, max_new)
    seen = _seen(model, s, num_samples, context_ids or new_ids)
    detoks = [_Detok(tokenizer, stop) for _ in range(num_samples)]
    reasons: list[str | None] = [None] * num_samples
    eos = tokenizer.eos_token_id
    steps, ttft, t_first = 0, 0.0, 0.0
    raw: list[list[int]] = [[] for _ in range(num_samples)]
    if speculator is not None:
        tokens = speculator.tokens(model, cache, prompt, s, gen, seen, context_ids or new_ids, decode=decode)
    else:
        tokens = decode_tokens(model, cache, prompt, s, gen, seen, decode=decode)
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
                if not reasons[i]:
                    reasons[i], piece = _take(t, eos, detoks[i])
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
        acceptance_rate=speculator.stats.acceptance_rate if speculator is not None else None,
        drafted_tokens=speculator.stats.drafted if speculator is not None else 0,
        accepted_tokens=speculator.stats.accepted if speculator is not None else 0,
    )
