#!/usr/bin/env python
"""convsynth against transformers, in one process, on the same random-weight CodeGen checkpoint.

    python benchmarks/run.py [--config 350M|2B|tiny] [--device cpu|cuda] [--dtype float32|float16|bfloat16]
                             [--quick] [--out benchmarks/results]

Builds transformers' CodeGenForCausalLM with random weights from the preset config, saves it once to a temporary
directory (safetensors + tokenizer.json), then loads that directory with ``convsynth.load`` and with
``CodeGenForCausalLM.from_pretrained`` and measures: load time, prefill, greedy decode, decode against the machine's
memory-bandwidth floor (measured here), and an 8-turn MTPB-style session (convsynth's Session against transformers
re-encoding the history every turn and against transformers reusing its DynamicCache). Prints markdown tables and
writes ``<out>/<hardware>-<config>-<dtype>[-quick].{md,json,png}``. What each number means: benchmarks/README.md.

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

CONFIGS = {"tiny": None, "350M": "Salesforce/codegen-350M-mono", "2B": "Salesforce/codegen-2B-mono"}
TINY = dict(n_embd=64, n_layer=2, n_head=4, rotary_dim=8, vocab_size=51200)  # the tests' "tiny" shape
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
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


FULL = Plan(load_repeats=3, prefill_lengths=(60, 512), prefill_repeats=3, prefill_warmup=1, decode_prompt=60,
            decode_tokens=(20, 128), decode_repeats=3, session_tokens=32, session_repeats=2, bandwidth_repeats=5,
            bandwidth_again=True)
QUICK = Plan(load_repeats=1, prefill_lengths=(60, 512), prefill_repeats=1, prefill_warmup=0, decode_prompt=60,
             decode_tokens=(8, 24), decode_repeats=1, session_tokens=8, session_repeats=1, bandwidth_repeats=3,
             bandwidth_again=False)


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T_START:6.1f}s] {msg}", file=sys.stderr, flush=True)


T_START = time.perf_counter()


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def first_difference(a: list[int], b: list[int]) -> int | None:
    """Index of the first differing token, or None when the lists are equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


class FirstForward:
    """Times the end of a model's first forward pass (the prefill) after ``arm()``: the time to first token,
    measured the same way for both systems (a forward hook on the top module; synchronised on GPU)."""

    def __init__(self, module: torch.nn.Module, device: torch.device):
        self.device, self.t = device, None
        self.handle = module.register_forward_hook(self._hook)

    def arm(self) -> float:
        self.t = None
        return time.perf_counter()

    def _hook(self, module, args, output):
        if self.t is None:
            sync(self.device)
            self.t = time.perf_counter()

    def remove(self) -> None:
        self.handle.remove()


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


# ---- the two systems -----------------------------------------------------------------------------------------
class Convsynth:
    name = "convsynth"

    def __init__(self, directory: Path, device: torch.device, dtype: str, fast: str = "auto"):
        self.directory, self.device, self.dtype, self.fast = directory, device, dtype, fast
        self.cg = None

    def load(self):
        import convsynth
        self.cg = None
        release(self.device)
        self.cg = convsynth.load(self.directory, device=str(self.device), dtype=self.dtype, fast=self.fast)
        sync(self.device)
        self.hook = FirstForward(self.cg.model, self.device)

    def prefill_full(self, ids: torch.Tensor):
        return self.cg.model(ids)                                  # (1, T, V) fp32 logits

    def prefill_cache(self, ids: torch.Tensor):
        cache = self.cg.model.new_cache(1, capacity=ids.shape[1] + 1)
        return self.cg.model(ids, cache, last_only=True)          # what a generation's first step computes

    def generate(self, prompt: str, n: int) -> dict:
        t0 = self.hook.arm()
        comp = self.cg.generate(prompt, max_new_tokens=n, temperature=0.0, stop=None)
        sync(self.device)
        t1 = time.perf_counter()
        return dict(ids=comp.raw_ids[0], total=t1 - t0, ttft=self.hook.t - t0, finish=comp.finish_reasons[0])

    @torch.inference_mode()
    def raw_loop(self, prompt_ids: list[int], n: int) -> dict:
        """The bare model loop (forward + argmax, no generator, sampling or detokenizing): the floor of what
        ``generate`` could reach; the gap is per-step overhead in convsynth.generate."""
        model, dev = self.cg.model, self.device
        t0 = time.perf_counter()
        cache = model.new_cache(1, capacity=len(prompt_ids) + n)
        logits = model(torch.tensor([prompt_ids], device=dev), cache, last_only=True)[:, -1]
        tok = logits.argmax(-1)
        ids = [tok]
        sync(dev)
        t_first = time.perf_counter()
        fast = model.fast_decoder  # the same decode step generate uses (CUDA graphs on a GPU by default)
        for _ in range(n - 1):
            logits = fast.step(tok, cache) if fast else model(tok[:, None], cache, last_only=True)[:, -1]
            tok = logits.argmax(-1)
            ids.append(tok)
        out = torch.cat(ids).tolist()
        t1 = time.perf_counter()
        return dict(ids=out, total=t1 - t0, ttft=t_first - t0, finish="length")

    def session(self, instructions: list[str], n: int) -> list[dict]:
        from convsynth import Session
        s = Session(self.cg, stop=None, max_new_tokens=n, temperature=0.0)
        turns = []
        for instr in instructions:
            t0 = self.hook.arm()
            turn = s.ask(instr)
            sync(self.device)
            t1 = time.perf_counter()
            st = turn.stats
            turns.append(dict(ttft=self.hook.t - t0, total=t1 - t0, prompt_tokens=st.prefill_tokens + st.cached_tokens,
                              prefilled=st.prefill_tokens, generated=st.generated_tokens, code=turn.code,
                              internal_ttft=st.time_to_first_token))
        return turns

    def unload(self):
        self.hook.remove()
        self.cg = None
        release(self.device)


