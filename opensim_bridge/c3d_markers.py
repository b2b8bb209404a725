"""Minimal, correct reading of the marker (POINT) data of a C3D file with the ``c3d`` package.

Only markers: labels, units, validity and time. Analog data, force plates and events are a
separate, fuller C3D reader's job. Axes are left as the lab recorded them: mapping to
OpenSim's Y-up frame is done by :func:`opensim_bridge.markers.read_markers` (see axes.py).
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np

from .errors import InputError
from .timeseries import KeypointSeries, normalise_unit

log = logging.getLogger(__name__)


def _strings(reader, key: str) -> list[str]:
    param = reader.get(key)
    if param is None:
        return []
    try:
        arr = param.string_array
    except Exception:  # a malformed parameter: treat as absent, the caller names what is missing
        return []
    return [str(s).strip(" \x00") for s in np.asarray(arr).ravel()]


def _unique_labels(labels: list[str], used: int, src: str) -> list[str]:
    names = list(labels[:used])
    names += [""] * (used - len(names))
    out, seen, renamed = [], set(), []
    for i, name in enumerate(names):
        base = name or f"unlabelled_{i + 1}"
        new, k = base, 2
        while new in seen:
            new, k = f"{base}_{k}", k + 1
        if new != name:
            renamed.append(f"{name or '(blank)'}->{new}")
        seen.add(new)
        out.append(new)
    if renamed:
        msg = f"{src}: blank or duplicate POINT labels renamed: {', '.join(renamed)}"
        log.warning(msg)
        warnings.warn(msg, stacklevel=3)
    return out


def read_c3d_markers(path: str | os.PathLike) -> KeypointSeries:
    """Markers of a C3D file as a :class:`KeypointSeries` in metres.

    Labels come from POINT:LABELS (then POINT:LABELS2, ... for files with more than 255
    points), stripped, limited to the first POINT:USED. Samples with a negative residual are
    missing (NaN), as are samples at exactly (0, 0, 0) (a lost marker for some writers). Time is
    ``(first_frame - 1 + i) / POINT:RATE`` with the header's 1-based first frame, i.e. seconds since the start of the capture (as ezc3d reports it).
    """
    import c3d

    path = Path(path)
    src = os.fspath(path)
    if not path.is_file():
        raise InputError("C3D file not found" if not path.exists() else "not a file", src)
    try:
        with open(path, "rb") as fh, warnings.catch_warnings():
            # The c3d package warns about every odd-but-legal header; our own checks follow.
            warnings.simplefilter("ignore")
            reader = c3d.Reader(fh)
            used = int(reader.point_used)
            rate = float(reader.point_rate)
            first = int(reader.header.first_frame)
            labels = _strings(reader, "POINT:LABELS")
            extra = 2
            while reader.get(f"POINT:LABELS{extra}") is not None:
                labels += _strings(reader, f"POINT:LABELS{extra}")
                extra += 1
            unit_param = reader.get("POINT:UNITS")
            unit_text = unit_param.string_value.strip(" \x00") if unit_param is not None else ""
            frames = []
            if used > 0:
                for _, points, _ in reader.read_frames(copy=True):
                    frames.append(np.asarray(points[:used, :4], dtype=float))
    except InputError:
        raise
    except Exception as exc:  # the c3d package raises many types for corrupt files
        raise InputError(f"cannot read the C3D file ({type(exc).__name__}: {exc})", src) from exc

    if used <= 0:
        raise InputError("the C3D file holds no markers (POINT:USED is 0)", src)
    if not frames:
        raise InputError("the C3D file holds no frames of marker data", src)
    if not (np.isfinite(rate) and rate > 0):
        raise InputError(f"invalid POINT:RATE {rate!r}", src)
    block = np.stack(frames)  # (n, used, 4): x, y, z, residual
    data = block[:, :, :3].copy()
    data[block[:, :, 3] < 0] = np.nan
    # Some writers (Vicon) mark a lost marker with exactly (0, 0, 0) and a residual of 0; a real
    # marker never sits exactly on the lab origin, and JA1's own TRC leaves such samples blank.
    data[(block[:, :, :3] == 0).all(axis=2)] = np.nan
    data[~np.isfinite(data).all(axis=2)] = np.nan
    if np.isnan(data).all():
        raise InputError("no marker has any valid sample (every residual is negative)", src)
    if not unit_text:
        msg = f"{src}: POINT:UNITS is empty; assuming millimetres (the C3D convention)"
        log.warning(msg)
        warnings.warn(msg, stacklevel=2)
        unit_text = "mm"
    try:
        unit = normalise_unit(unit_text.lower())
    except ValueError:
        raise InputError(f"unknown POINT:UNITS {unit_text!r} (expected mm, cm or m)", src) from None
    if unit == "px":
        raise InputError("POINT:UNITS are pixels; markers must be in mm, cm or m", src)

    names = _unique_labels(labels, used, src)
    time = (first - 1 + np.arange(len(data))) / rate
    return KeypointSeries(time, names, data, units=unit, source=src).to_metres()
