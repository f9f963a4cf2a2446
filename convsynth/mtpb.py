"""The MTPB harness: generate every turn of every test case with a Session (so the KV cache is reused across
turns), check the programs in parallel subprocesses with the original semantics, and report pass rates.

    convsynth mtpb --problems 1-10 --out samples.jsonl

The problems ship with the package (``convsynth/data/mtpb/``, from salesforce/CodeGen, BSD-3-Clause); ``--data`` or
``$CONVSYNTH_MTPB`` points at another copy of ``mtpb.jsonl``.
"""
from __future__ import annotations

import json
import os
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .errors import ContextWindowError, UsageError, describe
from .flags import check_output, model_flags
from .mtpb_check import (DEFAULT_TIMEOUT, PREAMBLE, Problem, build_program, check, load_problems, mtpb_score,
                         pass_at_k)


@dataclass
class Sample:
    """One generated program for one test case, with its check."""
    problem: int
    case: int
    sample: int
    turns: list[str]
    program: str
    prefill_tokens: int           # prompt tokens this harness computed (cache reuse)
    original_prefill_tokens: int  # what the original harness encodes: the whole history at every turn
    generate_seconds: float
    passed: bool | None = None
    got: str | None = None
    error: str | None = None
    timed_out: bool = False
    settings: dict | None = None  # the run's sampling settings (a resume must not mix two runs' programs)

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.problem, self.case, self.sample)


