"""kinevid's own error type: every bad input becomes one of these, naming the file and the problem."""
from __future__ import annotations

import os


class KinevidError(Exception):
    """A problem the user can act on. ``str()`` is the whole message, path first when known."""

    def __init__(self, problem: str, path: str | os.PathLike | None = None):
        self.problem = problem
        self.path = None if path is None else os.fspath(path)
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class InputError(KinevidError):
    """An input file is missing, unreadable or inconsistent."""


class ModelError(KinevidError):
    """An OpenSim model cannot be loaded or lacks what the task needs."""
