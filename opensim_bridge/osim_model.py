"""Loading OpenSim models, once for the whole package.

OpenSim reports problems as RuntimeError with a multi-line message; kinevid turns them into a
:class:`ModelError` naming the file and OpenSim's first line, which is the informative one.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import ModelError


def first_line(exc: BaseException) -> str:
    """The informative first line of an OpenSim exception message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_model(path: str | os.PathLike):
    """``osim.Model`` from an .osim file with its system initialised, or :class:`ModelError`."""
    import opensim as osim

    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ModelError("model file not found" if not path.exists() else "not a file", path)
    osim.Logger.setLevelString("error")  # OpenSim logs every missing mesh; kinevid stays quiet
    try:
        model = osim.Model(str(path))
        model.initSystem()
    except Exception as exc:  # OpenSim raises RuntimeError carrying its own message
        raise ModelError(f"OpenSim cannot load this model: {first_line(exc)}", path) from None
    return model
