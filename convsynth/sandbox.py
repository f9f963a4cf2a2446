"""Run generated code in a separate, persistent Python process, with limits.

`Sandbox` keeps one Jupyter kernel per session (ipykernel, started through jupyter_client with
this interpreter, so it sees the same packages) and runs code steps in it one at a time. Each
step gets a time limit (interrupt; restart if the code ignores the interrupt), a memory limit
(2 GiB by default) and an output cap. When the process dies or has to be restarted, the steps
that succeeded are replayed quietly, so later steps still see earlier variables.
`run_script` (execution.py, re-exported here) runs one program in a fresh plain subprocess with
the same limits, for harnesses that run many programs side by side.

Isolation (isolation.py): on Linux with bubblewrap the kernel runs in its own namespaces: no
network (unless network=True), writes only to its working directory and a private /tmp, sees
none of the user's files outside the working directory, only its own processes, with a process
and a file-size limit. Where that is not available it warns once and runs with the user's
rights (isolation="strict" refuses instead). The environment is an allow-list either way.

Memory is limited with RLIMIT_DATA (heap, anonymous mappings, thread stacks), not RLIMIT_AS:
an idle ipykernel already reserves ~0.8 GB of address space, so 2 GiB of address space would
leave about 1 GiB for data. A watchdog on the resident memory of the kernel and every process
it started backs it up.
"""
from __future__ import annotations

import errno
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field

from .execution import (  # noqa: F401 -- run_script, STATUSES: re-exported
    _SET_LIMIT, ANSI, MEMORY_LIMIT, STATUSES, ExecutionResult, SandboxError, _exit_words, _gib, _kill_group,
    _short, check_limits, run_script,
)
from .errors import describe
from .isolation import Isolation

KERNEL_CMD = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
_MAX_OUTPUTS = 100  # rich outputs kept per step
_MAX_RICH_CHARS = 20 * 2**20  # images, HTML... per step; they are kept whole or dropped
_POLL = 0.05  # seconds between looks at the kernel while a step runs


# Run once in the kernel: code compiled while `_convsynth_next` is set is called by that name in tracebacks
# ("In step 2, line 3" rather than "Cell In[7], line 3"). IPython 9 asks compile.format_code_name; older
# versions ignore this and keep their "Cell In[n]".
_STEP_NAMES = """
def _convsynth_names(c=get_ipython().compile):
    names, cache, fmt = {}, c.cache, c.format_code_name if hasattr(c, "format_code_name") else None
    c._convsynth_next = None
    def named_cache(transformed_code, number=0, raw_code=None):
        name = cache(transformed_code, number, raw_code)
        if c._convsynth_next:
            names[name], c._convsynth_next = c._convsynth_next, None
        return name
    c.cache = named_cache
    if fmt is not None:
        c.format_code_name = lambda name: ("In", names[name]) if name in names else fmt(name)
_convsynth_names()
del _convsynth_names
"""


# Run in the kernel at start: when our process dies (even SIGKILL, when no finalizer runs), the kernel notices that
# its parent changed, removes the sandbox's temporary folder and kills its process group (itself and the step's
# children). A thread rather than prctl(PR_SET_PDEATHSIG): that signal fires when the *thread* that started the
# kernel ends, and kernels are often started from a short-lived background thread (the widget's).
_WATCHDOG = """
def _convsynth_watchdog(root):
    import os, shutil, signal, threading, time
    parent = os.getppid()  # whoever started us (our host, or the process that wraps the kernel), seen from here
    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        shutil.rmtree(root, ignore_errors=True)
        os.killpg(os.getpgid(0), signal.SIGKILL)
    threading.Thread(target=watch, name="convsynth-parent-watch", daemon=True).start()
_convsynth_watchdog({root!r})
del _convsynth_watchdog
"""


# A tiny process outside the kernel that removes the sandbox folder once our process is gone: an isolated kernel
# (bubblewrap, --die-with-parent) is killed with us before its own watchdog could do it. close() ends it.
_REAPER = 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; rm -rf "$2"'


