"""The fast decode step (fast.py): the fixed-shape step equals the eager one, and fast paths fail loudly."""
from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch

import convsynth
import convsynth.onednn
from convsynth import fast

PROMPT = "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"


def test_buckets_cover_the_window():
    assert fast.buckets(2048) == [256, 512, 1024, 2048]
    assert fast.buckets(300) == [256, 300]
    assert fast.buckets(100) == [100]


def _compare_steps(model, step, tol: float) -> None:
    """Decode 12 tokens from position 250 with ``step(tok, cache)`` and with the eager model on a copy of the
    cache: the attention window switches from 256 to 512 positions on the way."""
    g = torch.Generator().manual_seed(0)
    dev = model.device
    prompt = torch.randint(0, model.config.vocab_size, (1, 250), generator=g).to(dev)
    toks = torch.randint(0, model.config.vocab_size, (12,), generator=g).to(dev)
    with torch.inference_mode():
        eager = model.new_cache(capacity=512)
        model(prompt, eager)
        mine = eager.fork()
        for t in toks:
            tok = t.view(1)
            ref = model(tok[:, None], eager, last_only=True)[:, -1]
            got = step(tok, mine).clone()
            torch.testing.assert_close(got, ref, rtol=tol, atol=tol)
        n = eager.length
        assert mine.length == n
        torch.testing.assert_close(mine.k[:, :, :, :n], eager.k[:, :, :, :n], rtol=tol, atol=tol)
        torch.testing.assert_close(mine.v[:, :, :, :n], eager.v[:, :, :, :n], rtol=tol, atol=tol)


@pytest.mark.parametrize("shape", ["tiny", "heads16"])
def test_static_step_equals_the_eager_step_across_a_bucket_edge(checkpoints, shape):
    """The step a CUDA graph captures, run eagerly on CPU: same logits and same cache as model(tok, cache)."""
    model = convsynth.load(checkpoints(shape)[0]).module
    buckets = fast.buckets(model.config.n_positions)

    def step(tok, cache):
        cache.reserve(cache.max_length)
        bucket = next(b for b in buckets if b > cache.length)
        out = fast.static_step(model, tok[:, None], torch.tensor([cache.length]), cache.k, cache.v, bucket)
        cache.advance(1)
        return out
    _compare_steps(model, step, 1e-5)


def test_cuda_graphs_asked_for_on_cpu_warn_once_and_decode_eagerly(checkpoints):
    directory = checkpoints("tiny")[0]
    eager = convsynth.load(directory, fast=False)
    with pytest.warns(RuntimeWarning, match="CUDA graphs need the model on a CUDA device"):
        cg = convsynth.load(directory, fast="cuda_graphs")
    assert cg.decode_path.startswith("eager (asked for cuda_graphs")
    assert eager.decode_path == "eager"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once, at load: generating does not repeat it
        out = cg.complete(PROMPT, max_new_tokens=24, temperature=0)
    assert out == eager.complete(PROMPT, max_new_tokens=24, temperature=0)


def forced_cuda_graphs(checkpoints, n: int):
    """A CPU model whose decoder is forced onto the CUDA-graph path (so its step fails), and the eager greedy
    text of ``n`` tokens that it must still produce."""
    directory = checkpoints("tiny")[0]
    want = convsynth.load(directory).complete(PROMPT, max_new_tokens=n, temperature=0)
    cg = convsynth.load(directory)
    dec = fast.FastDecoder(cg.module, "eager")
    dec.path = "cuda_graphs"
    cg.decoding = convsynth.generate.DecodePath("cuda_graphs", decoder=dec)
    return cg, dec, want


def test_a_failing_fast_path_falls_back_with_the_reason_and_loses_nothing(checkpoints):
    """Force the CUDA-graph path on a CPU model: capturing fails inside step(); the decoder says why, switches
    to eager, and the generation in flight still comes out right."""
    cg, dec, want = forced_cuda_graphs(checkpoints, 20)
    with pytest.warns(RuntimeWarning, match="cuda_graphs failed .*eager path from now on"):
        got = cg.complete(PROMPT, max_new_tokens=20, temperature=0)
    assert got == want
    assert cg.decode_path.startswith("eager (asked for eager: cuda_graphs failed")