class Transformers:
    name = "transformers"

    def __init__(self, directory: Path, device: torch.device, dtype: str, tokenizer):
        self.directory, self.device, self.dtype, self.tok = directory, device, DTYPES[dtype], tokenizer
        self.model = None

    def load(self):
        from transformers import CodeGenForCausalLM
        self.model = None
        release(self.device)
        self.model = CodeGenForCausalLM.from_pretrained(self.directory, dtype=self.dtype).to(self.device).eval()
        sync(self.device)
        self.model.generation_config.pad_token_id = self.tok.eos_token_id
        self.attn = getattr(self.model.config, "_attn_implementation", None) or "eager"
        self.hook = FirstForward(self.model, self.device)

    def prefill_full(self, ids: torch.Tensor):
        return self.model(input_ids=ids, use_cache=False).logits

    def prefill_cache(self, ids: torch.Tensor):
        return self.model(input_ids=ids, use_cache=True, logits_to_keep=1).logits

    def _generate(self, ids: list[int], n: int, **kw):
        x = torch.tensor([ids], device=self.device)
        return self.model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=n,
                                   min_new_tokens=n, pad_token_id=self.tok.eos_token_id, **kw)

    def generate(self, prompt: str, n: int) -> dict:
        t0 = self.hook.arm()
        ids = self.tok.encode(prompt)
        out = self._generate(ids, n)[0, len(ids):].tolist()
        sync(self.device)
        t1 = time.perf_counter()
        return dict(ids=out, total=t1 - t0, ttft=self.hook.t - t0, finish="length")

    def session_reencode(self, prompts: list[str], n: int) -> list[dict]:
        """What the original MTPB harness does: generate() on the whole history every turn."""
        turns = []
        for p in prompts:
            t0 = self.hook.arm()
            ids = self.tok.encode(p)
            gen = self._generate(ids, n)[0, len(ids):].tolist()
            sync(self.device)
            t1 = time.perf_counter()
            turns.append(dict(ttft=self.hook.t - t0, total=t1 - t0, prompt_tokens=len(ids), prefilled=len(ids),
                              generated=len(gen), code=self.tok.decode(gen)))
        return turns

    def session_reuse(self, prompts: list[str], n: int) -> list[dict]:
        """transformers with its DynamicCache kept across turns: crop it to the longest common prefix of the ids
        it holds and the new prompt's ids (keeping one id to prefill), then generate() on the full prompt ids,
        which prefills only the part past the cache."""
        from convsynth.session import common_prefix
        cache, cached, turns = None, [], []
        for p in prompts:
            t0 = self.hook.arm()
            ids = self.tok.encode(p)
            keep = min(common_prefix(cached, ids), len(ids) - 1) if cache is not None else 0
            if keep == 0:
                cache = None                                       # nothing shared: start a fresh cache
            elif cache.get_seq_length() > keep:
                cache.crop(keep - cache.get_seq_length())          # a negative count: drop that many positions
            out = self._generate(ids, n, past_key_values=cache, return_dict_in_generate=True)
            cache = out.past_key_values
            seq = out.sequences[0].tolist()
            cached = seq[:cache.get_seq_length()]
            sync(self.device)
            t1 = time.perf_counter()
            turns.append(dict(ttft=self.hook.t - t0, total=t1 - t0, prompt_tokens=len(ids), prefilled=len(ids) - keep,
                              generated=len(seq) - len(ids), code=self.tok.decode(seq[len(ids):])))
        return turns

    def unload(self):
        self.hook.remove()
        self.model = None
        release(self.device)


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
            res[s.name]["weights"] = weight_bytes_per_token(s.cg.model, s.cg.config)
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


