"""MTPB on a Ray cluster: ``convsynth mtpb --ray ADDRESS --replicas N`` (``--ray local`` starts one here).

Each replica is a Ray actor holding one loaded model on one device (``num_gpus=1`` where the cluster has GPUs,
one CPU otherwise). The driver hands test cases to idle actors, runs each program's check as a Ray CPU task,
and appends every finished sample to the same resumable JSONL file as the single-process harness, with a
progress bar. A case whose actor dies (killed, out of memory, node lost) goes back in the queue and a new actor
takes the dead one's place; results are keyed by (problem, case, sample), so nothing is lost or counted twice.
Every node needs convsynth installed and the checkpoint at the same path (or a hub id it can download).
"""
from __future__ import annotations

from collections import deque
from pathlib import Path

from .errors import ConvsynthError
from .mtpb import Sample, open_append, report, resume_from, write_record
from .mtpb_check import DEFAULT_TIMEOUT, Problem

NAMESPACE = "convsynth"


def _ray():
    try:
        import ray
    except ImportError:
        raise ConvsynthError("MTPB on Ray needs ray: pip install 'convsynth[ray]' (or pip install ray), "
                             "or run without --ray.") from None
    return ray


class Replica:
    """A Ray actor's body: one loaded model, generating one test case at a time."""

    def __init__(self, model, device: str, dtype: str, fast):
        from .codegen import load
        self.cg = load(model, device=device, dtype=dtype, fast=fast)

    def generate(self, problem: Problem, case: int, sample: int, options: dict) -> dict:
        from .mtpb import generate_case
        return generate_case(self.cg, problem, case, sample=sample, **options).__dict__


def _check(program: str, expected, timeout: float):
    from .mtpb_check import check
    return check(program, expected, timeout=timeout)


def connect(address: str | None):
    """Join the cluster at ``address`` ('local' or None: start one on this machine, on loopback), unless this
    process is connected already."""
    ray = _ray()
    if not ray.is_initialized():
        if address in (None, "local"):
            ray.init(include_dashboard=False, namespace=NAMESPACE, _node_ip_address="127.0.0.1",
                     log_to_driver=False)
        else:
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
    return ray


