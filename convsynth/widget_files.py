"""Where the widget keeps its files: autosaves in ``.convsynth/<notebook>-<n>.json`` next to the notebook, and
export names that never replace an existing file (``convsynth-session.py``, then ``convsynth-session-2.py``...).
No ipywidgets here, so the rules can be tested on their own."""
from __future__ import annotations

import atexit
import contextlib
import os
import re
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: autosaves are not locked (the sandbox needs Linux anyway)
    fcntl = None

FOLDER = ".convsynth"
_given: set[Path] = set()  # autosave paths handed out in this process (each written at its first change)
_held: dict[Path, int] = {}  # autosave paths this process writes -> the open, locked file that says so


def notebook_name() -> str:
    """The running notebook's name without .ipynb (Jupyter tells its kernels in JPY_SESSION_NAME), or 'session'."""
    name = Path(os.environ.get("JPY_SESSION_NAME", "")).name
    stem = name[:-len(".ipynb")] if name.endswith(".ipynb") else Path(name).stem
    return re.sub(r"[^\w.-]+", "-", stem).strip("-.") or "session"


def _numbered(directory: Path, name: str) -> list[tuple[int, Path]]:
    found = []
    for p in (directory / FOLDER).glob(f"{name}-*.json"):
        m = re.fullmatch(re.escape(name) + r"-(\d+)\.json", p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def _written(p: Path) -> bool:
    """A saved session, not a name claimed by new_autosave and not written yet (empty)."""
    try:
        return p.stat().st_size > 0
    except OSError:
        return False


def new_autosave(directory: Path, name: str | None = None) -> Path:
    """A new autosave path, ``.convsynth/<name>-<n>.json`` with n one more than the highest there, claimed at once
    (created empty and exclusively): two kernels in one folder never get the same file, even where Jupyter does
    not tell them their notebook's name and both are 'session'. A claimed file still empty is never listed or
    resumed, and is removed when this process exits. Where the folder cannot be written, the path is only
    reserved in this process (saving it reports why it fails)."""
    name = name or notebook_name()
    folder = Path(directory).resolve() / FOLDER
    found = _numbered(Path(directory), name)
    n = found[-1][0] + 1 if found else 1
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
    while True:
        path = folder / f"{name}-{n}.json"
        n += 1
        if path in _given:
            continue
        try:
            open(path, "x").close()
        except FileExistsError:
            continue
        except OSError:
            pass  # the folder cannot be written: reserved in this process only
        _given.add(path)
        hold(path)
        return path


def _lock_file(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


def hold(path: Path) -> bool:
    """Mark the autosave ``path`` as written by this process: an advisory lock (flock) on ``.<name>.lock``
    beside it, which the system releases when the process ends, however it ends. Another kernel then does not
    resume or open it (``in_use``), so two kernels never write one session file. False when another live process
    holds it; True also where no lock can be taken (a read-only folder, no flock)."""
    path = Path(path).resolve()
    if path in _held or fcntl is None:
        return True
    try:
        fd = os.open(_lock_file(path), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    except OSError:
        os.close(fd)
        return True
    _held[path] = fd
    return True


def in_use(path: Path) -> bool:
    """Whether another live process (a kernel whose widget saves there) holds the autosave ``path``."""
    path = Path(path).resolve()
    if path in _held or fcntl is None:
        return False
    try:
        fd = os.open(_lock_file(path), os.O_RDONLY)
    except OSError:
        return False  # no lock file: nobody holds it
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing releases a shared lock we took


@atexit.register
def _drop_unwritten() -> None:
    for path in _given:
        with contextlib.suppress(OSError):
            if path.stat().st_size == 0:
                path.unlink()
    for path, fd in _held.items():
        with contextlib.suppress(OSError):
            _lock_file(path).unlink()
            os.close(fd)


def latest_autosave(directory: Path, name: str | None = None) -> Path | None:
    """The autosave of this notebook changed last, or None; one that another kernel writes is not resumed."""
    found = [p for _, p in _numbered(Path(directory), name or notebook_name()) if _written(p) and not in_use(p)]
    return max(found, key=lambda p: p.stat().st_mtime_ns, default=None)


def saved_sessions(directory: Path) -> list[Path]:
    """Every autosave in the folder, newest first."""
    found = [p for p in (Path(directory) / FOLDER).glob("*.json") if _written(p)]
    return sorted(found, key=lambda p: p.stat().st_mtime_ns, reverse=True)


def reserve(directory: Path, stem: str, suffix: str) -> Path:
    """Create (empty) and return ``stem.suffix``, or ``stem-2.suffix``, ``stem-3.suffix``...: the first name not
    taken. Created exclusively, so two exports never get the same file and no existing file is replaced."""
    directory = Path(directory)
    for n in range(1, 100_000):
        path = directory / (f"{stem}{suffix}" if n == 1 else f"{stem}-{n}{suffix}")
        try:
            with open(path, "x"):
                return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free name for {stem}{suffix} in {directory}")
