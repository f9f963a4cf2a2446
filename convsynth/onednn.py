"""CPU decode on oneDNN-packed weights (``convsynth.load(..., fast="onednn")``).

At batch 1 a decode step is one matrix-vector product per weight matrix, so its speed is the speed at which the
weights stream from memory. PyTorch's default CPU path (``addmm`` through MKL) streams a (1, K) x (K, N) product at
well under the machine's bandwidth on small machines; oneDNN's inner-product kernel on a weight reordered once into
its blocked layout streams it markedly faster (on the 2-core EPYC where convsynth was built: 44.6 ms against 69.6 ms
for the 350M model's matrices in benchmarks/gemv_ceiling.py, and 64 against 82 ms per decoded token end to end).

Packing gives each transformer block a ``FusedBlock`` (``Block.fused``): its two products on the same input
(qkv_proj, fc_in) packed as one, and its two output products (out_proj, fc_out) as one on the concatenated
input, so a decode step streams the block's weights in two products instead of four. Every other ``nn.Linear``
(the output layer) becomes a ``PackedLinear`` in place (its class changes; the module, its parameters and hooks
stay the same objects). The packed copies live beside the layers' own weights, which stay as they are (state
dicts, conversion and the reference comparisons keep working), so the weights take twice the memory. ``fast="auto"`` on a CPU therefore packs
only when the copy fits easily (at most a quarter of the memory available); ``fast="onednn"`` packs regardless.
The packed copy serves inference only: with gradients enabled a layer uses its own weight (so training works); a
weight changed in place or replaced (``load_state_dict``, an optimizer step, ``.data =``) is repacked at its next use;
a layer moved off the CPU or to another dtype (``.to("cuda")``, ``.half()``) computes with its own weight.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import describe

AUTO_SHARE = 0.25  # fast="auto" packs when the packed copy is at most this share of the available memory
DTYPES = (torch.float32, torch.bfloat16)


def unavailable(model) -> str:
    """Why the packed path cannot run for ``model`` ('' when it can)."""
    if model.device.type != "cpu":
        return f"oneDNN packing is a CPU path (the model is on {model.device})"
    if not torch.backends.mkldnn.is_available():
        return "this PyTorch build has no oneDNN (mkldnn)"
    if model.dtype not in DTYPES:
        return f"oneDNN packing supports float32 and bfloat16 (the model is {str(model.dtype).replace('torch.', '')})"
    return ""


def available_bytes() -> int | None:
    """Memory available to new allocations (Linux: MemAvailable, and a cgroup v2 limit when one is set), or None
    when unknown."""
    have = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    have = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:  # a container's limit: MemAvailable does not see it
        limit = open("/sys/fs/cgroup/memory.max").read().strip()
        if limit != "max":
            left = int(limit) - int(open("/sys/fs/cgroup/memory.current").read())
            have = left if have is None else min(have, left)
    except (OSError, ValueError):
        pass
    return have


def no_room(model) -> str:
    """Why ``fast="auto"`` should not pack ``model`` for lack of memory ('' when the copy fits easily)."""
    need = sum(m.weight.numel() * m.weight.element_size() for m in model.modules() if isinstance(m, nn.Linear))
    have = available_bytes()
    if have is not None and need > AUTO_SHARE * have:
        return (f"a oneDNN-packed copy of the weights ({need / 2**30:.1f} GiB) would take over a quarter of the "
                f"{have / 2**30:.1f} GiB available; load(fast='onednn') packs anyway")
    return ""


def _reorder(weight: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 1)


def _key(weight: torch.Tensor) -> tuple:
    """What the packed copy was made from: storage, dtype and, for ordinary tensors, the in-place version."""
    version = None if weight.is_inference() else weight._version  # inference tensors keep no version counter
    return weight.data_ptr(), weight.dtype, weight.device, version


class PackedLinear(nn.Linear):
    """An ``nn.Linear`` that computes through a oneDNN-packed copy of its weight (``packed_weight``, made from the
    weight ``packed_key`` names) when it can, and through its own weight otherwise: with gradients, after a move
    or a cast, or when the weight cannot be packed. ``pack_linear`` makes one in place, ``unpack_linear`` undoes
    it. The copy is not a parameter or a buffer: state dicts and ``.to()`` see the plain layer."""

    packed_weight: torch.Tensor | None
    packed_key: tuple | None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if ((torch.is_grad_enabled() and (w.requires_grad or x.requires_grad))  # the copy carries no gradient
                or w.device.type != "cpu" or w.dtype not in DTYPES or x.dtype != w.dtype):  # moved or cast since
            return F.linear(x, w, self.bias)
        key = _key(w)
        if key != self.packed_key:  # changed or replaced since it was packed
            try:
                self.packed_weight = _reorder(w)
            except Exception:  # noqa: BLE001 -- cannot pack this weight now: the plain path, until it changes
                self.packed_weight = None
            self.packed_key = key
        if self.packed_weight is None:
            return F.linear(x, w, self.bias)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [None], "")


def pack_linear(m: nn.Linear, packed: torch.Tensor) -> PackedLinear:
    """``m`` becomes a PackedLinear computing through ``packed`` (its weight reordered), in place."""
    if not isinstance(m, PackedLinear):
        m.plain_class = type(m)
        m.__class__ = PackedLinear
    m.packed_weight, m.packed_key = packed, _key(m.weight)
    return m


def unpack_linear(m: PackedLinear) -> nn.Linear:
    """Back to the layer's own class and weight, in place; the packed copy is freed."""
    m.__class__ = m.__dict__.pop("plain_class", nn.Linear)
    for name in ("packed_weight", "packed_key"):
        m.__dict__.pop(name, None)
    return m


