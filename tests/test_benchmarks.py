"""The benchmark suite runs end to end on a tiny random model and writes its report. No timing assertions here:
speed is what benchmarks/run.py measures, not what tests check."""
from __future__ import annotations

import importlib.util
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

    # the peer table: convsynth fp32 and int8, and CTranslate2 converted from the same checkpoint when installed
    assert "## Against CTranslate2" in md
    peers = r["peers"]["systems"]
    assert {"convsynth fp32", "convsynth int8"} <= set(peers)
    assert peers["convsynth int8"]["path"].startswith("int8")
    if importlib.util.find_spec("ctranslate2"):
        assert {"ctranslate2 float32", "ctranslate2 int8"} <= set(peers) and not r["peers"]["ctranslate2_missing"]
        assert "| ctranslate2 int8 |" in md and "vs CTranslate2" in md
        # the same random fp32 checkpoint in both engines: the same greedy tokens
        assert peers["ctranslate2 float32"]["first_difference_vs_convsynth_fp32"] is None
    else:
        assert "CTranslate2 was not measured" in md
    for p in peers.values():
        assert p["generated"] == [r["plan"]["decode_tokens"][-1]] * r["plan"]["peer_repeats"]
    # the speculation session: the same text with and without it, drafts reported
    spec = r["speculation"]
    assert spec["identical"] and "## Speculative decoding: a repeating session" in md
    assert spec["modes"]["on"]["drafted"] > 0 and spec["modes"]["off"]["drafted"] == 0


def test_benchmark_says_when_ctranslate2_is_missing(monkeypatch):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import peers
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # what an environment without it looks like to import
    assert "ctranslate2 is not installed" in peers.ctranslate2_missing()
    assert "pip install" in peers.ctranslate2_missing()


def test_speculation_benchmark_on_a_fresh_session():
    """The variant whose steps repeat nothing (what 'auto' costs where lookup has little to draft): same text in
    every mode, and its own heading."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "spec_session.py"), "--session", "fresh",
                           "--max-new-tokens", "8", "--repeats", "1"], capture_output=True, text=True, timeout=600,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "## Speculative decoding: a fresh session" in proc.stdout and "that repeat nothing" in proc.stdout
    assert "identical text: True" in proc.stderr
