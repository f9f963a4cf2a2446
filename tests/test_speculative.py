"""Speculative decoding (convsynth/speculative.py): greedy text identical to plain decoding (random checkpoints and
the packaged model, with ``complete`` and with a Session, prompt lookup and a draft model), the KV cache and its ids
kept in step, and sampling that keeps the exact distribution (chi-square tests on a small-vocabulary model)."""
from __future__ import annotations

import math

import pytest
import torch

import convsynth
from convsynth.codegen import CodeGen
from convsynth.config import CodeGenConfig
from convsynth.generate import Sampling, process_logits
from convsynth.model import CodeGenModel
from convsynth.speculative import DraftModel, PromptLookup, Speculator, verify

REPEATING = [
    "def add(a, b):\n    return a + b\n\n\ndef add(a, b):\n",
    "x = [1, 2, 3]\ny = [1, 2, 3]\nz = [1, 2,",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n"
    "        self.items.append(x)\n\n    def pop(self):\n",
    "# Import libraries.\n\nimport numpy as np\n\n# Assign 3 to x.\nx = 3\n\n# Print x.\n",
]
STEPS = ["Assign the list [3, 1, 2] to a variable named numbers.", "Sort numbers in place.",
         "Print numbers.", "Sort numbers in place.", "Assign the list [3, 1, 2] to a variable named numbers.",
         "Print numbers."]


@pytest.fixture(scope="module")
def packaged():
    return convsynth.load()


def same_greedy(cg, prompt, **kw):
    off = cg.generate(prompt, temperature=0, speculate="off", **kw)
    outs = [cg.generate(prompt, temperature=0, speculate=m, **kw) for m in ("on", "auto")]
    for out in outs:
        assert out.token_ids == off.token_ids and out.texts == off.texts and out.raw_ids == off.raw_ids, prompt
        assert out.finish_reasons == off.finish_reasons
    return outs[0]


@pytest.mark.parametrize("shape", ["tiny", "heads16"])
def test_greedy_identical_on_random_checkpoints(checkpoints, shape):
    directory, _ = checkpoints(shape)
    cg = convsynth.load(directory)
    drafted = 0
    for p in REPEATING:
        out = same_greedy(cg, p, max_new_tokens=40)
        drafted += out.drafted_tokens
        same_greedy(cg, p, max_new_tokens=40, stop="codegen")
    assert drafted > 0  # the random models repeat themselves enough for lookup drafts


def test_greedy_identical_on_the_packaged_model(packaged):
    rates = []
    for p in REPEATING:
        out = same_greedy(packaged, p, max_new_tokens=48)
        same_greedy(packaged, p, max_new_tokens=48, stop="codegen")
        if out.acceptance_rate is not None:
            rates.append(out.acceptance_rate)
    assert rates and max(rates) > 0.3


def test_greedy_identical_with_int8_weights(checkpoints):
    """int8 activations are quantized per token, so a verification pass sees what one-token steps see."""
    cg = convsynth.load(quantize="int8")
    for p in REPEATING:
        same_greedy(cg, p, max_new_tokens=40)
    small = convsynth.load(checkpoints("heads16")[0])
    with convsynth.Session(small, temperature=0, max_new_tokens=24, cwd=None, quantize="int8",
                           speculate="on") as s:
        assert small.quantization == "int8 (fbgemm)"
        plain = run_session(small, "off", steps=STEPS[:4])
        spec = run_session(small, "on", steps=STEPS[:4])
        assert spec.text == plain.text and any(t.stats.drafted_tokens for t in spec.turns)
        assert s.speculate == "on"


def test_stream_with_speculation_equals_complete(packaged):
    p = REPEATING[2]
    pieces = list(packaged.stream(p, temperature=0, max_new_tokens=40, speculate="on", stop="codegen"))
    assert "".join(pieces) == packaged.complete(p, temperature=0, max_new_tokens=40, speculate="off", stop="codegen")


def test_draft_model_greedy_identical(packaged, checkpoints):
    """The packaged model drafting for a random checkpoint with the same tokenizer, and the other way round."""
    directory, _ = checkpoints("heads16")
    target = convsynth.load(directory, draft=packaged)
    small = convsynth.load(checkpoints("tiny")[0])
    big = convsynth.load(speculate="on")
    big.set_draft(small)
    for cg in (target, big):
        assert isinstance(cg.drafter, DraftModel)
        for p in REPEATING:
            out = same_greedy(cg, p, max_new_tokens=32)
            assert out.drafted_tokens > 0


def test_draft_model_must_share_the_tokenizer(packaged, checkpoints):
    directory, _ = checkpoints("head80")  # vocabulary of 1024
    with pytest.raises(convsynth.ConvsynthError, match="tokenizer"):
        packaged.set_draft(convsynth.load(directory))


