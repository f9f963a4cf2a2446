"""The speculation benchmark: a multi-turn session on the packaged model whose steps repeat and edit earlier code
(a function defined again with a change, a list assigned again, the same print again), greedy, with speculative
decoding off, 'auto' and 'on' (prompt lookup drafts), alternating. Reports generated tokens per second of
generation time and checks that the three produce the same text.

    python benchmarks/spec_session.py [--threads N] [--max-new-tokens 64] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

STEPS = [
    "Define a function mean(values) that returns the average of a list of numbers.",
    "Define a function variance(values) that returns the variance of a list of numbers, using mean.",
    "Assign the list [2, 4, 4, 4, 5, 5, 7, 9] to a variable named data.",
    "Print mean(data) and variance(data).",
    "Define the function mean(values) again, returning 0 for an empty list.",
    "Define a function variance(values) that returns the variance of a list of numbers, using mean.",
    "Assign the list [2, 4, 4, 4, 5, 5, 7, 9] to a variable named data.",
    "Print mean(data) and variance(data).",
    "Assign the list [1, 3, 5, 7] to a variable named data.",
    "Print mean(data) and variance(data).",
]
MODES = ("off", "auto", "on")


def run_session(cg, mode: str, max_new_tokens: int) -> dict:
    import convsynth
    with convsynth.Session(cg, temperature=0, max_new_tokens=max_new_tokens, speculate=mode, cwd=None) as s:
        seconds, tokens, drafted, kept = 0.0, 0, 0, 0.0
        for instr in STEPS:
            t0 = time.perf_counter()
            turn = s.ask(instr)
            seconds += time.perf_counter() - t0
            st = turn.stats
            tokens += st.generated_tokens
            drafted += st.drafted_tokens
            kept += (st.acceptance_rate or 0.0) * st.drafted_tokens
        return dict(text=s.text, seconds=seconds, tokens=tokens, drafted=drafted,
                    acceptance_rate=kept / drafted if drafted else None)


def bench_spec_session(*, max_new_tokens: int = 64, repeats: int = 3, log=print) -> dict:
    import convsynth
    cg = convsynth.load()
    for mode in MODES:  # warm-up
        run_session(cg, mode, 8)
    runs = {m: [] for m in MODES}
    for _ in range(repeats):
        for m in MODES:
            runs[m].append(run_session(cg, m, max_new_tokens))
    out = {}
    for m, rs in runs.items():
        out[m] = dict(tokens=rs[-1]["tokens"], seconds=statistics.median(r["seconds"] for r in rs),
                      tokens_per_s=statistics.median(r["tokens"] / r["seconds"] for r in rs),
                      drafted=rs[-1]["drafted"], acceptance_rate=rs[-1]["acceptance_rate"])
    identical = all(r["text"] == runs["off"][0]["text"] for rs in runs.values() for r in rs)
    for m in MODES:
        out[m]["speedup"] = out[m]["tokens_per_s"] / out["off"]["tokens_per_s"]
    log("speculation session: " + ", ".join(f"{m} {v['tokens_per_s']:.1f} tok/s ({v['speedup']:.2f}x)"
                                            for m, v in out.items()) + f"; identical text: {identical}")
    return dict(modes=out, identical=identical, steps=len(STEPS), max_new_tokens=max_new_tokens, repeats=repeats,
                model=cg.name, decode_path=cg.decode_path)


def report_spec(d: dict) -> str:
    from report import f, table
    rows = [[m, v["tokens"], f(v["tokens_per_s"]), f"{v['speedup']:.2f}x",
             f"{v['acceptance_rate']:.0%}" if v["acceptance_rate"] is not None else "", v["drafted"]]
            for m, v in d["modes"].items()]
    md = ["## Speculative decoding: a repeating session", "",
          f"The packaged model ({d['decode_path']}), {d['steps']} greedy steps that repeat and edit earlier ones, "
          f"up to {d['max_new_tokens']} new tokens each; tokens per second of generation time, median of "
          f"{d['repeats']} alternating rounds. Same text with and without speculation: "
          f"**{'yes' if d['identical'] else 'NO'}**.", ""]
    md.append(table(["speculate", "tokens", "tok/s", "vs off", "drafts kept", "drafted"], rows))
    return "\n".join(md)


def main(argv=None) -> int:
    import torch
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    d = bench_spec_session(max_new_tokens=args.max_new_tokens, repeats=args.repeats,
                           log=lambda m: print(m, file=sys.stderr))
    print(report_spec(d))
    return 0 if d["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
