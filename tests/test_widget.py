"""The widget driven from Python: buttons clicked with ``button.click()``, the background thread awaited with
``wait()``. A random-weight checkpoint keeps this independent of the trained model (its code is nonsense, which
is fine: the widget shows whatever the model writes)."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

pytest.importorskip("ipywidgets")

import convsynth  # noqa: E402
from convsynth import widget as widget_module  # noqa: E402
from convsynth.widget import SessionWidget, ui  # noqa: E402

from helpers import reference_model, write_checkpoint  # noqa: E402

WAIT = 120  # seconds: generous, the machine may be busy


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(reference_model("tiny"), tmp_path_factory.mktemp("widget") / "ck", "safetensors")


@pytest.fixture(scope="module")
def cg(checkpoint):
    return convsynth.load(checkpoint)


@pytest.fixture
def session(cg):
    s = convsynth.Session(cg, max_new_tokens=8, temperature=0, cwd=None)  # steps write files: a private folder
    yield s
    s.close()


@pytest.fixture
def w(session, tmp_path):
    session.autosave = tmp_path / ".convsynth" / "test-1.json"
    return SessionWidget(session, directory=tmp_path)


def visible(widget) -> bool:
    return widget.layout.display != "none"


def cards(w):
    return list(w.cards.children)


def submit(box, text: str) -> None:
    """What the page sends on Enter or the box's button: one message carrying the text."""
    box._handle_custom_msg({"type": "submit", "text": text}, [])


def generate(w, instruction: str):
    submit(w.instruction, instruction)
    assert w.wait(WAIT), "generation did not finish"
    assert not w.error.value, w.error.value


def test_two_kernels_in_one_folder_get_their_own_autosave(tmp_path):
    """Where Jupyter does not name the notebook (JPY_SESSION_NAME unset) every kernel's autosave is 'session-n':
    a name is claimed by creating the file, so a second kernel in the folder takes the next one instead of
    overwriting the first one's session. A claimed file never written is not listed and goes when its kernel
    exits."""
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "JPY_SESSION_NAME"}
    code = ("import sys; from convsynth import widget_files as f; print(f.new_autosave(sys.argv[1]), flush=True); "
            "sys.stdin.read()")
    kernels = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    paths = [Path(k.stdout.readline().strip()) for k in kernels]  # both alive, each holding its claim
    assert paths[0] != paths[1] and {p.name for p in paths} == {"session-1.json", "session-2.json"}
    assert all(p.exists() for p in paths)
    from convsynth import widget_files
    assert widget_files.saved_sessions(tmp_path) == [] and widget_files.latest_autosave(tmp_path, "session") is None
    paths[0].write_text("{}")  # the first kernel's first change
    for k in kernels:
        k.communicate("", timeout=60)
    assert paths[0].exists() and not paths[1].exists()  # the unwritten claim went with its kernel
    assert widget_files.saved_sessions(tmp_path) == [paths[0]]


def test_a_session_another_kernel_writes_is_not_resumed_or_opened_here(tmp_path):
    """A kernel holds the autosave its widget writes (a lock the system drops when the process ends): another
    kernel's ui(resume=True) starts afresh instead of resuming it, and opening it by path is refused in one line,
    so two kernels never overwrite each other's steps. Once that kernel is gone, the file resumes as before."""
    import os
    import subprocess
    import sys
    from convsynth import widget_files
    env = {k: v for k, v in os.environ.items() if k != "JPY_SESSION_NAME"}
    code = ("import sys; from convsynth import widget_files as f; p = f.new_autosave(sys.argv[1]); "
            "p.write_text('{}'); print(p, flush=True); sys.stdin.read()")
    other = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env)
    path = Path(other.stdout.readline().strip())
    assert widget_files.in_use(path) and not widget_files.hold(path)
    assert widget_files.latest_autosave(tmp_path, "session") is None
    with pytest.raises(convsynth.SessionError, match="session-1.json is open in another kernel"):
        ui(str(path), directory=tmp_path)
    other.communicate("", timeout=60)
    assert not widget_files.in_use(path)
    assert widget_files.latest_autosave(tmp_path, "session").resolve() == path.resolve()


