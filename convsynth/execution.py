"""What running generated code produced (`ExecutionResult`), and `run_script`: one program in a fresh, limited
Python subprocess, for harnesses that run many programs side by side (the MTPB checker). The kernel-backed
`Sandbox` (sandbox.py) shares the result type and the limit helpers. Not a security boundary: see sandbox.py.
"""
from __future__ import annotations

import dataclasses
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from .errors import ConvsynthError

STATUSES = ("ok", "error", "timeout", "crashed", "memory", "expectation_failed")
# A terminal escape: CSI sequences (colours, cursor moves, any parameters and final byte) and OSC ones (titles,
# links) ended by BEL or ST. IPython colours tracebacks with them; results and views strip them with this one.
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
_EXC_LINE = re.compile(r"^[A-Za-z_][\w.]*(?::\s?.*)?$")
_SET_LIMIT = (  # run in the child: lower the soft RLIMIT_DATA to {n} bytes (never above the hard limit)
    "import resource as _r\n_h = _r.getrlimit(_r.RLIMIT_DATA)[1]\n"
    "_r.setrlimit(_r.RLIMIT_DATA, ({n} if _h == _r.RLIM_INFINITY else min({n}, _h), _h))\ndel _r, _h\n")


class SandboxError(ConvsynthError, RuntimeError):
    """The sandbox cannot run code: its kernel does not start, or it was closed."""


MIN_MEMORY = 64 * 2**20  # below this not even an idle Python process fits
MEMORY_LIMIT = 2 * 2**30  # the default limit of a step, a script and an MTPB program


def check_limits(timeout, memory_limit, error=SandboxError) -> None:
    """Refuse limits that cannot work, before anything starts: ``timeout`` in seconds (0 or None: no limit),
    ``memory_limit`` in bytes (None: no limit)."""
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not 0 <= timeout < float("inf")):
        raise error(f"timeout={timeout!r} must be a number of seconds >= 0 (0 or None: no limit).")
    if memory_limit is not None and (isinstance(memory_limit, bool) or not isinstance(memory_limit, int)
                                     or memory_limit < MIN_MEMORY):
        raise error(f"memory_limit={memory_limit!r} must be a number of bytes of at least {MIN_MEMORY} (64 MiB), "
                    "e.g. 2 * 2**30 for 2 GiB, or None for no limit.")


@dataclass
class ExecutionResult:
    """What happened when one step (or script) ran. Plain, JSON-safe fields."""

    status: str  # one of STATUSES
    stdout: str = ""
    stderr: str = ""
    error: str | None = None  # "ZeroDivisionError: division by zero"
    traceback: str | None = None  # plain text
    outputs: list[dict] = field(default_factory=list)  # mime bundles: {"text/plain": ..., "image/png": base64}
    duration: float = 0.0
    timed_out: bool = False
    restarted: bool = False  # the process was restarted (and earlier steps replayed)
    truncated: bool = False
    expectation: bool | None = None  # None: nothing expected
    note: str = ""  # what happened, in words, for the user

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ExecutionResult:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

