"""Re-run of issue 18's probe categories (malformed session files, concurrency, sandbox faults, CLI input, configs):
each case prints fine/DEFECT, then the counts. Not part of the test suite (several minutes of CPU):
    PYTHONPATH=. python scripts/probe_reliability.py
"""
import gc, json, os, shutil, signal, subprocess, sys, tempfile, threading, time, traceback
from pathlib import Path
import torch
import convsynth
from convsynth import ConvsynthError, SessionError
from convsynth.session import Session
from convsynth.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[1]
TMP = Path(tempfile.mkdtemp(prefix="probe-"))
results = []


def case(cat, name):
    def deco(fn):
        try:
            fn()
            results.append((cat, name, True, ""))
        except Exception as e:
            results.append((cat, name, False, f"{type(e).__name__}: {str(e).splitlines()[0][:150] if str(e) else ''}"))
        print(("fine  " if results[-1][2] else "DEFECT"), cat, name, results[-1][3], flush=True)
    return deco


def one_line_error(fn, kind=ConvsynthError):
    try:
        fn()
    except kind as e:
        assert "\n" not in str(e), f"multi-line: {e!r}"
        return str(e)
    raise AssertionError("no error raised")


def within(fn, seconds=120):
    box = {}
    th = threading.Thread(target=lambda: box.setdefault("v", fn()), daemon=True)
    th.start(); th.join(seconds)
    assert not th.is_alive(), "hung"
    return box.get("v")


cg = convsynth.load(fast=False)
# ---------------------------------------------------------------- malformed session files
base = Session(cg, temperature=0, max_new_tokens=8)
base.add_code("x = 1", "Assign 1 to x.")
good = json.loads(base.save(TMP / "good.json").read_text())
good["turns"][0]["result"] = {"status": "ok"}
MUT = {
    "turns dict": lambda d: d.update(turns={"0": {}}), "turns str": lambda d: d.update(turns="x"),
    "null turn": lambda d: d["turns"].append(None), "result str": lambda d: d["turns"][0].update(result="ok"),
    "model str": lambda d: d.update(model="n_embd"), "bad regex stop": lambda d: d.update(stop="(["),
    "code int": lambda d: d["turns"][0].update(code=1), "instruction int": lambda d: d["turns"][0].update(instruction=1),
    "preamble null": lambda d: d.update(preamble=None), "timeout str": lambda d: d.update(timeout="ten"),
    "timeout negative": lambda d: d.update(timeout=-1), "memory_limit str": lambda d: d.update(memory_limit="2G"),
    "memory_limit tiny": lambda d: d.update(memory_limit=10), "overflow unknown": lambda d: d.update(overflow="x"),
    "sampling list": lambda d: d.update(sampling=[1]), "sampling top_p 3": lambda d: d["sampling"].update(top_p=3),
    "sampling unknown key": lambda d: d["sampling"].update(foo=1), "stats list": lambda d: d["turns"][0].update(stats=[1]),
    "stats unknown key": lambda d: d["turns"][0].update(stats={"foo": 1}), "dropped dict": lambda d: d.update(dropped={}),
    "preamble_result str": lambda d: d.update(preamble_result="ok"), "version 2": lambda d: d.update(version=2),
    "no version": lambda d: d.pop("version"), "turn list": lambda d: d["turns"].append([1, 2]),
    "status unknown": lambda d: d["turns"][0].update(result={"status": "great"}),
    "stop callable marker": lambda d: d.update(stop={"callable": "f"}),
}
for name, change in MUT.items():
    @case("session-file", name)
    def _(change=change):
        d = json.loads(json.dumps(good)); change(d)
        p = TMP / "bad.json"; p.write_text(json.dumps(d))
        one_line_error(lambda: Session.load(p, cg), SessionError)


@case("session-file", "directory")
def _():
    one_line_error(lambda: Session.load(TMP, cg), SessionError)


@case("session-file", "deeply nested")
def _():
    p = TMP / "deep.json"; p.write_text("[" * 200000 + "]" * 200000)
    one_line_error(lambda: Session.load(p, cg), SessionError)


