"""The MTPB harness end to end: Session-based generation, the original program text, parallel checks, resume,
the prefill tokens it saves, and the CLI."""
import json
import subprocess
import sys

import pytest

from convsynth import mtpb
from convsynth.mtpb_check import build_program, load_problems


@pytest.fixture(scope="module")
def problems():
    return load_problems()  # the copy bundled with the package


def test_harness_runs_checks_and_resumes(tiny, problems, tmp_path):
    cg = tiny[0]
    chosen = mtpb.parse_ids("3,38", problems)
    assert [p.id for p in chosen] == [3, 38]
    out = tmp_path / "samples.jsonl"
    rep = mtpb.run(cg, chosen, out=out, progress=False, timeout=10)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == chosen[0].cases == rep["programs"]
    assert rep["skipped"] == {38: chosen[1].unavailable}
    for d in lines:  # the program is exactly what the original harness would assemble from these turns
        assert d["program"] == build_program(chosen[0], d["case"], d["turns"])
        assert d["passed"] is False  # random weights do not solve problems
        assert d["prefill_tokens"] < d["original_prefill_tokens"]
    assert rep["score"] == 0.0 and rep["prefill_saving"] > 1.5
    again = mtpb.run(cg, chosen, out=out, progress=False)  # resume: nothing left to do
    assert len(out.read_text().splitlines()) == len(lines) and again["programs"] == rep["programs"]


def test_a_resume_with_other_settings_is_refused(tiny, problems, tmp_path):
    """The JSONL file records each program's sampling settings: resuming it with others would mix two runs in
    one score, so it is refused with what to do; an infinite timeout is refused before anything runs."""
    from convsynth.errors import UsageError
    cg, chosen, out = tiny[0], mtpb.parse_ids("3", problems), tmp_path / "samples.jsonl"
    mtpb.run(cg, chosen, out=out, progress=False, timeout=10)
    assert all(json.loads(x)["settings"]["temperature"] == 0.0 for x in out.read_text().splitlines())
    before = out.read_text()
    with pytest.raises(UsageError, match="holds programs made with temperature 0.0, and this run asks for "
                                         "temperature 0.8: give another --out"):
        mtpb.run(cg, chosen, out=out, progress=False, temperature=0.8)
    with pytest.raises(UsageError, match="finite number of seconds"):
        mtpb.run(cg, chosen, out=tmp_path / "other.jsonl", progress=False, timeout=float("inf"))
    assert out.read_text() == before and not (tmp_path / "other.jsonl").exists()


def test_ctrl_c_keeps_the_checked_programs(tiny, problems, tmp_path):
    """Ctrl-C while programs are generated: the checks already done are in the file, the run stops without
    waiting for the queued checks, and a resume completes the rest, each case once."""
    import _thread
    import signal
    import threading
    cg, chosen, out = tiny[0], mtpb.parse_ids("1-3", problems), tmp_path / "samples.jsonl"
    old = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own Ctrl-C handler
    try:
        threading.Timer(4.0, _thread.interrupt_main).start()
        with pytest.raises(KeyboardInterrupt):
            mtpb.run(cg, chosen, out=out, progress=False, jobs=1, timeout=10)
    finally:
        signal.signal(signal.SIGINT, old)
    kept = [json.loads(x) for x in out.read_text().splitlines()]
    total = sum(p.cases for p in chosen if not p.unavailable)
    assert 0 < len(kept) < total and all(d["passed"] is not None for d in kept)
    rep = mtpb.run(cg, chosen, out=out, progress=False, timeout=10)
    keys = [(d["problem"], d["case"], d["sample"]) for d in map(json.loads, out.read_text().splitlines())]
    assert len(keys) == len(set(keys)) == total == rep["programs"]


def test_single_turn_mode(tiny, problems):
    s = mtpb.generate_case(tiny[0], problems[0], 0, single_turn=True)
    assert len(s.turns) == 1
    assert s.program.startswith("# Import libraries.\n\nimport numpy as np\n\n" + "".join(
        f"# {i}\n" for i in problems[0].turns(0)))


def test_report_with_references(problems):
    from mtpb_reference import REFERENCES
    from convsynth.mtpb_check import check
    pid = sorted(REFERENCES)[0]
    problem = next(p for p in problems if p.id == pid)
    results = []
    for case in range(problem.cases):
        codes = REFERENCES[pid](problem.inputs[case])
        program = build_program(problem, case, codes)
        res = check(program, problem.expected(case))
        results.append(mtpb.Sample(pid, case, 0, codes, program, 1, 3, 0.0, res.passed, res.got, res.error))
    rep = mtpb.report([problem], results)
    assert rep["score"] == 100.0 and rep["pass@1"] == 100.0


def test_cli(checkpoints, tmp_path):
    directory, _ = checkpoints("tiny")
    out = subprocess.run([sys.executable, "-m", "convsynth", "mtpb", "--problems", "1",  # the bundled data: no --data
                          "--model", str(directory), "--out", str(tmp_path / "s.jsonl"), "--report",
                          str(tmp_path / "r.json")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "MTPB score" in out.stdout and "prefill tokens" in out.stdout
    assert json.loads((tmp_path / "r.json").read_text())["programs"] == 5
    bad = subprocess.run([sys.executable, "-m", "convsynth", "mtpb", "--data", str(tmp_path / "none.jsonl")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
