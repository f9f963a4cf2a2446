"""A conversational, multi-turn program: each instruction becomes a ``# comment``, the model writes that step's
code, and the next turn sees everything so far (the CodeGen paper's MTPB format).

The session keeps the model's KV cache across turns. At every turn the model sees exactly the tokenization of
the whole session text from scratch; the cache is reused up to the longest common prefix of the cached ids and
those ids, so a turn prefills only its instruction and a boundary token or two. Steps run in a sandbox process
(``convsynth.sandbox``), never in the user's kernel.
"""
from __future__ import annotations

import contextlib
import importlib
import dataclasses
import json
import threading
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator

from .cache import PrefixCache, common_prefix  # noqa: F401 - common_prefix: its old home
from .execution import MEMORY_LIMIT  # light: a kernel starts only when a step runs
from .errors import ContextWindowError, SessionError, UsageError, describe
from .generate import Run, Sampling, iter_generation, locked_steps
from .history import History, Snapshot
from . import session_io
from .session_io import FORMAT, write_atomic
from .stops import StopSpec, make_stop
from .turns import LINE_BREAK, MTPB_PREAMBLE, Change, Turn, TurnStats, comment_lines  # noqa: F401 - public here too

# No token of a CodeGen vocabulary is longer than this many characters (the longest is 66): a text longer than
# n_positions times this cannot fit the context, and is refused before tokenizing it (that costs ~300 bytes a char).
MAX_TOKEN_CHARS = 128
# A turn whose stream has sat half-read this long (no piece taken) is left by its reader, not slow: another
# thread's call gives up waiting for it with an error rather than waiting forever.
STALLED_S = 5.0
# Attributes whose change is reported to on_change listeners as a "settings" change.
SETTINGS = ("sampling", "stop", "overflow", "timeout", "memory_limit", "auto_run", "auto_fix", "network", "isolation",
            "speculate")


def _attempt(instruction: str | None, turn: Turn) -> dict:
    r = turn.result
    return {"instruction": instruction, "code": turn.code, "status": r.status if r else "not run",
            "error": (r.error or r.note) if r else None}


