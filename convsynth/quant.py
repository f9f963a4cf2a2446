"""int8 weights (``convsynth.load(..., quantize="int8")``): per-channel int8 for every linear layer and the output.

Verbs: ``quantize`` (replace every ``nn.Linear`` of a loaded model with an ``Int8Linear``, from any float
checkpoint), ``convert`` (write an int8 checkpoint: ``convsynth convert --quantize int8``), ``load_int8`` (read
one), ``state_dict`` (the int8 tensors to save), ``describe`` (which kernel runs). Imported only when int8 is asked
for.

Weights: symmetric per output channel, ``w ~= qweight * scale[:, None]`` with qweight in [-127, 127].

Kernels, chosen once per model (``describe`` says which; one that cannot run warns once and the next one runs):
- ``fbgemm`` (CPU): PyTorch's quantized engine (``torch.ops.quantized.linear_dynamic``: fbgemm, or oneDNN, with
  VNNI where the CPU has it), int8 x int8 products with int32 sums, for prefill and decode alike. Measured on the
  2-core EPYC (1 thread): at one token it runs the 350M model's matrices 4-8x faster than fp32 and 10-50x faster
  than the weight-only kernel, and it is also the faster one at 512 tokens, so it serves both phases
  (``benchmarks/int8_kernels.py`` measures it again).
- ``weight_only`` (CUDA, and the CPU fallback): ``torch._weight_int8pack_mm``, activations stay in float.
- ``dequantize``: the last resort, a float matmul on the int8 weights (correct everywhere, slow).

Activations are quantized per token, not per call: each row is divided by its largest magnitude and two constant
rows (+1 and -1) go in with the rows, so the engine's dynamic range is always exactly [-1, 1]. A token's result
then does not depend on which other tokens share the call (the int32 sums are exact), so decoding one token at a
time, verifying k drafted tokens in one pass (speculative.py) and prefilling give each token the same logits.
"""
from __future__ import annotations

import functools
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import OptionError, describe as describe_error

MODES = (None, "none", "int8")
KERNELS = ("fbgemm", "weight_only", "dequantize")


def check_mode(quantize) -> str | None:
    """'int8' or None; anything else is an error that says what to pass."""
    if quantize in (None, False, "none", "fp32", ""):
        return None
    if quantize == "int8":
        return "int8"
    raise OptionError(f"quantize={quantize!r}: use 'int8' (int8 weights) or None (the checkpoint's own dtype).")


def quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) float weight -> (int8 (N, K), fp32 scale (N,)), symmetric per output channel."""
    w = w.detach().float()
    scale = (w.abs().amax(dim=1) / 127).clamp_min(1e-12)
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


@functools.lru_cache(maxsize=1)
def _has_vnni() -> bool:
    """VNNI multiplies u8 x s8 into int32 without the int16 saturation of older AVX2/AVX-512 paths, so the full
    8-bit activation range is safe; without it fbgemm needs 7-bit activations (reduce_range)."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return any(f in flags for f in (" avx512_vnni", " avx_vnni", " amx_int8"))


