"""The widget driven from Python: buttons clicked with ``button.click()``, the background thread awaited with
``wait()``. A random-weight checkpoint keeps this independent of the trained model (its code is nonsense, which
is fine: the widget shows whatever the model writes)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("ipywidgets")

import convsynth  # noqa: E402
from convsynth import widget as widget_module  # noqa: E402
from convsynth.widget import SessionWidget, ui  # noqa: E402

from conftest import reference_model, write_checkpoint  # noqa: E402

WAIT = 120  # seconds: generous, the machine may be busy


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(reference_model("tiny"), tmp_path_factory.mktemp("widget") / "ck", "safetensors")


@pytest.fixture(scope="module")
def cg(checkpoint):
    return convsynth.load(checkpoint)


@pytest.fixture
def session(cg):
    s = convsynth.Session(cg, max_new_tokens=8, temperature=0)
    yield s
    s.close()


@pytest.fixture
def w(session, tmp_path):
    return SessionWidget(session, directory=tmp_path)


def visible(widget) -> bool:
    return widget.layout.display != "none"


def cards(w):
    return list(w.cards.children)


def generate(w, instruction: str):
    w.instruction.value = instruction
    w.generate_button.click()
    assert w.wait(WAIT), "generation did not finish"
    assert not w.error.value, w.error.value


def test_ui_takes_a_model_a_session_or_a_path(cg, checkpoint, session):
    made = ui(cg, max_new_tokens=5)
    assert isinstance(made, SessionWidget) and made.session.model is cg
    assert made.session.sampling.max_new_tokens == 5
    assert ui(session).session is session
    with pytest.raises(TypeError, match="no session options"):
        ui(session, temperature=0.5)
    assert isinstance(session.widget(), SessionWidget) and session.widget().session is session
    assert convsynth.ui is ui
    from_path = ui(str(checkpoint))
    assert from_path.session.model.config.n_embd == cg.config.n_embd
    assert repr(made) == f"SessionWidget(model={cg.name!r}, turns=0)"
    for w_, cls in ((made.instruction, "convsynth-instruction"), (made.generate_button, "convsynth-generate"),
                    (made.stop_button, "convsynth-stop"), (made.error, "convsynth-error"),
                    (made.settings, "convsynth-settings"), (made.prompt_panel, "convsynth-prompt-view"),
                    (made.status, "convsynth-status"), (made.run_all_button, "convsynth-run-all"), (made, "convsynth")):
        assert cls in w_._dom_classes
    assert made.generate_button.description == "Generate"


def test_generate_streams_code_into_a_card(w, session, monkeypatch):
    monkeypatch.setattr(widget_module, "STREAM_INTERVAL", 0.0)
    session.sampling = session.sampling.replace(max_new_tokens=12)
    streamed = []
    w.live.code.observe(lambda c: streamed.append(c["new"]), "value")
    shown = []
    w.stop_button.layout.observe(lambda c: shown.append(c["new"]), "display")
    w.instruction.value = "Assign 3 to x."
    w.generate_button.click()
    assert w.wait(WAIT)
    assert shown == [None, "none"]  # Stop was there while generating, and only then
    assert not w.busy and not visible(w.stop_button) and not w.generate_button.disabled
    assert not w.error.value, w.error.value
    [card] = cards(w)
    turn = session.turns[0]
    assert card.turn is turn and "convsynth-card" in card._dom_classes
    assert "Assign 3 to x." in card.head.value and "Step 1" in card.head.value
    assert 'class="cs-hl"' in card.code.value  # pygments
    assert len([v for v in streamed if "cs-hl" in v]) >= 2  # it grew piece by piece
    assert f"<b>{turn.stats.prefill_tokens}</b> new + <b>0</b> cached" in card.stats.value
    assert "tokens/s" in card.stats.value and "first token" in card.stats.value
    assert w.instruction.value == ""  # ready for the next one
    assert "1 step" in w.title.value
    assert visible(card.run_button) and visible(card.undo_button) and visible(card.regenerate_button)


def test_streaming_is_throttled(w, session, monkeypatch):
    monkeypatch.setattr(widget_module, "STREAM_INTERVAL", 3600.0)
    session.sampling = session.sampling.replace(max_new_tokens=16)
    updates = []
    w.live.code.observe(lambda c: updates.append(c["new"]), "value")
    generate(w, "Assign 3 to x.")
    assert session.turns[0].stats.generated_tokens > 2
    assert len(updates) <= 2  # "waiting for the first token", then at most one update per interval


def test_enter_submits_and_the_next_turn_reuses_the_cache(w, session):
    w.instruction.value = "Assign 3 to x."
    w.instruction._handle_custom_msg({"event": "submit"}, [])  # what the front end sends on Enter
    assert w.wait(WAIT)
    generate(w, "Print x.")
    first, second = cards(w)
    stats = session.turns[1].stats
    assert stats.cached_tokens > 0 and stats.prefill_tokens < stats.cached_tokens
    assert f"<b>{stats.cached_tokens}</b> cached tokens" in second.stats.value
    assert not visible(first.undo_button) and visible(second.undo_button)  # Undo on the last card only
    assert not visible(first.regenerate_button)


def test_stop_cancels_generation_and_the_session_goes_on(w, session, monkeypatch):
    monkeypatch.setattr(widget_module, "STREAM_INTERVAL", 0.0)
    session.sampling = session.sampling.replace(max_new_tokens=1500)
    w.instruction.value = "Assign 3 to x."
    w.generate_button.click()
    deadline = time.monotonic() + WAIT
    while "cs-hl" not in w.live.code.value and time.monotonic() < deadline:
        time.sleep(0.02)
    w.generate_button.click()  # busy: ignored, said so
    assert "Busy" in w.status.value
    w.stop_button.click()
    assert w.wait(WAIT)
    [turn] = session.turns
    assert turn.stats.finish_reason == "cancelled" and 0 < turn.stats.generated_tokens < 1500
    assert "(stopped)" in cards(w)[0].stats.value and w.status.value == "Stopped."
    assert not visible(w.stop_button) and not w.error.value
    session.sampling = session.sampling.replace(max_new_tokens=4)
    generate(w, "Print x.")
    assert len(session.turns) == 2 and session.turns[1].stats.finish_reason != "cancelled"


def test_undo_regenerate_and_inline_edit(w, session):
    generate(w, "Assign 3 to x.")
    generate(w, "Print x.")
    old = cards(w)[1]
    old.regenerate_button.click()
    assert w.wait(WAIT) and not w.error.value
    assert [t.instruction for t in session.turns] == ["Assign 3 to x.", "Print x."]
    assert cards(w)[1] is not old  # a new turn, a new card

    cards(w)[1].undo_button.click()
    assert w.wait(WAIT)
    assert len(session.turns) == 1 and len(cards(w)) == 1

    first = cards(w)[0]
    assert not visible(first.edit_row)
    first.edit_button.click()
    assert visible(first.edit_row) and first.editor.value == "Assign 3 to x."
    first.editor.value = "Assign 4 to y."
    first.editor._handle_custom_msg({"event": "submit"}, [])  # Enter in the inline editor
    assert w.wait(WAIT) and not w.error.value
    assert [t.instruction for t in session.turns] == ["Assign 4 to y."]
    assert len(cards(w)) == 1 and "Assign 4 to y." in cards(w)[0].head.value

    generate(w, "Print y.")
    cards(w)[0].edit_button.click()
    cards(w)[0].editor.value = "Assign 5 to z."
    cards(w)[0].save_button.click()  # editing step 1 drops the steps after it
    assert w.wait(WAIT) and not w.error.value
    assert [t.instruction for t in session.turns] == ["Assign 5 to z."] and len(cards(w)) == 1


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
    assert session.turns[2].result is None and visible(plot.run_button) and not plot.output.value
    assert plot.outputs.outputs == ()
    plot.run_button.click()
    assert w.wait(WAIT) and not w.error.value
    assert "ok" in hello.output.value and "cs-bad" not in hello.output.value
    assert any(line.startswith("ZeroDivisionError") for line in err["traceback"])
    [png] = plot.outputs.outputs
    assert png["output_type"] == "display_data" and png["data"]["image/png"]
    assert not any(visible(c.run_button) for c in (hello, zero, plot))  # nothing left to run
    assert all(t.result is not None for t in session.turns)

    w.timeout.value = 1.0  # the settings' timeout reaches the sandbox
    session.add_code("import time\ntime.sleep(30)")
    w.refresh()
    w.run_all_button.click()
    assert w.wait(WAIT)
    assert session.turns[-1].result.status == "timeout"
    assert "timeout" in cards(w)[-1].output.value


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
    w.generate_button.click()  # nothing typed
    assert visible(w.error) and "Type an instruction" in w.error.value and not session.turns

    generate(w, "Assign 3 to x.")
    assert not visible(w.error)  # cleared by the next action

    def broken(*a, **k):
        raise RuntimeError("boom in a callback")
    monkeypatch.setattr(session, "ask", broken)
    w.instruction.value = "Print x."
    w.generate_button.click()
    assert w.wait(WAIT)
    assert visible(w.error) and "RuntimeError" in w.error.value and "boom in a callback" in w.error.value
    assert "Traceback" in w.error.value  # the whole traceback, folded
    assert len(session.turns) == 1 and len(cards(w)) == 1 and not w.busy
    assert w.instruction.value == "Print x."  # not lost
    monkeypatch.undo()

    w.max_new_tokens.value = session.model.config.n_positions  # does not fit: ContextWindowError
    w.generate_button.click()
    assert w.wait(WAIT)
    assert "ContextWindowError" in w.error.value and "context window is full" in w.error.value
    assert len(session.turns) == 1

    monkeypatch.setattr(session, "to_python", broken)
    w.error.value = ""
    w.export_py_button.click()  # errors in plain callbacks land there too
    assert "boom in a callback" in w.error.value


def test_exports_program_and_new_cell(w, session, tmp_path, monkeypatch):
    session.add_code("x = 3", "Assign 3 to x.")
    w.refresh()
    w.export_py_button.click()
    py = tmp_path / "convsynth-session.py"
    assert py.read_text() == session.to_python() and str(py) in w.status.value
    w.export_nb_button.click()
    nb = json.loads((tmp_path / "convsynth-session.ipynb").read_text())
    assert any("x = 3" in "".join(c["source"]) for c in nb["cells"])
    assert str(tmp_path / "convsynth-session.ipynb") in w.status.value

    assert not visible(w.program_box)
    w.program_button.click()
    assert visible(w.program_box) and w.program.value == session.to_python()
    assert "convsynth-program" in w.program._dom_classes

    class FakeShell:
        def set_next_input(self, text, replace=False):
            self.text = text
    shell = FakeShell()
    import IPython
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    w.to_cell()
    assert shell.text == session.to_python()


def test_prompt_view_tells_cached_from_new_tokens(w, session):
    w.prompt_panel.selected_index = 0  # opening it renders the view
    assert "cs-new" in w.prompt.value and "0 tokens" in w.prompt.value  # nothing cached yet
    generate(w, "Assign 3 to x.")
    w.instruction.value = "Print x."  # the view follows the box
    tokens = session.prompt_tokens("Print x.")
    assert "".join(t for t, _ in tokens) == session.text + "# Print x.\n"
    cached = sum(c for _, c in tokens)
    assert 0 < cached < len(tokens)
    assert w.prompt.value.count('class="cs-tok cs-cached"') == cached + 1  # + the legend's sample
    assert w.prompt.value.count('class="cs-tok cs-new"') == len(tokens) - cached + 1
    assert f"{cached} tokens" in w.prompt.value and "Print" in w.prompt.value
    assert "convsynth-prompt-view" in w.prompt_panel._dom_classes
