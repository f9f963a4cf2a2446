"""The sandbox with real kernels and real subprocesses (no mocks).

Kernels are slow to start (~1-2 s), so most tests share one module-scoped Sandbox, and the
tests that restart a process share a second one with a short history to replay.
"""
from __future__ import annotations

import base64
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from convsynth.sandbox import ExecutionResult, Sandbox, SandboxError, run_script

ROOT = Path(__file__).resolve().parents[1]


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def gone_soon(pid: int, within: float = 5.0) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def sb():
    with Sandbox(timeout=10) as box:
        r = box.run("x = 41\nprint('hi')")
        assert r.ok and r.stdout == "hi\n", r
        yield box


@pytest.fixture(scope="module")
def crashy():
    """For tests that kill or restart the process: a short history keeps replays quick."""
    with Sandbox(timeout=10) as box:
        assert box.run("a = 1").ok
        yield box


# ------------------------------------------------------------------ results


def test_result_round_trips_through_json():
    r = ExecutionResult("error", stdout="o", error="E: x", outputs=[{"text/plain": "1"}], expectation=False)
    back = ExecutionResult.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back == r and not back.ok
    assert ExecutionResult.from_dict({"status": "ok", "unknown": 1}).ok


# ------------------------------------------------------------------ ordinary steps


def test_state_persists_and_last_expression_is_a_result(sb):
    r = sb.run("x + 1")
    assert r.ok and r.outputs == [{"text/plain": "42"}] and r.expectation is None
    assert "x = 41\nprint('hi')" in sb.history and "x + 1" in sb.history


def test_exception_gives_error_and_plain_traceback(sb):
    n = len(sb.history)
    r = sb.run("def f():\n    return 1 / 0\nf()")
    assert r.status == "error" and r.error == "ZeroDivisionError: division by zero"
    assert "ZeroDivisionError" in r.traceback and "return 1 / 0" in r.traceback
    assert "\x1b" not in r.traceback and "ZeroDivisionError" in r.note
    assert len(sb.history) == n  # failed steps are not replayed later


def test_syntax_error(sb):
    r = sb.run("def f(:\n    pass")
    assert r.status == "error" and r.error.startswith("SyntaxError")
    assert "\x1b" not in r.traceback


def test_input_raises_instead_of_hanging(sb):
    r = sb.run("name = input('name? ')")
    assert r.status == "error" and r.error.startswith("StdinNotImplementedError")
    assert "input()" in r.note and r.duration < 5


def test_display_and_stderr(sb):
    r = sb.run("import sys\nfrom IPython.display import display, HTML\n"
               "display(HTML('<b>bold</b>'))\nprint('warn', file=sys.stderr)\n'last'")
    assert r.ok and r.stderr == "warn\n"
    assert r.outputs[0]["text/html"] == "<b>bold</b>"
    assert r.outputs[-1] == {"text/plain": "'last'"}


def test_huge_output_is_truncated_quickly(sb):
    r = sb.run("print('y' * 10_000_000)\nprint('tail')")
    assert r.ok and r.truncated and len(r.stdout) == sb.max_output
    assert "100000 characters" in r.note and r.duration < 10


def test_expect_output(sb):
    r = sb.run("print(x)", expect_output="41\n\n")
    assert r.ok and r.expectation is True
    r = sb.run("print(x)", expect_output="42")
    assert r.status == "expectation_failed" and r.expectation is False and "'42'" in r.note
    r = sb.run("1/0", expect_output="1")
    assert r.status == "error" and r.expectation is False


def test_check_runs_in_the_step_namespace(sb):
    r = sb.run("y = x * 2", check="assert y == 82")
    assert r.ok and r.expectation is True
    r = sb.run("z = 5", check="assert z == 6, 'z should be 6'")
    assert r.status == "expectation_failed" and r.expectation is False
    assert "AssertionError: z should be 6" in r.note
    assert sb.history[-1] == "z = 5"  # the step itself ran, so replay must include it
    r = sb.run("w = 1", check="assert undefined_name")
    assert r.status == "expectation_failed" and "NameError" in r.note


