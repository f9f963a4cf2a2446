"""A step's result as Jupyter outputs: the nbformat v4 dicts a notebook stores and JupyterLab renders (streams,
display data with every MIME type the step produced, the error with its traceback).

The widget assigns these to an ``ipywidgets.Output``'s ``outputs`` (a synced trait, safe from the widget's
background thread, unlike ``with out:``), so HTML, Markdown, LaTeX, JSON, images and DataFrames render exactly as
they would in a cell.
"""
from __future__ import annotations

from .sharing import PICKLE_MIME


def to_outputs(result, drop: tuple[str, ...] = (PICKLE_MIME,)) -> list[dict]:
    """``result`` (an ExecutionResult, or None) as a list of nbformat v4 output dicts, without the MIME types in
    ``drop`` (by default the pickled value, which only the sandbox's ``get`` reads)."""
    if result is None:
        return []
    out = []
    for name in ("stdout", "stderr"):
        text = getattr(result, name)
        if text:
            out.append({"output_type": "stream", "name": name, "text": text})
    for bundle in result.outputs:
        data = {mime: value for mime, value in bundle.items() if mime not in drop}
        if data:
            out.append({"output_type": "display_data", "data": data, "metadata": {}})
    if result.error:
        ename, _, evalue = result.error.partition(": ")
        out.append({"output_type": "error", "ename": ename, "evalue": evalue,
                    "traceback": (result.traceback or result.error).splitlines()})
    return out
