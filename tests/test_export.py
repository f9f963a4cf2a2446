"""GPT-J export: transformers' GPTJForCausalLM (an independent implementation) loads the export and computes what
convsynth computes, on random CodeGen checkpoints of three shapes and on the packaged model."""
from __future__ import annotations

import json

import pytest
import torch

import convsynth
from convsynth.cli import main as cli_main
from convsynth.errors import CheckpointError
from convsynth.export import export, split_qkv

PROMPT = "def fib(n):\n    # the n-th Fibonacci number\n"


def _gptj(directory):
    from transformers import GPTJForCausalLM
    return GPTJForCausalLM.from_pretrained(directory, torch_dtype=torch.float32).eval()


@pytest.mark.parametrize("shape", ["tiny", "head80", "heads16"])
def test_gptj_export_matches_convsynth(shape, checkpoints, tmp_path):
    src, _ = checkpoints(shape)
    cg = convsynth.load(src, fast="eager")
    out = export(src, tmp_path / "gptj", format="gptj")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "gptj" and cfg["architectures"] == ["GPTJForCausalLM"]
    gptj = _gptj(out)
    vocab = cg.config.vocab_size
    ids = cg.encode(PROMPT) if vocab > 50257 else torch.randint(0, vocab, (40,), generator=torch.Generator().manual_seed(1)).tolist()
    with torch.no_grad():
        theirs = gptj(torch.tensor([ids])).logits[0].float()
    ours = cg.logits(ids)
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() < 1e-4
    # greedy continuation: the same tokens from both (30 new ones, no early stop)
    with torch.no_grad():
        ref = gptj.generate(torch.tensor([ids]), max_new_tokens=30, min_new_tokens=30, do_sample=False,
                            pad_token_id=0)[0, len(ids):].tolist()
    mine = []
    seq = list(ids)
    for _ in range(30):  # plain argmax over full forwards: no stop rule or EOS handling in the way
        nxt = int(cg.logits(seq)[-1].argmax())
        mine.append(nxt)
        seq.append(nxt)
    assert mine == ref
    if vocab > 50257:  # text prompts: the greedy text of convsynth's own generator equals transformers'
        text = cg.complete(PROMPT, max_new_tokens=30, temperature=0)
        assert text == cg.decode(ref)[:len(text)]


def test_split_qkv_takes_query_value_key_from_each_chunk():
    C = 8
    w = torch.arange(3 * C * C, dtype=torch.float32).reshape(3 * C, C)
    q, k, v = split_qkv(w, C)
    rows = w.reshape(4, 3, C // 4, C)
    assert torch.equal(q[:2], rows[0, 0]) and torch.equal(v[:2], rows[0, 1]) and torch.equal(k[:2], rows[0, 2])
    assert torch.equal(k[6:], rows[3, 2])


def test_cli_export_packaged_model_both_formats(tmp_path, capsys):
    from transformers import AutoTokenizer
    assert cli_main(["export", "packaged", str(tmp_path / "gptj"), "--format", "gptj", "--dtype", "float32"]) == 0
    assert cli_main(["export", "packaged", str(tmp_path / "cg"), "--format", "codegen", "--dtype", "float32"]) == 0
    cg = convsynth.load(fast="eager", dtype="float32")
    again = convsynth.load(tmp_path / "cg", fast="eager")  # --format codegen: what convert writes
    ids = cg.encode(PROMPT)
    assert torch.equal(cg.logits(ids), again.logits(ids))
    tok = AutoTokenizer.from_pretrained(tmp_path / "gptj")  # what vLLM and SGLang load
    code = "import numpy as np\n\ndef f(x):\n        return x  # tabs\t\tand spaces\n"
    assert tok(code)["input_ids"] == cg.encode(code)
    assert tok.eos_token_id == 50256
    gptj = _gptj(tmp_path / "gptj")
    with torch.no_grad():
        theirs = gptj(torch.tensor([ids])).logits[0]
    assert (cg.logits(ids) - theirs).abs().max().item() < 1e-4


def test_export_unknown_format_says_which(tmp_path):
    with pytest.raises(CheckpointError, match="gptj, codegen"):
        export(None, tmp_path / "x", format="llama")


def test_export_replaces_an_older_checkpoint_whole_and_refuses_a_file(tmp_path):
    """The files are written beside and moved in: an older checkpoint's weights and shard index in the folder
    (which loaders would prefer) go, and a file where the folder should be is one line, before any work."""
    dst = tmp_path / "gptj"
    dst.mkdir()
    (dst / "model.safetensors.index.json").write_text("{}")
    (dst / "pytorch_model-00001-of-00002.bin").write_bytes(b"old")
    export(None, dst, format="gptj")
    assert sorted(p.name for p in dst.iterdir()) == ["config.json", "model.safetensors", "special_tokens_map.json",
                                                     "tokenizer.json", "tokenizer_config.json"]
    assert json.loads((dst / "config.json").read_text())["model_type"] == "gptj"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(CheckpointError, match="afile is a file; convert and export write a checkpoint directory"):
        export(None, tmp_path / "afile", format="gptj")
