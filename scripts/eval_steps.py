"""Score a model on the step-task suite (evals/step_tasks.jsonl): each task is a greedy Session that asks the
steps one by one, runs the program in the real sandbox, and passes when what it printed equals the expected
output (trailing whitespace of each line and surrounding blank lines ignored).

    python scripts/eval_steps.py [--model DIR] [--tasks evals/step_tasks.jsonl] [--limit N] [--out results.json]

From Python: ``evaluate(cg, tasks)`` returns the report (pass rates overall, per category and per source, and
every program with its output), with ``load_tasks(path)`` to read a task file.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout: import this checkout's convsynth
    sys.path.insert(0, str(ROOT))

import convsynth  # noqa: E402

DEFAULT_TASKS = ROOT / "evals" / "step_tasks.jsonl"


def load_tasks(path: str | Path = DEFAULT_TASKS) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def normalize(text: str) -> str:
    """Output as compared: trailing whitespace of each line and blank lines at either end dropped."""
    return "\n".join(line.rstrip() for line in text.splitlines()).strip("\n")


def grade(s, task: dict) -> dict:
    """Run a session's steps in its sandbox and compare what they printed with the task's expected output."""
    results = s.run()
    # Stdout only: what the program printed, as `expected` holds. A Jupyter cell's displayed last value is
    # not printed output (the same program run as a script would show nothing for it).
    stdout = (s.preamble_result.stdout if s.preamble_result else "") + "".join(r.stdout for r in results)
    return {"id": task["id"], "category": task["category"], "source": task["source"],
            "passed": normalize(stdout) == normalize(task["expected"]),
            "steps": task["steps"], "code": [t.code for t in s.turns], "program": s.to_python(),
            "stdout": stdout, "expected": task["expected"], "errors": [r.error for r in results if r.error],
            "statuses": [r.status for r in results], "finish": [t.stats.finish_reason for t in s.turns]}


def run_task(cg, task: dict, *, max_new_tokens: int = 128, timeout: float = 10.0) -> dict:
    """One task through a greedy Session (the steps asked one by one) and the sandbox: the record of it."""
    s = convsynth.Session(cg, temperature=0, max_new_tokens=max_new_tokens, timeout=timeout)
    try:
        for step in task["steps"]:
            s.ask(step)
        return grade(s, task)
    finally:
        s.close()


def _rates(records: list[dict], key: str) -> dict:
    groups = defaultdict(list)
    for r in records:
        groups[r[key]].append(r["passed"])
    return {k: {"passed": sum(v), "total": len(v), "rate": sum(v) / len(v)} for k, v in sorted(groups.items())}


def evaluate(cg, tasks: list[dict], *, progress=None, **kw) -> dict:
    """Run every task on the loaded model ``cg``; returns {overall, per_category, per_source, results}.
    ``progress``: an optional callable(record) called after each task (printing, checkpointing)."""
    start = time.monotonic()
    records = []
    for task in tasks:
        records.append(run_task(cg, task, **kw))
        if progress:
            progress(records[-1])
    n = len(records)
    passed = sum(r["passed"] for r in records)
    return {"model": getattr(cg, "name", None), "tasks": n,
            "overall": {"passed": passed, "total": n, "rate": passed / n if n else 0.0},
            "per_category": _rates(records, "category"), "per_source": _rates(records, "source"),
            "seconds": round(time.monotonic() - start, 1), "results": records}


def format_report(report: dict) -> str:
    o = report["overall"]
    lines = [f"overall: {o['passed']}/{o['total']} = {100 * o['rate']:.1f} %"]
    for title, key in (("category", "per_category"), ("source", "per_source")):
        for name, r in report[key].items():
            lines.append(f"  {title:8s} {name:11s} {r['passed']:3d}/{r['total']:3d} = {100 * r['rate']:5.1f} %")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model directory or hub id (default: the packaged model)")
    ap.add_argument("--tasks", default=str(DEFAULT_TASKS))
    ap.add_argument("--limit", type=int, default=None, help="only the first N tasks")
    ap.add_argument("--out", default=None, help="write the report, with every program and its output, here")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    tasks = load_tasks(args.tasks)[:args.limit]
    cg = convsynth.load(args.model)

    def show(r):
        if not args.quiet:
            print(f"{'PASS' if r['passed'] else 'fail'} {r['id']}", flush=True)

    report = evaluate(cg, tasks, progress=show)
    report["tasks_file"] = str(args.tasks)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    print(format_report(report))
    return report


if __name__ == "__main__":
    main()
