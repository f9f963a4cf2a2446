"""The convsynth command on bad input: one line on stderr and exit status 2, never a traceback; checked before any
long work starts. Real subprocesses of the real command."""
import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

import convsynth
from convsynth import mtpb
from convsynth.mtpb_check import Problem

from helpers import ROOT

PROBLEMS = [
    {"id": 1, "name": "Add", "description": "", "category": "math", "max_gen_length": 10**6,  # asks too much
     "prompts": ["Assign {a} to a.", "Print a plus 1."], "inputs": [{"a": 1}], "outputs": [2]},
    {"id": 2, "name": "Echo", "description": "", "category": "string", "max_gen_length": 16,
     "prompts": ["Print {s}."], "inputs": [{"s": "'hi'"}, {"s": "'yo'"}], "outputs": ["hi", "yo"]},
]


def cli(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "convsynth", *args], cwd=ROOT, capture_output=True,
                          timeout=timeout, env=env)


def refused(out: subprocess.CompletedProcess, words: str) -> None:
    err = out.stderr.decode("utf-8", "replace")
    assert out.returncode == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and words in err, err


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "mtpb.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    return path


@pytest.mark.parametrize("args, words", [
    (["--stop", "(["], "not a valid regular expression"),
    (["--device", "tpu"], "device"),
    (["--dtype", "int8"], "unknown dtype 'int8'"),
])
def test_complete_refuses_bad_flags(args, words):
    refused(cli("complete", "def f():", *args), words)


@pytest.mark.parametrize("flag", ["--save", "--notebook"])
def test_demo_refuses_a_place_it_cannot_write_before_the_turns(flag, tmp_path):
    refused(cli("demo", flag, str(tmp_path / "no" / "s.json")), "does not exist; create it first")
    refused(cli("demo", flag, str(tmp_path)), "is a directory; give a file path")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_complete_on_cuda_without_a_gpu():
    refused(cli("complete", "def f():", "--device", "cuda"), "no CUDA GPU")


def test_complete_refuses_a_prompt_that_is_not_utf8():
    out = subprocess.run([sys.executable.encode(), b"-m", b"convsynth", b"complete", b"def f(\xff\xfe):"],
                         cwd=ROOT, capture_output=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=str(ROOT), LC_ALL="C.UTF-8"))
    refused(out, "not valid UTF-8")


@pytest.mark.parametrize("args, words", [
    (["--problems", "abc"], "use problem ids"),
    (["--problems", "5-1"], "is empty"),
    (["--problems", "40-50"], "matches none"),
    (["--samples", "0"], "--samples 0"),
    (["--timeout", "-5"], "--timeout -5"),
    (["--timeout", "inf"], "--timeout inf: give a finite number"),
    (["--out", "no/such/folder/s.jsonl"], "does not exist"),
    (["--report", "no/such/folder/r.json"], "does not exist"),
])
def test_mtpb_refuses_bad_flags_before_the_run(data, args, words):
    refused(cli("mtpb", "--data", str(data), *args), words)


def test_convert_refuses_a_file_a_bad_dtype_and_an_unwritable_place(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    src = str(ROOT / "convsynth" / "models" / "convsynth-tiny")
    refused(cli("convert", src, str(f)), "is a file")
    refused(cli("convert", src, str(tmp_path / "out"), "--dtype", "int4"), "unknown dtype 'int4'")
    refused(cli("convert", src, "/proc/convsynth-cannot-write-here"), "cannot write the checkpoint")
    assert not (tmp_path / "out").exists()


def test_mtpb_resumes_past_a_cut_line_and_survives_a_problem_too_long(tmp_path, data):
    cg = convsynth.load(fast=False)
    problems = [Problem(**p) for p in PROBLEMS]
    out = tmp_path / "s.jsonl"
    first = mtpb.run(cg, problems[1:], out=out, progress=False, jobs=1)
    assert first["programs"] == 2
    lines = out.read_text().splitlines()
    out.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # killed while writing the last line
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = mtpb.run(cg, problems, out=out, progress=False, jobs=1)
    assert any("line 2 is damaged" in str(w.message) for w in caught)
    assert again["programs"] == 3  # the cut program is generated again; problem 1 ran despite its max_gen_length
    with warnings.catch_warnings(record=True) as caught:  # the record written after the cut line is intact
        warnings.simplefilter("always")
        assert len(mtpb.read_samples(out)) == 3
    assert all("line 2 is damaged" in str(w.message) for w in caught)


@pytest.mark.parametrize("args", [("bench", "--help"), ("bench", "--", "--help")])
def test_bench_hands_its_flags_to_the_benchmark_suite(args):
    """`convsynth bench --quick` once failed in convsynth's own parser: the flags after `bench` belong to
    benchmarks/run.py, whose help (not convsynth's) answers here."""
    out = cli(*args, timeout=120)
    text = out.stdout.decode()
    assert out.returncode == 0, out.stderr.decode()
    assert "--quick" in text and "--no-peers" in text, text


def test_bench_refuses_a_flag_the_suite_does_not_know():
    out = cli("bench", "--no-such-flag", timeout=120)
    assert out.returncode == 2 and "--no-such-flag" in out.stderr.decode()


def test_convert_names_the_packaged_model_as_export_does(tmp_path):
    out = cli("convert", "packaged", str(tmp_path / "copy"), "--dtype", "float16")
    assert out.returncode == 0, out.stderr.decode()
    assert convsynth.load(tmp_path / "copy").config.n_embd == convsynth.load().config.n_embd