# The thread that starts kernels. bubblewrap's --die-with-parent (PR_SET_PDEATHSIG) kills the kernel when the
# *thread* that started it ends, and sandboxes are often started from short-lived threads (the widget runs each
# action in a new one): the next step then found its kernel killed. This thread lives as long as the process.
_LAUNCHER = None
_LAUNCHER_LOCK = threading.Lock()


def _launch(fn):
    """Call ``fn`` (which starts a process) in the long-lived launcher thread and return its result."""
    global _LAUNCHER
    from concurrent.futures import ThreadPoolExecutor
    with _LAUNCHER_LOCK:
        if _LAUNCHER is None:
            _LAUNCHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="convsynth-launcher")
    return _LAUNCHER.submit(fn).result()


def _asked_exit(out: _Outcome) -> bool:
    return any(p.get("source") == "ask_exit" for p in out.reply.get("payload", []))


def _reply(kc, msg_id: str, error: dict) -> dict:
    """The execute reply to ``msg_id``. The kernel replies before it goes idle, so it is already on the shell
    channel; if it does not come within 5 s, the error seen on iopub (if any) stands for it."""
    end = time.monotonic() + 5
    while time.monotonic() < end:
        try:
            msg = kc.get_shell_msg(timeout=0.5)
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg["content"]
    return dict(error, status="error") if error else {"status": "ok"}


def why_ended(out: _Outcome, *, closed: bool, cancelled: bool, memory_limit: int | None) -> str:
    """Why a step's request ended, from its outcome alone: "closed" (the sandbox was closed), "memory_kill" (killed
    over the memory limit), "out_of_memory" (died near it), "crashed" (died otherwise), "exit" (exit() or quit()),
    "timeout" / "interrupted" (stopped by the deadline / by cancel; with "_hung" when it did not stop), "raised" or
    "ok" (it finished)."""
    if out.how == "closed" or (closed and out.how != "done"):
        return "closed"
    if out.how == "memory_kill":
        return "memory_kill"
    if out.how == "died":
        return "out_of_memory" if memory_limit and out.peak >= 0.9 * memory_limit else "crashed"
    if _asked_exit(out):
        return "exit"
    if out.how == "hung" or (out.reply.get("status") == "error" and out.interrupted
                             and out.reply.get("ename") == "KeyboardInterrupt"):
        return ("timeout" if out.interrupted and not cancelled else "interrupted") + \
            ("_hung" if out.how == "hung" else "")
    return "raised" if out.reply.get("status", "ok") != "ok" else "ok"


# ---------------------------------------------------------------------------- Sandbox


class _Capture:
    """Collects one step's output within the caps."""

    def __init__(self, cap: int):
        self.cap, self.used, self.rich, self.truncated = cap, 0, 0, False
        self.stdout, self.stderr, self.outputs = [], [], []

    def _take(self, text: str) -> str:
        room = max(self.cap - self.used, 0)
        if len(text) > room:
            self.truncated, text = True, text[:room]
        self.used += len(text)
        return text

    def stream(self, name: str, text: str) -> None:
        (self.stderr if name == "stderr" else self.stdout).append(self._take(text))

    def bundle(self, data: dict) -> None:
        kept = {}
        for mime, value in data.items():
            if mime == "text/plain":
                kept[mime] = self._take(value)
                continue
            size = len(value) if isinstance(value, str) else len(json.dumps(value))
            if self.rich + size > _MAX_RICH_CHARS or len(self.outputs) >= _MAX_OUTPUTS:
                self.truncated = True  # HTML, images, JSON are useless when cut: dropped whole
                continue
            self.rich += size
            kept[mime] = value
        if kept and len(self.outputs) < _MAX_OUTPUTS:
            self.outputs.append(kept)


@dataclass
class _Outcome:
    """Raw result of one execute request."""

    how: str  # "done" | "hung" (ignored the interrupt) | "died" | "memory_kill" | "closed"
    reply: dict = field(default_factory=dict)
    exit_code: int | None = None
    interrupted: bool = False  # we sent SIGINT (deadline or interrupt())
    peak: int = 0  # highest VmData/VmRSS seen, bytes


