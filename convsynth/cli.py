"""The ``convsynth`` command: complete, demo, mtpb, convert, export, serve, bench."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .flags import check_output, engine_flags, load_model, model_flags


def _sampling_flags(p: argparse.ArgumentParser) -> None:
    model_flags(p)
    engine_flags(p)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.2, help="0 means greedy")
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)


def _sampling(args) -> dict:
    return dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                top_k=args.top_k, repetition_penalty=args.repetition_penalty, seed=args.seed)


def cmd_complete(args) -> int:
    from .errors import UsageError
    from .stops import make_stop
    try:
        args.prompt.encode("utf-8")  # undecodable bytes in argv arrive as lone surrogates
    except UnicodeEncodeError:
        raise UsageError("the prompt is not valid UTF-8 text; convert it (e.g. with iconv) and try again.") from None
    stop = args.stop if args.stop else None
    if stop and len(stop) == 1 and stop[0] == "codegen":
        stop = "codegen"
    make_stop(stop)  # a bad regex is refused before the model loads
    from .checkpoint import parse_device, parse_dtype
    parse_dtype(args.dtype, parse_device(args.device))
    cg = load_model(args)
    sys.stdout.write(args.prompt)
    sys.stdout.flush()
    for piece in cg.stream(args.prompt, stop=stop, **_sampling(args)):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


DEMO_TURNS = [
    "Assign the list of numbers [3, 1, 4, 1, 5, 9, 2, 6] to a variable named numbers.",
    "Sort the numbers and assign the result to sorted_numbers.",
    "Compute the sum of the numbers and assign it to total.",
    "Print the sorted numbers and the total.",
]


def cmd_demo(args) -> int:
    """The main job: a multi-turn session on a model, each step generated, run in the sandbox and shown."""
    import convsynth
    check_output("--save", args.save)  # before the turns, not after them
    check_output("--notebook", args.notebook)
    print(f"Loading {'the packaged model' if args.model is None else args.model} ...", flush=True)
    cg = load_model(args)
    print(repr(cg), flush=True)
    kw = _sampling(args)
    with convsynth.Session(cg, **kw) as session:
        for i, instruction in enumerate(args.turn or DEMO_TURNS, 1):
            print(f"\n=== turn {i}: # {instruction}", flush=True)
            turn = session.ask(instruction, on_text=lambda piece: print(piece, end="", flush=True))
            print()
            result = session.run()[-1] if session.turns else None
            st = turn.stats
            print(f"--- {st.prefill_tokens} new prompt tokens, {st.cached_tokens} from the cache, "
                  f"first token after {st.time_to_first_token * 1000:.0f} ms, {st.decode_tokens_per_s:.0f} tok/s"
                  + (f", {st.acceptance_rate:.0%} of drafted tokens kept" if st.acceptance_rate is not None else ""))
            if result is not None:
                print(f"--- ran: {result.status}" + (f" ({result.note})" if result.note else ""))
                for stream in (result.stdout, result.stderr):
                    if stream:
                        print(stream.rstrip())
                if result.error:
                    print(result.error)
        print("\n=== the whole program:\n" + session.to_python())
        if args.save:
            session.save(args.save)
            print(f"saved the session to {args.save}")
        if args.notebook:
            session.to_notebook(args.notebook)
            print(f"wrote the notebook {args.notebook}")
    return 0


def cmd_convert(args) -> int:
    if args.quantize:
        from .quant import convert
    else:
        from .checkpoint import convert
    src = None if args.src == "packaged" else args.src
    out = convert(src, args.dst, dtype=args.dtype, revision=args.revision)
    print(f"wrote {out}")
    return 0


def cmd_export(args) -> int:
    from .export import export
    src = None if args.src == "packaged" else args.src
    out = export(src, args.dst, format=args.format, dtype=args.dtype, revision=args.revision)
    print(f"wrote {out} ({args.format})")
    return 0


def cmd_serve(args) -> int:
    from .serve import main as serve_main
    return serve_main(args)


def cmd_mtpb(args) -> int:
    if getattr(args, "ray", None):
        from .mtpb_ray import main as on_ray
        return on_ray(args)
    from .mtpb import main as here
    return here(args)


def cmd_bench(args) -> int:
    import runpy
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"
    if not script.exists():
        print("the benchmark suite lives in the repository's benchmarks/ folder; run it from a checkout",
              file=sys.stderr)
        return 2
    sys.argv = [str(script)] + args.rest
    runpy.run_path(str(script), run_name="__main__")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convsynth", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("complete", help="stream a completion of PROMPT to the terminal")
    p.add_argument("prompt")
    p.add_argument("--stop", action="append", help="a stop regex (repeatable) or 'codegen' for the original rules")
    _sampling_flags(p)
    p.set_defaults(func=cmd_complete)

    p = sub.add_parser("demo", help="a multi-turn session: generate, run and show each step")
    p.add_argument("--turn", action="append", help="an instruction (repeatable); default: a built-in 4-turn demo")
    p.add_argument("--save", help="save the session as JSON here")
    p.add_argument("--notebook", help="export the session as a notebook here")
    _sampling_flags(p)
    p.set_defaults(func=cmd_demo, temperature=0.0)

    p = sub.add_parser("convert", help="write a checkpoint as config.json + model.safetensors + tokenizer")
    p.add_argument("src", help="checkpoint directory, hub id, or 'packaged' for the packaged model")
    p.add_argument("dst")
    p.add_argument("--dtype", default=None, help="float32, float16 or bfloat16 (default: keep)")
    p.add_argument("--revision", default=None)
    p.add_argument("--quantize", default=None, choices=["int8"],
                   help="write int8 weights with per-channel scales (convsynth.load reads them directly)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("export", help="write a checkpoint for serving engines: gptj (vLLM, SGLang, TGI) or codegen")
    p.add_argument("src", help="checkpoint directory, hub id, or 'packaged' for the packaged model")
    p.add_argument("dst")
    p.add_argument("--format", default="gptj", choices=["gptj", "codegen"])
    p.add_argument("--dtype", default=None, help="float32, float16 or bfloat16 (default: keep)")
    p.add_argument("--revision", default=None)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", help="serve a model over an OpenAI-compatible API (for convsynth.connect)")
    from .serve import add_arguments as serve_arguments
    serve_arguments(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("mtpb", help="run the Multi-Turn Programming Benchmark")
    from .mtpb import add_arguments as mtpb_arguments
    mtpb_arguments(p)
    p.set_defaults(func=cmd_mtpb)

    p = sub.add_parser("bench", help="run the benchmark suite (benchmarks/run.py) with its own flags")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        # Everything after `bench` is benchmarks/run.py's: argparse's REMAINDER would refuse a first flag
        # (`bench --quick`), so the split happens here; the subparser stays for `convsynth --help`.
        rest = argv[1:]
        return cmd_bench(argparse.Namespace(rest=rest[1:] if rest[:1] == ["--"] else rest))
    args = build_parser().parse_args(argv)
    from .errors import ConvsynthError
    try:
        return args.func(args)
    except ConvsynthError as e:
        print(f"convsynth: error: {' '.join(str(e).split()) or type(e).__name__}", file=sys.stderr)  # one line
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