# ---- the report ----------------------------------------------------------------------------------------------
def f(x, digits=1):
    return "n/a" if x is None or x != x else f"{x:,.{digits}f}"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def goals(r: dict) -> list[list]:
    cfg, dev, dtype = r["config"], r["hardware"]["device"], r["dtype"]
    cs, hf, floor = r["convsynth"], r["transformers"], r["floor"]
    n = max(cs["decode"])
    ratio = cs["decode"][n]["decode_tokens_per_s"] / hf["decode"][n]["decode_tokens_per_s"]
    out = []
    if dev == "cpu" and cfg == "350M" and dtype == "float32":
        out.append(["CPU fp32 350M: decode reaches the bandwidth floor", ">= 85 %",
                    f"{floor['convsynth_fraction'] * 100:.0f} %", floor["convsynth_fraction"] >= 0.85])
        out.append(["CPU fp32 350M: decode no slower than transformers", ">= 1.0x", f"{ratio:.2f}x", ratio >= 1.0])
        worst = min(hf["prefill_full_s"][k] / cs["prefill_full_s"][k] for k in cs["prefill_full_s"])
        out.append(["CPU fp32 350M: prefill no slower than transformers", ">= 1.0x", f"{worst:.2f}x (worst length)",
                    worst >= 1.0])
    if dev == "cuda" and cfg == "350M" and dtype == "float16":
        out.append(["GPU fp16 350M batch 1: decode vs transformers eager generate", ">= 15x", f"{ratio:.1f}x",
                    ratio >= 15])
    if dev == "cuda" and cfg == "2B":
        out.append(["GPU 2B: decode reaches the HBM bandwidth floor", ">= 60 %",
                    f"{floor['convsynth_fraction'] * 100:.0f} %", floor["convsynth_fraction"] >= 0.60])
    s = r["session"]
    a, b, c = (s[k] for k in ("convsynth Session", "transformers re-encode", "transformers cache reuse"))
    out.append(["Multi-turn: TTFT at turn 8 vs turn 1 (convsynth)", "<= 1.5x", f"{a['ttft_last_over_first']:.2f}x",
                a["ttft_last_over_first"] <= 1.5])
    vs_b, vs_c = a["total_s"] / b["total_s"], a["total_s"] / c["total_s"]
    out.append(["Multi-turn: 8-turn total vs transformers re-encoding", "<= 0.7x", f"{vs_b:.2f}x", vs_b <= 0.7])
    out.append(["Multi-turn: 8-turn total vs transformers cache reuse", "<= 1.0x", f"{vs_c:.2f}x", vs_c <= 1.0])
    return [[g, t, m, "yes" if ok else "**no**"] for g, t, m, ok in out]


