"""The benchmark's report: the goals table, the markdown tables and the plot, from the results dict."""
from __future__ import annotations

from pathlib import Path

from systems import first_difference


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
    md.append(f"- convsynth decode step: `{r.get('decode_path', 'eager')}` (`--fast` to choose); speculative decoding "
              "off in these tables, as transformers decodes (measured on its own at the end)")
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
