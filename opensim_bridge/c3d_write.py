"""Write kinevid results as a C3D file that motion-capture labs open in their own tools.

OpenSim cannot write C3D; labs judge results in Vicon Nexus/Polygon, Visual3D, Mokka or
ezc3d/btk scripts. :func:`write_c3d` writes, with the ``c3d`` package's :class:`c3d.Writer`:

* markers (POINT, mm, float format) with residuals: 0 (or the given residual) for a valid
  sample, -1 for a missing one (NaN), whose coordinates are written as 0 as Vicon does;
* Plug-in Gait model outputs (``LHipAngles``, ``RKneeMoment``, ``LAnklePower``...; mapping and
  sign conventions in :mod:`opensim_bridge.vicon_outputs`) as points listed in POINT:ANGLES,
  POINT:MOMENTS, POINT:POWERS with POINT:ANGLE_UNITS, MOMENT_UNITS, POWER_UNITS;
* ground reaction forces as virtual type-2 force platforms (see :func:`_plates`);
* gait events in the EVENT group (and EVENT_CONTEXT, and the header's event block);
* MANUFACTURER (COMPANY, SOFTWARE, VERSION_LABEL).

Axes. OpenSim is Y-up (X forward, Y up, Z right); labs are usually Z-up. ``axes`` names the lab
frame in the notation of :mod:`opensim_bridge.axes` used for reading (``"x,z,-y"``: OpenSim X =
lab x, OpenSim Y = lab z, OpenSim Z = -lab y); the writer applies its inverse. The default
``"opensim-to-lab"`` is ``"x,z,-y"``: lab X = OpenSim X, lab Y = -OpenSim Z, lab Z = OpenSim Y
(+90 deg about X, a proper rotation). Reading the file back with
``read_markers(path, axes="x,z,-y")`` returns the original OpenSim coordinates. The same rotation
applies to force vectors, centres of pressure and torques. Joint angles and moments do not
depend on the lab frame.

Time. A C3D file has one rate and a first frame number: sample ``i`` is at
``(first_frame - 1 + i) / rate`` s (frame 1 at 0 s, as :func:`~opensim_bridge.c3d_markers.
read_c3d_markers` and ezc3d read it). Data must be uniformly sampled (times may be rounded, e.g.
0.017, 0.033 s at 60 Hz); resampling variable-rate video data is the caller's job, and
non-uniform times raise :class:`InputError`.

Low-level parts (kept small, all through the package's group/parameter API): parameters whose
C3D dimensions are column-major (CORNERS 3x4xN, EVENT:TIMES 2xN) are added as raw bytes with
explicit dimensions, and the frame writer is replaced (:class:`_Writer`) because
``c3d.Writer._write_frames`` leaves a missing marker's coordinates at the previous frame's value
and converts frames one by one.
"""
from __future__ import annotations

import dataclasses
import io
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .atomic import atomic_write
from .axes import parse_axes
from .errors import InputError
from .storage import Table
from .timeseries import Event, KeypointSeries
from .vicon_outputs import (ModelOutput, as_model, angle_outputs, body_mass, knee_flexion_sign,
                            moment_outputs, power_outputs)

log = logging.getLogger(__name__)

#: The default lab frame: Z-up, X forward (OpenSim X), Y to the subject's left.
OPENSIM_TO_LAB = "x,z,-y"

#: Vertical force (N) above which a plate counts as loaded (for plate sizing).
LOADED_N = 20.0
#: Margin (m) around the loaded centres of pressure when sizing a virtual plate.
PLATE_MARGIN_M = 0.10
#: Smallest half-size (m) of a virtual plate, so a plate never degenerates to a point.
PLATE_MIN_HALF_M = 0.15

#: Vicon's icon ids and contexts for gait events.
EVENT_ICONS = {"Foot Strike": 1, "Foot Off": 2}
EVENT_CONTEXTS = ("Left", "Right", "General")
_HEADER_LABELS = {("Foot Strike", "Left"): "LFS ", ("Foot Strike", "Right"): "RFS ",
                  ("Foot Off", "Left"): "LFO ", ("Foot Off", "Right"): "RFO "}
#: Largest number of labels one POINT:LABELS-type parameter holds (a dimension is one byte).
_MAX_PER_PARAM = 255


def kinevid_version() -> str:
    try:
        from importlib.metadata import version
        return version("kinevid")
    except Exception:  # a source tree that is not installed
        return "0+unknown"


