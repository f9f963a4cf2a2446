"""Our CodeGen against transformers' CodeGenForCausalLM: logits, greedy continuations, half precision, the cache."""
import pytest
import torch

import convsynth
from convsynth.generate import Sampling, decode_tokens

from helpers import FORMATS, SHAPES, reference_model


def ids_for(shape, n=48, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, min(SHAPES[shape]["vocab_size"], 50257), (n,), generator=g).tolist()


@pytest.mark.parametrize("shape", list(SHAPES))
def test_logits_match_reference(checkpoints, shape):
    directory, ref = checkpoints(shape)
    cg = convsynth.load(directory)
    ids = ids_for(shape)
    with torch.no_grad():
        want = ref(torch.tensor([ids])).logits[0]
    got = cg.logits(ids)
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert (got - want).abs().max().item() < 1e-4


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_loads_the_same_weights(checkpoints, fmt):
    directory, ref = checkpoints("tiny", fmt)
    cg = convsynth.load(directory)
    ids = ids_for("tiny")
    with torch.no_grad():
        want = ref(torch.tensor([ids])).logits[0]
    assert (cg.logits(ids) - want).abs().max().item() < 1e-4


def reference_greedy(ref, ids, n):
    with torch.no_grad():
        out = ref.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                           do_sample=False, max_new_tokens=n, min_new_tokens=n, pad_token_id=50256)
    return out[0, len(ids):].tolist()


@pytest.mark.parametrize("shape", list(SHAPES))
def test_greedy_continuation_matches_reference(checkpoints, shape):
    directory, ref = checkpoints(shape)
    cg = convsynth.load(directory)
    ids = ids_for(shape, n=20, seed=3)
    cache = cg.module.new_cache()
    gen = decode_tokens(cg.module, cache, torch.tensor([ids]), Sampling(temperature=0), None)
    ours = [next(gen).item() for _ in range(24)]
    assert ours == reference_greedy(ref, ids, 24)


def test_text_greedy_matches_reference(tiny):
    cg, ref = tiny
    prompt = "def fibonacci(n):\n    "
    comp = cg.generate(prompt, temperature=0, max_new_tokens=16)
    ids = cg.tokenizer.encode(prompt)
    want = reference_greedy(ref, ids, 16)
    if 50256 in want:  # our generation stops at EOS, as generate() does
        want = want[:want.index(50256)]
    assert comp.token_ids[0] == want
    assert comp.texts[0] == cg.tokenizer.decode(want)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_as_accurate_as_the_reference(checkpoints, dtype):
    directory, ref = checkpoints("heads16")
    ids = ids_for("heads16")
    with torch.no_grad():
        exact = ref(torch.tensor([ids])).logits[0]
        ref_half = reference_model("heads16").to(dtype)
        ref_err = (ref_half(torch.tensor([ids])).logits[0].float() - exact).abs().max().item()
    cg = convsynth.load(directory, dtype=dtype)
    assert cg.module.dtype == dtype
    our_err = (cg.logits(ids) - exact).abs().max().item()
    assert our_err <= 2 * ref_err + 1e-3, (our_err, ref_err)


def test_cache_append_rewind_fork_expand(tiny):
    cg, _ = tiny
    model = cg.module
    ids = torch.tensor([ids_for("tiny", 30)])
    with torch.no_grad():
        full = model(ids)[0]
        cache = model.new_cache()
        model(ids[:, :10], cache)
        part = model(ids[:, 10:20], cache)[0]
        assert cache.length == 20
        assert (part - full[10:20]).abs().max() < 1e-4
        fork = cache.fork()
        cache.rewind(15)  # forget 15..19 and recompute them: same numbers
        again = model(ids[:, 15:25], cache)[0]
        assert (again - full[15:25]).abs().max() < 1e-4
        one = model(ids[:, 20:21], fork)[0]  # the fork still holds 0..19, untouched by the rewind
        assert (one - full[20:21]).abs().max() < 1e-4
        fork.rewind(20)
        wide = fork.expand(3)
        out = model(ids[:, 20:22].repeat(3, 1), wide)
        assert (out - full[20:22]).abs().max() < 1e-4
    with pytest.raises(ValueError):
        cache.rewind(cache.length + 1)


def test_decode_loop_does_not_grow_the_cache(tiny):
    cg, _ = tiny
    cache = cg.module.new_cache()
    cache.reserve(10 + 40)
    k_before = cache.k.data_ptr()
    gen = decode_tokens(cg.module, cache, torch.tensor([ids_for("tiny", 10)]), Sampling(temperature=0), None)
    for _ in range(40):
        next(gen)
    assert cache.k.data_ptr() == k_before and cache.length == 10 + 39


def test_prefix_cache_keeps_the_ids_with_the_cache():
    from convsynth.cache import KVCache, PrefixCache
    p = PrefixCache(lambda: KVCache(1, 1, 2, max_length=32))
    assert p.match([1, 2, 3]) == 0 and p.cache is None
    p.sync([1, 2])  # no cache yet: nothing to forget, nothing made
    assert p.reuse([1, 2, 3]) == 0 and p.cache is not None
    p.cache.advance(5)  # a generation: the prompt [1, 2, 3] and sampled 7, 8, 9 (the last one not computed)
    p.record([1, 2, 3, 7, 8, 9])
    assert p.ids == [1, 2, 3, 7, 8] and len(p) == 5
    assert p.match([1, 2, 3, 7, 8, 4]) == 5 and p.match([1, 2, 3, 7, 8]) == 4  # one id is always left to prefill
    f = p.fork()
    p.sync([1, 2, 5])
    assert p.ids == [1, 2] and p.cache.length == 2 and f.ids == [1, 2, 3, 7, 8] and f.cache.length == 5
    assert p.reuse([1, 9]) == 1 and p.ids == [1] and p.cache.length == 1
    p.cache.advance(4)  # a step that failed past the prompt: the cache is emptied
    p.record([1, 9])
    assert p.ids == [] and p.cache.length == 0


def test_codegen_model_is_a_deprecated_alias_of_module(tiny, monkeypatch):
    """``CodeGen.module`` is the torch module; ``CodeGen.model``, its old name, still reads and assigns it and warns
    once per process. A session's model is the CodeGen, so the torch module is ``session.model.module``."""
    from convsynth import codegen
    from convsynth.model import CodeGenModel
    from convsynth.session import Session
    cg = codegen.CodeGen(tiny[0].module, tiny[0].tokenizer, name="alias")  # its own object: the fixture is shared
    assert isinstance(cg.module, CodeGenModel)
    monkeypatch.setattr(codegen, "_model_alias_warned", False)
    with pytest.warns(DeprecationWarning, match=r"CodeGen\.model is now CodeGen\.module; the old name goes in the "
                                                r"next release") as caught:
        assert cg.model is cg.module
        cg.model = cg.module  # the setter, too
        assert cg.model is cg.module
    assert len([w for w in caught if w.category is DeprecationWarning]) == 1  # once, not at every use
    assert caught[0].filename == __file__  # points at the caller
    assert Session(cg).model.module is cg.module