# The program dies with the process that runs it (PR_SET_PDEATHSIG survives the exec; run_script waits in the thread
# that started the child, so that thread outlives it). Linux only; elsewhere the timeout still ends it.
_DIE_WITH_PARENT = (
    "import sys\nif sys.platform.startswith('linux'):\n"
    "    import ctypes, os, signal\n"
    "    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG\n"
    "    if os.getppid() != {parent}:\n        os._exit(1)\n")


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def _exit_words(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    if code is not None and 128 < code < 128 + signal.NSIG:  # a shell or bubblewrap reports a signal as 128 + n
        try:
            return f"signal {signal.Signals(code - 128).name} (exit code {code})"
        except ValueError:
            pass
    return f"exit code {code}"


def _short(text: str, n: int = 200) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")


def _proc_memory(pid: int) -> tuple[int, int]:
    """(VmData, VmRSS) of a process in bytes; zeros if it is gone."""
    found = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmData", "VmRSS"):
                    found[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return found.get("VmData", 0), found.get("VmRSS", 0)


def _kill_group(pid: int) -> None:
    # Our children lead their own session (start_new_session), so the pid is the group id;
    # killing the group also ends processes they started, even after they died themselves.
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------------------- run_script


def run_script(code: str, *, timeout: float = 20.0, memory_limit: int | None = MEMORY_LIMIT,
               cwd: str | None = None, max_output: int = 100_000) -> ExecutionResult:
    """Run `code` as a program in a fresh `python` subprocess and report what happened.

    Fast (no kernel) and safe to call from many threads at once. The process group is killed
    at the end, so stray children do not survive. Output is capped at `max_output` characters
    per stream (see _collect). No stdin: input() gets EOFError.
    """
    start = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="convsynth-script-")
    try:
        path = os.path.join(tmp, "main.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(code)
        proc = _start_script(path, cwd or tmp, memory_limit)
        try:
            out, err, truncated, timed_out = _collect(proc, start + timeout, max_output)
        finally:
            _kill_group(proc.pid)
            proc.wait()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res = script_result(proc.returncode, out, err, timed_out=timed_out, truncated=truncated, timeout=timeout,
                        memory_limit=memory_limit, max_output=max_output)
    res.duration = time.monotonic() - start
    return res


def _start_script(path: str, cwd: str, memory_limit: int | None) -> subprocess.Popen:
    """Start `python path` in its own session, with the memory limit set and no stdin."""
    # Set the limit, then exec the program so its tracebacks show only its own frames.
    # (Not preexec_fn: that is unsafe when the caller has threads.)
    launcher = (_SET_LIMIT.format(n=memory_limit) if memory_limit else "") + \
        _DIE_WITH_PARENT.format(parent=os.getpid()) + \
        "import os, sys\nos.execv(sys.executable, [sys.executable, sys.argv[1]])\n"
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8", MPLBACKEND="Agg")
    return subprocess.Popen([sys.executable, "-c", launcher, path], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def script_result(rc: int, out: str, err: str, *, timed_out: bool, truncated: bool, timeout: float,
                  memory_limit: int | None, max_output: int) -> ExecutionResult:
    """How a script ended, from its exit code and output: ok, timeout, memory, crashed (a signal) or error,
    with the exception line and traceback read from stderr."""
    res = ExecutionResult("ok", stdout=out, stderr=err, truncated=truncated, timed_out=timed_out)
    if timed_out:
        res.status, res.note = "timeout", f"Timed out after {timeout:g} s; killed."
    elif rc != 0:
        lines = err.rstrip().splitlines()
        first = max((i for i, l in enumerate(lines) if l.startswith("Traceback (most recent call")), default=0)
        res.error = next((l for l in reversed(lines[first:]) if _EXC_LINE.match(l)), None)
        res.traceback = "\n".join(lines[first:]) if res.error else None
        if (res.error or "").split(":")[0].endswith("MemoryError") or "std::bad_alloc" in err:
            res.status = "memory"
            res.note = f"Ran out of memory (limit {_gib(memory_limit)})." if memory_limit else "Ran out of memory."
        elif rc < 0:
            res.status, res.note = "crashed", f"The process died ({_exit_words(rc)})."
        else:
            res.status, res.error = "error", res.error or f"exit code {rc}"
            res.note = f"The program failed ({_exit_words(rc)})."
    if truncated:
        res.note = f"{res.note} Output was cut to {max_output} characters.".strip()
    return res


def _collect(proc: subprocess.Popen, deadline: float, cap: int) -> tuple[str, str, bool, bool]:
    """Read stdout and stderr until the process ends or the deadline passes.

    Returns (stdout, stderr, truncated, timed_out), each text at most `cap` characters. A long
    stdout keeps its head and its last lines (a harness may print its verdict last); a long
    stderr keeps its tail, where the traceback is.
    """
    keep = cap * 4 + 4  # bytes that surely hold `cap` characters of UTF-8
    head, tail, err = bytearray(), bytearray(), bytearray()
    seen = {"out": 0, "err": 0}
    timed_out, exited_at = False, None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ, "out")
        sel.register(proc.stderr, selectors.EVENT_READ, "err")
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                timed_out = True
                break
            exited_at = exited_at or (now if proc.poll() is not None else None)
            if exited_at and now - exited_at > 0.2:  # children may hold the pipes open: stop soon after exit
                break
            for key, _ in sel.select(timeout=min(0.1, deadline - now)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                seen[key.data] += len(chunk)
                if key.data == "out":
                    head += chunk[: max(keep - len(head), 0)]
                    tail += chunk
                    del tail[:-keep]
                else:
                    err += chunk
                    del err[:-keep]
    proc.stdout.close()
    proc.stderr.close()
    so, se = head.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    truncated = len(so) > cap or seen["out"] > len(head) or len(se) > cap or seen["err"] > len(err)
    if len(so) > cap or seen["out"] > len(head):
        n = max(cap // 10, 1)
        marker = "\n[... output cut ...]\n"
        so = so[: max(cap - n - len(marker), 0)] + marker + tail.decode("utf-8", "replace")[-n:]
        so = so[-cap:] if len(so) > cap else so
    return so, se[-cap:], truncated, timed_out
