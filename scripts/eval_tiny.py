"""Evaluate convsynth-tiny (or any CodeGen checkpoint directory) the way the model card reports it.

    python scripts/eval_tiny.py [--model convsynth/models/convsynth-tiny] [--work .cache/tiny]

- held-out loss / perplexity on the held-out source files (token windows from scripts/train_tiny.py's data stage),
  over all tokens and over the tokens of the model's active output vocabulary;
- greedy completions (max 96 new tokens, truncated with convsynth.stops.truncate_codegen) for the fixed prompt
  list in scripts/tiny_prompts.py: parse rate of ast.parse(prompt + completion);
- execution checks of simple functions (add(a, b) etc.), each in a subprocess with a timeout;
- multi-turn sessions in the MTPB layout;
- name copying by word frequency: can the model write `harvest = ...` for "Set harvest to 7."? 20 words from each
  band of the tokenizer's word ranking (the words of scripts/tiny_steps.py's open vocabulary, by token id).
Writes eval.json next to the model; MODEL_CARD.md is written by hand from it and from scripts/eval_steps.py.
"""
from __future__ import annotations

import argparse
import ast
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import convsynth  # noqa: E402
from convsynth.stops import truncate_codegen  # noqa: E402
import tiny_prompts as P  # noqa: E402

MAX_NEW = 96


def complete(cg, prompt: str) -> str:
    return truncate_codegen(cg.complete(prompt, max_new_tokens=MAX_NEW, temperature=0, stop="codegen"))


def parses(src: str) -> bool:
    try:
        ast.parse(src)
        return True
    except (SyntaxError, ValueError):
        return False


def run_python(src: str, timeout: float = 10.0) -> tuple[bool, str]:
    try:
        r = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, "timeout"
    return r.returncode == 0, (r.stdout + r.stderr)[-300:]


@torch.no_grad()
def heldout_loss(model, arr: np.ndarray, ctx: int = 256, windows: int = 64, active=None) -> dict:
    """Mean next-token loss over fixed, evenly spaced windows of held-out text."""
    starts = np.linspace(0, len(arr) - ctx - 2, windows).astype(np.int64)
    tot_all = tot_act = 0.0
    n_all = n_act = 0
    for s in starts:
        w = torch.from_numpy(arr[s:s + ctx + 1].astype(np.int64))[None]
        logits = model(w[:, :-1])[0]
        nll = F.cross_entropy(logits, w[0, 1:], reduction="none")
        tot_all += nll.sum().item()
        n_all += nll.numel()
        if active is not None:
            m = active[w[0, 1:]]
            tot_act += nll[m].sum().item()
            n_act += int(m.sum())
    out = dict(tokens=n_all, loss=tot_all / n_all, ppl=math.exp(tot_all / n_all))
    if active is not None:
        out.update(active_tokens=n_act, loss_active=tot_act / n_act, ppl_active=math.exp(tot_act / n_act))
    return out


NAME_BANDS = ((0, 500), (500, 2000), (2000, 5000), (5000, 10000), (10000, None))
NAME_FORMS = ("Set {w} to 7.", "Assign the list [4, 2, 9] to {w}.", "Store the string 'red fox' in {w}.")


