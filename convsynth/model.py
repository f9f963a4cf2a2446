"""CodeGen's forward pass in plain PyTorch (GPT-J-style parallel blocks, rotary "rotate every two").

Parameter names match transformers' ``CodeGenForCausalLM`` so checkpoints load as they are. The fused qkv weight
keeps its original layout (4 model-parallel chunks, each [query | value | key]); splitting it is a free view.
This module knows tensors, not text.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .cache import KVCache
from .config import MP_NUM, CodeGenConfig


def rotary_tables(n_positions: int, rotary_dim: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape (n_positions, rotary_dim), each value repeated for its pair, in fp32 as the reference
    builds them (same integer exponent and float ops, so the tables are bit-identical)."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0, rotary_dim, 2, dtype=torch.int64) / rotary_dim))
    angles = torch.arange(n_positions, dtype=torch.int64).float()[:, None] * inv_freq  # (P, rot/2)
    cos = torch.repeat_interleave(torch.cos(angles), 2, dim=-1)
    sin = torch.repeat_interleave(torch.sin(angles), 2, dim=-1)
    return cos.to(device), sin.to(device)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rotary_dim: int) -> torch.Tensor:
    """Rotate interleaved pairs of the first ``rotary_dim`` dims of x (B, T, H, D); cos/sin are (T, rot).
    The rotated part is computed in fp32 (the reference's tables are fp32, which promotes it), the rest passes."""
    rot, rest = x[..., :rotary_dim].float(), x[..., rotary_dim:]
    x1, x2 = rot[..., ::2], rot[..., 1::2]
    rotated = torch.stack((-x2, x1), dim=-1).flatten(-2)
    cos, sin = cos[:, None, :], sin[:, None, :]  # broadcast over heads
    out = rot * cos + rotated * sin
    return torch.cat([out, rest.float()], dim=-1) if rest.shape[-1] else out


class Attention(nn.Module):
    def __init__(self, config: CodeGenConfig, layer: int):
        super().__init__()
        self.layer, self.n_head, self.head_dim = layer, config.n_head, config.head_dim
        self.rotary_dim = config.rotary_dim
        self.qkv_proj = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)
        self.out_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)

    def forward(self, x, cos, sin, cache: KVCache | None, mask):
        return self.out_proj(self.core(self.qkv_proj(x), cos, sin, cache, mask, x.dtype))

    def core(self, qkv, cos, sin, cache: KVCache | None, mask, dtype: torch.dtype):
        """The attention between the two products: qkv_proj's output (B, T, 3C) -> the heads' output (B, T, C)
        that out_proj takes, in ``dtype`` (the block input's: under autocast the product's may differ). ``qkv``
        may be a slice of a wider product (a fused block's; its last dim contiguous)."""
        B, T, C = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
        H, D = self.n_head, self.head_dim
        qkv = qkv.view(B, T, MP_NUM, 3, C // MP_NUM)               # chunk c holds heads c*H/4.. as [q | v | k]
        q, v, k = qkv.unbind(3)                                     # each (B, T, 4, C/4)
        q = apply_rotary(q.reshape(B, T, H, D), cos, sin, self.rotary_dim)  # (B, T, H, D) fp32
        k = apply_rotary(k.reshape(B, T, H, D), cos, sin, self.rotary_dim)
        v = v.reshape(B, T, H, D)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2).to(dtype), v.transpose(1, 2)  # (B, H, T, D)
        if cache is not None:
            k, v = cache.append(self.layer, k, v)                   # (B, H, L+T, D)
        if dtype != torch.float32 and qkv.device.type == "cpu":
            # CPU half-precision attention kernels lose accuracy; the reference keeps scores in fp32 too.
            y = F.scaled_dot_product_attention(q, k.float(), v.float(), attn_mask=mask,
                                               is_causal=mask is None and T > 1)
        else:
            y = F.scaled_dot_product_attention(q.to(v.dtype), k, v, attn_mask=mask,
                                               is_causal=mask is None and T > 1)
        return y.to(dtype).transpose(1, 2).reshape(B, T, C)          # (B, T, C)


class MLP(nn.Module):
    def __init__(self, config: CodeGenConfig):
        super().__init__()
        self.fc_in = nn.Linear(config.n_embd, config.inner_dim)
        self.fc_out = nn.Linear(config.inner_dim, config.n_embd)
        self.approximate = "none" if config.activation_function == "gelu" else "tanh"

    def forward(self, x):
        return self.fc_out(self.act(self.fc_in(x)))

    def act(self, u):
        return F.gelu(u, approximate=self.approximate)


