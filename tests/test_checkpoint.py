"""Loading real checkpoint layouts, converting them, and every kind of bad checkpoint."""
import json
import os
import pickle
import shutil
import subprocess
import sys

import pytest
import torch

import convsynth
from convsynth import CheckpointError, ConfigError
from convsynth.config import CodeGenConfig, PRESETS, preset

from helpers import ROOT, reference_model, write_checkpoint


def test_presets_cover_the_twelve_checkpoints():
    assert len(PRESETS) == 12
    c = preset("codegen-350M-mono")
    assert (c.n_embd, c.n_layer, c.n_head, c.rotary_dim, c.head_dim) == (1024, 20, 16, 32, 64)
    assert preset("Salesforce/codegen-2B-nl").head_dim == 80
    assert preset("codegen-16B-multi").n_layer == 34
    with pytest.raises(ConfigError):
        preset("codegen-1B-mono")


@pytest.mark.parametrize("change, words", [
    (dict(model_type="gpt2"), "model_type"),
    (dict(n_embd=100, n_head=16), "divisible"),
    (dict(n_embd=96, n_head=6, rotary_dim=8), "4"),
    (dict(rotary_dim=7), "even"),
    (dict(n_embd=64, n_head=4, rotary_dim=32), "larger than the head"),
])
def test_config_errors(change, words):
    d = dict(model_type="codegen", n_embd=64, n_layer=2, n_head=4, rotary_dim=8)
    d.update(change)
    with pytest.raises(ConfigError, match=words):
        CodeGenConfig.from_dict(d)


def test_config_round_trip_and_old_keys():
    c = CodeGenConfig.from_dict({"model_type": "codegen", "n_embd": 64, "n_head": 4, "n_layer": 1,
                                 "rotary_dim": 8, "n_ctx": 512, "eos_token_id": 2})
    assert c.n_positions == 2048  # like the reference: n_ctx is not the window
    c2 = CodeGenConfig.from_dict(c.to_dict())
    assert c2 == c


def test_missing_path():
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        convsynth.load("./no/such/dir")


def test_directory_without_config(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        convsynth.load(tmp_path)


def test_directory_without_weights(tmp_path):
    reference_model("tiny").config.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="no weights"):
        convsynth.load(tmp_path)


def copy_ckpt(checkpoints, fmt, tmp_path):
    src, _ = checkpoints("tiny", fmt)
    dst = tmp_path / "ckpt"
    shutil.copytree(src, dst)
    return dst


def test_truncated_safetensors(checkpoints, tmp_path):
    d = copy_ckpt(checkpoints, "safetensors", tmp_path)
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        convsynth.load(d)


def test_garbage_safetensors(checkpoints, tmp_path):
    d = copy_ckpt(checkpoints, "safetensors", tmp_path)
    (d / "model.safetensors").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        convsynth.load(d)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def test_bin_that_needs_unsafe_unpickling(checkpoints, tmp_path):
    d = copy_ckpt(checkpoints, "bin", tmp_path)
    with open(d / "pytorch_model.bin", "wb") as f:
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(CheckpointError, match="unsafe unpickling"):
        convsynth.load(d)


