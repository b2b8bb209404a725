"""Loading OpenSim models, once for the whole package.

OpenSim reports problems as RuntimeError with a multi-line message; kinevid turns them into a
:class:`ModelError` naming the file and OpenSim's first line, which is the informative one.
"""
from __future__ import annotations

import contextlib
import os
import sys
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


@contextlib.contextmanager
def quiet_stdout():
    """Silence OpenSim's C++ tools, which print a model summary ("MODEL: ...") straight to the
    process's standard output regardless of the log level. kinevid's own stdout carries its
    results (and the Blender add-on reads kinevid's output), so the noise is dropped at the file
    descriptor for the duration of the call."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
