"""Evaluate convsynth-tiny (or any CodeGen checkpoint directory) the way the model card reports it.

    python scripts/eval_tiny.py [--model convsynth/models/convsynth-tiny] [--work .cache/tiny]

- held-out loss / perplexity on the held-out source files (token windows from scripts/train_tiny.py's data stage),
  over all tokens and over the tokens of the model's active output vocabulary;
- greedy completions (max 96 new tokens, truncated with convsynth.stops.truncate_codegen) for the fixed prompt
  list in scripts/tiny_prompts.py: parse rate of ast.parse(prompt + completion);
- execution checks of simple functions (add(a, b) etc.), each in a subprocess with a timeout;
- multi-turn sessions in the MTPB layout.
Writes eval.json next to the model.
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "convsynth" / "models" / "convsynth-tiny"))
    ap.add_argument("--work", default=str(ROOT / ".cache" / "tiny"))
    ap.add_argument("--out", default=None, help="default: <model>/eval.json")
    ap.add_argument("--card-only", action="store_true", help="only (re)write MODEL_CARD.md from eval.json")
    ap.add_argument("--no-card", action="store_true", help="do not write MODEL_CARD.md")
    args = ap.parse_args()
    if args.card_only:
        print(write_card(Path(args.model), Path(args.work)))
        return
    torch.set_num_threads(1)
    t0 = time.time()
    cg = convsynth.load(args.model, device="cpu", dtype="float32")
    result = dict(model=_display_path(args.model), max_new_tokens=MAX_NEW, decoding="greedy (temperature=0), stop='codegen', "
                  "then truncate_codegen")

    work = Path(args.work)
    if (work / "heldout.npy").exists():
        model = cg.model
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
    result["sessions_run_ok"] = sum(s["runs"] for s in sessions)
    result["completions"] = rows
    result["checks"] = checks
    result["eval_seconds"] = round(time.time() - t0, 1)
    out = Path(args.out) if args.out else Path(args.model) / "eval.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    summary = {k: v for k, v in result.items() if k not in ("completions", "checks", "sessions")}
    print(json.dumps(summary, indent=1))
    for c in checks:
        print(f"--- check {c['name']}: {'PASS' if c['passed'] else 'FAIL'}\n{c['completion']}")
    for s in sessions:
        print("--- session (runs: %s, output: %r)\n%s" % (s["runs"], s["output"], s["program"]))
    if not args.no_card and not args.out and _train_info_path(Path(args.model), work):
        print(write_card(Path(args.model), work))



# ------------------------------------------------------------------------------------------------- model card
CARD = """# convsynth-tiny