def test_a_failure_without_a_message_still_falls_back_and_names_its_cause(checkpoints, monkeypatch):
    """A capture that fails reports only "invalidated"; the cause rides along as the context. An exception with
    an empty message must not break the fallback itself."""
    cg, dec, want = forced_cuda_graphs(checkpoints, 12)

    def replay(*a):
        try:
            raise ValueError("operation not permitted when stream is capturing")
        except ValueError:
            raise RuntimeError("")
    monkeypatch.setattr(dec, "_replay", replay)
    with pytest.warns(RuntimeWarning, match=r"RuntimeError: , after ValueError: operation not permitted"):
        assert cg.complete(PROMPT, max_new_tokens=12, temperature=0) == want


def test_no_room_for_the_full_window_decodes_eagerly_without_giving_up(checkpoints, monkeypatch):
    """Out of device memory when the cache grows to the whole window: that generation decodes eagerly (said
    once) and the fast path stays on for the next one."""
    cg, dec, want = forced_cuda_graphs(checkpoints, 12)

    reserve = convsynth.cache.KVCache.reserve

    def full(self, n):  # the prompt fits; the whole window does not
        if n == self.max_length:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.70 GiB")
        return reserve(self, n)
    monkeypatch.setattr(convsynth.cache.KVCache, "reserve", full)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert cg.complete(PROMPT, max_new_tokens=12, temperature=0) == want
    assert sum("no device memory" in str(w.message) for w in seen) == 1
    assert dec.path == "cuda_graphs"


def test_switching_back_to_eager_forgets_the_old_reason(checkpoints):
    cg = convsynth.load(checkpoints("tiny")[0], fast=False)
    with pytest.warns(RuntimeWarning, match="CUDA graphs need the model on a CUDA device"):
        cg.set_fast("cuda_graphs")
    assert "CUDA graphs need" in cg.decode_path
    cg.set_fast(False)
    assert cg.decode_path == "eager"


def test_onednn_packed_weights_compute_what_eager_computes(checkpoints):
    """fast='onednn' (the CPU default when it fits) runs each block's four products as two oneDNN-packed ones
    and the output layer through a packed copy of its weight: the same logits (to fp32 rounding), the same
    greedy text, and switching back restores the plain modules."""
    directory = checkpoints("tiny")[0]
    eager = convsynth.load(directory, fast=False)
    cg = convsynth.load(directory)
    assert cg.decode_path == "onednn" and eager.decode_path == "eager"
    ids = cg.encode(PROMPT)
    torch.testing.assert_close(cg.logits(ids), eager.logits(ids), rtol=1e-5, atol=1e-5)
    want = eager.complete(PROMPT, max_new_tokens=24, temperature=0)
    assert cg.complete(PROMPT, max_new_tokens=24, temperature=0) == want
    lin = cg.module.lm_head
    assert "packed_weight" in lin.__dict__ and lin.weight.shape == eager.module.lm_head.weight.shape
    blocks = cg.module.transformer.h
    assert all(isinstance(b.fused, convsynth.onednn.FusedBlock) for b in blocks)
    assert not any("packed_weight" in m.__dict__ for m in blocks.modules())  # no second packed copy
    cg.set_fast(False)
    assert cg.decode_path == "eager" and "forward" not in lin.__dict__ and "packed_weight" not in lin.__dict__
    assert all(b.fused is None for b in blocks)
    assert cg.complete(PROMPT, max_new_tokens=24, temperature=0) == want


def test_onednn_on_a_half_precision_model_warns_and_stays_eager(checkpoints):
    with pytest.warns(RuntimeWarning, match="oneDNN packing supports float32 and bfloat16"):
        cg = convsynth.load(checkpoints("tiny")[0], dtype="float16", fast="onednn")
    assert cg.decode_path.startswith("eager (asked for onednn: oneDNN packing supports")
    assert not any("packed_weight" in m.__dict__ for m in cg.module.modules())