class _Handle:
    """What must be cleaned up even if a Sandbox is never closed (weakref.finalize holds this). Nothing here may
    block: a finalizer runs inside the garbage collector, in whatever thread allocated at that moment."""

    def __init__(self, root: str, isolation: Isolation):
        self.root, self.proc, self.isolation, self.context, self.reaper = root, None, isolation, None, None
        self.clients = ()  # the kernel manager and client: kept alive here so that their sockets stay closable

    def close_sockets(self) -> None:
        # Close every socket of our own zmq context with linger 0. A context collected while the client's sockets
        # are still open waits for them forever in its teardown: that froze the process when a session was dropped.
        # The sockets must still be reachable (self.clients), or a garbage cycle drops them from the context's
        # weak set and destroy() cannot close them.
        if self.context is not None:
            self.context.destroy(linger=0)
            self.context = None
        self.clients = ()

    def kill(self) -> None:
        if self.proc is not None:
            _kill_group(self.proc.pid)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def cleanup(self) -> None:
        self.close_sockets()
        self.kill()
        if self.reaper is not None:  # we are alive: the folder is removed here
            self.reaper.kill()
            self.reaper.wait()
            self.reaper = None
        self.isolation.cleanup()
        shutil.rmtree(self.root, ignore_errors=True)


def _manager_class(prefix: list[str]):
    # Imported here: `import convsynth` must work without Jupyter installed.
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpec

    class _Manager(KernelManager):
        """Runs this interpreter's ipykernel, without a kernelspec lookup."""

        @property
        def kernel_spec(self):
            # Isolated, the process we start is bubblewrap, which must not get SIGINT: interrupts go as messages.
            return KernelSpec(argv=prefix + KERNEL_CMD, display_name="convsynth sandbox", language="python",
                              interrupt_mode="message" if prefix else "signal")

    return _Manager


