"""One entry point for marker files, whatever their format; everything comes back in metres and,
unless asked otherwise, in OpenSim's frame (X forward, Y up, Z right)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from .axes import apply_axes, auto_mapping, parse_axes
from .errors import InputError
from .timeseries import KeypointSeries

log = logging.getLogger(__name__)

#: Suffixes read_markers understands.
MARKER_SUFFIXES = (".trc", ".c3d")

#: Default axis handling per format: C3D files keep the lab's frame (usually Z-up), TRC files
#: written for OpenSim are already Y-up.
DEFAULT_AXES = {".c3d": "auto", ".trc": "none"}


def read_markers_with_info(path: str | os.PathLike, axes: str | None = None,
                           **kwargs) -> tuple[KeypointSeries, dict]:
    """Like :func:`read_markers`, and also says what was done to the axes.

    The info dict holds ``axes`` (the mapping used, as text like ``"y,z,x"``), ``detected``
    (True when it came from ``"auto"``) and ``lab_frame`` (the file's own frame, always True
    for ``"none"``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MARKER_SUFFIXES:
        raise InputError(f"unknown marker file type {path.suffix or '(no suffix)'!r}; "
                         f"expected one of {', '.join(MARKER_SUFFIXES)}", path)
    if not path.exists():
        raise InputError("marker file not found", path)
    axes = DEFAULT_AXES[suffix] if axes is None else str(axes)
    # Check the mapping before reading a possibly large file.
    mapping = None if axes.strip().lower() == "auto" else parse_axes(axes, path)
    if suffix == ".trc":
        from .trc import read_trc
        series = read_trc(path, **kwargs)
    else:
        from .c3d_markers import read_c3d_markers
        if kwargs:
            raise InputError(f"options {sorted(kwargs)} do not apply to C3D files", path)
        series = read_c3d_markers(path)
    detected = mapping is None
    if detected:
        mapping = auto_mapping(series)
        log.info("%s: axes mapped to OpenSim's frame as %s (detected; OpenSim X, Y, Z = source "
                 "axes)", path, mapping)
    elif not mapping.is_identity:
        log.info("%s: axes mapped to OpenSim's frame as %s", path, mapping)
    info = {"axes": str(mapping), "detected": detected, "lab_frame": mapping.is_identity}
    return apply_axes(series, mapping), info


def read_markers(path: str | os.PathLike, axes: str | None = None, **kwargs) -> KeypointSeries:
    """Read a .trc or .c3d marker file, in metres, in OpenSim's frame.

    ``axes``: ``"auto"`` (detect the vertical and the walking direction, see
    :func:`opensim_bridge.axes.auto_mapping`), ``"none"`` (keep the file's frame) or a mapping
    like ``"x,z,-y"`` (OpenSim X, Y, Z as signed source axes). Default: ``"auto"`` for C3D,
    ``"none"`` for TRC. ``kwargs`` go to the format's reader (e.g. ``assume_units`` for TRC)."""
    return read_markers_with_info(path, axes, **kwargs)[0]


def write_markers(series: KeypointSeries, path: str | os.PathLike, **kwargs) -> Path:
    """Write markers; only TRC is supported as an output format."""
    path = Path(path)
    if path.suffix.lower() != ".trc":
        raise InputError(f"cannot write markers as {path.suffix or '(no suffix)'!r}; use .trc", path)
    from .trc import write_trc
    return write_trc(series, path, **kwargs)
