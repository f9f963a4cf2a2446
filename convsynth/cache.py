"""The KV cache: preallocated key/value buffers for every layer and a length.

Verbs: ``reserve`` (make room before a loop so decoding never allocates), ``append`` (done by each attention
layer during a forward pass; ``advance`` commits the new length once all layers have written), ``rewind`` (forget
everything past a position: undo, cut tokens, cache reuse), ``fork`` (an independent copy) and ``expand``
(repeat batch row 0, so several samples share one prefill).
"""
from __future__ import annotations

import torch


class KVCache:
    """Keys and values of shape (n_layer, batch, n_head, capacity, head_dim), valid up to ``length``."""

    def __init__(self, n_layer: int, n_head: int, head_dim: int, *, max_length: int, batch: int = 1,
                 capacity: int = 0, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                 step: int = 256):
        self.n_layer, self.n_head, self.head_dim = n_layer, n_head, head_dim
        self.max_length = max_length  # the model's context window: the cache never grows past it
        self.step = step              # growth granularity, so growing is rare
        self.dtype, self.device = dtype, torch.device(device)
        self.length = 0
        self.k = self.v = None
        self._alloc(batch, min(max(capacity, 0), max_length))

    @classmethod
    def for_config(cls, config, *, batch: int = 1, capacity: int = 0, dtype=torch.float32, device="cpu"):
        return cls(config.n_layer, config.n_head, config.head_dim, max_length=config.n_positions, batch=batch,
                   capacity=capacity, dtype=dtype, device=device)

    def _alloc(self, batch: int, capacity: int) -> None:
        shape = (self.n_layer, batch, self.n_head, capacity, self.head_dim)
        k = torch.zeros(shape, dtype=self.dtype, device=self.device)
        v = torch.zeros(shape, dtype=self.dtype, device=self.device)
        if self.k is not None and self.length:
            k[:, :, :, :self.length] = self.k[:, :, :, :self.length]
            v[:, :, :, :self.length] = self.v[:, :, :, :self.length]
        self.k, self.v = k, v

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    def reserve(self, n: int) -> None:
        """Make sure ``n`` positions fit without reallocating (rounded up to ``step``, capped at max_length)."""
        if n > self.max_length:
            raise ValueError(f"cannot reserve {n} positions: the context window is {self.max_length}")
        if n > self.capacity:
            self._alloc(self.batch, min(self.max_length, -(-n // self.step) * self.step))

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this forward pass's keys/values (batch, n_head, T, head_dim) at ``length`` for one layer and
        return the keys/values of every position so far. ``advance(T)`` commits them after the last layer."""
        t = k.shape[2]
        end = self.length + t
        if end > self.capacity:
            self.reserve(end)
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, t: int) -> None:
        self.length += t

    def rewind(self, position: int) -> None:
        """Forget every position at or past ``position`` (no copy: later writes overwrite them)."""
        if not 0 <= position <= self.length:
            raise ValueError(f"cannot rewind to {position}: the cache holds {self.length} positions")
        self.length = position

    def fork(self) -> "KVCache":
        """An independent copy holding the same positions."""
        new = KVCache(self.n_layer, self.n_head, self.head_dim, max_length=self.max_length, batch=self.batch,
                      capacity=0, dtype=self.dtype, device=self.device, step=self.step)
        new.k = self.k[:, :, :, :self.capacity].clone()
        new.v = self.v[:, :, :, :self.capacity].clone()
        new.length = self.length
        return new

    def expand(self, batch: int, capacity: int | None = None) -> "KVCache":
        """A new cache whose ``batch`` rows all start as copies of row 0 (one prefill shared by many samples)."""
        cap = max(self.length, capacity or self.capacity)
        new = KVCache(self.n_layer, self.n_head, self.head_dim, max_length=self.max_length, batch=batch,
                      capacity=cap, dtype=self.dtype, device=self.device, step=self.step)
        new.k[:, :, :, :self.length] = self.k[:, :1, :, :self.length]
        new.v[:, :, :, :self.length] = self.v[:, :1, :, :self.length]
        new.length = self.length
        return new

    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2

    def __repr__(self) -> str:
        return (f"KVCache(length={self.length}, capacity={self.capacity}, batch={self.batch}, "
                f"layers={self.n_layer}, dtype={self.dtype})")


def common_prefix(a, b) -> int:
    """How many leading items ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class PrefixCache:
    """A KVCache and exactly the token ids whose keys/values it holds: the one owner of both, so they never
    drift apart. The cache itself is made on first use (``new_cache()``).

    Verbs: ``match`` (how many leading ids of a prompt the cache would serve), ``reuse`` (rewind to that prefix
    before generating; returns it), ``record`` (after generating: the cache holds a prefix of these ids), ``sync``
    (the text changed without generating: forget what no longer matches), ``clear`` (forget everything: the
    weights changed) and ``fork`` (an independent copy).

    ``weights`` (optional): a callable naming the model's weights now (``CodeGen.weights``); keys/values made with
    other weights are forgotten before they would be served (int8 weights switched on in another session).
    """

    def __init__(self, new_cache, weights=None):
        self._new_cache, self._weights = new_cache, weights
        self.cache: KVCache | None = None
        self._ids: list[int] = []
        self._made_with = None  # what weights() said when the keys/values were made

    @property
    def ids(self) -> list[int]:
        """A copy of the ids the cache holds."""
        self._check_weights()
        return list(self._ids)

    def __len__(self) -> int:
        self._check_weights()
        return len(self._ids)

    def match(self, ids) -> int:
        """How many leading ``ids`` the cache holds, keeping at least one to prefill (the model needs a token)."""
        self._check_weights()
        return min(common_prefix(self._ids, ids), max(len(ids) - 1, 0))

    def reuse(self, ids) -> int:
        """Rewind the cache to ``match(ids)`` (making the cache on first use) and return that many: the caller
        prefills ``ids[keep:]``."""
        self._check_weights()
        if self.cache is None:
            self.cache = self._new_cache()
            self._made_with = self._weights() if self._weights is not None else None
        keep = self.match(ids)
        self._rewind(keep)
        return keep

    def record(self, ids) -> None:
        """After generating from a prompt: ``ids`` is the prompt and the sampled ids; the cache holds its first
        ``cache.length`` (every one but the last sampled). A cache past ``ids`` (a failed step) is emptied."""
        ids = list(ids)
        held = ids[:self.cache.length] if self.cache.length <= len(ids) else []
        self.cache.rewind(len(held))
        self._ids = held

    def sync(self, ids) -> None:
        """The text is now ``ids`` (undo, an edit, cut tokens): forget what no longer matches."""
        if self.cache is not None:
            self._rewind(common_prefix(self._ids, ids))

    def _rewind(self, keep: int) -> None:
        self.cache.rewind(keep)
        self._ids = self._ids[:keep]

    def clear(self) -> None:
        """Forget every id and the keys/values (the cache is made again on the next ``reuse``)."""
        self.cache, self._ids = None, []

    def _check_weights(self) -> None:
        if self.cache is not None and self._weights is not None and self._weights() != self._made_with:
            self.clear()

    def fork(self) -> "PrefixCache":
        """An independent copy: same ids, its own keys and values."""
        new = PrefixCache(self._new_cache, self._weights)
        new.cache = self.cache.fork() if self.cache is not None else None
        new._ids, new._made_with = list(self._ids), self._made_with
        return new

    def __repr__(self) -> str:
        return f"PrefixCache({len(self._ids)} ids, {self.cache!r})"
