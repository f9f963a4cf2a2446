"""The Jupyter UI: ``convsynth.ui()`` or ``Session.widget()`` shows a session as a chat of program steps.

Standard ipywidgets only (JupyterLab 4, Notebook 7; no front-end build). Generation and execution run in a
background thread so the kernel stays responsive; the thread updates HTML widgets (throttled while streaming)
and never prints, so nothing lands in the wrong cell. Every element of note has a ``convsynth-*`` CSS class.
"""
from __future__ import annotations

import functools
import threading
import time
import traceback
from pathlib import Path

from .errors import ConvsynthError, MissingDependency, require

W = require("ipywidgets", extra="ui", what="the widget")
require("pygments", extra="ui", what="the widget")
if int(W.__version__.split(".")[0]) < 8:  # Colab ships ipywidgets 7: its Accordion titles and comms differ
    raise MissingDependency(f"the widget needs ipywidgets 8 (this kernel has {W.__version__}, as Colab ships): "
                            "pip install -U 'ipywidgets>=8' and restart the kernel, or use Session and the "
                            "%%convsynth magic without the widget")
from .outputs import to_outputs  # noqa: E402 - after the checks above
from .widget_html import CSS, _n, code_html, esc, prompt_html, result_html, stats_html  # noqa: E402

STREAM_INTERVAL = 0.08  # seconds between streamed code updates (each one is a comm message)


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
    """One turn: instruction, highlighted code, execution output, stats and the turn's buttons."""

    def __init__(self, owner: "SessionWidget", turn=None):
        self.owner, self.turn = owner, turn
        self.head, self.code = _html("convsynth-card-instruction"), _html("convsynth-code")
        self.output, self.stats = _html("convsynth-output"), _html("convsynth-stats")
        self.outputs = W.Output()  # the step's outputs, rendered by the front end as in a cell
        self.outputs.add_class("convsynth-outputs")
        self._shown = None  # the result whose outputs are shown
        self.fix_button = _button("Fix", "convsynth-fix", "Generate this step again with its error in the "
                                  "instruction; it replaces the step only if it runs", "warning")
        self.run_button = _button("Run", "convsynth-run", "Run this step (and the steps before it not run yet)")
        self.edit_button = _button("Edit", "convsynth-edit", "Change the instruction and generate from here")
        self.regenerate_button = _button("Regenerate", "convsynth-regenerate", "Sample this step again")
        self.undo_button = _button("Undo", "convsynth-undo", "Remove this step")
        self.editor = W.Text(layout=W.Layout(flex="1 1 auto"))
        self.editor.add_class("convsynth-edit-box")
        self.save_button = _button("Generate again", "convsynth-edit-save", style="primary")
        self.cancel_button = _button("Cancel", "convsynth-edit-cancel")
        self.edit_row = W.HBox([self.editor, self.save_button, self.cancel_button])
        _show(self.edit_row, False)
        self.buttons = W.HBox([self.run_button, self.fix_button, self.edit_button, self.regenerate_button,
                               self.undo_button], layout=W.Layout(flex="0 0 auto"))
        super().__init__([self.head, self.code, self.outputs, self.output, self.edit_row,
                          W.HBox([self.buttons, self.stats], layout=W.Layout(align_items="center"))])
        self.add_class("convsynth-card")
        self.run_button.on_click(lambda _: owner._run(self.index))
        self.fix_button.on_click(lambda _: owner._fix(self.index))
        self.undo_button.on_click(lambda _: owner._undo())
        self.regenerate_button.on_click(lambda _: owner._regenerate())
        self.edit_button.on_click(lambda _: self._open_editor())
        self.cancel_button.on_click(lambda _: _show(self.edit_row, False))
        self.save_button.on_click(lambda _: self._save_edit())
        self.editor.on_msg(lambda _w, content, _b: content.get("event") == "submit" and self._save_edit())

    def show(self, index: int, turn, last: bool, busy: bool) -> None:
        self.index = index
        instr = (f'<span class="cs-instr">{esc(turn.instruction)}</span>' if turn.instruction is not None
                 else '<span class="cs-hand">code written by hand</span>')
        self.head.value = f'<span class="cs-step">Step {index + 1}</span>{instr}'
        self.code.value = code_html(turn.code)
        upto = self.owner._run_upto
        running = (busy and turn.result is None and self.owner._action == "run"
                   and (upto is None or index <= upto))
        self.output.value = ('<div class="cs-meta">running&hellip;</div>' if running
                             else result_html(turn.result, outputs=False))
        self.show_outputs(turn.result)
        self.stats.value = stats_html(turn.stats)
        _show(self.run_button, turn.result is None)
        _show(self.fix_button, turn.result is not None and not turn.result.ok and turn.instruction is not None
              and turn.data is None)
        _show(self.regenerate_button, last and turn.instruction is not None)
        _show(self.undo_button, last)
        for b in (self.run_button, self.fix_button, self.edit_button, self.regenerate_button, self.undo_button,
                  self.save_button):
            b.disabled = busy

    def show_outputs(self, result) -> None:
        """Hand the result's outputs to the front end (only when they changed: each assignment is a message)."""
        if result is not self._shown:
            self._shown = result
            self.outputs.outputs = tuple(to_outputs(result))

    def show_live(self, index: int, instruction: str, code: str, note: str) -> None:
        self.head.value = (f'<span class="cs-step">Step {index + 1}</span>'
                           f'<span class="cs-instr">{esc(instruction)}</span>')
        self.code.value = code_html(code) if code else '<div class="cs-empty">waiting for the first token&hellip;</div>'
        self.output.value, self.stats.value = "", note
        self.show_outputs(None)
        _show(self.buttons, False)

    @_guarded
    def _open_editor(self):
        self.editor.value = self.turn.instruction or ""
        _show(self.edit_row, True)

    @_guarded
    def _save_edit(self):
        if self.owner._edit(self.index, self.editor.value):
            _show(self.edit_row, False)