# ------------------------------------------------------------------ time and interrupts


def test_an_interrupted_caller_stops_its_step_in_the_kernel(sb):
    """Ctrl-C (or a notebook's Stop) in the thread waiting for a step raises KeyboardInterrupt there; the step must
    stop in the kernel too, not go on running and then run a second time when the caller runs it again."""
    import _thread
    sb.run("n_runs = 0")
    # Python's own Ctrl-C handler (an earlier test's library may have replaced it; interrupt_main needs it)
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Timer(1.0, _thread.interrupt_main).start()
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            sb.run("import time\ntime.sleep(6)\nn_runs += 1")
    finally:
        signal.signal(signal.SIGINT, old)
    res = sb.run("print(n_runs)")
    assert res.ok and res.stdout.strip() == "0", res  # not 1: the interrupted step did not finish later
    assert time.monotonic() - t0 < 5  # nor did this wait for it
    assert sb.run("n_runs += 1\nprint(n_runs)").stdout.strip() == "1"


def test_timeout_interrupts_and_keeps_state(sb):
    pid = sb.pid
    r = sb.run("import time\nwhile True: time.sleep(0.01)", timeout=1)
    assert r.status == "timeout" and r.timed_out and not r.restarted
    assert r.note == "Timed out after 1 s; interrupted." and r.duration < 5
    assert sb.pid == pid and sb.run("print(x)").stdout == "41\n"


def test_interrupt_from_another_thread(sb):
    threading.Timer(0.5, sb.interrupt).start()
    r = sb.run("import time\ntime.sleep(30)")
    assert r.status == "error" and r.error.startswith("KeyboardInterrupt") and not r.timed_out
    assert "Interrupted" in r.note and r.duration < 5
    assert sb.run("x").ok  # a stale interrupt does not hit the next step


def test_run_from_a_background_thread(sb):
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", sb.run("print(x * 10)")))
    t.start()
    t.join(30)
    assert box["r"].ok and box["r"].stdout == "410\n"


# ------------------------------------------------------------------ memory


def test_big_allocation_gives_memory_status_without_restart(sb):
    pid = sb.pid
    r = sb.run("b = bytearray(3 * 2**30)")
    assert r.status == "memory" and r.error == "MemoryError" and not r.restarted
    assert "2.0 GiB" in r.note
    assert sb.pid == pid and sb.run("print(x)").stdout == "41\n"


def test_growing_list_gives_memory_status_and_earlier_state_survives(crashy):
    # bytes(n) is calloc'ed, so this fills the limit without touching (slow) pages.
    r = crashy.run("big = []\nwhile True: big.append(bytes(10**8))")
    assert r.status == "memory" and "MemoryError" in r.error, r
    assert "memory" in r.note.lower()
    r2 = crashy.run("print(a, 'big' in globals())")
    assert r2.stdout == "1 False\n"  # if `big` still held the memory, the process was restarted


def test_numpy_and_matplotlib_work_under_the_limit():
    with Sandbox(timeout=60) as box:
        # 1 GiB fits under the 2 GiB limit (np.zeros is calloc'ed, so this is quick)
        r = box.run("import numpy as np\nbig = np.zeros(2**27)\na = np.ones((1000, 1000))\n"
                    "print(big.nbytes // 2**20, float((a @ a[:, :10]).sum()))")
        assert r.ok and r.stdout.split() == ["1024", str(1000.0 * 1000 * 10)], r
        r = box.run("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('t');")
        assert r.ok, r
        pngs = [o["image/png"] for o in r.outputs if "image/png" in o]
        assert len(pngs) == 1 and base64.b64decode(pngs[0]).startswith(b"\x89PNG")


# ------------------------------------------------------------------ crashes and restarts


def test_process_exit_is_a_crash_and_history_is_replayed(crashy):
    pid = crashy.pid
    r = crashy.run("import os\nos._exit(1)")
    assert r.status == "crashed" and r.restarted
    assert r.note.startswith("The process died (exit code 1); restarted it and replayed")
    assert crashy.pid != pid and gone_soon(pid)
    assert crashy.run("print(a)").stdout == "1\n"


