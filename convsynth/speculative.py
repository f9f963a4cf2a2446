"""Speculative decoding: draft a few tokens cheaply, verify them in one forward pass of the model, keep the ones
the model would have produced.

Drafts (``Drafter``): ``PromptLookup`` continues the context's last n-gram from where it occurred before (code
repeats names, signatures and whole lines, and a redone step repeats the step before it); ``DraftModel`` runs a
smaller model with the same tokenizer (the packaged model drafting for a real checkpoint).

Verification (``verify``): position i of the pass gives the model's distribution after the drafted tokens before
it. Greedy: a drafted token is kept while it is the argmax of the same processed logits plain decoding takes the
argmax of, so the text is identical. Sampling: the standard rule (Leviathan et al. 2023, Chen et al. 2023): keep a
drafted token d with probability min(1, p(d) / q(d)); at the first rejection sample from max(0, p - q),
normalised; after k kept tokens sample one more from p. Every token is then distributed exactly as plain sampling
would draw it (a lookup draft is a point mass: q(d) = 1).

The KV cache: the pass writes the keys/values of every drafted token; the generator rewinds the cache to the
tokens handed out so far and advances it one position per kept token as it hands that token out (``rewind`` only
moves the length; the written positions stay until overwritten), so whenever the caller holds a token the cache
holds exactly what plain decoding would hold: the prompt and every token before that one.

When it pays: ``Speculator`` adapts k (longer after a fully kept draft, shorter after a rejection) and, in
'auto' mode, compares the time per produced token over each window of 4 passes with a plain step's and pauses
drafting, for a doubling number of steps, while speculation is not faster, so a generation that gets little from it runs at plain speed.
'auto' speculates for greedy decoding only: timing-driven choices must not change a seeded sample.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import torch

from .cache import PrefixCache
from .errors import OptionError
from .generate import EAGER, DecodePath, Sampling, process_logits, sample

MODES = ("auto", "on", "off")


@dataclass
class SpecStats:
    drafted: int = 0      # drafted tokens sent to verification
    accepted: int = 0     # of those, kept
    passes: int = 0       # verification passes (forward passes with a draft)
    steps: int = 0        # plain one-token steps (no draft, or drafting paused)

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted / self.drafted if self.drafted else None


class PromptLookup:
    """Drafts by continuing the most recent earlier occurrence of the context's last n-gram (n from ``max_ngram``
    down to ``min_ngram``). The index of n-grams grows with the ids, so a draft costs a few dict look-ups."""

    def __init__(self, max_ngram: int = 8, min_ngram: int = 2):
        self.max_ngram, self.min_ngram = max_ngram, min_ngram
        self.ids: list[int] = []
        self.index: dict[tuple, int] = {}  # n-gram -> the position just after its latest occurrence but the last

    def _extend(self, ids: list[int]) -> None:
        if ids[:len(self.ids)] != self.ids:  # not a continuation: start over
            self.ids, self.index = [], {}
        for end in range(max(len(self.ids), 1), len(ids)):  # n-grams ending before position `end`, continued there
            for n in range(self.min_ngram, self.max_ngram + 1):
                if end >= n:
                    self.index[tuple(ids[end - n:end])] = end
        self.ids = list(ids)

    def draft(self, ids: list[int], k: int, s: Sampling, gen) -> tuple[list[int], torch.Tensor | None]:
        self._extend(ids)
        for n in range(self.max_ngram, self.min_ngram - 1, -1):
            if len(ids) > n:
                at = self.index.get(tuple(ids[-n:]))
                if at is not None:
                    return ids[at:at + k], None
        return [], None


class DraftModel:
    """Drafts with a smaller model that shares the tokenizer; its own prefix cache follows the ids."""

    def __init__(self, draft):
        self.cg = draft  # its module is read at each draft: set_quantize may replace it (and drops this cache)
        self.prefix = PrefixCache(lambda: draft.module.new_cache(), weights=lambda: draft.weights)

    @torch.inference_mode()
    def draft(self, ids: list[int], k: int, s: Sampling, gen) -> tuple[list[int], torch.Tensor | None]:
        m = self.cg.module
        k = min(k, m.config.n_positions - len(ids) - 1)
        if k < 1:
            return [], None
        keep = self.prefix.reuse(ids)
        self.prefix.cache.reserve(len(ids) + k)
        logits = m(torch.tensor([ids[keep:]], device=m.device), self.prefix.cache, last_only=True)[:, -1]
        out, qs = [], []
        for i in range(k):
            if s.greedy:
                tok = int(logits.argmax(-1))
            else:
                q = process_logits(logits.float(), s, None).softmax(-1)[0]
                tok = int(torch.multinomial(q, 1, generator=gen))
                qs.append(q)
            out.append(tok)
            if i < k - 1:
                logits = m(torch.tensor([[tok]], device=m.device), self.prefix.cache, last_only=True)[:, -1]
        self.prefix.record(ids + out)
        return out, (torch.stack(qs) if qs else None)


def verify(logits: torch.Tensor, draft: list[int], q: torch.Tensor | None, s: Sampling, seen: torch.Tensor | None,
           gen: torch.Generator | None) -> tuple[int, int]:
    """logits (len(draft) + 1, V) of one pass over [pending token] + draft. Returns (kept drafts m, the next token):
    drafts 0..m-1 are kept and the next token follows them. ``q`` (len(draft), V): the distributions the drafts were
    sampled from (None: point masses, as prompt lookup drafts). ``seen`` (1, V) is updated as plain decoding would."""
    for i, d in enumerate(draft):
        row = logits[i:i + 1]
        if s.greedy:
            tok = int(sample(row, s, seen, None))
            if tok != d:
                return _take(i, tok, seen)
        else:
            p = process_logits(row, s, seen).softmax(-1)[0]
            qd = float(q[i, d]) if q is not None else 1.0
            u = float(torch.rand((), generator=gen, device=gen.device if gen is not None else "cpu"))
            if not u < min(1.0, float(p[d]) / qd):
                residual = (p - (q[i] if q is not None else torch.nn.functional.one_hot(
                    torch.tensor(d, device=p.device), p.shape[-1]).to(p.dtype))).clamp_min(0)
                # p == q leaves nothing: p itself is then the distribution to draw from
                dist = residual if float(residual.sum()) > 0 else p
                return _take(i, int(torch.multinomial(dist, 1, generator=gen)), seen)
        if seen is not None:
            seen[0, d] = True
    tok = int(sample(logits[len(draft):len(draft) + 1], s, seen, gen))
    return _take(len(draft), tok, seen)


def _take(m: int, tok: int, seen) -> tuple[int, int]:
    if seen is not None:
        seen[0, tok] = True
    return m, tok


class Speculator:
    """Speculation for one generation: the drafter, k, the pause logic and the counts (``stats``)."""

    # Short first drafts, growing fast while they are kept: a lookup draft is right in runs (a repeated line),
    # so after a kept draft the next is likely kept too. Chosen by replaying benchmarks/spec_session.py's token
    # stream through the drafter (k from 4, +2 to 10: 1.65 tokens per pass-cost; from 2, +4 to 16: 1.74).
    K_START, K_MAX, K_GROW = 2, 16, 4
    PAUSE_MAX = 128
    JUDGE_AFTER = 4  # timed passes per verdict

    def __init__(self, drafter, *, timed: bool):
        self.drafter, self.timed = drafter, timed
        self.k = self.K_START
        self.stats = SpecStats()
        self.step_time: float | None = None  # seconds of a plain one-token step (moving average)
        self.gain: float | None = None       # the last window's tokens per plain-step time
        self.paused, self.pause_len = 0, 8
        self.judged = 0                      # timed passes in the current window
        self.window_tokens, self.window_seconds = 0, 0.0
        self.unmeasured = 0                  # passes since the last plain step (re-measure now and then)

    def want_draft(self) -> bool:
        if self.paused > 0:
            self.paused -= 1
            return False
        if self.timed and (self.step_time is None and self.stats.passes >= 4 or self.unmeasured >= 32):
            return False  # a plain step to learn (again) what one costs
        return True

    def record_step(self, seconds: float) -> None:
        self.stats.steps += 1
        self.unmeasured = 0
        self.step_time = seconds if self.step_time is None else 0.7 * self.step_time + 0.3 * seconds

    def record_pass(self, drafted: int, kept: int, seconds: float) -> None:
        st = self.stats
        st.passes, st.drafted, st.accepted = st.passes + 1, st.drafted + drafted, st.accepted + kept
        self.unmeasured += 1
        self.k = min(self.k + self.K_GROW, self.K_MAX) if kept == drafted else max(1, self.k - 1)
        if not self.timed or self.step_time is None:
            return
        # Judged over a window of passes, not pass by pass: acceptance comes in runs (a repeated line is kept
        # whole, a new one rejected), and one slow pass on a busy machine is not a verdict.
        self.window_tokens += kept + 1
        self.window_seconds += seconds
        self.judged += 1
        if self.judged < self.JUDGE_AFTER:
            return
        gain = self.window_tokens * self.step_time / self.window_seconds  # tokens per plain-step time
        self.gain = gain
        self.window_tokens, self.window_seconds, self.judged = 0, 0.0, 0
        if gain < 1.0:  # slower than plain decoding lately: plain steps for a while, longer each time
            self.paused, self.pause_len = self.pause_len, min(2 * self.pause_len, self.PAUSE_MAX)
        elif gain > 1.3:
            self.pause_len = 8

    @torch.inference_mode()
    def tokens(self, model, cache, prompt: torch.Tensor, s: Sampling, gen, seen, context: list[int], *,
               decode: DecodePath = EAGER) -> Iterator[torch.Tensor]:
        """Like ``generate.decode_tokens`` for batch 1: prefill ``prompt`` (1, T), then yield (1,) token ids; after
        k tokens were yielded the cache holds the prompt and the first k-1 of them. Plain steps run along
        ``decode``, as plain decoding's do."""
        dev = model.device
        logits = model(prompt, cache, last_only=True)[:, -1]
        pending = int(sample(logits, s, seen, gen))
        if seen is not None:
            seen[0, pending] = True
        ids = list(context) + [pending]
        n_pos = model.config.n_positions
        while True:
            yield torch.tensor([pending], device=dev)
            t0 = time.perf_counter()
            room = n_pos - cache.length - 1
            draft, q = self.drafter.draft(ids, min(self.k, room), s, gen) if room > 0 and self.want_draft() \
                else ([], None)
            start = cache.length
            if not draft:  # a plain step, on the decode path plain decoding takes
                logits = decode.step(model, torch.tensor([pending], device=dev), cache)
                pending = int(sample(logits, s, seen, gen))
                if seen is not None:
                    seen[0, pending] = True
                ids.append(pending)
                self.record_step(time.perf_counter() - t0)
                continue
            logits = model(torch.tensor([[pending] + draft], device=dev), cache)[0]  # (1 + len(draft), V)
            kept, nxt = verify(logits, draft, q, s, seen, gen)
            self.record_pass(len(draft), kept, time.perf_counter() - t0)
            cache.rewind(start + 1)  # the pending token; the kept drafts' keys/values follow, still written
            for d in draft[:kept]:
                ids.append(d)
                yield torch.tensor([d], device=dev)
                cache.advance(1)
            pending = nxt
            ids.append(pending)


