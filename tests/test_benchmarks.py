"""The benchmark suite runs end to end on a tiny random model and writes its report. No timing assertions here:
speed is what benchmarks/run.py measures, not what tests check."""
from __future__ import annotations

import json
import subprocess
import sys

from helpers import ROOT

SECTIONS = ["## Load", "## Prefill", "## Greedy decode", "## Decode against the memory-bandwidth floor",
            "## 8-turn session", "## Goals"]


def test_benchmark_suite_runs_on_tiny_config(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--config", "tiny", "--quick",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]

    mds, jsons, pngs = (sorted(tmp_path.glob(f"*-tiny-float32-quick.{ext}")) for ext in ("md", "json", "png"))
    assert len(mds) == len(jsons) == len(pngs) == 1, sorted(p.name for p in tmp_path.iterdir())
    md = mds[0].read_text()
    for section in SECTIONS:
        assert section in md, section
    assert md in proc.stdout  # the same tables go to stdout
    assert "torch.set_num_threads(" in md

    r = json.loads(jsons[0].read_text())
    assert r["config"] == "tiny" and r["dtype"] == "float32" and r["quick"] is True
    for system in ("convsynth", "transformers"):
        res = r[system]
        assert res["load_s"] > 0
        assert set(res["prefill_full_s"]) == set(res["prefill_cache_s"]) == {"60", "512"}
        for n, d in res["decode"].items():
            assert d["tokens"] == [int(n)] * d["repeats"], (system, n, d["tokens"])  # EOS never ends a run early
    assert set(r["session"]) == {"convsynth Session", "transformers re-encode", "transformers cache reuse"}
    for variant in r["session"].values():
        assert len(variant["turns"]) == 8
        assert all(t["generated"] == r["plan"]["session_tokens"] for t in variant["turns"])
    a, c = r["session"]["convsynth Session"]["turns"], r["session"]["transformers cache reuse"]["turns"]
    assert a[0]["prefilled"] == a[0]["prompt_tokens"]
    assert all(t["prefilled"] < t["prompt_tokens"] for t in a[1:] + c[1:])  # both reuse their caches
    assert 0 < r["floor"]["floor_ms"] and r["bandwidth"]["bytes_per_s"] > 0
    assert r["goals"] and all(len(g) == 4 for g in r["goals"])