**A toy.** An ~18M-parameter model with exactly the architecture and tokenizer of Salesforce's CodeGen, trained
for about {train_min:.0f} minutes on 2 CPU cores. It ships inside convsynth so that the package, its notebooks,
demos and tests run offline with no download. It writes Python-looking text that usually parses, answers a
`# instruction` turn with a short statement in the MTPB layout, and gets the simplest functions of its templated
training data right ({checks_passed}/{checks_total} execution checks below); it does not follow instructions beyond
their surface form and does not solve programming problems (its MTPB score is in convsynth's README). **Real work
uses the Salesforce checkpoints** (`convsynth.load("Salesforce/codegen-350M-mono")` and larger).

## Architecture and files
- CodeGen (`model_type "codegen"`, `CodeGenForCausalLM` state-dict names): n_embd {n_embd}, n_layer {n_layer},
  n_head {n_head} (head size {head_dim}), rotary_dim {rotary_dim}, n_inner 4 * n_embd = {inner}, gelu_new,
  n_positions {n_positions} in the config (trained on windows of {ctx} tokens), vocab_size 51200 (embedding and
  lm_head have 51200 rows, as in CodeGen).
- {params:,} parameters; `model.safetensors` is fp16, {size_mb:.1f} MB. `tokenizer.json` is a copy of convsynth's
  packaged CodeGen tokenizer (GPT-2 byte-level BPE + CodeGen's 38 whitespace tokens, 50295 ids, EOS 50256).
- **Active vocabulary.** To make training affordable on a CPU, the output layer was trained only over the
  {active:,} token ids that occur at least {min_count} times in the training corpus (plus EOS; they cover
  {coverage:.2%} of training tokens). In `lm_head` every other row has weight 0 and bias -100, so those ids are
  never generated. Input embeddings were trained for the {input_vocab:,} ids that occur at all; the remaining
  `wte` rows keep their seeded N(0, 0.02) initialisation.

## Data
All offline, from files on the build machine, permissive licences only (checked from each distribution's
licence metadata: MIT / BSD / Apache / PSF / ISC; MPL and GPL packages were skipped).
- Python {pyver} standard library `.py` files (PSF-2.0), without test directories, idlelib tests, encodings and
  files over 200 kB: {std_files} files.
- `.py` files of installed pure-Python packages (tests, vendored code and files over 200 kB left out, at most
  2.5 MB per package): {pkg_list}.
- In total {files_total:,} files; {files_heldout} of them (~2%, chosen by a hash of the path relative to the
  library root) are held out for evaluation, {files_train:,} are used for training ({chars_train:,} characters).
- Structured documents derived from the training files: {snips:,} mined instruction snippets (a single
  `# comment` line that opens a block of code, re-laid as a top-level MTPB turn `# Instruction.\\n<dedented
  code>\\n\\n`), {progs:,} short programs of consecutive snippets behind the MTPB preamble
  `# Import libraries.\\n\\nimport numpy as np\\n\\n`, and {docfns:,} functions with docstrings (dedented).
- {templ:,} templated documents written for this project (`scripts/tiny_templates.py`): multi-turn programs in
  the MTPB layout (define a list/string/number, transform it, print it) and tiny docstring'd functions (sum,
  product, is-even, reverse, ...). Several eval prompts ask for the same simple tasks with other names and
  phrasings, so the function checks below are in-distribution for this toy. No MTPB or HumanEval text is used.
- Phase 2 adds a drill set (`tiny_templates.function_documents`, stage `drill`): {drill_docs:,} documents,
  {drill_tokens:,} tokens, three quarters tiny functions (60% of those with the docstring and comment removed, so
  the signature alone says what to do, as in `def add(a, b):`) and one quarter templated multi-turn programs.
- Tokens: {tok_code:,} from source files, {tok_struct:,} from the structured documents (each document ends
  with EOS); held out: {tok_held:,} tokens. Training saw about {tok_seen:,} tokens ({steps} steps of {batch} x
  {ctx}), far less than one epoch of the source files.

## Training
Two phases. The second starts from the first's exported fp16 weights (`--init-from`, the files shipped after
phase 1) with a fresh optimizer.{phase_notes}

| phase | steps | wall time | peak lr, warmup | schedule | batch windows: code / structured / drill |
|---|---|---|---|---|---|
{phase_rows}

Both: AdamW (betas 0.9/0.95, weight decay {wd} on matrices, none on embeddings, biases, norms), cosine decay to
10% of the peak, gradient clipping 1.0, batch {batch} x {ctx} tokens, fp32 (bf16 autocast was measured and is
several times slower on this CPU, which lacks AVX512-BF16), seed {seed} (weights: `CodeGenModel.init_weights(seed)`;
data order: numpy generator with the same seed). Hardware: {cpu}, 2 cores (shared with other work during phase 1),
no GPU was lent; torch {torch_version}, Python {pyver}. Phase 1's schedule followed the wall clock on a shared
machine, so a rerun gives a similar model, not a bit-identical one; phase 2 has a fixed step count.
Held-out loss during phase 2 (active-vocabulary tokens, 12 fixed windows): {phase2_curve}.

| | loss (nats/token) | perplexity |
|---|---|---|
| training (EMA of batch loss, last step; most windows are structured documents, which are easy) | {train_loss:.3f} | {train_ppl:.1f} |
| held-out files, all tokens | {held_loss:.3f} | {held_ppl:.1f} |
| held-out files, active-vocabulary tokens only ({held_act_frac:.2%} of them) | {held_loss_act:.3f} | {held_ppl_act:.1f} |
| held-out templated documents | {templ_loss:.3f} | {templ_ppl:.1f} |

(Held-out losses from `scripts/eval_tiny.py` on the exported fp16 weights run in fp32: 256-token windows. The
"all tokens" row includes the ids outside the active vocabulary, which the model can never predict.)

## Evaluation (`scripts/eval_tiny.py`)
Greedy decoding, at most {max_new} new tokens, `stop='codegen'`, completion truncated with
`convsynth.stops.truncate_codegen`, on the {n_prompts} fixed prompts of `scripts/tiny_prompts.py`
({n_fn} function signatures, {n_turn} `# instruction` turns in the MTPB layout).
- `ast.parse(prompt + completion)` succeeds: **{parse:.0%}** ({parse_fn:.0%} of function prompts,
  {parse_turn:.0%} of turn prompts). Counting an empty completion as a failure: {parse_ne:.0%}.
