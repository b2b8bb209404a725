"""One entry point for marker files, whatever their format; everything comes back in metres."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError
from .timeseries import KeypointSeries

#: Suffixes read_markers understands.
MARKER_SUFFIXES = (".trc", ".c3d")


def read_markers(path: str | os.PathLike, **kwargs) -> KeypointSeries:
    """Read a .trc or .c3d marker file. ``kwargs`` go to the format's reader
    (e.g. ``assume_units`` for TRC)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MARKER_SUFFIXES:
        raise InputError(f"unknown marker file type {path.suffix or '(no suffix)'!r}; "
                         f"expected one of {', '.join(MARKER_SUFFIXES)}", path)
    if not path.exists():
        raise InputError("marker file not found", path)
    if suffix == ".trc":
        from .trc import read_trc
        return read_trc(path, **kwargs)
    from .c3d_markers import read_c3d_markers
    if kwargs:
        raise InputError(f"options {sorted(kwargs)} do not apply to C3D files", path)
    return read_c3d_markers(path)


def write_markers(series: KeypointSeries, path: str | os.PathLike, **kwargs) -> Path:
    """Write markers; only TRC is supported as an output format."""
    path = Path(path)
    if path.suffix.lower() != ".trc":
        raise InputError(f"cannot write markers as {path.suffix or '(no suffix)'!r}; use .trc", path)
    from .trc import write_trc
    return write_trc(series, path, **kwargs)