# --------------------------------------------------------------------------- time
def uniform_rate(time: np.ndarray, source=None, what: str = "data") -> float:
    """Sampling rate (Hz) of uniformly sampled ``time``, or :class:`InputError`.

    Times may be rounded: each may deviate from the uniform grid by up to 10% of a period or
    0.5 ms (times written with 3 decimals), whichever is larger, but never a quarter period."""
    from .filters import nominal_rate

    t = np.asarray(time, dtype=float)
    if t.size < 2:
        raise InputError(f"{what} has {t.size} sample(s); a C3D file needs at least 2 to have "
                         "a frame rate", source)
    rate = nominal_rate(t)
    if not (math.isfinite(rate) and rate > 0):
        raise InputError(f"{what}: cannot determine a sampling rate from the times", source)
    rate = float((t.size - 1) / (t[-1] - t[0]))
    nearest = round(rate)
    if nearest > 0 and abs(rate - nearest) <= 1e-4 * rate:
        rate = float(nearest)  # rounded times give 59.9997 Hz for a 60 Hz camera
    period = 1.0 / rate
    tol = min(max(0.1 * period, 5e-4), 0.25 * period)
    dev = np.abs(t - (t[0] + np.arange(t.size) * period))
    if dev.max() > tol:
        i = int(np.argmax(dev))
        raise InputError(
            f"{what} is not uniformly sampled (sample {i} at {t[i]:.6g} s is {1000 * dev[i]:.3g} ms "
            f"off a {rate:.6g} Hz grid); C3D needs one frame rate, so the data must be resampled "
            "to uniform times first", source)
    return rate


def first_frame_of(t0: float, rate: float, source=None) -> int:
    """C3D's 1-based first frame for a series starting at ``t0`` s."""
    frame = int(round(t0 * rate)) + 1
    if frame < 1:
        raise InputError(f"data start at {t0:g} s, before time 0; C3D frames start at frame 1 "
                         "(0 s): shift the times first", source)
    return frame


def frame_times(time: np.ndarray, source=None) -> np.ndarray:
    """The times a C3D file gives the frames of uniformly sampled ``time``:
    ``(first_frame - 1 + i) / rate``. Rounded input times (0.017, 0.033 s at 60 Hz) become exact
    (1/60, 2/60 s); resample other tables onto these, not onto the rounded times."""
    rate = uniform_rate(time, source)
    first = first_frame_of(float(time[0]), rate, source)
    return (first - 1 + np.arange(len(time))) / rate


def resample_table(table: Table, time: np.ndarray, tolerance: float = 1e-3) -> Table:
    """``table`` linearly interpolated at ``time``; NaN outside its time range (more than
    ``tolerance`` s beyond either end; within it the end value is used)."""
    time = np.asarray(time, dtype=float)
    if len(table) == len(time) and np.allclose(table.time, time, atol=tolerance, rtol=0):
        return table.copy(time=time.copy())
    data = np.full((len(time), len(table.labels)), np.nan)
    inside = (time >= table.time[0] - tolerance) & (time <= table.time[-1] + tolerance)
    tq = np.clip(time[inside], table.time[0], table.time[-1])
    for k in range(len(table.labels)):
        col = table.data[:, k]
        ok = np.isfinite(col)
        if ok.sum() >= 2:
            data[inside, k] = np.interp(tq, table.time[ok], col[ok])
            # Do not bridge gaps: a query between two samples where either is NaN stays NaN.
            right = np.clip(np.searchsorted(table.time, tq, side="right"), 1, len(table) - 1)
            left = right - 1
            on_sample = ((np.isclose(table.time[left], tq, rtol=0, atol=1e-9) & ok[left])
                         | (np.isclose(table.time[right], tq, rtol=0, atol=1e-9) & ok[right]))
            gap = ~(ok[left] & ok[right]) & ~on_sample
            sub = data[inside, k]
            sub[gap] = np.nan
            data[inside, k] = sub
    return table.copy(time=time.copy(), data=data)


def grf_on_analog_grid(grf: Table, time: np.ndarray) -> Table:
    """``grf`` ready for :func:`write_c3d` with frames at ``time``: unchanged when its rate is a
    whole multiple of the frame rate and its samples fall on the analog grid; otherwise linearly
    interpolated onto ``k`` samples per frame (``k`` = the GRF rate over the frame rate, rounded,
    at least 1), zero (unloaded) outside its time range."""
    rate = uniform_rate(time, None, "the frames")
    try:
        k = _analog_per_frame(grf, rate)
        _grf_offset(grf, np.asarray(time, float), rate, k)
        return grf
    except InputError:
        pass
    from .filters import nominal_rate

    k = max(1, int(round(nominal_rate(grf.time) / rate)))
    grid = time[0] + np.arange(len(time) * k) / (rate * k)
    out = resample_table(grf, grid, tolerance=0.5 / (rate * k))
    return out.copy(data=np.nan_to_num(out.data, nan=0.0))


