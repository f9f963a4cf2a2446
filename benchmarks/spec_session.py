"""The speculation benchmark: a multi-turn session on the packaged model whose steps repeat and edit earlier code
(a function defined again with a change, a list assigned again, the same print again), greedy, with speculative
decoding off, 'auto' and 'on' (prompt lookup drafts), alternating. Reports generated tokens per second of
generation time and checks that the three produce the same text. ``--session fresh`` runs ten steps that repeat
nothing instead: what 'auto' costs where prompt lookup has little to draft (issue 14: never more than a few
percent slower than plain decoding).

    python benchmarks/spec_session.py [--session repeating|fresh] [--threads N] [--max-new-tokens 64] [--repeats 3]
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
# Ten steps that share no code: each asks for something new.
FRESH = [
    "Write a function that returns the factorial of n.",
    "Create a dictionary that maps three city names to their populations.",
    "Read a line of text from the string 'alpha beta gamma' and split it into words.",
    "Define a class Point with x and y attributes and a method that returns its distance to the origin.",
    "Generate the first ten square numbers with a list comprehension.",
    "Count how often each character occurs in the word 'mississippi'.",
    "Sort a list of tuples by their second element.",
    "Open a file called notes.txt for writing and write one line to it.",
    "Compute the mean and the standard deviation of an array with numpy.",
    "Print the current date in ISO format.",
]
SESSIONS = {"repeating": STEPS, "fresh": FRESH}
MODES = ("off", "auto", "on")


def run_session(cg, mode: str, max_new_tokens: int, steps: list[str] = STEPS) -> dict:
    import convsynth
    with convsynth.Session(cg, temperature=0, max_new_tokens=max_new_tokens, speculate=mode, cwd=None) as s:
        seconds, tokens, drafted, kept = 0.0, 0, 0, 0.0
        for instr in steps:
            t0 = time.perf_counter()
            turn = s.ask(instr)
            seconds += time.perf_counter() - t0
            st = turn.stats
            tokens += st.generated_tokens
            drafted += st.drafted_tokens
            kept += (st.acceptance_rate or 0.0) * st.drafted_tokens
        return dict(text=s.text, seconds=seconds, tokens=tokens, drafted=drafted,
                    acceptance_rate=kept / drafted if drafted else None)


def bench_spec_session(*, max_new_tokens: int = 64, repeats: int = 3, session: str = "repeating",
                       log=print) -> dict:
    import convsynth
    cg = convsynth.load()
    steps = SESSIONS[session]
    for mode in MODES:  # warm-up
        run_session(cg, mode, 8, steps)
    runs = {m: [] for m in MODES}
    for _ in range(repeats):
        for m in MODES:
            runs[m].append(run_session(cg, m, max_new_tokens, steps))
    out = {}
    for m, rs in runs.items():
        out[m] = dict(tokens=rs[-1]["tokens"], seconds=statistics.median(r["seconds"] for r in rs),
                      tokens_per_s=statistics.median(r["tokens"] / r["seconds"] for r in rs),
                      drafted=rs[-1]["drafted"], acceptance_rate=rs[-1]["acceptance_rate"])
    identical = all(r["text"] == runs["off"][0]["text"] for rs in runs.values() for r in rs)
    for m in MODES:
        out[m]["speedup"] = out[m]["tokens_per_s"] / out["off"]["tokens_per_s"]
    log(f"speculation session ({session}): " + ", ".join(f"{m} {v['tokens_per_s']:.1f} tok/s ({v['speedup']:.2f}x)"
                                            for m, v in out.items()) + f"; identical text: {identical}")
    return dict(modes=out, identical=identical, steps=len(steps), session=session, max_new_tokens=max_new_tokens,
                repeats=repeats, model=cg.name, decode_path=cg.decode_path)


def report_spec(d: dict) -> str:
    from report import f, table
    rows = [[m, v["tokens"], f(v["tokens_per_s"]), f"{v['speedup']:.2f}x",
             f"{v['acceptance_rate']:.0%}" if v["acceptance_rate"] is not None else "", v["drafted"]]
            for m, v in d["modes"].items()]
    fresh = d.get("session") == "fresh"
    md = [f"## Speculative decoding: a {'fresh' if fresh else 'repeating'} session", "",
          f"The packaged model ({d['decode_path']}), {d['steps']} greedy steps "
          f"{'that repeat nothing' if fresh else 'that repeat and edit earlier ones'}, "
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
    p.add_argument("--session", choices=list(SESSIONS), default="repeating")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    d = bench_spec_session(max_new_tokens=args.max_new_tokens, repeats=args.repeats, session=args.session,
                           log=lambda m: print(m, file=sys.stderr))
    print(report_spec(d))
    return 0 if d["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
