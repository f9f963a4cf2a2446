"""scripts/eval_steps.py on the packaged model and the real sandbox: the report's structure on a few tasks, and
that its grading passes a right program and fails a wrong one."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

import convsynth

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("eval_steps", ROOT / "scripts" / "eval_steps.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def ev():
    return _module()


@pytest.fixture(scope="module")
def cg():
    return convsynth.load()


@pytest.fixture(scope="module")
def tasks(ev):
    return ev.load_tasks(ROOT / "evals" / "step_tasks.jsonl")


def test_normalize(ev):
    assert ev.normalize("\n\n1  \n2\t\n\n") == "1\n2"
    assert ev.normalize("1\n\n2") != ev.normalize("1\n2")  # blank lines inside the output still count


def test_grade_passes_the_reference_and_fails_a_wrong_program(ev, cg, tasks):
    # A numpy task, so the preamble's `import numpy as np` must have run in the sandbox too.
    task = next(t for t in tasks if t["category"] == "numpy")
    for code_steps, want in ((task["reference"], True), (task["reference"][:-1] + ["print('nope')"], False)):
        s = convsynth.Session(cg, temperature=0)
        try:
            for step, code in zip(task["steps"], code_steps):
                s.add_code(code, step)
            rec = ev.grade(s, task)
        finally:
            s.close()
        assert rec["passed"] is want, rec
        assert rec["statuses"] == ["ok"] * len(task["steps"])


def test_runner_on_three_tasks(ev, tmp_path):
    # The command line end to end on the packaged model: structure, not score.
    out = tmp_path / "r.json"
    report = ev.main(["--limit", "3", "--out", str(out), "--quiet"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["tasks"] == 3 and report["overall"]["total"] == 3
    assert 0 <= report["overall"]["passed"] <= 3
    assert sum(r["total"] for r in report["per_category"].values()) == 3
    assert sum(r["total"] for r in report["per_source"].values()) == 3
    first = ev.load_tasks(ROOT / "evals" / "step_tasks.jsonl")[:3]
    assert [r["id"] for r in report["results"]] == [t["id"] for t in first]
    for rec, task in zip(report["results"], first):
        assert isinstance(rec["passed"], bool)
        assert len(rec["code"]) == len(task["steps"]) == len(rec["statuses"])
        # the program is the preamble and each step as a comment followed by the model's code
        assert rec["program"].startswith(convsynth.session.MTPB_PREAMBLE)
        for step in task["steps"]:
            assert f"# {step}\n" in rec["program"]
