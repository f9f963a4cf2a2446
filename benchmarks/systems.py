"""The two systems the benchmark compares, behind one interface: convsynth and transformers' CodeGenForCausalLM
(load, prefill with and without a cache, greedy generate, the 8-turn session), timed the same way."""
from __future__ import annotations

import gc
import time
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


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
        # Plain decoding, as transformers decodes: greedy generation speculates by default, and a random model's
        # greedy output repeats a few tokens, which prompt lookup drafts perfectly (the 2026-12-01 run's decode
        # table read 21.6 tok/s with it; its peer table, without, 12.9). spec_session.py measures speculation.
        self.cg = convsynth.load(self.directory, device=str(self.device), dtype=self.dtype, fast=self.fast,
                                 speculate="off")
        sync(self.device)
        self.hook = FirstForward(self.cg.module, self.device)

    def prefill_full(self, ids: torch.Tensor):
        return self.cg.module(ids)                                 # (1, T, V) fp32 logits

    def prefill_cache(self, ids: torch.Tensor):
        cache = self.cg.module.new_cache(1, capacity=ids.shape[1] + 1)
        return self.cg.module(ids, cache, last_only=True)         # what a generation's first step computes

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
        model, dev = self.cg.module, self.device
        t0 = time.perf_counter()
        cache = model.new_cache(1, capacity=len(prompt_ids) + n)
        logits = model(torch.tensor([prompt_ids], device=dev), cache, last_only=True)[:, -1]
        tok = logits.argmax(-1)
        ids = [tok]
        sync(dev)
        t_first = time.perf_counter()
        fast = self.cg.decoding.decoder  # the same decode step generate uses (CUDA graphs on a GPU by default)
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
