"""Fast decode: a fixed-shape one-token step, replayed from CUDA graphs (or compiled), for the generation loop.

The eager decode step launches ~25 small kernels per layer; at batch 1 on a GPU the launches, not the weights,
set the pace. A CUDA graph replays the whole step as one launch, but it needs fixed shapes and fixed addresses:

- the KV cache is reserved to its full context window once, so its buffers never move;
- the new token and its position live in static input tensors; the position is a device tensor, so the rotary
  rows are gathered and the keys/values written (``index_copy_``) without Python seeing it;
- attention reads a fixed-size window of the cache (a *bucket*: 256, 512, ... positions) with a mask hiding the
  positions past the new token; one graph per bucket, so short contexts do not pay for the whole window.

Modes: ``"cuda_graphs"`` (default on CUDA), ``"compile"`` (``torch.compile`` of the same step, any device),
``"eager"``. A mode that cannot run says so once, with the reason, and the eager path runs instead;
``FastDecoder.path`` reports which path is in use. Imported only when a fast mode is asked for.
"""
from __future__ import annotations

import threading
import warnings
from collections import OrderedDict

import torch

from .cache import KVCache
from .errors import OptionError, describe

MODES = ("auto", "cuda_graphs", "compile", "eager")
MIN_BUCKET = 256
# One capture at a time in this process: a capture fails if another thread allocates or syncs on the device
# meanwhile (two models, a session fork), and this decoder's lock is per model.
_CAPTURE_LOCK = threading.Lock()


def buckets(n_positions: int) -> list[int]:
    """Attention window sizes: powers of two from 256, the last one the whole context window."""
    out, b = [], MIN_BUCKET
    while b < n_positions:
        out.append(b)
        b *= 2
    return out + [n_positions]


