"""The Jupyter UI: ``convsynth.ui()`` or ``Session.widget()`` shows a session as a chat of program steps.

ipywidgets plus three small anywidget pieces (``widget_front.py``: the input boxes whose Enter carries the text,
the in-place code editor, the kernel-gone banner and file links). Generation and execution run in a background
thread so the kernel stays responsive; the thread updates widgets (throttled while streaming) and never prints,
so nothing lands in the wrong cell. The session owns the state: the widget subscribes to its changes
(``on_change``) and keeps no copy. Every element of note has a ``convsynth-*`` CSS class.
"""
from __future__ import annotations

import functools
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from .errors import ConvsynthError, MissingDependency, SessionError, require

W = require("ipywidgets", extra="ui", what="the widget")
require("pygments", extra="ui", what="the widget")
if int(W.__version__.split(".")[0]) < 8:  # Colab ships ipywidgets 7: its Accordion titles and comms differ
    raise MissingDependency(f"the widget needs ipywidgets 8 (this kernel has {W.__version__}, as Colab ships): "
                            "pip install -U 'ipywidgets>=8' and restart the kernel, or use Session and the "
                            "%%convsynth magic without the widget")
require("anywidget", extra="ui", what="the widget")
from . import widget_files  # noqa: E402 - after the checks above
from .widget_front import Bridge, CodeBox, TextBox  # noqa: E402
from .widget_html import (CSS, _n, code_html, esc, prompt_html, result_html, shown_outputs,  # noqa: E402
                          stats_html)

STREAM_INTERVAL = 0.08  # seconds between streamed code updates (each one is a comm message)


@dataclass
class Work:
    """What the widget's action thread and the thread that shows it share, in one object. The UI side writes it
    before an action starts (``begin``) and Stop sets ``stop_requested``; the action thread writes the rest until
    it ends (``end``)."""
    busy: bool = False
    action: str = ""               # "run" while steps run: the cards say "running" on the steps that will
    stop_requested: bool = False   # Stop was pressed (perhaps before generating began)
    hold: tuple | None = None      # (index, later turns) while a step in the middle is generated
    final: str = ""                # the status to show when the action ends ("Undid the edit.")
    run_upto: int | None = None    # the step a card's Run runs through (None: all)

    def begin(self, action: str) -> None:
        self.busy, self.action, self.stop_requested, self.final = True, action, False, ""

    def end(self) -> None:
        self.busy, self.action, self.hold = False, "", None


def _button(label, cls, tooltip="", style=""):
    b = W.Button(description=label, tooltip=tooltip, button_style=style, layout=W.Layout(width="auto"))
    b.add_class(cls)
    return b


def _html(cls: str, value: str = "") -> W.HTML:
    h = W.HTML(value)
    h.add_class(cls)
    return h


def _close_tree(widget) -> None:
    for child in getattr(widget, "children", ()):
        _close_tree(child)
    widget.close()


def _show(widget, visible: bool) -> None:
    widget.layout.display = None if visible else "none"


def _guarded(method):
    """Callbacks from the front end report their errors in the widget instead of the kernel log."""
    @functools.wraps(method)
    def wrapper(self, *args, **kw):
        try:
            return method(self, *args, **kw)
        except Exception as e:  # noqa: BLE001 - shown to the user, not swallowed
            getattr(self, "owner", self).show_error(e)
    return wrapper