def test_bin_that_is_not_a_state_dict(checkpoints, tmp_path):
    d = copy_ckpt(checkpoints, "bin", tmp_path)
    torch.save([torch.zeros(3)], d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        convsynth.load(d)


def test_missing_and_misshaped_tensors_are_named(checkpoints, tmp_path):
    d = copy_ckpt(checkpoints, "bin", tmp_path)
    sd = torch.load(d / "pytorch_model.bin", weights_only=True)
    del sd["transformer.h.1.mlp.fc_in.bias"]
    sd["transformer.ln_f.weight"] = torch.ones(32)
    sd["transformer.h.0.attn.extra"] = torch.ones(2)
    torch.save(sd, d / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as e:
        convsynth.load(d)
    msg = str(e.value)
    assert "missing tensor transformer.h.1.mlp.fc_in.bias" in msg
    assert "transformer.ln_f.weight has shape (32,)" in msg
    assert "unexpected tensor transformer.h.0.attn.extra" in msg


def test_unsupported_model_type(checkpoints, tmp_path):
    d = copy_ckpt(checkpoints, "safetensors", tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "llama"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="CodeGen checkpoints only"):
        convsynth.load(d)


def test_missing_shard(checkpoints, tmp_path):
    d = copy_ckpt(checkpoints, "safetensors-sharded", tmp_path)
    next(d.glob("model-0000*.safetensors")).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        convsynth.load(d)


def test_hub_id_offline_says_what_to_do():
    code = ("import convsynth\ntry:\n    convsynth.load('Salesforce/codegen-350M-mono')\n"
            "except convsynth.CheckpointError as e:\n    print('ERR', e)\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(ROOT / "tests" / ".artifacts" / "hf-empty"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "ERR" in out.stdout and "pass its path to convsynth.load()" in out.stdout, out.stdout + out.stderr


def test_convert_bin_to_safetensors(checkpoints, tmp_path):
    src, ref = checkpoints("tiny", "bin-sharded")
    out = subprocess.run([sys.executable, "-m", "convsynth", "convert", str(src), str(tmp_path / "st")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "st" / "model.safetensors").exists() and (tmp_path / "st" / "tokenizer.json").exists()
    a, b = convsynth.load(src), convsynth.load(tmp_path / "st")
    ids = list(range(100, 140))
    assert torch.equal(a.logits(ids), b.logits(ids))


def test_fp16_bin_like_the_hub_loads_as_fp32(tmp_path):
    ref = reference_model("tiny")
    d = write_checkpoint(ref, tmp_path / "fp16", "bin", dtype=torch.float16)
    cg = convsynth.load(d)
    assert cg.module.dtype == torch.float32
    ids = list(range(1000, 1030))
    with torch.no_grad():
        want = ref.half().float()(torch.tensor([ids])).logits[0]
    assert (cg.logits(ids) - want).abs().max() < 1e-4


PEAK = r"""
import sys
import torch, convsynth, convsynth.codegen, convsynth.tokenizer, safetensors.torch  # imports before the baseline

def status(key):  # VmHWM belongs to this exec's address space (ru_maxrss would carry the parent's peak over)
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

import gc
fast = False if sys.argv[2] == "eager" else sys.argv[2]
warm = convsynth.load(sys.argv[1], fast=fast)  # one-off costs (allocator, tokenizer, library set-up) are not the weights
del warm
gc.collect()
base = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset VmHWM to the current RSS
cg = convsynth.load(sys.argv[1], fast=fast)
for p in cg.module.parameters():  # touch every weight so mapped pages count
    p.sum()
nbytes = sum(p.numel() * p.element_size() for p in cg.module.parameters())
print((status("VmHWM:") - base) / nbytes)
"""


@pytest.mark.parametrize("fmt, dtype, fast, bound", [("safetensors", None, "eager", 1.3), ("bin", None, "eager", 1.3),
                                                     ("bin", torch.float16, "eager", 1.3),
                                                     ("safetensors", None, "onednn", 2.3)])
def test_peak_memory_while_loading(tmp_path, fmt, dtype, fast, bound):
    """Loading holds no second copy, also when an fp16 checkpoint (as on the hub) is upcast to fp32. The CPU's
    oneDNN path (the default where it fits) adds exactly its packed copy of the linear weights, nothing more."""
    from helpers import SHAPES
    SHAPES["mem"] = dict(n_embd=512, n_layer=6, n_head=8, rotary_dim=32, vocab_size=51200)  # ~300 MB fp32
    try:
        d = write_checkpoint(reference_model("mem"), tmp_path / fmt, fmt, dtype=dtype)
    finally:
        del SHAPES["mem"]
    out = subprocess.run([sys.executable, "-c", PEAK, str(d), fast], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    ratio = float(out.stdout.strip().splitlines()[-1])
    assert ratio < bound, f"peak memory while loading (fast={fast}) was {ratio:.2f}x the weights"


# ------------------------------------------------------------------ reliability (issue 18, issue 13 item 4)


@pytest.mark.parametrize("change, words", [
    (dict(n_layer="6"), "n_layer='6' .* must be int, not str"),
    (dict(n_embd=64.0), "n_embd=64.0 .* must be int, not float"),
    (dict(vocab_size=True), "vocab_size=True .* must be int, not bool"),
    (dict(layer_norm_epsilon="1e-5"), "layer_norm_epsilon='1e-5'"),
    (dict(rotary_dim=8.0), "rotary_dim=8.0"),
    (dict(eos_token_id="50256"), "eos_token_id='50256'"),
    (dict(layer_norm_epsilon=0), "layer_norm_epsilon=0 .* must be > 0"),
    (dict(auto_map={"AutoModelForCausalLM": "modeling_codegen.CodeGenForCausalLM"}),
     "auto_map .* custom modelling code.*CodeGen1 checkpoints only .CodeGenForCausalLM"),
    (dict(architectures=["CodeGen25ForCausalLM"]), "architectures=.* runs only CodeGenForCausalLM"),
    (dict(architectures="CodeGenForCausalLM"), "architectures="),
])
def test_config_fields_of_the_wrong_kind_are_named(change, words):
    d = dict(model_type="codegen", n_embd=64, n_layer=2, n_head=4, rotary_dim=8)
    d.update(change)
    with pytest.raises(ConfigError, match=words) as e:
        CodeGenConfig.from_dict(d, name="config.json")
    assert "\n" not in str(e.value)


def test_a_utf16_config_is_named(checkpoints, tmp_path):
    d = copy_ckpt(checkpoints, "safetensors", tmp_path)
    (d / "config.json").write_text((d / "config.json").read_text(), encoding="utf-16")
    with pytest.raises(ConfigError, match="not UTF-8"):
        convsynth.load(d)


def test_a_huge_context_window_allocates_only_what_is_used(checkpoints, tmp_path):
    d = copy_ckpt(checkpoints, "safetensors", tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["n_positions"] = 10**9  # the rotary tables alone would be 64 GB
    (d / "config.json").write_text(json.dumps(cfg))
    cg = convsynth.load(d, fast=False)
    small = convsynth.load(checkpoints("tiny")[0], fast=False)
    assert cg.complete("def f():", temperature=0, max_new_tokens=4) == \
        small.complete("def f():", temperature=0, max_new_tokens=4)
    assert cg.module.rope("cpu", 10)[0].shape[0] < 10_000


def test_a_model_vocabulary_smaller_than_its_tokenizer(checkpoints, tmp_path):
    d = copy_ckpt(checkpoints, "safetensors", tmp_path)
    convsynth.load(d).tokenizer.save(d)  # the checkpoint ships its tokenizer (50295 tokens)
    from safetensors.torch import load_file, save_file
    sd = load_file(d / "model.safetensors")
    for k in ("transformer.wte.weight", "lm_head.weight", "lm_head.bias"):
        sd[k] = sd[k][:50000].contiguous()
    save_file(sd, d / "model.safetensors", metadata={"format": "pt"})
    cfg = json.loads((d / "config.json").read_text())
    cfg["vocab_size"] = 50000
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="50295 tokens but the model has only 50000 embedding rows"):
        convsynth.load(d)
    (d / "tokenizer.json").unlink()  # no tokenizer of its own: ids only; a Session refuses at once
    cg = convsynth.load(d)
    with pytest.raises(convsynth.SessionError, match="50000 embedding rows"):
        convsynth.Session(cg)


def test_int8_tensors_are_refused_not_cast(checkpoints, tmp_path):
    d = copy_ckpt(checkpoints, "bin", tmp_path)
    sd = torch.load(d / "pytorch_model.bin", weights_only=True)
    sd["transformer.h.0.mlp.fc_in.weight"] = sd["transformer.h.0.mlp.fc_in.weight"].to(torch.int8)
    torch.save(sd, d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="fc_in.weight is int8"):
        convsynth.load(d)


def test_a_symlink_loop_is_named(checkpoints, tmp_path):
    d = copy_ckpt(checkpoints, "safetensors", tmp_path)
    (d / "model.safetensors").unlink()
    os.symlink(d / "model.safetensors", d / "model.safetensors")
    with pytest.raises(CheckpointError, match="symbolic link that loops"):
        convsynth.load(d)


def test_convert_over_an_older_sharded_checkpoint(checkpoints, tmp_path):
    old, _ = checkpoints("tiny", "safetensors-sharded")
    dst = tmp_path / "dst"
    shutil.copytree(old, dst)
    ref = reference_model("tiny", seed=5)  # other weights
    src = write_checkpoint(ref, tmp_path / "src", "safetensors")
    convsynth.codegen.checkpoint.convert(src, dst)
    assert not list(dst.glob("*.index.json")) and sorted(p.name for p in dst.glob("*.safetensors")) == \
        ["model.safetensors"]
    ids = [1, 2, 3, 4]
    with torch.no_grad():
        want = ref(torch.tensor([ids])).logits[0]
    assert (convsynth.load(dst).logits(ids) - want).abs().max().item() < 1e-4


def test_convert_refuses_a_file_and_an_unknown_dtype(checkpoints, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        convsynth.codegen.checkpoint.convert(checkpoints("tiny")[0], f)
    with pytest.raises(ConfigError, match="unknown dtype 'int8'"):
        convsynth.codegen.checkpoint.convert(checkpoints("tiny")[0], tmp_path / "x", dtype="int8")
    assert not (tmp_path / "x").exists()