class Sandbox:
    """A persistent Python process (a Jupyter kernel) that runs code steps with limits.

    run/restart/close are serialized by a lock; interrupt() and close() may be called from any
    thread to stop the step in progress.
    """

    interrupt_grace = 2.0  # seconds code gets to stop after SIGINT before the process is restarted

    def __init__(self, *, timeout: float = 10.0, memory_limit: int | None = MEMORY_LIMIT,
                 max_output: int = 100_000, cwd: str | None = None, env: dict | None = None,
                 network: bool = False, isolation: str = "auto"):
        if os.name == "nt":
            raise SandboxError("The sandbox needs Linux or macOS (process groups, resource limits); on Windows "
                               "run convsynth inside WSL.")
        check_limits(timeout, memory_limit, SandboxError)
        self.timeout, self.memory_limit, self.max_output = timeout, memory_limit, max_output
        self.isolation = Isolation(isolation, network)  # warns once, or refuses for "strict", when unavailable
        self._root = tempfile.mkdtemp(prefix="convsynth-sandbox-")  # connection files, log, workdir
        self._workdir = os.path.abspath(cwd) if cwd else os.path.join(self._root, "work")
        os.makedirs(self._workdir, exist_ok=True)
        self.isolation.warn_if_home(self._workdir)
        # The inline backend turns figures into image/png outputs instead of opening windows.
        self._env = self.isolation.env(os.environ, {**(env or {}), "MPLBACKEND":
                                                    "module://matplotlib_inline.backend_inline"}, home="/tmp")
        self._handle = _Handle(self._root, self.isolation)
        self._handle.reaper = subprocess.Popen(["sh", "-c", _REAPER, "convsynth-reaper", str(os.getpid()), self._root],
                                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL, start_new_session=True)
        self._finalizer = weakref.finalize(self, _Handle.cleanup, self._handle)  # also runs at exit
        self._lock, self._cancel = threading.RLock(), threading.Event()
        self._closed, self._km, self._kc, self._starts = False, None, None, 0
        self._history: list[str] = []
        self._names: dict[str, str] = {}  # code -> what its tracebacks call it (kept across restarts)

    @property
    def workdir(self) -> str:
        return self._workdir

    @property
    def history(self) -> list[str]:
        """Code of the steps that succeeded in the current process, in order (what gets replayed)."""
        return list(self._history)

    @property
    def pid(self) -> int | None:
        """The kernel's process id, or None when none is running."""
        proc = self._handle.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        """Start the kernel now (run() does it lazily), e.g. from a background thread to hide the wait."""
        with self._lock:
            self._ensure_running()

    def interrupt(self) -> None:
        """Stop the step in progress, from any thread; it ends with status "error"."""
        self._cancel.set()

    def run(self, code: str, *, timeout: float | None = None, expect_output: str | None = None,
            check: str | None = None, name: str | None = None, keep: bool = True) -> ExecutionResult:
        """Run one step and report what happened; problems in the code are never raised.

        `timeout` defaults to the sandbox's; 0 means no limit. `expect_output` is compared with
        the stripped stdout; `check` is assertion code run afterwards in the same namespace.
        `name` ("step 2") is what tracebacks call this code instead of IPython's "Cell In[n]".
        `keep=False`: a look that changes nothing, not replayed after a restart.
        """
        with self._lock:
            start = time.monotonic()
            self._cancel.clear()
            note = self._ensure_running()
            if name:
                self._names[code] = name
                self._label(code)
            limit = self.timeout if timeout is None else timeout
            cap = _Capture(self.max_output)
            res = self._step(code, limit, cap)
            res.restarted = res.restarted or bool(note)
            res.stdout, res.stderr, res.outputs = "".join(cap.stdout), "".join(cap.stderr), cap.outputs
            res.truncated = res.truncated or cap.truncated
            notes = [note, res.note]
            if res.truncated:
                notes.append(f"Output was cut to {self.max_output} characters.")
            if res.status == "ok" and keep:
                self._history.append(code)
                notes.append(self._check_expectations(res, expect_output, check, limit))
            elif expect_output is not None or check is not None:
                res.expectation = False
            res.note = " ".join(n for n in notes if n)
            res.duration = time.monotonic() - start
            return res

    def restart(self, replay: list[str] | None = None) -> str:
        """Start a fresh process and quietly replay `replay` (default: history).

        `history` then holds the steps that replayed. Returns "" when all did, else what failed.
        """
        with self._lock:
            if self._closed:
                raise SandboxError("This sandbox is closed; create a new Sandbox.")
            steps = list(self._history if replay is None else replay)
            note = self._restart(steps)
            return "" if len(self._history) == len(steps) else note

    def close(self) -> None:
        """Kill the kernel (and its children) and remove the temporary directory."""
        self._closed = True
        self._handle.kill()  # now, so that a run in another thread ends at once
        with self._lock:
            self._shutdown()
            self._finalizer()

    # -- process ----------------------------------------------------------------------

    def _ensure_running(self) -> str:
        """Start the kernel if needed; returns a note if it had died and was restarted."""
        if self._closed:
            raise SandboxError("This sandbox is closed; create a new Sandbox.")
        proc = self._handle.proc
        if proc is None:
            self._start()
        elif proc.poll() is not None:
            return f"The process had died since the last step ({_exit_words(proc.returncode)}); " + \
                self._restart(self._history)
        return ""

    def _start(self) -> None:
        if self._closed:
            raise SandboxError("This sandbox is closed; create a new Sandbox.")
        import zmq
        self._starts += 1
        # A step may have deleted its working directory (or our whole folder): a restart must not fail on that.
        os.makedirs(self._workdir, exist_ok=True)
        if self._handle.context is None:
            self._handle.context = zmq.Context()  # ours, so that close and the finalizer can close its sockets
        try:
            # IPC sockets in our private directory: no TCP ports opened, nothing shared.
            km = _manager_class(self.isolation.prefix(self._workdir, self._root, self.memory_limit))(
                transport="ipc", ip=os.path.join(self._root, f"ipc{self._starts}"), context=self._handle.context)
            km.connection_file = os.path.join(self._root, f"kernel{self._starts}.json")
            with open(os.path.join(self._root, "kernel.log"), "ab") as log:  # kernel noise stays out of the notebook
                _launch(lambda: km.start_kernel(cwd=self._workdir, env=self._env, stdout=log, stderr=log))
            self._km, self._handle.proc = km, km.provisioner.process
            self._kc = km.client()
            self._handle.clients = (km, self._kc)
            self._kc.allow_stdin = False
            self._kc.start_channels(hb=False)  # liveness comes from the process itself
        except (OSError, zmq.ZMQError) as e:
            self._shutdown()
            hint = " (too many open files: close sessions you no longer use, or raise the limit with ulimit -n)" \
                if getattr(e, "errno", None) == errno.EMFILE else ""
            raise SandboxError(f"The sandbox kernel could not start: {describe(e)}{hint}.") from None
        try:
            self._kc.wait_for_ready(timeout=60)
        except RuntimeError as e:
            self._shutdown()
            raise SandboxError(f"The sandbox kernel did not start ({e}); see {self._root}/kernel.log.") from e
        setup = (_SET_LIMIT.format(n=self.memory_limit) if self.memory_limit else "") + \
            self.isolation.limits_code() + _STEP_NAMES + \
            "get_ipython().run_line_magic('xmode', 'Plain')\nget_ipython().run_line_magic('colors', 'nocolor')\n" + \
            _WATCHDOG.format(root=self._root)
        out = self._execute(setup, 60, None, silent=True, cancellable=False)  # short, plain tracebacks
        if out.how != "done" or out.reply.get("status") != "ok":
            self._shutdown()
            why = f"it used more than the memory limit of {_gib(self.memory_limit)} at start; raise memory_limit" \
                if out.how in ("memory_kill", "died") and self.memory_limit else out.reply.get("evalue", out.how)
            raise SandboxError(f"Could not set up the sandbox kernel: {why}.")

    def _shutdown(self) -> None:
        """Kill the current kernel and drop the connection; no restart."""
        kc, km, self._kc, self._km = self._kc, self._km, None, None
        self._handle.clients = ()
        if kc is not None:
            kc.stop_channels()
        self._handle.kill()
        self._handle.proc = None
        if km is not None:
            try:
                km.cleanup_resources()
            except Exception:  # best effort: the files live in our temp dir, removed on close
                pass

    def _restart(self, steps: list[str], it: str = "it") -> str:
        """Fresh kernel, then replay `steps`; returns a note "restarted it and replayed ..."."""
        self._shutdown()
        self._history = []
        self._cancel.clear()  # an interrupt that led here is used up; a new one may stop the replay
        self._start()
        for i, step in enumerate(steps):
            self._label(step)
            out = self._execute(step, self.timeout, None, silent=True)
            if out.how == "done" and out.reply.get("status") == "ok" and not _asked_exit(out):
                self._history.append(step)
                continue
            if out.how == "done" and not _asked_exit(out):
                why = f"{out.reply.get('ename')}: {out.reply.get('evalue')}"
                return (f"restarted {it} and replayed {i} of {len(steps)} earlier steps; step {i + 1} "
                        f"failed ({why}), so the later ones were not replayed.")
            self._shutdown()  # dead or stuck: start clean rather than trust a half state
            self._history = []
            self._start()
            why = "it called exit()" if out.how == "done" else out.how
            return (f"restarted {it}, but replaying step {i + 1} of {len(steps)} failed ({why}); "
                    "the namespace is empty.")
        return f"restarted {it} and replayed {len(steps)} earlier step{'' if len(steps) == 1 else 's'}."

    # -- steps ------------------------------------------------------------------------

    def _label(self, code: str) -> None:
        """Tell the kernel what the next cell is called in tracebacks (one short silent request)."""
        name = self._names.get(code)
        if name and self._kc is not None:
            self._execute(f"get_ipython().compile._convsynth_next = {name!r}", 10, None, silent=True,
                          cancellable=False)

    def _step(self, code: str, limit: float | None, cap: _Capture, *, silent: bool = False) -> ExecutionResult:
        """Run code and turn the outcome into a result, restarting the process when needed."""
        out = self._execute(code, limit, cap, silent=silent)
        why = why_ended(out, closed=self._closed, cancelled=self._cancel.is_set(), memory_limit=self.memory_limit)
        res = self._ending(why, out, limit)
        if why == "exit" or out.how != "done" or out.reply.get("status", "ok") == "ok":
            return res
        self._add_traceback(res, out.reply)
        if res.status == "ok":  # not the interrupt, handled above
            self._raised(res, out.reply.get("ename", "Error"))
        return res

    def _ending(self, why: str, out: _Outcome, limit: float | None) -> ExecutionResult:
        """The result of a step that ended ``why`` (see ``why_ended``), restarting the process when it died, hung
        or exited; "ok" for one that finished (raised or not: see ``_raised``)."""
        res, mem = ExecutionResult("ok"), self.memory_limit
        if why == "closed":
            res.status, res.note = "crashed", "The sandbox was closed while the step ran."
        elif why in ("memory_kill", "out_of_memory", "crashed"):
            died = f"the process died ({_exit_words(out.exit_code)})"
            if why == "memory_kill":
                res.status = "memory"
                res.note = f"Used more than the {_gib(mem)} memory limit, so the process was killed; "
            elif why == "out_of_memory":
                res.status, res.note = "memory", f"Ran out of memory (limit {_gib(mem)}) and {died}; "
            else:
                res.status, res.note = "crashed", f"{died[0].upper()}{died[1:]}; "
            res.restarted, res.note = True, res.note + self._restart(self._history)
        elif why == "exit":  # exit()/quit(): ipykernel ends the process right after replying
            res.status, res.error, res.restarted = "error", "SystemExit", True
            res.note = "exit() ends the sandbox's process; " + self._restart(self._history)
        elif why.startswith(("timeout", "interrupted")):
            res.timed_out = why.startswith("timeout")
            res.status = "timeout" if res.timed_out else "error"
            res.note = f"Timed out after {limit:g} s" if res.timed_out else "Interrupted on request"
            if why.endswith("_hung"):
                res.restarted = True
                res.note += ", and the code did not stop when interrupted; "
                res.note += self._restart(self._history, "the process")
            else:
                res.note += "; interrupted."
            if not res.timed_out:
                res.error = "KeyboardInterrupt"
        return res

    def _add_traceback(self, res: ExecutionResult, reply: dict) -> None:
        """The exception line and the (plain, capped) traceback of a step that raised."""
        ename = reply.get("ename", "Error")
        res.error = f"{ename}: {reply['evalue']}" if reply.get("evalue") else ename
        res.traceback = ANSI.sub("", "\n".join(reply.get("traceback", [])))
        if len(res.traceback) > self.max_output:  # the end of a traceback says the most
            res.traceback, res.truncated = "...\n" + res.traceback[-self.max_output:], True

    def _raised(self, res: ExecutionResult, ename: str) -> None:
        """Status and note of a step that raised ``ename``: a MemoryError (restarting the process if the memory is
        still held), input() without stdin, or any other error."""
        mem = self.memory_limit
        if ename.endswith("MemoryError"):
            res.status = "memory"
            res.note = f"Ran out of memory (limit {_gib(mem)}): {res.error}." if mem else \
                f"Ran out of memory: {res.error}."
            if mem and self.isolation.usage(self._handle.proc.pid)[0] > 0.8 * mem:  # the step still holds it
                res.restarted = True
                res.note += " The memory was still in use; " + self._restart(self._history, "the process")
            else:
                res.note += " Earlier variables are intact."
        elif ename == "StdinNotImplementedError":
            res.status, res.note = "error", "input() is not available: the sandbox has no standard input. " \
                                            "Put the values in the code instead."
        else:
            res.status, res.note = "error", f"The step raised {ename}."

    def _check_expectations(self, res: ExecutionResult, expect_output: str | None, check: str | None,
                            limit: float | None) -> str:
        """Compare stdout with `expect_output`, then run `check` in the step's namespace; returns a note."""
        if expect_output is None and check is None:
            return ""
        res.expectation = True
        if expect_output is not None and res.stdout.strip() != expect_output.strip():
            res.expectation, res.status = False, "expectation_failed"
            return f"Expected output {_short(expect_output.strip())}, got {_short(res.stdout.strip())}."
        if check is None:
            return ""
        sub = self._step(check, limit, _Capture(self.max_output), silent=True)
        if sub.ok:
            return ""
        res.expectation, res.restarted = False, res.restarted or sub.restarted
        if sub.status in ("error", "memory"):
            res.status = "expectation_failed"
            return f"The check failed: {sub.error}." + (f" {sub.note}" if sub.restarted else "")
        res.status, res.timed_out = sub.status, sub.timed_out  # the check itself timed out or crashed
        return f"The check did not finish: {sub.note}"

    def _execute(self, code: str, limit: float | None, cap: _Capture | None, *, silent: bool = False,
                 cancellable: bool = True) -> _Outcome:
        """Send one execute request and follow it until the kernel is idle, dies, or hangs.

        On the deadline (or interrupt()) the kernel gets SIGINT; if it is not idle within
        `interrupt_grace` seconds the outcome is "hung" and the caller restarts it.
        Only this thread touches the jupyter_client objects; other threads just set flags.
        """
        kc = self._kc
        msg_id = kc.execute(code, silent=silent, store_history=not silent, allow_stdin=False, stop_on_error=False)
        try:
            return self._follow(kc, msg_id, limit, cap, cancellable)
        except BaseException:
            # This thread was interrupted (Ctrl-C or a notebook's Stop raises KeyboardInterrupt here): the step must
            # not go on running in the kernel, and be sent again by the next run as if it never had.
            self._abandon(kc, msg_id)
            raise

    def _abandon(self, kc, msg_id: str) -> None:
        """Interrupt the step ``msg_id`` and wait (interrupt_grace) for the kernel to be idle; a kernel that is
        not is killed (the next run starts a fresh one and replays the steps that ran)."""
        try:
            self._km.interrupt_kernel()
            end = time.monotonic() + self.interrupt_grace
            while time.monotonic() < end:
                try:
                    msg = kc.get_iopub_msg(timeout=_POLL)
                except queue.Empty:
                    continue
                if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                        and msg["content"].get("execution_state") == "idle"):
                    return
        except Exception:  # noqa: BLE001 -- a kernel already gone: the kill below makes sure
            pass
        self._handle.kill()

    def _follow(self, kc, msg_id: str, limit: float | None, cap: _Capture | None, cancellable: bool) -> _Outcome:
        proc = self._handle.proc
        out, error = _Outcome("done"), {}
        deadline = time.monotonic() + limit if limit else float("inf")
        grace_end, next_look = None, 0.0
        while True:
            now = time.monotonic()
            if self._closed:
                out.how = "closed"
                return out
            if grace_end is None and (now >= deadline or (cancellable and self._cancel.is_set())):
                out.interrupted, grace_end = True, now + self.interrupt_grace
                try:
                    self._km.interrupt_kernel()  # SIGINT to the kernel's process group
                except Exception:  # already dead: the look below notices
                    pass
            elif grace_end is not None and now >= grace_end:
                out.how = "hung"
                return out
            if now >= next_look:
                next_look = now + _POLL
                if not self._alive(proc, out):
                    return out
            try:
                msg = kc.get_iopub_msg(timeout=_POLL)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "status" and content.get("execution_state") == "idle":
                break
            if kind == "error":
                error = content
            elif cap is not None and kind == "stream":
                cap.stream(content.get("name", "stdout"), content.get("text", ""))
            elif cap is not None and kind in ("display_data", "execute_result"):
                cap.bundle(content.get("data", {}))
        out.reply = _reply(kc, msg_id, error)
        return out

    def _alive(self, proc, out: _Outcome) -> bool:
        """One look at the kernel's process: is it alive and within the memory limit? If not, ``out`` says
        how it ended (a process over the limit is killed here)."""
        if proc.poll() is not None:
            out.how, out.exit_code = "died", proc.returncode
            return False
        if self.memory_limit:
            data, rss = self.isolation.usage(proc.pid)
            out.peak = max(out.peak, data, rss)
            if rss > self.memory_limit:  # memory RLIMIT_DATA does not count (e.g. shared): stop it here
                _kill_group(proc.pid)
                out.how, out.exit_code = "memory_kill", proc.wait()
                return False
        return True
