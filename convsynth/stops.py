"""Stop rules: when to end a completion, and where to cut it.

A stop rule is a function ``text -> int | None``: given the completion decoded so far, it returns the index at
which the final completion ends once that is settled by the text seen so far, else None. Generation calls it
after every token and stops as soon as it returns an index, so the result equals truncating after the fact.
"""
from __future__ import annotations

import re
from typing import Callable, Iterable, Union

from .errors import OptionError

StopRule = Callable[[str], Union[int, None]]
StopSpec = Union[None, str, Iterable[str], StopRule]

# The terminals of the original CodeGen sampler (jaxformer's truncate), matched per line (re.MULTILINE).
CODEGEN_TERMINALS = ["^#", re.escape("<|endoftext|>"), "^'''", '^"""', "\n\n\n"]
_TERMINALS = [re.compile(p, re.MULTILINE) for p in CODEGEN_TERMINALS]
_PRINT = re.compile("^print", re.MULTILINE)
_DEF = re.compile("^def", re.MULTILINE)


def truncate_codegen(completion: str) -> str:
    """The original CodeGen truncation: cut before a second top-level ``print``, then before a second top-level
    ``def``, then at the earliest of a line starting with ``#``, ``<|endoftext|>``, a line starting with
    triple quotes, or two blank lines."""
    return completion[:_codegen_cut(completion)]


def _codegen_cut(text: str, terminals: list[re.Pattern] = _TERMINALS) -> int:
    prints = list(_PRINT.finditer(text))
    if len(prints) > 1:
        text = text[:prints[1].start()]
    defs = list(_DEF.finditer(text))
    if len(defs) > 1:
        text = text[:defs[1].start()]
    hits = [m.start() for m in (t.search(text) for t in terminals) if m]
    return min(hits) if hits else len(text)


def truncate_with(text: str, patterns: Iterable[str]) -> str:
    """The original truncation with other terminal patterns (transformers' ``CodeGenTokenizer.truncate``):
    the print/def cuts, then the earliest pattern match. No patterns: no cut at all, as the reference does."""
    patterns = tuple(patterns)
    if not patterns:
        return text
    return text[:_codegen_cut(text, [re.compile(p, re.MULTILINE) for p in patterns])]


def codegen_stop(text: str) -> int | None:
    """Stop rule for the original truncation. Every trigger is settled once it appears (a later token can only
    add matches further right), so stopping at the first trigger gives the same text as truncating at the end."""
    cut = _codegen_cut(text)
    return cut if cut < len(text) else None


class IncrementalCodegenStop:
    """``codegen_stop`` for one growing text: each call scans only what is new (plus a few characters before it,
    which covers the longest trigger and a partial character the decoder may still replace), so a generation of n
    characters costs O(n) in all instead of O(n) per token. Text must only grow by appending."""

    LOOKBACK = 16  # > len("<|endoftext|>") + the U+FFFD placeholders of a character split across tokens

    def __init__(self):
        self.seen = 0
        self.prints: set[int] = set()
        self.defs: set[int] = set()
        self.terminal: int | None = None

    def __call__(self, text: str) -> int | None:
        start = max(0, self.seen - self.LOOKBACK)
        self.prints.update(m.start() for m in _PRINT.finditer(text, start))
        self.defs.update(m.start() for m in _DEF.finditer(text, start))
        for t in _TERMINALS:
            m = t.search(text, start)
            if m and (self.terminal is None or m.start() < self.terminal):
                self.terminal = m.start()
        self.seen = len(text)
        end = len(text)
        prints = sorted(self.prints)
        if len(prints) > 1:
            end = prints[1]
        defs = sorted(d for d in self.defs if d < end)
        if len(defs) > 1:
            end = defs[1]
        if self.terminal is not None and self.terminal < end:
            end = self.terminal
        return end if end < len(text) else None


def per_sample(rule: StopRule | None) -> StopRule | None:
    """The rule to use for one sample whose text grows by appending: an incremental instance for the codegen
    preset, the rule itself otherwise."""
    return IncrementalCodegenStop() if rule is codegen_stop else rule


def regex_stop(patterns: Iterable[str]) -> StopRule:
    """Stop at the earliest match of any pattern (compiled with re.MULTILINE); the match is cut off."""
    compiled = [re.compile(p, re.MULTILINE) for p in patterns]

    def rule(text: str) -> int | None:
        hits = [m.start() for m in (c.search(text) for c in compiled) if m]
        return min(hits) if hits else None
    return rule


PRESETS: dict[str, StopRule] = {"codegen": codegen_stop}


def make_stop(stop: StopSpec) -> StopRule | None:
    """Turn a user's ``stop=`` argument into a rule: None, a preset name ('codegen'), one regex, a list of
    regexes, or a callable ``text -> cut index | None``."""
    if stop is None:
        return None
    if callable(stop):
        return stop
    if isinstance(stop, str) and stop in PRESETS:
        return PRESETS[stop]
    patterns = [stop] if isinstance(stop, str) else list(stop) if isinstance(stop, (list, tuple)) else [None]
    if not all(isinstance(p, str) for p in patterns):
        raise OptionError("stop must be None, a preset name, a regex string, a list of regex strings or a "
                          "callable.")
    for p in patterns:
        try:
            re.compile(p)
        except re.error as e:
            raise OptionError(f"stop pattern {p!r} is not a valid regular expression ({e}); escape special "
                              "characters such as ( [ * with a backslash, or pass re.escape(text)") from None
    return regex_stop(patterns)
