#!/usr/bin/env python
"""convsynth against transformers, in one process, on the same random-weight CodeGen checkpoint.

    python benchmarks/run.py [--config 350M|2B|tiny] [--device cpu|cuda] [--dtype float32|float16|bfloat16] [--fast MODE]
                             [--quick] [--out benchmarks/results] [--threads N] [--no-peers] [--no-spec]

Builds transformers' CodeGenForCausalLM with random weights from the preset config, saves it once to a temporary
directory (safetensors + tokenizer.json), then loads that directory with ``convsynth.load`` and with
``CodeGenForCausalLM.from_pretrained`` and measures: load time, prefill, greedy decode, decode against the machine's
memory-bandwidth floor (measured here), and an 8-turn MTPB-style session (convsynth's Session against transformers
re-encoding the history every turn and against transformers reusing its DynamicCache). Then CTranslate2 fp32 and
int8 (converted from the same directory, same threads) beside convsynth fp32 and int8 (peers.py; says so when
ctranslate2 is not installed), and a repeating session on the packaged model with and without speculative decoding
(spec_session.py). Prints markdown tables and
writes ``<out>/<hardware>-<config>-<dtype>[-<fast>][-quick].{md,json,png}``. What each number means: benchmarks/README.md.

When both models fit in memory together, every repeat alternates between the two systems, so a change in the
machine's load hits both alike; otherwise (codegen-2B in fp32 on a 24 GiB machine, or --sequential) convsynth runs
first and transformers after it, one model in memory at a time. Run it on a quiet machine: the header shows the load
average.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import goals, plot, report  # noqa: E402
from systems import DTYPES, Convsynth, Transformers, first_difference, release, sync  # noqa: E402

CONFIGS = {"tiny": None, "350M": "Salesforce/codegen-350M-mono", "2B": "Salesforce/codegen-2B-mono"}
TINY = dict(n_embd=64, n_layer=2, n_head=4, rotary_dim=8, vocab_size=51200)  # the tests' "tiny" shape
SEED = 0

# A multi-turn problem in MTPB's format: the preamble, then "# <instruction>\n" and the model's code per turn.
INSTRUCTIONS = [
    'Assign the list of numbers [3, 1, 4, 1, 5, 9, 2, 6] to a variable named "numbers".',
    'Sort "numbers" in ascending order and assign the result to "ordered".',
    'Compute the mean of "ordered" with numpy and assign it to "mean".',
    'Compute the standard deviation of "ordered" and assign it to "std".',
    'Create a list "scaled" holding each number minus "mean", divided by "std".',
    'Keep only the positive values of "scaled" in a list named "positive".',
    'Round each value of "positive" to two decimals.',
    'Print the length of "positive" and its values.',
]
# Text for prompts of an exact token count (prefill ids and the decode prompt are cut from it).
PROMPT_SOURCE = '''# Import libraries.

import numpy as np

def moving_average(values, window):
    """Return the moving average of values over a window of the given size."""
    if window < 1:
        raise ValueError("window must be at least 1")
    values = np.asarray(values, dtype=float)
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


class Inventory:
    def __init__(self):
        self.items = {}

    def add(self, name, count=1):
        self.items[name] = self.items.get(name, 0) + count

    def remove(self, name, count=1):
        if self.items.get(name, 0) < count:
            raise KeyError(f"not enough {name} in stock")
        self.items[name] -= count

'''


@dataclass(frozen=True)
class Plan:
    load_repeats: int
    prefill_lengths: tuple
    prefill_repeats: int
    prefill_warmup: int
    decode_prompt: int
    decode_tokens: tuple
    decode_repeats: int
    session_tokens: int
    session_repeats: int
    bandwidth_repeats: int
    bandwidth_again: bool  # measure the bandwidth at the end too and keep the best
    peer_repeats: int = 3      # CTranslate2 against convsynth fp32/int8 (peers.py)
    spec_tokens: int = 64      # the speculation session (spec_session.py): new tokens per step
    spec_repeats: int = 3


FULL = Plan(load_repeats=3, prefill_lengths=(60, 512), prefill_repeats=3, prefill_warmup=1, decode_prompt=60,
            decode_tokens=(20, 128), decode_repeats=3, session_tokens=32, session_repeats=2, bandwidth_repeats=5,
            bandwidth_again=True)
QUICK = Plan(load_repeats=1, prefill_lengths=(60, 512), prefill_repeats=1, prefill_warmup=0, decode_prompt=60,
             decode_tokens=(8, 24), decode_repeats=1, session_tokens=8, session_repeats=1, bandwidth_repeats=3,
             bandwidth_again=False, peer_repeats=1, spec_tokens=16, spec_repeats=1)


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T_START:6.1f}s] {msg}", file=sys.stderr, flush=True)


T_START = time.perf_counter()


def median(xs):
    return statistics.median(xs) if xs else float("nan")


# ---- the machine ---------------------------------------------------------------------------------------------
def hardware(device: torch.device, threads: int) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        names = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        cpu = names[0].strip() if names else cpu
    except OSError:
        pass
    mem = None
    try:
        kb = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
        mem = int(kb.group(1)) * 1024 if kb else None
    except OSError:
        pass
    import transformers
    info = dict(device=device.type, cpu=cpu, cores=len(os.sched_getaffinity(0)), torch_threads=threads,
                ram_bytes=mem, torch=torch.__version__, transformers=transformers.__version__,
                python=platform.python_version(), load_average_start=os.getloadavg()[0])
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=torch.cuda.get_device_name(device), gpu_memory_bytes=props.total_memory,
                    cuda=torch.version.cuda)
    name = info.get("gpu") or f"{cpu} {info['cores']}c"
    info["slug"] = re.sub(r"[^a-z0-9]+", "-", name.lower().replace("(r)", "").replace("(tm)", "")).strip("-")
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "convsynth"], cwd=ROOT, capture_output=True,
                               text=True)
        info["commit"] = rev.stdout.strip() + ("+uncommitted" if dirty.stdout.strip() else "")
    except OSError:
        info["commit"] = "?"
    return info


@torch.inference_mode()
def measure_bandwidth(device: torch.device, repeats: int, nbytes: int = 1 << 30) -> dict:
    """Best-of-``repeats`` memory bandwidth over a 1 GiB fp32 tensor: a sum (reads nbytes) and a copy (reads and
    writes nbytes each). The larger of the two is the bandwidth the floor uses (the stricter floor)."""
    x = torch.ones(nbytes // 4, device=device)
    y = torch.empty_like(x)
    read, copy = [], []
    for _ in range(repeats + 1):  # the first round is a warm-up
        sync(device)
        t0 = time.perf_counter()
        x.sum()
        sync(device)
        read.append(nbytes / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        y.copy_(x)
        sync(device)
        copy.append(2 * nbytes / (time.perf_counter() - t0))
    del x, y
    release(device)
    return dict(read_bytes_per_s=max(read[1:]), copy_bytes_per_s=max(copy[1:]),
                bytes_per_s=max(max(read[1:]), max(copy[1:])), tensor_bytes=nbytes, repeats=repeats)


# ---- the checkpoint ------------------------------------------------------------------------------------------
def model_config(name: str):
    from convsynth.config import PRESETS, CodeGenConfig
    return CodeGenConfig(**TINY, name="tiny") if name == "tiny" else PRESETS[CONFIGS[name]]


def make_checkpoint(cfg, dtype: torch.dtype, directory: Path, tokenizer) -> Path:
    """transformers' CodeGenForCausalLM with random weights (seeded; biases and LayerNorms randomised too, as in
    tests/conftest.py), saved as safetensors with the tokenizer. EOS and the ids the tokenizer does not have get a
    -1e4 output bias, so greedy decoding never stops early and every generated token has text."""
    from transformers import CodeGenConfig as HFConfig, CodeGenForCausalLM
    keys = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "rotary_dim", "n_inner",
            "activation_function", "layer_norm_epsilon", "bos_token_id", "eos_token_id", "tie_word_embeddings")
    hf_cfg = HFConfig(n_ctx=cfg.n_positions, **{k: getattr(cfg, k) for k in keys})
    torch.manual_seed(SEED)
    model = CodeGenForCausalLM(hf_cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln" in name:
                p.add_(torch.randn_like(p) * 0.02)
        model.lm_head.bias[cfg.eos_token_id] = -1e4
        model.lm_head.bias[len(tokenizer):] = -1e4
    model.to(dtype).save_pretrained(directory)
    tokenizer.save(directory)
    del model
    gc.collect()
    return directory


def warm_page_cache(directory: Path) -> int:
    total = 0
    for f in directory.iterdir():
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 24):
                total += len(chunk)
    return total


def text_of_tokens(tokenizer, n: int) -> str:
    """A piece of code that encodes to exactly n tokens."""
    ids = tokenizer.encode(PROMPT_SOURCE * (n // 200 + 2))
    for cut in range(n, n + 32):
        text = tokenizer.decode(ids[:cut])
        if len(tokenizer.encode(text)) == n:
            return text
    raise RuntimeError(f"could not cut a {n}-token prompt")


def prefill_ids(tokenizer, n: int) -> list[int]:
    return tokenizer.encode(PROMPT_SOURCE * (n // 200 + 2))[:n]


def weight_bytes_per_token(model, cfg) -> dict:
    """Bytes a decode step must read: every parameter once, but only one row of the embedding table."""
    params = sum(p.numel() for p in model.parameters())
    es = next(model.parameters()).element_size()
    wte = cfg.vocab_size * cfg.n_embd
    return dict(parameters=params, element_size=es, weight_bytes=(params - wte + cfg.n_embd) * es,
                kv_bytes_per_position=2 * cfg.n_layer * cfg.n_embd * es)


# ---- the measurements ----------------------------------------------------------------------------------------
def fits_together(checkpoint_bytes: int, device: torch.device) -> bool:
    """Whether both models (and the loading peak of one more) fit at once: then the systems alternate."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return 2.5 * checkpoint_bytes < free
    try:
        avail = int(re.search(r"MemAvailable:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) * 1024
    except (OSError, AttributeError):
        return False
    return 3 * checkpoint_bytes < avail


def alternate(systems: list, fn, repeats: int, warmup: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per call of fn(system), ``repeats`` rounds alternating between the systems, after warm-ups."""
    out = {s.name: [] for s in systems}
    with torch.inference_mode():
        for s in systems:
            for _ in range(warmup):
                fn(s)
        for _ in range(repeats):
            for s in systems:
                sync(device)
                t0 = time.perf_counter()
                fn(s)
                sync(device)
                out[s.name].append(time.perf_counter() - t0)
    return out


def summarize_generation(runs: list[dict]) -> dict:
    rates = [(len(r["ids"]) - 1) / (r["total"] - r["ttft"]) for r in runs if len(r["ids"]) > 1]
    return dict(tokens=[len(r["ids"]) for r in runs], finish=runs[-1]["finish"],
                total_s=median([r["total"] for r in runs]), ttft_s=median([r["ttft"] for r in runs]),
                decode_tokens_per_s=median(rates), ms_per_token=1000 / median(rates) if rates else float("nan"),
                ids=runs[-1]["ids"], repeats=len(runs))


def bench(systems: list, plan: Plan, tokenizer, device: torch.device, res: dict, state: dict) -> None:
    """Every measurement over ``systems`` (convsynth first), held in memory together: each repeat alternates
    between them, so a change in the machine's load hits both alike. Results go to res[system name]; ``state``
    carries convsynth's session code to a later transformers pass."""
    for s in systems:
        res.setdefault(s.name, {}).update(prefill_full_s={}, prefill_cache_s={}, decode={}, session={})
    loads = {s.name: [] for s in systems}
    for _ in range(plan.load_repeats):
        for s in systems:
            t0 = time.perf_counter()
            s.load()
            loads[s.name].append(time.perf_counter() - t0)
    for s in systems:
        res[s.name]["load_s"] = median(loads[s.name])
        log(f"{s.name}: loaded in {res[s.name]['load_s']:.2f} s")
        if isinstance(s, Convsynth):
            res[s.name]["weights"] = weight_bytes_per_token(s.cg.module, s.cg.config)
        else:
            res[s.name]["attn_implementation"] = s.attn

    warm = torch.tensor([prefill_ids(tokenizer, 16)], device=device)
    alternate(systems, lambda s: (s.prefill_full(warm), s.prefill_cache(warm)), 0, 1, device)
    for n in plan.prefill_lengths:
        ids = torch.tensor([prefill_ids(tokenizer, n)], device=device)
        for key, call in (("prefill_full_s", lambda s: s.prefill_full(ids)),
                          ("prefill_cache_s", lambda s: s.prefill_cache(ids))):
            times = alternate(systems, call, plan.prefill_repeats, plan.prefill_warmup, device)
            for s in systems:
                res[s.name][key][n] = median(times[s.name])
        log(f"prefill {n} tokens (all logits / into a cache): " + ", ".join(
            f"{s.name} {res[s.name]['prefill_full_s'][n] * 1000:.1f} / {res[s.name]['prefill_cache_s'][n] * 1000:.1f}"
            f" ms" for s in systems))

    prompt = text_of_tokens(tokenizer, plan.decode_prompt)
    prompt_ids = tokenizer.encode(prompt)
    for s in systems:
        s.generate(prompt, 4)  # warm-up
        if isinstance(s, Convsynth):
            s.raw_loop(prompt_ids, 4)
    for n in plan.decode_tokens:
        runs = {s.name: [] for s in systems}
        raw = []
        for _ in range(plan.decode_repeats):
            for s in systems:
                runs[s.name].append(s.generate(prompt, n))
                if isinstance(s, Convsynth) and n == max(plan.decode_tokens):
                    raw.append(s.raw_loop(prompt_ids, n))
        for s in systems:
            res[s.name]["decode"][n] = summarize_generation(runs[s.name])
            if raw and isinstance(s, Convsynth):
                res[s.name]["raw_loop"] = summarize_generation(raw)
        log(f"decode {n} tokens: " + ", ".join(
            f"{s.name} {res[s.name]['decode'][n]['decode_tokens_per_s']:.2f} tok/s" for s in systems))
    for s in systems:
        if isinstance(s, Convsynth):  # after decoding: a fast path that fell back on the way says so here
            state["decode_path"] = s.cg.decode_path
            log(f"convsynth decode step: {state['decode_path']}")

    n = plan.session_tokens
    for s in systems:  # warm-up: two turns each
        if isinstance(s, Convsynth):
            s.session(INSTRUCTIONS[:2], n)
        else:
            s.session_reencode(session_prompts(["pass\n"] * 2), n)
            s.session_reuse(session_prompts(["pass\n"] * 2), n)
    reps = {}
    for _ in range(plan.session_repeats):
        for s in systems:
            if isinstance(s, Convsynth):
                turns = s.session(INSTRUCTIONS, n)
                reps.setdefault((s.name, "convsynth Session"), []).append(turns)
                state["codes"] = [t["code"] for t in turns]  # greedy: the same every repeat
            else:
                prompts = session_prompts(state["codes"])
                reps.setdefault((s.name, "transformers re-encode"), []).append(s.session_reencode(prompts, n))
                reps.setdefault((s.name, "transformers cache reuse"), []).append(s.session_reuse(prompts, n))
    for (name, label), runs in reps.items():
        res[name]["session"][label] = session_summary(runs)
        log(f"{label}: 8 turns in {res[name]['session'][label]['total_s']:.2f} s")
    for s in systems:
        s.unload()


def session_summary(reps: list[list[dict]]) -> dict:
    turns = []
    for i in range(len(reps[0])):
        row = {k: reps[-1][i][k] for k in ("prompt_tokens", "prefilled", "generated", "code")}
        row.update(ttft_s=median([r[i]["ttft"] for r in reps]), total_s=median([r[i]["total"] for r in reps]))
        if "internal_ttft" in reps[0][i]:
            row["internal_ttft_s"] = median([r[i]["internal_ttft"] for r in reps])
        turns.append(row)
    return dict(turns=turns, total_s=median([sum(t["total"] for t in r) for r in reps]), repeats=len(reps),
                ttft_last_over_first=turns[-1]["ttft_s"] / turns[0]["ttft_s"])


def session_prompts(codes: list[str]) -> list[str]:
    """The prompt text of each turn when turn i's code is codes[i]: exactly what convsynth's Session sees."""
    from convsynth.session import MTPB_PREAMBLE, Turn, comment_lines
    text, prompts = MTPB_PREAMBLE, []
    for instr, code in zip(INSTRUCTIONS, codes):
        prompts.append(text + comment_lines(instr))
        text += Turn(instr, code).text
    return prompts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=list(CONFIGS), default="350M")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=list(DTYPES), default=None, help="default: float32 on cpu, float16 on cuda")
    p.add_argument("--quick", action="store_true", help="fewer repeats and tokens (< 2 minutes for 350M on CPU)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--sequential", action="store_true",
                   help="run convsynth then transformers, one model in memory at a time (automatic when both do "
                        "not fit)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: every core this process may use)")
    p.add_argument("--fast", choices=["auto", "cuda_graphs", "compile", "onednn", "eager"], default="auto",
                   help="convsynth's decode step (default auto: CUDA graphs on a GPU, oneDNN-packed weights on a CPU)")
    p.add_argument("--no-peers", action="store_true", help="skip CTranslate2 and convsynth int8 (peers.py)")
    p.add_argument("--no-spec", action="store_true", help="skip the speculation session (spec_session.py)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA GPU is available here")
    dtype = args.dtype or ("float16" if device.type == "cuda" else "float32")
    plan = QUICK if args.quick else FULL
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    torch.manual_seed(SEED)
    hw = hardware(device, threads)
    log(f"{hw.get('gpu') or hw['cpu']}, {threads} cores, torch threads set to {threads}, {dtype}, "
        f"load average {hw['load_average_start']:.2f}")

    from convsynth.tokenizer import CodeGenTokenizer
    tokenizer = CodeGenTokenizer.from_pretrained(None)
    cfg = model_config(args.config)
    bw = measure_bandwidth(device, plan.bandwidth_repeats)
    log(f"memory bandwidth: {bw['bytes_per_s'] / 1e9:.1f} GB/s")
    r = dict(config=args.config, model_name=CONFIGS[args.config] or "tiny", dtype=dtype, quick=args.quick,
             started=time.strftime("%Y-%m-%d %H:%M:%S"), hardware=hw, plan=asdict(plan),
             model={k: getattr(cfg, k) for k in ("n_embd", "n_layer", "n_head", "rotary_dim", "vocab_size")})
    with tempfile.TemporaryDirectory(prefix="convsynth-bench-") as tmp:
        t0 = time.perf_counter()
        directory = make_checkpoint(cfg, DTYPES[dtype], Path(tmp), tokenizer)
        r["checkpoint_bytes"] = warm_page_cache(directory)
        log(f"random checkpoint written in {time.perf_counter() - t0:.1f} s ({r['checkpoint_bytes'] / 1e6:.0f} MB)")
        cs_sys = Convsynth(directory, device, dtype, args.fast)
        hf_sys = Transformers(directory, device, dtype, tokenizer)
        r["together"] = not args.sequential and fits_together(r["checkpoint_bytes"], device)
        res, state = {}, {}
        if r["together"]:
            bench([cs_sys, hf_sys], plan, tokenizer, device, res, state)
        else:
            log("one model in memory at a time: convsynth first, then transformers")
            bench([cs_sys], plan, tokenizer, device, res, state)
            bench([hf_sys], plan, tokenizer, device, res, state)
        r["convsynth"], r["transformers"] = res["convsynth"], res["transformers"]
        r["decode_path"] = state.get("decode_path", "eager")
        r["hf_attn"] = r["transformers"]["attn_implementation"]
        if not args.no_peers:  # CTranslate2 fp32/int8 beside convsynth fp32/int8, from the same checkpoint
            from peers import bench_peers
            prompt = text_of_tokens(tokenizer, plan.decode_prompt)
            r["peers"] = bench_peers(directory, Path(tmp), device=device, dtype=dtype, fast=args.fast,
                                     threads=threads, prompt=prompt, prompt_ids=tokenizer.encode(prompt),
                                     prefill_ids=prefill_ids(tokenizer, max(plan.prefill_lengths)),
                                     tokens=max(plan.decode_tokens), repeats=plan.peer_repeats, log=log)
    if not args.no_spec:
        from spec_session import bench_spec_session
        r["speculation"] = bench_spec_session(max_new_tokens=plan.spec_tokens, repeats=plan.spec_repeats, log=log)
    if plan.bandwidth_again:  # again at the end: the best of both
        bw2 = measure_bandwidth(device, plan.bandwidth_repeats)
        bw = bw if bw["bytes_per_s"] >= bw2["bytes_per_s"] else bw2
    r["bandwidth"] = bw
    wb = r["convsynth"]["weights"]
    r["parameters"] = wb["parameters"]

    n = max(plan.decode_tokens)
    avg_ctx = plan.decode_prompt + n // 2
    need = wb["weight_bytes"] + wb["kv_bytes_per_position"] * avg_ctx
    floor_ms = need / bw["bytes_per_s"] * 1000
    cs, hf = r["convsynth"], r["transformers"]
    r["floor"] = dict(weight_bytes=wb["weight_bytes"], kv_bytes=wb["kv_bytes_per_position"] * avg_ctx,
                      avg_context=avg_ctx, floor_ms=floor_ms, decode_tokens=n,
                      convsynth_ms=cs["decode"][n]["ms_per_token"], transformers_ms=hf["decode"][n]["ms_per_token"],
                      convsynth_fraction=floor_ms / cs["decode"][n]["ms_per_token"],
                      transformers_fraction=floor_ms / hf["decode"][n]["ms_per_token"],
                      raw_fraction=floor_ms / cs["raw_loop"]["ms_per_token"],
                      generate_overhead_ms=cs["decode"][n]["ms_per_token"] - cs["raw_loop"]["ms_per_token"])
    r["session"] = {**cs["session"], **hf["session"]}
    turns = {k: [t["code"] for t in v["turns"]] for k, v in r["session"].items()}
    a, b, c = turns["convsynth Session"], turns["transformers re-encode"], turns["transformers cache reuse"]
    r["session_agreement"] = dict(reencode=sum(x == y for x, y in zip(a, b)), reuse=sum(x == y for x, y in zip(a, c)),
                                  b_vs_c=sum(x == y for x, y in zip(b, c)))
    r["decode_agreement"] = {k: first_difference(cs["decode"][k]["ids"], hf["decode"][k]["ids"]) for k in cs["decode"]}
    r["hardware"]["load_average_end"] = os.getloadavg()[0]
    r["wall_s"] = time.perf_counter() - T_START
    r["goals"] = goals(r)

    md = report(r)
    if "peers" in r:
        from peers import report_peers
        n_pre = max(plan.prefill_lengths)
        hf_row = dict(decode_tokens_per_s=hf["decode"][n]["decode_tokens_per_s"],
                      prefill_tokens_per_s=n_pre / hf["prefill_cache_s"][n_pre])
        md += "\n\n" + report_peers(r["peers"], hf_row, r.get("speculation"), config=args.config)
    if "speculation" in r:
        from spec_session import report_spec
        md += "\n\n" + report_spec(r["speculation"])
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    fast = "" if args.fast == "auto" else f"-{args.fast}"  # a chosen decode step gets its own files
    stem = str(args.out / f"{hw['slug']}-{args.config}-{dtype}{fast}{'-quick' if args.quick else ''}")
    Path(stem + ".md").write_text(md)
    plot(r, Path(stem + ".png"))
    for peer in r.get("peers", {}).get("systems", {}).values():
        peer.pop("ids", None)
    for sys_res in (cs, hf):
        for d in list(sys_res["decode"].values()) + [sys_res.get("raw_loop") or {}]:
            d.pop("ids", None)
    Path(stem + ".json").write_text(json.dumps(r, indent=1, default=str))
    log(f"wrote {stem}.md, .json and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