class _Card(W.VBox):
    """One turn: instruction, its code (click to edit), execution output, stats and the turn's buttons."""

    def __init__(self, owner: "SessionWidget", turn=None):
        self.owner, self.turn, self.index = owner, turn, 0
        self.head, self.output, self.stats = (_html("convsynth-card-instruction"), _html("convsynth-output"),
                                              _html("convsynth-stats"))
        self.code = CodeBox()
        self.code.add_class("convsynth-code")
        self.outputs = W.Output()  # the step's outputs, rendered by the front end as in a cell
        self.outputs.add_class("convsynth-outputs")
        self._shown = None  # the result whose outputs are shown
        self.fix_button = _button("Fix", "convsynth-fix", "Generate this step again with its error in the "
                                  "instruction; it replaces the step only if it runs", "warning")
        self.run_button = _button("Run", "convsynth-run", "Run this step (and the steps before it not run yet)")
        self.edit_button = _button("Edit", "convsynth-edit", "Change the instruction and generate this step again")
        self.regenerate_button = _button("Regenerate", "convsynth-regenerate", "Sample this step again")
        self.delete_button = _button("Delete", "convsynth-delete", "Remove this step (Undo brings it back)")
        self.editor = TextBox(button="Generate this step", button_classes=["convsynth-edit-save"])
        self.editor.add_class("convsynth-edit-box")
        self.editor.layout.flex = "1 1 auto"
        self.following = W.Checkbox(False, description="and the steps after it", indent=False,
                                    layout=W.Layout(width="auto"))
        self.following.add_class("convsynth-edit-following")
        self.cancel_button = _button("Cancel", "convsynth-edit-cancel")
        self.edit_row = W.HBox([self.editor, self.following, self.cancel_button])
        _show(self.edit_row, False)
        self.buttons = W.HBox([self.run_button, self.fix_button, self.edit_button, self.regenerate_button,
                               self.delete_button], layout=W.Layout(flex="0 0 auto"))
        super().__init__([self.head, self.code, self.outputs, self.output, self.edit_row,
                          W.HBox([self.buttons, self.stats], layout=W.Layout(align_items="center"))])
        self.add_class("convsynth-card")
        self.run_button.on_click(lambda _: owner._run_step(self.index))
        self.fix_button.on_click(lambda _: owner._fix(self.index))
        self.delete_button.on_click(lambda _: owner._delete(self.index))
        self.regenerate_button.on_click(lambda _: owner._regenerate(self.index))
        self.edit_button.on_click(lambda _: self._open_editor())
        self.cancel_button.on_click(lambda _: _show(self.edit_row, False))
        self.editor.on_submit(self._save_edit)
        self.code.on_save(lambda text: owner._edit_code(self.index, text))
        self.code.on_run(lambda text: owner._edit_code(self.index, text, run=True))

    def show(self, index: int, turn, busy: bool) -> None:
        self.index = index
        instr = (f'<span class="cs-instr">{esc(turn.instruction)}</span>' if turn.instruction is not None
                 else '<span class="cs-hand">code written by hand</span>')
        mark = '<span class="cs-edited convsynth-edited">code edited by hand</span>' if turn.edited else ""
        self.head.value = f'<span class="cs-step">Step {index + 1}</span>{instr}{mark}'
        if self.code.value != turn.code or not self.code.html:
            self.code.value, self.code.html = turn.code, code_html(turn.code)
        self.code.editable = not busy
        upto = self.owner.work.run_upto
        running = (busy and turn.result is None and self.owner.work.action == "run"
                   and (upto is None or index <= upto))
        self.output.value = ('<div class="cs-meta">running&hellip;</div>' if running
                             else '<div class="cs-meta">no code: nothing to run</div>'
                             if not turn.code.strip() and turn.result is None
                             else ('<div class="cs-meta">no code</div>' if not turn.code.strip() else "")
                             + result_html(turn.result, step=index + 1, outputs=False))
        self.show_outputs(None if running else turn.result)
        self.stats.value = stats_html(turn.stats, turn.edited)
        self.run_button.description = "Run" if turn.result is None else "Run again"
        _show(self.buttons, True)
        _show(self.fix_button, turn.result is not None and not turn.result.ok and turn.instruction is not None
              and turn.data is None)
        _show(self.regenerate_button, turn.instruction is not None and turn.data is None)
        for b in (self.run_button, self.fix_button, self.edit_button, self.regenerate_button, self.delete_button):
            b.disabled = busy
        self.editor.busy = busy

    def show_outputs(self, result) -> None:
        """Hand the result's outputs to the front end (only when they changed: each assignment is a message)."""
        if result is not self._shown:
            self._shown = result
            self.outputs.outputs = tuple(shown_outputs(result))

    def show_live(self, index: int, instruction: str, code: str, note: str) -> None:
        self.head.value = (f'<span class="cs-step">Step {index + 1}</span>'
                           f'<span class="cs-instr">{esc(instruction)}</span>')
        self.code.editable = False
        self.code.value = code
        self.code.html = code_html(code) if code else \
            '<div class="cs-empty">waiting for the first token&hellip;</div>'
        self.output.value, self.stats.value = "", note
        self.show_outputs(None)
        _show(self.buttons, False)

    @_guarded
    def _open_editor(self):
        # the text of an edit that failed or was stopped comes back, not the old instruction
        self.editor.value = self.owner.drafts.get(self.turn.instruction) or self.turn.instruction or ""
        _show(self.edit_row, True)
        self.editor.focus()

    @_guarded
    def _save_edit(self, text: str):
        self.owner.drafts[self.turn.instruction] = text  # until the edit has made its step
        if self.owner._edit(self.index, text, self.following.value):
            _show(self.edit_row, False)
        else:
            self.owner.drafts.pop(self.turn.instruction, None)