class _StaticSlot:
    """Stands in for the KVCache inside one fixed-shape step: writes at a position held in a device tensor and
    returns a bucket-sized window of every layer's keys/values."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor, bucket: int):
        self.k, self.v, self.pos, self.bucket = k, v, pos, bucket

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        # k, v: (B, H, 1, D) -> written at self.pos; returns (B, H, bucket, D) views
        self.k[layer].index_copy_(2, self.pos, k)
        self.v[layer].index_copy_(2, self.pos, v)
        return self.k[layer, :, :, :self.bucket], self.v[layer, :, :, :self.bucket]


def static_step(model, tok: torch.Tensor, pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                bucket: int) -> torch.Tensor:
    """One decode step with fixed shapes: tok (B, 1) at position pos (1,) -> fp32 logits (B, V). Writes the
    token's keys/values into k/v (n_layer, B, H, capacity, D). No host synchronisation, no allocation that
    depends on data: safe to capture in a CUDA graph."""
    cos_t, sin_t = model.rope(tok.device)
    cos, sin = cos_t.index_select(0, pos), sin_t.index_select(0, pos)          # (1, rot)
    mask = (torch.arange(bucket, device=tok.device) <= pos).view(1, 1, 1, bucket)  # keys up to the new token
    return model.trunk(tok, cos, sin, _StaticSlot(k, v, pos, bucket), mask)[:, -1]  # (B, V): the model's layers


class FastDecoder:
    """Decode steps for ``model`` along the chosen path. ``step(tok, cache)`` is a drop-in for the eager
    ``model(tok[:, None], cache, last_only=True)[:, -1]``: it advances the cache by one and returns (B, V) logits.
    The returned tensor may be a static buffer that the next step overwrites: use it before calling again."""

    def __init__(self, model, mode: str = "auto", *, max_graphs: int = 16):
        if mode not in MODES:
            raise OptionError(f"fast={mode!r}: choose one of {', '.join(MODES)} (or False for eager).")
        self.model = model
        self.requested = mode
        self.buckets = buckets(model.config.n_positions)
        self.max_graphs = max_graphs
        self._graphs: OrderedDict = OrderedDict()  # (k ptr, shape, dtype, bucket) -> (graph, tok, pos, out)
        self._compiled = None
        self._pos = None      # compile path: the position as a device tensor, refilled each step (no host copy)
        self._pool = None
        self._streams: dict = {}  # device -> side stream for warm-up and capture
        self._no_room: tuple | None = None  # (cache id, window): the full-window cache did not fit; eager for it
        self.path, self.reason = self._choose(mode)
        if self.reason:
            self._warn(self.reason)

    # ------------------------------------------------------------------------------------------- choosing
    def _choose(self, mode: str) -> tuple[str, str]:
        cuda = self.model.device.type == "cuda"
        if mode == "eager":
            return "eager", ""
        if mode == "auto":
            return ("cuda_graphs", "") if cuda else ("eager", "")
        if mode == "cuda_graphs" and not cuda:
            return "eager", (f"CUDA graphs need the model on a CUDA device (it is on {self.model.device}); "
                             "decoding runs on the eager path.")
        if mode == "compile" and not hasattr(torch, "compile"):
            return "eager", "torch.compile is not available in this PyTorch; decoding runs on the eager path."
        return mode, ""

    def _warn(self, message: str) -> None:
        warnings.warn(f"convsynth fast decode: {message}", RuntimeWarning, stacklevel=3)

    def _fall_back(self, err: BaseException) -> None:
        why = describe(err)
        if err.__context__ is not None:  # a failed capture reports "invalidated"; the cause is the context
            why += f", after {describe(err.__context__)}"
        self.reason = f"{self.path} failed ({why}); decoding runs on the eager path from now on."
        self.path = "eager"
        self._graphs.clear()
        self._warn(self.reason)

    def describe(self) -> str:
        return self.path + (f" (asked for {self.requested}: {self.reason})" if self.reason else "")

    # -------------------------------------------------------------------------------------------- the step
    def bucket_for(self, n: int) -> int:
        return next(b for b in self.buckets if b >= n)

    def step(self, tok: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """tok (B,) at position cache.length -> logits (B, V); the cache advances by one."""
        if (self.path == "eager" or cache.length + 1 > cache.max_length
                or self._no_room == (id(cache), cache.max_length)):
            return self.model(tok[:, None], cache, last_only=True)[:, -1]
        if cache.capacity < cache.max_length:
            try:
                cache.reserve(cache.max_length)  # fixed addresses for the graphs: grow once, to the full window
            except torch.cuda.OutOfMemoryError:  # (torch.OutOfMemoryError from 2.5 on)
                # Not a broken fast path, just a full device: this cache decodes eagerly, the next may fit.
                self._no_room = (id(cache), cache.max_length)
                self._warn(f"no device memory for a KV cache of the whole window ({cache.max_length} positions x "
                           f"batch {cache.batch}); this generation decodes on the eager path.")
                return self.model(tok[:, None], cache, last_only=True)[:, -1]
        try:
            bucket = self.bucket_for(cache.length + 1)
            if self.path == "cuda_graphs":
                out = self._replay(tok, cache, bucket)
            else:
                out = self._compiled_step(tok, cache, bucket)
        except Exception as err:  # noqa: BLE001 -- any failure of a fast path must leave a working decoder
            self._fall_back(err)
            return self.model(tok[:, None], cache, last_only=True)[:, -1]
        cache.advance(1)
        return out

    def _compiled_step(self, tok, cache, bucket):
        if self._compiled is None:
            opts = dict(mode="reduce-overhead") if self.model.device.type == "cuda" else {}
            self._compiled = torch.compile(static_step, fullgraph=True, dynamic=False, **opts)
        if self._pos is None or self._pos.device != tok.device:
            self._pos = torch.zeros(1, dtype=torch.long, device=tok.device)
        self._pos.fill_(cache.length)
        # The step writes into the cache: marked static, Inductor's CUDA graphs keep it instead of skipping the
        # graph for "mutated inputs".
        torch._dynamo.mark_static_address(cache.k, guard=False)  # no guard: a new cache must not recompile
        torch._dynamo.mark_static_address(cache.v, guard=False)
        return self._compiled(self.model, tok[:, None], self._pos, cache.k, cache.v, bucket)

    def _replay(self, tok, cache, bucket):
        key = (cache.k.data_ptr(), cache.v.data_ptr(), tuple(cache.k.shape), cache.k.dtype, bucket)
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._capture(tok, cache, bucket)
            self._graphs[key] = entry
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        graph, s_tok, s_pos, out = entry
        with torch.cuda.device(cache.k.device):
            s_tok.copy_(tok[:, None])
            s_pos.fill_(cache.length)
            graph.replay()
        return out

    def _capture(self, tok, cache, bucket):
        # Warm-up and capture write the current token's keys/values at cache.length, which the replay that
        # follows overwrites with the same values: nothing already cached is touched.
        # Streams, pool and capture all on the cache's device: on another device than the current one the
        # kernels would go to that device's own stream and the graph would be empty (replays doing nothing).
        dev = cache.k.device
        with _CAPTURE_LOCK, torch.cuda.device(dev):
            s_tok = tok[:, None].clone()
            s_pos = torch.full((1,), cache.length, dtype=torch.long, device=dev)
            args = (self.model, s_tok, s_pos, cache.k, cache.v, bucket)
            side = self._streams.setdefault(dev, torch.cuda.Stream(device=dev))
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side):
                for _ in range(2):
                    static_step(*args)
            torch.cuda.current_stream(dev).wait_stream(side)
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool, stream=side, capture_error_mode="thread_local"):
                out = static_step(*args)
        return graph, s_tok, s_pos, out


def attach(model, mode: str | bool | None = "auto"):
    """The decode path (``generate.DecodePath``) for ``model`` in ``mode``: a fast decoder, or eager with the
    reason when the mode cannot run here (False/None/"eager": plain eager)."""
    from .generate import DecodePath
    if mode in (False, None):
        mode = "eager"
    if mode is True:
        mode = "auto"
    dec = FastDecoder(model, mode)
    if dec.path == "eager":
        return DecodePath("eager", f"asked for {dec.requested}: {dec.reason}" if dec.reason else "")
    return DecodePath(dec.path, decoder=dec)