def test_onednn_follows_weight_changes_and_lets_gradients_through(checkpoints):
    """The packed copy serves inference only: a weight changed in place is repacked at its next use, and with
    gradients enabled the layer computes from its own weight, so training works."""
    directory = checkpoints("tiny")[0]
    eager = convsynth.load(directory, fast=False)
    cg = convsynth.load(directory, fast="onednn")
    ids = cg.encode(PROMPT)
    with torch.no_grad():
        for m in (eager, cg):
            m.module.lm_head.weight.mul_(-0.5)
            m.module.transformer.h[0].mlp.fc_in.weight.add_(0.01)
            m.module.transformer.h[1].mlp.fc_out.bias.add_(0.1)  # a bias too: it is part of a fused product
    torch.testing.assert_close(cg.logits(ids), eager.logits(ids), rtol=1e-5, atol=1e-5)
    x = torch.tensor([ids])
    cg.module.requires_grad_(True)  # loaded for inference; a user who trains turns gradients on
    loss = cg.module(x).logsumexp(-1).mean()
    loss.backward()
    grad = cg.module.transformer.h[0].mlp.fc_in.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_onednn_follows_replaced_weights_casts_and_inference_mode_loads(checkpoints):
    """A weight replaced (not changed in place) is repacked; a model cast after packing computes with its own
    weights; loading inside torch.inference_mode() works (inference tensors keep no version counter)."""
    directory = checkpoints("tiny")[0]
    eager = convsynth.load(directory, fast=False)
    cg = convsynth.load(directory, fast="onednn")
    ids = cg.encode(PROMPT)
    new = {k: v * 0.5 for k, v in eager.module.state_dict().items()}
    for m in (eager, cg):
        m.module.load_state_dict(new, assign=True)
    torch.testing.assert_close(cg.logits(ids), eager.logits(ids), rtol=1e-5, atol=1e-5)
    cg.module.double(), eager.module.double()
    torch.testing.assert_close(cg.logits(ids), eager.logits(ids), rtol=1e-6, atol=1e-6)
    with torch.inference_mode():
        inf = convsynth.load(directory, fast="onednn")
        assert inf.decode_path == "onednn"
        want = convsynth.load(directory, fast=False).complete(PROMPT, max_new_tokens=12, temperature=0)
        assert inf.complete(PROMPT, max_new_tokens=12, temperature=0) == want


def test_auto_on_cpu_packs_only_when_the_copy_fits(checkpoints, monkeypatch):
    directory = checkpoints("tiny")[0]
    assert convsynth.load(directory).decode_path == "onednn"
    monkeypatch.setattr(convsynth.onednn, "available_bytes", lambda: 1 << 20)  # a machine with 1 MiB free
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto chooses quietly
        cg = convsynth.load(directory)
    assert cg.decode_path.startswith("eager (auto: a oneDNN-packed copy of the weights")
    assert not any("packed_weight" in m.__dict__ for m in cg.module.modules())
    assert convsynth.load(directory, fast="onednn").decode_path == "onednn"  # asked for by name: packs anyway
    monkeypatch.undo()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # bf16 packs only on CPUs with the instructions for it; auto never warns
        path = convsynth.load(directory, dtype="bfloat16").decode_path
    assert path == "onednn" or path.startswith("eager (auto: oneDNN could not pack"), path


def test_unknown_mode_is_refused(checkpoints):
    with pytest.raises(ValueError, match="fast='turbo'"):
        convsynth.load(checkpoints("tiny")[0], fast="turbo")


def test_fast_module_is_not_imported_on_the_cpu_paths():
    code = "import sys, convsynth; cg = convsynth.load(); assert cg.decode_path == 'onednn', cg.decode_path; " \
           "e = convsynth.load(fast=False); assert e.decode_path == 'eager'; print('convsynth.fast' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_compiled_step_generates_what_eager_does(checkpoints):
    """torch.compile of the fixed-shape step (inductor on CPU here): same greedy text, and it stayed compiled."""
    directory = checkpoints("tiny")[0]
    want = convsynth.load(directory).complete(PROMPT, max_new_tokens=16, temperature=0)
    cg = convsynth.load(directory, fast="compile")
    got = cg.complete(PROMPT, max_new_tokens=16, temperature=0)
    assert cg.decode_path == "compile", cg.decode_path
    assert got == want


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_cuda_graph_steps_equal_eager_steps_on_gpu(checkpoints, dtype):
    cg = convsynth.load(checkpoints("heads16")[0], device="cuda", dtype=dtype)
    assert cg.decode_path == "cuda_graphs"
    _compare_steps(cg.module, cg.decoding.decoder.step, 2e-2)
    assert cg.decode_path == "cuda_graphs"  # no fallback happened on the way
