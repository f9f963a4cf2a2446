"""The sandbox kernel's isolation: what this platform can do, the command that applies it, what is in force.

`Isolation(mode, network)` is the sandbox's policy object: ``detect()`` what the platform offers (once per
process), ``prefix(workdir, private)`` the command that goes before the kernel's own, ``env(...)`` the kernel's
clean environment, ``limits_code()`` the limits the kernel sets on itself, ``usage(pid)`` the memory of everything
the kernel started (for the watchdog), ``describe()`` a short line for the repr and the widget, ``cleanup()`` when
the sandbox closes.

On Linux with bubblewrap (`apt-get install bubblewrap`) the kernel runs in new user, PID, IPC, UTS and network
namespaces (the network one only when ``network=False``), with a filesystem made of read-only system paths and the
Python environment, the working directory and the sandbox's private folder (connection files, unix sockets)
writable, and a private size-limited ``/tmp``. Home, credentials and other projects are simply not there. The
kernel gets no capabilities, dies with its parent, and sees only its own processes. Processes are capped by
RLIMIT_NPROC (counted per user namespace), and, for root (whom the kernel exempts from RLIMIT_NPROC), by a pids
cgroup where one is writable; files by RLIMIT_FSIZE. Without bubblewrap (or on macOS, or without user namespaces)
``mode="auto"`` warns once and runs unisolated; ``mode="strict"`` refuses.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import time
import uuid
import warnings

from .execution import SandboxError

MODES = ("auto", "strict", "off")
MAX_PROCESSES = 256           # processes (threads count too) the kernel may have at once
MAX_FILE_SIZE = 1 * 2**30     # bytes in any one file it writes
TMP_SIZE = 512 * 2**20        # its private /tmp (memory-backed)
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
# What the kernel may see of the parent's environment: no tokens, keys or passwords, whatever their names.
_ENV_KEEP = ("PATH", "LANG", "LANGUAGE", "TZ", "TERM", "PYTHONPATH", "PYTHONHASHSEED", "PYTHONIOENCODING",
             "VIRTUAL_ENV", "CONDA_PREFIX", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
             "SYSTEMROOT", "COMSPEC", "PATHEXT", "WINDIR")
_warned = False


class IsolationError(SandboxError):
    """The isolation asked for (``isolation="strict"``) is not available on this machine."""


@functools.lru_cache(maxsize=None)
def detect() -> str:
    """"bwrap" when bubblewrap can build a sandbox here, else the reason it cannot (a sentence)."""
    if sys.platform != "linux":
        return f"isolation needs Linux namespaces, and this is {sys.platform}"
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap is not installed (apt-get install bubblewrap)"
    try:  # the same namespaces the kernel will get: user namespaces may be disabled by the administrator
        out = subprocess.run([bwrap, "--unshare-all", "--die-with-parent", "--cap-drop", "ALL", "--ro-bind", "/",
                              "/", "--dev", "/dev", "--proc", "/proc", "true"], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"bubblewrap does not run ({e})"
    if out.returncode != 0:
        why = (out.stderr.strip().splitlines() or [f"exit code {out.returncode}"])[-1]
        return f"bubblewrap cannot create namespaces here ({why})"
    return "bwrap"


def describe(mode: str = "auto", network: bool = False) -> str:
    """What a sandbox made with these settings gets, in one short line (starts nothing, warns nothing)."""
    how = "turned off (isolation='off')" if mode == "off" else detect()
    if how != "bwrap":
        return f"not isolated: {how}"
    net = "network allowed" if network else "no network"
    return f"isolated (bubblewrap): {net}, writes only to its folder, at most {MAX_PROCESSES} processes"


def _cgroup_base(controller: str) -> str | None:
    """This process's cgroup directory for `controller` (v1, or v2 when it offers it), if we may write there."""
    for line in _read("/proc/self/cgroup").splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "" and controller in _read(f"/sys/fs/cgroup{path}/cgroup.subtree_control").split():
            base = "/sys/fs/cgroup" + path  # v2
        elif controller in controllers.split(","):
            base = f"/sys/fs/cgroup/{controller}{path}"
        else:
            continue
        if os.access(base, os.W_OK):
            return base
    return None


