"""scripts/train_tiny.py end to end on a corpus made here: a model of a new shape trained from scratch (what a GPU
session would run through scripts/gpu_train_tiny.sh) exports a checkpoint that convsynth.load() reads, and the
output rows outside the active vocabulary are never generated. Real tokenizer, real training steps, real export."""
import subprocess
import sys

import numpy as np
import pytest
import torch

import convsynth

from helpers import ROOT

EOS = 50256


def train_tiny(*args, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "train_tiny.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def corpus(tmp_path):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(ROOT / "convsynth" / "assets" / "tokenizer.json"))
    code = (ROOT / "convsynth" / "turns.py").read_text()
    ids = np.array(tok.encode(code).ids + [EOS], dtype=np.uint16)
    for name in ("train_code", "train_struct", "heldout", "heldout_templates"):
        np.save(tmp_path / f"{name}.npy", ids)
    np.save(tmp_path / "counts.npy", np.bincount(ids, minlength=51200))
    return tmp_path, set(ids.tolist())


def test_a_new_width_trains_from_scratch_and_loads_through_convsynth(corpus):
    work, seen = corpus
    r = train_tiny("train", "--work", str(work), "--width", "32", "--heads", "4", "--rotary", "4", "--layers", "2",
                   "--steps", "2", "--warmup", "1", "--ctx", "32", "--batch", "4", "--min-count", "1",
                   "--eval-every", "100", "--threads", "1", "--seed", "7")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "FINAL step 2" in r.stdout
    # a later phase resumes with the shape of the weights it resumes, not the script's default width
    r = train_tiny("train", "--work", str(work), "--resume", "--layers", "2", "--steps", "1", "--warmup", "1",
                   "--ctx", "32", "--batch", "4", "--min-count", "1", "--eval-every", "100", "--threads", "1")
    assert r.returncode == 0 and "resumed from step 2" in r.stdout, r.stderr[-2000:]
    r = train_tiny("export", "--work", str(work), "--out", str(work / "export"))
    assert r.returncode == 0, r.stderr[-2000:]
    cg = convsynth.load(str(work / "export"))
    c = cg.module.config
    assert (c.n_embd, c.n_head, c.rotary_dim, c.n_layer, c.vocab_size) == (32, 4, 4, 2, 51200)
    logits = cg.module(torch.tensor([cg.tokenizer.encode("def f(x):\n    return")]))[0]  # (T, 51200)
    active = torch.zeros(51200, dtype=torch.bool)
    active[sorted(seen | {EOS})] = True
    assert set(logits.argmax(-1).tolist()) <= seen | {EOS}
    assert logits[:, ~active].max() < -50 < logits[:, active].min()  # rows outside the active vocabulary: off


@pytest.mark.parametrize("args, words", [
    (("--width", "250"), "heads a multiple of 4"),
    (("--width", "256", "--heads", "6"), "heads a multiple of 4"),
    (("--width", "256", "--init-from", "convsynth/models/convsynth-tiny"), "--width starts a model from scratch"),
])
def test_a_shape_codegen_cannot_hold_is_refused_before_any_work(args, words, tmp_path):
    r = train_tiny("train", "--work", str(tmp_path / "nothing-here"), *args, timeout=120)
    assert r.returncode != 0 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
