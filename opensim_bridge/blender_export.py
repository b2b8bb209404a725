"""Per-body world transforms of an OpenSim model over a motion, for the Blender add-on.

Blender's Python has no OpenSim, so kinevid poses the model with OpenSim and writes what a
viewer needs into one ``.kvb`` file: a ZIP archive of ``manifest.json`` plus NumPy ``.npy``
arrays, readable with the standard library and numpy alone (no pickle, no OpenSim, no kinevid).
The full specification is ``docs/blender_motion_format.md``; in short (format version 1):

* ``manifest.json``: ``format`` = ``"kinevid-blender-motion"``, ``version`` = 1, ``fps``,
  ``frame_count``, units (m, s, deg, N), ``up_axis`` = ``"Y"`` (OpenSim's ground frame: X
  forward, Y up, Z right; Blender (x, y, z) = OpenSim (x, -z, y), i.e. +90 deg about X, given
  as ``to_blender``), ``arrays`` (name -> member file, shape, dtype), ``bodies`` in topological
  order (parent before child) with parent, joint, mass centre, child joint origins and
  ``geometry``, ``ground_geometry``, ``coordinates`` (name, joint, motion type, unit,
  from_motion, dependent, range, default), ``model_markers`` (name, body, location),
  ``experimental_markers`` (names), ``grf`` (plates: name, side, columns), ``video`` (path,
  offset), ``warnings``.
* ``arrays/*.npy``: ``time`` (F,) float64; ``body_translation`` (F, B, 3) float32 body origins
  in ground; ``body_rotation`` (F, B, 4) float32 unit quaternions (w, x, y, z) body -> ground,
  kept in one hemisphere from frame to frame; ``coordinates`` (F, C) float32 in degrees
  (rotational), metres (translational) or the model's unit (coupled); ``model_markers``
  (F, M, 3); optional ``coordinate_confidence`` (F, C), ``experimental_markers`` (F, E, 3),
  ``grf_force`` / ``grf_point`` / ``grf_torque`` (F, P, 3). NaN = missing.
* ``meshes/<id>.vertices.npy`` (V, 3) float32 and ``meshes/<id>.triangles.npy`` (T, 3)
  uint32 for each mesh file found; a geometry entry says ``kind`` (mesh, sphere, ellipsoid,
  cylinder, brick, cone, torus, line, arrow), its mesh id or its dimensions, ``scale``,
  ``translation`` + ``rotation`` (w, x, y, z) in the body frame, ``color``, ``opacity``.

How the model is posed, frame by frame, as OpenSim's own tools do: every coordinate the motion
names is set (rotational columns converted from degrees when the file is in degrees; a locked
coordinate the motion drives is unlocked); coordinates the motion lacks keep their default
value (a warning lists them), except coordinates that a CoordinateCouplerConstraint makes
dependent (e.g. Rajagopal's ``knee_angle_r_beta``), which are set from the coupler's own
equation ``scale_factor * f(independent)`` (exact, and the motion's knee angle is kept; OpenSim's
``Model.assemble`` agrees to ~1e-5 m but nudges the independent coordinate and is 30x slower);
any other enforced constraint is solved with ``Model.assemble``; then ``realizePosition``.
Knee translations that are functions of the knee angle inside a CustomJoint need nothing
extra: OpenSim's joint evaluates them.
"""
from __future__ import annotations

import datetime as _dt
import io
import json
import math
import os
import time as _time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import InputError, ModelError