@case("session-file", "binary garbage")
def _():
    p = TMP / "bin.json"; p.write_bytes(os.urandom(1000))
    one_line_error(lambda: Session.load(p, cg), SessionError)


@case("session-file", "20 MB text bounded")
def _():
    d = json.loads(json.dumps(good)); d["turns"][0]["code"] = "a" * 20_000_000
    p = TMP / "big.json"; p.write_text(json.dumps(d))
    s = Session.load(p, cg)
    one_line_error(lambda: s.ask("Print x."))


@case("session-file", "dropped turns round trip")
def _():
    s = Session(cg, overflow="drop_oldest"); s.add_code("a = 1"); s.dropped.append(s.turns.pop(0)); s.add_code("b = 2")
    s2 = Session.load(s.save(TMP / "dr.json"), cg)
    assert len(s2.dropped) == 1 and s2.to_python() == s.to_python()


# ---------------------------------------------------------------- concurrency
@case("concurrency", "zip of two streams (fork)")
def _():
    s = Session(cg, temperature=0, max_new_tokens=8, stop=None)
    within(lambda: list(zip(s.ask_stream("Assign 1 to x."), s.fork().ask_stream("Assign 1 to x."))))


@case("concurrency", "on_text calls cg.complete")
def _():
    s = Session(cg, temperature=0, max_new_tokens=4, stop=None)
    within(lambda: s.ask("Print 1.", on_text=lambda p: cg.complete("x", max_new_tokens=1)))


@case("concurrency", "on_text asks another session")
def _():
    s, o = Session(cg, temperature=0, max_new_tokens=4, stop=None), Session(cg, temperature=0, max_new_tokens=2)
    within(lambda: s.ask("Print 1.", on_text=lambda p: o.ask("Print 2.")))


@case("concurrency", "on_text undoes its own session: error")
def _():
    s = Session(cg, temperature=0, max_new_tokens=4, stop=None)
    s.add_code("x = 1")
    within(lambda: one_line_error(lambda: s.ask("Print 1.", on_text=lambda p: s.undo()), SessionError))
    assert len(s.turns) == 1
    within(lambda: s.ask("Print 2."))


@case("concurrency", "half-consumed stream, other thread generates")
def _():
    s = Session(cg, temperature=0, max_new_tokens=8, stop=None)
    g = s.ask_stream("Print 1."); next(g)
    within(lambda: cg.complete("def f():", max_new_tokens=4))
    within(lambda: Session(cg, max_new_tokens=2).ask("Print 3."))
    g.close()


@case("concurrency", "stream finished in another thread")
def _():
    s = Session(cg, temperature=0, max_new_tokens=8, stop=None)
    g = s.ask_stream("Print 1."); next(g)
    within(lambda: list(g))
    within(lambda: s.ask("Print 2."))
    assert len(s.turns) == 2


@case("concurrency", "4 sessions from 4 threads, exact cache")
def _():
    ss = [Session(cg, temperature=0, max_new_tokens=8) for _ in range(4)]
    ths = [threading.Thread(target=lambda s=s: [s.ask(f"Assign {i} to x{i}.") for i in range(3)]) for s in ss]
    [t.start() for t in ths]; [t.join(300) for t in ths]
    assert all(len(s.turns) == 3 for s in ss) and len({s.text for s in ss}) == 1
    s = ss[0]
    held = s.prefix.ids
    assert held == cg.encode(s.text)[:len(held)]


@case("concurrency", "two threads ask one session")
def _():
    s = Session(cg, temperature=0, max_new_tokens=8)
    ths = [threading.Thread(target=lambda i=i: s.ask(f"Assign {i} to y.")) for i in range(2)]
    [t.start() for t in ths]; [t.join(300) for t in ths]
    assert len(s.turns) == 2 and s.text == s.preamble + "".join(t.text for t in s.turns)


@case("concurrency", "edit with bad args keeps turns")
def _():
    s = Session(cg, temperature=0, max_new_tokens=4); s.ask("Assign 1 to x."); s.ask("Print x.")
    for kw in (dict(temperature=-1), dict(bogus=1)):
        one_line_error(lambda: s.edit(0, "Assign 2 to x.", **kw))
    one_line_error(lambda: s.edit(0, "word " * 3000))
    one_line_error(lambda: s.regenerate(top_p=2))
    assert len(s.turns) == 2