def test_segfault_is_a_crash(crashy):
    r = crashy.run("import ctypes\nctypes.string_at(0)")
    assert r.status == "crashed" and r.restarted and "SIGSEGV" in r.note
    assert crashy.run("print(a)").stdout == "1\n"


def test_code_that_ignores_the_interrupt_is_restarted(crashy):
    crashy.interrupt_grace = 0.5
    pid = crashy.pid
    r = crashy.run("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass", timeout=1)
    assert r.status == "timeout" and r.timed_out and r.restarted
    assert "did not stop when interrupted" in r.note and "replayed" in r.note
    assert gone_soon(pid) and crashy.run("print(a)").stdout == "1\n"


def test_interrupting_code_that_ignores_it_restarts(crashy):
    crashy.interrupt_grace = 0.5
    threading.Timer(0.5, crashy.interrupt).start()
    r = crashy.run("import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(30)")
    assert r.status == "error" and r.error == "KeyboardInterrupt" and r.restarted and not r.timed_out
    assert "Interrupted on request" in r.note and "replayed" in r.note
    assert crashy.run("print(a)").stdout == "1\n"


def test_exit_restarts_and_is_not_replayed(crashy):
    r = crashy.run("exit()")
    assert r.status == "error" and r.error == "SystemExit" and r.restarted and "exit()" in r.note
    assert "exit()" not in crashy.history and crashy.run("print(a)").stdout == "1\n"


def test_process_killed_between_steps_is_restarted(crashy):
    os.kill(crashy.pid, signal.SIGKILL)
    end = time.monotonic() + 5
    while crashy.pid is not None and time.monotonic() < end:  # until it is reaped, not just a zombie
        time.sleep(0.05)
    r = crashy.run("print(a)")
    assert r.ok and r.restarted and r.stdout == "1\n" and "had died" in r.note


def test_restart_with_replay_gives_just_those_steps(crashy):
    assert crashy.restart(replay=["b = 2"]) == ""
    assert crashy.history == ["b = 2"]
    assert crashy.run("print(b)").stdout == "2\n"
    assert crashy.run("a").error == "NameError: name 'a' is not defined"
    note = crashy.restart(replay=["a = 1", "1 / 0", "c = 3"])
    assert crashy.history == ["a = 1"] and "step 2 failed" in note and "ZeroDivisionError" in note


# ------------------------------------------------------------------ isolation and cleanup


def test_sandboxes_are_isolated_and_cleaned_up(sb, tmp_path):
    limit = "import resource\nprint(resource.getrlimit(resource.RLIMIT_DATA)[0])"
    assert sb.run(limit).stdout == f"{2 * 2**30}\n"
    other = Sandbox(cwd=str(tmp_path), memory_limit=None)
    assert other.run(limit).stdout == f"{resource.getrlimit(resource.RLIMIT_DATA)[0]}\n"
    assert other.run("open('made_here.txt', 'w').write('1')\nimport os\nprint(os.getcwd())").stdout.strip() \
        == str(tmp_path) == other.workdir
    assert (tmp_path / "made_here.txt").exists()
    assert other.run("x").error == "NameError: name 'x' is not defined"
    assert not os.path.exists(os.path.join(sb.workdir, "made_here.txt"))
    assert os.path.isdir(sb.workdir) and sb.workdir != other.workdir
    pid, private = other.pid, other._root
    other.close()
    assert gone_soon(pid) and not os.path.exists(private)
    assert tmp_path.exists()  # a caller's directory is never removed
    with pytest.raises(SandboxError):
        other.run("1")
    other.close()  # twice is fine


def test_no_kernel_outlives_the_interpreter():
    code = ("from convsynth.sandbox import Sandbox\nbox = Sandbox()\nbox.run('1')\n"
            "print(box.pid, box.workdir, flush=True)\n")  # exits without close()
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    pid, workdir = out.stdout.split()
    assert gone_soon(int(pid)) and not os.path.exists(workdir)


