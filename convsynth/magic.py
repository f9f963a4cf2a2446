"""``%load_ext convsynth``, then a ``%%convsynth`` cell: each line is one instruction for the notebook's current
session; the code the model writes goes into the next cell (IPython's ``set_next_input``) for you to read and run.
The steps are recorded in the session, whose sandbox is where ``s.run()`` would run them; the magic itself runs
nothing.

    %%convsynth -t 0 -n 64            # options: temperature, max new tokens (this cell only)
    Read data.csv into a DataFrame named df.
    Print the mean of each column.

    %convsynth                        # the session: its steps and their state
    %convsynth load PATH_OR_ID        # a new session on that model (None: the packaged one)
    %convsynth share df names         # share notebook variables with the session (Session.share)
    %convsynth reset                  # close the session; the next cell starts a new one
"""
from __future__ import annotations

import argparse
import shlex
import sys

from IPython.core.magic import Magics, line_cell_magic, magics_class

from .errors import ConvsynthError, SessionError

_cell_options = argparse.ArgumentParser(prog="%%convsynth", add_help=False, exit_on_error=False)
_cell_options.add_argument("-t", "--temperature", type=float, default=None)
_cell_options.add_argument("-n", "--max-new-tokens", type=int, default=None)


@magics_class
class ConvsynthMagics(Magics):
    """The notebook's current session, made on first use and kept until ``%convsynth reset`` or ``load``."""

    def __init__(self, shell):
        super().__init__(shell)
        self.model_name, self.model, self.session = None, None, None

    def current(self):
        """The notebook's session, created on first use (in the kernel's folder: the notebook's)."""
        if self.session is None:
            from .codegen import load
            from .session import Session
            if self.model is None:
                self.model = load(self.model_name)
            self.session = Session(self.model)
        return self.session

    @line_cell_magic
    def convsynth(self, line: str, cell: str | None = None):
        try:
            return self._cell(line, cell) if cell is not None else self._line(line)
        except ConvsynthError as e:  # one line, as the CLI does; the session keeps its steps
            print(f"convsynth: {e}")

    def _line(self, line: str):
        words = _split(line, "%convsynth")
        if not words:
            return self.current()  # shown by Jupyter with its HTML repr
        verb, rest = words[0], words[1:]
        if verb == "load" and len(rest) == 1:
            from .codegen import load
            name = None if rest[0] in ("None", "packaged") else rest[0]
            model = load(name)  # first: a name that does not load leaves the session and its steps as they were
            self._close()
            self.model_name, self.model = name, model
            self.current()
            print(f"convsynth: a new session on {self.model.name}")
            return None
        if verb == "share" and rest:
            missing = [n for n in rest if n not in self.shell.user_ns]
            if missing:
                raise SessionError(f"the notebook has no variable {missing[0]!r} to share.")
            self.current().share(**{n: self.shell.user_ns[n] for n in rest})
            print(f"convsynth: shared {', '.join(rest)}")
            return None
        if verb == "reset" and not rest:
            self._close()
            return None
        if verb == "widget" and not rest:
            return self.current().widget()
        raise SessionError(f"unknown %convsynth command {line!r}: use %convsynth, %convsynth load PATH_OR_ID, "
                           "%convsynth share NAME..., %convsynth widget or %convsynth reset.")

    def _cell(self, line: str, cell: str):
        try:
            opts = _cell_options.parse_args(_split(line, "%%convsynth"))
        except (argparse.ArgumentError, SystemExit) as e:
            raise SessionError(f"%%convsynth options are -t TEMPERATURE and -n MAX_NEW_TOKENS ({e}).") from None
        overrides = {k: v for k, v in (("temperature", opts.temperature), ("max_new_tokens", opts.max_new_tokens))
                     if v is not None}
        instructions = [ln.strip() for ln in cell.splitlines() if ln.strip()]
        if not instructions:
            raise SessionError("the %%convsynth cell is empty: write one instruction per line.")
        s = self.current()
        from .turns import comment_lines
        steps = []
        try:
            for instruction in instructions:
                turn = s.ask(instruction, run=False, **overrides)
                steps.append(comment_lines(turn.instruction) + turn.code.strip("\n"))
        except BaseException:  # the lines before it became steps of the session: they are shown all the same
            if steps:
                self._show(steps, s, f"line {len(steps) + 1} of the cell did not become a step (below); ")
            raise
        self._show(steps, s)
        return None

    def _show(self, steps: list[str], s, why: str = "") -> None:
        code = "\n\n".join(steps) + "\n"
        n = f"{len(steps)} step{'' if len(steps) == 1 else 's'}"
        if "google.colab" in sys.modules:  # Colab ignores set_next_input (colabtools#1619): show the code instead
            print(f"convsynth: {why}{n} generated (Colab cannot fill the next cell; copy the code):\n\n{code}")
            return
        self.shell.set_next_input(code)
        print(f"convsynth: {why}{n} generated into the next cell (the session has {len(s.turns)}).")

    def _close(self):
        if self.session is not None:
            self.session.close()
        self.session = None


def _split(line: str, what: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as e:  # "No closing quotation"
        raise SessionError(f"{what} {line!r}: {str(e).lower()}; close the quote or drop it.") from None


def load_ipython_extension(ipython) -> None:
    """``%load_ext convsynth``: registers ``%convsynth`` and ``%%convsynth``."""
    ipython.register_magics(ConvsynthMagics(ipython))