def test_ui_takes_a_model_a_session_or_a_path(cg, checkpoint, session, tmp_path):
    made = ui(cg, max_new_tokens=5, directory=tmp_path)
    assert isinstance(made, SessionWidget) and made.session.model is cg
    assert made.session.sampling.max_new_tokens == 5
    assert made.session.autosave.parent == (tmp_path / ".convsynth").resolve()
    assert ui(session).session is session
    with pytest.raises(TypeError, match="no session options"):
        ui(session, temperature=0.5)
    assert isinstance(session.widget(), SessionWidget) and session.widget().session is session
    assert convsynth.ui is ui
    from_path = ui(str(checkpoint), directory=tmp_path)
    assert from_path.session.model.config.n_embd == cg.config.n_embd
    assert from_path.session.autosave != made.session.autosave  # each widget its own file
    assert repr(made) == f"SessionWidget(model={cg.name!r}, turns=0)"
    for w_, cls in ((made.instruction, "convsynth-instruction"), (made.stop_button, "convsynth-stop"),
                    (made.error, "convsynth-error"), (made.settings, "convsynth-settings"),
                    (made.prompt_panel, "convsynth-prompt-view"), (made.status, "convsynth-status"),
                    (made.run_all_button, "convsynth-run-all"), (made.undo_button, "convsynth-undo-change"),
                    (made.redo_button, "convsynth-redo"), (made, "convsynth")):
        assert cls in w_._dom_classes
    assert made.instruction.button == "Generate" and "convsynth-generate" in made.instruction.button_classes
    # nothing is written before the first change: the names are claimed by empty files, listed nowhere
    assert all(p.stat().st_size == 0 for p in tmp_path.glob(".convsynth/*"))
    assert convsynth.widget_files.saved_sessions(tmp_path) == []
    with pytest.raises(convsynth.SessionError, match="no saved session"):
        ui(str(tmp_path / "missing.json"))


def test_generate_streams_code_into_a_card(w, session, monkeypatch):
    monkeypatch.setattr(widget_module, "STREAM_INTERVAL", 0.0)
    session.sampling = session.sampling.replace(max_new_tokens=12)
    streamed = []
    w.live.code.observe(lambda c: streamed.append(c["new"]), "html")
    shown = []
    w.stop_button.layout.observe(lambda c: shown.append(c["new"]), "display")
    w.instruction.value = "Assign 3 to x."
    submit(w.instruction, "Assign 3 to x.")
    assert w.wait(WAIT)
    assert shown == [None, "none"]  # Stop was there while generating, and only then
    assert not w.busy and not visible(w.stop_button) and not w.instruction.busy
    assert not w.error.value, w.error.value
    [card] = cards(w)
    turn = session.turns[0]
    assert card.turn is turn and "convsynth-card" in card._dom_classes
    assert "Assign 3 to x." in card.head.value and "Step 1" in card.head.value
    assert 'class="cs-hl"' in card.code.html and card.code.value == turn.code  # pygments, and the raw code
    assert len([v for v in streamed if "cs-hl" in v]) >= 2  # it grew piece by piece
    assert f"<b>{turn.stats.prefill_tokens}</b> new + <b>0</b> cached tokens" in card.stats.value
    # no "1 tokens" (a rate such as "75.1 tokens/s" is not one)
    assert "first token" in card.stats.value and not re.search(r"(?<![\d.])1 tokens", card.stats.value)
    assert w.instruction.value == ""  # ready for the next one
    assert "1 step " in w.title.value
    assert visible(card.run_button) and visible(card.delete_button) and visible(card.regenerate_button)


def test_streaming_is_throttled(w, session, monkeypatch):
    monkeypatch.setattr(widget_module, "STREAM_INTERVAL", 3600.0)
    session.sampling = session.sampling.replace(max_new_tokens=16)
    updates = []
    w.live.code.observe(lambda c: updates.append(c["new"]), "html")
    generate(w, "Assign 3 to x.")
    assert session.turns[0].stats.generated_tokens > 2
    assert len(updates) <= 2  # "waiting for the first token", then at most one update per interval


