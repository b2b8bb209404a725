"""OpenSim coordinates -> Vicon Plug-in Gait model outputs (angles, moments, powers).

Labs read gait results from a C3D file as Plug-in Gait (PiG) "model outputs": 3D points named
``LHipAngles``, ``RKneeMoment``, ``LAnklePower``... whose X, Y, Z hold the sagittal, frontal and
transverse components. This module turns OpenSim inverse kinematics (.mot) and inverse dynamics
(.sto) columns into such points. The mapping is data (:data:`JOINTS`); what it assumes:

Angles (degrees), PiG signs, the same anatomical sign on both sides:

* Hip: X flexion +, Y adduction +, Z internal rotation + = ``hip_flexion``, ``hip_adduction``,
  ``hip_rotation`` (OpenSim mirrors the left axes, so the signs already agree).
* Knee: X flexion + = ``knee_angle`` times the model's flexion sign: gait2354/gait2392/Hamner
  define the knee with range [-120, 10] deg (flexion negative), Rajagopal2016 and kinevid's
  built-in model [0, 120] (flexion positive). :func:`knee_flexion_sign` decides from the model's
  range (the end with the larger magnitude is flexion) or, without a model, from the data (a
  walking or standing knee is flexed, so the median is on the flexion side). Knee Y, Z: none in
  these models (0, noted in the description).
* Ankle: X dorsiflexion + = ``ankle_angle``; Y = ``subtalar_angle`` (inversion +). PiG's ankle
  Y is a foot-to-shank Cardan angle, OpenSim's subtalar rotates about an oblique axis: close in
  walking, not identical (noted in the description). Z: none (0).
* Pelvis (relative to OpenSim's ground axes, not PiG's progression frame): X anterior tilt + =
  -``pelvis_tilt`` (OpenSim's positive tilt turns the pelvis backwards); Y obliquity, this side up
  + = -``pelvis_list`` on the right, +``pelvis_list`` on the left; Z rotation, this side forward
  + = +``pelvis_rotation`` on the right, -``pelvis_rotation`` on the left.
* Spine (trunk relative to pelvis; PiG's "SpineAngles" is thorax relative to pelvis): X flexion
  + = -``lumbar_extension``; Y bending toward this side +, Z rotation this side forward +, with
  the same right/left sign rule as the pelvis.
* Shoulder: ``arm_flex`` (X), ``arm_add`` (Y), ``arm_rot`` (Z), as OpenSim signs them (flexion,
  adduction, internal rotation +). Elbow: X flexion + = ``elbow_flex``. Wrist: X = ``wrist_flex``,
  Y = ``wrist_dev``. PiG computes upper-limb angles from different segment frames: expect
  offsets.

Moments: OpenSim's generalized force ``<coord>_moment`` (N m) is the net internal joint moment in
the coordinate's positive direction (a positive ``hip_flexion_r_moment`` flexes the hip). PiG's
sagittal moments are positive for extensors (hip, knee) and plantarflexors (ankle), i.e. opposite
to the positive angle. kinevid applies that rule to every component: a PiG moment component =
-(angle sign) x the OpenSim moment, so X is extensor/plantarflexor +, Y abductor +, Z external
rotator +. Units N mm, or N mm/kg when the body mass is known (PiG's convention).
Pelvis moments (OpenSim's residual loads) are not joint moments and are not written.

Powers: PiG writes joint power as a scalar in Z (X = Y = 0). kinevid's Z is the sum over the
joint's coordinates of moment x angular velocity (W, or W/kg), from a power table
(``<coord>_power`` columns, see :func:`joint_powers`).
"""
from __future__ import annotations

import dataclasses
import math
import os
import warnings

import numpy as np

from .errors import InputError
from .storage import Table

SIDES = (("L", "l"), ("R", "r"))

#: Sign placeholder: the knee's flexion sign depends on the model (see :func:`knee_flexion_sign`).
KNEE = "knee"


@dataclasses.dataclass(frozen=True)
class Joint:
    """One PiG output family: ``<side><name>Angles`` / ``Moment`` / ``Power``.

    ``components`` gives X, Y, Z as ``(coordinate, sign)`` or None (not in OpenSim's models).
    A coordinate with ``{s}`` is per side (``hip_flexion_{s}`` -> ``hip_flexion_r``); one without
    is central (``pelvis_tilt``) and its sign may be a ``{"R": +1, "L": -1}`` dict.
    """

    name: str
    components: tuple
    note: str = ""
    kinetics: bool = True  # whether moments and powers are meaningful (not for the pelvis)