class Block(nn.Module):
    # A fused form of the block's four products (onednn.py, quant.py), or None. Both branches read the same h, so
    # qkv_proj and fc_in can run as one product, and out_proj and fc_out as one on [attention | MLP] (fewer,
    # larger products: int8 decode measured 8 % faster, fp32 the same). It has ``ready(block, h)`` (can it
    # serve this call), ``up(h)`` -> [qkv | fc_in] and ``down(block, y, m)`` -> out_proj(y) + fc_out(m).
    fused = None

    def __init__(self, config: CodeGenConfig, layer: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = Attention(config, layer)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, cache, mask):
        h = self.ln_1(x)  # one LayerNorm feeds both branches (GPT-J parallel block)
        f = self.fused
        if f is not None and f.ready(self, h):
            up = f.up(h)                                            # (B, T, 3C + inner): [qkv | fc_in]
            qkv, u = up.split((3 * h.shape[-1], up.shape[-1] - 3 * h.shape[-1]), dim=-1)
            return x + f.down(self, self.attn.core(qkv, cos, sin, cache, mask, h.dtype), self.mlp.act(u))
        return x + self.attn(h, cos, sin, cache, mask) + self.mlp(h)


class CodeGenModel(nn.Module):
    """CodeGen for causal LM. ``forward(ids, cache)`` runs new tokens at positions ``cache.length...`` and
    appends their keys/values to the cache."""

    def __init__(self, config: CodeGenConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=True)
        self._rope: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}  # fp32 tables per device

    # From the embedding, which int8 weights (quant.py) leave in float: the activations' device and dtype.
    @property
    def device(self) -> torch.device:
        return self.transformer.wte.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.wte.weight.dtype

    def rope(self, device, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin tables covering at least ``length`` positions (default: the whole context window). They grow
        by doubling as longer prompts come: a config with a huge n_positions costs only what is used."""
        # Kept outside the module's buffers so .to(half) never rounds the tables.
        device = torch.device(device)
        n = self.config.n_positions
        need = n if length is None else min(length, n)
        have = self._rope.get(device)
        if have is None or have[0].shape[0] < need:
            size = n if length is None else min(n, max(need, 2 * (have[0].shape[0] if have else 0), 256))
            with torch.inference_mode(False):  # normal tensors: a model used for inference can still be trained
                self._rope[device] = rotary_tables(size, self.config.rotary_dim, device)
        return self._rope[device]

    def new_cache(self, batch: int = 1, capacity: int = 0) -> KVCache:
        return KVCache.for_config(self.config, batch=batch, capacity=capacity, dtype=self.dtype, device=self.device)

    def forward(self, ids: torch.Tensor, cache: KVCache | None = None, *, last_only: bool = False) -> torch.Tensor:
        """ids (B, T) -> fp32 logits (B, T, vocab), or (B, 1, vocab) with ``last_only``."""
        B, T = ids.shape
        start = cache.length if cache is not None else 0
        if start + T > self.config.n_positions:
            raise ValueError(f"{start + T} positions exceed the context window of {self.config.n_positions}")
        cos, sin = self.rope(ids.device, start + T)
        cos, sin = cos[start:start + T], sin[start:start + T]  # (T, rot)
        mask = None
        if start and T > 1:  # new tokens after cached ones: causal, offset by the cached length
            mask = torch.ones(T, start + T, dtype=torch.bool, device=ids.device).tril(diagonal=start)
        logits = self.trunk(ids, cos, sin, cache, mask, last_only=last_only)
        if cache is not None:
            cache.advance(T)
        return logits

    def trunk(self, ids: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache, mask: torch.Tensor | None, *,
              last_only: bool = False) -> torch.Tensor:
        """The layers every decode path runs, shared by ``forward`` and the fixed-shape step (fast.py): ids (B, T)
        at the positions whose rotary rows are ``cos``/``sin`` (T, rot) -> fp32 logits (B, T or 1, V). Each layer
        writes its keys/values through ``cache`` (a KVCache, or the fixed-shape step's slot) and attends under
        ``mask`` (None: causal, or a single token)."""
        x = self.transformer.wte(ids)                           # (B, T, C)
        for block in self.transformer.h:
            x = block(x, cos, sin, cache, mask)
        if last_only:
            x = x[:, -1:]
        return self.lm_head(self.transformer.ln_f(x)).float()   # (B, T or 1, V)

    @torch.no_grad()
    def init_weights(self, seed: int = 0, std: float = 0.02) -> "CodeGenModel":
        """The reference's initialisation (normal(0, 0.02), zero biases, unit LayerNorms), seeded."""
        g = torch.Generator().manual_seed(seed)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
                if getattr(m, "bias", None) is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.LayerNorm):
                m.weight.fill_(1.0)
                m.bias.zero_()
        return self

    def num_parameters(self) -> int:
        # int8 layers (quant.py) keep their weights as buffers named qweight
        return sum(p.numel() for p in self.parameters()) + sum(
            b.numel() for n, b in self.named_buffers() if n.endswith(".qweight"))
