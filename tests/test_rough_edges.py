"""The first hour's rough edges: missing optional packages name their pip command, bad command-line options
print one line and exit 2, bad stop patterns and devices raise convsynth errors, and the hints point at
commands and paths that exist."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import convsynth
from convsynth import cli
from convsynth.errors import ConvsynthError, MissingDependency, OptionError, require
from convsynth.stops import make_stop

ROOT = Path(__file__).resolve().parents[1]


def test_require_names_the_extra_to_install():
    assert require("json", extra="ui") is sys.modules["json"]
    with pytest.raises(MissingDependency, match=r"^the widget needs convsynth_no_such_module, which is not "
                                                r"installed: pip install 'convsynth\[ui\]'$"):
        require("convsynth_no_such_module", extra="ui", what="the widget")


@pytest.mark.parametrize("blocked", ["ipywidgets", "pygments", "anywidget"])
def test_the_widget_without_the_ui_extra_says_how_to_get_it(blocked):
    code = (f"import sys; sys.modules[{blocked!r}] = None\nimport convsynth\n"
            "try:\n    convsynth.ui\nexcept convsynth.ConvsynthError as e:\n    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.stdout.strip() == (f"MissingDependency the widget needs {blocked}, which is not installed: "
                                  "pip install 'convsynth[ui]'"), out.stderr


def test_bad_stop_patterns_are_convsynth_errors_naming_pattern_and_reason():
    for stop in ("(", ["ok", "[a-"]):
        with pytest.raises(OptionError, match=r"stop pattern '(\(|\[a-)' is not a valid regular expression "
                                              r"\((missing \)|unterminated character set)"):
            make_stop(stop)
    assert make_stop(r"\(")("f(x)") == 1


@pytest.mark.parametrize("argv, words", [
    (["complete", "x", "--stop", "("], "stop pattern '(' is not a valid regular expression"),
    (["complete", "x", "--dtype", "int8"], "unknown dtype 'int8'; use 'auto', 'float32'"),
    (["complete", "x", "--device", "nonsense"], "unknown device 'nonsense'"),
])
def test_command_line_mistakes_print_one_line_and_exit_2(argv, words, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("convsynth: error: ") and words in err and err.count("\n") == 1


def test_cuda_without_a_gpu_prints_one_line_and_exits_2(capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert cli.main(["complete", "x", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err == ("convsynth: error: device='cuda' was asked for but no CUDA GPU is available; use device='auto' "
                   "or 'cpu'\n")


def test_the_installed_command_prints_no_traceback():
    out = subprocess.run([sys.executable, "-m", "convsynth", "complete", "x", "--stop", "("], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr and out.stderr.count("\n") == 1


def test_the_offline_hint_names_hf_download(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConvsynthError, match=r"`hf download Salesforce/codegen-no-such-model --local-dir DIR`"):
        convsynth.load("Salesforce/codegen-no-such-model")


def test_ipywidgets_7_as_on_colab_gets_a_clear_message():
    code = ("import ipywidgets; ipywidgets.__version__ = '7.7.1'\nimport convsynth\n"
            "try:\n    convsynth.ui\nexcept convsynth.ConvsynthError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.stdout.strip() == ("the widget needs ipywidgets 8 (this kernel has 7.7.1, as Colab ships): pip install "
                                  "-U 'ipywidgets>=8' and restart the kernel, or use Session and the %%convsynth "
                                  "magic without the widget"), out.stderr


@pytest.mark.parametrize("kw, words", [
    (dict(fast="bogus"), "fast='bogus': choose one of auto, onednn"),
    (dict(quantize="int4"), "quantize='int4': use 'int8'"),
    (dict(speculate="sometimes"), "speculate"),
    (dict(draft="packaged"), "draft='packaged' must be a loaded model: draft=convsynth.load()"),
    (dict(dtype=torch.int8), "dtype torch.int8 is not one the model computes in"),
])
def test_load_refuses_bad_options_before_reading_any_weights(kw, words):
    """The folder does not exist: the option's error comes first, before minutes of loading would be spent."""
    with pytest.raises(convsynth.errors.OptionError, match=re.escape(words)):
        convsynth.load("/nonexistent/checkpoint", **kw)


def test_load_refuses_a_name_that_is_not_a_path():
    with pytest.raises(convsynth.errors.OptionError, match="name_or_path=123: give None"):
        convsynth.load(123)