def _check_same_times(table: Table, time: np.ndarray, rate: float, what: str) -> None:
    if len(table) != len(time):
        raise InputError(f"{what} has {len(table)} rows but there are {len(time)} frames "
                         f"({time[0]:.4g}-{time[-1]:.4g} s); resample it to the frame times first",
                         table.source)
    off = np.abs(table.time - time)
    if off.max() > 0.25 / rate:
        i = int(np.argmax(off))
        raise InputError(f"{what} row {i} is at {table.time[i]:.6g} s but frame {i} is at "
                         f"{time[i]:.6g} s; resample it to the frame times first", table.source)


# --------------------------------------------------------------------------- axes
def _lab_matrix(axes: str) -> np.ndarray:
    """3x3 rotation L with ``lab = L @ opensim``."""
    text = OPENSIM_TO_LAB if str(axes).strip().lower() == "opensim-to-lab" else axes
    return parse_axes(text).matrix.T  # parse_axes gives opensim = R @ lab


# --------------------------------------------------------------------------- force plates
@dataclasses.dataclass
class VirtualPlate:
    """A virtual type-2 force platform holding one OpenSim GRF force.

    ``channels``: (n_analog, 6) Fx, Fy, Fz (N), Mx, My, Mz (N mm) in the plate frame, about the
    plate's origin = the centre of its top surface (FORCE_PLATFORM:ORIGIN = 0), of the force the
    subject applies ON the plate (minus the ground reaction force), as a real plate measures it.
    ``corners``: (4, 3) lab mm. ``frame``: 3x3, columns = plate X, Y, Z in the lab (Z down)."""

    name: str
    channels: np.ndarray
    corners: np.ndarray
    frame: np.ndarray


def _plates(grf: Table, lab: np.ndarray, n_analog: int, offset: int) -> list[VirtualPlate]:
    """Virtual plates for the forces in an OpenSim GRF table.

    One plate per OpenSim force (force/point/torque column triplets, found as
    :func:`opensim_bridge.external_loads.find_plates` does); forces never above
    :data:`LOADED_N` are left out. Each plate lies in the floor plane at the median height of its
    loaded centres of pressure, with the lab's horizontal axes (plate X = lab image of OpenSim X,
    plate Z pointing down, as on AMTI/Kistler plates), big enough to contain every loaded CoP
    plus :data:`PLATE_MARGIN_M` (the CoPs a reader computes, see below). Its channels hold the
    wrench of the force applied by the subject on the plate (minus the GRF: what a type-2 plate
    measures; ezc3d reports it so) about the plate's origin, the centre of its top surface
    (ORIGIN = 0, which leaves no room for the sign conventions tools disagree on). A reader
    computing CoP = (-My/Fz, Mx/Fz) in plate coordinates then recovers the point where the
    force's line of action meets the plate: the input CoP when the torque is a free moment about
    the vertical (as from real plates), shifted when the GRF file's torque has horizontal parts
    (Gait2354's left foot), which is the same wrench, so inverse dynamics is unchanged.

    GRF sample ``j`` goes to analog sample ``offset + j``; samples outside the GRF's range are
    zero (unloaded plate)."""
    from .external_loads import find_plates, side_from_name

    found = find_plates(grf.labels)
    if not found:
        raise InputError("the GRF table has no force columns (<name>vx/vy/vz with <name>px/py/pz,"
                         " as OpenSim GRF .mot files have)", grf.source)
    up = lab @ np.array([0.0, 1.0, 0.0])
    fwd = lab @ np.array([1.0, 0.0, 0.0])
    z_plate = -up
    frame = np.column_stack([fwd, np.cross(z_plate, fwd), z_plate])
    plates = []
    for p in found:
        cols = lambda ident: np.column_stack([grf[ident + a] for a in "xyz"])  # noqa: E731
        force = cols(p.force_id)
        point = cols(p.point_id)
        torque = cols(p.torque_id) if p.torque_id else np.zeros_like(force)
        bad = ~(np.isfinite(force).all(1) & np.isfinite(point).all(1) & np.isfinite(torque).all(1))
        if bad.any():
            warnings.warn(f"{grf.source}: {int(bad.sum())} GRF rows of {p.force_id} hold NaN; "
                          "written as an unloaded plate", stacklevel=3)
            force[bad] = point[bad] = torque[bad] = 0.0
        vertical = force[:, 1]
        loaded = np.abs(vertical) > LOADED_N
        if not loaded.any():
            continue
        # To the lab frame, in N, mm, N mm.
        F = force @ lab.T
        P = 1000.0 * point @ lab.T
        T = 1000.0 * torque @ lab.T
        height = float(np.median(P[loaded] @ up))
        # The CoP a reader computes: where the line of action meets the plate's plane. It is
        # the input point unless the torque has horizontal components. Plate x, y in mm.
        wrench0 = np.cross(P[loaded] - up * height, F[loaded]) + T[loaded]
        f0, m0 = -F[loaded] @ frame, -wrench0 @ frame
        horiz = np.column_stack([-m0[:, 1] / f0[:, 2], m0[:, 0] / f0[:, 2]])
        lo, hi = horiz.min(axis=0), horiz.max(axis=0)
        half = np.maximum((hi - lo) / 2 + 1000 * PLATE_MARGIN_M, 1000 * PLATE_MIN_HALF_M)
        mid = (hi + lo) / 2
        centre = frame[:, 0] * mid[0] + frame[:, 1] * mid[1] + up * height
        ex, ey = frame[:, 0] * half[0], frame[:, 1] * half[1]
        # C3D corner order: 1 (+x,+y), 2 (-x,+y), 3 (-x,-y), 4 (+x,-y) in plate coordinates.
        corners = np.array([centre + ex + ey, centre - ex + ey, centre - ex - ey, centre + ex - ey])
        # Wrench of the ground reaction about the plate centre, then the action on the plate.
        moment = np.cross(P - centre, F) + T
        action = np.hstack([-F @ frame, -moment @ frame])  # lab -> plate coordinates
        action[~np.isfinite(action)] = 0.0
        channels = np.zeros((n_analog, 6))
        j0, j1 = max(0, offset), min(n_analog, offset + len(grf))
        if j1 > j0:
            channels[j0:j1] = action[j0 - offset:j1 - offset]
        side = side_from_name(p.base)
        name = p.base.rstrip("_") + ({"r": " (right)", "l": " (left)"}.get(side, ""))
        plates.append(VirtualPlate(name, channels, corners, frame))
    return plates