FORMAT_NAME = "kinevid-blender-motion"
FORMAT_VERSION = 1
SUFFIX = ".kvb"
#: OpenSim (Y up) -> Blender (Z up): +90 degrees about X.
TO_BLENDER = [[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]
_MOTION_TYPES = {1: "rotational", 2: "translational", 3: "coupled"}
_UNITS = {"rotational": "deg", "translational": "m", "coupled": "model"}


# --------------------------------------------------------------------------- rotations
def rotation_to_quaternion(mats: np.ndarray) -> np.ndarray:
    """Unit quaternions (w, x, y, z) of rotation matrices ``(..., 3, 3)``.

    Shepperd's method: build the quaternion from whichever of w, x, y, z is largest, so no
    division by a small number happens near 180-degree rotations. Result has w >= 0."""
    m = np.asarray(mats, dtype=np.float64)
    shape = m.shape[:-2]
    m = m.reshape(-1, 3, 3)
    tr = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    diag = np.stack([tr, m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], axis=1)
    pick = np.argmax(diag, axis=1)
    q = np.empty((len(m), 4))
    # 4 w^2 = 1 + tr, 4 x^2 = 1 + 2 m00 - tr, ... ; the rest from off-diagonal sums/differences.
    for k in range(4):
        sel = pick == k
        if not sel.any():
            continue
        a = m[sel]
        d = diag[sel]
        s = np.sqrt(np.maximum(1.0 + 2.0 * d[:, k] - d[:, 0], 0.0)) if k else np.sqrt(np.maximum(1.0 + d[:, 0], 0.0))
        s2 = 2.0 * s  # = 4 * |component|
        w_ = (a[:, 2, 1] - a[:, 1, 2])
        x_ = (a[:, 0, 2] - a[:, 2, 0])
        y_ = (a[:, 1, 0] - a[:, 0, 1])
        if k == 0:
            q[sel] = np.stack([s / 2, w_ / s2, x_ / s2, y_ / s2], axis=1)
        elif k == 1:
            q[sel] = np.stack([w_ / s2, s / 2, (a[:, 0, 1] + a[:, 1, 0]) / s2,
                               (a[:, 0, 2] + a[:, 2, 0]) / s2], axis=1)
        elif k == 2:
            q[sel] = np.stack([x_ / s2, (a[:, 0, 1] + a[:, 1, 0]) / s2, s / 2,
                               (a[:, 1, 2] + a[:, 2, 1]) / s2], axis=1)
        else:
            q[sel] = np.stack([y_ / s2, (a[:, 0, 2] + a[:, 2, 0]) / s2,
                               (a[:, 1, 2] + a[:, 2, 1]) / s2, s / 2], axis=1)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 0] < 0] *= -1.0
    return q.reshape(shape + (4,))


def hemisphere_continuous(q: np.ndarray) -> np.ndarray:
    """Flip signs along axis 0 (frames) so that consecutive quaternions have a non-negative
    dot product: the same rotations, but keyframe interpolation takes the short way."""
    q = np.array(q, dtype=np.float64, copy=True)
    for f in range(1, len(q)):
        flip = np.einsum("...i,...i->...", q[f], q[f - 1]) < 0
        q[f][flip] *= -1.0
    return q


# --------------------------------------------------------------------------- resampling
def resample_linear(src_time: np.ndarray, data: np.ndarray, time: np.ndarray) -> np.ndarray:
    """``data`` (n, ...) sampled at ``src_time`` linearly interpolated at ``time``. NaN outside
    the source's range and wherever a neighbouring sample is NaN (gaps stay gaps)."""
    src_time = np.asarray(src_time, dtype=np.float64)
    data = np.asarray(data, dtype=np.float64)
    time = np.asarray(time, dtype=np.float64)
    out = np.full((len(time),) + data.shape[1:], np.nan)
    if len(src_time) == 0:
        return out
    tol = 1e-9 * max(1.0, float(np.abs(src_time).max()))
    hi = np.searchsorted(src_time, time)
    for f, (t, i) in enumerate(zip(time, hi)):
        if i < len(src_time) and abs(src_time[i] - t) <= tol:
            out[f] = data[i]
        elif i > 0 and abs(src_time[i - 1] - t) <= tol:
            out[f] = data[i - 1]
        elif 0 < i < len(src_time):
            w = (t - src_time[i - 1]) / (src_time[i] - src_time[i - 1])
            out[f] = (1.0 - w) * data[i - 1] + w * data[i]
    return out


