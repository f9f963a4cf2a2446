"""The %%convsynth magic in a real IPython shell on the packaged model: lines become steps of the notebook's
session, the code goes to the next cell (set_next_input), options reach the generation, nothing runs."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

IPython = pytest.importorskip("IPython")
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402

import convsynth  # noqa: E402


@pytest.fixture
def ip(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "convsynth")
    yield shell
    shell.run_line_magic("convsynth", "reset")
    InteractiveShell.clear_instance()


def test_import_convsynth_stays_light():
    import subprocess
    import sys
    code = "import sys, convsynth; print(sorted(m for m in ('torch', 'IPython', 'ipywidgets') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


def test_each_line_is_a_step_and_the_code_goes_to_the_next_cell(ip, tmp_path, capsys):
    ip.run_cell_magic("convsynth", "-t 0 -n 24", "Assign the list [3, 1, 2] to numbers.\n\nPrint numbers.\n")
    s = ip.run_line_magic("convsynth", "")
    assert isinstance(s, convsynth.Session) and s.cwd == str(tmp_path.resolve())
    assert [t.instruction for t in s.turns] == ["Assign the list [3, 1, 2] to numbers.", "Print numbers."]
    assert all(t.result is None for t in s.turns) and s._sandbox is None  # nothing ran
    assert s.turns[0].stats.generated_tokens <= 24
    expected = "\n\n".join(f"# {t.instruction}\n{t.code.strip()}" for t in s.turns) + "\n"
    assert ip.rl_next_input == expected
    assert "2 steps generated into the next cell (the session has 2)" in capsys.readouterr().out
    fresh = s.model.complete(s.preamble + "# Assign the list [3, 1, 2] to numbers.\n", temperature=0,
                             max_new_tokens=24, stop="codegen")
    assert s.turns[0].code == fresh  # -t 0 made it greedy
    ip.run_cell_magic("convsynth", "", "Print the sum of numbers.")
    assert len(s.turns) == 3 and ip.run_line_magic("convsynth", "") is s  # the same session grows


def test_share_load_reset_and_mistakes(ip, capsys):
    ip.user_ns["table"] = {"a": 1}
    ip.run_line_magic("convsynth", "share table")
    s = ip.run_line_magic("convsynth", "")
    assert s.get("table") == {"a": 1} and "The notebook shares table, a dict of 1 items" in s.text
    ip.run_line_magic("convsynth", "share nothere")
    ip.run_cell_magic("convsynth", "--bogus", "Print 1.")
    ip.run_cell_magic("convsynth", "", "   \n")
    ip.run_line_magic("convsynth", "fly")
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == [
        "convsynth: the notebook has no variable 'nothere' to share.",
        out[2], "convsynth: the %%convsynth cell is empty: write one instruction per line.",
        "convsynth: unknown %convsynth command 'fly': use %convsynth, %convsynth load PATH_OR_ID, %convsynth "
        "share NAME..., %convsynth widget or %convsynth reset."]
    assert out[2].startswith("convsynth: %%convsynth options are -t TEMPERATURE and -n MAX_NEW_TOKENS")
    assert len(s.turns) == 1  # mistakes change nothing
    packaged = Path(convsynth.__file__).parent / "models" / "convsynth-tiny"
    ip.run_line_magic("convsynth", f"load {packaged}")
    assert ip.run_line_magic("convsynth", "") is not s and s._sandbox is None  # the old one was closed
    ip.run_line_magic("convsynth", "reset")
    assert ip.run_line_magic("convsynth", "").turns == []


def test_a_failing_load_or_cell_loses_no_step(ip, capsys):
    """A mistyped `load` keeps the session and its steps (and the model); `load None` is the packaged model; a
    cell whose third line fails still shows the two steps it made (they are in the session); unbalanced quotes
    are one line."""
    ip.run_cell_magic("convsynth", "-t 0 -n 8", "Assign 1 to x.\nAssign 2 to y.")
    s = ip.run_line_magic("convsynth", "")
    capsys.readouterr()
    ip.run_line_magic("convsynth", "load /nonexistent/model")
    assert ip.run_line_magic("convsynth", "") is s and len(s.turns) == 2
    ip.rl_next_input = None
    ip.run_cell_magic("convsynth", "-t 0 -n 8", "Print x.\nPrint y.\n" + "word " * 5000)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("convsynth: no such checkpoint directory")
    assert out[1] == "convsynth: line 3 of the cell did not become a step (below); 2 steps generated into the " \
                     "next cell (the session has 4)."
    assert out[2].startswith("convsynth: ") and len(out) == 3
    assert ip.rl_next_input.startswith("# Print x.\n") and "# Print y.\n" in ip.rl_next_input
    ip.run_line_magic("convsynth", 'load "abc')
    ip.run_cell_magic("convsynth", '-t "0', "Print x.")
    out = capsys.readouterr().out.splitlines()
    assert out == ["convsynth: %convsynth 'load \"abc': no closing quotation; close the quote or drop it.",
                   "convsynth: %%convsynth '-t \"0': no closing quotation; close the quote or drop it."]
    ip.run_line_magic("convsynth", "load None")
    assert ip.run_line_magic("convsynth", "") is not s and "a new session on convsynth-tiny" in \
        capsys.readouterr().out


def test_on_colab_the_code_is_printed(ip, capsys, monkeypatch):
    import types
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    ip.rl_next_input = None
    ip.run_cell_magic("convsynth", "-t 0 -n 8", "Assign 3 to x.")
    out = capsys.readouterr().out
    assert out.startswith("convsynth: 1 step generated (Colab cannot fill the next cell; copy the code):\n\n"
                          "# Assign 3 to x.\n")
    assert ip.rl_next_input is None
