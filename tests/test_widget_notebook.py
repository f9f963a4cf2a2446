"""The widget's notebook side, driven from Python on the packaged model: every MIME type a step displays reaches
the front end as Jupyter outputs, a failed step has a Fix button that replaces it once an attempt runs, and the
title shows the folder. (The real browser rendering is in test_browser_notebook.py.)"""
from __future__ import annotations

import pytest

pytest.importorskip("ipywidgets")

import convsynth  # noqa: E402
from convsynth.outputs import to_outputs  # noqa: E402
from convsynth.widget import SessionWidget  # noqa: E402

WAIT = 120


@pytest.fixture(scope="module")
def cg():
    return convsynth.load()


@pytest.fixture
def session(cg, tmp_path):
    # Generated steps are cut to nothing, so a fixed step runs whatever the model writes.
    s = convsynth.Session(cg, temperature=0, max_new_tokens=8, cwd=tmp_path, stop=lambda text: 0)
    yield s
    s.close()


def visible(widget) -> bool:
    return widget.layout.display != "none"


def test_every_mime_type_reaches_the_front_end(session, tmp_path):
    pd = pytest.importorskip("pandas")
    session.share(df=pd.DataFrame({"city": ["Oslo"], "temp": [3.5]}))
    session.add_code("from IPython.display import HTML, JSON, Latex, Markdown, display\n"
                     "display(Markdown('**bold**'), HTML('<i>it</i>'), Latex(r'$x^2$'), JSON({'a': 1}))\n"
                     "print('text')\ndf")
    session.run()
    w = SessionWidget(session, directory=tmp_path)
    assert f'<code class="cs-folder">{tmp_path.resolve()}</code>' in w.title.value
    card = w.cards.children[1]
    outs = card.outputs.outputs
    assert outs[0] == {"output_type": "stream", "name": "stdout", "text": "text\n"}
    kinds = [sorted(o["data"]) for o in outs[1:]]
    assert kinds == [["text/markdown", "text/plain"], ["text/html", "text/plain"], ["text/latex", "text/plain"],
                     ["application/json", "text/plain"], ["text/html", "text/plain"]]
    assert outs[1]["data"]["text/markdown"] == "**bold**" and "<table" in outs[5]["data"]["text/html"]
    assert "ok" in card.output.value and "<table" not in card.output.value  # the status line only
    assert to_outputs(None) == []


def test_fix_button_replaces_a_failed_step(session, tmp_path):
    session.add_code("w = 1 / 0", instruction="Assign 1 to w.")
    session.add_code("print('by hand')")
    session.add_code("1 / 0")
    session.run()
    w = SessionWidget(session, directory=tmp_path)
    failed, fine, by_hand = w.cards.children
    [err] = failed.outputs.outputs
    assert err["output_type"] == "error" and "In step 1, line 1" in "\n".join(err["traceback"])
    assert visible(failed.fix_button) and not visible(fine.fix_button)
    assert not visible(by_hand.fix_button)  # written by hand: nothing to regenerate
    failed.fix_button.click()
    assert w.wait(WAIT) and not w.error.value, w.error.value
    first = w.cards.children[0]
    assert session.turns[0].result.ok and session.turns[0].attempts[0]["code"] == "w = 1 / 0\n"
    assert first.turn is session.turns[0] and not visible(first.fix_button) and first.outputs.outputs == ()
    assert session.turns[1].result is None and visible(w.cards.children[1].run_button)  # to run again


def test_a_fix_that_fails_again_says_so(cg, tmp_path):
    with convsynth.Session(cg, temperature=0, max_new_tokens=8, cwd=tmp_path) as s:
        turn = s.add_code("v = 1", instruction="Assign 1 to v.")
        turn.check = "assert False, 'never'"
        s.run()
        w = SessionWidget(s, directory=tmp_path)
        w.cards.children[0].fix_button.click()
        assert w.wait(WAIT)
        assert s.turns == [turn] and len(turn.attempts) == 2
        assert "The new attempt at step 1 failed too" in w.error.value