- Execution checks of simple functions: {checks_passed}/{checks_total} pass ({check_names}).
- `def add(a, b):` gives:
```python
def add(a, b):
{add_completion}
```
- Multi-turn sessions (MTPB layout: each turn appends `# <instruction>\\n`, greedy, truncate, append the code and a
  blank line): {sessions_ok}/{n_sessions} of the resulting programs run. Example:
```python
{session_program}
```
Output: `{session_output}`

Further example completions (prompt, then completion):
{examples}

## Reproduce
```
python scripts/train_tiny.py data                  # ~2 min: collect, mine, tokenize into .cache/tiny
python scripts/train_tiny.py train --minutes 30    # phase 1 (add --steps {phase1_steps} for a fixed schedule)
python scripts/train_tiny.py export                # phase 1 -> convsynth/models/convsynth-tiny/
python scripts/train_tiny.py drill                 # the phase-2 drill set
python scripts/train_tiny.py train {phase2_cmd}
python scripts/train_tiny.py export                # -> convsynth/models/convsynth-tiny/
python scripts/eval_tiny.py                        # -> eval.json
python scripts/eval_tiny.py --card-only            # -> this file
```
The data depend on the installed Python and package versions listed above; `file_list.json` and `data_stats.json`
in the work directory (`.cache/tiny`, not shipped) record the exact files and counts of a build.

