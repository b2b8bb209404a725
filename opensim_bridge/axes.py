"""Axis mappings from a lab's coordinate frame to OpenSim's (X forward, Y up, Z right).

C3D files keep the lab's frame, which is usually Z-up; OpenSim models stand along +Y. Fitting
Z-up markers to a Y-up model makes IK find a lying body, so marker data are mapped first.

A mapping is written as text: ``"x,z,-y"`` means OpenSim X = source x, OpenSim Y = source z,
OpenSim Z = -source y. Only signed permutations of the axes are allowed (a lab frame is an
orthogonal frame whose axes are almost always aligned with the room), and only proper rotations:
a mapping with determinant -1 is a mirror image, which turns a right leg into a left one.

:func:`auto_mapping` guesses the mapping for an upright human (see :func:`detect_up_axis` for the
heuristic and when it fails: then the user states the mapping).
"""
from __future__ import annotations

import dataclasses
import logging
import re
import warnings

import numpy as np

from .errors import InputError
from .timeseries import KeypointSeries

log = logging.getLogger(__name__)

AXIS_NAMES = "xyz"

#: Horizontal travel of the marker centroid (m) above which it defines OpenSim's +X.
TRAVEL_THRESHOLD = 0.5
#: Up axis extent over the runner-up's below which the detection is reported as uncertain.
AMBIGUOUS_RATIO = 1.15

# Name fragments of markers near the top (head, neck, shoulders) and the bottom (feet) of an
# upright body, in the usual marker sets (Plug-in Gait, CAST, Gait2354, CMU, Motion Analysis).
_UPPER = re.compile(r"HEAD|FHD|BHD|THEA|FHEA|RHEA|C7|SHO|CLAV|ACR|^[LR]_?SH$", re.IGNORECASE)
_FOOT = re.compile(r"TOE|HEE|ANK|MT|MAL|FOOT|MET|CAL", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class AxisMapping:
    """OpenSim axis i = ``signs[i]`` * source axis ``axes[i]``."""

    axes: tuple[int, int, int]
    signs: tuple[int, int, int]

    @property
    def matrix(self) -> np.ndarray:
        """3x3 rotation R with ``opensim = R @ source`` (rows are OpenSim's axes)."""
        r = np.zeros((3, 3))
        for i, (a, s) in enumerate(zip(self.axes, self.signs)):
            r[i, a] = s
        return r

    @classmethod
    def from_matrix(cls, r: np.ndarray) -> "AxisMapping":
        r = np.asarray(r)
        axes = tuple(int(np.argmax(np.abs(row))) for row in r)
        signs = tuple(int(np.sign(row[a])) for row, a in zip(r, axes))
        return cls(axes, signs)

    def inverse(self) -> "AxisMapping":
        """The mapping back from OpenSim's frame to the source frame."""
        return AxisMapping.from_matrix(self.matrix.T)

    @property
    def is_identity(self) -> bool:
        return self.axes == (0, 1, 2) and self.signs == (1, 1, 1)

    def __str__(self) -> str:
        return ",".join(("-" if s < 0 else "") + AXIS_NAMES[a] for a, s in zip(self.axes, self.signs))


IDENTITY = AxisMapping((0, 1, 2), (1, 1, 1))


def parse_axes(text: str | AxisMapping, source: str | None = None) -> AxisMapping:
    """Parse ``"x,z,-y"`` (case and spaces ignored; ``+`` allowed). ``"none"`` is the identity.

    Raises :class:`InputError` (naming ``source``) unless each of x, y, z appears exactly once and
    the mapping is a proper rotation."""
    if isinstance(text, AxisMapping):
        mapping = text
    else:
        raw = str(text)
        t = raw.replace(" ", "").lower()
        if t in ("none", "identity"):
            return IDENTITY
        parts = t.split(",")
        if len(parts) != 3 or not all(re.fullmatch(r"[+-]?[xyz]", p) for p in parts):
            raise InputError(f"axis mapping {raw!r} is not three comma-separated axes like "
                             f"'x,z,-y' (OpenSim X, Y, Z as signed source axes)", source)
        axes = tuple(AXIS_NAMES.index(p[-1]) for p in parts)
        if sorted(axes) != [0, 1, 2]:
            raise InputError(f"axis mapping {raw!r} must name each of x, y and z exactly once",
                             source)
        mapping = AxisMapping(axes, tuple(-1 if p.startswith("-") else 1 for p in parts))
    if round(np.linalg.det(mapping.matrix)) != 1:
        raise InputError(f"axis mapping {str(mapping)!r} is a reflection (determinant -1): it "
                         f"would mirror the body, turning right limbs into left ones; flip the "
                         f"sign of one axis", source)
    return mapping


def apply_axes(series: KeypointSeries, mapping: str | AxisMapping) -> KeypointSeries:
    """A copy of ``series`` with its 3D points expressed in OpenSim's frame."""
    mapping = parse_axes(mapping, series.source)
    if series.dim != 3:
        raise InputError(f"axis mapping needs 3D points, got {series.dim}D", series.source)
    if mapping.is_identity:
        return series.copy()
    # rows of data are points: opensim = R @ p for each p, i.e. data @ R.T
    return series.copy(data=series.data @ mapping.matrix.T)


# ----------------------------------------------------------------------------- detection
_UNLABELLED = re.compile(r"^(\*\d+|unlabelled_\d+)(_\d+)?$")


def _points(series: KeypointSeries) -> np.ndarray:
    """(n, m, 3) with NaN for missing points, and exact (0, 0, 0) too: some systems (Vicon) write
    the origin for a lost marker, which would stretch the cloud to the lab's origin. Unlabelled
    points ('*39', 'unlabelled_3') are left out when at least 3 labelled markers exist: they are
    often ghosts or objects around the subject that stretch the cloud sideways."""
    if series.dim != 3:
        raise InputError(f"axis detection needs 3D points, got {series.dim}D", series.source)
    data = series.data.copy()
    data[(data == 0).all(axis=2)] = np.nan
    labelled = np.array([not _UNLABELLED.match(n.split(":")[-1]) for n in series.names])
    if labelled.sum() >= 3 and not np.isnan(data[:, labelled]).all():
        data[:, ~labelled] = np.nan
    return data


def _frame_extents(data: np.ndarray, source) -> np.ndarray:
    """(k, 3) max - min of the marker cloud in each frame that has at least 3 markers."""
    ok = (~np.isnan(data).any(axis=2)).sum(axis=1) >= 3
    if not ok.any():
        raise InputError("cannot detect the vertical axis: no frame has 3 or more markers; "
                         "give the axis mapping explicitly (e.g. --axes x,z,-y)", source)
    d = data[ok]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmax(d, axis=1) - np.nanmin(d, axis=1)


def _group_height(data: np.ndarray, names, pattern, axis: int) -> float:
    bare = [n.split(":")[-1] for n in names]  # "Subject:LFHD" -> "LFHD"
    idx = [i for i, n in enumerate(bare) if pattern.search(n)]
    if not idx:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(data[:, idx, axis]))