def test_enter_generates_exactly_the_text_it_carries(w, session):
    w.instruction.value = "Assign 3 to"  # the value synced so far lags behind the page: it must not matter
    submit(w.instruction, "Assign 3 to x.")
    assert w.wait(WAIT)
    assert session.turns[0].instruction == "Assign 3 to x."
    assert w.instruction.value == "Assign 3 to"  # something else is in the box: it is not cleared
    generate(w, "Print x.")
    first, second = cards(w)
    stats = session.turns[1].stats
    assert stats.cached_tokens > 0 and stats.prefill_tokens < stats.cached_tokens
    assert f"<b>{stats.cached_tokens}</b> cached tokens" in second.stats.value
    first.edit_button.click()
    assert visible(first.edit_row) and first.editor.value == "Assign 3 to x."
    first.editor.value = "Assign 4"  # stale again: the Edit box's Enter carries its text too
    submit(first.editor, "Assign 4 to x.")
    assert w.wait(WAIT) and not w.error.value
    assert [t.instruction for t in session.turns] == ["Assign 4 to x.", "Print x."]


def test_stop_drops_the_unfinished_step_and_the_session_goes_on(w, session, monkeypatch):
    monkeypatch.setattr(widget_module, "STREAM_INTERVAL", 0.0)
    generate(w, "Assign 3 to x.")
    session.sampling = session.sampling.replace(max_new_tokens=1500)
    submit(w.instruction, "Loop forever.")
    deadline = time.monotonic() + WAIT
    while "cs-hl" not in w.live.code.html and time.monotonic() < deadline:
        time.sleep(0.02)
    submit(w.instruction, "Print x.")  # busy: ignored, said so
    assert "Busy" in w.status.value
    w.stop_button.click()
    assert w.wait(WAIT)
    assert [t.instruction for t in session.turns] == ["Assign 3 to x."]  # no half step left to undo by hand
    assert "Stopped: the unfinished step was dropped" in w.status.value
    assert not visible(w.stop_button) and not w.error.value and len(cards(w)) == 1
    w.redo_button.click()  # it can be had back
    assert w.wait(WAIT)
    assert session.turns[-1].stats.finish_reason == "cancelled" and len(cards(w)) == 2
    session.sampling = session.sampling.replace(max_new_tokens=4)
    generate(w, "Print x.")
    assert len(session.turns) == 3 and session.turns[2].stats.finish_reason != "cancelled"


def test_edit_keeps_later_steps_undo_redo_and_delete_asks(w, session):
    for ins in ("Assign 3 to x.", "Print x.", "Assign 4 to y."):
        generate(w, ins)
    later = [t.code for t in session.turns[1:]]
    first = cards(w)[0]
    first.edit_button.click()
    submit(first.editor, "Assign 5 to x.")
    assert w.wait(WAIT) and not w.error.value
    assert [t.instruction for t in session.turns] == ["Assign 5 to x.", "Print x.", "Assign 4 to y."]
    assert [t.code for t in session.turns[1:]] == later and len(cards(w)) == 3  # nothing lost
    assert "Undo the edit" == w.undo_button.tooltip
    w.undo_button.click()
    assert w.wait(WAIT) and w.status.value == "Undid the edit."
    assert session.turns[0].instruction == "Assign 3 to x." and "Assign 3 to x." in cards(w)[0].head.value
    w.redo_button.click()
    assert w.wait(WAIT) and session.turns[0].instruction == "Assign 5 to x."

    old = cards(w)[1]
    old.regenerate_button.click()  # any generated step, later ones kept
    assert w.wait(WAIT) and not w.error.value
    assert len(session.turns) == 3 and cards(w)[1] is not old
    cards(w)[1].regenerate_button.click()  # again, nothing changed before it: greedy gives the same code
    assert w.wait(WAIT) and not w.error.value
    assert "Regenerated: the same code again (temperature 0" in w.status.value  # said, not silent

    cards(w)[1].delete_button.click()  # asks first
    assert visible(w.confirm_row) and "Delete step 2" in w.confirm_text.value and len(session.turns) == 3
    w.confirm_no.click()
    assert not visible(w.confirm_row) and len(session.turns) == 3
    cards(w)[1].delete_button.click()
    w.confirm_yes.click()
    assert w.wait(WAIT)
    assert [t.instruction for t in session.turns] == ["Assign 5 to x.", "Assign 4 to y."] and len(cards(w)) == 2
    w.undo_button.click()
    assert w.wait(WAIT) and len(cards(w)) == 3