@case("concurrency", "cancel from another thread")
def _():
    s = Session(cg, temperature=0.8, max_new_tokens=400, stop=None)
    threading.Timer(0.5, s.cancel).start()
    t = within(lambda: s.ask("Write a long story."))
    assert t.stats.finish_reason in ("cancelled", "length", "eos")
    within(lambda: s.ask("Print 1."))


@case("concurrency", "lone \\r cannot inject code")
def _():
    s = Session(cg, temperature=0, max_new_tokens=4); s.ask("Sort.\rimport os; print('INJECTED')")
    assert all(l.startswith("#") for l in s.to_python().splitlines() if "INJECTED" in l)


# ---------------------------------------------------------------- sandbox faults
def py(code, timeout=120):
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@case("sandbox", "dropped sandbox + gc.collect")
def _():
    out = py("import gc\nfrom convsynth.sandbox import Sandbox\nb = Sandbox(); b.run('1'); b = None; gc.collect(); print('ok')")
    assert out.stdout.strip() == "ok", out.stderr[-300:]


@case("sandbox", "host SIGKILL: kernel, child, folder gone")
def _():
    code = ("import time\nfrom convsynth.sandbox import Sandbox\nb = Sandbox()\n"
            "r = b.run('import subprocess\\nprint(subprocess.Popen([\"sleep\", \"600\"]).pid)')\n"
            "print(b.pid, r.stdout.strip(), b._root, flush=True)\ntime.sleep(600)\n")
    h = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    k, c, root = h.stdout.readline().split()
    h.kill(); h.wait()
    end = time.time() + 20
    while time.time() < end and (os.path.exists(f"/proc/{k}") or os.path.exists(f"/proc/{c}") or os.path.exists(root)):
        time.sleep(0.2)
    # c is the child's pid as the kernel saw it: inside bubblewrap's PID namespace that number names some other
    # host process, so look for the child by its command line instead
    left = subprocess.run(["pgrep", "-f", "^sleep 600$"], capture_output=True, text=True).stdout.split()
    assert not os.path.exists(root) and not left, "left behind"


@case("sandbox", "step deletes its workdir, restart")
def _():
    with Sandbox(memory_limit=None) as b:
        b.run("import os, shutil; shutil.rmtree(os.getcwd())")
        b.restart(); assert b.run("print(1)").stdout == "1\n"


@case("sandbox", "memory_limit=10")
def _():
    one_line_error(lambda: Sandbox(memory_limit=10))


@case("sandbox", "timeout=-1")
def _():
    one_line_error(lambda: Session(cg, timeout=-1))


@case("sandbox", "infinite loop times out, state kept")
def _():
    with Sandbox(timeout=1, memory_limit=None) as b:
        b.run("a = 5"); r = b.run("while True: pass")
        assert r.status == "timeout" and b.run("print(a)").stdout == "5\n"


@case("sandbox", "segfault, replay")
def _():
    with Sandbox(memory_limit=None) as b:
        b.run("a = 5"); r = b.run("import ctypes; ctypes.string_at(0)")
        assert r.status == "crashed" and b.run("print(a)").stdout == "5\n"


@case("sandbox", "exit(), replay")
def _():
    with Sandbox(memory_limit=None) as b:
        b.run("a = 5"); b.run("exit()")
        assert b.run("print(a)").stdout == "5\n"


@case("sandbox", "fd exhaustion")
def _():
    out = py("import resource\nfrom convsynth.sandbox import Sandbox, SandboxError\nimport jupyter_client, ipykernel, zmq\n"
             "resource.setrlimit(resource.RLIMIT_NOFILE, (12, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n"
             "try:\n    Sandbox().run('1')\nexcept SandboxError as e:\n    print('ERR', e)\n")
    assert out.stdout.startswith("ERR") and "too many open files" in out.stdout, out.stdout + out.stderr[-300:]


