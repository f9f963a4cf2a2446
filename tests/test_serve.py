"""``convsynth serve`` started for real on 127.0.0.1 with the packaged model, and ``convsynth.connect`` against it
over HTTP: sessions, the widget and MTPB give the local model's greedy text; errors when the server is down or
refuses; cancel mid-stream stops the server's generation."""
from __future__ import annotations

import html
import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
import httpx  # noqa: E402

import convsynth  # noqa: E402
from convsynth import cli, mtpb  # noqa: E402
from convsynth.errors import ConvsynthError, RemoteError  # noqa: E402
from convsynth.mtpb_check import load_problems  # noqa: E402

import mtpb_small  # noqa: E402
from helpers import ROOT  # noqa: E402

KEY = "sk-test"
TURNS = ["Assign the list [3, 1, 2] to a variable named a.", "Sort a.", "Print a."]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    """The real server in its own process; yields its base URL."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "convsynth", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--api-key", KEY], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited: {proc.stdout.read().decode()[-2000:]}")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.25)
        else:
            raise RuntimeError("the server did not come up in 60 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="module")
def local():
    return convsynth.load()


@pytest.fixture(scope="module")
def remote(server):
    r = convsynth.connect(server, model="convsynth-tiny", api_key=KEY)
    yield r
    r.close()


def health(server) -> dict:
    return httpx.get(server + "/health", timeout=5).json()


def test_session_on_the_server_matches_the_local_session(local, remote):
    texts, stats = {}, {}
    for name, model in (("local", local), ("remote", remote)):
        with convsynth.Session(model, temperature=0, max_new_tokens=24) as s:
            turns = [s.ask(t) for t in TURNS]
            texts[name] = s.text
            stats[name] = [(t.stats.cached_tokens, t.stats.prefill_tokens, t.stats.finish_reason) for t in turns]
    assert texts["remote"] == texts["local"]
    # The server's per-session prefix cache reuses what the local cache reuses, and reports it. It may keep up to
    # two more tokens at a turn boundary: the local cache holds a prefix of the session text's own tokens, which end
    # in one merged "\n\n" that the next prompt splits ("\n", "\n", "#"), while the server matches the next prompt
    # against the ids it generated. Every turn's prompt is the same length on both sides.
    for (rc, rp, rf), (lc, lp, lf) in zip(stats["remote"], stats["local"]):
        assert lc <= rc <= lc + 2 and rc + rp == lc + lp and rf == lf, stats
    assert stats["remote"][0][0] == 0 and all(c > 0 for c, _, _ in stats["remote"][1:])


def test_complete_and_stream_match_local(local, remote):
    for prompt, stop in (("def add(a, b):", None), ("# Print the numbers 1 to 3.\n", "codegen")):
        want = local.complete(prompt, max_new_tokens=24, temperature=0, stop=stop)
        assert remote.complete(prompt, max_new_tokens=24, temperature=0, stop=stop) == want
        assert "".join(remote.stream(prompt, max_new_tokens=24, temperature=0, stop=stop)) == want


def test_widget_generates_a_step_through_the_server(local, remote, tmp_path):
    from convsynth.widget import SessionWidget
    want = convsynth.Session(local, temperature=0, max_new_tokens=32).ask(TURNS[0]).code
    session = convsynth.Session(remote, temperature=0, max_new_tokens=32)
    w = SessionWidget(session, directory=tmp_path)
    assert "convsynth-tiny" in w.title.value
    w.instruction.value = TURNS[0]
    w.generate()  # the Generate button is part of the instruction box now (h-teacher); generate() presses it
    assert w.wait(120) and not w.error.value, w.error.value
    assert [t.code for t in session.turns] == [want]
    shown = html.unescape(re.sub(r"<[^>]+>", "", w.cards.children[0].code.value))  # the card's highlighted code
    assert want.strip() and want.strip() in shown
    session.close()


def test_mtpb_over_http_equals_local(local, remote, server, tmp_path):
    data = mtpb_small.write(tmp_path)
    problems = load_problems(data)
    rep_local = mtpb.run(local, problems, out=tmp_path / "local.jsonl", progress=False)
    # through the command line, as a user would run it against a server
    code = cli.main(["mtpb", "--data", str(data), "--server", server, "--api-key", KEY,
                               "--model", "convsynth-tiny", "--out", str(tmp_path / "remote.jsonl")])
    assert code == 0
    def rows(name):
        return sorted((d["problem"], d["case"], d["program"], d["passed"])
                      for d in map(json.loads, (tmp_path / name).read_text().splitlines()))
    assert rows("remote.jsonl") == rows("local.jsonl")
    assert len(rows("local.jsonl")) == 3 and rep_local["programs"] == 3


def test_cancel_mid_stream_stops_the_server(remote, server):
    s = convsynth.Session(remote, stop=None, temperature=0, max_new_tokens=600)  # greedy runs to 600 here
    before = health(server)["generated_tokens"]
    seen = []

    def on_text(piece):
        seen.append(piece)
        if len(seen) == 3:
            s.cancel()
    turn = s.ask("Print the numbers from 1 to 1000, one per line.", on_text=on_text)
    assert turn.stats.finish_reason == "cancelled"
    for _ in range(200):  # the server notices the closed connection and lets the model go
        h = health(server)
        if not h["generating"] and h["generated_tokens"] > before:
            break
        time.sleep(0.1)
    assert not h["generating"]
    assert h["generated_tokens"] - before < 600
    # the session goes on, on the same server cache
    assert s.ask("Print 1.", max_new_tokens=8).stats.finish_reason != "cancelled"


def test_stop_works_while_a_server_keeps_the_stream_open_without_tokens():
    """A server that is still queueing or prefilling keeps the stream alive with comment lines and sends no
    token: Stop ends the turn at once ('cancelled') instead of when the server finally answers."""
    import http.server
    import threading

    class KeepAlive(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            body = json.dumps({"data": [{"id": "slow", "max_model_len": 2048}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            try:
                for _ in range(150):  # 30 s of keep-alives, then nothing generated
                    self.wfile.write(b": keep-alive\n\n")
                    self.wfile.flush()
                    time.sleep(0.2)
                self.wfile.write(b"data: [DONE]\n\n")
            except OSError:  # the client went away: what Stop should do
                pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), KeepAlive)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        s = convsynth.Session(convsynth.connect(f"http://127.0.0.1:{httpd.server_port}"), stop=None)
        threading.Timer(1.0, s.cancel).start()
        t0 = time.monotonic()
        turn = s.ask("Print hi.", run=False)
        assert turn.stats.finish_reason == "cancelled" and time.monotonic() - t0 < 10
    finally:
        httpd.shutdown()


def test_server_down_is_a_clear_error():
    port = free_port()  # nothing listens here
    with pytest.raises(RemoteError, match=r"cannot reach http://127.0.0.1:\d+/v1/models .* after 2 tries"):
        convsynth.connect(f"http://127.0.0.1:{port}", retries=1, backoff=0.01)


def test_refusals_are_clear_errors(server, remote):
    with pytest.raises(RemoteError, match="HTTP 401 missing or wrong API key"):
        convsynth.connect(server)
    with pytest.raises(RemoteError, match="does not serve 'codegen-16B'; it serves convsynth-tiny"):
        convsynth.connect(server, model="codegen-16B", api_key=KEY)
    big = convsynth.connect(server, api_key=KEY, n_positions=10**6)  # the client thinks the window is larger
    prompt = " x" * 2100  # 2100 tokens: more than the server's window of 2048
    assert len(big.encode(prompt)) == 2100
    with pytest.raises(RemoteError, match="HTTP 400 the prompt is 2100 tokens"):
        big.complete(prompt, max_new_tokens=4)
    assert isinstance(RemoteError("x"), ConvsynthError)
    h = {"Authorization": f"Bearer {KEY}"}
    for body, message in (({"prompt": "def f():", "top_k": "5"}, "top_k='5' must be a whole number"),
                          ({"prompt": [-1, 5], "max_tokens": 2}, "token id -1 is outside the vocabulary"),
                          ({"prompt": [True, 5]}, "prompt must be a string or a list of token ids"),
                          ({"prompt": "x", "temperature": "hot"}, "temperature")):
        r = httpx.post(server + "/v1/completions", json=body, headers=h, timeout=60)
        assert r.status_code == 400 and message in r.json()["error"]["message"], (body, r.text)


def test_openai_stop_strings_and_plain_replies(server, local):
    """What third-party clients get: stop strings cut before the string, streamed or not. The stop string is
    taken from the local model's own greedy text, so the test does not depend on what the packaged model writes."""
    full = local.complete("def add(a, b):", max_new_tokens=24, temperature=0, stop=None)
    stop = next(c for c in full[3:] if not c.isspace())
    body = {"model": "convsynth-tiny", "prompt": "def add(a, b):", "max_tokens": 24, "temperature": 0,
            "stop": [stop]}
    h = {"Authorization": f"Bearer {KEY}"}
    plain = httpx.post(server + "/v1/completions", json=body, headers=h, timeout=60).json()
    text = plain["choices"][0]["text"]
    assert text == full[:full.index(stop)] and plain["choices"][0]["finish_reason"] == "stop"
    pieces = []
    with httpx.stream("POST", server + "/v1/completions", json={**body, "stream": True}, headers=h,
                      timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                pieces += [c["text"] for c in json.loads(line[6:])["choices"]]
    assert "".join(pieces) == text


def test_server_speculates_and_reports_it(local, remote, server):
    """The server speculates on greedy requests (--speculate auto by default, as `convsynth complete`): the text is
    plain decoding's, and usage reports the drafts as OpenAI's accepted/rejected prediction tokens, which the
    client turns into the turn's acceptance rate."""
    prompt = "def add(a, b):\n    return a + b\n\n\nprint(add(1, 2))\n\n\ndef add(a, b):\n"  # repeats: lookup drafts
    want = local.complete(prompt, max_new_tokens=32, temperature=0, stop=None, speculate="off")
    before = health(server)
    comp = remote.generate(prompt, max_new_tokens=32, temperature=0, stop=None)
    assert comp.texts[0] == want
    assert comp.drafted_tokens > 0 and 0 < comp.acceptance_rate <= 1, (comp.drafted_tokens, comp.acceptance_rate)
    after = health(server)
    assert after["speculate"] == "auto" and after["drafted_tokens"] - before["drafted_tokens"] == comp.drafted_tokens
    assert after["accepted_tokens"] - before["accepted_tokens"] == round(comp.acceptance_rate * comp.drafted_tokens)
    sampled = remote.generate(prompt, max_new_tokens=8, temperature=0.8, seed=1, stop=None)
    assert sampled.drafted_tokens == 0 and sampled.acceptance_rate is None  # 'auto' drafts for greedy requests only