# --------------------------------------------------------------------------- posing
@dataclass
class Poses:
    """The model posed over a motion (OpenSim's ground frame, metres)."""

    time: np.ndarray              # (F,)
    bodies: list[str]             # B names, topological order
    translation: np.ndarray       # (F, B, 3)
    rotation: np.ndarray          # (F, B, 4) w, x, y, z
    coordinates: list[str]        # C names, the model's CoordinateSet order
    coordinate_values: np.ndarray  # (F, C) in the model's units (rad / m)
    markers: list[str]            # M model marker names
    marker_positions: np.ndarray  # (F, M, 3)
    from_motion: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)
    wall_s: float = 0.0


def body_order(model) -> tuple[list[str], dict[str, dict]]:
    """Bodies in topological order (breadth-first from ground, parents first) and, per body,
    its parent body, joint, and the joints it is the parent of."""
    bodies = [model.getBodySet().get(i).getName() for i in range(model.getBodySet().getSize())]
    info = {b: {"parent": None, "joint": None, "joint_type": None, "child_joints": []}
            for b in bodies}
    children: dict[str, list[str]] = {"ground": []}
    joints = model.getJointSet()
    for i in range(joints.getSize()):
        j = joints.get(i)
        parent = j.getParentFrame().findBaseFrame().getName()
        child = j.getChildFrame().findBaseFrame().getName()
        if child not in info:  # a joint whose child is ground (reversed joint): nothing to order
            continue
        if info[child]["joint"] is None:
            info[child].update(parent=parent, joint=j.getName(),
                               joint_type=j.getConcreteClassName())
            children.setdefault(parent, []).append(child)
        if parent in info:
            info[parent]["child_joints"].append(j)
    order, queue, seen = [], ["ground"], set()
    while queue:
        cur = queue.pop(0)
        for c in children.get(cur, []):
            if c not in seen:
                seen.add(c)
                order.append(c)
                queue.append(c)
    order += [b for b in bodies if b not in seen]  # bodies no joint connects to ground
    return order, info


def _motion_columns(table, model, ignore_unknown: bool) -> tuple[dict[str, int], list[str]]:
    """Motion column index per model coordinate, and warnings. Unknown plain columns are an
    error (the motion is probably for another model) unless ``ignore_unknown``."""
    names = {c.getName() for c in model.getCoordinateSet()}
    found, unknown, warnings = {}, [], []
    for j, label in enumerate(table.labels):
        name = label
        if label.startswith("/"):  # an OpenSim 4 states file: keep coordinate values only
            parts = [p for p in label.split("/") if p]
            if len(parts) >= 2 and parts[-1] == "value" and parts[-2] in names:
                name = parts[-2]
            else:
                continue
        if name in names:
            if name in found:
                raise InputError(f"coordinate {name!r} appears twice in the motion", table.source)
            found[name] = j
        else:
            unknown.append(label)
    if not found:
        raise InputError("none of the motion's columns is a coordinate of the model "
                         f"({', '.join(table.labels[:8])}{'...' if len(table.labels) > 8 else ''}); "
                         "is this motion for another model?", table.source)
    if unknown:
        listed = ", ".join(unknown)
        if not ignore_unknown:
            raise InputError(f"motion columns that are not coordinates of the model: {listed} "
                             "(use --ignore-unknown-columns to pose the model anyway)", table.source)
        warnings.append(f"motion columns ignored (not coordinates of the model): {listed}")
    return found, warnings


def _in_degrees(table, rotational: set[str], found: dict[str, int]) -> tuple[bool, list[str]]:
    if table.in_degrees is not None:
        return table.in_degrees, []
    cols = [found[c] for c in found if c in rotational]
    big = bool(cols) and np.nanmax(np.abs(table.data[:, cols])) > 2 * math.pi
    unit = "degrees" if big else "radians"
    return big, [(f"the motion does not say whether angles are in degrees; assumed {unit} "
                  "from the size of its values")]