@case("sandbox", "preamble timed out runs again")
def _():
    s = Session(cg, preamble="import time\ntime.sleep(2)\nX = 1\n", timeout=1, memory_limit=None)
    s.add_code("print(X)"); r = s.run()[0]
    assert "preamble did not run" in r.note
    s.add_code("print(X)"); assert s.run(timeout=10)[0].stdout == "1\n"
    s.close()


@case("sandbox", "drop_oldest replay after undo")
def _():
    s = Session(cg, overflow="drop_oldest", memory_limit=None)
    s.add_code("v = 1"); s.add_code("w = 2"); s.run()
    s.dropped.append(s.turns.pop(0))
    s.add_code("1/0"); s.run(); s.undo()
    s.add_code("print(v + w)"); assert s.run()[-1].stdout == "3\n"
    s.close()


@case("sandbox", "atomic save under a full disk")
def _():
    import resource
    s = Session(cg); s.add_code("x = 1"); p = s.save(TMP / "a.json"); before = p.read_text()
    s.add_code("y = '" + "z" * 200000 + "'")
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN); soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (50000, hard))
    try:
        try:
            s.save(p)
        except OSError:
            pass
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard)); signal.signal(signal.SIGXFSZ, old)
    assert p.read_text() == before


# ---------------------------------------------------------------- CLI
def cli(*args):
    return subprocess.run([sys.executable, "-m", "convsynth", *args], cwd=ROOT, capture_output=True, timeout=300)


def cli_refuses(*args):
    out = cli(*args)
    err = out.stderr.decode("utf-8", "replace")
    assert out.returncode == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, \
        f"rc={out.returncode} {err.strip().splitlines()[-1:] }"


data = TMP / "mtpb.jsonl"
data.write_text(json.dumps({"id": 1, "name": "a", "description": "", "category": "c", "prompts": ["Print {a}."],
                            "inputs": [{"a": 1}], "outputs": [1]}) + "\n")
model_dir = str(ROOT / "convsynth/models/convsynth-tiny")
(TMP / "file").write_text("x")
CLI = {
    "complete --stop '(['": ["complete", "x", "--stop", "(["],
    "complete --device cuda (no GPU)": ["complete", "x", "--device", "cuda"],
    "complete --device tpu": ["complete", "x", "--device", "tpu"],
    "complete --dtype int8": ["complete", "x", "--dtype", "int8"],
    "complete --temperature -1": ["complete", "x", "--temperature", "-1"],
    "complete --max-new-tokens 0": ["complete", "x", "--max-new-tokens", "0"],
    "complete --model missing": ["complete", "x", "--model", "/no/such"],
    "mtpb --problems abc": ["mtpb", "--data", str(data), "--problems", "abc"],
    "mtpb --problems 5-1": ["mtpb", "--data", str(data), "--problems", "5-1"],
    "mtpb --samples 0": ["mtpb", "--data", str(data), "--samples", "0"],
    "mtpb --timeout -5": ["mtpb", "--data", str(data), "--timeout", "-5"],
    "mtpb --jobs 0": ["mtpb", "--data", str(data), "--jobs", "0"],
    "mtpb --out missing folder": ["mtpb", "--data", str(data), "--out", "/no/such/dir/s.jsonl"],
    "mtpb --report missing folder": ["mtpb", "--data", str(data), "--report", "/no/such/dir/r.json"],
    "mtpb --data missing": ["mtpb", "--data", "/no/such.jsonl"],
    "convert to a file": ["convert", model_dir, str(TMP / "file")],
    "convert --dtype int4": ["convert", model_dir, str(TMP / "o"), "--dtype", "int4"],
    "convert to unwritable": ["convert", model_dir, "/proc/nope"],
    "convert missing src": ["convert", "/no/such", str(TMP / "o2")],
}
for name, args in CLI.items():
    @case("cli", name)
    def _(args=args):
        cli_refuses(*args)


@case("cli", "complete with non-UTF-8 prompt")
def _():
    out = subprocess.run([sys.executable.encode(), b"-m", b"convsynth", b"complete", b"\xff\xfe"], cwd=ROOT,
                         capture_output=True, timeout=300)
    assert out.returncode == 2 and b"Traceback" not in out.stderr, out.stderr[-200:]


