"""``convsynth serve``: convsynth's own engine behind an OpenAI-compatible API (Starlette + uvicorn).

    convsynth serve --model DIR --host 127.0.0.1 --port 8000
    cg = convsynth.connect("http://127.0.0.1:8000")   # then Session(cg), convsynth.ui(cg), mtpb.run(cg, ...)

Endpoints: ``GET /v1/models``, ``POST /v1/completions`` (streaming as server-sent events or one JSON reply),
``GET /health``. Each client session (the request's ``user`` field; ``convsynth.connect`` sends one per Session)
keeps its own KV cache on the server, reused up to the longest common prefix with the next prompt, as a local
Session does; the least recently used caches are dropped beyond ``max_sessions``. One model, one generation at a
time: enough for a small class on one machine. For continuous batching across many users, export to GPT-J and
serve with vLLM (see the README).
"""
from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections import OrderedDict

from .errors import ConvsynthError

FINISH = {"eos": "stop", "stop": "stop", "length": "length", "cancelled": "stop"}


class ApiError(Exception):
    """An OpenAI-style error reply: HTTP status, message, type."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


class Engine:
    """One loaded CodeGen with a KV cache per client session: ``complete(request, cancel)`` is a generator of
    (text piece, None) items between (None, info) items: the first says the cached tokens, the last the
    finish_reason and token counts."""

    def __init__(self, cg, *, max_sessions: int = 32):
        self.cg, self.max_sessions = cg, max_sessions
        self.caches: OrderedDict[str, object] = OrderedDict()  # user -> PrefixCache (a KVCache and its ids)
        self.lock = threading.Lock()
        self.generating = False
        self.requests = 0
        self.generated_tokens = 0  # in all, so tests and operators see that a cancelled stream stopped the model
        self.drafted_tokens = self.accepted_tokens = 0  # speculative decoding, in all

    def prepare(self, body: dict) -> tuple:
        """Check a /v1/completions request before anything is streamed; raises ApiError(400) on bad input.
        Returns (prompt ids, Sampling, stop strings, user)."""
        from .generate import Sampling
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if isinstance(prompt, str):
            ids = self.cg.encode(prompt)
        elif isinstance(prompt, list) and prompt and all(isinstance(i, int) and not isinstance(i, bool)
                                                         for i in prompt):
            ids = list(prompt)
        else:
            raise ApiError(400, "prompt must be a string or a list of token ids (one prompt per request).")
        if body.get("n", 1) != 1 or body.get("best_of", 1) != 1:
            raise ApiError(400, "this server generates one completion per request (n=1); send several requests.")
        n_pos = self.cg.config.n_positions
        if not ids or len(ids) >= n_pos:
            raise ApiError(400, f"the prompt is {len(ids)} tokens; it must be 1..{n_pos - 1} for this model's "
                                f"context window of {n_pos}.")
        bad = [i for i in ids if not 0 <= i < self.cg.config.vocab_size]
        if bad:
            raise ApiError(400, f"token id {bad[0]} is outside the vocabulary (0..{self.cg.config.vocab_size - 1}).")
        max_tokens = body.get("max_tokens", 16)
        max_tokens = n_pos - len(ids) if max_tokens is None else max_tokens
        top_k = body.get("top_k", 0) or 0
        if isinstance(top_k, bool) or not isinstance(top_k, int):
            raise ApiError(400, f"top_k={top_k!r} must be a whole number (0 or -1: off).")
        try:
            s = Sampling(max_new_tokens=max_tokens, temperature=body.get("temperature", 1.0),
                         top_p=body.get("top_p", 1.0), top_k=max(0, top_k),
                         repetition_penalty=body.get("repetition_penalty", 1.0), seed=body.get("seed"))
        except (ConvsynthError, TypeError, ValueError) as e:
            raise ApiError(400, str(e)) from None
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, list) or not all(isinstance(x, str) and x for x in stop):
            raise ApiError(400, "stop must be a string or a list of non-empty strings.")
        return ids, s, stop, str(body.get("user") or "")

    def _cache_for(self, user: str):
        if user in self.caches:
            self.caches.move_to_end(user)
            return self.caches[user]
        from .cache import PrefixCache
        entry = PrefixCache(self.cg.module.new_cache)
        self.caches[user] = entry
        while len(self.caches) > self.max_sessions:
            self.caches.popitem(last=False)
        return entry

    def complete(self, ids, s, stop: list[str], user: str, cancel: threading.Event):
        from .generate import Run, Sampling, iter_generation, locked_steps
        with self.lock:  # this engine's caches, one request at a time; the model lock is taken per decode step
            self.generating, self.requests = True, self.requests + 1
            try:
                prefix = self._cache_for(user)
                keep = prefix.reuse(ids)
                s = Sampling(**{**s.to_dict(), "max_new_tokens": min(s.max_new_tokens,
                                                                     self.cg.config.n_positions - len(ids))})
                yield None, {"finish_reason": None, "cached_tokens": keep}  # known now: continuous usage says it
                spec = self.cg.speculator(s)  # the server's --speculate: drafts for greedy requests
                gen = Run(locked_steps(iter_generation(self.cg.module, self.cg.tokenizer, prefix.cache, ids[keep:], s,
                                                       None, cancel=cancel, context_ids=ids, decode=self.cg.decoding,
                                                       speculator=spec), self.cg.lock))
                text, emitted, hold, stopped = "", 0, max((len(x) for x in stop), default=1) - 1, False
                try:
                    for _, piece in gen:
                        text += piece
                        hit = min((i for i in (text.find(x) for x in stop) if i >= 0), default=-1)
                        if hit >= 0:  # OpenAI semantics: the text ends before the stop string
                            text, stopped = text[:hit], True
                            cancel.set()
                            continue
                        safe = len(text) - hold  # a stop string may still complete across pieces
                        if safe > emitted:
                            yield text[emitted:safe], None
                            emitted = safe
                finally:
                    gen.close()
                    comp = gen.result  # None when it did not finish
                    # As in Session: the cache holds the prompt and every sampled token but the last.
                    prefix.record(ids + (comp.raw_ids[0] if comp is not None else []))
                if len(text) > emitted:
                    yield text[emitted:], None
                self.generated_tokens += comp.generated_tokens
                reason = "stop" if stopped else FINISH[comp.finish_reasons[0]]
                accepted = comp.accepted_tokens
                self.drafted_tokens += comp.drafted_tokens
                self.accepted_tokens += accepted
                yield None, {"finish_reason": reason, "prompt_tokens": len(ids), "cached_tokens": keep,
                             "completion_tokens": comp.generated_tokens, "accepted_prediction_tokens": accepted,
                             "rejected_prediction_tokens": comp.drafted_tokens - accepted}
            finally:
                self.generating = False


def create_app(cg, *, api_key: str | None = None, max_sessions: int = 32, model_name: str | None = None):
    """The ASGI app serving ``cg`` (a loaded CodeGen). ``api_key``: required as ``Authorization: Bearer KEY``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    engine = Engine(cg, max_sessions=max_sessions)
    name = model_name or cg.name

    def error(e: ApiError) -> JSONResponse:
        return JSONResponse({"error": {"message": e.message, "type": e.kind, "code": e.status}}, status_code=e.status)

    def authorize(request: Request) -> None:
        if api_key and not secrets.compare_digest(request.headers.get("authorization", ""), f"Bearer {api_key}"):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer KEY' (convsynth.connect("
                                "..., api_key=KEY)).", "authentication_error")

    async def models(request: Request):
        try:
            authorize(request)
        except ApiError as e:
            return error(e)
        return JSONResponse({"object": "list", "data": [{
            "id": name, "object": "model", "created": 0, "owned_by": "convsynth",
            "max_model_len": cg.config.n_positions}]})

    async def health(request: Request):
        return JSONResponse({"status": "ok", "model": name, "generating": engine.generating,
                             "requests": engine.requests, "generated_tokens": engine.generated_tokens,
                             "sessions": len(engine.caches), "decode_path": cg.decode_path,
                             "speculate": cg.speculate, "drafted_tokens": engine.drafted_tokens,
                             "accepted_tokens": engine.accepted_tokens})

    async def completions(request: Request):
        try:
            authorize(request)
            try:
                body = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise ApiError(400, "the request body is not JSON.") from None
            if not isinstance(body, dict):
                raise ApiError(400, "the request body must be a JSON object.")
            if body.get("model") not in (None, name):
                raise ApiError(404, f"this server serves the model {name!r}, not {body.get('model')!r}.",
                               "not_found_error")
            ids, s, stop, user = engine.prepare(body)
        except ApiError as e:
            return error(e)
        rid, created = f"cmpl-{secrets.token_hex(8)}", int(time.time())
        opts = body.get("stream_options") or {}
        cancel = threading.Event()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def worker():  # the model runs in its own thread; the event loop only relays pieces
            try:
                for item in engine.complete(ids, s, stop, user, cancel):
                    loop.call_soon_threadsafe(queue.put_nowait, item)
            except BaseException as e:  # noqa: BLE001 - reported to the client
                loop.call_soon_threadsafe(queue.put_nowait, e)
            loop.call_soon_threadsafe(queue.put_nowait, StopIteration())

        threading.Thread(target=worker, name="convsynth-serve", daemon=True).start()

        def usage(info: dict, completion_tokens: int) -> dict:
            use = {"prompt_tokens": len(ids), "completion_tokens": completion_tokens,
                   "total_tokens": len(ids) + completion_tokens,
                   "prompt_tokens_details": {"cached_tokens": info.get("cached_tokens", 0)}}
            if "accepted_prediction_tokens" in info:  # OpenAI's names for drafted tokens kept and thrown away
                use["completion_tokens_details"] = {k: info[k] for k in ("accepted_prediction_tokens",
                                                                         "rejected_prediction_tokens")}
            return use

        def chunk(text: str, reason: str | None, use: dict | None) -> str:
            d = {"id": rid, "object": "text_completion", "created": created, "model": name,
                 "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": reason}]}
            if use is not None:
                d["usage"] = use
            return f"data: {json.dumps(d)}\n\n"

        async def items():
            try:
                while True:
                    item = await queue.get()
                    if isinstance(item, StopIteration):
                        return
                    if isinstance(item, BaseException):
                        raise item
                    yield item
            finally:
                cancel.set()  # the client went away (or we are done): stop the model

        if not body.get("stream"):
            text, info = "", {}
            try:
                async for piece, done in items():
                    text, info = text + (piece or ""), done or info
            except ConvsynthError as e:
                return error(ApiError(400, str(e)))
            return JSONResponse({"id": rid, "object": "text_completion", "created": created, "model": name,
                                 "choices": [{"index": 0, "text": text, "logprobs": None,
                                              "finish_reason": info.get("finish_reason")}],
                                 "usage": usage(info, info.get("completion_tokens", 0))})

        async def events():
            n, start = 0, {}
            continuous = bool(opts.get("continuous_usage_stats"))
            try:
                async for piece, done in items():
                    if done is not None and done["finish_reason"] is None:
                        start = done
                    elif done is None:
                        n += 1
                        yield chunk(piece, None, usage(start, n) if continuous else None)
                    else:
                        yield chunk("", done["finish_reason"],
                                    usage(done, done["completion_tokens"]) if continuous else None)
                        if opts.get("include_usage"):
                            d = {"id": rid, "object": "text_completion", "created": created, "model": name,
                                 "choices": [], "usage": usage(done, done["completion_tokens"])}
                            yield f"data: {json.dumps(d)}\n\n"
            except ConvsynthError as e:
                yield f"data: {json.dumps({'error': {'message': str(e), 'type': 'server_error'}})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1/models", models), Route("/v1/completions", completions, methods=["POST"]),
                            Route("/health", health)])
    app.state.engine = engine
    return app


def add_arguments(p) -> None:
    from .flags import engine_flags, model_flags
    model_flags(p, fast=False)
    engine_flags(p)
    p.add_argument("--name", default=None, help="the model id clients ask for (default: --model)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for a class on a LAN)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    p.add_argument("--max-sessions", type=int, default=32, help="client sessions whose KV caches are kept")


def main(args) -> int:
    try:
        import uvicorn
        import starlette  # noqa: F401
    except ImportError:
        raise ConvsynthError("convsynth serve needs starlette and uvicorn: pip install 'convsynth[serve]'") from None
    from .flags import load_model
    cg = load_model(args)
    app = create_app(cg, api_key=args.api_key, max_sessions=args.max_sessions, model_name=args.name)
    print(f"serving {args.name or cg.name} on http://{args.host}:{args.port}/v1", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