def run(model, problems: list[Problem], *, address: str | None = "local", replicas: int | None = None,
        device: str = "auto", dtype: str = "auto", fast="auto", samples: int = 1, temperature: float = 0.0,
        top_p: float = 0.95, seed: int | None = 0, single_turn: bool = False, out: str | Path | None = None,
        jobs: int = 2, timeout: float = DEFAULT_TIMEOUT, skip_unavailable: bool = True, progress: bool = True,
        max_replacements: int | None = None) -> dict:
    """``mtpb.run`` across a Ray cluster. ``model``: a checkpoint path or hub id each actor loads (None: the
    packaged model). ``replicas``: actors (default: one per GPU, else one). ``jobs``: checks in flight at once.
    ``max_replacements``: dead actors replaced before giving up (default 3 per replica). Returns the report,
    with ``report['ray']`` saying how many actors ran and how many cases were retried."""
    ray = connect(address)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    replicas = replicas or max(1, gpus)
    if replicas < 1:
        raise ConvsynthError(f"replicas={replicas} must be at least 1.")
    if model is not None and Path(model).exists():
        model = str(Path(model).resolve())  # actors may start in another working directory
    actor_options = dict(num_gpus=1, num_cpus=0) if gpus else dict(num_cpus=1)
    Actor = ray.remote(**actor_options)(Replica)
    check_task = ray.remote(num_cpus=1)(_check)  # a CPU task: checks never wait on a GPU actor's slot

    options = dict(single_turn=single_turn, temperature=temperature, top_p=top_p, seed=seed)
    settings = options  # recorded with each program, as mtpb.run records the same four
    done = resume_from(out, settings)
    todo = deque((p, c, k) for p in problems if not (skip_unavailable and p.unavailable)
                 for c in range(p.cases) for k in range(samples) if (p.id, c, k) not in done)
    budget = max_replacements if max_replacements is not None else 3 * replicas
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(todo), desc=f"MTPB on Ray ({replicas} replicas)", unit="program")
    sink = open_append(out) if out is not None else None
    started = [0]
    retried = 0

    def new_actor():
        started[0] += 1
        return Actor.options(name=f"convsynth-mtpb-{started[0]}").remote(model, device if device != "auto" else
                                                                          ("cuda" if gpus else "cpu"), dtype, fast)

    generating: dict = {}  # ObjectRef -> (actor, (problem, case, sample))
    checking: dict = {}    # ObjectRef -> (Sample, problem)
    waiting: deque = deque()  # generated samples whose check is not submitted yet (at most `jobs` in flight)

    def feed(actor) -> bool:
        if not todo:
            return False
        item = todo.popleft()
        problem, case, k = item
        generating[actor.generate.remote(problem, case, k, options)] = (actor, item)
        return True

    actors = [new_actor() for _ in range(min(replicas, len(todo)))]
    try:
        for actor in actors:
            feed(actor)
        while generating or checking or waiting:
            while waiting and len(checking) < max(1, jobs):
                smp, problem = waiting.popleft()
                checking[check_task.remote(smp.program, problem.expected(smp.case), timeout)] = (smp, problem)
            ready, _ = ray.wait(list(generating) + list(checking), num_returns=1)
            ref = ready[0]
            if ref in checking:
                smp, _ = checking.pop(ref)
                res = ray.get(ref)
                smp.passed, smp.got, smp.error, smp.timed_out = res.passed, res.got, res.error, res.timed_out
                if smp.key not in done:  # never counted twice, whatever happened on the way
                    done[smp.key] = smp
                    write_record(sink, smp, settings)
                    if bar is not None:
                        bar.update(1)
                continue
            actor, item = generating.pop(ref)
            try:
                smp = Sample(**ray.get(ref))
            except ray.exceptions.RayActorError as e:
                # The actor died with this case in hand: the case goes back first, a new actor takes over.
                retried += 1
                todo.appendleft(item)
                if budget <= 0:
                    why = (str(e).strip().splitlines() or [""])[0][:200]
                    raise ConvsynthError(f"MTPB actors keep dying ({started[0]} started, the last while on problem "
                                         f"{item[0].id} case {item[1]}: {why}); check the workers' logs (out of "
                                         "memory? a checkpoint path missing on a node?) and rerun: finished results "
                                         "are kept in the JSONL file.") from None
                budget -= 1
                actors = [a for a in actors if a is not actor] + [new_actor()]
                feed(actors[-1])
                continue
            if smp.key not in done and all(s.key != smp.key for s, _ in waiting):
                waiting.append((smp, item[0]))
            if not feed(actor):
                ray.kill(actor)  # no work left for it: free its device (and CPU, for the checks)
                actors = [a for a in actors if a is not actor]
    finally:
        for actor in actors:
            ray.kill(actor)
        if sink is not None:
            sink.close()
        if bar is not None:
            bar.close()
    rep = report(problems, list(done.values()), samples=samples, skip_unavailable=skip_unavailable)
    rep["ray"] = {"replicas": replicas, "actors_started": started[0], "retried_cases": retried}
    return rep


def main(args) -> int:
    """``convsynth mtpb --ray ADDRESS``: the run on the cluster, the same report as ``mtpb.main``."""
    from .mtpb import finish, problems_for
    problems = problems_for(args)
    rep = run(args.model, problems, address=args.ray, replicas=args.replicas, device=args.device, dtype=args.dtype,
              fast=args.fast, samples=args.samples, temperature=args.temperature, top_p=args.top_p, seed=args.seed,
              single_turn=args.single_turn, out=args.out, jobs=args.jobs, timeout=args.timeout)
    return finish(rep, args)