def test_code_edited_in_a_card_is_saved_marked_and_runs(w, session):
    session.add_code("x = 1", "Assign 1 to x.")
    session.add_code("print(x)")
    card = cards(w)[1]  # the widget followed the changes made from code
    card.code._handle_custom_msg({"type": "save", "text": "print(x + 1)"}, [])  # leaving the editor saves
    assert w.wait(WAIT) and not w.error.value
    assert session.turns[1].code == "print(x + 1)\n" and session.turns[1].edited
    assert "code edited by hand" in cards(w)[1].head.value
    cards(w)[1].code._handle_custom_msg({"type": "run", "text": "print(x + 41)"}, [])  # Shift+Enter
    assert w.wait(WAIT) and not w.error.value
    assert session.turns[1].result.stdout == "42\n" and "42" in cards(w)[1].outputs.outputs[0]["text"]
    assert session.turns[0].result.ok  # what it depends on ran first
    assert cards(w)[1].run_button.description == "Run again"
    w.run_all_button.click()
    assert "Nothing to run" in w.status.value  # said, not silent
    from convsynth.session import Turn
    session.turns.append(Turn("Do nothing.", "\n"))  # a step the model left empty is not reported as "ok"
    w.refresh()
    assert "no code: nothing to run" in cards(w)[-1].output.value and "(no code)" in cards(w)[-1].code.html


def test_run_shows_stdout_errors_images_and_timeouts(w, session):
    session.add_code("print('hello from the sandbox')", "Say hello.")
    session.add_code("1 / 0")
    session.add_code("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()")
    w.refresh()
    hello, zero, plot = cards(w)
    assert "written by hand" in zero.stats.value and "code written by hand" in zero.head.value
    zero.run_button.click()  # runs the steps not run yet through this one, in order
    assert w.wait(WAIT) and not w.error.value
    # The outputs go to the front end as nbformat outputs (outputs.py); the status line stays HTML.
    assert hello.outputs.outputs == ({"output_type": "stream", "name": "stdout", "text": "hello from the sandbox\n"},)
    [err] = zero.outputs.outputs
    assert err["output_type"] == "error" and err["ename"] == "ZeroDivisionError" and "cs-bad" in zero.output.value
    assert session.turns[2].result is None and plot.run_button.description == "Run" and visible(plot.run_button)
    assert not plot.output.value and plot.outputs.outputs == ()
    plot.run_button.click()
    assert w.wait(WAIT) and not w.error.value
    assert "ok" in hello.output.value and "cs-bad" not in hello.output.value
    assert "Step 2: ZeroDivisionError" in zero.output.value  # the error in one line, the step named
    assert any(line.startswith("ZeroDivisionError") for line in err["traceback"])  # its traceback, in the outputs
    [png] = plot.outputs.outputs
    assert png["output_type"] == "display_data" and png["data"]["image/png"]
    assert all(c.run_button.description == "Run again" and visible(c.run_button) for c in (hello, zero, plot))
    assert all(t.result is not None for t in session.turns)

    w.timeout.value = 1.0  # the settings' timeout reaches the sandbox
    session.add_code("import os, time\nif not os.path.exists('go'):\n    time.sleep(30)\nprint('went')")
    w.run_all_button.click()
    assert w.wait(WAIT)
    assert session.turns[-1].result.status == "timeout"
    out = cards(w)[-1].output.value
    assert "stopped after 1 s: time limit" in out and "KeyboardInterrupt" not in out and "Traceback" not in out
    assert "KeyboardInterrupt" not in str(cards(w)[-1].outputs.outputs)  # no traceback in the outputs either
    (Path(session.sandbox.workdir) / "go").touch()
    cards(w)[-1].run_button.click()  # a timed-out step runs again
    assert w.wait(WAIT) and not w.error.value
    assert session.turns[-1].result.stdout == "went\n"