def _grf_offset(grf: Table, time: np.ndarray, rate: float, per_frame: int) -> int:
    """Index of the GRF's first sample on the analog grid, or :class:`InputError`."""
    analog_rate = rate * per_frame
    offset = (grf.time[0] - time[0]) * analog_rate
    k = int(round(offset))
    if abs(offset - k) > 0.25:
        raise InputError(f"the GRF samples ({grf.time[0]:.6g} s onwards) do not fall on the analog "
                         f"sample times of the frames ({time[0]:.6g} s + k/{analog_rate:g} Hz); "
                         "resample the GRF first", grf.source)
    return k


def _analog_per_frame(grf: Table, rate: float) -> int:
    grf_rate = uniform_rate(grf.time, grf.source, "the GRF table")
    ratio = grf_rate / rate
    k = int(round(ratio))
    if k < 1 or abs(ratio - k) > 1e-3 * k:
        raise InputError(f"the GRF rate ({grf_rate:.6g} Hz) is not a whole multiple of the frame "
                         f"rate ({rate:.6g} Hz), as C3D analog data must be; resample the GRF "
                         "first", grf.source)
    return k


# --------------------------------------------------------------------------- parameters
def _add(group, name: str, desc: str, bpe: int, dims: Sequence[int], data: bytes) -> None:
    if name.upper() in group:
        group.remove_param(name.upper())
    group.add_param(name, desc=desc, bytes_per_element=bpe, dimensions=list(dims), bytes=data)


def _floats(group, name, desc, values, dims=None):
    arr = np.asarray(values, dtype="<f4")
    _add(group, name, desc, 4, dims if dims is not None else [arr.size], arr.tobytes())


def _ints(group, name, desc, values, dims=None):
    arr = np.asarray(values, dtype="<i2")
    _add(group, name, desc, 2, dims if dims is not None else [arr.size], arr.tobytes())


def _strings(group, name, desc, values: Sequence[str]):
    """A string-array parameter (column-major: [length, count])."""
    values = [str(v) for v in values]
    width = max([len(v.encode("utf-8")) for v in values] + [1])
    if width > 255:
        raise InputError(f"{group.name}:{name}: text longer than 255 bytes: {values!r:.80}")
    data = b"".join(v.encode("utf-8").ljust(width) for v in values)
    _add(group, name, desc, -1, [width, len(values)], data)


