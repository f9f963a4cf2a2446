"""Undo and redo for a session: one snapshot of its turns after each change, and a pointer into them.

A snapshot holds the Turn objects themselves (a tuple), not copies. The session never changes a Turn's code or
instruction in place: an edit makes a new Turn and replaces the later ones by copies without results, so a Turn
object always follows the same earlier steps and sharing it between snapshots is safe. Only ``result`` is set in
place by a run (and ``attempts`` by a fix that failed, which changes no code), so a step keeps its output across
undo and redo.
"""
from __future__ import annotations

from dataclasses import dataclass

LIMIT = 200  # changes kept; the oldest go first (a snapshot is a tuple of references, so this is cheap)


@dataclass(frozen=True)
class Snapshot:
    turns: tuple
    dropped: tuple = ()
    what: str = ""  # the change that led here: "generate", "edit", "code edit", "delete"...

    def same(self, turns, dropped=()) -> bool:
        """Whether ``turns`` (and ``dropped``) are exactly these Turn objects, in order."""
        return (len(turns) == len(self.turns) and all(a is b for a, b in zip(turns, self.turns))
                and len(dropped) == len(self.dropped) and all(a is b for a, b in zip(dropped, self.dropped)))


class History:
    """``record`` a snapshot after each change; ``back``/``forward`` move between them (None at either end).
    Recording after an undo forgets the changes that could have been redone, as editors do."""

    def __init__(self, start: Snapshot):
        self._states, self._at = [start], 0

    @property
    def current(self) -> Snapshot:
        return self._states[self._at]

    def record(self, snapshot: Snapshot) -> None:
        del self._states[self._at + 1:]
        self._states.append(snapshot)
        if len(self._states) > LIMIT:
            del self._states[0]
        self._at = len(self._states) - 1

    def back(self) -> Snapshot | None:
        """The state before the current change (and move there), or None when there is nothing to undo."""
        if self._at == 0:
            return None
        self._at -= 1
        return self._states[self._at]

    def forward(self) -> Snapshot | None:
        """The state after an undone change (and move there), or None when there is nothing to redo."""
        if self._at == len(self._states) - 1:
            return None
        self._at += 1
        return self._states[self._at]

    @property
    def undo_what(self) -> str | None:
        """The change undo would revert ("edit", ...), or None."""
        return self._states[self._at].what if self._at > 0 else None

    @property
    def redo_what(self) -> str | None:
        return self._states[self._at + 1].what if self._at + 1 < len(self._states) else None