def name_copy(cg, per_band: int = 20, seed: int = 5) -> dict:
    """Share of instructions whose code starts with the instruction's name, per frequency band of the name.
    Phase 6 (the v4 generator) copied 19 of 20 of the 500 commonest words and none past rank 5,000."""
    import random
    from tiny_steps import OPEN_LOWER
    rng, out = random.Random(seed), {}
    for lo, hi in NAME_BANDS:
        words = rng.sample(OPEN_LOWER[lo:hi], per_band)
        misses = []
        for i, w in enumerate(words):
            prompt = P.PREAMBLE + "# " + NAME_FORMS[i % len(NAME_FORMS)].format(w=w) + "\n"
            first = cg.complete(prompt, max_new_tokens=16, temperature=0).strip().split("\n")[0]
            if not first.startswith(w + " ="):
                misses.append(f"{w} -> {first[:30]}")
        out[f"{lo}-{hi or len(OPEN_LOWER)}"] = dict(copied=per_band - len(misses), total=per_band, misses=misses[:5])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "convsynth" / "models" / "convsynth-tiny"))
    ap.add_argument("--work", default=str(ROOT / ".cache" / "tiny"))
    ap.add_argument("--out", default=None, help="default: <model>/eval.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    cg = convsynth.load(args.model, device="cpu", dtype="float32")
    result = dict(model=_display_path(args.model), max_new_tokens=MAX_NEW, decoding="greedy (temperature=0), stop='codegen', "
                  "then truncate_codegen")

    work = Path(args.work)
    if (work / "heldout.npy").exists():
        model = cg.module
        active = (model.lm_head.bias > -50).cpu()
        result["heldout_files"] = heldout_loss(model, np.load(work / "heldout.npy"), active=active)
        result["heldout_templates"] = heldout_loss(model, np.load(work / "heldout_templates.npy"), windows=32,
                                                   active=active)
    else:
        result["heldout_files"] = f"skipped: {work / 'heldout.npy'} not found (run train_tiny.py data)"

    rows = []
    for name, prompt in P.PROMPTS:
        comp = complete(cg, prompt)
        ok = parses(prompt + comp)
        rows.append(dict(name=name, prompt=prompt, completion=comp, parses=ok, nonempty=bool(comp.strip())))
    n = len(rows)
    result["prompts"] = n
    result["parse_rate"] = sum(r["parses"] for r in rows) / n
    result["parse_rate_nonempty"] = sum(r["parses"] and r["nonempty"] for r in rows) / n
    for group, names in (("functions", {a for a, _ in P.FUNCTIONS}), ("turns", {a for a, _ in P.TURNS})):
        sel = [r for r in rows if r["name"] in names]
        result[f"parse_rate_{group}"] = sum(r["parses"] for r in sel) / len(sel)
        result[f"parse_rate_nonempty_{group}"] = sum(r["parses"] and r["nonempty"] for r in sel) / len(sel)

    checks = []
    for name, prompt, test in P.CHECKS:
        comp = complete(cg, prompt)
        ok, msg = run_python(prompt + comp + "\n\n" + test + "\n")
        checks.append(dict(name=name, completion=comp, passed=ok, error="" if ok else msg))
    result["checks_passed"] = sum(c["passed"] for c in checks)
    result["checks_total"] = len(checks)

    sessions = []
    for instrs in P.SESSIONS:
        prompt = P.PREAMBLE
        turns = []
        for instr in instrs:
            prompt += f"# {instr}\n"
            code = complete(cg, prompt)
            turns.append(dict(instruction=instr, code=code))
            prompt += code.rstrip("\n") + "\n\n"
        ok, out = run_python(prompt)
        sessions.append(dict(turns=turns, program=prompt, runs=ok, output=out.strip()))
    result["sessions"] = sessions
    result["name_copy"] = name_copy(cg)
    result["sessions_run_ok"] = sum(s["runs"] for s in sessions)
    result["completions"] = rows
    result["checks"] = checks
    result["eval_seconds"] = round(time.time() - t0, 1)
    out = Path(args.out) if args.out else Path(args.model) / "eval.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    summary = {k: v for k, v in result.items() if k not in ("completions", "checks", "sessions")}
    summary["name_copy"] = {band: f"{v['copied']}/{v['total']}" for band, v in result["name_copy"].items()}
    print(json.dumps(summary, indent=1))
    for c in checks:
        print(f"--- check {c['name']}: {'PASS' if c['passed'] else 'FAIL'}\n{c['completion']}")
    for s in sessions:
        print("--- session (runs: %s, output: %r)\n%s" % (s["runs"], s["output"], s["program"]))



def _display_path(path) -> str:
    """The model path relative to the repository when it is inside it (shipped files carry no build-machine paths)."""
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else p.name


if __name__ == "__main__":
    main()