JOINTS: tuple[Joint, ...] = (
    Joint("Pelvis", (("pelvis_tilt", -1), ("pelvis_list", {"R": -1, "L": 1}),
                     ("pelvis_rotation", {"R": 1, "L": -1})),
          "re OpenSim ground axes", kinetics=False),
    Joint("Hip", (("hip_flexion_{s}", 1), ("hip_adduction_{s}", 1), ("hip_rotation_{s}", 1))),
    Joint("Knee", (("knee_angle_{s}", KNEE), None, None)),
    Joint("Ankle", (("ankle_angle_{s}", 1), ("subtalar_angle_{s}", 1), None),
          "Y subtalar inversion"),
    Joint("Spine", (("lumbar_extension", -1), ("lumbar_bending", {"R": 1, "L": -1}),
                    ("lumbar_rotation", {"R": 1, "L": -1})), "trunk re pelvis"),
    Joint("Shoulder", (("arm_flex_{s}", 1), ("arm_add_{s}", 1), ("arm_rot_{s}", 1)),
          "arm re trunk"),
    Joint("Elbow", (("elbow_flex_{s}", 1), None, None)),
    Joint("Wrist", (("wrist_flex_{s}", 1), ("wrist_dev_{s}", 1), None)),
)

_AXES = "XYZ"


@dataclasses.dataclass
class ModelOutput:
    """One PiG point: label, (n, 3) values (NaN = missing sample), description."""

    label: str
    values: np.ndarray
    description: str


# --------------------------------------------------------------------------- conventions
def knee_flexion_sign(model=None, angles: Table | None = None, side: str = "r") -> int:
    """+1 when the model's ``knee_angle`` is positive in flexion, -1 when negative.

    With a model (``osim.Model`` or path): the end of the coordinate's range with the larger
    magnitude is flexion (gait2354: [-120, 10] -> -1; Rajagopal: [0, 120] -> +1). Without, the
    median of ``knee_angle_<side>`` in ``angles`` (a knee in gait is flexed); +1 when unknown."""
    coord = f"knee_angle_{side}"
    if model is not None:
        lo_hi = _coordinate_range(model, coord)
        if lo_hi is not None:
            lo, hi = lo_hi
            return -1 if abs(lo) > abs(hi) else 1
    if angles is not None and coord in angles:
        values = angles[coord]
        values = values[np.isfinite(values)]
        if values.size:
            return -1 if float(np.median(values)) < 0 else 1
    return 1


def _coordinate_range(model, name: str) -> tuple[float, float] | None:
    model = as_model(model)
    coords = model.getCoordinateSet()
    if not coords.contains(name):
        return None
    c = coords.get(name)
    return float(c.getRangeMin()), float(c.getRangeMax())


def as_model(model):
    if isinstance(model, (str, os.PathLike)):
        from .osim_model import load_model
        return load_model(model)
    return model


def body_mass(model) -> float:
    """Total mass (kg) of an OpenSim model (``osim.Model`` or path)."""
    model = as_model(model)
    bodies = model.getBodySet()
    return float(sum(bodies.get(i).getMass() for i in range(bodies.getSize())))


def _sign(sign, side: str, knee: int) -> int:
    if sign == KNEE:
        return knee
    if isinstance(sign, dict):
        return sign[side]
    return int(sign)


def _resolve(joint: Joint, side: str, suffix: str, knee: int):
    """[(coordinate or None, sign)] for X, Y, Z."""
    out = []
    for comp in joint.components:
        if comp is None:
            out.append((None, 0))
            continue
        coord, sign = comp
        out.append((coord.format(s=suffix), _sign(sign, side, knee)))
    return out


def _describe(comps, present, note: str) -> str:
    """Short (C3D stores all descriptions at the longest one's width): where each component
    comes from, e.g. ``X=-knee_angle_r Y=0 Z=0 (no such coordinates)``."""
    parts, absent = [], False
    for axis, (coord, sign), ok in zip(_AXES, comps, present):
        if coord is None or not ok:
            parts.append(f"{axis}=0")
            absent = absent or coord is None
            if coord is not None:
                parts[-1] += f"(no {coord})"
        else:
            parts.append(f"{axis}={'-' if sign < 0 else '+'}{coord}")
    text = "OpenSim " + " ".join(parts)
    notes = [n for n in (note, "0: no such coordinate" if absent else "") if n]
    return f"{text}; {'; '.join(notes)}" if notes else text


# --------------------------------------------------------------------------- outputs
def _angles_in_degrees(angles: Table) -> Table:
    if angles.in_degrees is None:
        raise InputError("the joint-angle table does not say whether angles are in degrees "
                         "(no inDegrees entry in its header)", angles.source)
    if angles.in_degrees:
        return angles
    # Only the mapped (all rotational) coordinates are used, so converting every column that
    # the mapping names is enough; translations (pelvis_tx) are never read here.
    rotational = {c.format(s=s) for j in JOINTS for comp in j.components if comp
                  for c in [comp[0]] for _, s in SIDES}
    data = angles.data.copy()
    for k, label in enumerate(angles.labels):
        if label in rotational:
            data[:, k] = np.rad2deg(data[:, k])
    return angles.copy(data=data, in_degrees=True)