def _string(group, name, desc, value: str):
    data = str(value).encode("utf-8")
    if len(data) > 255:
        raise InputError(f"{group.name}:{name}: text longer than 255 bytes")
    _add(group, name, desc, -1, [len(data)], data)


def _chunked_strings(group, name, desc, values: Sequence[str], truncate: bool = False):
    """LABELS, LABELS2, LABELS3...: the C3D convention for more than 255 entries.

    A parameter holds at most 32767 bytes (its size is a signed 16-bit offset), and a string
    array stores every entry at the longest one's width: with ``truncate`` (descriptions) the
    entries are cut to fit, otherwise too long a set is an :class:`InputError`."""
    values = [str(v) for v in values]
    width = max([len(v.encode("utf-8")) for v in values] + [1])
    limit = 32000 // min(len(values) or 1, _MAX_PER_PARAM)
    if width > limit:
        if not truncate:
            raise InputError(f"{group.name}:{name}: {len(values)} names of up to {width} bytes "
                             f"exceed a C3D parameter's size (at most {limit} bytes each here)")
        values = [v.encode("utf-8")[:limit].decode("utf-8", "ignore") for v in values]
    chunks = [values[i:i + _MAX_PER_PARAM] for i in range(0, len(values), _MAX_PER_PARAM)] or [[]]
    for k, chunk in enumerate(chunks):
        _strings(group, name if k == 0 else f"{name}{k + 1}", desc, chunk)


def _group(writer, name: str, desc: str):
    group = writer.get(name)
    if group is None:
        group = writer.add_group(writer.numeric_key_next, name, desc)
    return group


# --------------------------------------------------------------------------- the writer
def _writer_class():
    import c3d

    class _Writer(c3d.Writer):
        """c3d.Writer whose frames come as whole arrays and whose missing points are zeroed.

        ``set_data(points, analog)``: points (n, P, 4) float with the 4th column the C3D
        residual word (-1 missing), analog (n, C, k) in physical units (scale 1, offset 0)."""

        def set_data(self, points: np.ndarray, analog: np.ndarray) -> None:
            self._points_block = np.ascontiguousarray(points, dtype="<f4")
            self._analog_block = np.ascontiguousarray(analog.transpose(0, 2, 1), dtype="<f4")
            # write() takes the counts from the first frame and the number of frames.
            self._frames = [(points[i], analog[i]) for i in range(len(points))]

        def _write_frames(self, handle):
            # Float format, scale 1, offset 0: every value is written as is, float32. Per frame:
            # all points (x, y, z, residual word), then k analog samples of all channels.
            n = self._points_block.shape[0]
            block = np.concatenate([self._points_block.reshape(n, -1),
                                    self._analog_block.reshape(n, -1)], axis=1)
            handle.write(block.tobytes())
            self._pad_block(handle)

    return _Writer


def _residual_words(valid: np.ndarray, residuals: np.ndarray | None) -> np.ndarray:
    """The 4th point word: -1 when missing; else the residual (mm, POINT:SCALE = -1 so one unit
    is 1 mm, at most 255) in the low byte and no camera bits."""
    if residuals is None:
        res = np.zeros(valid.shape)
    else:
        res = np.clip(np.rint(np.nan_to_num(residuals, nan=0.0)), 0, 255)
    return np.where(valid, res, -1.0)


