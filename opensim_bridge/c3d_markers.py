"""The markers of a C3D file, for the marker-based stages (IK, scaling, comparison).

A thin view on the full reader (:mod:`opensim_bridge.c3d_read`): markers only, Vicon model
outputs (angles, moments, ...) left out, in metres, in the lab's axes. Mapping to OpenSim's Y-up
frame is done by :func:`opensim_bridge.markers.read_markers` (see axes.py).
"""
from __future__ import annotations

import os

import numpy as np

from .c3d_read import read_c3d
from .errors import InputError
from .timeseries import KeypointSeries


def read_c3d_markers(path: str | os.PathLike) -> KeypointSeries:
    """Markers of a C3D file as a :class:`KeypointSeries` in metres.

    Samples with a negative residual are missing (NaN), and so are samples at exactly (0, 0, 0):
    some writers (Vicon) mark a lost marker that way with a residual of 0; a real marker never
    sits exactly on the lab origin, and JA1's own TRC leaves such samples blank. Time is
    ``(first_frame - 1 + i) / POINT:RATE``, seconds since the start of the capture (as ezc3d).
    Errors are :class:`~opensim_bridge.c3d_params.C3DError`, an :class:`InputError`.
    """
    src = os.fspath(path)
    markers = read_c3d(path).markers
    if markers is None or not markers.names:
        raise InputError("the C3D file holds no markers", src)
    data = markers.data.copy()
    data[(data == 0).all(axis=2)] = np.nan
    if np.isnan(data).all():
        raise InputError("no marker has any valid sample (every residual is negative)", src)
    return markers.copy(data=data)