def angle_outputs(angles: Table, *, knee_sign: dict[str, int] | None = None) -> list[ModelOutput]:
    """``<L|R><Joint>Angles`` points (degrees) from an IK table. ``knee_sign``: {"l": ±1, "r": ±1}
    (default: :func:`knee_flexion_sign` from the data)."""
    angles = _angles_in_degrees(angles)
    knee_sign = knee_sign or {s: knee_flexion_sign(None, angles, s) for _, s in SIDES}
    out = []
    for joint in JOINTS:
        for side, suffix in SIDES:
            comps = _resolve(joint, side, suffix, knee_sign[suffix])
            present = [c is not None and c in angles for c, _ in comps]
            if not any(present):
                continue
            values = np.zeros((len(angles), 3))
            for k, ((coord, sign), ok) in enumerate(zip(comps, present)):
                if ok:
                    values[:, k] = sign * angles[coord]
            out.append(ModelOutput(f"{side}{joint.name}Angles", values,
                                   _describe(comps, present, joint.note)))
    return out


def _moment_column(moments: Table, coord: str) -> str | None:
    for label in (f"{coord}_moment", coord):
        if label in moments:
            return label
    return None


def moment_outputs(moments: Table, *, knee_sign: dict[str, int], mass: float | None = None
                   ) -> list[ModelOutput]:
    """``<L|R><Joint>Moment`` points in N mm (N mm/kg with ``mass``) from an ID table
    (``<coord>_moment`` columns in N m). Sign rule in the module docstring."""
    scale, unit = _kinetic_scale(1000.0, "Nmm", mass)
    out = []
    for joint in JOINTS:
        if not joint.kinetics:
            continue
        for side, suffix in SIDES:
            comps = _resolve(joint, side, suffix, knee_sign[suffix])
            cols = [None if c is None else _moment_column(moments, c) for c, _ in comps]
            present = [c is not None for c in cols]
            if not any(present):
                continue
            values = np.zeros((len(moments), 3))
            for k, ((coord, sign), col) in enumerate(zip(comps, cols)):
                if col is not None:
                    values[:, k] = -sign * moments[col] * scale
            desc = _describe([(c, -s) for c, s in comps], present, "X ext/plantarflex +")
            out.append(ModelOutput(f"{side}{joint.name}Moment", values, desc))
    return out


def power_outputs(powers: Table, *, mass: float | None = None) -> list[ModelOutput]:
    """``<L|R><Joint>Power`` points, total joint power in Z (W, or W/kg with ``mass``), from a
    table of ``<coord>_power`` columns (W), e.g. from :func:`joint_powers`."""
    scale, unit = _kinetic_scale(1.0, "W", mass)
    out = []
    for joint in JOINTS:
        if not joint.kinetics:
            continue
        for side, suffix in SIDES:
            comps = _resolve(joint, side, suffix, 1)
            cols = [c for c, _ in comps if c is not None and f"{c}_power" in powers]
            if not cols:
                continue
            values = np.zeros((len(powers), 3))
            values[:, 2] = sum(powers[f"{c}_power"] for c in cols) * scale
            desc = f"OpenSim Z={'+'.join(c + '_power' for c in cols)}; X=Y=0"
            out.append(ModelOutput(f"{side}{joint.name}Power", values, desc))
    return out


def _kinetic_scale(factor: float, unit: str, mass: float | None) -> tuple[float, str]:
    if mass is None:
        return factor, unit
    if not (math.isfinite(mass) and mass > 0):
        raise InputError(f"body mass must be a positive number of kg, got {mass!r}")
    return factor / mass, f"{unit}/kg"


def joint_powers(angles: Table, moments: Table) -> Table:
    """``<coord>_power`` (W) = ``<coord>_moment`` (N m) x d(coord)/dt (rad/s) for every mapped
    rotational coordinate present in both tables, which must share their time column.

    The derivative is numpy's second-order central difference on the (possibly non-uniform)
    times."""
    if len(angles) != len(moments) or not np.allclose(angles.time, moments.time, atol=1e-4):
        raise InputError(f"joint powers need angles and moments at the same times "
                         f"({len(angles)} angle rows, {len(moments)} moment rows)",
                         moments.source)
    angles = _angles_in_degrees(angles)
    labels, cols = [], []
    seen = set()
    for joint in JOINTS:
        if not joint.kinetics:
            continue
        for _, suffix in SIDES:
            for comp in joint.components:
                if comp is None:
                    continue
                coord = comp[0].format(s=suffix)
                col = _moment_column(moments, coord)
                if coord in seen or coord not in angles or col is None:
                    continue
                seen.add(coord)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    velocity = np.gradient(np.deg2rad(angles[coord]), angles.time) \
                        if len(angles) > 1 else np.zeros(len(angles))
                labels.append(f"{coord}_power")
                cols.append(moments[col] * velocity)
    data = np.column_stack(cols) if cols else np.zeros((len(angles), 0))
    return Table(angles.time.copy(), labels, data, in_degrees=None, name="joint powers",
                 source=moments.source)
