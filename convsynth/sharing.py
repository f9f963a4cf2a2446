"""Values that cross between the notebook and the sandbox: ``Session.share`` and ``Session.get``.

Values travel pickled (base64 text inside the code the sandbox runs, or a display message coming back), so
anything picklable crosses and nothing else does; the sandbox's namespace and the notebook's stay separate.
A shared value becomes a step the model sees: a comment per value with its name, type and a short description,
and a stand-in line ``name = ...`` (the value itself is not part of the program text).
"""
from __future__ import annotations

import base64
import pickle
import reprlib

from .errors import SessionError

PICKLE_MIME = "application/x-convsynth-pickle"  # the display message that brings a value back
_SHORT = reprlib.Repr()
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxset = _SHORT.maxdict = 3
_SHORT.maxstring = _SHORT.maxother = 40


def pickle_values(values: dict) -> dict[str, str]:
    """Each value pickled and base64-encoded; raises SessionError (for the first that fails) before anything
    is kept, so a failed share leaves no trace."""
    out = {}
    for name, value in values.items():
        if not name.isidentifier() or name.startswith("_convsynth"):
            raise SessionError(f"cannot share {name!r}: the name must be a Python identifier (and not start "
                               "with _convsynth).")
        try:
            out[name] = base64.b64encode(pickle.dumps(value)).decode("ascii")
        except Exception as e:  # noqa: BLE001 - pickling can raise anything (TypeError, PicklingError...)
            raise SessionError(f"cannot share {name!r}: a {_type(value)} cannot be pickled ({type(e).__name__}: "
                               f"{e}). Share plain data (numbers, strings, lists, dicts, arrays, DataFrames), or "
                               "write it to a file in the session's folder and read it in a step.") from None
    return out


def load_code(data: dict[str, str]) -> str:
    """Code for the sandbox: unpickle every value first and only then assign them all, so a value that cannot
    be unpickled there assigns nothing."""
    return ("def _convsynth_load(data):\n    import base64, pickle\n"
            "    return {k: pickle.loads(base64.b64decode(v)) for k, v in data.items()}\n"
            f"globals().update(_convsynth_load({data!r}))\ndel _convsynth_load\n")


def fetch_code(name: str) -> str:
    """Code for the sandbox that displays ``name`` pickled, as a PICKLE_MIME bundle."""
    return ("def _convsynth_fetch():\n    import base64, pickle\n    from IPython.display import display\n"
            f"    display({{{PICKLE_MIME!r}: base64.b64encode(pickle.dumps({name})).decode('ascii')}}, raw=True)\n"
            "try:\n    _convsynth_fetch()\nfinally:\n    del _convsynth_fetch\n")


def unpickle(name: str, text: str):
    try:
        return pickle.loads(base64.b64decode(text))
    except Exception as e:  # noqa: BLE001 - e.g. a class defined only in the sandbox
        raise SessionError(f"cannot bring {name!r} back: the notebook cannot unpickle it ({type(e).__name__}: "
                           f"{e}). Define its class in a module both sides import, or convert it to plain "
                           "data in a step first.") from None


def _type(value) -> str:
    t = type(value)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__.split('.')[0]} {t.__name__}"


def describe(value) -> str:
    """A short description for the model and the reader: type, then shape and columns, length and first items."""
    kind = _type(value)
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "columns"):  # a DataFrame
        cols = [str(c) for c in list(value.columns)[:12]]
        more = ", ..." if len(value.columns) > 12 else ""
        return f"a {kind} with shape {tuple(shape)} and columns {', '.join(cols)}{more}"
    if shape is not None and hasattr(value, "dtype"):  # an array, a Series
        return f"a {kind} of shape {tuple(shape)} and dtype {value.dtype}"
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        first = "keys" if isinstance(value, dict) else "first items"
        items = list(value)[:3]
        return f"a {kind} of {len(value)} items; {first} {_SHORT.repr(items)}" if value else f"an empty {kind}"
    if isinstance(value, (str, bytes)):
        return f"a {kind} of length {len(value)}: {_SHORT.repr(value)}"
    return f"a {kind}: {_SHORT.repr(value)}"


def share_step(values: dict) -> tuple[str, str]:
    """The instruction and the stand-in code of a shared step, as the model sees them."""
    lines = [f"The notebook shares {name}, {describe(value)}." for name, value in values.items()]
    code = "".join(f"{name} = ...  # shared from the notebook\n" for name in values)
    return "\n".join(lines), code