def _fill_gaps(time: np.ndarray, values: np.ndarray) -> np.ndarray:
    ok = np.isfinite(values)
    if ok.all() or not ok.any():
        return values
    return np.interp(time, time[ok], values[ok])


def pose_model(model, table, *, ignore_unknown: bool = False) -> Poses:
    """Pose an initialised ``osim.Model`` at every row of a motion ``Table`` (see the module
    docstring for how coordinates are set)."""
    import opensim as osim

    t0 = _time.perf_counter()
    state = model.initSystem()
    coord_set = model.getCoordinateSet()
    coords = [coord_set.get(i) for i in range(coord_set.getSize())]
    names = [c.getName() for c in coords]
    rotational = {c.getName() for c in coords if c.getMotionType() == osim.Coordinate.Rotational}
    found, warnings = _motion_columns(table, model, ignore_unknown)
    degrees, w = _in_degrees(table, rotational, found)
    warnings += w

    dependent = {c.getName() for c in coords if c.isDependent(state)}
    couplers, others = _split_constraints(model, state)
    missing = [n for n in names if n not in found and n not in dependent]
    if missing:
        parts = []
        for n in missing:
            c = coord_set.get(n)
            v = c.getDefaultValue()
            parts.append(f"{n} = {math.degrees(v):.4g} deg" if n in rotational else f"{n} = {v:.4g}")
        warnings.append("coordinates not in the motion, held at their default values: "
                        + ", ".join(parts))

    n = len(table.time)
    driven = []  # (coordinate, values in model units)
    for name, j in found.items():
        vals = table.data[:, j].astype(np.float64)
        if np.isnan(vals).all():
            warnings.append(f"motion column {table.labels[j]!r} is all NaN; {name} held at its default")
            continue
        if np.isnan(vals).any():
            warnings.append(f"motion column {table.labels[j]!r} has {int(np.isnan(vals).sum())} "
                            "missing values, filled by linear interpolation")
            vals = _fill_gaps(table.time, vals)
        if degrees and name in rotational:
            vals = np.deg2rad(vals)
        c = coord_set.get(name)
        if c.getLocked(state):
            c.setLocked(state, False)  # the motion drives it: show what the motion says
        driven.append((c, vals))

    order, _ = body_order(model)
    body_set = model.getBodySet()
    bodies = [body_set.get(b) for b in order]
    marker_set = model.getMarkerSet()
    markers = [marker_set.get(i) for i in range(marker_set.getSize())]
    trans = np.empty((n, len(bodies), 3))
    mats = np.empty((n, len(bodies), 3, 3))
    qvals = np.empty((n, len(coords)))
    mpos = np.empty((n, len(markers), 3))
    assembly_failures = 0
    for f in range(n):
        for c, vals in driven:
            c.setValue(state, float(vals[f]), False)
        for cp in couplers:
            cp.apply(state)
        if others:
            try:
                model.assemble(state)
            except RuntimeError:  # OpenSim: "AssemblySolver::assemble() Failed": keep going, report
                assembly_failures += 1
        model.realizePosition(state)
        for b, body in enumerate(bodies):
            xf = body.getTransformInGround(state)
            p, r = xf.p(), xf.R()
            trans[f, b] = (p.get(0), p.get(1), p.get(2))
            mats[f, b] = [[r.get(i, k) for k in range(3)] for i in range(3)]
        for k, c in enumerate(coords):
            qvals[f, k] = c.getValue(state)
        for k, mk in enumerate(markers):
            loc = mk.getLocationInGround(state)
            mpos[f, k] = (loc.get(0), loc.get(1), loc.get(2))
    if assembly_failures:
        warnings.append(f"OpenSim could not satisfy the model's constraints in {assembly_failures} "
                        f"of {n} frames; those frames show the closest pose it found")
    quats = hemisphere_continuous(rotation_to_quaternion(mats))
    return Poses(time=table.time.copy(), bodies=order, translation=trans, rotation=quats,
                 coordinates=names, coordinate_values=qvals,
                 markers=[m.getName() for m in markers], marker_positions=mpos,
                 from_motion={c.getName() for c, _ in driven}, warnings=warnings,
                 wall_s=_time.perf_counter() - t0)


