"""Sampling as Hugging Face does it, streaming, stop rules, batches of samples, and bad generation input."""
import math
import subprocess
import sys

import pytest
import torch

from convsynth import ContextWindowError, SamplingError
from convsynth.generate import Sampling, process_logits
from convsynth.stops import codegen_stop, make_stop, truncate_codegen


def hf_process(logits, ids, s: Sampling):
    from transformers import (RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper,
                              TopPLogitsWarper)
    out = logits.clone()
    if s.repetition_penalty != 1.0:
        out = RepetitionPenaltyLogitsProcessor(s.repetition_penalty)(ids, out)
    if s.temperature:
        out = TemperatureLogitsWarper(s.temperature)(ids, out)
        if s.top_k:
            out = TopKLogitsWarper(s.top_k)(ids, out)
        if s.top_p < 1:
            out = TopPLogitsWarper(s.top_p)(ids, out)
    return out


@pytest.mark.parametrize("s", [
    Sampling(temperature=0.2, top_p=0.95), Sampling(temperature=0.7, top_k=40), Sampling(temperature=1.3, top_p=0.5,
                                                                                         top_k=100),
    Sampling(temperature=0.8, top_p=0.9, repetition_penalty=1.3), Sampling(temperature=0, repetition_penalty=0.7),
])
def test_logits_processing_matches_transformers(s):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 500, generator=g) * 3
    ids = torch.randint(0, 500, (3, 30), generator=g)
    seen = torch.zeros(3, 500, dtype=torch.bool)
    seen.scatter_(1, ids, True)
    ours, theirs = process_logits(logits, s, seen), hf_process(logits, ids, s)
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    fin = torch.isfinite(ours)
    assert torch.allclose(ours[fin], theirs[fin], atol=1e-5)