class SessionWidget(W.VBox):
    """The session as cards, an instruction box, settings and a prompt view. ``generate(text)``, ``undo()``,
    ``redo()``, ``save()``, ``open_session(path)``, ``export_python()``, ``export_notebook()`` do what the buttons do;
    ``wait()`` blocks until the background work is done; ``to_cell()`` (from a cell) puts the program into a new
    cell. Exports and saves go to ``directory`` (the notebook's folder by default); exports never replace a file."""

    def __init__(self, session, *, directory=None, export_name: str = "convsynth-session", resumable: bool = False):
        self.session, self.export_name, self.resumable = session, export_name, resumable
        self.directory = Path(directory) if directory is not None else Path.cwd()
        self.thread: threading.Thread | None = None
        self.work = Work()  # shared with the action thread
        self.drafts: dict = {}  # a step's instruction -> the text of an edit of it not yet made (failed, stopped)
        self._syncing = False  # settings being shown from the session: not written back
        self._cards: dict[int, _Card] = {}
        self._refresh_lock = threading.RLock()

        self.bridge = Bridge()
        self.title = _html("convsynth-title")
        self.cards = W.VBox()
        self.cards.add_class("convsynth-cards")
        self.live = _Card(self)
        self.live.add_class("cs-live")
        self.instruction = TextBox(placeholder="Say what the next step should do, then press Enter",
                                   button="Generate", button_classes=["convsynth-generate"])
        self.instruction.add_class("convsynth-instruction")
        self.instruction.layout.flex = "1 1 auto"
        self.stop_button = _button("Stop", "convsynth-stop", "Stop generating or running", "danger")
        _show(self.stop_button, False)
        self.status, self.error = _html("convsynth-status"), _html("convsynth-error")
        _show(self.error, False)
        self.confirm_row = self._confirm_row()
        toolbar = self._toolbar()
        self.program = _html("convsynth-program-view")
        self.program_box = W.VBox([W.HTML('<span class="cs-meta">The whole program, read-only: edit a step by '
                                          'clicking its code above. Copy it from here, or call '
                                          '<code>.to_cell()</code> on this widget from a cell to get it as a new '
                                          'cell.</span>'), self.program])
        _show(self.program_box, False)
        self.settings = self._settings_panel()
        self.isolation = _html("convsynth-isolation")
        self.prompt = _html("convsynth-prompt")
        self.prompt_panel = W.Accordion([W.VBox([
            W.HTML('<span class="cs-meta">Exactly what the model reads for the next step: the session text and the '
                   'instruction in the box, token by token; it follows the box as you type.</span>'), self.prompt])],
            titles=("Prompt the model sees",), selected_index=None)
        self.prompt_panel.add_class("convsynth-prompt-view")
        super().__init__([
            _html("convsynth-style", CSS), self.title, self.cards,
            W.HBox([self.instruction, self.stop_button]), self.bridge,
            self.status, self.confirm_row, self.error,
            toolbar,
            self.program_box, self.isolation, self.settings, self.prompt_panel])
        self.add_class("convsynth")
        self._connect()
        self._subscribe(session)
        self.refresh()

    def _confirm_row(self) -> W.HBox:
        """The question with Yes / No asked before something that drops steps (hidden until asked)."""
        self.confirm_text = _html("convsynth-confirm")
        self.confirm_yes = _button("Yes", "convsynth-confirm-yes", style="danger")
        self.confirm_no = _button("No", "convsynth-confirm-no")
        row = W.HBox([self.confirm_text, self.confirm_yes, self.confirm_no], layout=W.Layout(align_items="center"))
        _show(row, False)
        self._confirmed = None
        return row

    def _toolbar(self) -> W.HBox:
        """The buttons under the cards: undo, redo, run all, exports, the program view, save and open."""
        self.undo_button = _button("Undo", "convsynth-undo-change", "Undo the last change")
        self.redo_button = _button("Redo", "convsynth-redo", "Redo the change undone last")
        self.run_all_button = _button("Run all", "convsynth-run-all", "Run every step not run yet")
        self.save_button = _button("Save", "convsynth-save", "Save the session (it is also saved after each change)")
        self.open_choice = W.Dropdown(options=[], layout=W.Layout(width="220px"))
        self.open_choice.add_class("convsynth-open-choice")
        self.open_button = _button("Open", "convsynth-open", "Open the saved session chosen on the left")
        self.export_py_button = _button("Export .py", "convsynth-export-py", "Write the program next to the notebook")
        self.export_nb_button = _button("Export notebook", "convsynth-export-notebook",
                                        "Write an .ipynb with a cell per step next to the notebook")
        self.program_button = _button("Program", "convsynth-program-toggle", "Show the whole program to copy")
        return W.HBox([self.undo_button, self.redo_button, self.run_all_button, self.export_py_button,
                       self.export_nb_button, self.program_button, self.save_button, self.open_choice,
                       self.open_button], layout=W.Layout(flex_flow="row wrap"))

    def _connect(self) -> None:
        """What each control does."""
        self.instruction.on_submit(self.generate)
        self.stop_button.on_click(lambda _: self.stop())
        self.undo_button.on_click(lambda _: self.undo())
        self.redo_button.on_click(lambda _: self.redo())
        self.run_all_button.on_click(lambda _: self._run())
        self.save_button.on_click(lambda _: self.save())
        self.open_button.on_click(lambda _: self.open_session(self.open_choice.value))
        self.export_py_button.on_click(lambda _: self.export_python())
        self.export_nb_button.on_click(lambda _: self.export_notebook())
        self.program_button.on_click(lambda _: self._toggle_program())
        self.confirm_yes.on_click(lambda _: self._answer(True))
        self.confirm_no.on_click(lambda _: self._answer(False))
        self.prompt_panel.observe(lambda _: self._update_prompt(), "selected_index")
        self.instruction.observe(lambda _: self._update_prompt(), "value")

    @property
    def busy(self) -> bool:
        """Whether an action (generating, running, undoing...) is going on in the background."""
        return self.work.busy

    def __repr__(self) -> str:
        return f"SessionWidget(model={self.session.model.name!r}, turns={len(self.session.turns)})"

    def _subscribe(self, session) -> None:
        # Changes made from code (s.ask(...) in a cell, s.sampling = ...) show up without refresh(); the widget's
        # own work refreshes when it ends.
        session.on_change(functools.partial(self._on_change, session))

    def _on_change(self, session, change) -> None:
        if session is not self.session:
            return
        if getattr(change, "settings", ()):
            self._show_settings()
        elif not self.busy:
            self.refresh()

    # ---- settings ----------------------------------------------------------------------------------------
    def _settings_panel(self) -> W.Accordion:
        s, n = self.session, self.session.model.config.n_positions
        wide = {"style": {"description_width": "130px"}, "layout": W.Layout(width="420px")}
        self.temperature = W.FloatSlider(s.sampling.temperature, min=0, max=2, step=0.05, description="temperature",
                                         tooltip="0 is greedy decoding", **wide)
        self.top_p = W.FloatSlider(s.sampling.top_p, min=0.05, max=1, step=0.05, description="top-p", **wide)
        self.max_new_tokens = W.BoundedIntText(s.sampling.max_new_tokens, min=1, max=n, description="max new tokens",
                                               **wide)
        self.auto_run = W.Checkbox(s.auto_run, description="run each step after it is generated", indent=False)
        self.timeout = W.BoundedFloatText(s.timeout, min=0, max=3600, step=1, description="timeout (s)",
                                          tooltip="time limit per step; 0 means none", **wide)
        # decoding: speculation and int8 weights (a local model only; a remote engine has its own)
        local = not getattr(s.model, "remote", False)
        self.speculate = W.Dropdown(options=["auto", "on", "off"], value=s._speculate_mode() if local else "off",
                                    description="speculative decoding", disabled=not local,
                                    tooltip="auto: greedy decoding, paused while it does not pay", **wide)
        self.quantize = W.Dropdown(options=[("float", "none"), ("int8", "int8")], description="weights",
                                   value="int8" if local and s.model.quantization else "none", disabled=not local,
                                   tooltip="int8 weights: faster on a CPU, slightly different text", **wide)
        for name, w in (("temperature", self.temperature), ("top_p", self.top_p),
                        ("max_new_tokens", self.max_new_tokens), ("auto_run", self.auto_run),
                        ("timeout", self.timeout), ("speculate", self.speculate), ("quantize", self.quantize)):
            w.add_class(f"convsynth-setting-{name.replace('_', '-')}")
            w.observe(functools.partial(self._set, name), "value")
        panel = W.Accordion([W.VBox([self.temperature, self.top_p, self.max_new_tokens, self.timeout,
                                     self.auto_run, self.speculate, self.quantize])], titles=("Settings",),
                            selected_index=None)
        panel.add_class("convsynth-settings")
        return panel

    def _show_settings(self) -> None:
        """Put the session's settings into the controls (after a change made from code)."""
        s, self._syncing = self.session, True
        try:
            self.temperature.value, self.top_p.value = s.sampling.temperature, s.sampling.top_p
            self.max_new_tokens.value = s.sampling.max_new_tokens
            self.auto_run.value, self.timeout.value = s.auto_run, s.timeout or 0
            if not self.speculate.disabled:  # a local model
                self.speculate.value = s._speculate_mode()
                self.quantize.value = "int8" if s.model.quantization else "none"
        finally:
            self._syncing = False

    @_guarded
    def _set(self, name, change):
        s = self.session
        if self._syncing:
            return
        if name in ("auto_run", "timeout", "speculate"):
            setattr(s, name, change["new"])
        elif name == "quantize":
            if self.busy:
                raise ConvsynthError("the weights cannot change while a step is generated; press Stop first.")
            s.set_quantize(None if change["new"] == "none" else change["new"])
        else:
            s.sampling = s.sampling.replace(**{name: change["new"]})

    # ---- actions (each runs in the background thread) ------------------------------------------------------
    def _start(self, action: str, status: str, work, *, live: str | None = None, at: int | None = None):
        """Run ``work`` in a thread unless something is already running; returns whether it started. ``live``:
        the instruction of a step being generated at index ``at`` (default: a new last step); the cards after
        it stay on screen meanwhile."""
        if self.busy:
            self.status.value = "Busy: wait for the current step or press Stop."
            return False
        self.clear_error()
        self._ask(None)
        self.work.begin(action)
        if live is not None:
            index = len(self.session.turns) if at is None else at
            self.work.hold = (index, list(self.session.turns[index + 1:]) if at is not None else [])
            self.live.show_live(index, live, "", "generating&hellip;")
        self._set_busy(True, status)
        self.refresh()

        def target():
            try:
                work()
            except Exception as e:  # noqa: BLE001 - shown in the error area
                self.show_error(e)
            finally:
                self.work.end()
                self.status.value = ""
                self.refresh()  # before the status and the buttons, so whoever waits for them sees the new state
                if self.work.final or self.work.stop_requested:
                    self.status.value = self.work.final or "Stopped."
                self._set_busy(False)

        self.thread = threading.Thread(target=target, name="convsynth-widget", daemon=True)
        self.thread.start()
        return True

    def _streamer(self, index: int, instruction: str):
        pieces, last = [], [0.0]

        def on_text(piece: str):
            pieces.append(piece)
            if self.work.stop_requested:  # a Stop that came before generation began
                self.session.cancel()
            now = time.monotonic()
            if now - last[0] >= STREAM_INTERVAL:
                last[0] = now
                code = "".join(pieces)
                self.live.show_live(index, instruction, code, f"generating&hellip; {_n(len(code), 'character')} "
                                                              "so far")
        return on_text

    def _after_generating(self, turn, what: str):
        """A stopped generation leaves no half step behind: the change is undone (Redo brings it back)."""
        if turn.stats.finish_reason == "cancelled":
            self.session.undo()
            self.work.final = f"Stopped: the unfinished {what} was dropped (Redo brings it back)."
            return
        if self.session.auto_run and not self.work.stop_requested:
            self.work.action, self.work.run_upto = "run", None
            self.refresh()
            self.status.value = "Running&hellip;"
            self.session.run(timeout=self.session.timeout)

    @_guarded
    def generate(self, text: str | None = None):
        """Generate the next step for ``text`` (default: what the instruction box holds), as Enter does."""
        text = self.instruction.value if text is None else text
        if not text.strip():
            self.show_error("Type an instruction first: say in words what the next step should do.")
            return
        text = text.strip()

        def work():
            turn = self.session.ask(text, on_text=self._streamer(len(self.session.turns), text), run=False)
            if self.instruction.value.strip() == text and turn.stats.finish_reason != "cancelled":
                self.instruction.value = ""  # unless the user typed the next one meanwhile, or pressed Stop
            self._after_generating(turn, "step")
        self._start("generate", "Generating&hellip;", work, live=text)

    @_guarded
    def _edit(self, index: int, text: str, following: bool = False) -> bool:
        if not text.strip():
            self.show_error("The instruction is empty: say in words what this step should do.")
            return False
        text = text.strip()

        def work():
            turn = self.session.edit(index, text, regenerate_following=following,
                                     on_text=self._streamer(index, text), run=False)
            if turn.stats.finish_reason != "cancelled":
                self.drafts = {k: v for k, v in self.drafts.items() if v != text}  # the step has it now
            self._after_generating(turn, "edit")
        return self._start("generate", "Generating&hellip;", work, live=text, at=index)

    @_guarded
    def _regenerate(self, index: int = -1):
        turns = self.session.turns
        if not turns:
            return self.show_error("Nothing to regenerate: there are no steps yet.")
        index %= len(turns)
        text = turns[index].instruction
        if text is None:
            return self.show_error(f"Step {index + 1} was written by hand: there is nothing to regenerate.")

        before = turns[index].code

        def work():
            turn = self.session.regenerate(index, on_text=self._streamer(index, text), run=False)
            self._after_generating(turn, "step")
            if turn.code == before and not self.work.final:  # say so rather than seem to do nothing
                self.work.final = ("Regenerated: the same code again" + (" (temperature 0 always gives the same step)."
                                                                     if self.session.sampling.temperature == 0
                                                                     else "."))
        self._start("generate", "Generating&hellip;", work, live=text, at=index)

    @_guarded
    def _fix(self, index: int):
        """Generate failed step ``index`` again with its error (Session.fix), streaming into a live card; the steps
        after it stay on screen. Undo reverts a fix that replaced the step."""
        turn = self.session.turns[index]
        text = turn.instruction

        def work():
            fixed = self.session.fix(index, on_text=self._streamer(index, text))
            if fixed is turn and not self.work.stop_requested:
                last = turn.attempts[-1]
                self.show_error(f"The new attempt at step {index + 1} failed too ({last['error']}), so the step is "
                                "unchanged; every attempt is kept in its attempts. Fix again, or edit the "
                                "instruction.")
        self._start("generate", "Fixing&hellip;", work, live=text, at=index)

    @_guarded
    def _edit_code(self, index: int, code: str, run: bool = False):
        """Code edited in a card: saved with ``edit_code``; ``run`` (Shift+Enter) runs the step after."""
        turn = self.session.turns[index]
        if code.rstrip("\n") + "\n" == turn.code:
            return self._run_step(index) if run else None

        def work():
            self.session.edit_code(index, code)
            if run and not self.work.stop_requested:  # a Stop while the sandbox replayed the steps before it
                self.work.action, self.work.run_upto = "run", index
                self.refresh()
                self.session.run(timeout=self.session.timeout, upto=index)
        self._start("run" if run else "edit", "Running&hellip;" if run else "Saving&hellip;", work)

    @_guarded
    def _run(self, upto: int | None = None):
        """Run the pending steps through step ``upto`` or all of them (Run all)."""
        if not self.busy:  # a Run pressed while busy is refused by _start and must not change the run in flight
            self.work.run_upto = upto
        if not self.busy and all(t.result is not None for t in self.session.turns[:None if upto is None else upto + 1]):
            self.status.value = ("Nothing to run: every step has run (a step's Run again runs it again)."
                                 if self.session.turns else "Nothing to run yet.")
            return
        def work():
            if not self.session.run(timeout=self.session.timeout, upto=upto):
                self.work.final = "Nothing ran."
        self._start("run", "Running&hellip;", work)

    @_guarded
    def _run_step(self, index: int):
        """A card's Run: its step and the pending ones before it; Run again on a step that ran (failed, timed
        out or not) runs it again after bringing the sandbox back to the steps before it."""
        if self.session.turns[index].result is None:
            return self._run(index)
        if not self.busy:
            self.work.run_upto = index
        self._start("run", "Running&hellip;", lambda: self.session.rerun(index, timeout=self.session.timeout))

    @_guarded
    def _delete(self, index: int):
        turn = self.session.turns[index]
        self._ask(f"Delete step {index + 1}{' (' + esc(turn.instruction) + ')' if turn.instruction else ''}? "
                  "Undo brings it back.", lambda: self._start("delete", "Deleting&hellip;",
                                                              lambda: self.session.delete(index)))

    @_guarded
    def undo(self):
        """Revert the last change (generate, edit, regenerate, code edit, delete...)."""
        what = self.session.history.undo_what
        if what is None:
            self.status.value = "Nothing to undo."
            return
        def work():
            self.session.undo()
            self.work.final = f"Undid the {what}."
        self._start("undo", "Undoing&hellip;", work)

    @_guarded
    def redo(self):
        """Apply again the change undone last."""
        what = self.session.history.redo_what
        if what is None:
            self.status.value = "Nothing to redo."
            return
        def work():
            self.session.redo()
            self.work.final = f"Redid the {what}."
        self._start("redo", "Redoing&hellip;", work)

    @_guarded
    def stop(self):
        """Stop the generation (its unfinished step is dropped) or the step running now."""
        self.work.stop_requested = True
        self.session.cancel()
        self.status.value = "Stopping&hellip;"

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the background work is done; returns False if it is still going after ``timeout``."""
        t = self.thread
        if t is not None:
            t.join(timeout)
        return not (t is not None and t.is_alive())

    # ---- confirmation --------------------------------------------------------------------------------------
    def _ask(self, question: str | None, on_yes=None) -> None:
        """Show a question with Yes / No before something that drops steps (None: take it away)."""
        self._confirmed = on_yes
        self.confirm_text.value = question or ""
        _show(self.confirm_row, question is not None)

    @_guarded
    def _answer(self, yes: bool) -> None:
        action, self._confirmed = self._confirmed, None
        _show(self.confirm_row, False)
        if yes and action is not None:
            action()

    # ---- files: save, open, export -------------------------------------------------------------------------
    def _saved_here(self, path, verb: str) -> None:
        self.bridge.show_file(path, verb)  # "Wrote <link>", in the line under the instruction box
        self.status.value = ""

    @_guarded
    def save(self) -> Path:
        """Save the session now (to its autosave file; a new one in .convsynth/ if it has none)."""
        s = self.session
        if s.autosave is None:
            s.autosave = widget_files.new_autosave(self.directory)
        s.autosave.parent.mkdir(parents=True, exist_ok=True)
        path = s.save(s.autosave)
        self._saved_here(path, "Saved to")
        self._list_saved()
        return path

    @_guarded
    def open_session(self, path=None) -> None:
        """Show the session saved in ``path`` instead of this one (asks first when this one has steps)."""
        if not path:
            self.show_error("Choose a saved session first (they are in the .convsynth folder next to the notebook).")
            return
        path = Path(path)
        if self.session.turns and path != self.session.autosave:
            kept = (f"they stay saved in {esc(self.session.autosave.name)}" if self.session.autosave
                    else "they are not saved: press No, then Save")
            self._ask(f"Open {esc(path.name)} instead of these {_n(len(self.session.turns), 'step')}? ({kept})",
                      lambda: self._open(path))
        else:
            self._open(path)

    @_guarded
    def _open(self, path: Path) -> None:
        from .session import Session
        old = self.session
        _refuse_if_in_use(path)  # before loading; the session's own file is this process's, never in use
        new = Session.load(path, old.model, autosave=path)
        _refuse_if_in_use(path, hold=True)
        new.auto_run, new._listeners = old.auto_run, []
        self.session = new
        self._subscribe(new)
        old.close()
        self._show_settings()  # the opened session's settings, not the previous one's
        self._saved_here(path, "Opened")
        self.refresh()

    def _list_saved(self) -> None:
        try:
            found = widget_files.saved_sessions(self.directory)
        except OSError:
            found = []
        options = [(p.name, str(p)) for p in found]
        if [o[1] for o in options] != [o[1] for o in self.open_choice.options]:
            chosen = self.open_choice.value
            self.open_choice.options = options
            if options:  # keep the choice made, else offer the newest
                self.open_choice.value = chosen if chosen in (o[1] for o in options) else options[0][1]

    @_guarded
    def export_python(self) -> Path:
        """Write the program as a .py next to the notebook, under a new name each time."""
        text = self.session.to_python()  # first: a failure leaves no empty file behind
        path = widget_files.reserve(self.directory, self.export_name, ".py")
        path.write_text(text)
        self._saved_here(path, "Wrote")
        return path

    @_guarded
    def export_notebook(self) -> Path:
        """Write the steps as an .ipynb next to the notebook, under a new name each time."""
        path = self.session.to_notebook(widget_files.reserve(self.directory, self.export_name, ".ipynb"))
        self._saved_here(path, "Wrote")
        return path

    @_guarded
    def _toggle_program(self):
        self.program.value = f'<pre class="convsynth-program">{esc(self.session.to_python())}</pre>'
        _show(self.program_box, self.program_box.layout.display == "none")

    def to_cell(self) -> None:
        """Put the program into a new cell below the one that calls this (IPython's set_next_input)."""
        from IPython import get_ipython
        ip = get_ipython()
        if ip is None:
            raise RuntimeError("to_cell() needs IPython: call it from a notebook cell.")
        ip.set_next_input(self.session.to_python())

    # ---- showing state -----------------------------------------------------------------------------------
    def show_error(self, error) -> None:
        """Show an error (an exception or a message) in the error area; errors add up until the next action."""
        if isinstance(error, (ConvsynthError, OSError)):  # OSError: a folder that cannot be written, named
            body = f"<b>{esc(type(error).__name__)}</b>: {esc(error)}"
        elif isinstance(error, BaseException):
            tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            body = (f"<b>{esc(type(error).__name__)}</b>: {esc(error)}"
                    f"<details><summary>traceback</summary><pre>{esc(tb)}</pre></details>")
        else:
            body = esc(error)
        self.error.value += f"<div>{body}</div>"
        _show(self.error, True)

    def clear_error(self) -> None:
        self.error.value = ""
        _show(self.error, False)

    def _set_busy(self, busy: bool, status: str | None = None) -> None:
        for b in (self.run_all_button, self.export_py_button, self.export_nb_button, self.undo_button,
                  self.redo_button, self.save_button, self.open_button):
            b.disabled = busy
        self.instruction.busy = busy
        _show(self.stop_button, busy)
        if status is not None:
            self.status.value = status
        if not busy:
            self.undo_button.disabled = self.session.history.undo_what is None
            self.redo_button.disabled = self.session.history.redo_what is None

    def _gone_message(self) -> str:
        s, n = self.session, _n(len(self.session.turns), "step")
        if s.autosave is None:
            return f"The kernel restarted or stopped: this widget no longer works, and its {n} were not saved."
        if self.resumable:
            return f"The kernel restarted or stopped: run this cell again to resume ({n} saved)."
        return (f"The kernel restarted or stopped: run convsynth.ui(resume=True) to resume ({n} saved in "
                f"{s.autosave.name}).")

    def refresh(self) -> None:
        """Bring the cards, title, program and prompt view up to date with the session."""
        with self._refresh_lock:
            s = self.session
            turns = list(s.turns)
            hold = self.work.hold if self.busy else None
            if hold is not None:  # a step being generated at hold[0]: the cards after it stay, waiting
                turns = turns[:hold[0]]
            # An Edit box open on a step that is replaced by a copy (an earlier step changed, an undo): its text
            # moves to the new card of that step instead of closing with the old one.
            open_edits = [(c.turn.instruction, c.editor.value) for c in self._cards.values()
                          if c.edit_row.layout.display != "none" and all(c.turn is not t for t in s.turns)]
            shown = []
            for i, turn in enumerate(turns):
                shown.append(self._card(turn, i))
            if hold is not None:
                shown.append(self.live)
                shown += [self._card(turn, hold[0] + 1 + k) for k, turn in enumerate(hold[1])]
            for instruction, text in open_edits:
                card = next((c for c in shown if c is not self.live and c.turn.instruction == instruction
                             and c.edit_row.layout.display == "none"), None)
                if card is not None:
                    card.editor.value = text
                    _show(card.edit_row, True)
            keep = set(map(id, shown))
            for key, card in list(self._cards.items()):
                if id(card) not in keep and all(card.turn is not t for t in s.turns):
                    _close_tree(card)
                    del self._cards[key]
            self.cards.children = shown
            n = len(s.turns)
            self.title.value = (f"<b>convsynth</b> &middot; {esc(s.model.name)} &middot; {_n(n, 'step')} &middot; "
                                f"{_n(s.cached_tokens)} in the KV cache &middot; folder "
                                f'<code class="cs-folder">{esc(s.cwd or "a private folder")}</code>')
            self.isolation.value = f'<span class="cs-meta">Sandbox: {esc(s.isolation_info)}</span>'
            history = s.history
            self.undo_button.tooltip = f"Undo the {history.undo_what}" if history.undo_what else "Nothing to undo"
            self.redo_button.tooltip = f"Redo the {history.redo_what}" if history.redo_what else "Nothing to redo"
            if not self.busy:
                self.undo_button.disabled = history.undo_what is None
                self.redo_button.disabled = history.redo_what is None
            self.bridge.gone_message = self._gone_message()
            if s.autosave_error:
                self.status.value = f"Could not autosave: {esc(s.autosave_error)}"
            if not self.busy and not self.status.value:
                self.status.value = "Ready." if n else "Type an instruction and press Enter or Generate."
            if self.program_box.layout.display != "none":
                self.program.value = f'<pre class="convsynth-program">{esc(s.to_python())}</pre>'
            self._list_saved()
            self._update_prompt()

    def _card(self, turn, index: int) -> _Card:
        card = self._cards.get(id(turn))
        if card is None or card.turn is not turn:
            card = self._cards[id(turn)] = _Card(self, turn)
        card.show(index, turn, busy=self.busy)
        return card

    @_guarded
    def _update_prompt(self) -> None:
        if self.prompt_panel.selected_index is None:
            return
        if self.busy:  # the cache is changing under us; the view is brought up to date when the work ends
            return
        text = self.instruction.value.strip()
        self.prompt.value = prompt_html(self.session.prompt_tokens(text or None), instruction=bool(text))


def ui(model_or_session=None, *, resume: bool = False, directory=None, **session_options) -> SessionWidget:
    """The widget for a session, autosaved after each change in ``.convsynth/<notebook>-<n>.json`` next to the
    notebook. ``None``: the packaged model; a path: that checkpoint, or a saved session (``.json``); a CodeGen:
    a new Session on it (``session_options`` go to Session); a Session: that session. ``resume=True``: continue
    the session this notebook saved last (a new one if there is none), so re-running the cell after a kernel
    restart brings every step back."""
    from .session import Session
    directory = Path(directory) if directory is not None else Path.cwd()
    if isinstance(model_or_session, Session):
        if session_options:
            raise TypeError(f"ui(session) takes no session options ({', '.join(session_options)}): "
                            "the session has its settings; change them in the widget's Settings.")
        return SessionWidget(model_or_session, directory=directory)
    saved = None
    if isinstance(model_or_session, (str, Path)) and str(model_or_session).endswith(".json"):
        saved, model_or_session = Path(model_or_session), session_options.pop("model", None)
        if not saved.is_file():
            raise SessionError(f"no saved session at {saved}: give the path of a .json the widget saved "
                               "(they are in the .convsynth folder next to the notebook).")
        _refuse_if_in_use(saved)
    elif resume:
        saved = widget_files.latest_autosave(directory)  # not one another kernel writes
    model = model_or_session
    if model is None or isinstance(model, (str, Path)):
        from .codegen import load
        model = load(model if model is not None or saved is None else _saved_model(saved))
    if saved is not None:
        session = Session.load(saved, model, autosave=saved)
        _refuse_if_in_use(saved, hold=True)
        sampling = {k: v for k, v in session_options.items() if hasattr(session.sampling, k)}
        session.sampling = session.sampling.replace(**sampling)  # the cell's options win over the saved ones
        for key, value in session_options.items():
            if key not in sampling:
                if key not in ("timeout", "auto_run", "memory_limit", "overflow"):
                    raise TypeError(f"ui(resume=...) cannot change {key!r} of a saved session")
                setattr(session, key, value)
    else:
        session = Session(model, autosave=widget_files.new_autosave(directory), **session_options)
    return SessionWidget(session, directory=directory, resumable=resume or saved is not None)


def _refuse_if_in_use(path: Path, hold: bool = False) -> None:
    """A session file another kernel's widget saves to is not opened here too (the two would overwrite each
    other's steps); with ``hold``, this process takes it (widget_files.hold)."""
    free = widget_files.hold(path) if hold else not widget_files.in_use(path)
    if not free:
        raise SessionError(f"{Path(path).name} is open in another kernel, whose widget saves to it: use it there, "
                           "or copy the file and open the copy here.")


def _saved_model(path: Path):
    """The model a saved session names: None for the packaged one, else its path or hub id."""
    import json
    try:
        name = (json.loads(path.read_text()).get("model") or {}).get("name")
    except (OSError, ValueError, AttributeError):
        return None
    return None if name in (None, "", "convsynth-tiny") else name