class _Coupler:
    """A CoordinateCouplerConstraint evaluated directly: q_dependent = scale * f(q_independent),
    the equation OpenSim hands to Simbody, so the result is exactly what assembly converges to
    (to its tolerance), at a fraction of the cost."""

    def __init__(self, model, constraint):
        import opensim as osim

        ccc = osim.CoordinateCouplerConstraint.safeDownCast(constraint)
        names = ccc.getIndependentCoordinateNames()
        self.independent = [names.get(i) for i in range(names.getSize())]
        self.dependent = ccc.getDependentCoordinateName()
        self.scale = osim.PropertyHelper.getValueDouble(ccc.getPropertyByName("scale_factor"))
        self.function = ccc.getFunction()
        cs = model.getCoordinateSet()
        self.ind = cs.get(self.independent[0])
        self.dep = cs.get(self.dependent)
        self._x = osim.Vector(1, 0.0)

    def apply(self, state) -> None:
        self._x.set(0, self.ind.getValue(state))
        self.dep.setValue(state, self.scale * self.function.calcValue(self._x), False)


def _split_constraints(model, state) -> tuple[list[_Coupler], list]:
    """Enforced constraints as (single-input coordinate couplers in evaluation order, the rest).
    A coupler whose input is another coupler's output comes after it."""
    import opensim as osim

    couplers, others = [], []
    cset = model.getConstraintSet()
    for i in range(cset.getSize()):
        c = cset.get(i)
        if not c.isEnforced(state):
            continue
        ccc = osim.CoordinateCouplerConstraint.safeDownCast(c)
        if ccc is not None and ccc.getIndependentCoordinateNames().getSize() == 1:
            couplers.append(_Coupler(model, c))
        else:
            others.append(c)
    ordered, done = [], set()
    outputs = {cp.dependent for cp in couplers}
    pending = list(couplers)
    while pending:
        ready = [cp for cp in pending if cp.independent[0] not in outputs - done]
        if not ready:  # a cycle: leave it to OpenSim's assembler
            others.extend(pending)
            break
        for cp in ready:
            ordered.append(cp)
            done.add(cp.dependent)
            pending.remove(cp)
    return ordered, others


# --------------------------------------------------------------------------- export
@dataclass
class ExportResult:
    path: Path
    frame_count: int
    body_count: int
    mesh_count: int
    missing_meshes: list[str]
    warnings: list[str]
    pose_s: float        # OpenSim posing time
    wall_s: float        # everything, writing included

    @property
    def frames_per_s(self) -> float:
        return self.frame_count / self.pose_s if self.pose_s > 0 else math.inf


def _vec(v) -> list[float]:
    return [float(v.get(i)) for i in range(3)]


def _generator() -> str:
    from importlib.metadata import PackageNotFoundError, version

    import opensim as osim
    try:
        kv = version("kinevid")
    except PackageNotFoundError:  # a source tree that is not installed
        kv = "0+unknown"
    return f"kinevid {kv} (OpenSim {getattr(osim, '__version__', '?')})"


