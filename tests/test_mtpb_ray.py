"""MTPB on a real Ray cluster started here (2 CPUs, loopback): the same greedy results as the single-process
harness, and an actor killed mid-run costs nothing: every result lands exactly once."""
from __future__ import annotations

import json
import os
import sys
import threading
import time

import pytest

ray = pytest.importorskip("ray")

import convsynth  # noqa: E402
from convsynth import cli, mtpb, mtpb_ray  # noqa: E402
from convsynth.errors import ConvsynthError  # noqa: E402
from convsynth.mtpb_check import load_problems  # noqa: E402

import mtpb_small  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network
    # Ray's agents and workers start slowly on a loaded 2-core machine: give them minutes, not the default 30-60 s.
    os.environ.setdefault("RAY_agent_register_timeout_ms", "300000")
    os.environ.setdefault("RAY_worker_register_timeout_seconds", "600")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", namespace=mtpb_ray.NAMESPACE,
             log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def problems(tmp_path_factory):
    return load_problems(mtpb_small.write(tmp_path_factory.mktemp("mtpb")))


@pytest.fixture(scope="module")
def single_process(problems, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "samples.jsonl"
    mtpb.run(convsynth.load(), problems, out=out, progress=False)
    return rows(out)


def rows(path) -> list[tuple]:
    return sorted((d["problem"], d["case"], d["sample"], d["program"], d["passed"], d["got"])
                  for d in map(json.loads, path.read_text().splitlines()))


def test_ray_results_equal_the_single_process_run(cluster, problems, single_process, tmp_path):
    out = tmp_path / "ray.jsonl"
    rep = mtpb_ray.run(None, problems, address="local", replicas=2, out=out, progress=False)
    assert rows(out) == single_process
    assert rep["programs"] == len(single_process) == 3 and rep["ray"]["retried_cases"] == 0
    again = mtpb_ray.run(None, problems, address="local", replicas=2, out=out, progress=False)  # resumes
    assert rows(out) == single_process and again["ray"]["actors_started"] == 0


def test_a_killed_actor_loses_nothing_and_counts_nothing_twice(cluster, problems, single_process, tmp_path):
    out = tmp_path / "ray.jsonl"
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(rep=mtpb_ray.run(
        None, problems, address="local", replicas=1, out=out, progress=False)))
    worker.start()
    killed = False
    for _ in range(600):  # the first actor's first case is under way: kill it mid-run
        try:
            actor = ray.get_actor("convsynth-mtpb-1")
        except ValueError:
            time.sleep(0.1)
            continue
        if out.exists() and out.read_text().strip():  # one result in, more to come
            ray.kill(actor)
            killed = True
            break
        time.sleep(0.1)
    worker.join(300)
    assert killed and not worker.is_alive()
    rep = result["rep"]
    assert rep["ray"]["retried_cases"] >= 1 and rep["ray"]["actors_started"] >= 2
    lines = out.read_text().splitlines()
    assert len(lines) == len(single_process)  # exactly once each
    assert rows(out) == single_process


def test_cli_runs_on_ray(cluster, problems, single_process, tmp_path):
    data = mtpb_small.write(tmp_path)
    out = tmp_path / "cli.jsonl"
    assert cli.main(["mtpb", "--data", str(data), "--ray", "local", "--replicas", "1",
                               "--out", str(out)]) == 0
    assert rows(out) == single_process


def test_without_ray_the_message_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets when ray is not installed
    with pytest.raises(ConvsynthError, match=r"pip install 'convsynth\[ray\]'"):
        mtpb_ray.connect("local")