def report(r: dict) -> str:
    hw, cs, hf, plan, floor = r["hardware"], r["convsynth"], r["transformers"], r["plan"], r["floor"]
    where = hw.get("gpu") or hw["cpu"]
    busy = hw["load_average_start"] > 0.5 * hw["cores"] and hw["device"] == "cpu"
    md = [f"# convsynth benchmarks: {r['model_name']} config, random weights, {r['dtype']} on {hw['device']}", ""]
    md.append(f"- Hardware: **{where}**" + (f" (CUDA {hw['cuda']}), host CPU {hw['cpu']}" if hw.get("gpu") else "")
              + f"; {hw['cores']} CPU cores, torch.set_num_threads({hw['torch_threads']})"
              + (f"; {hw['ram_bytes'] / 2**30:.0f} GiB RAM" if hw.get("ram_bytes") else ""))
    md.append(f"- Software: torch {hw['torch']}, transformers {hw['transformers']} (eager generate, attention "
              f"`{r['hf_attn']}`), Python {hw['python']}, convsynth {hw['commit']}")
    md.append(f"- Run: {r['started']}, {'--quick' if r['quick'] else 'full'} mode, {r['wall_s']:.0f} s; "
              f"load average at start {hw['load_average_start']:.2f}"
              + (" **(busy machine: timings are noisy)**" if busy else ""))
    md.append(f"- Model: {r['parameters'] / 1e6:.1f} M parameters (n_embd {r['model']['n_embd']}, n_layer "
              f"{r['model']['n_layer']}, vocab {r['model']['vocab_size']}); medians of repeats after a warm-up; "
              "speed-up = transformers time / convsynth time (> 1: convsynth is faster)")
    md.append(f"- convsynth decode step: `{r.get('decode_path', 'eager')}` (fast.py; `--fast` to choose)")
    md.append("- Order: " + ("both models in memory, every repeat alternates convsynth / transformers" if r["together"]
                             else "convsynth first, then transformers (one model in memory at a time)"))
    md += ["", "## Load (same safetensors directory, warm page cache)", ""]
    md.append(table(["system", "load s", "repeats"], [["convsynth.load", f(cs["load_s"], 2), plan["load_repeats"]],
                    ["CodeGenForCausalLM.from_pretrained", f(hf["load_s"], 2), plan["load_repeats"]]]))
    md += ["", "## Prefill (batch 1, ms)", ""]
    rows = []
    for n in cs["prefill_full_s"]:
        for kind, key in (("all logits, no cache", "prefill_full_s"),
                          ("into a KV cache, last logits", "prefill_cache_s")):
            a, b = cs[key][n], hf[key][n]
            rows.append([n, kind, f(a * 1000), f(b * 1000), f(b / a, 2) + "x"])
    md.append(table(["prompt tokens", "what", "convsynth ms", "transformers ms", "speed-up"], rows))
    md += ["", f"## Greedy decode after a {plan['decode_prompt']}-token prompt (batch 1)", ""]
    rows = []
    for n in cs["decode"]:
        a, b = cs["decode"][n], hf["decode"][n]
        diff = first_difference(a["ids"], b["ids"])
        rows.append([n, f"{a['tokens'][-1]} / {b['tokens'][-1]}", f(a["decode_tokens_per_s"], 2),
                     f(b["decode_tokens_per_s"], 2), f(a["decode_tokens_per_s"] / b["decode_tokens_per_s"], 2) + "x",
                     f"{f(a['ttft_s'] * 1000)} / {f(b['ttft_s'] * 1000)}",
                     "yes" if diff is None else f"no (from token {diff})"])
    md.append(table(["new tokens", "made (cs / hf)", "convsynth tok/s", "transformers tok/s", "speed-up",
                     "TTFT ms (cs / hf)", "same greedy tokens"], rows))
    raw = cs["raw_loop"]
    md += ["", "convsynth's bare model loop (forward + argmax, no generator/detokenizer) at "
           f"{max(cs['decode'])} tokens: {f(raw['decode_tokens_per_s'], 2)} tok/s ({f(raw['ms_per_token'], 2)} "
           "ms/token) against "
           f"{f(cs['decode'][max(cs['decode'])]['ms_per_token'], 2)} ms/token through CodeGen.generate: "
           f"{f(floor['generate_overhead_ms'], 2)} ms/token of per-step overhead."]
    md += ["", "## Decode against the memory-bandwidth floor", ""]
    bw = r["bandwidth"]
    md.append(f"Bandwidth measured here, best of {bw['repeats']} over a {bw['tensor_bytes'] / 2**30:.0f} GiB tensor: "
              f"sum {bw['read_bytes_per_s'] / 1e9:.1f} GB/s, copy {bw['copy_bytes_per_s'] / 1e9:.1f} GB/s (read + "
              f"write); the floor uses {bw['bytes_per_s'] / 1e9:.1f} GB/s. A decode step reads every weight once "
              f"(one embedding row) = {floor['weight_bytes'] / 1e6:.0f} MB, plus the KV cache "
              f"({floor['kv_bytes'] / 1e6:.1f} MB at the average context of {floor['avg_context']} positions).")
    md.append("")
    md.append(table(["system", "ms/token", "floor ms/token", "fraction of the floor reached"], [
        ["convsynth", f(floor["convsynth_ms"], 2), f(floor["floor_ms"], 2),
         f"{floor['convsynth_fraction'] * 100:.0f} %"],
        ["convsynth bare loop", f(raw["ms_per_token"], 2), f(floor["floor_ms"], 2),
         f"{floor['raw_fraction'] * 100:.0f} %"],
        ["transformers", f(floor["transformers_ms"], 2), f(floor["floor_ms"], 2),
         f"{floor['transformers_fraction'] * 100:.0f} %"]]))
    s = r["session"]
    names = list(s)
    md += ["", f"## 8-turn session (MTPB format, {plan['session_tokens']} greedy tokens per turn)", ""]
    md.append("(a) convsynth `Session` (KV cache reused across turns), (b) transformers `generate()` on the whole "
              "history every turn (the original harness), (c) transformers reusing its `DynamicCache` (cropped to "
              "the common prefix). All three see the same prompts: the history holds (a)'s code. TTFT = start of "
              "the turn (tokenizing included) to the end of the prefill forward pass.")
    md.append("")
    rows = []
    for i in range(len(s[names[0]]["turns"])):
        t = [s[k]["turns"][i] for k in names]
        rows.append([i + 1, t[0]["prompt_tokens"]] + [x["prefilled"] for x in t] + [f(x["ttft_s"] * 1000) for x in t]
                    + [f(x["total_s"] * 1000) for x in t])
    md.append(table(["turn", "prompt tokens", "(a) prefilled", "(b) prefilled", "(c) prefilled", "(a) TTFT ms",
                     "(b) TTFT ms", "(c) TTFT ms", "(a) turn ms", "(b) turn ms", "(c) turn ms"], rows))
    md.append("")
    a_total = s[names[0]]["total_s"]
    md.append(table(["variant", "8-turn total s", "TTFT turn 8 / turn 1", "total vs (a)"], [
        [f"({'abc'[j]}) {k}", f(s[k]["total_s"], 2), f(s[k]["ttft_last_over_first"], 2) + "x",
         f(s[k]["total_s"] / a_total, 2) + "x"] for j, k in enumerate(names)]))
    agree = r["session_agreement"]
    md += ["", f"Greedy outputs: transformers (b) wrote the same code as convsynth in {agree['reencode']}/8 turns, "
           f"(c) in {agree['reuse']}/8, (b) and (c) agree in {agree['b_vs_c']}/8."]
    md += ["", "## Goals", ""]
    md.append(table(["goal", "target", "measured", "met"], r["goals"]))
    if hw["device"] == "cpu":
        md += ["", "GPU goals (350M fp16 decode >= 15x transformers; 2B decode >= 60 % of the HBM floor) need "
               "`--device cuda`; this run was on the CPU."]
    return "\n".join(md) + "\n"


