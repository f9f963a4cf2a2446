"""The step-task evaluation suite (evals/step_tasks.jsonl): its schema and counts, that the file is what
evals/make_step_tasks.py builds, and that every reference program prints exactly its expected output."""
from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from convsynth.execution import run_script
from convsynth.session import MTPB_PREAMBLE

ROOT = Path(__file__).resolve().parents[1]
TASKS_PATH = ROOT / "evals" / "step_tasks.jsonl"
CATEGORIES = {"literals", "arithmetic", "lists", "strings", "dicts", "loops", "functions", "numpy"}
KEYS = {"id", "category", "source", "steps", "reference", "expected"}

# One subprocess runs every program, each in a fresh namespace with its stdout captured, so the whole check
# costs one interpreter and one numpy import instead of one per task. Exceptions are reported, not raised.
DRIVER = r'''
import contextlib, io, json, traceback
PROGRAMS = json.loads({programs!r})
out = {{}}
for tid, code in PROGRAMS.items():
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            exec(compile(code, tid, "exec"), {{"__name__": "__main__"}})
        err = None
    except BaseException:
        err = traceback.format_exc(limit=2)
    out[tid] = [buf.getvalue(), err]
print(json.dumps(out))
'''


def load_tasks(path: Path = TASKS_PATH) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def program(task: dict) -> str:
    """The whole program as a session would run it: the preamble, then each step's code."""
    return MTPB_PREAMBLE + "".join(code + "\n\n" for code in task["reference"])


def run_all(tasks: list[dict]) -> dict:
    code = DRIVER.format(programs=json.dumps({t["id"]: program(t) for t in tasks}))
    res = run_script(code, timeout=300)
    assert res.ok, res.stderr[-2000:]
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def tasks():
    return load_tasks()


def test_schema_and_counts(tasks):
    ids = [t["id"] for t in tasks]
    assert len(ids) == len(set(ids)), "task ids must be unique"
    for t in tasks:
        assert set(t) == KEYS, t["id"]
        assert t["category"] in CATEGORIES, t["id"]
        assert t["source"] in ("hand", "template"), t["id"]
        assert 2 <= len(t["steps"]) <= 4, t["id"]
        assert len(t["reference"]) == len(t["steps"]), t["id"]
        assert all(isinstance(s, str) and s.strip() for s in t["steps"] + t["reference"]), t["id"]
        assert t["expected"].strip(), f"{t['id']} must print something"
    # every step is its own instruction: no two steps of a task repeat
    assert all(len(set(t["steps"])) == len(t["steps"]) for t in tasks)
    assert len(tasks) >= 150
    per_cat = Counter(t["category"] for t in tasks)
    assert set(per_cat) == CATEGORIES and min(per_cat.values()) >= 12, per_cat
    per_src = Counter(t["source"] for t in tasks)
    assert per_src["hand"] >= 90 and per_src["hand"] * 2 >= len(tasks), per_src
    # the instructions of the whole suite are distinct tasks, not one task repeated
    assert len({tuple(t["steps"]) for t in tasks}) == len(tasks)


def test_file_is_what_the_generator_builds(tasks):
    # The committed JSONL must be reproducible from hand_tasks.py and the seeded templates.
    spec = importlib.util.spec_from_file_location("make_step_tasks", ROOT / "evals" / "make_step_tasks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.build() == tasks


def test_every_reference_prints_the_expected_output(tasks):
    results = run_all(tasks)
    wrong = {t["id"]: (results[t["id"]], t["expected"]) for t in tasks
             if results[t["id"]] != [t["expected"], None]}
    assert not wrong, wrong


def test_the_check_catches_a_wrong_expectation(tasks):
    # The driver must tell a right program from a wrong one and report exceptions, or the test above proves nothing.
    good = dict(tasks[0])
    bad = dict(tasks[0], id="bad", expected=tasks[0]["expected"] + "extra\n")
    boom = dict(tasks[0], id="boom", reference=tasks[0]["reference"] + ["print(undefined_name)"])
    res = run_all([good, bad, boom])
    assert res[good["id"]] == [good["expected"], None]
    assert res["bad"][0] != bad["expected"]
    assert "NameError" in res["boom"][1]
