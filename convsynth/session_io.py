"""Loading saved sessions and exporting them as notebooks (kept apart so session.py stays about turns)."""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path

from .errors import ConvsynthError, SessionError
from .execution import MEMORY_LIMIT
from .generate import Sampling
from .stops import make_stop
from .outputs import to_outputs
from .turns import Turn, TurnStats

FORMAT = "convsynth-session"  # the "format" of a saved session's JSON
VERSION = 1  # of the saved-session format


def write_atomic(path, text: str, *, parents: bool = False) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename: a write that fails
    part-way (disk full, killed, a kernel restart) leaves the previous file whole. ``parents``: make the folder
    first if it is missing (autosave does)."""
    path = Path(path)
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def write_file(path, text: str, what: str) -> Path:
    """``write_atomic`` to a path the user gave (``save``, ``to_notebook``): a folder, a missing folder or a
    refused write is one SessionError line naming the path, not the temporary file's."""
    path = Path(path)
    if path.is_dir():
        raise SessionError(f"{path} is a folder: give a file name inside it for {what}.")
    if not path.parent.is_dir():
        raise SessionError(f"cannot write {what} to {path}: the folder {path.parent} does not exist; create it "
                           "first.")
    try:
        return write_atomic(path, text)
    except OSError as e:
        raise SessionError(f"cannot write {what} to {path}: {e.strerror or e}.") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _kind(value) -> str:
    return "null" if value is None else type(value).__name__


def _check(data: dict, key: str, types: tuple, where: str, default=None, required: bool = False):
    """data[key] if it has one of ``types`` (bool is never a number); SessionError naming the field otherwise."""
    if key not in data:
        if required:
            raise SessionError(f"{where} has no {key!r} field.")
        return default
    value = data[key]
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        raise SessionError(f"{where}: {key!r} is {_kind(value)}, expected {names}.")
    return value


_TURN_FIELDS = {"instruction": (str, type(None)), "code": (str,), "expect_output": (str, type(None)),
                "check": (str, type(None)), "stats": (dict,), "result": (dict, type(None)),
                "data": (dict, type(None)), "attempts": (list,), "edited": (bool,)}


# A field's annotation (a string: the modules use postponed annotations) -> the JSON types that may stand for it
_FIELD_TYPES = {"str": (str,), "str | None": (str, type(None)), "int": (int,), "float": (int, float),
                "float | None": (int, float, type(None)), "bool": (bool,), "bool | None": (bool, type(None)),
                "list[dict]": (list,)}


def _record(cls, data: dict, where: str):
    """``cls`` (TurnStats, ExecutionResult) from a saved object, each known field of its annotated type (unknown
    fields are ignored: a newer convsynth may add some); SessionError naming the field otherwise."""
    import dataclasses
    from .execution import ExecutionResult, STATUSES
    values = {f.name: _check(data, f.name, _FIELD_TYPES[f.type], where, required=f.name == "status")
              for f in dataclasses.fields(cls) if f.name in data or f.name == "status"}
    if cls is ExecutionResult:
        if values["status"] not in STATUSES:
            raise SessionError(f"{where}: status {values['status']!r} is not one of {', '.join(STATUSES)}.")
        if not all(isinstance(b, dict) and all(isinstance(k, str) for k in b) for b in values.get("outputs", [])):
            raise SessionError(f"{where}: 'outputs' must be a list of objects (mime type -> data).")
    return cls(**values)


def _turn(t, where: str, Turn, TurnStats, ExecutionResult):
    if not isinstance(t, dict):
        raise SessionError(f"{where} is {_kind(t)}, expected an object with 'code' and 'instruction'.")
    f = {k: _check(t, k, types, where, required=k == "code") for k, types in _TURN_FIELDS.items()}
    stats = _record(TurnStats, f["stats"] or {}, f"{where} stats")
    result = _record(ExecutionResult, f["result"], f"{where} result") if f["result"] else None
    if f["data"] is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in f["data"].items()):
        raise SessionError(f"{where}: 'data' must map variable names to pickled values (text).")
    if not all(isinstance(a, dict) for a in f["attempts"] or []):
        raise SessionError(f"{where}: 'attempts' must be a list of objects.")
    return Turn(f["instruction"], f["code"], stats, result, f["expect_output"], f["check"], f["data"],
                list(f["attempts"] or []), bool(f["edited"]))