def check_mode(mode) -> str:
    if mode in (False, None, "off"):
        return "off"
    if mode is True:
        return "on"
    if mode not in MODES:
        raise OptionError(f"speculate={mode!r}: use 'auto' (greedy decoding, when it pays), 'on' (sampling too) "
                          "or 'off'.")
    return mode


def check_draft(target, draft) -> None:
    """A draft model must share the target's tokenizer: same vocabulary size and the same ids for a probe text."""
    probe = "def add(a, b):\n    return a + b  # héllo\n"
    if (draft.config.vocab_size != target.config.vocab_size
            or draft.tokenizer.encode(probe) != target.tokenizer.encode(probe)):
        raise OptionError(f"the draft model {draft.name!r} does not share {target.name!r}'s tokenizer (vocabulary "
                          f"{draft.config.vocab_size} against {target.config.vocab_size}); pick a draft trained "
                          "with the same tokenizer, such as the packaged model for Salesforce CodeGen checkpoints.")


def for_generation(mode: str, drafter: DraftModel | None, s: Sampling,
                   decode: DecodePath = EAGER) -> Speculator | None:
    """The speculator for one batch-1 generation under ``mode`` ('auto', 'on', 'off'), drafting with ``drafter``
    (a draft model, kept across generations so its cache is reused) or, when None, prompt lookup; or None.
    'auto' leaves a decode path with a fast decoder (CUDA graphs, compile: fast.py) alone: its one-token step is a
    replayed graph that an eager verification pass would have to beat, and may round differently from it."""
    mode = check_mode(mode)
    if mode == "off" or (mode == "auto" and not s.greedy):
        return None
    if mode == "auto" and decode.decoder is not None:
        return None
    return Speculator(drafter if drafter is not None else PromptLookup(), timed=mode == "auto")