def test_settings_reach_the_session(w, session):
    assert w.settings.selected_index is None  # collapsed
    w.temperature.value = 0.7
    w.top_p.value = 0.5
    w.max_new_tokens.value = 7
    w.timeout.value = 3.0
    w.auto_run.value = True
    assert (session.sampling.temperature, session.sampling.top_p, session.sampling.max_new_tokens) == (0.7, 0.5, 7)
    assert session.timeout == 3.0 and session.auto_run is True
    w._set("temperature", {"new": -1.0})  # what a bad value does: said in the error area, setting kept
    assert "SamplingError" in w.error.value and session.sampling.temperature == 0.7


def test_auto_run_runs_each_generated_step(w, session):
    w.auto_run.value = True
    generate(w, "Assign 3 to x.")
    [turn] = session.turns
    assert turn.result is not None and "cs-out" in cards(w)[0].output.value


def test_errors_are_shown_and_the_session_keeps_its_turns(w, session, monkeypatch):
    submit(w.instruction, "  ")  # nothing typed
    assert visible(w.error) and "Type an instruction" in w.error.value and not session.turns

    generate(w, "Assign 3 to x.")
    assert not visible(w.error)  # cleared by the next action

    def broken(*a, **k):
        raise RuntimeError("boom in a callback")
    monkeypatch.setattr(session, "ask", broken)
    w.instruction.value = "Print x."
    submit(w.instruction, "Print x.")
    assert w.wait(WAIT)
    assert visible(w.error) and "RuntimeError" in w.error.value and "boom in a callback" in w.error.value
    assert "Traceback" in w.error.value  # the whole traceback, folded
    assert len(session.turns) == 1 and len(cards(w)) == 1 and not w.busy
    assert w.instruction.value == "Print x."  # not lost
    monkeypatch.undo()

    w.max_new_tokens.value = session.model.config.n_positions  # does not fit: ContextWindowError
    submit(w.instruction, "Print x.")
    assert w.wait(WAIT)
    assert "ContextWindowError" in w.error.value and "context window is full" in w.error.value
    assert len(session.turns) == 1

    monkeypatch.setattr(session, "to_python", broken)
    w.error.value = ""
    w.export_py_button.click()  # errors in plain callbacks land there too
    assert "boom in a callback" in w.error.value
    assert not list(w.directory.glob("*.py"))  # and no empty file was left


def test_exports_never_overwrite_and_link_the_file(w, session, tmp_path, monkeypatch):
    session.add_code("x = 3", "Assign 3 to x.")
    (tmp_path / "convsynth-session.py").write_text("mine\n")  # someone's file: never replaced
    w.export_py_button.click()
    w.export_py_button.click()
    assert (tmp_path / "convsynth-session.py").read_text() == "mine\n"
    assert (tmp_path / "convsynth-session-2.py").read_text() == session.to_python()
    assert (tmp_path / "convsynth-session-3.py").read_text() == session.to_python()
    assert w.bridge.link_text == "Wrote"
    assert w.bridge.link_path == str((tmp_path / "convsynth-session-3.py").resolve())
    w.export_nb_button.click()
    w.export_nb_button.click()
    for name in ("convsynth-session.ipynb", "convsynth-session-2.ipynb"):
        nb = json.loads((tmp_path / name).read_text())
        assert any("x = 3" in "".join(c["source"]) for c in nb["cells"])

    assert not visible(w.program_box)
    w.program_button.click()
    assert visible(w.program_box) and "x = 3" in w.program.value and "read-only" in w.program_box.children[0].value

    class FakeShell:
        def set_next_input(self, text, replace=False):
            self.text = text
    shell = FakeShell()
    import IPython
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    w.to_cell()
    assert shell.text == session.to_python()