def run_session(cg, speculate, steps=STEPS, **kw):
    s = convsynth.Session(cg, temperature=0, max_new_tokens=48, speculate=speculate, cwd=None, **kw)
    for instr in steps:
        s.ask(instr)
        # the cache and the ids it holds stay in step: they are a prefix of the session text's tokens
        assert len(s.prefix) == s.prefix.cache.length
        assert s.prefix.ids == cg.encode(s.text)[:len(s.prefix)]
    return s


def test_session_greedy_identical_with_repeats_and_edits(packaged):
    plain, spec = run_session(packaged, "off"), run_session(packaged, "on")
    assert spec.text == plain.text
    assert [t.code for t in spec.turns] == [t.code for t in plain.turns]
    rates = [t.stats.acceptance_rate for t in spec.turns if t.stats.acceptance_rate is not None]
    assert rates and all(0 <= r <= 1 for r in rates) and max(rates) > 0.3
    assert all(t.stats.acceptance_rate is None for t in plain.turns)
    for s in (plain, spec):  # edit an early step and undo: the cache follows
        s.edit(1, "Sort numbers in reverse order.")
        s.ask("Print numbers.")
        s.undo()
    assert spec.text == plain.text
    assert len(spec.prefix) == spec.prefix.cache.length
    for s in (plain, spec):
        s.close()


def test_session_on_a_random_checkpoint_with_a_draft_model(checkpoints, packaged):
    directory, _ = checkpoints("tiny")
    cg = convsynth.load(directory)
    plain = run_session(cg, "off", steps=STEPS[:4])
    cg.set_draft(packaged)
    spec = run_session(cg, "on", steps=STEPS[:4])
    assert spec.text == plain.text
    assert any(t.stats.drafted_tokens for t in spec.turns)


def test_auto_pauses_drafting_when_it_does_not_pay():
    """The off switch: passes slower per kept token than a plain step pause drafting, for longer each time."""
    sp = Speculator(PromptLookup(), timed=True)
    sp.record_step(0.010)
    for _ in range(sp.JUDGE_AFTER):
        assert sp.paused == 0
        sp.record_pass(drafted=4, kept=0, seconds=0.020)  # 1 token for the price of 2 steps
    assert sp.paused == 8 and not any(sp.want_draft() for _ in range(8)) and sp.want_draft()
    for _ in range(sp.JUDGE_AFTER):
        sp.record_pass(drafted=4, kept=0, seconds=0.020)
    assert sp.paused == 16
    for _ in range(sp.JUDGE_AFTER):
        sp.record_pass(drafted=4, kept=4, seconds=0.012)  # 5 tokens for 1.2 steps: pays
    assert sp.paused == 16 and sp.pause_len == 8 and sp.k > 1
    sp.paused = 0
    for kept in (4, 0, 0, 0):  # a run of kept drafts carries the window: 8 tokens for 6 steps' time
        sp.record_pass(drafted=4, kept=kept, seconds=0.015)
    assert sp.paused == 0 and sp.want_draft()
    untimed = Speculator(PromptLookup(), timed=False)  # sampling: nothing depends on the clock
    untimed.record_pass(drafted=4, kept=0, seconds=10.0)
    assert untimed.paused == 0


def test_sampling_auto_does_not_speculate(packaged):
    out = packaged.generate(REPEATING[0], temperature=0.8, seed=3, max_new_tokens=20)
    assert out.acceptance_rate is None and out.drafted_tokens == 0
    again = packaged.generate(REPEATING[0], temperature=0.8, seed=3, max_new_tokens=20)
    assert again.token_ids == out.token_ids


# ---- the exact distribution -------------------------------------------------------------------------------------
CHI2_999 = {124: 179.0, 63: 103.4}  # chi-square quantiles at p = 0.999 for the degrees of freedom used


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, int]:
    """Pearson's statistic, pooling outcomes expected fewer than 5 times into one cell."""
    n = counts.sum()
    exp = probs * n
    big = exp >= 5
    stat = (((counts[big] - exp[big]) ** 2) / exp[big]).sum()
    rest_e, rest_c = exp[~big].sum(), counts[~big].sum()
    cells = int(big.sum())
    if rest_e > 0:
        stat += (rest_c - rest_e) ** 2 / rest_e
        cells += 1
    return float(stat), cells - 1


def chi2_threshold(df: int) -> float:
    # Wilson-Hilferty approximation of the 0.999 quantile (z = 3.09)
    return df * (1 - 2 / (9 * df) + 3.09 * math.sqrt(2 / (9 * df))) ** 3


