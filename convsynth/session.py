"""A conversational, multi-turn program: each instruction becomes a ``# comment``, the model writes that step's
code, and the next turn sees everything so far (the CodeGen paper's MTPB format).

The session keeps the model's KV cache across turns. At every turn the model sees exactly the tokenization of
the whole session text from scratch; the cache is reused up to the longest common prefix of the cached ids and
those ids, so a turn prefills only its instruction and a boundary token or two. Steps run in a sandbox process
(``convsynth.sandbox``), never in the user's kernel.
"""
from __future__ import annotations

import dataclasses
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from .errors import ContextWindowError, SessionError
from .generate import Sampling, iter_generation
from .stops import StopSpec, make_stop

MTPB_PREAMBLE = "# Import libraries.\n\nimport numpy as np\n\n"
FORMAT = "convsynth-session"


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
    return "".join((line if line.lstrip().startswith("#") else f"# {line}") + "\n"
                   for line in instruction.split("\n"))


def _attempt(instruction: str | None, turn: Turn) -> dict:
    r = turn.result
    return {"instruction": instruction, "code": turn.code, "status": r.status if r else "not run",
            "error": (r.error or r.note) if r else None}


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class Session:
    """``Session(model, preamble=MTPB_PREAMBLE, **sampling)``; then ``ask``, ``run``, ``undo``, ``edit``,
    ``regenerate``, ``add_code``, ``fork``, ``save``/``load``, ``to_python``, ``to_notebook``.

    sampling: max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed (as in ``CodeGen.complete``).
    stop: how a step ends (default 'codegen': next top-level comment, two blank lines, end of text, the
    original truncation rules). overflow: 'error' (default) or 'drop_oldest' when a turn does not fit the
    context window. timeout / memory_limit: the sandbox's limits per step. auto_run: run each step after it
    is generated. network: let steps use the network (default False). isolation: 'auto' (isolate where the
    platform can, else warn once), 'strict' (refuse to run unisolated) or 'off' (see ``convsynth.isolation``).
    cwd: the folder steps run in (default: the current directory where the session is created, in a notebook
    the notebook's folder; None: a private scratch folder removed on close). auto_fix: after a generated step
    fails, try ``fix`` up to this many times. speculate: speculative decoding ('auto', 'on', 'off'; None: the
    model's setting, see ``convsynth.load``); the turn's stats report the acceptance rate. quantize: 'int8'
    switches the model's weights to int8 (``set_quantize``; the model is shared, so other sessions see it too)."""

    def __init__(self, model, preamble: str = MTPB_PREAMBLE, *, stop: StopSpec = "codegen",
                 overflow: str = "error", timeout: float = 10.0, memory_limit: int | None = 2 * 2**30,
                 auto_run: bool = False, max_new_tokens: int = 128, temperature: float = 0.2, top_p: float = 0.95,
                 top_k: int = 0, repetition_penalty: float = 1.0, seed: int | None = None, network: bool = False,
                 isolation: str = "auto", cwd: str | Path | None = ".", auto_fix: int = 0,
                 speculate: str | None = None, quantize: str | None = None):
        if overflow not in ("error", "drop_oldest"):
            raise ValueError("overflow must be 'error' or 'drop_oldest'")
        self.cwd = str(Path(cwd).expanduser().resolve()) if cwd is not None else None
        if self.cwd is not None and not Path(self.cwd).is_dir():
            raise SessionError(f"cwd {self.cwd} is not a folder: create it first, or pass cwd=None for a private "
                               "scratch folder.")
        self.auto_fix = int(auto_fix)
        self.speculate = speculate
        if quantize is not None:
            model.set_quantize(quantize)
        self.model, self.preamble = model, preamble
        self.sampling = Sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                                 repetition_penalty=repetition_penalty, seed=seed)
        self.stop, self._stop_rule = stop, make_stop(stop)
        self.overflow, self.timeout, self.memory_limit, self.auto_run = overflow, timeout, memory_limit, auto_run
        from .isolation import MODES
        if isolation not in MODES:
            raise ValueError(f"isolation must be one of {', '.join(MODES)}")
        self.network, self.isolation = bool(network), isolation
        self.turns: list[Turn] = []
        self.dropped: list[Turn] = []  # turns dropped from the prompt by overflow='drop_oldest' (kept for export)
        self.preamble_result = None
        self._cache = None
        self._cached_ids: list[int] = []  # exactly the ids whose keys/values the cache holds
        self._draws = 0                  # generations so far: seeds each one differently but reproducibly
        self._lock = threading.RLock()
        self._cancel = threading.Event()
        self._sandbox = None
        self._ran: list[str] = []         # code that the sandbox has run successfully, in order

    # ---- the text the model sees -------------------------------------------------------------------------
    @property
    def text(self) -> str:
        """The whole session text: preamble, then each turn's comment lines and code."""
        return self.preamble + "".join(t.text for t in self.turns)

    def _tokens(self, text: str) -> list[int]:
        return self.model.tokenizer.encode(text)

    def _reuse(self, ids: list[int]) -> int:
        """Rewind the cache to its common prefix with ``ids`` (keeping one id to prefill) and return it."""
        if self._cache is None:
            self._cache = self.model.model.new_cache()
        keep = min(common_prefix(self._cached_ids, ids), len(ids) - 1)
        self._cache.rewind(keep)
        self._cached_ids = self._cached_ids[:keep]
        return keep

    def _sync_cache(self) -> None:
        """After the text changed without generating (undo, cut tokens): forget what no longer matches."""
        if self._cache is not None:
            keep = common_prefix(self._cached_ids, self._tokens(self.text))
            self._cache.rewind(keep)
            self._cached_ids = self._cached_ids[:keep]

    @property
    def cached_tokens(self) -> int:
        return len(self._cached_ids)

    def prompt_tokens(self, instruction: str | None = None) -> list[tuple[str, bool]]:
        """The prompt the model would see next (with ``instruction`` appended), as (token text, served from
        the cache) pairs: a teaching view of what cache reuse saves."""
        ids = self._tokens(self.text + comment_lines(instruction))
        keep = min(common_prefix(self._cached_ids, ids), max(len(ids) - 1, 0))
        return [(p, i < keep) for i, p in enumerate(self.model.tokenizer.pieces(ids))]

    # ---- turns -------------------------------------------------------------------------------------------
    def ask(self, instruction: str, *, on_text: Callable[[str], None] | None = None, run: bool | None = None,
            expect_output: str | None = None, check: str | None = None, **overrides) -> Turn:
        """Append ``# instruction``, generate the step's code and append it. ``on_text`` gets the code as it
        is decoded. ``overrides``: sampling settings for this turn only. Returns the Turn."""
        gen = self.ask_stream(instruction, run=run, expect_output=expect_output, check=check, **overrides)
        while True:
            try:
                piece = next(gen)
            except StopIteration as done:
                return done.value
            if on_text is not None:
                on_text(piece)

    def ask_stream(self, instruction: str, *, run: bool | None = None, expect_output: str | None = None,
                   check: str | None = None, **overrides) -> Iterator[str]:
        """Like ``ask`` but a generator of code pieces; its return value (StopIteration.value) is the Turn."""
        instruction = self._check_instruction(instruction)
        s = self.sampling.replace(**overrides)
        with self._lock:
            self._cancel.clear()
            if s.seed is not None:
                s = dataclasses.replace(s, seed=s.seed + self._draws)
            self._draws += 1
            ids = self._fit(self._tokens(self.text + comment_lines(instruction)), s, instruction)
            if getattr(self.model, "remote", False):  # a server holds the KV cache (convsynth.remote)
                comp = yield from self.model.session_turn(self, self.text + comment_lines(instruction), len(ids),
                                                          s, self._stop_rule, self._cancel)
                keep = comp.cached_tokens
            else:
                with self.model.lock:
                    keep = self._reuse(ids)
                    gen = iter_generation(self.model.model, self.model.tokenizer, self._cache, ids[keep:], s,
                                          self._stop_rule, cancel=self._cancel, context_ids=ids,
                                          speculate=self._speculate_mode(),
                                          drafter=getattr(self.model, "drafter", None))
                    try:
                        while True:
                            _, piece = next(gen)
                            yield piece
                    except StopIteration as done:
                        comp = done.value
                    except BaseException:
                        self._cached_ids = ids[:self._cache.length] if self._cache.length <= len(ids) else []
                        self._cache.rewind(len(self._cached_ids))
                        raise
                    # The cache now holds the prompt and every sampled token but the last.
                    self._cached_ids = (ids + comp.raw_ids[0])[:self._cache.length]
            turn = Turn(instruction, comp.texts[0], TurnStats(
                prefill_tokens=len(ids) - keep, cached_tokens=keep,
                time_to_first_token=comp.time_to_first_token, decode_tokens_per_s=comp.decode_tokens_per_s,
                generated_tokens=comp.generated_tokens, finish_reason=comp.finish_reasons[0],
                acceptance_rate=getattr(comp, "acceptance_rate", None),
                drafted_tokens=getattr(comp, "drafted_tokens", 0)),
                expect_output=expect_output, check=check)
            self.turns.append(turn)
            self._sync_cache()  # tokens that were generated but cut (and boundary tokens) leave the cache
        if (run if run is not None else self.auto_run) and turn.stats.finish_reason != "cancelled":
            self.run()  # a cancelled turn is not run: the user stopped it
        return turn

    def set_quantize(self, quantize: str | None) -> None:
        """Switch the model's weights ('int8' or None for float, see ``CodeGen.set_quantize``); the KV cache, made
        with the old weights, is dropped, so the next turn prefills the session text once."""
        with self._lock:
            self.model.set_quantize(quantize)
            self._cache, self._cached_ids = None, []

    def _speculate_mode(self) -> str:
        mode = self.speculate if self.speculate is not None else getattr(self.model, "speculate", "off")
        if mode in ("off", False, None):
            return "off"
        from .speculative import check_mode
        return check_mode(mode)

    def _check_instruction(self, instruction) -> str:
        if not isinstance(instruction, str):
            raise TypeError(f"instruction must be a str, not {type(instruction).__name__}")
        if not instruction.strip():
            raise SessionError("the instruction is empty: say in words what the next step should do.")
        return instruction.strip("\r\n")  # spaces stay: MTPB prompts keep theirs

    def _fit(self, ids: list[int], s: Sampling, instruction: str) -> list[int]:
        n = self.model.config.n_positions
        while len(ids) + s.max_new_tokens > n:
            if self.overflow == "drop_oldest" and self.turns:
                self.dropped.append(self.turns.pop(0))
                ids = self._tokens(self.text + comment_lines(instruction))
                continue
            raise ContextWindowError(
                f"the context window is full: the session text uses {len(ids)} of {n} tokens and this turn asks "
                f"for up to {s.max_new_tokens} new ones. Undo or edit earlier turns, lower max_new_tokens, or "
                "create the session with overflow='drop_oldest' to drop the oldest turns (the preamble stays).")
        return ids

    def cancel(self) -> None:
        """Stop a running generation or run (from any thread). A generated turn keeps what was generated so far
        and says finish_reason 'cancelled'; a run interrupts its step and runs no further ones."""
        self._cancel.set()
        if self._sandbox is not None:
            self._sandbox.interrupt()

    def add_code(self, code: str, instruction: str | None = None) -> Turn:
        """Append a step written by hand (the model sees it from the next turn on)."""
        if not isinstance(code, str) or not code.strip():
            raise SessionError("add_code needs some code.")
        with self._lock:
            turn = Turn(instruction.strip() if instruction else None, code.rstrip("\n") + "\n")
            self.turns.append(turn)
        return turn

    def undo(self) -> Turn:
        """Drop the last turn and rewind the cache (nothing is recomputed); the sandbox forgets it too."""
        with self._lock:
            if not self.turns:
                raise SessionError("nothing to undo: the session has no turns.")
            turn = self.turns.pop()
            self._sync_cache()
            if turn.result is not None:
                self._reset_sandbox()
            return turn

    def edit(self, index: int, instruction: str, **kw) -> Turn:
        """Replace turn ``index``'s instruction and generate it again; later turns are dropped. The cached
        prefix before it is reused."""
        instruction = self._check_instruction(instruction)
        with self._lock:
            i = self._index(index)
            dropped, self.turns = self.turns[i:], self.turns[:i]
            self._sync_cache()
            if any(t.result is not None for t in dropped):
                self._reset_sandbox()
            return self.ask(instruction, **kw)

    def regenerate(self, **kw) -> Turn:
        """Generate the last turn again (a new sample unless decoding is greedy)."""
        with self._lock:
            if not self.turns:
                raise SessionError("nothing to regenerate: the session has no turns.")
            last = self.turns[-1]
            if last.instruction is None or last.data is not None:
                raise SessionError("the last step was written by hand; there is nothing to regenerate.")
            self.undo()
            return self.ask(last.instruction, expect_output=last.expect_output, check=last.check, **kw)

    def _index(self, index: int) -> int:
        if not isinstance(index, int) or not -len(self.turns) <= index < len(self.turns):
            raise SessionError(f"turn index {index!r} is out of range: the session has {len(self.turns)} turns "
                               f"(0..{len(self.turns) - 1}).")
        return index % len(self.turns)

    def fork(self, at: int | None = None) -> "Session":
        """An independent session sharing the history up to turn ``at`` (default: all of it)."""
        with self._lock:
            n = len(self.turns) if at is None else (self._index(at) if at < len(self.turns) else len(self.turns))
            new = Session.__new__(Session)
            new.__dict__.update({k: v for k, v in self.__dict__.items()
                                 if k not in ("_lock", "_cancel", "_sandbox", "_cache", "_ran", "turns")})
            new._lock, new._cancel, new._sandbox, new._ran = threading.RLock(), threading.Event(), None, []
            new.turns = [dataclasses.replace(t, stats=dataclasses.replace(t.stats)) for t in self.turns[:n]]
            new.dropped = list(self.dropped)
            new._cache = self._cache.fork() if self._cache is not None else None
            new._cached_ids = list(self._cached_ids)
            new._sync_cache()
            return new

    # ---- execution ---------------------------------------------------------------------------------------
    @property
    def sandbox(self):
        """The sandbox process this session's steps run in (started on first use)."""
        if self._sandbox is None:
            from .sandbox import Sandbox
            self._sandbox = Sandbox(timeout=self.timeout, memory_limit=self.memory_limit, network=self.network,
                                    isolation=self.isolation, cwd=self.cwd)
            if self.preamble_result is not None or any(t.result is not None for t in self.turns):
                self._reset_sandbox()  # a loaded or forked session: bring the namespace back first
        return self._sandbox

    def run(self, *, timeout: float | None = None, upto: int | None = None) -> list:
        """Run the steps not yet run, in order, through step ``upto`` (an index into ``turns``; all by default).
        Returns their ExecutionResults (each also on its Turn). ``cancel()`` from another thread interrupts the
        running step and runs no further ones; the steps not reached keep ``result`` None. With ``auto_fix``, a
        generated step that fails is fixed (``fix``) up to that many times before the run goes on."""
        with self._lock:
            self._cancel.clear()
            return self._run(timeout, upto, fix=self.auto_fix > 0)

    def _run(self, timeout: float | None, upto: int | None, fix: bool) -> list:
        results = []
        n = len(self.turns)
        if upto is not None and not -n <= upto < n:
            raise SessionError(f"there is no step {upto} to run up to: the session has {n} steps.")
        if self.preamble.strip() and self.preamble_result is None:
            self.preamble_result = self.sandbox.run(self.preamble, timeout=timeout, name="the preamble")
        for i in range(n if upto is None else upto % n + 1):  # by index: a fix replaces the turn in place
            turn = self.turns[i]
            if self._cancel.is_set():
                break
            if turn.result is None:
                turn.result = self.sandbox.run(self._code(turn), timeout=timeout, expect_output=turn.expect_output,
                                               check=turn.check, name=f"step {i + 1}")
                for _ in range(self.auto_fix if fix and turn.instruction is not None and turn.data is None else 0):
                    if turn.result.ok or self._cancel.is_set():
                        break
                    turn = self.fix(i)
                results.append(turn.result)
        return results

    @staticmethod
    def _code(turn: Turn) -> str:
        """What the sandbox runs for a turn: its code, or for a shared step the code that unpickles the values."""
        if turn.data is not None:
            from .sharing import load_code
            return load_code(turn.data)
        return turn.code

    def fix(self, index: int, **overrides) -> Turn:
        """Generate failed step ``index`` again with its error added to the instruction as a comment line, and
        run it. The new step replaces the failed one only if it runs; every failed attempt is kept in the step's
        ``attempts``. Returns the step now at ``index`` (check ``.result.ok``)."""
        with self._lock:
            i = self._index(index)
            old = self.turns[i]
            if old.result is None or old.result.ok:
                how = "it has not run" if old.result is None else "it ran"
                raise SessionError(f"step {i + 1} has not failed ({how}): there is nothing to fix. Run it first "
                                   "with run().")
            if old.instruction is None or old.data is not None:
                raise SessionError(f"step {i + 1} was not generated, so it cannot be generated again: change its "
                                   "code or undo it.")
            error = (old.result.error or old.result.note or old.result.status).splitlines()[0]
            asked = f"{old.instruction}\nFix: {error}"
            history = old.attempts or [_attempt(old.instruction, old)]
            before, later = self.turns[:i], self.turns[i + 1:]
            ran_later = any(t.result is not None for t in later)
            self.turns = list(before)
            self._sync_cache()
            if ran_later:  # the namespace must be the one step i saw
                self._reset_sandbox()
            try:
                new = self.ask(asked, run=False, expect_output=old.expect_output, check=old.check, **overrides)
                new.instruction = old.instruction  # the program keeps the plain instruction
                if new.stats.finish_reason != "cancelled":
                    self._run(None, i, fix=False)
            except BaseException:
                self.turns = before + [old] + later
                self._sync_cache()
                raise
            if new.result is not None and new.result.ok:
                new.attempts = history
                for t in later:  # they ran after the broken step: run them again
                    t.result = None
                self.turns = before + [new] + later
            else:
                old.attempts = history + [_attempt(asked, new)]
                self.turns = before + [old] + later
                if ran_later:
                    self._reset_sandbox()
            self._sync_cache()
            return self.turns[i]

    # ---- the notebook's values -----------------------------------------------------------------------------
    def share(self, **values) -> Turn:
        """Copy picklable values from the notebook into the sandbox (``s.share(df=df)``) as a step the model
        sees: each name with its type and a short description. Steps before it that have not run are run first.
        A value that cannot be pickled, or unpickled in the sandbox, raises SessionError and nothing is kept."""
        from . import sharing
        if not values:
            raise SessionError("share needs values to share: s.share(df=df, names=names).")
        data = sharing.pickle_values(values)
        instruction, code = sharing.share_step(values)
        with self._lock:
            turn = Turn(instruction, code, data=data)
            self.turns.append(turn)
            try:
                self._cancel.clear()
                self._run(None, len(self.turns) - 1, fix=False)
            finally:
                if turn.result is None or not turn.result.ok:
                    self.turns = [t for t in self.turns if t is not turn]
                    self._sync_cache()
            if turn.result is None or not turn.result.ok:
                why = "the run was stopped" if turn.result is None else turn.result.error or turn.result.note
                raise SessionError(f"could not share {', '.join(values)}: the sandbox could not load "
                                   f"{'it' if len(values) == 1 else 'them'} ({why})"
                                   ". Nothing was shared. A class defined in the notebook must live in a module "
                                   "both sides import.")
            return turn

    def get(self, name: str):
        """Bring a picklable value back from the sandbox: ``df = s.get("df")``. Nothing is run but the look."""
        from . import sharing
        if not isinstance(name, str) or not name.isidentifier():
            raise SessionError(f"get needs a variable name such as 'df', not {name!r}.")
        with self._lock:
            if self._sandbox is None and self.preamble_result is None and all(t.result is None for t in self.turns):
                raise SessionError(f"nothing has run in the sandbox yet, so there is no {name!r}: run the steps "
                                   "first with run().")
            res = self.sandbox.run(sharing.fetch_code(name), keep=False)
        found = [b[sharing.PICKLE_MIME] for b in res.outputs if sharing.PICKLE_MIME in b]
        if res.ok and found:
            return sharing.unpickle(name, found[0])
        if res.ok:
            raise SessionError(f"{name!r} is too large to bring back (its pickle passed the sandbox's output limit):"
                               " write it to a file in the session's folder in a step and read it here.")
        if (res.error or "").startswith("NameError"):
            raise SessionError(f"the sandbox has no variable {name!r}: run the step that defines it first, or "
                               "check the name.")
        raise SessionError(f"cannot bring {name!r} back from the sandbox ({res.error or res.note}); convert it to "
                           "plain data (lists, dicts, arrays, DataFrames) in a step first.")

    def _reset_sandbox(self) -> None:
        """Bring the sandbox back to the kept steps: a fresh process replaying those that ran successfully."""
        if self._sandbox is None:
            return
        replay = [self.preamble] if self.preamble_result is not None and self.preamble_result.ok else []
        replay += [self._code(t) for t in self.turns if t.result is not None and t.result.ok]
        self._sandbox.restart(replay=replay)

    @property
    def isolation_info(self) -> str:
        """What confines this session's steps, in one short line (from the sandbox once it has started)."""
        from . import isolation
        sb = self._sandbox
        return sb.isolation.describe() if sb is not None else isolation.describe(self.isolation, self.network)

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- saving and export -------------------------------------------------------------------------------
    def to_python(self) -> str:
        """The program so far: the preamble and every step with its instruction as a comment, one blank line
        between steps (the session text the model reads keeps MTPB's layout)."""
        parts = [self.preamble] + [comment_lines(t.instruction) + t.code for t in self.turns]
        return "\n\n".join(p.strip("\n") for p in parts if p.strip()) + "\n"

    def _state(self, turn: Turn) -> str:
        return "not run" if turn.result is None else turn.result.status

    def __repr__(self) -> str:
        states = [self._state(t) for t in self.turns]
        counts = ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states))
        return (f"<convsynth.Session {self.model.name}: {len(states)} step{'' if len(states) == 1 else 's'}"
                f"{f' ({counts})' if counts else ''}, cwd={self.cwd or 'a private folder'}, "
                f"sandbox {self.isolation_info}>")

    def _repr_html_(self) -> str:
        """The steps and their state as a table (Jupyter shows this for a session at the end of a cell)."""
        from html import escape
        rows = []
        for i, t in enumerate(self.turns, 1):
            what = escape(t.instruction) if t.instruction is not None else "<i>code written by hand</i>"
            err = escape((t.result.error or t.result.note or "") if t.result is not None and not t.result.ok else "")
            rows.append(f"<tr><td>{i}</td><td style='text-align:left'>{what}</td><td>{self._state(t)}</td>"
                        f"<td style='text-align:left'>{err}</td></tr>")
        return (f"<div class='convsynth-session'><b>convsynth session</b> &middot; {escape(self.model.name)} "
                f"&middot; folder <code>{escape(self.cwd or 'a private folder')}</code> &middot; sandbox "
                f"{escape(self.isolation_info)}"
                "<table><thead><tr><th>step</th><th>instruction</th><th>state</th><th>error</th></tr></thead>"
                f"<tbody>{''.join(rows)}</tbody></table></div>")

    def to_dict(self) -> dict:
        cfg = self.model.config
        return {"format": FORMAT, "version": 1, "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "model": {"name": self.model.name, "n_embd": cfg.n_embd, "n_layer": cfg.n_layer,
                          "n_head": cfg.n_head, "vocab_size": cfg.vocab_size},
                "preamble": self.preamble, "sampling": self.sampling.to_dict(),
                "stop": self.stop if isinstance(self.stop, (str, list, type(None))) else "custom",
                "overflow": self.overflow, "timeout": self.timeout, "memory_limit": self.memory_limit,
                "network": self.network, "isolation": self.isolation,
                "preamble_result": self.preamble_result.to_dict() if self.preamble_result is not None else None,
                "turns": [t.to_dict() for t in self.turns]}

    def save(self, path: str | Path) -> Path:
        """Write the session as JSON (model, settings, turns, execution results)."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path, model) -> "Session":
        """Restore a saved session onto ``model`` (which must have the same shape as the one that made it).
        Steps that ran are replayed in the sandbox on the next run."""
        from . import session_io
        return session_io.load(cls, path, model)

    def to_notebook(self, path: str | Path) -> Path:
        """Write an .ipynb: a markdown cell per instruction and a code cell per step, with their outputs."""
        from . import session_io
        return session_io.write_notebook(self, path)

    def widget(self):
        """This session in a Jupyter widget (cards, streaming, Stop, settings, prompt view); needs ipywidgets."""
        from .widget import SessionWidget
        return SessionWidget(self)