def plot(r: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for j, (label, s) in enumerate(r["session"].items()):
        turns = range(1, len(s["turns"]) + 1)
        axes[0].plot(turns, [t["ttft_s"] * 1000 for t in s["turns"]], marker="o", label=f"({'abc'[j]}) {label}")
        axes[1].plot(turns, [t["total_s"] for t in s["turns"]], marker="o", label=f"({'abc'[j]}) {label}")
    axes[0].set(title="time to first token per turn", xlabel="turn", ylabel="ms", ylim=(0, None))
    axes[1].set(title="time per turn", xlabel="turn", ylabel="s", ylim=(0, None))
    axes[0].legend(fontsize=8)
    where = r["hardware"].get("gpu") or r["hardware"]["cpu"]
    fig.suptitle(f"{r['model_name']} (random weights), {r['dtype']}, {where}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    p.add_argument("--fast", choices=["auto", "cuda_graphs", "compile", "eager"], default="auto",
                   help="convsynth's decode step (default auto: CUDA graphs on a GPU, eager on CPU)")
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
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = str(args.out / f"{hw['slug']}-{args.config}-{dtype}{'-quick' if args.quick else ''}")
    Path(stem + ".md").write_text(md)
    plot(r, Path(stem + ".png"))
    for sys_res in (cs, hf):
        for d in list(sys_res["decode"].values()) + [sys_res.get("raw_loop") or {}]:
            d.pop("ids", None)
    Path(stem + ".json").write_text(json.dumps(r, indent=1, default=str))
    log(f"wrote {stem}.md, .json and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