def pack(model, *, auto: bool = False):
    """Pack ``model`` for oneDNN: each transformer block's four products become two packed ones (a FusedBlock,
    ``Block.fused``) and every other ``nn.Linear`` a PackedLinear. Returns the decode path
    (``generate.DecodePath``) that now runs: 'onednn', or eager with the reason 'asked for onednn: <why not>'
    after a warning (with ``auto``, chosen rather than asked for: 'auto: <why not>', quietly)."""
    from .generate import DecodePath
    from .model import Block
    why = unavailable(model)
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    in_blocks = {id(m) for b in blocks for m in _block_linears(b)}
    linears = [m for m in model.modules() if isinstance(m, nn.Linear) and id(m) not in in_blocks]
    if not why:
        try:
            fused = [FusedBlock(b) for b in blocks]
            packed = [_reorder(m.weight) for m in linears]
        except Exception as err:  # noqa: BLE001 -- bf16 on a CPU without the instructions for it, a private op
            # that a later PyTorch renamed...: any failure means the plain path
            why = f"oneDNN could not pack the weights ({describe(err)})"
    if why and auto:
        return DecodePath("eager", f"auto: {why}")
    if why:
        warnings.warn(f"convsynth fast decode: {why}; decoding runs on the eager path.", RuntimeWarning,
                      stacklevel=3)
        return DecodePath("eager", f"asked for onednn: {why}")
    for b, f in zip(blocks, fused):
        b.fused = f
    for m, w in zip(linears, packed):
        pack_linear(m, w)
    return DecodePath("onednn")


def unpack(model) -> None:
    """Back to the plain ``nn.Linear`` layers and blocks (and free the packed copies)."""
    for m in model.modules():
        if isinstance(m, PackedLinear):
            unpack_linear(m)
        if isinstance(m.__dict__.get("fused"), FusedBlock):
            del m.fused


def _block_linears(block) -> tuple[nn.Linear, ...]:
    return block.attn.qkv_proj, block.mlp.fc_in, block.attn.out_proj, block.mlp.fc_out


class FusedBlock:
    """A block's four products as two packed ones (``Block.fused``): [qkv_proj; fc_in] on h, and
    [out_proj | fc_out] on [attention | MLP]: the same weights in two matrix-vector products instead of four at
    decode (on the 2-core EPYC, 12 alternating rounds, the 350M model decoded at the same speed either way: the
    products already stream at the bandwidth the machine gives). Like a PackedLinear it serves inference only and repacks when a weight or bias changes; otherwise
    (gradients, another device or dtype, a weight that cannot be packed) the block runs its own layers. The second
    product sums out_proj's and fc_out's terms in one reduction: the same value to fp32 rounding. CodeGen's
    qkv_proj and out_proj have no bias; fc_in's and fc_out's go into the two products."""

    def __init__(self, block):
        self.pack(block)  # raises when the weights cannot be packed (onednn.pack then takes the plain path)

    @staticmethod
    def _tensors(block) -> tuple[torch.Tensor, ...]:
        qkv, fc_in, out, fc_out = _block_linears(block)
        return qkv.weight, fc_in.weight, fc_in.bias, out.weight, fc_out.weight, fc_out.bias

    def pack(self, block) -> None:
        ts = self._tensors(block)
        self.key = tuple(map(_key, ts))
        self.up_weight = None  # until packing succeeds: the block's own layers serve
        qkv_w, in_w, in_b, out_w, fc_out_w, fc_out_b = ts
        with torch.no_grad():
            up_weight = _reorder(torch.cat([qkv_w, in_w]))                        # (3C + inner, C)
            self.down_weight = _reorder(torch.cat([out_w, fc_out_w], dim=1))      # (C, C + inner)
            self.up_bias = torch.cat([in_b.new_zeros(qkv_w.shape[0]), in_b])      # (3C + inner,)
            self.down_bias = fc_out_b.detach()
        self.up_weight = up_weight  # last: set means ready

    def ready(self, block, h: torch.Tensor) -> bool:
        """Whether the packed products can serve this call (repacking first when a weight changed)."""
        ts = self._tensors(block)
        if ((torch.is_grad_enabled() and (h.requires_grad or any(t.requires_grad for t in ts)))  # no gradient here
                or h.device.type != "cpu" or h.dtype not in DTYPES or any(t.dtype != h.dtype for t in ts)):
            return False
        if tuple(map(_key, ts)) != self.key:  # changed or replaced since it was packed
            try:
                self.pack(block)
            except Exception:  # noqa: BLE001 -- cannot pack these weights now: the plain layers, until they change
                pass
        return self.up_weight is not None

    def up(self, h: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(h, self.up_weight, self.up_bias, "none", [None], "")

    def down(self, block, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(torch.cat([y, m], dim=-1), self.down_weight, self.down_bias,
                                                  "none", [None], "")