# ------------------------------------------------------------------ run_script


def test_run_script_ok_and_error():
    r = run_script("import sys\nprint('hello')\nprint('note', file=sys.stderr)")
    assert r.ok and r.stdout == "hello\n" and r.stderr == "note\n" and not r.timed_out
    r = run_script("def f():\n    return {}['k']\nf()")
    assert r.status == "error" and r.error == "KeyError: 'k'" and "line 2, in f" in r.traceback
    r = run_script("def f(:\n")
    assert r.status == "error" and r.error.startswith("SyntaxError")
    r = run_script("import sys\nsys.exit(3)")
    assert r.status == "error" and "exit code 3" in r.note


def test_run_script_limits():
    r = run_script("import time\ntime.sleep(30)", timeout=1)
    assert r.status == "timeout" and r.timed_out and r.duration < 5
    r = run_script("b = bytearray(3 * 2**30)")
    assert r.status == "memory" and r.error == "MemoryError"
    r = run_script("x = []\nwhile True: x.append(bytes(10**8))")
    assert r.status == "memory"
    r = run_script("import ctypes\nctypes.string_at(0)")
    assert r.status == "crashed" and "SIGSEGV" in r.note
    r = run_script("print('y' * 10_000_000)\nprint('END')", max_output=1000)
    assert r.ok and r.truncated and len(r.stdout) <= 1000
    assert r.stdout.startswith("yyy") and "output cut" in r.stdout and r.stdout.endswith("END\n")
    r = run_script("input()")
    assert r.status == "error" and r.error.startswith("EOFError")


def test_run_script_kills_stray_children(tmp_path):
    r = run_script("import subprocess\nprint(subprocess.Popen(['sleep', '60']).pid)", cwd=str(tmp_path))
    assert r.ok and gone_soon(int(r.stdout))


def test_run_script_from_many_threads():
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: run_script(f"print({i} * 2)"), range(16)))
    assert [r.stdout for r in results] == [f"{i * 2}\n" for i in range(16)]
    assert all(r.ok for r in results)


# ------------------------------------------------------------------ faults (issue 18)


