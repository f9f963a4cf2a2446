"""How far int8 weights (convsynth/quant.py) move the model: the figures in docs/int8.md.

    python scripts/eval_int8.py [--model convsynth/models/convsynth-tiny] [--work .cache/tiny] [--tokens 48]

- greedy agreement with fp32 on the packaged model: for each prompt of scripts/tiny_prompts.py, the int8 and fp32
  greedy continuations (``--tokens`` new tokens, no stop rule): how many are identical, and the share of tokens
  before the first difference;
- held-out perplexity, fp32 and int8, on the held-out windows scripts/eval_tiny.py uses (``<work>/heldout.npy``);
- the largest logit error of int8 against fp32 on random checkpoints of the tests' shapes and a 350M-shaped layer
  stack (4 layers), as a share of the logits' standard deviation too.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import convsynth  # noqa: E402
from convsynth import quant  # noqa: E402
from convsynth.config import CodeGenConfig  # noqa: E402
from convsynth.model import CodeGenModel  # noqa: E402

SHAPES = {  # the tests' random shapes, and the 350M model's width and heads over 4 layers
    "tiny": dict(n_embd=64, n_layer=2, n_head=4, rotary_dim=8, vocab_size=51200),
    "heads16": dict(n_embd=128, n_layer=3, n_head=16, rotary_dim=4, vocab_size=51200),
    "350M-width": dict(n_embd=1024, n_layer=4, n_head=16, rotary_dim=32, vocab_size=51200),
}


def greedy_agreement(fp, q, prompts, tokens: int) -> dict:
    same = prefix = total = 0
    for _, prompt in prompts:
        a = fp.generate(prompt, temperature=0, max_new_tokens=tokens).token_ids[0]
        b = q.generate(prompt, temperature=0, max_new_tokens=tokens).token_ids[0]
        same += a == b
        n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        prefix += n
        total += len(a)
    return dict(prompts=len(prompts), identical=same, identical_share=same / len(prompts),
                tokens_before_first_difference=prefix / total)


def logit_error(shape: str, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = CodeGenModel(CodeGenConfig(n_positions=2048, **SHAPES[shape])).init_weights(seed).eval()
    with torch.no_grad():  # the tests' checkpoints randomise biases and LayerNorms too
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln" in name:
                p.add_(torch.randn_like(p) * 0.02)
    ids = torch.randint(0, 50000, (1, 64), generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        ref = model(ids)[0]
        quant.quantize(model)
        got = model(ids)[0]
    err = (got - ref).abs().max().item()
    return dict(max_abs=err, logit_std=ref.std().item(), max_over_std=err / ref.std().item(),
                argmax_agreement=(got.argmax(-1) == ref.argmax(-1)).float().mean().item())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="default: the packaged model")
    ap.add_argument("--work", default=str(ROOT / ".cache" / "tiny"))
    ap.add_argument("--tokens", type=int, default=48)
    args = ap.parse_args()
    torch.set_num_threads(1)
    import tiny_prompts as P
    from eval_tiny import heldout_loss
    fp = convsynth.load(args.model, device="cpu", dtype="float32")
    q = convsynth.load(args.model, device="cpu", dtype="float32", quantize="int8")
    out = dict(kernel=q.quantization, greedy=greedy_agreement(fp, q, P.PROMPTS, args.tokens))
    held = Path(args.work) / "heldout.npy"
    if held.exists():
        arr = np.load(held)
        a, b = heldout_loss(fp.module, arr), heldout_loss(q.module, arr)
        out["heldout"] = dict(tokens=a["tokens"], ppl_fp32=a["ppl"], ppl_int8=b["ppl"],
                              change=b["ppl"] / a["ppl"] - 1)
    else:
        out["heldout"] = f"skipped: {held} not found (scripts/train_tiny.py data makes it)"
    out["random_checkpoints"] = {s: logit_error(s) for s in SHAPES}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