# ---------------------------------------------------------------- configs
src = ROOT / "convsynth/models/convsynth-tiny"


def with_config(change, name):
    d = TMP / f"cfg-{name}"
    shutil.copytree(src, d)
    cfg = json.loads((d / "config.json").read_text()); change(cfg)
    (d / "config.json").write_text(json.dumps(cfg))
    return d


CFG = {
    "n_layer '6'": lambda c: c.update(n_layer="6"), "n_embd 160.0": lambda c: c.update(n_embd=160.0),
    "vocab_size true": lambda c: c.update(vocab_size=True), "layer_norm_epsilon '1e-5'": lambda c: c.update(layer_norm_epsilon="1e-5"),
    "rotary_dim 16.0": lambda c: c.update(rotary_dim=16.0), "eos_token_id '50256'": lambda c: c.update(eos_token_id="50256"),
    "auto_map": lambda c: c.update(auto_map={"AutoModel": "x.Y"}), "architectures other": lambda c: c.update(architectures=["LlamaForCausalLM"]),
    "model_type gpt2": lambda c: c.update(model_type="gpt2"), "n_head 0": lambda c: c.update(n_head=0),
    "activation relu": lambda c: c.update(activation_function="relu"),
}
for name, change in CFG.items():
    @case("config", name)
    def _(change=change, name=name):
        d = with_config(change, name.replace(" ", "_").replace("'", ""))
        one_line_error(lambda: convsynth.load(d, fast=False))


@case("config", "UTF-16 config")
def _():
    d = TMP / "cfg-utf16"; shutil.copytree(src, d)
    (d / "config.json").write_text((d / "config.json").read_text(), encoding="utf-16")
    one_line_error(lambda: convsynth.load(d, fast=False))


@case("config", "n_positions 10**9 loads and generates")
def _():
    d = with_config(lambda c: c.update(n_positions=10**9), "npos")
    m = convsynth.load(d, fast=False)
    assert m.complete("def f():", max_new_tokens=4, temperature=0) == cg.complete("def f():", max_new_tokens=4, temperature=0)


@case("config", "vocab smaller than shipped tokenizer")
def _():
    d = TMP / "cfg-vocab"; shutil.copytree(src, d)
    cg.tokenizer.save(d)
    from safetensors.torch import load_file, save_file
    f = next(d.glob("*.safetensors")); sd = load_file(f)
    for k in ("transformer.wte.weight", "lm_head.weight", "lm_head.bias"):
        sd[k] = sd[k][:50000].contiguous()
    save_file(sd, f, metadata={"format": "pt"})
    cfg = json.loads((d / "config.json").read_text()); cfg["vocab_size"] = 50000
    (d / "config.json").write_text(json.dumps(cfg))
    one_line_error(lambda: convsynth.load(d, fast=False))


@case("config", "symlink loop weights")
def _():
    d = TMP / "cfg-loop"; shutil.copytree(src, d)
    f = next(d.glob("*.safetensors")); f.unlink(); os.symlink(f, f)
    assert "symbolic link" in one_line_error(lambda: convsynth.load(d, fast=False))


@case("config", "int8 tensor refused")
def _():
    d = TMP / "cfg-int8"; shutil.copytree(src, d)
    from safetensors.torch import load_file, save_file
    f = next(d.glob("*.safetensors")); sd = load_file(f)
    sd["transformer.h.0.mlp.fc_in.weight"] = sd["transformer.h.0.mlp.fc_in.weight"].to(torch.int8)
    save_file(sd, f, metadata={"format": "pt"})
    assert "int8" in one_line_error(lambda: convsynth.load(d, fast=False))


fine = sum(r[2] for r in results)
print(f"\n{fine} fine, {len(results) - fine} defects of {len(results)}")
by = {}
for cat, _, ok, _ in results:
    by.setdefault(cat, [0, 0])[0 if ok else 1] += 1
print(by)
shutil.rmtree(TMP, ignore_errors=True)