def test_save_open_resume_and_the_kernel_gone_message(cg, tmp_path):
    w = ui(cg, directory=tmp_path, resume=True, max_new_tokens=6, temperature=0)  # nothing saved yet: a new one
    assert not w.session.turns and w.resumable
    generate(w, "Assign 3 to x.")
    generate(w, "Print x.")
    path = w.session.autosave
    assert path.parent == (tmp_path / ".convsynth").resolve() and len(json.loads(path.read_text())["turns"]) == 2
    assert w.bridge.gone_message == "The kernel restarted or stopped: run this cell again to resume (2 steps saved)."
    w.session.close()

    back = ui(cg, directory=tmp_path, resume=True, max_new_tokens=9)  # the cell run again after a restart
    assert back.session.autosave == path and back.session.text == w.session.text
    assert back.session.sampling.max_new_tokens == 9  # the cell's options still apply
    assert len(cards(back)) == 2
    other = ui(cg, directory=tmp_path)  # not resuming: a new file, and a message that says how to resume
    assert other.session.autosave != path and "ui(resume=True)" in other.bridge.gone_message
    other.session.add_code("y = 1")
    other.save()
    assert other.bridge.link_text == "Saved to" and Path(other.open_choice.options[0][1]) == other.session.autosave
    other.open_session(str(path))  # has a step: asks first
    assert visible(other.confirm_row) and "Open" in other.confirm_text.value
    other.confirm_yes.click()
    assert other.session.autosave == path and len(cards(other)) == 2
    by_path = ui(str(path), model=cg)
    assert by_path.session.text == back.session.text
    for x in (back, other, by_path):
        x.session.close()


def test_long_outputs_are_bounded_and_stats_read_right():
    from convsynth.execution import ExecutionResult
    from convsynth.session import TurnStats
    from convsynth.widget_html import result_html, stats_html
    long = result_html(ExecutionResult("ok", stdout="".join(f"{i}\n" for i in range(10_000))))
    assert 'class="cs-scroll"' in long and 'class="cs-all"' in long
    assert "cs-scroll" not in result_html(ExecutionResult("ok", stdout="1\n2\n"))
    one = stats_html(TurnStats(prefill_tokens=1, cached_tokens=1, time_to_first_token=0.01,
                               decode_tokens_per_s=0.0, generated_tokens=1, finish_reason="stop"))
    assert "<b>1</b> cached token &middot;" in one and "1 token (" in one and "tokens/s" not in one
    stopped = result_html(ExecutionResult("error", error="KeyboardInterrupt", traceback="Traceback...\nKeyboardInt",
                                          note="Interrupted on request; interrupted."))
    assert "stopped: you pressed Stop" in stopped and "Traceback" not in stopped


def test_prompt_view_tells_cached_from_new_tokens(w, session):
    w.prompt_panel.selected_index = 0  # opening it renders the view
    assert "The session so far" in w.prompt.value and "Type an instruction" in w.prompt.value  # empty box
    generate(w, "Assign 3 to x.")
    w.instruction.value = "Print x."  # the view follows the box
    tokens = session.prompt_tokens("Print x.")
    assert "".join(t for t, _ in tokens) == session.text + "# Print x.\n"
    cached = sum(c for _, c in tokens)
    assert 0 < cached < len(tokens)
    assert w.prompt.value.count('class="cs-tok cs-cached"') == cached + 1  # + the legend's sample
    assert w.prompt.value.count('class="cs-tok cs-new"') == len(tokens) - cached + 1
    assert f"{cached} tokens" in w.prompt.value and "Print" in w.prompt.value and "cs-prompt-scroll" in w.prompt.value
    assert "convsynth-prompt-view" in w.prompt_panel._dom_classes