def detect_up_axis(series: KeypointSeries) -> tuple[int, int]:
    """``(axis_index, sign)`` of the vertical of an upright person, e.g. ``(2, +1)`` for Z-up.

    Heuristic: a standing, walking or running person is taller than wide or deep (about 1.7 m
    against 0.5 m), so the axis along which the per-frame marker cloud is longest (median over
    frames) is the vertical. The sign puts head and shoulder markers (found by name: HEAD, FHD,
    C7, SHO, CLAV, ACR...) above foot markers (TOE, HEE, ANK, MT, MAL...); when the names give no
    such groups, it assumes the lab's origin lies on the floor, so most markers are on its
    positive side.

    Fails for lying, crawling or swimming subjects, long horizontal reaches or props held in the
    hands (bats, poles) and for stray points far from the body; a sprinter's stride can come
    close to the body's height (a warning says so when the two longest extents are within 15%).
    Then give the mapping explicitly.
    """
    data = _points(series)
    extents = np.median(_frame_extents(data, series.source), axis=0)
    order = np.argsort(extents)[::-1]
    axis = int(order[0])
    if extents[order[0]] < AMBIGUOUS_RATIO * extents[order[1]]:
        msg = (f"{series.source}: the vertical axis is uncertain (marker cloud extents "
               f"{', '.join(f'{a} {e:.2f} m' for a, e in zip(AXIS_NAMES, extents))}); "
               f"check the result or give the axis mapping explicitly")
        log.warning(msg)
        warnings.warn(msg, stacklevel=2)
    upper = _group_height(data, series.names, _UPPER, axis)
    foot = _group_height(data, series.names, _FOOT, axis)
    if np.isfinite(upper) and np.isfinite(foot) and abs(upper - foot) > 0.2:
        sign = 1 if upper > foot else -1
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            sign = -1 if np.nanmedian(data[..., axis]) < 0 else 1
    return axis, sign


def travel(series: KeypointSeries) -> np.ndarray:
    """Displacement (3,) of the marker cloud's centre over the trial: the median over the last
    tenth of the frames minus the median over the first tenth (medians resist markers that come
    and go)."""
    data = _points(series)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        centre = np.nanmedian(data, axis=1)
        centre = centre[~np.isnan(centre).any(axis=1)]
        if len(centre) < 2:
            return np.zeros(3)
        k = max(1, len(centre) // 10)
        return np.median(centre[-k:], axis=0) - np.median(centre[:k], axis=0)


def auto_mapping(series: KeypointSeries) -> AxisMapping:
    """The proper rotation that puts the detected up axis on OpenSim +Y.

    OpenSim +X is the horizontal lab axis along which the marker cloud travels furthest, in the
    direction of travel, when that travel exceeds 0.5 m (so gait trials walk along +X as in
    OpenSim's examples); otherwise it is the lab's first horizontal axis (x for a Z- or Y-up lab,
    y for an X-up one), positive. OpenSim Z = X x Y completes a right-handed frame. A Z-up lab
    with no travel thus gets ``"x,z,-y"``; a Y-up one the identity.
    """
    up, up_sign = detect_up_axis(series)
    horizontal = [a for a in range(3) if a != up]
    d = travel(series)
    fwd = max(horizontal, key=lambda a: abs(d[a]))
    if abs(d[fwd]) > TRAVEL_THRESHOLD:
        fwd_sign = 1 if d[fwd] > 0 else -1
    else:
        fwd, fwd_sign = horizontal[0], 1
    ex = np.zeros(3)
    ex[fwd] = fwd_sign
    ey = np.zeros(3)
    ey[up] = up_sign
    return AxisMapping.from_matrix(np.vstack([ex, ey, np.cross(ex, ey)]))
