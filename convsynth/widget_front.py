"""The widget's own front-end pieces, as anywidgets (the ESM is ``assets/widget_front.js``; no build step).

Why not ipywidgets' Text: it syncs the typed value and the Enter event as two messages, so a fast typist's Enter
could reach the kernel before the last characters (an instruction cut to "...store it in tota"). Here Enter and
the button send one message that carries the text from the page. ``TextBox`` is that input, ``CodeBox`` a card's
code (click to edit in place), ``Bridge`` the kernel-gone banner and the file links.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import anywidget
import traitlets as T

_ESM = (Path(__file__).parent / "assets" / "widget_front.js").read_text()


class _Front(anywidget.AnyWidget):
    _esm = _ESM
    kind = T.Unicode("").tag(sync=True)

    def __init__(self, **kw):
        super().__init__(**kw)
        self._handlers: dict[str, list[Callable[[str], None]]] = {}
        self.on_msg(self._dispatch)

    def _dispatch(self, _widget, content, _buffers) -> None:
        if isinstance(content, dict) and isinstance(content.get("text"), str):
            for handler in self._handlers.get(content.get("type"), []):
                handler(content["text"])

    def _on(self, kind: str, handler: Callable[[str], None]) -> None:
        self._handlers.setdefault(kind, []).append(handler)


class TextBox(_Front):
    """A line input with a button. ``on_submit(f)``: ``f(text)`` on Enter or the button, with exactly the text
    the page showed. ``value`` follows the typing (for views), ``busy`` disables the button."""
    value = T.Unicode("").tag(sync=True)
    placeholder = T.Unicode("").tag(sync=True)
    button = T.Unicode("").tag(sync=True)
    button_classes = T.List(T.Unicode()).tag(sync=True)
    busy = T.Bool(False).tag(sync=True)

    def __init__(self, **kw):
        super().__init__(kind="input", **kw)

    def on_submit(self, handler: Callable[[str], None]) -> None:
        self._on("submit", handler)

    def submit(self, text: str | None = None) -> None:
        """What the page sends on Enter, from Python (tests, notebooks): ``text`` or the box's value."""
        self._dispatch(self, {"type": "submit", "text": self.value if text is None else text}, [])

    def focus(self) -> None:
        self.send({"type": "focus"})


class CodeBox(_Front):
    """A step's code: highlighted (``html``), editable in place when ``editable``. ``on_save(f)`` gets the edited
    text when the editor is left, ``on_run(f)`` on Shift+Enter."""
    value = T.Unicode("").tag(sync=True)
    html = T.Unicode("").tag(sync=True)
    editable = T.Bool(True).tag(sync=True)

    def __init__(self, **kw):
        super().__init__(kind="code", **kw)

    def on_save(self, handler: Callable[[str], None]) -> None:
        self._on("save", handler)

    def on_run(self, handler: Callable[[str], None]) -> None:
        self._on("run", handler)

    def edit(self) -> None:
        """Open the editor in the page."""
        self.send({"type": "edit"})


class Bridge(_Front):
    """``gone_message``: shown when the kernel has gone (kept current while it lives). ``show_file(path, text)``:
    a line "text <link>" that opens ``path`` in JupyterLab / Notebook 7 (plain text if it is outside the
    server's folder)."""
    gone_message = T.Unicode("").tag(sync=True)
    link_path = T.Unicode("").tag(sync=True)
    link_text = T.Unicode("").tag(sync=True)
    home = T.Unicode(os.path.expanduser("~")).tag(sync=True)

    def __init__(self, **kw):
        super().__init__(kind="bridge", **kw)

    def show_file(self, path, text: str) -> None:
        self.link_text, self.link_path = text, str(Path(path).resolve())