def generate_case(cg, problem: Problem, case: int, *, sample: int = 0, single_turn: bool = False,
                  temperature: float = 0.0, top_p: float = 0.95, seed: int | None = None) -> Sample:
    """Generate one test case's program turn by turn with a Session (or as one prompt with ``single_turn``)."""
    from .session import Session
    instructions = problem.turns(case)
    t0 = time.perf_counter()
    s_seed = None if seed is None else seed + 1000 * sample
    # a problem may ask for more tokens than the window holds: at most half of it, so the history still fits
    max_new = max(1, min(problem.max_gen_length, cg.config.n_positions // 2))
    with Session(cg, PREAMBLE, stop="codegen", max_new_tokens=max_new, temperature=temperature,
                 top_p=top_p, seed=s_seed) as session:
        if single_turn:  # the paper's comparison: every instruction at once, one generation
            max_new = min(problem.max_gen_length * len(instructions), cg.config.n_positions // 2)
            turn = session.ask("\n".join(instructions), max_new_tokens=max_new)
            codes = [turn.code]
            program = session.text
            original = len(cg.encode(PREAMBLE + "".join(f"# {i}\n" for i in instructions)))
        else:
            codes, original = [], 0
            for instruction in instructions:
                original += len(cg.encode(session.text + f"# {instruction}\n"))
                codes.append(session.ask(instruction).code)
            program = build_program(problem, case, codes)
            assert program == session.text, "the session's text must be the program the original builds"
        prefill = sum(t.stats.prefill_tokens for t in session.turns)
    return Sample(problem.id, case, sample, codes, program, prefill, original, time.perf_counter() - t0)


def parse_ids(spec: str | None, problems: list[Problem]) -> list[Problem]:
    """'1,3,10-12' -> those problems (all when None)."""
    if not spec:
        return problems
    wanted: set[int] = set()
    for part in spec.split(","):
        a, _, b = part.strip().partition("-")
        try:
            lo, hi = int(a), int(b or a)
        except ValueError:
            raise UsageError(f"--problems {spec!r}: use problem ids such as 1,3,10-12.") from None
        if lo > hi:
            raise UsageError(f"--problems {spec!r}: the range {part.strip()} is empty; write it low-high.")
        wanted.update(range(lo, hi + 1))
    chosen = [p for p in problems if p.id in wanted]
    if not chosen:
        raise UsageError(f"--problems {spec!r} matches none of the problems "
                         f"({min(p.id for p in problems)}-{max(p.id for p in problems)}).")
    return chosen


def read_samples(out: str | Path | None) -> dict[tuple, Sample]:
    """The samples already in the JSONL file ``out`` (a run resumes from them), keyed by (problem, case, sample)."""
    done: dict[tuple, Sample] = {}
    if out is not None and Path(out).exists():
        for n, line in enumerate(Path(out).read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if line.strip():
                try:
                    d = json.loads(line)
                    done[(d["problem"], d["case"], d["sample"])] = Sample(**d)
                except (ValueError, KeyError, TypeError) as e:  # a killed run leaves a cut last line
                    warnings.warn(f"{out} line {n} is damaged ({describe(e)}); it is skipped and generated again.",
                                  stacklevel=3)
    return done


def resume_from(out: str | Path | None, settings: dict) -> dict[tuple, Sample]:
    """``read_samples(out)``, refusing a file whose programs were made with other ``settings`` (temperature,
    top_p, seed, single_turn): a resume would mix two runs in one score."""
    done = read_samples(out)
    other = next((d.settings for d in done.values() if d.settings is not None and d.settings != settings), None)
    if other is not None:
        diff = ", ".join(f"{k} {other.get(k)!r}" for k in settings if other.get(k) != settings[k])
        now = ", ".join(f"{k} {settings[k]!r}" for k in settings if other.get(k) != settings[k])
        raise UsageError(f"{out} holds programs made with {diff}, and this run asks for {now}: give another --out "
                         "to start afresh, or the same settings to resume.")
    return done


def write_record(sink, sample: Sample, settings: dict) -> None:
    """One finished sample as a line of the JSONL file, flushed (a killed run keeps it)."""
    sample.settings = settings
    if sink is not None:
        sink.write(json.dumps(sample.__dict__) + "\n")
        sink.flush()


def open_append(out: str | Path):
    """``out`` opened for appending records; a line cut by a killed run is ended first, so the next record starts
    on a line of its own instead of being glued to the damaged one (and lost on the next resume)."""
    path = Path(out)
    if path.exists() and path.stat().st_size:
        with open(path, "rb") as f:
            f.seek(-1, 2)
            cut = f.read(1) != b"\n"
        if cut:
            with open(path, "a", encoding="utf-8") as f:
                f.write("\n")
    return open(path, "a", encoding="utf-8")


def run(cg, problems: list[Problem], *, samples: int = 1, temperature: float = 0.0, top_p: float = 0.95,
        seed: int | None = 0, single_turn: bool = False, out: str | Path | None = None, jobs: int = 2,
        timeout: float = DEFAULT_TIMEOUT, skip_unavailable: bool = True, progress: bool = True) -> dict:
    """Generate and check every (problem, case, sample); resume from ``out`` (JSONL) if it already holds some.
    Returns the report (see ``report``)."""
    if not 0 < timeout < float("inf"):
        raise UsageError(f"timeout={timeout!r}: give a finite number of seconds > 0.")
    settings = dict(temperature=temperature, top_p=top_p, seed=seed, single_turn=single_turn)
    done = resume_from(out, settings)
    todo = [(p, c, k) for p in problems if not (skip_unavailable and p.unavailable)
            for c in range(p.cases) for k in range(samples) if (p.id, c, k) not in done]
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(todo), desc="MTPB", unit="program")
    sink = open_append(out) if out is not None else None
    pending: list[tuple[Sample, Future]] = []

    def finish(sample: Sample, fut: Future) -> None:
        res = fut.result()
        sample.passed, sample.got, sample.error, sample.timed_out = res.passed, res.got, res.error, res.timed_out
        done[sample.key] = sample
        write_record(sink, sample, settings)
        if bar is not None:
            bar.update(1)

    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:  # checks run while the model generates
            try:
                for problem, case, k in todo:
                    try:
                        smp = generate_case(cg, problem, case, sample=k, single_turn=single_turn,
                                            temperature=temperature, top_p=top_p, seed=seed)
                    except ContextWindowError as e:  # this case cannot run on this model; the others still can
                        smp = Sample(problem.id, case, k, [], "", 0, 0, 0.0, passed=False, error=describe(e))
                        done[smp.key] = smp
                        write_record(sink, smp, settings)
                        if bar is not None:
                            bar.update(1)
                        continue
                    pending.append((smp, pool.submit(check, smp.program, problem.expected(case), timeout=timeout)))
                    while pending and pending[0][1].done():
                        finish(*pending.pop(0))
            except BaseException:
                # Ctrl-C or a failed generation: the checks not started are dropped (those cases are generated
                # again on resume); the running ones end within their timeout and are kept.
                for _, fut in pending:
                    fut.cancel()
                pending = [(smp, fut) for smp, fut in pending if not fut.cancelled()]
                raise
            finally:
                for item in pending:
                    finish(*item)
    finally:
        if sink is not None:
            sink.close()
        if bar is not None:
            bar.close()
    return report(problems, list(done.values()), samples=samples, skip_unavailable=skip_unavailable)


def report(problems: list[Problem], results: list[Sample], *, samples: int = 1,
           skip_unavailable: bool = True) -> dict:
    """Per-problem pass rates, their average (the paper's MTPB score), pass@k, and prefill tokens spent."""
    by_problem: dict[int, list[bool]] = {}
    for r in results:
        by_problem.setdefault(r.problem, []).append(bool(r.passed))
    skipped = {p.id: p.unavailable for p in problems if skip_unavailable and p.unavailable}
    ks = [k for k in (1, 5, 10, 40) if k <= samples]
    pass_k = {}
    for k in ks:
        per_case = []
        for p in problems:
            for c in range(p.cases):
                outcome = [bool(r.passed) for r in results if r.problem == p.id and r.case == c]
                if outcome:
                    per_case.append(pass_at_k(len(outcome), sum(outcome), k))
        pass_k[f"pass@{k}"] = 100 * sum(per_case) / len(per_case) if per_case else 0.0
    prefill = sum(r.prefill_tokens for r in results)
    original = sum(r.original_prefill_tokens for r in results)
    return {
        "problems": len(by_problem), "programs": len(results), "skipped": skipped,
        "score": mtpb_score(by_problem) if by_problem else 0.0,
        "per_problem": {pid: 100 * sum(v) / len(v) for pid, v in sorted(by_problem.items())},
        **pass_k,
        "prefill_tokens": prefill, "original_prefill_tokens": original,
        "prefill_saving": original / prefill if prefill else 0.0,
    }


def format_report(rep: dict) -> str:
    lines = [f"MTPB score (average per-problem pass rate): {rep['score']:.2f}% over {rep['problems']} problems, "
             f"{rep['programs']} programs"]
    for k in ("pass@1", "pass@5", "pass@10", "pass@40"):
        if k in rep:
            lines.append(f"{k}: {rep[k]:.2f}%")
    lines.append(f"prefill tokens: {rep['prefill_tokens']} with cache reuse vs {rep['original_prefill_tokens']} "
                 f"for the original harness ({rep['prefill_saving']:.1f}x fewer)")
    for pid, why in rep["skipped"].items():
        lines.append(f"skipped problem {pid}: {why}")
    return "\n".join(lines)


def add_arguments(p) -> None:
    p.add_argument("--data", default=os.environ.get("CONVSYNTH_MTPB"),
                   help="path of mtpb.jsonl (default: $CONVSYNTH_MTPB, else the copy bundled with convsynth)")
    model_flags(p)
    p.add_argument("--problems", default=None, help="ids such as 1,2,10-20 (default: all)")
    p.add_argument("--samples", type=int, default=1, help="programs per test case (the paper: 40)")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--single-turn", action="store_true", help="all instructions in one prompt")
    p.add_argument("--out", default=None, help="samples JSONL (appended to; a rerun resumes)")
    p.add_argument("--jobs", type=int, default=2, help="programs checked in parallel")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    p.add_argument("--report", default=None, help="write the report as JSON here")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run on a Ray cluster ('local' starts one here; 'auto' or ray://host:port joins one)")
    p.add_argument("--replicas", type=int, default=None, help="with --ray: model actors (default: one per GPU)")
    p.add_argument("--server", default=None, help="generate on an OpenAI-compatible server at this URL instead")
    p.add_argument("--api-key", default=None, help="the server's API key")


def _check_args(args) -> None:
    """Everything the run would trip over at its end, refused before it starts."""
    if args.samples < 1:
        raise UsageError(f"--samples {args.samples}: give at least 1 program per test case.")
    if args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs}: give at least 1.")
    if not 0 < args.timeout < float("inf"):
        raise UsageError(f"--timeout {args.timeout}: give a finite number of seconds > 0.")
    check_output("--out", args.out)
    check_output("--report", args.report)


def problems_for(args) -> list:
    """``convsynth mtpb``'s arguments checked, and the problems they choose."""
    _check_args(args)
    return parse_ids(args.problems, load_problems(args.data))


def finish(rep: dict, args) -> int:
    """Print the report, and write it where ``--report`` says."""
    print(format_report(rep))
    if args.report:
        Path(args.report).write_text(json.dumps(rep, indent=1))
    return 0


def main(args) -> int:
    """``convsynth mtpb`` in this process (``--ray``: ``mtpb_ray.main``, which the CLI calls instead)."""
    from . import load
    if getattr(args, "ray", None):
        raise UsageError("--ray runs on the cluster: call convsynth.mtpb_ray.main(args) (the CLI does).")
    problems = problems_for(args)
    if getattr(args, "server", None):
        from .remote import connect
        cg = connect(args.server, model=args.model, api_key=args.api_key)
    else:
        cg = load(args.model, device=args.device, dtype=args.dtype, fast=args.fast)
    rep = run(cg, problems, samples=args.samples, temperature=args.temperature, top_p=args.top_p, seed=args.seed,
              single_turn=args.single_turn, out=args.out, jobs=args.jobs, timeout=args.timeout)
    return finish(rep, args)