class SessionWidget(W.VBox):
    """The session as cards, an instruction box, settings and a prompt view. ``wait()`` blocks until the
    background work (generate, run, undo...) is done; ``to_cell()`` (called from a cell) puts the program
    into a new cell; exports are written to ``directory`` (the notebook's folder by default)."""

    def __init__(self, session, *, directory=None, export_name: str = "convsynth-session"):
        self.session, self.export_name = session, export_name
        self.directory = Path(directory) if directory is not None else Path.cwd()
        self.thread: threading.Thread | None = None
        self.busy, self._action, self._stop_requested, self._hide_from = False, "", False, None
        self._run_upto: int | None = None  # the step a card's Run runs through (None: all)
        self._cards: dict[int, _Card] = {}
        self._refresh_lock = threading.RLock()

        self.title = _html("convsynth-title")
        self.cards = W.VBox()
        self.cards.add_class("convsynth-cards")
        self.live = _Card(self)
        self.live.add_class("cs-live")
        self.instruction = W.Text(placeholder="Say what the next step should do, then press Enter",
                                  layout=W.Layout(flex="1 1 auto"))
        self.instruction.add_class("convsynth-instruction")
        self.generate_button = _button("Generate", "convsynth-generate", "Generate the next step", "primary")
        self.stop_button = _button("Stop", "convsynth-stop", "Stop generating or running", "danger")
        _show(self.stop_button, False)
        self.status, self.error = _html("convsynth-status"), _html("convsynth-error")
        _show(self.error, False)
        self.run_all_button = _button("Run all", "convsynth-run-all", "Run every step not run yet")
        self.export_py_button = _button("Export .py", "convsynth-export-py", "Write the program next to the notebook")
        self.export_nb_button = _button("Export notebook", "convsynth-export-notebook",
                                        "Write an .ipynb with a cell per step next to the notebook")
        self.program_button = _button("Program", "convsynth-program-toggle", "Show the whole program to copy")
        self.program = W.Textarea(layout=W.Layout(width="100%", height="180px"))
        self.program.add_class("convsynth-program")
        self.program_box = W.VBox([W.HTML('<span class="cs-meta">The whole program. Copy it, or call '
                                          '<code>.to_cell()</code> on this widget from a cell to get it as a new '
                                          'cell.</span>'), self.program])
        _show(self.program_box, False)
        self.settings = self._settings_panel()
        self.isolation = _html("convsynth-isolation",
                               f'<span class="cs-meta">Sandbox: {esc(session.isolation_info)}</span>')
        self.prompt = _html("convsynth-prompt")
        self.prompt_refresh = _button("Refresh", "convsynth-prompt-refresh")
        self.prompt_refresh.layout.align_self = "flex-start"
        self.prompt_panel = W.Accordion([W.VBox([
            W.HTML('<span class="cs-meta">Exactly what the model reads for the next step (the session text plus '
                   'the instruction in the box), token by token.</span>'), self.prompt, self.prompt_refresh])],
            titles=("Prompt the model sees",), selected_index=None)
        self.prompt_panel.add_class("convsynth-prompt-view")
        super().__init__([
            _html("convsynth-style", CSS), self.title, self.cards,
            W.HBox([self.instruction, self.generate_button, self.stop_button]),
            self.status, self.error,
            W.HBox([self.run_all_button, self.export_py_button, self.export_nb_button, self.program_button]),
            self.program_box, self.isolation, self.settings, self.prompt_panel])
        self.add_class("convsynth")

        self.generate_button.on_click(lambda _: self._generate())
        self.instruction.on_msg(lambda _w, content, _b: content.get("event") == "submit" and self._generate())
        self.stop_button.on_click(lambda _: self.stop())
        self.run_all_button.on_click(lambda _: self._run())
        self.export_py_button.on_click(lambda _: self.export_python())
        self.export_nb_button.on_click(lambda _: self.export_notebook())
        self.program_button.on_click(lambda _: self._toggle_program())
        self.prompt_refresh.on_click(lambda _: self._update_prompt(force=True))
        self.prompt_panel.observe(lambda _: self._update_prompt(), "selected_index")
        self.instruction.observe(lambda _: self._update_prompt(), "value")
        self.refresh()

    def __repr__(self) -> str:
        return f"SessionWidget(model={self.session.model.name!r}, turns={len(self.session.turns)})"

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

    @_guarded
    def _set(self, name, change):
        s = self.session
        if name in ("auto_run", "timeout", "speculate"):
            setattr(s, name, change["new"])
        elif name == "quantize":
            if self.busy:
                raise ConvsynthError("the weights cannot change while a step is generated; press Stop first.")
            s.set_quantize(None if change["new"] == "none" else change["new"])
        else:
            s.sampling = s.sampling.replace(**{name: change["new"]})

    # ---- actions (each runs in the background thread) ------------------------------------------------------
    def _start(self, action: str, status: str, work, *, live: str | None = None, hide_from: int | None = None):
        """Run ``work`` in a thread unless something is already running; returns whether it started."""
        if self.busy:
            self.status.value = "Busy: wait for the current step or press Stop."
            return False
        self.clear_error()
        self.busy, self._action, self._stop_requested, self._hide_from = True, action, False, hide_from
        self._set_busy(True, status)
        if live is not None:
            index = len(self.session.turns) if hide_from is None else hide_from
            self.live.show_live(index, live, "", "generating&hellip;")
        self.refresh(live=live is not None)

        def target():
            try:
                work()
            except Exception as e:  # noqa: BLE001 - shown in the error area
                self.show_error(e)
            finally:
                self.busy, self._action, self._hide_from = False, "", None
                self._set_busy(False, "Stopped." if self._stop_requested else "")
                self.refresh()

        self.thread = threading.Thread(target=target, name="convsynth-widget", daemon=True)
        self.thread.start()
        return True

    def _streamer(self, index: int, instruction: str):
        pieces, last = [], [0.0]

        def on_text(piece: str):
            pieces.append(piece)
            if self._stop_requested:  # a Stop that came before generation began
                self.session.cancel()
            now = time.monotonic()
            if now - last[0] >= STREAM_INTERVAL:
                last[0] = now
                code = "".join(pieces)
                self.live.show_live(index, instruction, code, f"generating&hellip; {len(code)} characters so far")
        return on_text

    def _then_maybe_run(self):
        if self.session.auto_run and not self._stop_requested:
            self._action, self._run_upto = "run", None
            self.refresh()
            self.status.value = "Running&hellip;"
            self.session.run(timeout=self.session.timeout)

    @_guarded
    def _generate(self):
        text = self.instruction.value
        if not text.strip():
            self.show_error("Type an instruction first: say in words what the next step should do.")
            return
        index, text = len(self.session.turns), text.strip()

        def work():
            self.session.ask(text, on_text=self._streamer(index, text), run=False)
            if self.instruction.value.strip() == text:  # unless the user typed the next one meanwhile
                self.instruction.value = ""
            self._then_maybe_run()
        self._start("generate", "Generating&hellip;", work, live=text)

    @_guarded
    def _edit(self, index: int, text: str) -> bool:
        if not text.strip():
            self.show_error("The instruction is empty: say in words what this step should do.")
            return False

        def work():
            self.session.edit(index, text.strip(), on_text=self._streamer(index, text.strip()), run=False)
            self._then_maybe_run()
        return self._start("generate", "Generating&hellip;", work, live=text.strip(), hide_from=index)

    @_guarded
    def _regenerate(self):
        turns = self.session.turns
        if not turns or turns[-1].instruction is None:
            return self.show_error("Nothing to regenerate: the last step was not generated.")
        index, text = len(turns) - 1, turns[-1].instruction

        def work():
            self.session.regenerate(on_text=self._streamer(index, text), run=False)
            self._then_maybe_run()
        self._start("generate", "Generating&hellip;", work, live=text, hide_from=index)

    @_guarded
    def _run(self, upto: int | None = None):
        """Run the pending steps through step ``upto`` (a card's Run) or all of them (Run all)."""
        if not self.busy:  # a Run pressed while busy is refused by _start and must not change the run in flight
            self._run_upto = upto
        self._start("run", "Running&hellip;", lambda: self.session.run(timeout=self.session.timeout, upto=upto))

    @_guarded
    def _fix(self, index: int):
        """Generate failed step ``index`` again with its error (Session.fix), streaming into a live card."""
        turn = self.session.turns[index]
        text = turn.instruction

        def work():
            fixed = self.session.fix(index, on_text=self._streamer(index, text))
            if fixed is turn and not self._stop_requested:
                last = turn.attempts[-1]
                self.show_error(f"The new attempt at step {index + 1} failed too ({last['error']}), so the step is "
                                "unchanged; every attempt is kept in its attempts. Fix again, or edit the "
                                "instruction.")
        self._start("generate", "Fixing&hellip;", work, live=text, hide_from=index)

    @_guarded
    def _undo(self):
        self._start("undo", "Undoing&hellip;", self.session.undo)

    @_guarded
    def stop(self):
        """Stop the generation or the step running now (the turn keeps what was generated so far)."""
        self._stop_requested = True
        self.session.cancel()
        self.status.value = "Stopping&hellip;"

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the background work is done; returns False if it is still going after ``timeout``."""
        t = self.thread
        if t is not None:
            t.join(timeout)
        return not (t is not None and t.is_alive())

    # ---- program and export ------------------------------------------------------------------------------
    @_guarded
    def export_python(self) -> Path:
        path = self.directory / f"{self.export_name}.py"
        path.write_text(self.session.to_python())
        self.status.value = f"Wrote <code>{esc(path)}</code>"
        return path

    @_guarded
    def export_notebook(self) -> Path:
        path = self.session.to_notebook(self.directory / f"{self.export_name}.ipynb")
        self.status.value = f"Wrote <code>{esc(path)}</code>"
        return path

    @_guarded
    def _toggle_program(self):
        self.program.value = self.session.to_python()
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
        if isinstance(error, ConvsynthError):
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

    def _set_busy(self, busy: bool, status: str) -> None:
        for b in (self.generate_button, self.run_all_button, self.export_py_button, self.export_nb_button):
            b.disabled = busy
        _show(self.stop_button, busy)
        self.status.value = status

    def refresh(self, live: bool = False) -> None:
        """Bring the cards, title, program and prompt view up to date with the session."""
        with self._refresh_lock:
            s = self.session
            turns = list(s.turns)[:self._hide_from] if self._hide_from is not None else list(s.turns)
            shown = []
            for i, turn in enumerate(turns):
                card = self._cards.get(id(turn))
                if card is None or card.turn is not turn:
                    card = self._cards[id(turn)] = _Card(self, turn)
                card.show(i, turn, last=i == len(s.turns) - 1, busy=self.busy)
                shown.append(card)
            for key, card in list(self._cards.items()):
                if all(card is not c for c in shown) and all(card.turn is not t for t in s.turns):
                    _close_tree(card)
                    del self._cards[key]
            self.cards.children = shown + ([self.live] if live else [])
            n = len(s.turns)
            self.title.value = (f"<b>convsynth</b> &middot; {esc(s.model.name)} &middot; {_n(n, 'step')} &middot; "
                                f"{_n(s.cached_tokens)} in the KV cache &middot; folder "
                                f'<code class="cs-folder">{esc(s.cwd or "a private folder")}</code>')
            if not self.busy and not self.status.value:
                self.status.value = "Ready." if n else "Type an instruction and press Enter or Generate."
            if self.program_box.layout.display != "none":
                self.program.value = s.to_python()
            self._update_prompt()

    @_guarded
    def _update_prompt(self, force: bool = False) -> None:
        if self.prompt_panel.selected_index is None and not force:
            return
        if self.busy:  # the cache is changing under us; the view is brought up to date when the work ends
            return
        self.prompt.value = prompt_html(self.session.prompt_tokens(self.instruction.value.strip() or None))


def ui(model_or_session=None, **session_options) -> SessionWidget:
    """The widget for a session. ``None``: the packaged model; a path: that checkpoint; a CodeGen: a new
    Session on it (``session_options`` go to Session); a Session: that session."""
    from .session import Session
    if isinstance(model_or_session, Session):
        if session_options:
            raise TypeError(f"ui(session) takes no session options ({', '.join(session_options)}): "
                            "the session has its settings; change them in the widget's Settings.")
        return SessionWidget(model_or_session)
    model = model_or_session
    if model is None or isinstance(model, (str, Path)):
        from .codegen import load
        model = load(model)
    return SessionWidget(Session(model, **session_options))
