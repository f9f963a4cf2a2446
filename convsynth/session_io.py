"""Loading saved sessions and exporting them as notebooks (kept apart so session.py stays about turns)."""
from __future__ import annotations

import json
from pathlib import Path

from .errors import SessionError
from .generate import Sampling


def load(cls, path, model):
    from .execution import ExecutionResult
    from .session import FORMAT, Turn, TurnStats
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SessionError(f"no saved session at {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SessionError(f"{path} is not a saved session: it is not valid JSON ({e}).") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SessionError(f"{path} is not a saved convsynth session (no \"format\": \"{FORMAT}\").")
    saved, cfg = data.get("model") or {}, model.config
    for key in ("n_embd", "n_layer", "n_head", "vocab_size"):
        if key in saved and saved[key] != getattr(cfg, key):
            raise SessionError(f"{path} was made with another model ({saved.get('name')!r}: {key}={saved[key]}, "
                               f"this one has {getattr(cfg, key)}). Load that model and pass it to Session.load.")
    try:
        sampling = Sampling(**data.get("sampling", {}))
        session = cls(model, data.get("preamble", ""), stop=data.get("stop", "codegen"),
                      overflow=data.get("overflow", "error"), timeout=data.get("timeout", 10.0),
                      memory_limit=data.get("memory_limit", 2 * 2**30), **sampling.to_dict())
        for t in data.get("turns", []):
            result = ExecutionResult.from_dict(t["result"]) if t.get("result") else None
            session.turns.append(Turn(t.get("instruction"), t["code"], TurnStats(**t.get("stats", {})), result,
                                      t.get("expect_output"), t.get("check"), bool(t.get("edited", False))))
        if data.get("preamble_result"):
            session.preamble_result = ExecutionResult.from_dict(data["preamble_result"])
    except (KeyError, TypeError, ValueError) as e:
        raise SessionError(f"{path} is a damaged saved session ({type(e).__name__}: {e}).") from None
    return session


def _outputs(result) -> list[dict]:
    """An ExecutionResult as nbformat v4 outputs."""
    if result is None:
        return []
    out = []
    for name in ("stdout", "stderr"):
        text = getattr(result, name)
        if text:
            out.append({"output_type": "stream", "name": name, "text": text})
    for bundle in result.outputs:
        out.append({"output_type": "display_data", "data": bundle, "metadata": {}})
    if result.error:
        ename, _, evalue = result.error.partition(": ")
        out.append({"output_type": "error", "ename": ename, "evalue": evalue,
                    "traceback": (result.traceback or result.error).splitlines()})
    return out


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
        cells.append(_cell("code", session.preamble.strip("\n"), _outputs(session.preamble_result)))
    for i, turn in enumerate(session.dropped + session.turns, 1):
        if turn.instruction is not None:
            cells.append(_cell("markdown", f"**Step {i}.** {turn.instruction}"))
        cells.append(_cell("code", turn.code.strip("\n"), _outputs(turn.result)))
    nb = {"cells": cells, "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                                      "name": "python3"},
                                       "language_info": {"name": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    for j, c in enumerate(nb["cells"]):
        c["id"] = f"cell-{j}"
    path.write_text(json.dumps(nb, indent=1) + "\n")
    return path