def test_the_widget_follows_changes_made_from_code(w, session):
    session.ask("Assign 5 to x.")  # from a cell: the cards follow without refresh()
    assert len(cards(w)) == 1 and "Assign 5 to x." in cards(w)[0].head.value and "1 step" in w.title.value
    session.add_code("y = 2")
    session.delete(0)
    assert len(cards(w)) == 1 and "code written by hand" in cards(w)[0].head.value
    session.sampling = session.sampling.replace(temperature=0.7, top_p=0.5, max_new_tokens=12)
    session.auto_run, session.timeout = True, 3.0  # the settings follow code too
    assert (w.temperature.value, w.top_p.value, w.max_new_tokens.value) == (0.7, 0.5, 12)
    assert w.auto_run.value is True and w.timeout.value == 3.0
    w.temperature.value = 0.3  # and the controls still change the session
    assert session.sampling.temperature == 0.3 and session.sampling.top_p == 0.5
    assert not w.busy and w.work.action == ""


def test_stopped_or_failed_work_keeps_what_the_user_typed(w, session, monkeypatch):
    """Stop during a generation leaves the instruction in its box (the step is dropped, the words are not); an
    edit that fails brings its text back when the editor opens again, not the old instruction."""
    monkeypatch.setattr(widget_module, "STREAM_INTERVAL", 0.0)
    generate(w, "Assign 3 to x.")
    session.sampling = session.sampling.replace(max_new_tokens=1500)
    w.instruction.value = "Print the numbers from 1 to 1000."
    submit(w.instruction, w.instruction.value)
    deadline = time.monotonic() + WAIT
    while "cs-hl" not in w.live.code.html and time.monotonic() < deadline:
        time.sleep(0.02)
    w.stop_button.click()
    assert w.wait(WAIT) and len(session.turns) == 1
    assert w.instruction.value == "Print the numbers from 1 to 1000."
    session.sampling = session.sampling.replace(max_new_tokens=4000)  # more than the window: the edit fails
    card = cards(w)[0]
    card.edit_button.click()
    submit(card.editor, "Assign the number of seconds in a leap year to x.")
    assert w.wait(WAIT) and "ContextWindowError" in w.error.value
    assert session.turns[0].instruction == "Assign 3 to x."
    cards(w)[0].edit_button.click()
    assert cards(w)[0].editor.value == "Assign the number of seconds in a leap year to x."


def test_settings_are_autosaved_and_open_shows_the_opened_ones(w, session, cg, tmp_path):
    session.add_code("x = 1")
    w.timeout.value = 60.0
    saved = json.loads(session.autosave.read_text())
    assert saved["timeout"] == 60.0  # a settings change is a change: written at once
    other = convsynth.Session(cg, timeout=25.0, temperature=0.7, cwd=None)
    path = other.save(tmp_path / "other.json")
    w.open_session(str(path))
    assert visible(w.confirm_row)  # this session has a step: asked first
    w.confirm_yes.click()
    assert w.wait(WAIT) and not w.error.value
    assert w.session.timeout == 25.0 and w.timeout.value == 25.0 and w.temperature.value == 0.7
    w.session.close()
    other.close()


def test_a_folder_that_cannot_be_written_is_one_line(cg, tmp_path):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the notebook's folder should be")
    made = ui(cg, directory=blocked, cwd=None)
    made.session.add_code("x = 1")
    for press in (made.save, made.export_python, made.export_notebook):
        made.clear_error()
        press()
        assert "Error" in made.error.value and "traceback" not in made.error.value, made.error.value
    made.session.close()


def test_an_open_edit_box_survives_a_change_to_an_earlier_step(w, session):
    """Changing step 1's code makes every later step a copy, so their cards are rebuilt: an Edit box open on step
    3, with what was typed in it, is open on the new card."""
    for code in ("x = 1", "y = 2", "print(x + y)"):
        session.add_code(code, f"Step with {code}.")
    w.refresh()
    third = cards(w)[2]
    third.edit_button.click()
    third.editor.value = "Print the sum of x and y, squared."
    cards(w)[0].code._handle_custom_msg({"type": "save", "text": "x = 10"}, [])
    assert w.wait(WAIT) and not w.error.value and session.turns[0].code == "x = 10\n"
    now = cards(w)[2]
    assert now is not third and visible(now.edit_row) and now.editor.value == "Print the sum of x and y, squared."
