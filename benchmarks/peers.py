"""The peer engine in the benchmark: CTranslate2 (fp32 and int8, converted from the same checkpoint with its own
converter, the same thread count), measured beside convsynth fp32 and int8 in rounds that alternate between the
engines, each measurement in a fresh process with only that engine loaded (two engines' thread pools in one process
contend for the cores). ctranslate2 is an optional dependency (``pip install -e '.[bench]'``); without it
this part of the report says so and the rest runs.

Measured per engine: prefill of the long prompt into a cache (CTranslate2: generating one token, which is its
prefill plus one sampling step; convsynth: the prompt into a cache, last logits only) and greedy decode tokens/s
(time after the first token, as run.py)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from systems import Convsynth, first_difference, release, sync


def ctranslate2_missing() -> str:
    """Why CTranslate2 cannot be measured here ('' when it can)."""
    try:
        import ctranslate2  # noqa: F401
        from ctranslate2.converters import TransformersConverter  # noqa: F401
    except ImportError as e:
        return (f"ctranslate2 is not installed ({e}); pip install 'ctranslate2>=4.8' (or the repository's "
                "'.[bench]' extra) to measure it")
    return ""


def convert(directory: Path, out: Path, quantization: str) -> Path:
    """ct2-transformers-converter's work, through its Python API: the same checkpoint, ``quantization`` weights."""
    from ctranslate2.converters import TransformersConverter
    TransformersConverter(str(directory), load_as_float16=False).convert(str(out), quantization=quantization,
                                                                         force=True)
    return out


class CTranslate2:
    """A CTranslate2 Generator on a converted checkpoint; token ids map to its vocabulary.json strings."""

    def __init__(self, directory: Path, compute_type: str, threads: int, device: torch.device):
        self.directory, self.compute_type, self.threads = directory, compute_type, threads
        self.device = device
        self.name = f"ctranslate2 {compute_type}"
        self.gen = None
        self.vocab = json.loads((directory / "vocabulary.json").read_text())

    def load(self):
        import ctranslate2
        self.gen = None
        self.gen = ctranslate2.Generator(str(self.directory), device=self.device.type, compute_type=self.compute_type,
                                         inter_threads=1, intra_threads=self.threads)

    def tokens(self, ids) -> list[str]:
        return [self.vocab[i] for i in ids]

    def prefill_cache(self, ids: torch.Tensor):
        return self.gen.generate_batch([self.tokens(ids[0].tolist())], max_length=1, sampling_topk=1,
                                       include_prompt_in_result=False)

    def generate(self, prompt: str, prompt_ids: list[int], n: int) -> dict:
        t0 = time.perf_counter()
        out, t_first = [], None
        for step in self.gen.generate_tokens(self.tokens(prompt_ids), max_length=n, sampling_topk=1):
            if t_first is None:
                t_first = time.perf_counter()
            out.append(step.token_id)
        t1 = time.perf_counter()
        return dict(ids=out, total=t1 - t0, ttft=(t_first or t1) - t0, finish="length")

    def unload(self):
        self.gen = None
        release(self.device)


class ConvsynthPeer(Convsynth):
    """convsynth as the peer table measures it: ids in, ids out, fp32 (the decode path run.py chose) or int8."""

    def __init__(self, directory: Path, device: torch.device, dtype: str, fast: str, quantize: str | None):
        super().__init__(directory, device, dtype, fast)
        self.quantize = quantize
        self.name = "convsynth int8" if quantize else "convsynth fp32"

    def load(self):
        import convsynth
        self.cg = None
        release(self.device)
        self.cg = convsynth.load(self.directory, device=str(self.device), dtype=self.dtype, fast=self.fast,
                                 quantize=self.quantize, speculate="off")
        sync(self.device)

    def generate(self, prompt: str, prompt_ids: list[int], n: int) -> dict:
        t0 = time.perf_counter()
        comp = self.cg.generate(prompt, max_new_tokens=n, temperature=0.0, stop=None)
        t1 = time.perf_counter()
        ttft = comp.time_to_first_token
        return dict(ids=comp.raw_ids[0], total=t1 - t0, ttft=ttft, finish=comp.finish_reasons[0])

    def unload(self):
        self.cg = None
        release(self.device)


def _engine(spec: dict):
    """The engine a child process measures, from its plain-typed spec."""
    device = torch.device(spec["device"])
    if spec["engine"] == "ctranslate2":
        return CTranslate2(Path(spec["directory"]), spec["compute_type"], spec["threads"], device)
    return ConvsynthPeer(Path(spec["directory"]), device, spec["dtype"], spec["fast"], spec["quantize"])