def load(cls, path, model, *, stop=None):
    """Read and check a saved session completely before building it; every problem is one SessionError line."""
    from .execution import ExecutionResult, check_limits
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SessionError(f"no saved session at {path}") from None
    except IsADirectoryError:
        raise SessionError(f"{path} is a directory; pass the session's .json file.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SessionError(f"{path} is not a saved session: it is not valid JSON ({e}).") from None
    except RecursionError:
        raise SessionError(f"{path} is not a saved session: its JSON is nested too deeply.") from None
    except OSError as e:
        raise SessionError(f"cannot read {path}: {e.strerror or e}.") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SessionError(f"{path} is not a saved convsynth session (no \"format\": \"{FORMAT}\").")
    where = str(path)
    version = data.get("version")
    if version != VERSION:
        raise SessionError(f"{path} is a session file of version {version!r}; this convsynth reads version "
                           f"{VERSION}. Load it with the convsynth that saved it, or upgrade convsynth.")
    saved, cfg = _check(data, "model", (dict,), where, {}), model.config
    for key in ("n_embd", "n_layer", "n_head", "vocab_size"):
        if key in saved and saved[key] != getattr(cfg, key):
            raise SessionError(f"{path} was made with another model ({saved.get('name')!r}: {key}={saved[key]}, "
                               f"this one has {getattr(cfg, key)}). Load that model and pass it to Session.load.")
    preamble = _check(data, "preamble", (str,), where, "")
    sampling_d = _check(data, "sampling", (dict,), where, {})
    saved_stop = _check(data, "stop", (str, list, dict, type(None)), where, "codegen")
    if isinstance(saved_stop, dict):  # a callable: it could not be saved
        if stop is None:
            raise SessionError(f"{path} was saved with a callable stop rule "
                               f"({saved_stop.get('callable', '?')}), which cannot be saved: pass it again, "
                               "Session.load(path, model, stop=...).")
    elif stop is None:
        stop = saved_stop
    overflow = _check(data, "overflow", (str,), where, "error")
    timeout = _check(data, "timeout", (int, float, type(None)), where, 10.0)
    memory_limit = _check(data, "memory_limit", (int, type(None)), where, MEMORY_LIMIT)
    turns = _check(data, "turns", (list,), where, [])
    dropped = _check(data, "dropped", (list,), where, [])
    pre = _check(data, "preamble_result", (dict, type(None)), where)
    network = _check(data, "network", (bool,), where, False)
    isolation = _check(data, "isolation", (str,), where, "auto")
    try:
        sampling = Sampling(**sampling_d)
    except (TypeError, ConvsynthError) as e:
        raise SessionError(f"{where}: bad 'sampling' ({e}).") from None
    try:
        check_limits(timeout, memory_limit, SessionError)
        make_stop(stop)
    except (ConvsynthError, ValueError, TypeError, re.error) as e:
        raise SessionError(f"{where}: {e}".rstrip(".") + ".") from None
    built = [_turn(t, f"{where}: turn {i}", Turn, TurnStats, ExecutionResult) for i, t in enumerate(turns)]
    gone = [_turn(t, f"{where}: dropped turn {i}", Turn, TurnStats, ExecutionResult) for i, t in enumerate(dropped)]
    pre_result = _record(ExecutionResult, pre, f"{where}: preamble_result") if pre else None
    try:
        session = cls(model, preamble, stop=stop, overflow=overflow, timeout=timeout, memory_limit=memory_limit,
                      network=network, isolation=isolation, **sampling.to_dict())
    except (ConvsynthError, ValueError, TypeError, re.error) as e:
        raise SessionError(f"{where}: {e}".rstrip(".") + ".") from None
    session.turns, session.dropped, session.preamble_result = built, gone, pre_result
    session._bound_text("")  # what cannot fit the context anyway is dropped (drop_oldest) or refused at ask
    return session


def _cell(kind: str, source: str, outputs=None) -> dict:
    cell = {"cell_type": kind, "metadata": {}, "source": source.splitlines(keepends=True)}
    if kind == "code":
        cell.update(execution_count=None, outputs=outputs or [])
    return cell


def write_notebook(session, path) -> Path:
    path = Path(path)
    cells = [_cell("markdown", f"# A program built turn by turn\n\nModel: `{session.model.name}`. Each markdown "
                               "cell is an instruction; the code cell under it is what the model wrote.")]
    if session.preamble.strip():
        cells.append(_cell("code", session.preamble.strip("\n"), to_outputs(session.preamble_result, drop=())))
    for i, turn in enumerate(session.dropped + session.turns, 1):
        if turn.instruction is not None:
            cells.append(_cell("markdown", f"**Step {i}.** {turn.instruction}"))
        cells.append(_cell("code", turn.code.strip("\n"), to_outputs(turn.result, drop=())))
    nb = {"cells": cells, "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                                      "name": "python3"},
                                       "language_info": {"name": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    for j, c in enumerate(nb["cells"]):
        c["id"] = f"cell-{j}"
    return write_file(path, json.dumps(nb, indent=1) + "\n", "the notebook")