class Int8Linear(nn.Module):
    """A linear layer on int8 weights: buffers ``qweight`` (N, K) int8, ``scale`` (N,) fp32 and ``bias``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("scale", torch.ones(out_features, dtype=torch.float32, device=device))
        self.register_buffer("bias", torch.zeros(out_features, device=device) if bias else None)
        self.kernel = "dequantize"
        self._packed = None  # the quantized engine's packed weights (fbgemm kernel only)
        self._sentinel = None

    @classmethod
    def from_linear(cls, lin: nn.Linear) -> "Int8Linear":
        m = cls(lin.in_features, lin.out_features, lin.bias is not None, device="meta")
        q, s = quantize_weight(lin.weight)
        m.qweight, m.scale = q, s
        m.bias = lin.bias.detach().float().clone() if lin.bias is not None else None
        return m

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kernel={self.kernel}"

    # ---- kernels ---------------------------------------------------------------------------------------------
    def prepare(self, kernel: str) -> None:
        """Get ready to run ``kernel`` (packs the weights for the quantized engine); raises when it cannot."""
        self._packed = None
        if kernel == "fbgemm":
            with warnings.catch_warnings():  # quantized tensors are deprecated as a user API; the engine is not
                warnings.simplefilter("ignore")
                qw = torch._make_per_channel_quantized_tensor(
                    self.qweight.cpu(), self.scale.double().cpu(),
                    torch.zeros(self.out_features, dtype=torch.long), 0)
                self._packed = torch.ops.quantized.linear_prepack(qw, None)
            self._sentinel = torch.stack([torch.ones(self.in_features), -torch.ones(self.in_features)])
            self._reduce_range = not _has_vnni()
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)
        if self.kernel == "fbgemm" and x.device.type == "cpu":
            if self._packed is None:  # released while a FusedUp held this layer's product (packed again on use)
                self.prepare("fbgemm")
            y = self._fbgemm(x2.float())
        elif self.kernel in ("weight_only", "fbgemm"):  # fbgemm is CPU-only: a layer moved to a GPU goes here
            y = self._weight_only(x2)
        else:
            y = self._dequantize(x2)
        return y.to(x.dtype).reshape(*shape[:-1], self.out_features)

    def _fbgemm(self, x: torch.Tensor) -> torch.Tensor:
        s = x.abs().amax(dim=1, keepdim=True).clamp_min(1e-30)  # per-token range
        rows = x.new_empty((x.shape[0] + 2, x.shape[1]))         # range exactly [-1, 1] whatever the tokens:
        rows[:2] = self._sentinel                                # two sentinel rows, then x / s written in place
        torch.div(x, s, out=rows[2:])
        y = torch.ops.quantized.linear_dynamic(rows, self._packed, self._reduce_range)[2:]
        return torch.addcmul(self.bias, y, s) if self.bias is not None else y * s

    def _weight_only(self, x: torch.Tensor) -> torch.Tensor:
        dt = x.dtype if x.dtype in (torch.float16, torch.bfloat16, torch.float32) else torch.float32
        y = torch._weight_int8pack_mm(x.to(dt).contiguous(), self.qweight, self.scale.to(dt))
        return y + self.bias.to(dt) if self.bias is not None else y

    def _dequantize(self, x: torch.Tensor) -> torch.Tensor:
        w = self.qweight.to(x.dtype) * self.scale.to(x.dtype)[:, None]
        return F.linear(x, w, self.bias.to(x.dtype) if self.bias is not None else None)


def _layers(model) -> list[Int8Linear]:
    return [m for m in model.modules() if isinstance(m, Int8Linear)]


def _swap(model, make) -> None:
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, make(child))


def quantize(model) -> str:
    """Replace every ``nn.Linear`` of ``model`` (the output layer too) with an ``Int8Linear`` quantized from its
    weights, in place; choose the kernel. Returns ``describe(model)``."""
    if any(isinstance(m, nn.Linear) for m in model.modules()):
        device = model.device
        _swap(model, lambda lin: Int8Linear.from_linear(lin).to(device))
    return choose_kernel(model)


def choose_kernel(model) -> str:
    """Try the kernels in order on one layer; the first that runs and agrees with the plain dequantized product
    serves every layer. A kernel that fails warns once, naming why."""
    layers = _layers(model)
    if not layers:
        return describe(model)
    cuda = layers[0].qweight.device.type == "cuda"
    order = ["weight_only", "dequantize"] if cuda else ["fbgemm", "weight_only", "dequantize"]
    probe = layers[0]
    x = torch.randn(3, probe.in_features, generator=torch.Generator().manual_seed(0)).to(probe.qweight.device)
    with torch.no_grad():
        want = probe._dequantize(x.float())
    failed = []
    for kernel in order:
        try:
            for m in (layers if kernel == "fbgemm" else [probe]):
                m.prepare(kernel)
            with torch.no_grad():
                got = probe(x.to(model.dtype)).float()
            err = (got - want).abs().max().item()
            if not err <= 0.05 * want.abs().max().item() + 1e-3:
                raise RuntimeError(f"its result is off by {err:.3g}")
        except Exception as e:  # noqa: BLE001 -- a kernel missing from this build or this CPU: the next one runs
            failed.append(f"{kernel}: {describe_error(e)}")
            continue
        for m in layers:
            m.prepare(kernel)
        _fuse(model, kernel)
        model.int8_note = f"int8 ({kernel})"
        if failed:
            model.int8_note += f" (after {'; '.join(failed)})"
            warnings.warn(f"convsynth int8: {'; '.join(failed)}; the {kernel} kernel runs instead.",
                          RuntimeWarning, stacklevel=3)
        return model.int8_note
    raise RuntimeError(f"no int8 kernel runs here ({'; '.join(failed)})")


class FusedUp:
    """``Block.fused`` for int8 weights on the fbgemm kernel: qkv_proj and fc_in, which both read h, as one
    product. Per-channel weights and per-token activations make its result exactly the two products' (the same
    int8 values and scales, exact int32 sums), from one activation quantization and one call; at decode that is
    the faster form. out_proj and fc_out stay two products: one product over [attention | MLP] would quantize both
    with one scale per token. The two layers' own packed products are released (packed again if they are used)."""

    def __init__(self, block):
        qkv, fc_in = block.attn.qkv_proj, block.mlp.fc_in
        up = Int8Linear(qkv.in_features, qkv.out_features + fc_in.out_features, device="meta")
        up.qweight = torch.cat([qkv.qweight, fc_in.qweight])                    # (3C + inner, C)
        up.scale = torch.cat([qkv.scale, fc_in.scale])
        up.bias = torch.cat([fc_in.bias.new_zeros(qkv.out_features), fc_in.bias])
        up.prepare("fbgemm")
        up.qweight = None  # the engine's packed copy is what runs; the layers keep their own int8 weights
        self.layer = up
        qkv._packed = fc_in._packed = None

    def ready(self, block, h: torch.Tensor) -> bool:
        return h.device.type == "cpu" and block.attn.qkv_proj.kernel == block.mlp.fc_in.kernel == "fbgemm"

    def up(self, h: torch.Tensor) -> torch.Tensor:
        return self.layer(h)

    def down(self, block, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return block.attn.out_proj(y) + block.mlp.fc_out(m)


def _fuse(model, kernel: str) -> None:
    """Each block's FusedUp when the kernel is fbgemm (a CPU), else none (a float model's fused blocks too)."""
    from .model import Block
    for b in model.modules():
        if isinstance(b, Block):
            b.fused = FusedUp(b) if kernel == "fbgemm" and isinstance(b.attn.qkv_proj, Int8Linear) \
                and isinstance(b.mlp.fc_in, Int8Linear) and b.mlp.fc_in.bias is not None else None


def describe(model) -> str:
    return getattr(model, "int8_note", "int8 (not prepared)")


def is_quantized(model) -> bool:
    return any(isinstance(m, Int8Linear) for m in model.modules())


def state_dict(model) -> dict[str, torch.Tensor]:
    """The tensors ``convsynth convert --quantize int8`` writes: int8 weights, fp32 scales, float everything else."""
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def load_int8(directory, config, *, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Build the model on the meta device with Int8Linear layers and place a saved int8 checkpoint (``convert``)
    into it."""
    from .checkpoint import IGNORED, _assign, _find_weights, iter_tensors
    from .errors import CheckpointError
    from .model import CodeGenModel
    with torch.device("meta"):
        model = CodeGenModel(config)
    _swap(model, lambda lin: Int8Linear(lin.in_features, lin.out_features, lin.bias is not None, device="meta"))
    params = dict(model.named_parameters())
    expected = dict(params)
    expected.update((n, b) for n, b in model.named_buffers() if b is not None)
    problems, seen = [], set()
    for name, t in iter_tensors(_find_weights(directory), None, quantized=True):
        if IGNORED.search(name):
            continue
        want = expected.get(name)
        if want is None or tuple(t.shape) != tuple(want.shape):
            problems.append(f"{name} {tuple(t.shape)}" + (" is not expected" if want is None else
                                                         f" should be {tuple(want.shape)}"))
            continue
        keep = t.dtype if name.endswith((".qweight", ".scale")) or not t.is_floating_point() else \
            (dtype if name in params else torch.float32)
        value = t.to(device=device, dtype=keep)
        if name in params:
            _assign(model, name, nn.Parameter(value, requires_grad=False))
        else:
            owner, _, attr = name.rpartition(".")
            setattr(model.get_submodule(owner), attr, value)
        seen.add(name)
    problems += [f"missing tensor {n}" for n in expected if n not in seen]
    if problems:
        raise CheckpointError(f"the int8 weights in {directory} do not fit its config.json: "
                              + "; ".join(problems[:10]) + ". Write them again with convsynth convert --quantize int8.")
    model.eval()
    choose_kernel(model)
    return model


def convert(src, dst, *, dtype: str | None = None, revision: str | None = None) -> Path:
    """``convsynth convert --quantize int8``: write ``src`` (any checkpoint ``load`` reads, int8 already or not)
    to ``dst`` with int8 weights and per-channel scales, which ``load`` reads directly."""
    import dataclasses
    from . import checkpoint
    directory = checkpoint.resolve(src, revision)
    config = checkpoint.read_config(directory)
    checkpoint.check_destination(dst)
    cpu = torch.device("cpu")
    float_dtype = checkpoint.parse_dtype(dtype or "float32", cpu)
    if config.quantization is not None:
        model = load_int8(directory, config, device=cpu, dtype=float_dtype)
    else:
        model = checkpoint.load_weights(directory, config, device=cpu, dtype=float_dtype)
        quantize(model)
    return checkpoint.write(dst, state_dict(model), dataclasses.replace(config, quantization="int8"), directory)