class Session:
    """``Session(model, preamble=MTPB_PREAMBLE, **sampling)``; then ``ask``, ``run``, ``rerun``, ``edit``,
    ``edit_code``, ``regenerate``, ``add_code``, ``delete``, ``undo``/``redo``, ``fork``, ``save``/``load``,
    ``to_python``, ``to_notebook``.

    sampling: a ``Sampling`` (default ``Sampling()``), and/or single settings on top of it: max_new_tokens,
    temperature, top_p, top_k, repetition_penalty, seed (as in ``CodeGen.complete``).
    stop: how a step ends (default 'codegen': next top-level comment, two blank lines, end of text, the
    original truncation rules). overflow: 'error' (default) or 'drop_oldest' when a turn does not fit the
    context window. timeout / memory_limit: the sandbox's limits per step. auto_run: run each step after it
    is generated. network: let steps use the network (default False). isolation: 'auto' (isolate where the
    platform can, else warn once), 'strict' (refuse to run unisolated) or 'off' (see ``convsynth.isolation``).
    cwd: the folder steps run in (default: the current directory where the session is created, in a notebook
    the notebook's folder; None: a private scratch folder removed on close). auto_fix: after a generated step
    fails, try ``fix`` up to this many times. autosave: a path the session is saved to after every change and
    run. speculate: speculative decoding ('auto', 'on', 'off'; None: the model's setting, see ``convsynth.load``);
    the turn's stats report the acceptance rate. quantize: 'int8' switches the model's weights to int8
    (``set_quantize``; the model is shared, so other sessions on it see it too)."""

    def __init__(self, model, preamble: str = MTPB_PREAMBLE, *, stop: StopSpec = "codegen",
                 overflow: str = "error", timeout: float = 10.0, memory_limit: int | None = MEMORY_LIMIT,
                 auto_run: bool = False, max_new_tokens: int | None = None, temperature: float | None = None,
                 top_p: float | None = None, top_k: int | None = None, repetition_penalty: float | None = None,
                 seed: int | None = None, network: bool = False, isolation: str = "auto", cwd: str | Path | None = ".",
                 auto_fix: int = 0, autosave: str | Path | None = None, sampling: Sampling | None = None,
                 speculate: str | None = None, quantize: str | None = None):
        if overflow not in ("error", "drop_oldest"):
            raise UsageError(f"overflow={overflow!r} must be 'error' or 'drop_oldest'.")
        if not hasattr(model, "tokenizer") or not hasattr(model, "config"):
            raise SessionError(f"Session needs a loaded model, not {type(model).__name__} {model!r:.60}: "
                               "Session(convsynth.load(...)) (convsynth.load() alone is the packaged model).")
        if not isinstance(preamble, str):
            raise SessionError(f"preamble must be a str (\"\" for none), not {type(preamble).__name__}.")
        from .execution import check_limits  # light: no kernel is started here
        check_limits(timeout, memory_limit, SessionError)
        vocab = getattr(model.config, "vocab_size", None)  # a remote engine's config does not say
        if vocab is not None and len(model.tokenizer) > vocab:  # text ids past the embedding rows: IndexError later
            raise SessionError(f"this model has {vocab} embedding rows but its tokenizer "
                               f"{len(model.tokenizer)} tokens: it can take token ids, not text. Load a checkpoint "
                               "whose vocab_size covers the tokenizer.")
        self.cwd = str(Path(cwd).expanduser().resolve()) if cwd is not None else None
        if self.cwd is not None and not Path(self.cwd).is_dir():
            raise SessionError(f"cwd {self.cwd} is not a folder: create it first, or pass cwd=None for a private "
                               "scratch folder.")
        if isinstance(auto_fix, bool) or not isinstance(auto_fix, int) or auto_fix < 0:
            raise SessionError(f"auto_fix={auto_fix!r} must be a whole number of attempts >= 0 (0: off).")
        self.auto_fix = auto_fix
        if speculate is not None:
            from .speculative import check_mode
            check_mode(speculate)  # a bad value is refused here, not at the first turn
        self.speculate = speculate
        self.model, self.preamble = model, preamble
        self.sampling = Sampling.of(sampling, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                    top_k=top_k, repetition_penalty=repetition_penalty, seed=seed)
        self.stop, self._stop_rule = stop, make_stop(stop)
        self.overflow, self.timeout, self.memory_limit, self.auto_run = overflow, timeout, memory_limit, auto_run
        from .isolation import MODES
        if isolation not in MODES:
            raise UsageError(f"isolation={isolation!r} must be one of {', '.join(MODES)}.")
        self.network, self.isolation = bool(network), isolation
        self.turns: list[Turn] = []
        self.dropped: list[Turn] = []  # turns dropped from the prompt by overflow='drop_oldest' (kept for export)
        self.preamble_result = None
        # the cached ids live with the cache, which is dropped when the model's weights change (set_quantize)
        self.prefix = PrefixCache(lambda: self.model.module.new_cache(), weights=lambda: self.model.weights)
        self._draws = 0                  # generations so far: seeds each one differently but reproducibly
        self._lock = threading.RLock()   # held only for short, non-yielding sections; never while a callback runs
        self._idle = threading.Condition(self._lock)
        self._turn_in_progress = False   # an ask_stream between its first step and its end
        self._turn_thread = None         # the thread that last advanced it
        self._turn_waiting = None        # since when (monotonic) it sits at a yield for its reader; None: working
        self._cancel = threading.Event()
        self._sandbox = None
        self._ran: list[str] = []         # code that the sandbox has run successfully, in order
        self._start_history(autosave)
        if quantize is not None:  # last: the model is shared, and every other argument was checked by now
            self.set_quantize(quantize)

    def __setattr__(self, name, value) -> None:
        old = self.__dict__.get(name, self)
        object.__setattr__(self, name, value)
        if name in SETTINGS and old is not self and "_listeners" in self.__dict__ and old != value:
            self._changed(Change("settings", settings=(name,)))  # autosaved; a view's sliders follow code

    # ---- the text the model sees -------------------------------------------------------------------------
    @property
    def text(self) -> str:
        """The whole session text: preamble, then each turn's comment lines and code."""
        return self.preamble + "".join(t.text for t in self.turns)

    def _tokens(self, text: str) -> list[int]:
        limit = self.model.config.n_positions * MAX_TOKEN_CHARS
        if len(text) > limit:
            raise ContextWindowError(
                f"the session text has {len(text)} characters, more than a context window of "
                f"{self.model.config.n_positions} tokens can hold (at most {limit}): undo or edit earlier turns, "
                "or use overflow='drop_oldest'.")
        return self.model.tokenizer.encode(text)

    def _sync_cache(self) -> None:
        """After the text changed without generating (undo, cut tokens): the prefix cache forgets what no longer
        matches (the text is tokenized only once a cache exists)."""
        if self.prefix.cache is not None:
            self.prefix.sync(self._tokens(self.text))

    @property
    def cached_tokens(self) -> int:
        return len(self.prefix)

    def prompt_tokens(self, instruction: str | None = None) -> list[tuple[str, bool]]:
        """The prompt the model would see next (with ``instruction`` appended), as (token text, served from
        the cache) pairs: a teaching view of what cache reuse saves."""
        ids = self._tokens(self.text + comment_lines(instruction))
        keep = self.prefix.match(ids)
        return [(p, i < keep) for i, p in enumerate(self.model.tokenizer.pieces(ids))]

    # ---- turns -------------------------------------------------------------------------------------------
    def ask(self, instruction: str, *, on_text: Callable[[str], None] | None = None, run: bool | None = None,
            expect_output: str | None = None, check: str | None = None, **overrides) -> Turn:
        """Append ``# instruction``, generate the step's code and append it. ``on_text`` gets the code as it
        is decoded. ``overrides``: sampling settings for this turn only. Returns the Turn."""
        turn = Run(self.ask_stream(instruction, run=run, expect_output=expect_output, check=check, **overrides))
        try:
            for piece in turn:
                if on_text is not None:
                    on_text(piece)
            return turn.result
        finally:
            turn.close()  # a callback that raised ends the turn now, not when its traceback is collected

    def ask_stream(self, instruction: str, *, run: bool | None = None, expect_output: str | None = None,
                   check: str | None = None, **overrides) -> Iterator[str]:
        """Like ``ask`` but a generator of code pieces; its return value (StopIteration.value) is the Turn.
        No lock is held while it is suspended: it may be finished in another thread, or closed half-way (the
        session is then as before the turn)."""
        instruction = self._check_instruction(instruction)
        s = self.sampling.replace(**overrides)
        with self._lock:
            self._wait_idle()
            before = self._begin_change()  # one change, recorded when the turn ends (put back if it fails)
            try:
                self._cancel.clear()
                if s.seed is not None:
                    s = dataclasses.replace(s, seed=s.seed + self._draws)
                self._bound_text(instruction)
                ids = self._fit(self._tokens(self.text + comment_lines(instruction)), s, instruction)
                self._draws += 1
                remote = getattr(self.model, "remote", False)  # a server holds the KV cache (convsynth.remote)
                keep = 0 if remote else self.prefix.reuse(ids)
            except BaseException:
                self._end_change(before, "generate", failed=True)
                raise
            self._turn_in_progress, self._turn_thread, self._turn_waiting = True, threading.get_ident(), None
        failed = True
        try:
            if remote:
                gen = Run(self.model.session_turn(self, self.text + comment_lines(instruction), len(ids), s,
                                                  self._stop_rule, self._cancel))  # pieces; no lock of ours inside
            else:
                gen = Run(locked_steps(iter_generation(self.model.module, self.model.tokenizer, self.prefix.cache,
                                                       ids[keep:], s, self._stop_rule, cancel=self._cancel,
                                                       context_ids=ids, decode=self.model.decoding,
                                                       speculator=self.model.speculator(s, self._speculate_mode())),
                                       self.model.lock))
            try:
                self._turn_thread = threading.get_ident()
                for item in gen:
                    self._turn_waiting = time.monotonic()
                    yield item if remote else item[1]
                    self._turn_thread, self._turn_waiting = threading.get_ident(), None  # whoever advances it next
                comp = gen.result
            except BaseException:
                if not remote:
                    self.prefix.record(ids)  # what the cache holds of the prompt, if anything
                raise
            finally:
                gen.close()
            with self._lock:
                if remote:
                    keep = comp.cached_tokens
                else:  # the cache now holds the prompt and every sampled token but the last
                    self.prefix.record(ids + comp.raw_ids[0])
                turn = Turn(instruction, comp.texts[0], TurnStats(
                    prefill_tokens=len(ids) - keep, cached_tokens=keep,
                    time_to_first_token=comp.time_to_first_token, decode_tokens_per_s=comp.decode_tokens_per_s,
                    generated_tokens=comp.generated_tokens, finish_reason=comp.finish_reasons[0],
                    acceptance_rate=comp.acceptance_rate, drafted_tokens=comp.drafted_tokens),
                    expect_output=expect_output, check=check)
                self.turns.append(turn)
                self._sync_cache()  # tokens that were generated but cut (and boundary tokens) leave the cache
            failed = False
        finally:
            with self._lock:
                self._turn_in_progress, self._turn_thread, self._turn_waiting = False, None, None
                try:
                    self._end_change(before, "generate", failed)
                finally:
                    self._idle.notify_all()
        if (run if run is not None else self.auto_run) and turn.stats.finish_reason != "cancelled":
            self.run()  # a cancelled turn is not run: the user stopped it
        return turn

    def _wait_idle(self) -> None:
        """With the lock held: wait until no turn is being generated. A turn suspended in this very thread can
        never finish while we wait (a callback of it, or a second stream zipped with it): that is an error."""
        while self._turn_in_progress:
            if self._turn_thread == threading.get_ident():
                raise SessionError("this session is in the middle of a turn (an ask_stream that is not finished, "
                                   "or a callback of it): finish or close() that stream first.")
            since = self._turn_waiting
            if since is not None and time.monotonic() - since > STALLED_S:
                # only its reader can move it on: waiting here could be forever (cancel() cannot end it either)
                raise SessionError(f"this session has a turn half-read for over {STALLED_S:g} s (an ask_stream "
                                   "that another piece of code started and has not finished): finish or close() "
                                   "that stream first.")
            self._idle.wait(timeout=0.5)

    # ---- decoding: int8 weights and speculation ------------------------------------------------------------
    def set_quantize(self, quantize: str | None) -> None:
        """Switch the model's weights ('int8' or None for float, see ``CodeGen.set_quantize``). The KV cache, made
        with the old weights, is dropped (here, and in any other session on the model at its next turn), so the
        next turn prefills the session text once. Reported to ``on_change`` as a "settings" change ("quantize")."""
        if getattr(self.model, "remote", False):
            raise SessionError("the weights of a remote model are the server's: start the server with the weights "
                               "you want.")
        with self._lock:
            self._wait_idle()
            before = self.model.weights
            self.model.set_quantize(quantize)  # a new CodeGen.weights: self.prefix forgets its keys/values
            changed = self.model.weights != before
        if changed:
            self._notify(Change("settings", settings=("quantize",)))

    def _speculate_mode(self) -> str:
        """The speculation this session's turns use: its own ``speculate``, else the model's."""
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
        return "\n".join(LINE_BREAK.split(instruction)).strip("\n")  # spaces stay: MTPB prompts keep theirs

    def _bound_text(self, instruction: str) -> None:
        """With overflow='drop_oldest', drop the oldest turns while the text is too long to be tokenized at all."""
        limit = self.model.config.n_positions * MAX_TOKEN_CHARS
        while self.overflow == "drop_oldest" and self.turns and \
                len(self.text) + len(comment_lines(instruction)) > limit:
            self.dropped.append(self.turns.pop(0))

    def _check_turn(self, prefix: str, instruction: str, overrides: dict) -> None:
        """Everything ``ask`` would refuse for a turn after ``prefix``, checked before edit/regenerate drop turns."""
        s = self.sampling.replace(**{k: v for k, v in overrides.items()
                                     if k not in ("on_text", "run", "expect_output", "check")})
        n = self.model.config.n_positions
        if self.overflow == "drop_oldest":
            prefix = self.preamble
        used = len(self._tokens(prefix + comment_lines(instruction)))
        if used + s.max_new_tokens > n:
            raise ContextWindowError(f"this turn does not fit the context window: {used} of {n} tokens and up "
                                     f"to {s.max_new_tokens} new ones. Shorten the instruction or lower "
                                     "max_new_tokens; no turn was changed.")

    def _fit(self, ids: list[int], s: Sampling, instruction: str) -> list[int]:
        n = self.model.config.n_positions
        if self.overflow == "drop_oldest" and len(ids) + s.max_new_tokens > n:
            alone = len(self._tokens(self.preamble + comment_lines(instruction)))  # no turn dropped if hopeless
            if alone + s.max_new_tokens > n:
                raise ContextWindowError(
                    f"this turn cannot fit even with every earlier turn dropped: the preamble and the instruction "
                    f"use {alone} of {n} tokens and it asks for up to {s.max_new_tokens} new ones. Shorten the "
                    "instruction or lower max_new_tokens.")
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
        if instruction is not None and not isinstance(instruction, str):
            raise SessionError(f"instruction must be a str or None, not {type(instruction).__name__}.")
        with self._lock, self._change("add code"):
            turn = Turn(self._check_instruction(instruction) if instruction and instruction.strip() else None,
                        code.rstrip("\n") + "\n")
            self.turns.append(turn)
        return turn

    def edit(self, index: int, instruction: str, *, regenerate_following: bool = False, **kw) -> Turn:
        """Replace turn ``index``'s instruction and generate its code again. The later turns stay, code
        unchanged (the model sees the new step from then on), unless ``regenerate_following``: then the later
        generated turns are generated again too (steps written by hand stay). The cached prefix before the
        step is reused. Later steps lose their results (they must run again). One change for undo. Returns the
        edited Turn, or the later one a Stop (``cancel``) cut short: finish_reason 'cancelled' says the edit was
        stopped (the steps after it keep their old code)."""
        instruction = self._check_instruction(instruction)
        return self._generate_at(self._index(index), instruction, regenerate_following, "edit", **kw)

    def regenerate(self, index: int = -1, **kw) -> Turn:
        """Generate turn ``index`` (the last by default) again: a new sample unless decoding is greedy. The
        later turns stay, as with ``edit``."""
        with self._lock:
            self._wait_idle()
            if not self.turns:
                raise SessionError("nothing to regenerate: the session has no turns.")
            i = self._index(index)
            if self.turns[i].instruction is None or self.turns[i].data is not None:
                how = "was written by hand" if self.turns[i].data is None else "shares values from the notebook"
                raise SessionError(f"step {i + 1} {how}; there is nothing to regenerate (edit its code, or delete "
                                   "it).")
            return self._generate_at(i, self.turns[i].instruction, False, "regenerate", **kw)

    def _generate_at(self, i: int, instruction: str, following: bool, what: str, **kw) -> Turn:
        run = kw.pop("run", None)
        with self._lock:
            with self._change(what):
                # everything ask would refuse (sampling, context window), before a turn is touched
                self._check_turn(self.preamble + "".join(t.text for t in self.turns[:i]), instruction, kw)
                old, later = self.turns[i], self.turns[i + 1:]
                reset = any(t.result is not None for t in self.turns[i:])
                self.turns = self.turns[:i]
                self._sync_cache()
                turn = self.ask(instruction, expect_output=old.expect_output, check=old.check, run=False, **kw)
                kw.pop("on_text", None)  # the pieces of the edited step only
                ended = turn  # where generation ended: this step, or a later one that a Stop cut short
                for t in later:
                    # a Stop ends the regeneration: during a step (ask clears the flag as it starts) or between two
                    if following and t.instruction is not None and t.data is None and \
                            ended.stats.finish_reason != "cancelled" and not self._cancel.is_set():
                        new = self.ask(t.instruction, expect_output=t.expect_output, check=t.check, run=False, **kw)
                        ended = new if new.stats.finish_reason == "cancelled" else ended
                    else:
                        self.turns.append(dataclasses.replace(t, result=None))
                self._sync_cache()
                if reset:  # after generating, so the sandbox restart does not delay the first token
                    self._reset_sandbox()
            if (run if run is not None else self.auto_run) and ended.stats.finish_reason != "cancelled":
                self.run()
            return ended

    def edit_code(self, index: int, code: str) -> Turn:
        """Replace turn ``index``'s code by hand (the turn is marked ``edited``; the model sees the new code from
        then on). It and the later steps lose their results and must run again. Returns the new Turn."""
        if not isinstance(code, str) or not code.strip():
            raise SessionError("edit_code needs some code; to remove the step, use delete(index).")
        code = code.rstrip("\n") + "\n"
        with self._lock, self._change("code edit"):
            i = self._index(index)
            old = self.turns[i]
            if old.data is not None:
                raise SessionError(f"step {i + 1} shares values from the notebook, its code only shows them: share "
                                   "them again (share) or delete the step.")
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
            self._wait_idle()
            i = self._index(index)
            self._cancel.clear()  # now, not after the replay: a Stop during the replay stops the rerun
            if any(t.result is not None for t in self.turns[i:]):
                for t in self.turns[i:]:
                    t.result = None  # in place: a run is not a change to undo (history.py)
                self._reset_sandbox()
            return self._run_and_report(timeout, i)

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
        to listeners; if it raises, the turns are put back as they were (nothing half-done stays). It waits for
        a turn being generated in another thread (and refuses one suspended in this thread)."""
        with self._lock:
            self._wait_idle()
            before = self._begin_change()
            try:
                yield
            except BaseException:
                self._end_change(before, what, failed=True)
                raise
            self._end_change(before, what, failed=False)

    def _begin_change(self) -> Snapshot:
        """With the lock held: enter a change (nested ones, such as the ask inside an edit, make one change)."""
        self._depth += 1
        return Snapshot(tuple(self.turns), tuple(self.dropped))

    def _end_change(self, before: Snapshot, what: str, failed: bool) -> None:
        """With the lock held: leave a change; the outermost records it, or puts ``before`` back if it failed."""
        self._depth -= 1
        if self._depth == 0:
            if failed:
                self._restore(before)
            else:
                self._catch_up(what)

    def _catch_up(self, what: str = "change") -> bool:
        """Record the turns as a change if they differ from the last snapshot (also changes made by assigning
        to ``turns`` directly); returns whether they did."""
        if self.history.current.same(self.turns, self.dropped):
            return False
        before = self.history.current.turns
        self.history.record(Snapshot(tuple(self.turns), tuple(self.dropped), what))
        self._changed(Change.between(what, before, self.turns))
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
            self._wait_idle()
            self._catch_up()
            snap = self.history.back()
            if snap is None:
                raise SessionError("nothing to undo: the session has not changed since it started or was loaded.")
            made = [t for t in self.turns if all(t is not u for u in snap.turns)]
            before = list(self.turns)
            self._restore(snap)
            self._changed(Change.between("undo", before, self.turns))
            return made[-1] if made else None

    def redo(self) -> Turn | None:
        """Apply again the change the last undo reverted (its code as it was: nothing is generated). Returns the
        turn it brings back (None when it brings none)."""
        with self._lock:
            self._wait_idle()
            if self._catch_up():
                raise SessionError("nothing to redo: the session changed since the last undo.")
            snap = self.history.forward()
            if snap is None:
                raise SessionError("nothing to redo: no change was undone.")
            back = [t for t in snap.turns if all(t is not u for u in self.turns)]
            before = list(self.turns)
            self._restore(snap)
            self._changed(Change.between("redo", before, self.turns))
            return back[-1] if back else None

    def on_change(self, callback: Callable[[Change], None]) -> None:
        """Call ``callback(change)`` after every change, from the thread that made it: ``change`` is the verb
        ("generate", "edit", "undo", "run", "settings"...; it compares equal to that string) with the indices of
        the steps it ``added``, ``removed``, ``edited`` and ``ran``, and the ``settings`` it changed (see
        ``convsynth.turns.Change``). Views subscribe here instead of keeping a copy of the turns."""
        self._listeners.append(callback)

    def _changed(self, what: str) -> None:
        """A change to save and report (autosave, then listeners)."""
        if self.autosave is not None:
            try:
                write_atomic(self.autosave, json.dumps(self.to_dict(), indent=1), parents=True)
                self.autosave_error = None
            except (OSError, TypeError, ValueError) as e:  # the change itself stands; say why it was not saved
                if self.autosave_error is None:
                    warnings.warn(f"convsynth: could not autosave to {self.autosave} ({describe(e)})", stacklevel=3)
                self.autosave_error = describe(e)
        self._notify(what if isinstance(what, Change) else Change(what))

    def _notify(self, change: Change) -> None:
        for callback in list(self._listeners):
            try:
                callback(change)
            except Exception as e:  # noqa: BLE001 - a broken view must not break the session
                warnings.warn(f"convsynth: an on_change listener failed ({describe(e)})", stacklevel=3)

    def _index(self, index: int) -> int:
        if not isinstance(index, int) or not -len(self.turns) <= index < len(self.turns):
            raise SessionError(f"turn index {index!r} is out of range: the session has {len(self.turns)} turns "
                               f"(0..{len(self.turns) - 1}).")
        return index % len(self.turns)

    def fork(self, at: int | None = None) -> "Session":
        """An independent session sharing the history up to turn ``at`` (default: all of it)."""
        if at is not None and (isinstance(at, bool) or not isinstance(at, int)):
            raise SessionError(f"fork(at={at!r}): at is a turn index (an int), or None for all the turns.")
        with self._lock:
            n = len(self.turns) if at is None else (self._index(at) if at < len(self.turns) else len(self.turns))
            new = Session.__new__(Session)
            new.__dict__.update({k: v for k, v in self.__dict__.items()
                                 if k not in ("_lock", "_idle", "_cancel", "_sandbox", "prefix", "_ran", "turns",
                                              "history", "_listeners", "autosave")})
            new._lock, new._cancel, new._sandbox, new._ran = threading.RLock(), threading.Event(), None, []
            new._idle, new._turn_in_progress, new._turn_thread = threading.Condition(new._lock), False, None
            new._turn_waiting = None
            new.turns = [dataclasses.replace(t, stats=dataclasses.replace(t.stats)) for t in self.turns[:n]]
            new.dropped = [dataclasses.replace(t, stats=dataclasses.replace(t.stats)) for t in self.dropped]
            with self.model.lock:  # a turn in progress in another thread writes the cache between its steps
                new.prefix = self.prefix.fork()
            new._sync_cache()
            new._start_history()
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
            self._wait_idle()
            self._cancel.clear()
            return self._run_and_report(timeout, upto)

    def _run_and_report(self, timeout: float | None, upto: int | None) -> list:
        if timeout is not None:
            from .execution import check_limits
            check_limits(timeout, None, SessionError)
        results = self._run(timeout, upto, fix=self.auto_fix > 0)
        if results:  # outputs are saved too; not an undoable change
            self._changed(Change("run", ran=[i for i, t in enumerate(self.turns)
                                             if any(t.result is r for r in results)]))
        return results

    def _run(self, timeout: float | None, upto: int | None, fix: bool) -> list:
        results = []
        n = len(self.turns)
        if upto is not None and (not isinstance(upto, int) or not -n <= upto < n):
            raise SessionError(f"there is no step {upto!r} to run up to: the session has {n} steps.")
        # A preamble that failed, timed out or was cancelled runs again: every step depends on it.
        if self.preamble.strip() and (self.preamble_result is None or not self.preamble_result.ok):
            self.preamble_result = self.sandbox.run(self.preamble, timeout=timeout, name="the preamble")
        pre = self.preamble_result
        missing = "" if pre is None or pre.ok else \
            f"The preamble did not run ({pre.status}: {pre.error or pre.note}), so its names are missing."

        def run_one(turn: Turn, name: str) -> None:
            turn.result = self.sandbox.run(self._code(turn), timeout=timeout, expect_output=turn.expect_output,
                                           check=turn.check, name=name)
            if missing:
                turn.result.note = f"{missing} {turn.result.note}".strip()

        # Dropped turns left the prompt, not the program: they run first.
        for j, turn in enumerate(self.dropped):
            if self._cancel.is_set():
                return results
            if turn.result is None:
                run_one(turn, f"dropped step {j + 1}")
                results.append(turn.result)
        for i in range(n if upto is None else upto % n + 1):  # by index: a fix replaces the turn in place
            turn = self.turns[i]
            if self._cancel.is_set():
                break
            if turn.result is None:
                run_one(turn, f"step {i + 1}")
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
        with self._lock, self._change("fix"):
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
            self._check_turn(self.preamble + "".join(t.text for t in before), asked, overrides)  # before any change
            ran_later = any(t.result is not None for t in later)
            self.turns = list(before)
            self._sync_cache()
            if ran_later:  # the namespace must be the one step i saw
                self._reset_sandbox()
            # if this raises, _change puts the turns back as they were and replays the sandbox if it must
            new = self.ask(asked, run=False, expect_output=old.expect_output, check=old.check, **overrides)
            new.instruction = old.instruction  # the program keeps the plain instruction
            if new.stats.finish_reason != "cancelled":
                self._run(None, i, fix=False)
            if new.result is not None and new.result.ok:  # a change: undo brings the failed step back
                new.attempts = history
                # they ran after the broken step: copies without results (history.py), to run again
                self.turns = before + [new] + [dataclasses.replace(t, result=None) for t in later]
            else:  # no change to the program: the attempt is noted on the step, as a run notes its result
                old.attempts = history + [_attempt(asked, new)]
                self.turns = before + [old] + later
                if ran_later:
                    self._reset_sandbox()
                self._changed("fix")  # saved and shown, though there is nothing to undo
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
        with self._lock, self._change("share"):
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
        """Bring the sandbox back to the kept steps: a fresh process replaying those that ran successfully. When
        one fails to replay (a file it read is gone, a Stop), it and the later ones lose their results: their
        names are not in the namespace, so they show as not run and the next run runs them again."""
        if self._sandbox is None:
            return
        kept = [None] if self.preamble_result is not None and self.preamble_result.ok else []  # None: preamble
        kept += [t for t in self.dropped + self.turns if t.result is not None and t.result.ok]
        note = self._sandbox.restart(replay=[self.preamble if t is None else self._code(t) for t in kept])
        if note:
            lost = kept[len(self._sandbox.history):]
            for t in lost:
                if t is None:
                    self.preamble_result = None
                else:
                    t.result = None
            first = "the preamble" if lost[0] is None else f"step {(self.dropped + self.turns).index(lost[0]) + 1}"
            warnings.warn(f"convsynth: the sandbox {note.replace('restarted it', 'restarted')} From {first} on "
                          "the steps show as not run; run() runs them again.", RuntimeWarning, stacklevel=3)

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
        """The program so far: the preamble and every step (dropped ones too) with its instruction as a comment,
        one blank line between steps (the session text the model reads keeps MTPB's layout)."""
        parts = [self.preamble] + [comment_lines(t.instruction) + t.code for t in self.dropped + self.turns]
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
                # a callable cannot be saved: a marker, so that load does not read its name as a regex
                "stop": self.stop if isinstance(self.stop, (str, list, type(None))) else
                {"callable": getattr(self.stop, "__qualname__", type(self.stop).__name__)},
                "overflow": self.overflow, "timeout": self.timeout, "memory_limit": self.memory_limit,
                "network": self.network, "isolation": self.isolation,
                "preamble_result": self.preamble_result.to_dict() if self.preamble_result is not None else None,
                "turns": [t.to_dict() for t in self.turns], "dropped": [t.to_dict() for t in self.dropped]}

    def save(self, path: str | Path) -> Path:
        """Write the session as JSON (model, settings, turns, execution results)."""
        return session_io.write_file(path, json.dumps(self.to_dict(), indent=1), "the session")

    @classmethod
    def load(cls, path: str | Path, model, *, stop: StopSpec | None = None,
             autosave: str | Path | None = None) -> "Session":
        """Restore a saved session onto ``model`` (which must have the same shape as the one that made it).
        Steps that ran are replayed in the sandbox on the next run. ``stop``: the stop rule, needed when the session
        was saved with a callable one (which cannot be saved). ``autosave``: a path to save to after each change
        from now on (may be ``path`` itself). Undo starts from the loaded state."""
        session = session_io.load(cls, path, model, stop=stop)
        session._start_history(autosave)
        return session

    def to_notebook(self, path: str | Path) -> Path:
        """Write an .ipynb: a markdown cell per instruction and a code cell per step, with their outputs."""
        return session_io.write_notebook(self, path)

    def widget(self):
        """This session in a Jupyter widget (cards, streaming, Stop, settings, prompt view); needs ipywidgets.
        The same as ``convsynth.widget.SessionWidget(session)``: the session does not import its views (they import
        it and subscribe with ``on_change``), so the widget module is looked up by name, only when asked for."""
        return importlib.import_module(f"{__package__}.widget").SessionWidget(self)