def _python(code: str, timeout: float = 90) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter (so a hang or a dead host cannot take the test process with it)."""
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_a_dropped_sandbox_does_not_freeze_the_garbage_collector():
    # The zmq context used to be collected while the client's sockets were open: its teardown waited forever.
    code = ("import gc\nfrom convsynth.sandbox import Sandbox\n"
            "box = Sandbox(); box.run('x = 1'); pid = box.pid; box = None; gc.collect()\n"
            "box = Sandbox(); box.run('x = 1'); box.me = box; box = None; gc.collect()\n"  # in a cycle too
            "print('collected', pid, flush=True)\n")
    out = _python(code)
    assert out.returncode == 0 and out.stdout.startswith("collected"), out.stderr[-2000:]
    assert gone_soon(int(out.stdout.split()[1]))


@pytest.mark.parametrize("how, isolation", [("os._exit", "off"), ("SIGKILL", "off"), ("SIGTERM", "off"),
                                           ("SIGKILL", "auto")])
def test_the_kernel_and_its_children_die_with_the_host(how, isolation):
    code = (f"import os, sys, time\nfrom convsynth.sandbox import Sandbox\nbox = Sandbox(isolation={isolation!r})\n"
            "r = box.run('import subprocess\\nprint(subprocess.Popen([\"sleep\", \"600\"]).pid)')\n"
            "print(box.pid, r.stdout.strip(), box._root, flush=True)\n"
            + ("os._exit(0)\n" if how == "os._exit" else "time.sleep(600)\n"))
    host = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    kernel, child, root = host.stdout.readline().split()
    # isolated, the step sees its child's pid in its own PID namespace: only the unisolated one is a host pid
    children = [int(child)] if isolation == "off" else []
    assert all(alive(pid) for pid in [int(kernel), *children]) and os.path.isdir(root)
    if how != "os._exit":
        host.send_signal(getattr(signal, how))
    host.wait(timeout=30)
    assert all(gone_soon(pid, 20) for pid in [int(kernel), *children])
    end = time.monotonic() + 10
    while os.path.exists(root) and time.monotonic() < end:
        time.sleep(0.05)
    assert not os.path.exists(root)


def test_a_step_that_deletes_its_working_directory_does_not_break_restarts():
    with Sandbox(memory_limit=None, isolation="off") as box:  # isolated, the folder is a mount: it cannot go
        assert box.run("a = 1\nimport os, shutil\nshutil.rmtree(os.path.dirname(os.getcwd()))").ok
        assert not os.path.exists(box.workdir)
        for _ in range(2):  # the replay deletes it again: every restart must cope
            assert box.restart() == ""
            assert box.run("print(a)").stdout == "1\n"


def test_limits_that_cannot_work_are_refused_up_front():
    for bad in (-1, float("nan"), "ten", True):
        with pytest.raises(SandboxError, match="timeout"):
            Sandbox(timeout=bad)
    for bad in (10, 2.5e9, -1):
        with pytest.raises(SandboxError, match="memory_limit=.* bytes"):
            Sandbox(memory_limit=bad)


def test_running_out_of_file_descriptors_is_a_clear_error():
    code = ("import resource\nfrom convsynth.sandbox import Sandbox, SandboxError\n"
            "import jupyter_client, ipykernel, zmq  # imported before the limit\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (12, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n"
            "try:\n    Sandbox().run('1')\nexcept SandboxError as e:\n    print(str(e))\n")
    out = _python(code)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "too many open files" in out.stdout and len(out.stdout.strip().splitlines()) == 1


def test_why_a_step_ended_is_read_from_its_outcome_alone():
    from convsynth.sandbox import _Outcome, why_ended
    err = {"status": "error", "ename": "KeyboardInterrupt", "evalue": ""}

    def why(out, closed=False, cancelled=False, mem=2**30):
        return why_ended(out, closed=closed, cancelled=cancelled, memory_limit=mem)
    assert why(_Outcome("done", {"status": "ok"})) == "ok"
    assert why(_Outcome("done", {"status": "error", "ename": "ValueError"})) == "raised"
    assert why(_Outcome("done", {"status": "ok", "payload": [{"source": "ask_exit"}]})) == "exit"
    assert why(_Outcome("closed")) == "closed" and why(_Outcome("hung"), closed=True) == "closed"
    assert why(_Outcome("memory_kill")) == "memory_kill"
    assert why(_Outcome("died", peak=2**30)) == "out_of_memory" and why(_Outcome("died", peak=10)) == "crashed"
    assert why(_Outcome("died", peak=2**30), mem=None) == "crashed"
    assert why(_Outcome("done", err, interrupted=True)) == "timeout"
    assert why(_Outcome("done", err, interrupted=True), cancelled=True) == "interrupted"
    assert why(_Outcome("hung", interrupted=True)) == "timeout_hung"
    assert why(_Outcome("hung", interrupted=True), cancelled=True) == "interrupted_hung"


def test_script_result_reads_how_a_script_ended():
    from convsynth.execution import script_result
    kw = dict(timed_out=False, truncated=False, timeout=5.0, memory_limit=None, max_output=100)
    assert script_result(0, "hi\n", "", **kw).status == "ok"
    tb = "Traceback (most recent call last):\n  File \"main.py\", line 1\nZeroDivisionError: division by zero\n"
    r = script_result(1, "", tb, **kw)
    assert (r.status, r.error) == ("error", "ZeroDivisionError: division by zero") and r.traceback.startswith("Tr")
    assert script_result(1, "", "MemoryError\n", **kw).status == "memory"
    assert script_result(-9, "", "", **kw).status == "crashed"
    assert script_result(-9, "", "", **{**kw, "timed_out": True}).note == "Timed out after 5 s; killed."