def _require(path, what: str, error=InputError) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise error(f"{what} not found", p)
    if not p.is_file():
        raise error(f"{what} is not a file", p)
    return p.resolve()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def export_blender(model_path: str | os.PathLike, motion_path: str | os.PathLike,
                   output: str | os.PathLike, *, markers: str | os.PathLike | None = None,
                   grf: str | os.PathLike | None = None, video: str | os.PathLike | None = None,
                   video_offset: float = 0.0, geometry_paths: Sequence[str | os.PathLike] = (),
                   confidence=None, ignore_unknown_columns: bool = False) -> ExportResult:
    """Write a ``.kvb`` Blender motion file (see the module docstring and
    ``docs/blender_motion_format.md``).

    ``confidence``: optional :class:`~opensim_bridge.storage.Table` of per-coordinate
    confidence (0..1) whose columns are coordinate names; it is resampled to the motion's
    frames (NaN for coordinates it lacks)."""
    from .geometry import (
        find_mesh_file,
        geometry_search_paths,
        model_geometry,
        read_mesh,
    )
    from .osim_model import load_model
    from .storage import read_table

    t_start = _time.perf_counter()
    output = Path(output).expanduser()
    if output.is_dir():
        raise InputError("the output is a folder; give a file name such as motion.kvb", output)
    model_path = _require(model_path, "model file", ModelError)
    motion_path = _require(motion_path, "motion file")
    markers_path = _require(markers, "marker file") if markers else None
    grf_path = _require(grf, "GRF file") if grf else None
    video_path = _require(video, "video file") if video else None
    if not math.isfinite(float(video_offset)):
        raise InputError(f"the video offset must be a finite number of seconds, got {video_offset!r}")
    for g in geometry_paths:
        if not Path(g).expanduser().is_dir():
            raise InputError("geometry search folder not found", g)

    model = load_model(model_path)
    table = read_table(motion_path)
    poses = pose_model(model, table, ignore_unknown=ignore_unknown_columns)
    warnings = list(poses.warnings)
    n = len(poses.time)
    arrays: dict[str, tuple[np.ndarray, str]] = {}

    def add(name: str, data: np.ndarray, dtype, meaning: str):
        arrays[name] = (np.asarray(data).astype(dtype), meaning)

    coord_set = model.getCoordinateSet()
    state = model.getWorkingState()  # pose_model's state: no second initSystem
    coord_meta, coord_cols = [], []
    for j, name in enumerate(poses.coordinates):
        c = coord_set.get(name)
        kind = _MOTION_TYPES.get(int(c.getMotionType()), "coupled")
        conv = math.degrees(1.0) if kind == "rotational" else 1.0
        coord_cols.append(poses.coordinate_values[:, j] * conv)
        coord_meta.append({
            "name": name, "joint": c.getJoint().getName(), "motion_type": kind,
            "unit": _UNITS[kind], "from_motion": name in poses.from_motion,
            "dependent": bool(c.isDependent(state)),
            "range": [c.getRangeMin() * conv, c.getRangeMax() * conv],
            "default": c.getDefaultValue() * conv})

    add("time", poses.time, np.float64, "time of each frame, s")
    add("body_translation", poses.translation, np.float32, "body origin in ground, m")
    add("body_rotation", poses.rotation, np.float32, "body orientation in ground, quaternion w,x,y,z")
    add("coordinates", np.stack(coord_cols, axis=1) if coord_cols else np.zeros((n, 0)),
        np.float32, "coordinate values in coordinates[j].unit")
    add("model_markers", poses.marker_positions, np.float32, "model markers in ground, m")

    if confidence is not None:
        conf = np.full((n, len(poses.coordinates)), np.nan)
        for j, name in enumerate(poses.coordinates):
            if name in confidence:
                conf[:, j] = resample_linear(confidence.time, confidence[name], poses.time)
        add("coordinate_confidence", conf, np.float32, "confidence 0..1 per coordinate")

    exp_names: list[str] = []
    if markers_path is not None:
        from .markers import read_markers
        series = read_markers(markers_path).to_metres()
        exp_names = list(series.names)
        data = resample_linear(series.time, series.data, poses.time)
        if np.isnan(data).all():
            warnings.append(f"the marker file's times ({series.time[0]:g}-{series.time[-1]:g} s) "
                            f"do not overlap the motion's ({poses.time[0]:g}-{poses.time[-1]:g} s)")
        add("experimental_markers", data, np.float32, "measured markers in ground, m")

    plates_meta = []
    if grf_path is not None:
        from .external_loads import find_plates, read_grf, side_from_name
        gt = read_grf(grf_path)
        plates = find_plates(gt.labels)
        if not plates:
            raise InputError("no force plate columns found (expected triplets like "
                             "ground_force_vx/vy/vz with ground_force_px/py/pz)", grf_path)
        forces, points, torques = [], [], []
        for p in plates:
            fcols = [p.force_id + a for a in "xyz"]
            pcols = [p.point_id + a for a in "xyz"]
            tcols = [p.torque_id + a for a in "xyz"] if p.torque_id else None
            forces.append(np.stack([gt[c] for c in fcols], axis=1))
            points.append(np.stack([gt[c] for c in pcols], axis=1))
            torques.append(np.stack([gt[c] for c in tcols], axis=1) if tcols
                           else np.full((len(gt), 3), np.nan))
            plates_meta.append({"name": p.base.rstrip("_"), "side": side_from_name(p.base),
                                "force_columns": fcols, "point_columns": pcols,
                                "torque_columns": tcols})
        for name, parts in (("grf_force", forces), ("grf_point", points), ("grf_torque", torques)):
            add(name, resample_linear(gt.time, np.stack(parts, axis=1), poses.time), np.float32,
                {"grf_force": "force per plate, N", "grf_point": "point of application, m",
                 "grf_torque": "free torque, N*m"}[name])
        if not np.isfinite(arrays["grf_force"][0]).any():
            warnings.append(f"the GRF file's times ({gt.time[0]:g}-{gt.time[-1]:g} s) do not "
                            f"overlap the motion's ({poses.time[0]:g}-{poses.time[-1]:g} s)")

    # Geometry: meshes stored once per file, placed per geometry entry.
    search = geometry_search_paths(model_path, geometry_paths)
    items, gwarn = model_geometry(model)
    warnings += gwarn
    meshes: dict[str, tuple[str, object]] = {}  # resolved path -> (mesh id, MeshData)
    missing: list[str] = []
    geom_by_body: dict[str, list[dict]] = {}
    used_ids: set[str] = set()
    for it in items:
        entry = {"name": it.name, "kind": it.kind, "scale": list(it.scale),
                 "translation": it.translation.tolist(),
                 "rotation": rotation_to_quaternion(it.rotation).tolist(),
                 "frame": it.frame, "color": list(it.color), "opacity": it.opacity,
                 "visible": it.visible, "representation": it.representation}
        entry.update(it.params)
        if it.kind == "mesh":
            entry["mesh_file"] = it.mesh_file
            found = find_mesh_file(it.mesh_file or "", search) if it.mesh_file else None
            mesh_id = None
            if found is not None:
                key = os.fspath(found.resolve())
                if key not in meshes:
                    try:
                        mesh = read_mesh(found)
                    except InputError as exc:
                        warnings.append(f"mesh {found} is unreadable and left out: {exc.problem}")
                        mesh = None
                    if mesh is not None:
                        base = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in found.name)
                        mid, k = base, 1
                        while mid in used_ids:
                            k += 1
                            mid = f"{base}_{k}"
                        used_ids.add(mid)
                        meshes[key] = (mid, mesh)
                mesh_id = meshes[key][0] if key in meshes else None
            if mesh_id is None and it.mesh_file not in missing:
                missing.append(it.mesh_file)
            entry["mesh"] = mesh_id
            entry["missing"] = mesh_id is None
        geom_by_body.setdefault(it.body, []).append(entry)
    if missing:
        warnings.append(f"{len(missing)} mesh file(s) not found or unreadable, left out: "
                        f"{', '.join(missing)} (searched: {', '.join(map(str, search))}; add "
                        "folders with --geometry-path or OPENSIM_GEOMETRY_PATH)")

    order, info = body_order(model)
    body_set = model.getBodySet()
    bodies_meta = []
    for name in order:
        b = body_set.get(name)
        inf = info[name]
        cj = inf["child_joints"]
        bodies_meta.append({
            "name": name, "parent": inf["parent"], "joint": inf["joint"],
            "joint_type": inf["joint_type"],
            "coordinates": ([inf_c.getName() for inf_c in _joint_coords(model, inf["joint"])]
                            if inf["joint"] else []),
            "mass": float(b.getMass()), "mass_center": _vec(b.getMassCenter()),
            "children": [j.getChildFrame().findBaseFrame().getName() for j in cj],
            "child_joint_origins": [_vec(j.getParentFrame().findTransformInBaseFrame().p())
                                    for j in cj],
            "geometry": geom_by_body.get(name, [])})

    marker_set = model.getMarkerSet()
    markers_meta = []
    for name in poses.markers:
        mk = marker_set.get(name)
        markers_meta.append({"name": name, "body": mk.getParentFrame().findBaseFrame().getName(),
                             "location": _vec(mk.findLocationInFrame(state, mk.getParentFrame().findBaseFrame()))})

    video_meta = None
    if video_path is not None:
        try:
            rel = os.path.relpath(video_path, output.resolve().parent)
        except ValueError:  # another drive on Windows
            rel = None
        video_meta = {"path": os.fspath(video_path), "relative_path": rel,
                      "offset_s": float(video_offset)}

    time_ = poses.time
    fps = float(1.0 / np.median(np.diff(time_))) if n > 1 else 0.0
    manifest = {
        "format": FORMAT_NAME, "version": FORMAT_VERSION, "generator": _generator(),
        "created_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": {"model": os.fspath(model_path), "motion": os.fspath(motion_path),
                   "markers": os.fspath(markers_path) if markers_path else None,
                   "grf": os.fspath(grf_path) if grf_path else None},
        "model_name": model.getName(),
        "units": {"length": "m", "time": "s", "angle": "deg", "force": "N", "torque": "N*m"},
        "up_axis": "Y", "forward_axis": "X",
        "to_blender": {"matrix": TO_BLENDER,
                       "quaternion": [math.sqrt(0.5), math.sqrt(0.5), 0.0, 0.0],
                       "note": "Blender (x, y, z) = OpenSim (x, -z, y): +90 deg about X"},
        "fps": fps, "frame_count": n,
        "start_time": float(time_[0]), "end_time": float(time_[-1]),
        "arrays": {name: {"file": f"arrays/{name}.npy", "shape": list(a.shape),
                          "dtype": str(a.dtype), "meaning": meaning}
                   for name, (a, meaning) in arrays.items()},
        "bodies": bodies_meta,
        "ground_geometry": geom_by_body.get("ground", []),
        "coordinates": coord_meta,
        "model_markers": markers_meta,
        "experimental_markers": exp_names,
        "grf": plates_meta,
        "grf_threshold_n": 20.0,
        "video": video_meta,
        "mesh_search_paths": [os.fspath(p) for p in search],
        "meshes": {mid: {"vertices": f"meshes/{mid}.vertices.npy",
                         "triangles": f"meshes/{mid}.triangles.npy", "source": key,
                         "vertex_count": len(m.vertices),
                         "triangle_count": len(m.triangles)}
                   for key, (mid, m) in meshes.items()},
        "warnings": warnings,
    }
    text = json.dumps(_json_safe(manifest), indent=1, allow_nan=False)
    with atomic_path(output) as tmp, \
            zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        zf.writestr("manifest.json", text)  # first, so readers find it at once
        for name, (a, _) in arrays.items():
            zf.writestr(f"arrays/{name}.npy", _npy(a))
        for mid, m in meshes.values():
            zf.writestr(f"meshes/{mid}.vertices.npy", _npy(m.vertices.astype(np.float32)))
            zf.writestr(f"meshes/{mid}.triangles.npy", _npy(m.triangles.astype(np.uint32)))
    return ExportResult(path=output, frame_count=n, body_count=len(order), mesh_count=len(meshes),
                        missing_meshes=missing, warnings=warnings, pose_s=poses.wall_s,
                        wall_s=_time.perf_counter() - t_start)


def _json_safe(obj):
    """Non-finite numbers (an unbounded coordinate range, say) become null: JSON has no NaN."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _joint_coords(model, joint_name: str):
    j = model.getJointSet().get(joint_name)
    return [j.get_coordinates(i) for i in range(j.numCoordinates())]
