"""A conversational, multi-turn program: each instruction becomes a ``# comment``, the model writes that step's
code, and the next turn sees everything so far (the CodeGen paper's MTPB format).

The session keeps the model's KV cache across turns. At every turn the model sees exactly the tokenization of
the whole session text from scratch; the cache is reused up to the longest common prefix of the cached ids and
those ids, so a turn prefills only its instruction and a boundary token or two. Steps run in a sandbox process
(``convsynth.sandbox``), never in the user's kernel.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from .errors import ContextWindowError, SessionError, describe
from .generate import Sampling, iter_generation
from .history import History, Snapshot, write_atomic
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


@dataclass
class Turn:
    """One step: the instruction (None for code added by hand), its code, and what happened."""
    instruction: str | None
    code: str
    stats: TurnStats = field(default_factory=TurnStats)
    result: object | None = None    # convsynth.execution.ExecutionResult once run
    expect_output: str | None = None
    check: str | None = None
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
    return "".join((line if line.lstrip().startswith("#") else f"# {line}") + "\n"
                   for line in instruction.split("\n"))


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class Session:
    """``Session(model, preamble=MTPB_PREAMBLE, **sampling)``; then ``ask``, ``run``, ``rerun``, ``edit``,
    ``edit_code``, ``regenerate``, ``add_code``, ``delete``, ``undo``/``redo``, ``fork``, ``save``/``load``,
    ``to_python``, ``to_notebook``.

    sampling: max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed (as in ``CodeGen.complete``).
    stop: how a step ends (default 'codegen': next top-level comment, two blank lines, end of text, the
    original truncation rules). overflow: 'error' (default) or 'drop_oldest' when a turn does not fit the
    context window. timeout / memory_limit: the sandbox's limits per step. auto_run: run each step after it
    is generated. autosave: a path the session is saved to after every change and run."""

    def __init__(self, model, preamble: str = MTPB_PREAMBLE, *, stop: StopSpec = "codegen",
                 overflow: str = "error", timeout: float = 10.0, memory_limit: int | None = 2 * 2**30,
                 auto_run: bool = False, max_new_tokens: int = 128, temperature: float = 0.2, top_p: float = 0.95,
                 top_k: int = 0, repetition_penalty: float = 1.0, seed: int | None = None,
                 autosave: str | Path | None = None):
        if overflow not in ("error", "drop_oldest"):
            raise ValueError("overflow must be 'error' or 'drop_oldest'")
        self.model, self.preamble = model, preamble
        self.sampling = Sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                                 repetition_penalty=repetition_penalty, seed=seed)
        self.stop, self._stop_rule = stop, make_stop(stop)
        self.overflow, self.timeout, self.memory_limit, self.auto_run = overflow, timeout, memory_limit, auto_run
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
        self._start_history(autosave)

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
        with self._lock, self._change("generate"):
            self._cancel.clear()
            if s.seed is not None:
                s = dataclasses.replace(s, seed=s.seed + self._draws)
            self._draws += 1
            ids = self._fit(self._tokens(self.text + comment_lines(instruction)), s, instruction)
            with self.model.lock:
                keep = self._reuse(ids)
                gen = iter_generation(self.model.model, self.model.tokenizer, self._cache, ids[keep:], s,
                                      self._stop_rule, cancel=self._cancel, context_ids=ids)
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
                generated_tokens=comp.generated_tokens, finish_reason=comp.finish_reasons[0]),
                expect_output=expect_output, check=check)
            self.turns.append(turn)
            self._sync_cache()  # tokens that were generated but cut (and boundary tokens) leave the cache
        if (run if run is not None else self.auto_run) and turn.stats.finish_reason != "cancelled":
            self.run()  # a cancelled turn is not run: the user stopped it
        return turn

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
        with self._lock, self._change("add code"):
            turn = Turn(instruction.strip() if instruction else None, code.rstrip("\n") + "\n")
            self.turns.append(turn)
        return turn

    def edit(self, index: int, instruction: str, *, regenerate_following: bool = False, **kw) -> Turn:
        """Replace turn ``index``'s instruction and generate its code again. The later turns stay, code
        unchanged (the model sees the new step from then on), unless ``regenerate_following``: then the later
        generated turns are generated again too (steps written by hand stay). The cached prefix before the
        step is reused. Later steps lose their results (they must run again). One change for undo."""
        instruction = self._check_instruction(instruction)
        return self._generate_at(self._index(index), instruction, regenerate_following, "edit", **kw)

    def regenerate(self, index: int = -1, **kw) -> Turn:
        """Generate turn ``index`` (the last by default) again: a new sample unless decoding is greedy. The
        later turns stay, as with ``edit``."""
        with self._lock:
            if not self.turns:
                raise SessionError("nothing to regenerate: the session has no turns.")
            i = self._index(index)
            if self.turns[i].instruction is None:
                raise SessionError(f"step {i + 1} was written by hand; there is nothing to regenerate "
                                   "(edit its code, or delete it).")
            return self._generate_at(i, self.turns[i].instruction, False, "regenerate", **kw)

    def _generate_at(self, i: int, instruction: str, following: bool, what: str, **kw) -> Turn:
        run = kw.pop("run", None)
        with self._lock:
            with self._change(what):
                old, later = self.turns[i], self.turns[i + 1:]
                reset = any(t.result is not None for t in self.turns[i:])
                self.turns = self.turns[:i]
                self._sync_cache()
                turn = self.ask(instruction, expect_output=old.expect_output, check=old.check, run=False, **kw)
                kw.pop("on_text", None)  # the pieces of the edited step only
                for t in later:
                    if following and t.instruction is not None and turn.stats.finish_reason != "cancelled":
                        self.ask(t.instruction, expect_output=t.expect_output, check=t.check, run=False, **kw)
                    else:
                        self.turns.append(dataclasses.replace(t, result=None))
                self._sync_cache()
                if reset:  # after generating, so the sandbox restart does not delay the first token
                    self._reset_sandbox()
            if (run if run is not None else self.auto_run) and turn.stats.finish_reason != "cancelled":
                self.run()
            return turn

    def edit_code(self, index: int, code: str) -> Turn:
        """Replace turn ``index``'s code by hand (the turn is marked ``edited``; the model sees the new code from
        then on). It and the later steps lose their results and must run again. Returns the new Turn."""
        if not isinstance(code, str) or not code.strip():
            raise SessionError("edit_code needs some code; to remove the step, use delete(index).")
        code = code.rstrip("\n") + "\n"
        with self._lock, self._change("code edit"):
            i = self._index(index)
            old = self.turns[i]
            if code == old.code:
                return old
            self._replace_from(i, [dataclasses.replace(old, code=code, result=None, edited=True)])
            return self.turns[i]

    def delete(self, index: int) -> Turn:
        """Remove turn ``index``; the later turns stay (without their results: they must run again)."""
        with self._lock, self._change("delete"):
            i = self._index(index)
            removed = self.turns[i]
            self._replace_from(i, [])
            return removed

    def _replace_from(self, i: int, new: list[Turn]) -> None:
        """Put ``new`` in place of turn i; the later turns become copies without results (a Turn object always
        follows the same earlier steps: history.py relies on it) and the sandbox forgets what it ran of them."""
        reset = any(t.result is not None for t in self.turns[i:])
        self.turns[i:] = new + [dataclasses.replace(t, result=None) for t in self.turns[i + 1:]]
        self._sync_cache()
        if reset:
            self._reset_sandbox()

    def rerun(self, index: int = -1, *, timeout: float | None = None) -> list:
        """Run turn ``index`` again, whatever its result (a failed or timed-out step too): the sandbox is brought
        back to the steps before it, then the steps through it that have no result run. Returns their results."""
        with self._lock:
            i = self._index(index)
            if any(t.result is not None for t in self.turns[i:]):
                for t in self.turns[i:]:
                    t.result = None  # in place: a run is not a change to undo (history.py)
                self._reset_sandbox()
            return self.run(timeout=timeout, upto=i)

    # ---- history: undo, redo, autosave, listeners ------------------------------------------------------------
    def _start_history(self, autosave=None) -> None:
        self.autosave = Path(autosave) if autosave is not None else None
        self.autosave_error: str | None = None  # why the last autosave failed, if it did
        self.history = History(Snapshot(tuple(self.turns), tuple(self.dropped)))
        self._depth = 0  # _change blocks entered: nested verbs (edit calls ask) make one change
        self._listeners: list[Callable[[str], None]] = []

    @contextlib.contextmanager
    def _change(self, what: str):
        """A block that changes the turns: recorded as one undoable change when it ends, autosaved and reported
        to listeners; if it raises, the turns are put back as they were (nothing half-done stays)."""
        with self._lock:
            self._depth += 1
            before = Snapshot(tuple(self.turns), tuple(self.dropped))
            try:
                yield
            except BaseException:
                if self._depth == 1:
                    self._restore(before)
                raise
            finally:
                self._depth -= 1
            if self._depth == 0:
                self._catch_up(what)

    def _catch_up(self, what: str = "change") -> bool:
        """Record the turns as a change if they differ from the last snapshot (also changes made by assigning
        to ``turns`` directly); returns whether they did."""
        if self.history.current.same(self.turns, self.dropped):
            return False
        self.history.record(Snapshot(tuple(self.turns), tuple(self.dropped), what))
        self._changed(what)
        return True

    def _restore(self, snap: Snapshot) -> None:
        ran_before = [t for t in self.turns if t.result is not None]
        self.turns, self.dropped = list(snap.turns), list(snap.dropped)
        self._sync_cache()
        ran_now = [t for t in self.turns if t.result is not None]
        if len(ran_now) != len(ran_before) or any(a is not b for a, b in zip(ran_now, ran_before)):
            self._reset_sandbox()  # the sandbox ran other steps than those kept: replay the kept ones

    def undo(self) -> Turn | None:
        """Revert the last change, whatever it was (a generated step, an edit, a regenerate, a code edit, a
        delete...); the cache is rewound, nothing is recomputed, and the sandbox forgets steps no longer
        there. Returns the turn the change had made (None when it made none, e.g. a delete)."""
        with self._lock:
            self._catch_up()
            snap = self.history.back()
            if snap is None:
                raise SessionError("nothing to undo: the session has not changed since it started or was loaded.")
            made = [t for t in self.turns if all(t is not u for u in snap.turns)]
            self._restore(snap)
            self._changed("undo")
            return made[-1] if made else None

    def redo(self) -> Turn | None:
        """Apply again the change the last undo reverted (its code as it was: nothing is generated). Returns the
        turn it brings back (None when it brings none)."""
        with self._lock:
            if self._catch_up():
                raise SessionError("nothing to redo: the session changed since the last undo.")
            snap = self.history.forward()
            if snap is None:
                raise SessionError("nothing to redo: no change was undone.")
            back = [t for t in snap.turns if all(t is not u for u in self.turns)]
            self._restore(snap)
            self._changed("redo")
            return back[-1] if back else None

    def on_change(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(what)`` after every change ("generate", "edit", "undo", "run"...), from the thread that
        made it. Views subscribe here instead of keeping a copy of the turns."""
        self._listeners.append(callback)

    def _changed(self, what: str) -> None:
        if self.autosave is not None:
            try:
                write_atomic(self.autosave, json.dumps(self.to_dict(), indent=1))
                self.autosave_error = None
            except (OSError, TypeError, ValueError) as e:  # the change itself stands; say why it was not saved
                if self.autosave_error is None:
                    warnings.warn(f"convsynth: could not autosave to {self.autosave} ({describe(e)})", stacklevel=3)
                self.autosave_error = describe(e)
        for callback in list(self._listeners):
            try:
                callback(what)
            except Exception as e:  # noqa: BLE001 - a broken view must not break the session
                warnings.warn(f"convsynth: an on_change listener failed ({describe(e)})", stacklevel=3)

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
                                 if k not in ("_lock", "_cancel", "_sandbox", "_cache", "_ran", "turns", "history",
                                              "_listeners", "autosave")})
            new._lock, new._cancel, new._sandbox, new._ran = threading.RLock(), threading.Event(), None, []
            new.turns = [dataclasses.replace(t, stats=dataclasses.replace(t.stats)) for t in self.turns[:n]]
            new.dropped = list(self.dropped)
            new._cache = self._cache.fork() if self._cache is not None else None
            new._cached_ids = list(self._cached_ids)
            new._sync_cache()
            new._start_history()
            return new

    # ---- execution ---------------------------------------------------------------------------------------
    @property
    def sandbox(self):
        """The sandbox process this session's steps run in (started on first use)."""
        if self._sandbox is None:
            from .sandbox import Sandbox
            self._sandbox = Sandbox(timeout=self.timeout, memory_limit=self.memory_limit)
            if self.preamble_result is not None or any(t.result is not None for t in self.turns):
                self._reset_sandbox()  # a loaded or forked session: bring the namespace back first
        return self._sandbox

    def run(self, *, timeout: float | None = None, upto: int | None = None) -> list:
        """Run the steps not yet run, in order, through step ``upto`` (an index into ``turns``; all by default).
        Returns their ExecutionResults (each also on its Turn). ``cancel()`` from another thread interrupts the
        running step and runs no further ones; the steps not reached keep ``result`` None."""
        with self._lock:
            self._cancel.clear()
            results = []
            n = len(self.turns)
            if upto is not None and not -n <= upto < n:
                raise SessionError(f"there is no step {upto} to run up to: the session has {n} steps.")
            if self.preamble.strip() and self.preamble_result is None:
                self.preamble_result = self.sandbox.run(self.preamble, timeout=timeout)
            for turn in self.turns[:n if upto is None else upto % n + 1]:
                if self._cancel.is_set():
                    break
                if turn.result is None:
                    turn.result = self.sandbox.run(turn.code, timeout=timeout, expect_output=turn.expect_output,
                                                   check=turn.check)
                    results.append(turn.result)
            if results:
                self._changed("run")  # outputs are saved too; not an undoable change
            return results

    def _reset_sandbox(self) -> None:
        """Bring the sandbox back to the kept steps: a fresh process replaying those that ran successfully."""
        if self._sandbox is None:
            return
        replay = [self.preamble] if self.preamble_result is not None and self.preamble_result.ok else []
        replay += [t.code for t in self.turns if t.result is not None and t.result.ok]
        self._sandbox.restart(replay=replay)

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
        """The program so far: the preamble and every step with its instruction as a comment."""
        return self.text.rstrip("\n") + "\n"

    def to_dict(self) -> dict:
        cfg = self.model.config
        return {"format": FORMAT, "version": 1, "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "model": {"name": self.model.name, "n_embd": cfg.n_embd, "n_layer": cfg.n_layer,
                          "n_head": cfg.n_head, "vocab_size": cfg.vocab_size},
                "preamble": self.preamble, "sampling": self.sampling.to_dict(),
                "stop": self.stop if isinstance(self.stop, (str, list, type(None))) else "custom",
                "overflow": self.overflow, "timeout": self.timeout, "memory_limit": self.memory_limit,
                "preamble_result": self.preamble_result.to_dict() if self.preamble_result is not None else None,
                "turns": [t.to_dict() for t in self.turns]}

    def save(self, path: str | Path) -> Path:
        """Write the session as JSON (model, settings, turns, execution results)."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path, model, *, autosave: str | Path | None = None) -> "Session":
        """Restore a saved session onto ``model`` (which must have the same shape as the one that made it).
        Steps that ran are replayed in the sandbox on the next run. ``autosave``: a path to save to after
        each change from now on (may be ``path`` itself). Undo starts from the loaded state."""
        from . import session_io
        session = session_io.load(cls, path, model)
        session._start_history(autosave)
        return session

    def to_notebook(self, path: str | Path) -> Path:
        """Write an .ipynb: a markdown cell per instruction and a code cell per step, with their outputs."""
        from . import session_io
        return session_io.write_notebook(self, path)

    def widget(self):
        """This session in a Jupyter widget (cards, streaming, Stop, settings, prompt view); needs ipywidgets."""
        from .widget import SessionWidget
        return SessionWidget(self)
