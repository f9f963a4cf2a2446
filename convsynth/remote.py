"""A model on a server: ``convsynth.connect(base_url, model=..., api_key=None)`` returns an object that ``Session``,
the widget and the MTPB harness use like a loaded ``CodeGen``, generating through an OpenAI-compatible
``/v1/completions`` endpoint (vLLM, SGLang, ``convsynth serve``) with streaming.

The server keeps the KV cache (vLLM's automatic prefix caching, ``convsynth serve``'s cache per session), so a
turn sends the whole session text and the server reuses what it has; the turn's stats show the cached tokens when
the server reports ``usage.prompt_tokens_details.cached_tokens``. Stop rules (the codegen rules, regexes) run
here on the streamed text, and the stream is closed as soon as one fires, exactly as local generation stops at the
same text. The tokenizer is local (CodeGen's, the packaged one by default): the session measures its prompt with it.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import Iterator

from .errors import RemoteError
from .generate import Completion, Run, Sampling, _stable_end, check_prompt
from .stops import StopSpec, make_stop, per_sample

RETRY_STATUS = {429, 502, 503, 504}  # busy or restarting: worth another try; other 4xx/5xx are refusals


@dataclass(frozen=True)
class RemoteConfig:
    """What a session needs to know of a remote model's shape; sizes the server does not report are 0."""
    n_positions: int = 2048
    vocab_size: int = 51200
    n_embd: int = 0
    n_layer: int = 0
    n_head: int = 0