def _sweep(base: str, age: float = 600.0) -> None:
    """Remove empty convsynth cgroups left by processes that were killed before they could (rmdir refuses a
    cgroup that still has processes; `age` spares one a sandbox has just made and not joined yet)."""
    try:
        names = [n for n in os.listdir(base) if n.startswith("convsynth-")]
    except OSError:
        return
    for name in names:
        path = os.path.join(base, name)
        try:
            if time.time() - os.stat(path).st_mtime > age and not _read(f"{path}/cgroup.procs").strip():
                os.rmdir(path)
        except OSError:
            pass


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


class Isolation:
    """How one sandbox's kernel is confined; see the module docstring."""

    def __init__(self, mode: str = "auto", network: bool = False):
        if mode not in MODES:
            raise ValueError(f"isolation must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode, self.network, self.cgroups, self.made_cgroups = mode, network, [], False
        how = detect() if mode != "off" else "off"
        self.active = how == "bwrap"
        self.reason = "" if self.active else ("turned off (isolation='off')" if mode == "off" else how)
        if not self.active and mode == "strict":
            raise IsolationError(f"Cannot isolate the sandbox: {how}. Install bubblewrap, or pass "
                                 "isolation='auto' to run unisolated.")
        global _warned
        if not self.active and mode == "auto" and not _warned:
            _warned = True
            warnings.warn(f"convsynth: the sandbox runs WITHOUT isolation: {how}. Generated code can read your "
                          "files and use the network; isolation='strict' refuses instead.", stacklevel=3)

    def warn_if_home(self, workdir: str) -> None:
        """Say, when the sandbox is made, that an isolated working directory holding the home folder exposes the
        user's visible files there (the kernel starts later, maybe in a thread, where a warning is easily lost)."""
        if self.active and _homes_in(workdir):
            warnings.warn(f"convsynth: the sandbox's working directory {workdir} holds your home folder: its hidden "
                          "files (~/.ssh, ~/.aws, ...) are covered and ~ itself is read-only, but the model's code "
                          "can read and change your other files there; pass cwd='a/project/folder' or cwd=None.",
                          stacklevel=3)

    def describe(self) -> str:
        """One short line: what confines the kernel."""
        return describe(self.mode, self.network)

    def env(self, parent: dict, extra: dict, home: str) -> dict:
        """The kernel's environment: an allow-list of the parent's (no secrets), then `extra`."""
        env = {k: v for k, v in parent.items() if k in _ENV_KEEP or k.startswith("LC_")}
        if self.active:  # IPython and matplotlib write settings under HOME: give them the private /tmp
            env.update(HOME=home, TMPDIR="/tmp", IPYTHONDIR=f"{home}/.ipython", MPLCONFIGDIR=f"{home}/.matplotlib")
        else:
            env.update({k: parent[k] for k in ("HOME", "TMPDIR", "USERPROFILE", "APPDATA") if k in parent})
        env.update(extra)
        return env

    def prefix(self, workdir: str, private: str, memory_limit: int | None = None) -> list[str]:
        """The command before the kernel's (empty when not isolated). `workdir` and `private` stay writable;
        `memory_limit` bounds all its processes together where a memory cgroup is writable."""
        if not self.active:
            return []
        args = [shutil.which("bwrap"), "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                "--unshare-cgroup-try", "--die-with-parent", "--cap-drop", "ALL", "--hostname", "convsynth-sandbox"]
        if not self.network:
            args.append("--unshare-net")
        # /tmp first: binds below it (a checkout in /tmp on PYTHONPATH, the private folder) go on top of it.
        args += ["--dev", "/dev", "--proc", "/proc", "--size", str(TMP_SIZE), "--tmpfs", "/tmp"]
        for path in _SYSTEM:  # /bin -> usr/bin on merged-/usr systems: recreate the link, not a second copy
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
        python_paths = _python_paths()
        for path in python_paths:
            args += ["--ro-bind-try", path, path]
        args += ["--bind", workdir, workdir]
        args += _guard_home(workdir, python_paths)
        args += ["--bind", private, private]  # after the guard: a TMPDIR inside a covered ~/.cache stays reachable
        # ipykernel would watch JPY_PARENT_PID, a pid of another namespace, and see its parent as gone (pid 1):
        # --die-with-parent does that job here.
        args += ["--chdir", workdir, "--unsetenv", "JPY_PARENT_PID"]
        if self.made_cgroups and not all(os.path.isdir(c) for c in self.cgroups):
            self.cleanup()  # removed under us (see _sweep): make them again
        if not self.made_cgroups:  # once per sandbox: a restarted kernel joins the same ones
            self.made_cgroups = True
            limits = {"pids": ("pids.max", MAX_PROCESSES)}
            if memory_limit:
                limits["memory"] = ("memory.max", memory_limit)
            for controller, (name, value) in limits.items():
                self._make_cgroup(controller, name, value)
        if self.cgroups:  # join them before bwrap forks, so every process of the sandbox is counted
            join = " && ".join(f'echo $$ > "{c}/cgroup.procs"' for c in self.cgroups)
            return ["/bin/sh", "-c", join + ' && exec "$@"', "sh"] + args
        return args

    def limits_code(self) -> str:
        """Python run inside the kernel at start: the file size limit, no core files, and (isolated) the process
        limit, which counts only the sandbox's processes in its own user namespace (outside, all the user's)."""
        limits = {"RLIMIT_FSIZE": MAX_FILE_SIZE, "RLIMIT_CORE": 0}
        if self.active:
            limits["RLIMIT_NPROC"] = MAX_PROCESSES
        # Soft and hard alike, so a step cannot raise them again; never above a hard limit already lower.
        return ("import resource as _r\n"
                f"for _k, _n in {limits!r}.items():\n"
                "    _h = _r.getrlimit(getattr(_r, _k))[1]\n"
                "    _n = _n if _h == _r.RLIM_INFINITY else min(_n, _h)\n"
                "    _r.setrlimit(getattr(_r, _k), (_n, _n))\n"
                "del _r, _k, _n, _h\n")

    def _make_cgroup(self, controller: str, name: str, value: int) -> None:
        """A child cgroup with one limit, where this process may make one (root, or a delegated v2 subtree).
        The kernel exempts root from RLIMIT_NPROC, and RLIMIT_DATA is per process: cgroups bound the whole tree."""
        base = _cgroup_base(controller)
        if base is None:
            return
        if not os.path.exists(os.path.join(base, name)):  # v1 memory names its limit differently
            name = {"memory.max": "memory.limit_in_bytes"}.get(name, name)
        _sweep(base)
        made = [c for c in self.cgroups if os.path.dirname(c) == base]  # v2: one directory, every controller
        path = made[0] if made else os.path.join(base, f"convsynth-{uuid.uuid4().hex[:12]}")
        try:
            if not made:
                os.mkdir(path)
                self.cgroups.append(path)
            with open(os.path.join(path, name), "w") as f:
                f.write(str(value))
        except OSError:  # not ours to limit after all: run without this one
            if not made:
                self.cgroups.remove(path) if path in self.cgroups else None
                try:
                    os.rmdir(path)
                except OSError:
                    pass

    @property
    def bounds_memory(self) -> bool:
        """True when a memory cgroup bounds all the kernel's processes together."""
        return any(os.path.exists(f"{c}/memory.max") or os.path.exists(f"{c}/memory.limit_in_bytes")
                   for c in self.cgroups)

    def usage(self, pid: int) -> tuple[int, int]:
        """(data, resident) for the memory watchdog. Summed over the process tree, unless a memory cgroup already
        bounds the sum: then the largest process, as forked children share their parent's pages (a sum would
        count them again)."""
        per = tree_usage(pid, each=True)
        if self.bounds_memory:
            return max((d for d, _ in per), default=0), max((r for _, r in per), default=0)
        return sum(d for d, _ in per), sum(r for _, r in per)

    def cleanup(self) -> None:
        """Remove the cgroups, once their processes are gone (killed processes take a moment to leave)."""
        for path in self.cgroups:
            for _ in range(100):
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
        self.cgroups, self.made_cgroups = [], False


def _python_paths() -> list[str]:
    """The Python environment the kernel needs to read: prefixes and every import path, real paths too."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    # sys.path[0] is the running script's folder (or the notebook's), which the kernel does not need: not that one.
    paths.update(p for p in sys.path[1:] if p and os.path.isabs(p))
    paths.update(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.isabs(p))
    paths.update([os.path.realpath(p) for p in paths])
    home = os.path.realpath(os.path.expanduser("~"))
    # Never the home folder or a folder holding it (an odd sys.path entry must not reveal the whole home).
    return sorted(p for p in paths if os.path.exists(p) and not _within(home, p))


def _homes() -> set[str]:
    """The home folder by $HOME and by the account database (they differ under `sudo -E` and in services)."""
    homes = {os.path.expanduser("~")}
    try:
        import pwd
        homes.add(pwd.getpwuid(os.getuid()).pw_dir)
    except (ImportError, KeyError):
        pass
    return {os.path.realpath(h) for h in homes if h and os.path.isabs(h) and os.path.realpath(h) != "/"}


def _within(path: str, folder: str) -> bool:
    return (path + os.sep).startswith(folder.rstrip(os.sep) + os.sep)


def _homes_in(workdir: str) -> list[str]:
    """The home folders (see _homes) that lie inside `workdir`, or are it."""
    work = os.path.realpath(workdir)
    return sorted(h for h in _homes() if _within(h, work) and os.path.isdir(h))


def _guard_home(workdir: str, python_paths: list[str]) -> list[str]:
    """bwrap arguments for a working directory that holds the home folder (a notebook in ~ with the default
    cwd="."), which would otherwise be mounted whole and writable. Then the home folder itself is read-only (no new
    ~/.bash_profile, usercustomize.py or ~/.ssh/authorized_keys), its visible subfolders stay writable, and its
    hidden entries (~/.ssh, ~/.aws, ~/.config, ~/.netrc, shell history; what a hidden symlink points to) are covered:
    folders by an empty 1 MiB tmpfs (what is written there stays in memory), files by /dev/null. Import paths
    inside a covered folder (a user site-packages, pyenv) are bound again, read-only. Nothing when the working
    directory does not hold home."""
    work = os.path.realpath(workdir)

    def inside(real: str) -> str:  # where a real path under `work` appears in the sandbox (mounted at workdir)
        return os.path.normpath(os.path.join(workdir, os.path.relpath(real, work)))

    args, covered = [], []
    for home in _homes_in(workdir):
        if home != work:  # its own mount, so that it alone can be made read-only
            args += ["--bind", home, inside(home)]
        names = sorted(os.listdir(home))
        for name in names:  # visible subfolders: writable as before
            path = os.path.join(home, name)
            if not name.startswith(".") and os.path.isdir(path) and not os.path.islink(path):
                args += ["--bind", path, inside(path)]
        args += ["--remount-ro", inside(home)]
        for name in names:
            if not name.startswith("."):
                continue
            real = os.path.realpath(os.path.join(home, name))
            if not _within(real, work) or _within(home, real) or real in covered or not os.path.exists(real):
                continue  # outside the mounted tree, home itself or above it (covered anyway), or dangling
            if os.path.isdir(real):
                # writable (mount points for a TMPDIR or an import path inside it), small, and in memory only
                args += ["--size", str(2**20), "--tmpfs", inside(real)]
                covered.append(real)
            else:
                args += ["--ro-bind", "/dev/null", inside(real)]
    for path in python_paths:
        real = os.path.realpath(path)
        if any(_within(real, c) for c in covered):
            args += ["--ro-bind-try", path, inside(real)]
    return args


def tree_usage(pid: int, each: bool = False):
    """(data, resident, processes) summed over `pid` and all its descendants; with `each`, a (data, resident)
    pair per process. Linux reads /proc; elsewhere psutil (resident memory only), if installed."""
    if os.path.isdir("/proc/self"):
        children: dict[int, list[int]] = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                stat = _read(f"/proc/{name}/stat")
                if stat:
                    children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(name))
        per, todo = [], [pid]
        while todo:
            p = todo.pop()
            per.append(_status_memory(p))
            todo += children.get(p, [])
    else:
        try:
            import psutil
            root = psutil.Process(pid)
            per = [(0, p.memory_info().rss) for p in [root] + root.children(recursive=True)]
        except Exception:  # no psutil, or the process is gone
            per = []
    if each:
        return per
    return sum(d for d, _ in per), sum(r for _, r in per), len(per)


def _status_memory(pid: int) -> tuple[int, int]:
    found = {}
    for line in _read(f"/proc/{pid}/status").splitlines():
        key, _, value = line.partition(":")
        if key in ("VmData", "VmRSS"):
            found[key] = int(value.split()[0]) * 1024
    return found.get("VmData", 0), found.get("VmRSS", 0)