def _event_group(writer, events: Sequence[Event], source, subject: str | None) -> None:
    for e in events:
        if not math.isfinite(e.time) or e.time < 0:
            raise InputError(f"event {e.name!r} has time {e.time!r}; event times must be >= 0 s "
                             "(C3D counts from frame 1 at 0 s)", source)
    contexts = [_context(e.context) for e in events]
    g = _group(writer, "EVENT", "Events")
    _ints(g, "USED", "Number of events", [len(events)], dims=[])
    if events:
        _strings(g, "CONTEXTS", "Event contexts", contexts)
        _strings(g, "LABELS", "Event labels", [e.name for e in events])
        _strings(g, "DESCRIPTIONS", "Event descriptions",
                 [_event_description(e.name, c) for e, c in zip(events, contexts)])
        minutes = np.floor(np.array([e.time for e in events]) / 60.0)
        seconds = np.array([e.time for e in events]) - 60.0 * minutes
        _floats(g, "TIMES", "Event times (minutes, seconds)",
                np.column_stack([minutes, seconds]), dims=[2, len(events)])
        _ints(g, "ICON_IDS", "Event icon ids", [EVENT_ICONS.get(e.name, 0) for e in events])
        _ints(g, "GENERIC_FLAGS", "Generic event flags", [0] * len(events))
        if subject:
            # Nexus and Polygon attach each event to a subject by name.
            _strings(g, "SUBJECTS", "Event subjects", [subject] * len(events))
    ctx = _group(writer, "EVENT_CONTEXT", "Event contexts")
    _ints(ctx, "USED", "Number of contexts", [len(EVENT_CONTEXTS)], dims=[])
    _strings(ctx, "LABELS", "Context labels", EVENT_CONTEXTS)
    _strings(ctx, "DESCRIPTIONS", "Context descriptions",
             ["Left side", "Right side", "For other events"])
    _ints(ctx, "ICON_IDS", "Context icon ids", [0, 1, 2])
    _ints(ctx, "COLOURS", "Context colours (RGB)",
          [[255, 0, 0], [0, 255, 0], [0, 0, 255]], dims=[3, 3])
    # The header's event block (4-character labels, at most 18) for older readers.
    header_events = [(float(e.time), _HEADER_LABELS.get((e.name, c), "EVT "))
                     for e, c in zip(events, contexts)][:18]
    if header_events:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            writer.header.encode_events(header_events)


def _context(context: str) -> str:
    c = (context or "General").strip().capitalize()
    c = {"L": "Left", "R": "Right"}.get(c, c)
    if c not in EVENT_CONTEXTS:
        raise InputError(f"event context {context!r} is not one of {', '.join(EVENT_CONTEXTS)}")
    return c


def _event_description(name: str, context: str) -> str:
    if name == "Foot Strike":
        return "The instant the heel strikes the ground"
    if name == "Foot Off":
        return "The instant the toe leaves the ground"
    return name