class RemoteCodeGen:
    """A CodeGen served elsewhere. ``complete``, ``generate``, ``stream``, ``encode``, ``decode`` as on CodeGen;
    ``Session(remote)`` runs its turns on the server. Build one with ``convsynth.connect``."""

    remote = True

    def __init__(self, base_url: str, model: str | None = None, api_key: str | None = None, *, tokenizer=None,
                 timeout: float = 60.0, connect_timeout: float = 5.0, retries: int = 3, backoff: float = 0.5,
                 n_positions: int | None = None):
        import httpx
        from .tokenizer import CodeGenTokenizer
        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        self.retries, self.backoff = retries, backoff
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout, connect=connect_timeout))
        self.tokenizer = CodeGenTokenizer.from_pretrained(tokenizer)
        self.lock = threading.Lock()  # CodeGen's surface; the server orders concurrent requests itself
        self._users: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # session -> its cache key
        listed = self._models()
        ids = [m.get("id") for m in listed]
        if model is None:
            model = ids[0] if ids else None
        elif model not in ids:
            raise RemoteError(f"{self.base_url} does not serve {model!r}; it serves {', '.join(map(str, ids)) or 'nothing'}."
                              " Pass one of those as model=.")
        self.name = model
        info = next((m for m in listed if m.get("id") == model), {})
        self.config = RemoteConfig(n_positions=n_positions or int(info.get("max_model_len") or 2048))
        self.load_seconds = 0.0

    # ---- CodeGen's surface ---------------------------------------------------------------------------------
    device = property(lambda self: self.base_url)
    dtype = property(lambda self: "remote")
    decode_path = property(lambda self: f"remote ({self.base_url})")

    def __repr__(self) -> str:
        return f"RemoteCodeGen({self.name!r}, url={self.base_url!r})"

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def generate(self, prompt: str, *, max_new_tokens: int | None = None, temperature: float | None = None,
                 top_p: float | None = None, top_k: int | None = None, repetition_penalty: float | None = None,
                 stop: StopSpec = None, num_samples: int = 1, seed: int | None = None, truncate_prompt: bool = False,
                 sampling: Sampling | None = None) -> Completion:
        """The full Completion record, as ``CodeGen.generate``; several samples are several requests."""
        s = Sampling.of(sampling, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                        repetition_penalty=repetition_penalty, seed=seed)
        ids = self.encode(prompt)
        if truncate_prompt and len(ids) >= self.config.n_positions:
            ids = ids[-(self.config.n_positions - 1):]
            prompt = self.decode(ids)
        comps = [self._drain(self.turn_stream(prompt, len(ids), s.replace(seed=None if s.seed is None else s.seed + i),
                                              make_stop(stop))) for i in range(num_samples)]
        first = comps[0]
        first.texts, first.token_ids = [c.texts[0] for c in comps], [c.token_ids[0] for c in comps]
        first.finish_reasons = [c.finish_reasons[0] for c in comps]
        return first

    def complete(self, prompt: str, max_new_tokens: int | None = None, temperature: float | None = None,
                 top_p: float | None = None, top_k: int | None = None, repetition_penalty: float | None = None,
                 stop: StopSpec = None, num_samples: int = 1, seed: int | None = None, truncate_prompt: bool = False,
                 *, sampling: Sampling | None = None) -> str | list[str]:
        """The completion of ``prompt`` (a list when ``num_samples`` > 1), as ``CodeGen.complete``."""
        out = self.generate(prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                            top_k=top_k, repetition_penalty=repetition_penalty, stop=stop, num_samples=num_samples,
                            seed=seed, truncate_prompt=truncate_prompt, sampling=sampling)
        return out.texts[0] if num_samples == 1 else out.texts

    def stream(self, prompt: str, max_new_tokens: int | None = None, temperature: float | None = None,
               top_p: float | None = None, top_k: int | None = None, repetition_penalty: float | None = None,
               stop: StopSpec = None, seed: int | None = None, truncate_prompt: bool = False, *,
               sampling: Sampling | None = None) -> Iterator[str]:
        """Yield the completion as text pieces while the server streams it."""
        s = Sampling.of(sampling, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                        repetition_penalty=repetition_penalty, seed=seed)
        ids = self.encode(prompt)
        yield from self.turn_stream(prompt, len(ids), s, make_stop(stop))

    @staticmethod
    def _drain(gen):
        run = Run(gen)
        for _ in run:
            pass
        return run.result

    # ---- what Session calls --------------------------------------------------------------------------------
    def session_turn(self, session, prompt: str, n_prompt: int, s: Sampling, stop, cancel: threading.Event):
        """A session's turn on the server: generator of code pieces returning a Completion. The session's cache
        key goes as the request's ``user``, so ``convsynth serve`` reuses that session's KV cache."""
        user = self._users.setdefault(session, f"convsynth-{uuid.uuid4().hex}")
        return self.turn_stream(prompt, n_prompt, s, stop, cancel=cancel, user=user)

    def turn_stream(self, prompt: str, n_prompt: int, s: Sampling, stop, *, cancel: threading.Event | None = None,
                    user: str | None = None) -> Iterator[str]:
        """Stream one completion of ``prompt`` (``n_prompt`` tokens), applying ``stop`` here; returns a
        Completion whose cached_tokens are what the server reported (0 when it does not say)."""
        n_pos = self.config.n_positions
        check_prompt(n_prompt, n_pos)
        body = {"model": self.name, "prompt": prompt, "max_tokens": min(s.max_new_tokens, n_pos - n_prompt),
                "temperature": s.temperature, "top_p": s.top_p, "stream": True,
                "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
        if s.top_k:
            body["top_k"] = s.top_k
        if s.repetition_penalty != 1.0:
            body["repetition_penalty"] = s.repetition_penalty
        if s.seed is not None and not s.greedy:
            body["seed"] = s.seed
        if user:
            body["user"] = user
        rule = per_sample(stop) if stop is not None else None
        text, emitted, reason, usage, pieces = "", 0, None, {}, 0
        t0, t_first = time.perf_counter(), 0.0
        with self._open(body) as response:
            for event in _events(response, self.base_url):
                if cancel is not None and cancel.is_set():
                    reason = "cancelled"
                    break  # leaving the block closes the connection: the server stops generating
                if event is None:  # a keep-alive or the blank line between events: only a chance to stop
                    continue
                usage = event.get("usage") or usage
                for choice in event.get("choices") or []:
                    if not t_first:
                        t_first = time.perf_counter()
                    pieces += 1
                    text += choice.get("text") or ""
                    if rule is not None:
                        cut = rule(text)
                        if cut is not None:
                            text, reason = text[:cut], "stop"
                            break
                    safe = _stable_end(text) if rule is not None else len(text)
                    if safe > emitted:
                        yield text[emitted:safe]
                        emitted = safe
                    if choice.get("finish_reason"):
                        reason = "length" if choice["finish_reason"] == "length" else "eos"
                if reason == "stop":
                    break
        if len(text) > emitted:
            yield text[emitted:]
        cached = int(((usage.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0)
        generated = int(usage.get("completion_tokens") or pieces)
        elapsed = time.perf_counter() - t_first if t_first else 0.0
        ids = self.encode(text) if text else []
        details = usage.get("completion_tokens_details") or {}  # the server's speculation, when it reports it
        kept, thrown = (int(details.get(k) or 0) for k in ("accepted_prediction_tokens", "rejected_prediction_tokens"))
        return Completion(texts=[text], token_ids=[ids], finish_reasons=[reason or "length"],
                          prefill_tokens=n_prompt - cached, cached_tokens=cached,
                          time_to_first_token=(t_first - t0) if t_first else 0.0,
                          decode_tokens_per_s=(generated - 1) / elapsed if generated > 1 and elapsed > 0 else 0.0,
                          generated_tokens=generated, raw_ids=[ids],
                          acceptance_rate=kept / (kept + thrown) if kept + thrown else None,
                          drafted_tokens=kept + thrown, accepted_tokens=kept)

    # ---- HTTP --------------------------------------------------------------------------------------------
    def _models(self) -> list[dict]:
        with self._open(None) as r:
            try:
                data = json.loads(r.read())
            except json.JSONDecodeError:
                raise RemoteError(f"{self.base_url}/models did not answer JSON: is this an OpenAI-compatible "
                                  "server (vLLM, SGLang, convsynth serve)?") from None
        return data.get("data") or []

    def _open(self, body: dict | None):
        """The response (a context manager) of POST /completions (or GET /models when ``body`` is None), after
        retrying with exponential backoff while the server is unreachable or busy."""
        import httpx
        url = self.base_url + ("/completions" if body is not None else "/models")
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            request = self.http.build_request("POST" if body is not None else "GET", url, json=body)
            try:
                response = self.http.send(request, stream=True)
            except httpx.TimeoutException as e:
                if last:
                    raise RemoteError(f"{url} did not answer in time ({type(e).__name__}) after {attempt + 1} "
                                      "tries; check that the server is up and not overloaded, or raise timeout=.") from None
            except httpx.TransportError as e:
                if last:
                    raise RemoteError(f"cannot reach {url} ({type(e).__name__}) after {attempt + 1} tries; start "
                                      "the server (vllm serve DIR, or convsynth serve) or fix the address.") from None
            else:
                if response.status_code < 400:
                    return _Closing(response)
                detail = _error_message(response)
                if response.status_code not in RETRY_STATUS or last:
                    raise RemoteError(f"the server refused the request: HTTP {response.status_code} {detail}"[:400])
                response.close()
            time.sleep(self.backoff * 2 ** attempt)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.http.close()


class _Closing:
    """``with`` support for an httpx streaming response: closing it drops the connection mid-stream."""

    def __init__(self, response):
        self.response = response

    def __enter__(self):
        return self.response

    def __exit__(self, *exc):
        self.response.close()


def _error_message(response) -> str:
    try:
        response.read()
        err = response.json().get("error")
        msg = err.get("message") if isinstance(err, dict) else err
        return str(msg or response.text).replace("\n", " ")
    except Exception:  # noqa: BLE001 - any body at all is better than none
        return response.reason_phrase or ""
    finally:
        response.close()


def _events(response, where: str) -> Iterator[dict | None]:
    """The JSON objects of a server-sent event stream, up to ``[DONE]``, and None for each other line (comments
    such as keep-alives, blank lines), so that the reader can stop while a server keeps the stream open."""
    import httpx
    try:
        for line in response.iter_lines():
            if not line.startswith("data:"):
                yield None
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            event = json.loads(data)
            if isinstance(event, dict) and event.get("error"):
                err = event["error"]
                raise RemoteError(f"the server failed mid-stream: {err.get('message') if isinstance(err, dict) else err}")
            yield event
    except httpx.TimeoutException:
        raise RemoteError(f"{where} stopped sending for longer than the read timeout; the server may be "
                          "overloaded: retry, or raise timeout=.") from None
    except httpx.TransportError as e:
        raise RemoteError(f"the connection to {where} broke mid-stream ({type(e).__name__}); retry the turn.") from None
    except json.JSONDecodeError:
        raise RemoteError(f"{where} sent a stream that is not JSON server-sent events.") from None


def connect(base_url: str, model: str | None = None, api_key: str | None = None, **options) -> RemoteCodeGen:
    """A model object on an OpenAI-compatible server (``http://host:port`` or ``.../v1``): use it like
    ``convsynth.load()``'s. ``model``: the served model's id (default: the first one listed). ``options``:
    tokenizer (path; default the packaged CodeGen tokenizer), timeout, connect_timeout, retries, backoff,
    n_positions."""
    return RemoteCodeGen(base_url, model, api_key, **options)