@pytest.mark.parametrize("kw, words", [
    (dict(temperature=-0.1), "temperature"), (dict(temperature=math.nan), "temperature"),
    (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"), (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(top_k=-1), "top_k"), (dict(repetition_penalty=0), "repetition_penalty"),
])
def test_bad_sampling_settings(tiny, kw, words):
    cg, _ = tiny
    with pytest.raises(SamplingError, match=words):
        cg.complete("x = 1", **kw)


def test_empty_prompt(tiny):
    with pytest.raises(ContextWindowError, match="empty"):
        tiny[0].complete("")


def test_prompt_past_the_context_window(tiny):
    cg, _ = tiny
    long = "x = 1\n" * 800  # ~3200 tokens
    with pytest.raises(ContextWindowError, match="context window is 2048"):
        cg.complete(long)
    out = cg.generate(long, truncate_prompt=True, temperature=0, max_new_tokens=4)
    assert out.prefill_tokens == 2047 and out.generated_tokens == 1 and out.finish_reasons == ["length"]


def test_generation_stops_at_the_window_edge(tiny):
    cg, _ = tiny
    prompt = "y = 2\n" * 510  # ~2040 tokens: 8 fit
    out = cg.generate(prompt, temperature=0, max_new_tokens=100)
    assert out.generated_tokens == 2048 - len(cg.encode(prompt)) and out.finish_reasons == ["length"]


@pytest.mark.parametrize("stop", [None, "codegen", [r"\n\s*\n"], [r"\)"]])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_stream_equals_complete(tiny, stop, temperature):
    cg, _ = tiny
    kw = dict(max_new_tokens=40, temperature=temperature, seed=7, stop=stop, top_p=0.95)
    pieces = list(cg.stream("def main():\n    ", **kw))
    assert "".join(pieces) == cg.complete("def main():\n    ", **kw)
    assert all(pieces)


def test_stream_handles_multibyte_characters(tiny):
    cg, _ = tiny
    # Force a continuation made of the byte-level tokens of an emoji split across tokens.
    ids = cg.encode("😊🙂")
    assert len(ids) > 2
    from convsynth.generate import _Detok
    d = _Detok(cg.tokenizer, None)
    out = "".join(d.push(t) for t in ids) + d._flush()
    assert out == "😊🙂" and "\ufffd" not in out


def test_incremental_text_equals_decoding_everything(tiny):
    """The streaming decoder re-decodes only the ids since the last whole character: at every step its text must
    equal decoding all ids so far, also for random ids (partial UTF-8 bytes, EOS, ids the tokenizer lacks)."""
    cg, _ = tiny
    from convsynth.generate import _Detok
    g = torch.Generator().manual_seed(0)
    samples = [cg.encode("naïve = 'café' ✓ # 数据\n    return x"),
               torch.randint(0, 51200, (300,), generator=g).tolist(),
               torch.randint(0, 256, (300,), generator=g).tolist()]  # single bytes: UTF-8 split every way
    for ids in samples:
        d = _Detok(cg.tokenizer, None)
        for k, t in enumerate(ids, 1):
            d.push(t)
            assert d.text == cg.tokenizer.decode(ids[:k]), k


def test_incremental_codegen_stop_equals_the_rule_on_every_prefix():
    """The per-sample codegen rule scans only the new text; called after every piece of a growing text it must
    answer exactly what codegen_stop answers on the whole text, also when a U+FFFD placeholder is replaced."""
    import random
    from convsynth.stops import IncrementalCodegenStop, codegen_stop
    frags = ["print(x)", "print", "def f():", "def", "#", "'''", '"""', "\n", "\n", "\n", " ", "    ", "x = 1",
             "<|endoftext|>", "pass", "é", "数"]
    rng = random.Random(0)
    for _ in range(3000):
        rule, text = IncrementalCodegenStop(), ""
        for _ in range(rng.randint(1, 30)):
            piece = rng.choice(frags)
            if piece in ("é", "数") and rng.random() < 0.5:  # the placeholder first, the character next call
                assert rule(text + "\ufffd") == codegen_stop(text + "\ufffd")
            text += piece
            got = rule(text)
            assert got == codegen_stop(text), repr(text)
            if got is not None:
                break


def test_seeded_sampling_is_reproducible_and_samples_differ(tiny):
    cg, _ = tiny
    a = cg.complete("import os\n", temperature=1.0, seed=3, max_new_tokens=12)
    b = cg.complete("import os\n", temperature=1.0, seed=3, max_new_tokens=12)
    assert a == b
    many = cg.complete("import os\n", temperature=1.0, seed=3, max_new_tokens=12, num_samples=4)
    assert isinstance(many, list) and len(many) == 4 and len(set(many)) > 1


def test_greedy_samples_in_a_batch_equal_a_single_greedy_run(tiny):
    cg, _ = tiny
    one = cg.complete("def f(x):\n", temperature=0, max_new_tokens=15)
    assert cg.complete("def f(x):\n", temperature=0, max_new_tokens=15, num_samples=3) == [one] * 3


def test_stop_ends_generation_early(tiny):
    cg, _ = tiny
    free = cg.generate("a = [", temperature=0, max_new_tokens=30)
    text = free.texts[0]
    assert len(text) > 3
    stop_at = text[2:4]  # a regex that matches early in the greedy continuation
    import re
    out = cg.generate("a = [", temperature=0, max_new_tokens=30, stop=[re.escape(stop_at)])
    assert out.finish_reasons == ["stop"] and out.generated_tokens < free.generated_tokens
    assert out.texts[0] == text[:text.index(stop_at)]


def test_truncate_codegen_rules():
    assert truncate_codegen("    return 1\n\n\n\nfoo()") == "    return 1"
    assert truncate_codegen("x = 1\nprint(x)\nprint(y)\n") == "x = 1\nprint(x)\n"
    assert truncate_codegen("def a():\n    pass\ndef b():\n    pass") == "def a():\n    pass\n"
    assert truncate_codegen("x = 1\n# next\ny = 2") == "x = 1\n"
    assert truncate_codegen('x = 1\n"""doc"""') == "x = 1\n"
    assert truncate_codegen("x = 1<|endoftext|>junk") == "x = 1"
    assert truncate_codegen("    # indented comment\nx = 1") == "    # indented comment\nx = 1"
    assert codegen_stop("x = 1\n") is None and codegen_stop("x = 1\n#") == 6


def test_truncate_codegen_matches_the_reference_decode():
    from transformers.models.codegen.tokenization_codegen import CodeGenTokenizer as Ref
    from convsynth.stops import CODEGEN_TERMINALS
    texts = ["x = 1\nprint(x)\nprint(2)\n\n\n# c", "def a():\n    return 1\ndef b():\n    '''x'''",
             "y = 3\n\n\n\nz = 4", "    q = 1\n'''doc'''\n"]
    for t in texts:
        assert truncate_codegen(t) == Ref.truncate(None, t, CODEGEN_TERMINALS)


def test_make_stop_rejects_bad_patterns():
    with pytest.raises(ValueError, match="not a valid regular expression"):
        make_stop(["("])
    assert make_stop("codegen") is codegen_stop


def test_cli_complete_streams(tiny, checkpoints):
    directory, _ = checkpoints("tiny")
    out = subprocess.run([sys.executable, "-m", "convsynth", "complete", "def hello_world():", "--model",
                          str(directory), "--temperature", "0", "--max-new-tokens", "8"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    want = tiny[0].complete("def hello_world():", temperature=0, max_new_tokens=8)
    assert out.stdout == "def hello_world():" + want + "\n"


def test_cli_reports_errors_plainly(tmp_path):
    out = subprocess.run([sys.executable, "-m", "convsynth", "complete", "x", "--model", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "no such checkpoint directory" in out.stderr and "Traceback" not in out.stderr


def test_sampling_is_defined_once_and_every_entry_point_takes_it(tiny):
    from convsynth import Session
    cg = tiny[0]
    assert Sampling.of() == Sampling() and Sampling.of(None, temperature=None).temperature == Sampling().temperature
    greedy = Sampling(max_new_tokens=6, temperature=0)
    assert Sampling.of(greedy, top_p=0.5) == Sampling(max_new_tokens=6, temperature=0, top_p=0.5)
    assert cg.complete("def f(x):", sampling=greedy) == cg.complete("def f(x):", max_new_tokens=6, temperature=0)
    assert "".join(cg.stream("def f(x):", sampling=greedy)) == cg.complete("def f(x):", sampling=greedy)
    assert cg.generate("def f(x):", sampling=greedy, max_new_tokens=3).generated_tokens <= 3  # settings on top
    s = Session(cg, sampling=greedy, top_k=5, cwd=None)
    assert s.sampling == Sampling(max_new_tokens=6, temperature=0, top_k=5)
    assert Session(cg, cwd=None).sampling == Sampling()  # the defaults are Sampling's
    with pytest.raises(SamplingError, match="must be a convsynth Sampling"):
        cg.complete("x", sampling={"temperature": 0})
    s.close()


def test_why_a_sample_ended_is_decided_token_by_token(tiny):
    from convsynth.generate import _Detok, _take
    tok = tiny[0].tokenizer
    d = _Detok(tok, make_stop("codegen"))
    assert _take(tok.eos_token_id, tok.eos_token_id, d) == ("eos", "")
    ids = tok.encode("x = 1\n\n\n# next step")
    reasons = []
    for t in ids:  # as the token loop does: a sample that ended takes no more tokens
        reasons.append(_take(t, tok.eos_token_id, d)[0])
        if reasons[-1]:
            break
    assert reasons[-1] == "stop" and not any(reasons[:-1]) and len(reasons) < len(ids) and d.text == "x = 1"
