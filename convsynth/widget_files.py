"""Where the widget keeps its files: autosaves in ``.convsynth/<notebook>-<n>.json`` next to the notebook, and
export names that never replace an existing file (``convsynth-session.py``, then ``convsynth-session-2.py``...).
No ipywidgets here, so the rules can be tested on their own."""
from __future__ import annotations

import os
import re
from pathlib import Path

FOLDER = ".convsynth"
_given: set[Path] = set()  # autosave paths handed out in this process, not written yet (written on first change)


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


def new_autosave(directory: Path, name: str | None = None) -> Path:
    """A new autosave path, ``.convsynth/<name>-<n>.json`` with n one more than the highest there."""
    name = name or notebook_name()
    found = _numbered(Path(directory), name)
    n = found[-1][0] + 1 if found else 1
    while (path := Path(directory).resolve() / FOLDER / f"{name}-{n}.json") in _given:
        n += 1
    _given.add(path)
    return path


def latest_autosave(directory: Path, name: str | None = None) -> Path | None:
    """The autosave of this notebook changed last, or None."""
    found = _numbered(Path(directory), name or notebook_name())
    return max((p for _, p in found), key=lambda p: p.stat().st_mtime_ns, default=None)


def saved_sessions(directory: Path) -> list[Path]:
    """Every autosave in the folder, newest first."""
    return sorted((Path(directory) / FOLDER).glob("*.json"), key=lambda p: p.stat().st_mtime_ns, reverse=True)


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