def measure_one(spec: dict) -> dict:
    """In a child process: load one engine, warm it up, then time one prefill of ``prefill_ids`` and one greedy
    decode of ``tokens`` after ``prompt``. Plain types out."""
    torch.set_num_threads(spec["threads"])
    s = _engine(spec)
    s.load()
    device = torch.device(spec["device"])
    ids = torch.tensor([spec["prefill_ids"]], device=device)
    s.prefill_cache(ids)  # warm-up: first calls pack weights, fill caches and start thread pools
    s.generate(spec["prompt"], spec["prompt_ids"], 4)
    sync(device)
    t0 = time.perf_counter()
    s.prefill_cache(ids)
    sync(device)
    prefill_s = time.perf_counter() - t0
    run = s.generate(spec["prompt"], spec["prompt_ids"], spec["tokens"])
    return dict(prefill_s=prefill_s, **run, path=getattr(getattr(s, "cg", None), "decode_path", ""))


def _run_child(spec: dict, work: Path) -> dict:
    """``measure_one`` in a fresh interpreter: no other engine's thread pool is alive beside the one measured."""
    import subprocess
    import sys
    spec_file = work / "peer-spec.json"
    out_file = work / "peer-result.json"
    spec_file.write_text(json.dumps(spec))
    out_file.unlink(missing_ok=True)
    root = str(Path(__file__).resolve().parents[1])  # convsynth itself, installed or not
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--measure", str(spec_file), str(out_file)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0 or not out_file.exists():
        raise RuntimeError(f"measuring {spec['name']} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(out_file.read_text())


def bench_peers(directory: Path, work: Path, *, device: torch.device, dtype: str, fast: str, threads: int,
                prompt: str, prompt_ids: list[int], prefill_ids: list[int], tokens: int, repeats: int,
                log=print) -> dict:
    """convsynth fp32 and int8 against CTranslate2 fp32 and int8: prefill of ``prefill_ids`` and greedy decode of
    ``tokens`` after ``prompt``, ``repeats`` rounds alternating between the engines; medians.

    Each measurement runs in its own child process with only that engine loaded. In one process the engines'
    thread pools (torch's OpenMP and CTranslate2's own) stay alive side by side and contend for the same cores:
    on 2 cores, convsynth int8 decode read 27.4 tok/s in one process and 39.6 alone, CTranslate2 fp32 16.3 and
    19.9."""
    import statistics
    missing = ctranslate2_missing()
    common = dict(device=device.type, dtype=dtype, fast=fast, threads=threads, prompt=prompt,
                  prompt_ids=list(prompt_ids), prefill_ids=list(prefill_ids), tokens=tokens)
    specs = [dict(common, engine="convsynth", name="convsynth int8" if q else "convsynth fp32", quantize=q,
                  directory=str(directory)) for q in (None, "int8")]
    if missing:
        log(f"CTranslate2 not measured: {missing}")
    elif dtype != "float32":
        missing = f"the peer comparison converts to CTranslate2 float32 and int8; this run is {dtype}"
        log(f"CTranslate2 not measured: {missing}")
    else:
        for q in ("float32", "int8"):
            t0 = time.perf_counter()
            out = convert(directory, work / f"ct2-{q}", q)
            log(f"CTranslate2 {q}: converted in {time.perf_counter() - t0:.1f} s")
            specs.append(dict(common, engine="ctranslate2", name=f"ctranslate2 {q}", compute_type=q,
                              directory=str(out)))
    runs = {s["name"]: [] for s in specs}
    for _ in range(repeats):
        for spec in specs:
            runs[spec["name"]].append(_run_child(spec, work))
    out = {}
    for name, rs in runs.items():
        rates = [(len(r["ids"]) - 1) / (r["total"] - r["ttft"]) for r in rs if len(r["ids"]) > 1]
        pre = statistics.median(r["prefill_s"] for r in rs)
        out[name] = dict(prefill_tokens=len(prefill_ids), prefill_s=pre, prefill_tokens_per_s=len(prefill_ids) / pre,
                         decode_tokens=tokens, decode_tokens_per_s=statistics.median(rates) if rates else float("nan"),
                         generated=[len(r["ids"]) for r in rs], ids=rs[-1]["ids"])
        if name.startswith("convsynth"):
            out[name]["path"] = rs[-1]["path"]
    base = out["convsynth fp32"]["ids"]
    for v in out.values():  # greedy ids against convsynth fp32: int8 may part ways; CTranslate2 fp32 should not
        v["first_difference_vs_convsynth_fp32"] = first_difference(base, v["ids"])
    log("peers: " + ", ".join(f"{k} decode {v['decode_tokens_per_s']:.1f} tok/s, prefill "
                              f"{v['prefill_tokens_per_s']:.0f} tok/s" for k, v in out.items()))
    return dict(systems=out, ctranslate2_missing=missing, threads=threads, repeats=repeats, isolation="process")


def _agree(v: dict) -> str:
    d = v.get("first_difference_vs_convsynth_fp32", "?")
    return "same" if d is None else f"differ from token {d}"


def report_peers(p: dict, transformers: dict | None, speculation: dict | None = None, config: str = "") -> str:
    """The peer table with ratios: each convsynth row against CTranslate2 of the same precision."""
    from report import f, table
    rows = []
    sysd = p["systems"]
    for name, v in sysd.items():
        peer = sysd.get("ctranslate2 int8" if "int8" in name else "ctranslate2 float32")
        ratio = lambda key: f"{v[key] / peer[key]:.2f}x" if peer and name.startswith("convsynth") else ""  # noqa: E731
        rows.append([name, f(v["decode_tokens_per_s"]), ratio("decode_tokens_per_s"), f(v["prefill_tokens_per_s"], 0),
                     ratio("prefill_tokens_per_s"), v.get("path", ""), _agree(v)])
    if transformers:
        rows.append(["transformers fp32 (from the tables above)", f(transformers["decode_tokens_per_s"]), "",
                     f(transformers["prefill_tokens_per_s"], 0), "", "eager generate", ""])
    md = ["## Against CTranslate2", ""]
    if p["ctranslate2_missing"]:
        md += [f"**CTranslate2 was not measured**: {p['ctranslate2_missing']}.", ""]
    alone = ", each measurement in a fresh process with only that engine loaded" if p.get("isolation") else ""
    md.append(f"{p['threads']} threads for every engine, median of {p['repeats']} alternating rounds{alone}; decode: greedy "
              f"tokens/s over {next(iter(sysd.values()))['decode_tokens']} tokens after the first; prefill: "
              f"{next(iter(sysd.values()))['prefill_tokens']} prompt tokens into a cache, tokens/s. Ratios: convsynth "
              "over CTranslate2 of the same precision.")
    md.append("")
    md.append(table(["engine", "decode tok/s", "vs CTranslate2", "prefill tok/s", "vs CTranslate2", "convsynth path",
                     "greedy ids vs convsynth fp32"], rows))
    goals = []
    ct_fp, ct_q = sysd.get("ctranslate2 float32"), sysd.get("ctranslate2 int8")
    cs_fp, cs_q = sysd["convsynth fp32"], sysd["convsynth int8"]
    if ct_q:
        goals.append(["int8 decode vs CTranslate2 int8", ">= 1.1x",
                      cs_q["decode_tokens_per_s"] / ct_q["decode_tokens_per_s"], 1.1])
        goals.append(["int8 prefill vs CTranslate2 int8", ">= 1.0x",
                      cs_q["prefill_tokens_per_s"] / ct_q["prefill_tokens_per_s"], 1.0])
    if ct_fp:
        goals.append(["fp32 decode vs CTranslate2 fp32", ">= 1.1x",
                      cs_fp["decode_tokens_per_s"] / ct_fp["decode_tokens_per_s"], 1.1])
    if speculation:
        goals.append(["speculation on the repeating session (auto) vs off", ">= 1.8x",
                      speculation["modes"]["auto"]["speedup"], 1.8])
    if goals:
        md += ["", f"Goals of issue 14 (set for the 350M configuration with 2 threads; this run: {config}, "
                   f"{p['threads']} threads):", ""]
        md.append(table(["goal", "target", "measured", "met"],
                        [[g, t, f"{m:.2f}x", "yes" if m >= want else "**no**"] for g, t, m, want in goals]))
    return "\n".join(md)


if __name__ == "__main__":  # the child process of _run_child: python peers.py --measure SPEC.json OUT.json
    import sys
    if len(sys.argv) == 4 and sys.argv[1] == "--measure":
        Path(sys.argv[3]).write_text(json.dumps(measure_one(json.loads(Path(sys.argv[2]).read_text()))))
    else:
        sys.exit("usage: peers.py --measure SPEC.json OUT.json (run by bench_peers)")