def test_verify_keeps_the_target_distribution():
    """One position: drafts drawn from q, verified against p: the token that comes out is distributed as p, for a
    model draft (q a distribution) and a lookup draft (q a point mass). A rule that kept every draft would give q."""
    g = torch.Generator().manual_seed(0)
    V, n = 6, 30000
    logits_p = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, 0.3]])
    q = torch.tensor([0.05, 0.05, 0.5, 0.3, 0.05, 0.05])
    s = Sampling(temperature=1.0, top_p=1.0)
    p = logits_p.softmax(-1)[0]
    for lookup in (False, True):
        counts = torch.zeros(V)
        for _ in range(n):
            d = 3 if lookup else int(torch.multinomial(q, 1, generator=g))
            m, tok = verify(torch.cat([logits_p, logits_p]), [d], None if lookup else q[None], s, None, g)
            counts[d if m == 1 else tok] += 1
        stat, df = chi_square(counts, p)
        assert stat < chi2_threshold(df), (lookup, stat, counts / n, p)
        wrong = q if not lookup else torch.nn.functional.one_hot(torch.tensor(3), V).float()
        assert chi_square(counts, wrong.clamp_min(1e-9))[0] > 100 * chi2_threshold(df)  # the test has power


def small_model(seed: int, vocab: int = 5) -> CodeGenModel:
    cfg = CodeGenConfig(vocab_size=vocab, n_positions=64, n_embd=32, n_layer=2, n_head=4, rotary_dim=4)
    return CodeGenModel(cfg).init_weights(seed=seed, std=0.6).eval()  # wide weights: far from uniform


def exact_joint(model, prompt: list[int], s: Sampling, n: int) -> torch.Tensor:
    """The exact probability of every sequence of n tokens after ``prompt`` under plain sampling with ``s``."""
    V = model.config.vocab_size
    seqs = [[]]
    probs = torch.ones(1)
    for _ in range(n):
        rows = []
        for seq in seqs:
            with torch.inference_mode():
                logits = model(torch.tensor([prompt + seq]))[:, -1]
            rows.append(process_logits(logits, s, None).softmax(-1)[0])
        probs = (probs[:, None] * torch.stack(rows)).reshape(-1)
        seqs = [seq + [t] for seq in seqs for t in range(V)]
    return probs


@pytest.mark.parametrize("drafter,k", [("lookup", 4), ("model", 1), ("model", 3)])
def test_speculative_sampling_keeps_the_exact_distribution(drafter, k):
    """Three tokens drawn with speculation on a 5-token vocabulary, 5000 times: their joint distribution equals the
    exact one of plain sampling (chi-square, p > 0.001, fixed seeds). k=1 exercises the extra token after a fully
    kept draft, k=3 rejections at every depth."""
    target, V, n_tok, n = small_model(1), 5, 3, 5000
    prompt = [0, 1, 2, 0, 1, 2, 0, 1]  # repeats: lookup always finds a draft
    s = Sampling(temperature=0.9, top_p=1.0)
    want = exact_joint(target, prompt, s, n_tok)
    draft = DraftModel(CodeGen(small_model(7), None)) if drafter == "model" else None
    g = torch.Generator().manual_seed(11)
    counts = torch.zeros(V ** n_tok)
    kept = drafted = 0
    for _ in range(n):
        sp = Speculator(draft if draft is not None else PromptLookup(1, 1), timed=False)
        sp.k = sp.K_START = k
        cache = target.new_cache()
        gen = sp.tokens(target, cache, torch.tensor([prompt]), s, g, None, prompt)
        toks = [int(next(gen)) for _ in range(n_tok)]
        gen.close()
        assert cache.length == len(prompt) + n_tok - 1
        counts[sum(t * V ** (n_tok - 1 - i) for i, t in enumerate(toks))] += 1
        kept, drafted = kept + sp.stats.accepted, drafted + sp.stats.drafted
    stat, df = chi_square(counts, want)
    assert stat < chi2_threshold(df), (stat, df)
    assert drafted > n and 0.05 < kept / drafted < 0.95  # drafts were both kept and rejected


def test_widget_settings_and_stats(checkpoints, tmp_path):
    """The widget's settings reach the session (speculation, int8 weights and back) and a card shows the turn's
    acceptance rate."""
    pytest.importorskip("ipywidgets")
    from convsynth.widget import SessionWidget
    directory, _ = checkpoints("tiny")
    cg = convsynth.load(directory)
    with convsynth.Session(cg, temperature=0, max_new_tokens=24, cwd=None) as s:
        w = SessionWidget(s, directory=tmp_path)
        assert (w.speculate.value, w.quantize.value) == ("auto", "none")
        w.speculate.value = "on"
        assert s.speculate == "on"
        w.quantize.value = "int8"
        assert cg.quantization == "int8 (fbgemm)" and s.cached_tokens == 0 and not w.error.value
        s.ask("x = [1, 2, 3]\nx = [1, 2, 3]\nx = [1, 2, 3]")
        w.refresh()
        assert "speculation" in w.cards.children[-1].stats.value
        assert s.turns[-1].stats.acceptance_rate is not None
        w.quantize.value = "none"  # float again: the weights are read from the checkpoint
        assert cg.quantization is None and cg.decode_path != "int8 (fbgemm)"
        w.speculate.value = "off"
        s.ask("Print x.")
        assert s.turns[-1].stats.acceptance_rate is None