## Limitations
Trained on ~{tok_seen_m:.1f}M tokens: it repeats itself, invents names, and ignores most of what an instruction
asks beyond its surface form. Use it to exercise code paths (loading, generation, sessions, the UI), not to
measure anything about CodeGen. Licence of the weights: the training data are PSF/MIT/BSD/Apache/ISC licensed
source files; the weights are distributed under convsynth's licence (BSD-3-Clause).
"""


def write_card(model_dir: Path, work: Path) -> Path:
    import platform
    import re as _re
    ev = json.loads((model_dir / "eval.json").read_text())
    ds = json.loads((work / "data_stats.json").read_text())
    ti = json.loads(_train_info_path(model_dir, work).read_text())
    cfg = json.loads((model_dir / "config.json").read_text())
    a = ti["args"]
    last = ti["history"][-1] if ti["history"] else dict(train_ema=float("nan"))
    counts = np.load(work / "counts.npy")
    active = np.nonzero(counts >= a["min_count"])[0]
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    fam = _re.search(r"cpu family\s*:\s*(\d+)", Path("/proc/cpuinfo").read_text())
    cpu += f" (x86-64, cpu family {fam.group(1)})" if fam else ""
    std = next(r for r in ds["sources"] if r["source"] == "python-stdlib")
    pkgs = [r for r in ds["sources"] if r["source"] != "python-stdlib" and r.get("files")]
    pkg_list = ", ".join(f"{r['source']} {r['version']} ({r['licence'][:40]}, {r['files']})" for r in pkgs)
    rows = {r["name"]: r for r in ev["completions"]}
    add = next(c for c in ev["checks"] if c["name"] == "add")
    s0 = ev["sessions"][0]
    ex_names = ["is_even", "reverse_string", "factorial", "sum_list", "upper", "evens"]
    examples = "\n".join(f"```python\n{rows[n]['prompt']}{rows[n]['completion'].rstrip()}\n```"
                         for n in ex_names if n in rows)
    hf, ht = ev["heldout_files"], ev["heldout_templates"]
    size = (model_dir / "model.safetensors").stat().st_size
    n_params = sum(int(np.prod(s)) for s in _shapes(model_dir / "model.safetensors"))
    phases = ti.get("phases") or [dict(step=ti["step"], seconds=ti["seconds"], args=a)]
    phase_rows = []
    for i, ph in enumerate(phases, 1):
        pa = ph["args"]
        drill = pa.get("drill_frac", 0.0)
        code = 1 - pa["struct_frac"] - drill
        sched = f"fixed {pa['steps']} steps" if pa.get("steps") else f"wall clock ({pa['minutes']:g} min budget)"
        phase_rows.append(f"| {i} | {ph['step']} | {ph['seconds'] / 60:.1f} min | {pa['lr']:g}, {pa['warmup']} | {sched} "
                          f"| {code:.0%} / {pa['struct_frac']:.0%} / {drill:.0%} |")
    last_args = phases[-1]["args"]
    phase2_cmd = (f"--init-from convsynth/models/convsynth-tiny --steps {last_args['steps']} --lr {last_args['lr']:g} --warmup {last_args['warmup']} "
                  f"--drill-frac {last_args.get('drill_frac', 0):g} --struct-frac {last_args['struct_frac']:g} "
                  f"--eval-every {last_args['eval_every']}"
                  if len(phases) > 1 else "(no second phase)")
    curve = ", ".join(f"{h['heldout']:.2f} " + ("(final, 40 windows)" if h.get("final") else f"(step {h['step']})")
                      for h in ti["history"]) or "n/a"
    drill_tokens = int(np.load(work / "train_drill.npy", mmap_mode="r").shape[0]) if (work / "train_drill.npy").exists() else 0
    text = CARD.format(
        phase_notes="".join(" " + ph["note"] for ph in phases if ph.get("note")),
        phase_rows="\n".join(phase_rows), phase1_steps=phases[0]["step"], phase2_cmd=phase2_cmd, phase2_curve=curve,
        drill_docs=60000 if drill_tokens else 0, drill_tokens=drill_tokens,
        train_min=ti["seconds"] / 60, n_embd=cfg["n_embd"], n_layer=cfg["n_layer"], n_head=cfg["n_head"],
        head_dim=cfg["n_embd"] // cfg["n_head"], rotary_dim=cfg["rotary_dim"], inner=4 * cfg["n_embd"],
        n_positions=cfg["n_positions"], ctx=a["ctx"], params=n_params, size_mb=size / 1e6, active=len(active),
        min_count=a["min_count"], coverage=counts[active].sum() / counts.sum(), input_vocab=ti["input_vocab"],
        pyver=platform.python_version(), std_files=std["files"], pkg_list=pkg_list, files_total=ds["files_total"],
        files_heldout=ds["files_heldout"], files_train=ds["files_train"], chars_train=ds["chars_train_files"],
        snips=ds["mined_instruction_snippets"], progs=ds["mined_mtpb_programs"], docfns=ds["docstring_functions"],
        templ=ds["templated_documents"], tok_code=ds["tokens_train_code_files"],
        tok_struct=ds["tokens_train_structured"], tok_held=ds["tokens_heldout"], struct_pct=100 * a["struct_frac"],
        tok_seen=ti["step"] * a["batch"] * a["ctx"], tok_seen_m=ti["step"] * a["batch"] * a["ctx"] / 1e6,
        steps=ti["step"], wd=a["wd"], lr=a["lr"], warmup=a["warmup"], batch=a["batch"], seed=a["seed"], cpu=cpu,
        torch_version=torch.__version__, train_loss=last["train_ema"], train_ppl=math.exp(last["train_ema"]),
        held_loss=hf["loss"], held_ppl=hf["ppl"], held_loss_act=hf["loss_active"], held_ppl_act=hf["ppl_active"],
        held_act_frac=hf["active_tokens"] / hf["tokens"], templ_loss=ht["loss"], templ_ppl=ht["ppl"],
        max_new=ev["max_new_tokens"], n_prompts=ev["prompts"], n_fn=len(P.FUNCTIONS), n_turn=len(P.TURNS),
        parse=ev["parse_rate"], parse_fn=ev["parse_rate_functions"], parse_turn=ev["parse_rate_turns"],
        parse_ne=ev["parse_rate_nonempty"], checks_passed=ev["checks_passed"], checks_total=ev["checks_total"],
        check_names=", ".join(f"{c['name']} {'pass' if c['passed'] else 'fail'}" for c in ev["checks"]),
        add_completion=add["completion"].rstrip() or "    (empty)", sessions_ok=ev["sessions_run_ok"],
        n_sessions=len(ev["sessions"]), session_program=s0["program"].rstrip(),
        session_output=s0["output"][-200:].replace("`", "'"), examples=examples)
    out = model_dir / "MODEL_CARD.md"
    out.write_text(text)
    return out


def _display_path(path) -> str:
    """The model path relative to the repository when it is inside it (shipped files carry no build-machine paths)."""
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else p.name


def _train_info_path(model_dir: Path, work: Path) -> Path | None:
    """train_info.json: written next to the weights by `train_tiny.py export` (and into the work directory)."""
    for p in (model_dir / "train_info.json", work / "train_info.json"):
        if p.exists():
            return p
    return None


def _shapes(path: Path):
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        return [f.get_slice(k).get_shape() for k in f.keys()]


if __name__ == "__main__":
    main()