def write_c3d(path: str | os.PathLike, *, markers: KeypointSeries | None = None,
              residuals: np.ndarray | None = None, angles: Table | None = None,
              moments: Table | None = None, powers: Table | None = None,
              grf: Table | None = None, events: Iterable[Event] = (), model=None,
              body_mass_kg: float | None = None, axes: str = "opensim-to-lab",
              manufacturer: dict | None = None, subject: str | None = None) -> Path:
    """Write a C3D file atomically; return its path.

    Parameters
    ----------
    markers : marker trajectories in OpenSim's frame (any length unit; written in mm).
        Their times set the frame rate and first frame; NaN samples are written as missing.
    residuals : (frames, markers) per-sample residuals in mm (e.g. IK marker errors), written
        rounded to 1 mm and clipped to 0-255 mm; default 0. Ignored for missing samples.
    angles : IK table (.mot; degrees, or radians when its header says so) -> PiG ``*Angles``.
    moments : ID table (.sto, ``<coord>_moment`` N m) -> PiG ``*Moment`` (N mm, or N mm/kg).
    powers : table of ``<coord>_power`` (W) (see :func:`~opensim_bridge.vicon_outputs.joint_powers`)
        -> PiG ``*Power`` (W or W/kg).
        ``angles``, ``moments`` and ``powers`` must have one row per frame at the frame times
        (:func:`resample_table` does it); without markers, their times set the frame rate.
    grf : OpenSim GRF table (.mot: ``<f>vx..vz``, ``<f>px..pz`` in m, torques in N m, in
        ground) -> virtual force platforms. Its rate must be a whole multiple of the frame rate
        and its samples on the analog grid; analog samples outside its time range are zero.
    events : gait events (``Event("Foot Strike", 1.02, "Left")``); contexts Left/Right/General.
    model : OpenSim model or path: gives the body mass (moments/powers per kg) and the knee's
        sign convention. ``body_mass_kg`` overrides the mass.
    axes : the lab frame, see the module docstring (default Z-up).
    manufacturer : MANUFACTURER entries (COMPANY, SOFTWARE, VERSION_LABEL).
    subject : subject name for EVENT:SUBJECTS and the SUBJECTS group (Nexus/Polygon attach
        events to a subject); omitted when None.
    """
    path = Path(path)
    lab = _lab_matrix(axes)
    events = list(events)
    if markers is not None:
        events = events + [e for e in markers.events if e not in events]

    # ----- time base
    base = markers if markers is not None else next(
        (t for t in (angles, moments, powers) if t is not None), None)
    if base is None:
        raise InputError("nothing to write: give markers or model outputs (angles, moments, "
                         "powers); a GRF alone has no frames", path)
    time = np.asarray(base.time, dtype=float)
    rate = uniform_rate(time, base.source, "the marker data" if markers is not None else
                        "the model outputs")
    first = first_frame_of(time[0], rate, base.source)
    n = len(time)

    # ----- points
    labels, descriptions, values, valid_words = [], [], [], []
    if markers is not None:
        if markers.dim != 3:
            raise InputError(f"markers must be 3D, got {markers.dim}D", markers.source)
        mm = markers.to_units("mm").data @ lab.T
        valid = ~np.isnan(mm).any(axis=2)
        if residuals is not None:
            residuals = np.asarray(residuals, dtype=float)
            if residuals.shape != valid.shape:
                raise InputError(f"residuals have shape {residuals.shape}; expected "
                                 f"{valid.shape} (frames, markers)", markers.source)
        labels += list(markers.names)
        descriptions += ["marker"] * len(markers.names)
        values.append(np.nan_to_num(mm, nan=0.0))
        valid_words.append(_residual_words(valid, residuals))

    if model is not None:
        model = as_model(model)  # load a path once: mass and knee convention both need it
    mass = body_mass_kg
    if mass is None and model is not None and (moments is not None or powers is not None):
        mass = body_mass(model)
    knee = {s: knee_flexion_sign(model, angles, s) for s in "lr"}
    groups: dict[str, list[str]] = {"ANGLES": [], "MOMENTS": [], "POWERS": []}
    outputs: list[tuple[str, ModelOutput]] = []
    if angles is not None:
        _check_same_times(angles, time, rate, "the joint-angle table")
        outputs += [("ANGLES", o) for o in angle_outputs(angles, knee_sign=knee)]
    if moments is not None:
        _check_same_times(moments, time, rate, "the joint-moment table")
        outputs += [("MOMENTS", o) for o in moment_outputs(moments, knee_sign=knee, mass=mass)]
    if powers is not None:
        _check_same_times(powers, time, rate, "the joint-power table")
        outputs += [("POWERS", o) for o in power_outputs(powers, mass=mass)]
    for kind, out in outputs:
        if out.label in labels:
            raise InputError(f"a marker is named {out.label!r}, like a Plug-in Gait model output",
                             markers.source if markers is not None else None)
        ok = np.isfinite(out.values).all(axis=1)
        labels.append(out.label)
        descriptions.append(out.description)
        values.append(np.nan_to_num(out.values, nan=0.0)[:, None, :])
        valid_words.append(np.where(ok, 0.0, -1.0)[:, None])
        groups[kind].append(out.label)

    if not labels:
        raise InputError("nothing to write: no markers, and no table column maps to a Plug-in "
                         "Gait output (see opensim_bridge.vicon_outputs.JOINTS)", base.source)
    points = np.zeros((n, len(labels), 4))
    if labels:
        points[:, :, :3] = np.concatenate(values, axis=1)
        points[:, :, 3] = np.concatenate(valid_words, axis=1)

    # ----- analog / force plates
    per_frame, plates = 0, []
    if grf is not None:
        per_frame = _analog_per_frame(grf, rate)
        offset = _grf_offset(grf, time, rate, per_frame)
        plates = _plates(grf, lab, n * per_frame, offset)
        if not plates:
            warnings.warn(f"{grf.source}: no force in the GRF table exceeds {LOADED_N:g} N; no "
                          "force platform written", stacklevel=2)
            per_frame = 0
    n_channels = 6 * len(plates)
    if plates:
        analog = np.concatenate([p.channels for p in plates], axis=1)   # (n*k, C)
        analog = analog.reshape(n, per_frame, n_channels).transpose(0, 2, 1)
    else:
        analog = np.zeros((n, 0, 0))

    # ----- assemble
    rate = _storable_rate(rate, per_frame)
    writer = _writer_class()(point_rate=rate, analog_rate=rate * per_frame, point_scale=-1.0,
                             point_units="mm")
    writer.set_start_frame(first)
    pg = writer.point_group
    _chunked_strings(pg, "LABELS", "Point labels", labels)
    _chunked_strings(pg, "DESCRIPTIONS", "Point descriptions", descriptions, truncate=True)
    _string(pg, "UNITS", "Point units", "mm")
    # How a viewer should orient the lab: OpenSim's forward axis across, its up axis up.
    _string(pg, "X_SCREEN", "Screen X axis", _axis_name(lab @ np.array([1.0, 0.0, 0.0])))
    _string(pg, "Y_SCREEN", "Screen Y axis", _axis_name(lab @ np.array([0.0, 1.0, 0.0])))
    for kind, unit in (("ANGLES", "deg"), ("MOMENTS", _unit(mass, "Nmm")),
                       ("POWERS", _unit(mass, "W"))):
        if groups[kind]:
            _chunked_strings(pg, kind, f"Model outputs: {kind.lower()}", groups[kind])
            _string(pg, f"{kind[:-1]}_UNITS", f"Units of {kind.lower()}", unit)

    ag = writer.analog_group
    _chunked_strings(ag, "LABELS", "Analog labels",
                     [f"{q}{i + 1}" for i in range(len(plates)) for q in
                      ("Fx", "Fy", "Fz", "Mx", "My", "Mz")])
    _chunked_strings(ag, "DESCRIPTIONS", "Analog descriptions",
                     [f"Force plate {i + 1} {q}: {p.name}" for i, p in enumerate(plates)
                      for q in ("Fx", "Fy", "Fz", "Mx", "My", "Mz")], truncate=True)
    _chunked_strings(ag, "UNITS", "Analog units", ["N", "N", "N", "Nmm", "Nmm", "Nmm"] * len(plates))
    _floats(ag, "SCALE", "Analog scale factors", np.ones(n_channels))
    _ints(ag, "OFFSET", "Analog offsets", np.zeros(n_channels))
    _floats(ag, "GEN_SCALE", "Analog general scale", [1.0], dims=[])

    fp = _group(writer, "FORCE_PLATFORM", "Force platforms")
    _ints(fp, "USED", "Number of force platforms", [len(plates)], dims=[])
    _ints(fp, "TYPE", "Force platform types (2: Fx Fy Fz Mx My Mz)", [2] * len(plates))
    _ints(fp, "ZERO", "Baseline frames (none: virtual plates have no offset)", [0, 0])
    _floats(fp, "CORNERS", "Plate corners in the lab (mm)",
            np.array([p.corners for p in plates]).reshape(-1), dims=[3, 4, len(plates)])
    _floats(fp, "ORIGIN", "Plate origin from the surface centre (mm, plate frame)",
            np.zeros(3 * len(plates)), dims=[3, len(plates)])
    _ints(fp, "CHANNEL", "Analog channels (1-based) of each plate",
          np.arange(1, n_channels + 1), dims=[6, len(plates)])

    _event_group(writer, events, base.source, subject)
    if subject:
        sg = _group(writer, "SUBJECTS", "Subjects")
        _ints(sg, "USED", "Number of subjects", [1], dims=[])
        _strings(sg, "NAMES", "Subject names", [subject])
        _strings(sg, "MARKER_SETS", "Marker sets", ["kinevid"])
        _ints(sg, "IS_STATIC", "Static trial flags", [0])
        _ints(sg, "USES_PREFIXES", "Labels carry a subject prefix", [0], dims=[])

    man = {"COMPANY": "kinevid", "SOFTWARE": "kinevid", "VERSION_LABEL": kinevid_version()}
    man.update(manufacturer or {})
    mg = _group(writer, "MANUFACTURER", "Software that wrote the file")
    for key, value in man.items():
        _string(mg, key.upper(), key.replace("_", " ").capitalize(), str(value))

    writer.set_data(points, analog)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # c3d warns "No analog data found" for marker-only files, which are legal.
        warnings.simplefilter("ignore")
        writer.write(buffer)
    with atomic_write(path, "wb") as fh:
        fh.write(buffer.getvalue())
    log.info("wrote %s: %d points, %d force plates, %d events, %d frames at %g Hz",
             path, len(labels), len(plates), len(events), n, rate)
    return path


def _storable_rate(rate: float, per_frame: int) -> float:
    """``rate`` such that float32(rate) x ``per_frame`` is exact in float32.

    Readers find the analog samples per frame as ANALOG:RATE / POINT:RATE, both float32, and
    ezc3d truncates: 599.40057 / 59.940060 = 9.99999 would give 9 and misread every frame.
    Whole rates are already exact; others lose the few lowest mantissa bits (a relative change
    below 1e-6)."""
    if rate == round(rate) or per_frame <= 1:
        return float(np.float32(rate))
    bits = 24 - int(math.ceil(math.log2(per_frame + 1)))
    mantissa, exponent = math.frexp(rate)
    return math.ldexp(round(mantissa * 2 ** bits) / 2 ** bits, exponent)


def _axis_name(v: np.ndarray) -> str:
    k = int(np.argmax(np.abs(v)))
    return ("+" if v[k] > 0 else "-") + "XYZ"[k]


def _unit(mass, unit: str) -> str:
    return unit if mass is None else f"{unit}/kg"
