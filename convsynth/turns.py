"""A session's steps and the text the model reads: ``Turn`` (an instruction, its code, what happened),
``TurnStats`` (how it was generated) and the MTPB layout (``MTPB_PREAMBLE``, ``comment_lines``).

Plain data, no torch and no other convsynth module: the session, saving and loading, the magic and the widget
all read it without importing each other.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

# The preamble every MTPB problem starts from (the CodeGen paper's harness), and a session's default.
MTPB_PREAMBLE = "# Import libraries.\n\nimport numpy as np\n\n"

# Every line break Python knows (a lone \r too): an instruction's lines are split on each.
LINE_BREAK = re.compile(r"\r\n|[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]")


@dataclass
class TurnStats:
    prefill_tokens: int = 0         # prompt tokens computed for this turn
    cached_tokens: int = 0          # prompt tokens served from the KV cache
    time_to_first_token: float = 0.0
    decode_tokens_per_s: float = 0.0
    generated_tokens: int = 0
    finish_reason: str = ""         # stop | eos | length | cancelled | "" (code written by hand)
    acceptance_rate: float | None = None  # speculative decoding: share of drafted tokens kept (None: no drafts)
    drafted_tokens: int = 0


@dataclass
class Turn:
    """One step: the instruction (None for code added by hand), its code, and what happened."""
    instruction: str | None
    code: str
    stats: TurnStats = field(default_factory=TurnStats)
    result: object | None = None    # convsynth.execution.ExecutionResult once run
    expect_output: str | None = None
    check: str | None = None
    data: dict | None = None        # a shared step: name -> the pickled value (base64); see sharing.py
    attempts: list = field(default_factory=list)  # failed attempts fix() replaced: instruction, code, error
    edited: bool = False            # its code was changed by hand (edit_code) after it was generated

    @property
    def text(self) -> str:
        """This turn's part of the session text, as MTPB lays it out."""
        return comment_lines(self.instruction) + self.code + "\n\n"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["result"] = self.result.to_dict() if self.result is not None else None
        return d


def comment_lines(instruction: str | None) -> str:
    """Each line of the instruction as a comment line; lines that already are comments stay as they are (MTPB's
    problem 17 has such lines), and nothing else is changed, so prompts match the original harness byte for byte."""
    if instruction is None:
        return ""
    # Every line break starts a new comment line: otherwise text after a \r would be code in the exported program.
    return "".join((line if line.lstrip().startswith("#") else f"# {line}") + "\n"
                   for line in LINE_BREAK.split(instruction))


class Change(str):
    """What ``Session.on_change`` reports: the verb itself ("generate", "edit", "code edit", "delete", "undo",
    "run", "settings"...), so it compares equal to that string, with what it did to the steps:

    - ``added``: indices of steps that are new (appended, inserted, or brought back by undo/redo),
    - ``removed``: indices, before the change, of steps that are gone,
    - ``edited``: indices of steps replaced in place (a new instruction or code, or a new sample),
    - ``ran``: indices of steps a run gave a result to,
    - ``settings``: names of the settings that changed (``sampling``, ``timeout``, ``auto_run``...).

    Later steps that only lost their result (they must run again) are not listed.
    """
    added: tuple = ()
    removed: tuple = ()
    edited: tuple = ()
    ran: tuple = ()
    settings: tuple = ()

    def __new__(cls, what: str, *, added=(), removed=(), edited=(), ran=(), settings=()):
        self = super().__new__(cls, what)
        self.added, self.removed, self.edited = tuple(added), tuple(removed), tuple(edited)
        self.ran, self.settings = tuple(ran), tuple(settings)
        return self

    @classmethod
    def between(cls, what: str, old, new, **kw) -> "Change":
        """The change from the steps ``old`` to ``new``: the steps both lists start with (the same objects) and
        end with (copies that only lost their result) are kept; in between, as many as both have were edited,
        the rest of ``new`` added or of ``old`` removed."""
        old, new = list(old), list(new)
        n = min(len(old), len(new))
        p = 0
        while p < n and old[p] is new[p]:
            p += 1
        q = 0
        while q < n - p and _copy_of(new[-1 - q], old[-1 - q]):
            q += 1
        k = min(len(old) - q - p, len(new) - q - p)
        return cls(what, edited=range(p, p + k), added=range(p + k, len(new) - q),
                   removed=range(p + k, len(old) - q), **kw)

    def __repr__(self) -> str:
        parts = [f"{k}={v!r}" for k in ("added", "removed", "edited", "ran", "settings") if (v := getattr(self, k))]
        return f"Change({str(self)!r}{''.join(', ' + p for p in parts)})"


def _copy_of(a: Turn, b: Turn) -> bool:
    """``a`` is ``b`` or the copy of it a change leaves after the step it changed (same text, same stats)."""
    return a is b or (a.instruction == b.instruction and a.code == b.code and a.stats is b.stats
                      and a.data == b.data)
