"""External loads (ground reaction forces) for OpenSim's inverse dynamics.

Two ways in:

* :func:`load_external_loads` reads an ExternalLoads XML. Its ``datafile`` is resolved relative
  to the XML's own folder (as OpenSim's GUI does), whatever the current directory, and can be
  replaced by another GRF file.
* :func:`build_external_loads` builds one from the GRF file's column names alone, for the
  common case where only a ``_grf.mot`` exists.

Column conventions recognised by :func:`find_plates`: a plate is a force triplet ``<base>vx,
<base>vy, <base>vz`` with the point triplet ``<base>px..pz``; its torque triplet is the first of
``<base>mx..mz`` (``ground_force_1_mx``), ``<base with force->torque>x..z`` (``ground_torque_x``,
``1_ground_torque_x``, ``ground_torque_r_x``) or ``<base with force->moment>x..z`` present.
Bases such as ``ground_force_``, ``1_ground_force_``, ``ground_force_1_``, ``r_ground_force_``,
``calcn_r_force_`` or ``ground_force_r_`` all fit.

Which foot each plate pushes on (the rule, in order):

1. the base's name says it: a ``_``-separated token ``r``/``right`` or ``l``/``left``
   (case-insensitive; ``calcn_r_force_`` says right, ``ground_force_1_`` says nothing);
2. otherwise the centre of pressure decides: over the plate's stance frames (force magnitude
   above :data:`STANCE_THRESHOLD_N`, within the motion's time range) the model is posed from the
   motion and the plate goes to the foot whose centre (midpoint of the ``calcn`` origin and the
   ``toes`` origin, or the ``calcn`` origin when there are no toes) is nearer the CoP,
   horizontally, in the majority of frames. A plate that both feet use (a treadmill belt) cannot
   be split by ExternalLoads: it still goes to the majority foot and a warning says so.

A plate with no stance frame inside the motion (an unused plate) is left out.
"""
from __future__ import annotations

import dataclasses
import os
import re
import warnings
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import InputError, ModelError
from .osim_model import first_line

#: Force magnitude (N) above which a plate counts as loaded. 20 N is well above plate noise and
#: well below any foot contact in gait.
STANCE_THRESHOLD_N = 20.0
#: Fraction of stance frames that may disagree with the majority foot before we warn.
SHARED_PLATE_FRACTION = 0.2

_AXES = ("x", "y", "z")


@dataclasses.dataclass(frozen=True)
class Plate:
    """The columns of one force plate (or one foot's GRF) in a GRF file."""

    force_id: str          # e.g. "1_ground_force_v"  (columns force_id + x/y/z)
    point_id: str          # e.g. "1_ground_force_p"
    torque_id: str | None  # e.g. "1_ground_torque_", None when the file has no torques

    @property
    def base(self) -> str:
        return self.force_id[:-1]


@dataclasses.dataclass(frozen=True)
class Assignment:
    """How :func:`build_external_loads` placed one plate."""

    plate: Plate
    body: str | None        # None: left out (never loaded during the motion)
    rule: str               # "name", "cop" or "unused"
    stance_frames: int = 0
    agreeing_fraction: float = 1.0  # share of stance frames where ``body``'s foot was nearer


# --------------------------------------------------------------------------- reading files
def _require_file(path, what: str) -> Path:
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise InputError(f"{what} not found", path)
    return path


def read_grf(path):
    """A GRF file as a :class:`~opensim_bridge.storage.Table`, or :class:`InputError` naming it."""
    from .storage import read_table

    path = _require_file(path, "GRF file")
    table = read_table(path)
    if len(table) == 0:
        raise InputError("GRF file holds no rows", path)
    return table


# --------------------------------------------------------------------------- plates from names
def find_plates(labels) -> list[Plate]:
    """The plates in a GRF file's column labels (see the module docstring for conventions)."""
    present = set(labels)
    plates = []
    for label in labels:
        if not label.endswith("vx"):
            continue
        base = label[:-2]
        if not all(base + "v" + a in present for a in _AXES):
            continue
        if not all(base + "p" + a in present for a in _AXES):
            continue
        torque = None
        for cand in (base + "m", base.replace("force", "torque"), base.replace("force", "moment")):
            if cand != base and all(cand + a in present for a in _AXES):
                torque = cand
                break
        plates.append(Plate(base + "v", base + "p", torque))
    return plates


def side_from_name(identifier: str) -> str | None:
    """"r" or "l" when the identifier names one side unambiguously, else None."""
    tokens = {t.lower() for t in re.split(r"[^A-Za-z0-9]+|_", identifier) if t}
    right = bool(tokens & {"r", "right"})
    left = bool(tokens & {"l", "left"})
    if right == left:
        return None
    return "r" if right else "l"


# --------------------------------------------------------------------------- ExternalLoads
def _make_force(name: str, body: str, plate: Plate):
    import opensim as osim

    ef = osim.ExternalForce()
    ef.setName(name)
    ef.set_applied_to_body(body)
    ef.set_force_expressed_in_body("ground")
    ef.set_point_expressed_in_body("ground")
    ef.set_force_identifier(plate.force_id)
    ef.set_point_identifier(plate.point_id)
    # An empty torque identifier makes OpenSim apply no torque, which is right for a file
    # that has none.
    ef.set_torque_identifier(plate.torque_id or "")
    return ef


def load_external_loads(xml_path, *, grf=None):
    """Read an ExternalLoads XML with its data file made absolute.

    The ``datafile`` is resolved relative to the XML's folder; ``grf`` replaces it when given.
    Returns ``(osim.ExternalLoads, grf_path)``.
    """
    import opensim as osim

    xml_path = _require_file(xml_path, "external loads file")
    try:
        loads = osim.ExternalLoads(str(xml_path), True)
    except RuntimeError as exc:
        raise InputError(f"OpenSim cannot read this external loads file: {first_line(exc)}",
                         xml_path) from exc
    if grf is not None:
        data = _require_file(grf, "GRF file")
    else:
        name = loads.getDataFileName().strip()
        if not name or name == "Unassigned":
            raise InputError("the external loads file names no datafile; pass the GRF file",
                             xml_path)
        data = Path(name) if os.path.isabs(name) else xml_path.parent / name
        if not data.is_file():
            raise InputError(f"its datafile {name!r} does not exist (looked for {data})",
                             xml_path)
        data = data.resolve()
    loads.setDataFileName(str(data))
    return loads, data


def check_loads(loads, grf_path, grf_labels, model, loads_path=None) -> None:
    """Each enabled ExternalForce's columns exist in the GRF file and its bodies in the model."""
    missing = []
    bodies = {model.getBodySet().get(i).getName() for i in range(model.getBodySet().getSize())}
    bodies.add("ground")
    present = set(grf_labels)
    for i in range(loads.getSize()):
        ef = loads.get(i)
        if not ef.get_appliesForce():
            continue
        for ident in (ef.getForceIdentifier(), ef.getPointIdentifier(), ef.getTorqueIdentifier()):
            ident = ident.strip()
            if ident and ident != "Unassigned":
                missing += [ident + a for a in _AXES if ident + a not in present]
        for body in (ef.getAppliedToBodyName(), ef.get_force_expressed_in_body(),
                     ef.get_point_expressed_in_body()):
            if body not in bodies:
                raise ModelError(f"external force {ef.getName()!r} refers to body {body!r}, "
                                 f"which the model does not have", loads_path or grf_path)
    if missing:
        raise InputError(f"GRF file lacks the columns the external loads need: "
                         f"{', '.join(missing)}", grf_path)


def write_external_loads(loads, path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        loads.printToXML(str(tmp))
    return path


# --------------------------------------------------------------------------- automatic sides
def _foot_centres(model, motion, times: np.ndarray) -> dict[str, np.ndarray]:
    """Ground positions (n, 3) of each foot's centre at ``times``, the model posed by ``motion``
    (a :class:`~opensim_bridge.storage.Table` of coordinates)."""
    from .storage import rotational_coordinates

    bodies = model.getBodySet()
    names = {bodies.get(i).getName() for i in range(bodies.getSize())}
    if not {"calcn_r", "calcn_l"} <= names:
        raise ModelError("cannot decide which foot a force plate loads: the model has no "
                         "calcn_r/calcn_l bodies; give an external loads XML instead",
                         model.getInputFileName() or None)
    if motion.in_degrees is not False:
        motion = motion.to_radians(rotational_coordinates(model) & set(motion.labels))
    state = model.initSystem()
    coords = model.getCoordinateSet()
    pairs = []
    for i in range(coords.getSize()):
        c = coords.get(i)
        if c.getName() in motion.labels and not c.getLocked(state):
            pairs.append((c, np.interp(times, motion.time, motion[c.getName()])))
    out = {side: np.zeros((len(times), 3)) for side in ("r", "l")}
    for k in range(len(times)):
        for c, values in pairs:
            c.setValue(state, float(values[k]), False)
        model.realizePosition(state)
        for side in ("r", "l"):
            heel = bodies.get(f"calcn_{side}").getPositionInGround(state).to_numpy()
            if f"toes_{side}" in names:
                toe = bodies.get(f"toes_{side}").getPositionInGround(state).to_numpy()
                out[side][k] = 0.5 * (heel + toe)
            else:
                out[side][k] = heel
    return out


def build_external_loads(grf_path, model, motion_path, *, name: str = "auto_grf"):
    """ExternalLoads for a GRF file from its column names (rules in the module docstring).

    ``model`` is an ``osim.Model``; ``motion_path`` a coordinates file (.mot) of that model. Returns ``(osim.ExternalLoads, [Assignment, ...])``.
    """
    import opensim as osim

    from .storage import read_table

    grf_path = _require_file(grf_path, "GRF file")
    grf = read_grf(grf_path)
    plates = find_plates(grf.labels)
    if not plates:
        raise InputError("no force plate columns found (expected e.g. ground_force_vx/vy/vz "
                         "with ground_force_px/py/pz)", grf_path)
    gtime, gcols = grf.time, {lab: grf[lab] for lab in grf.labels}
    motion = read_table(_require_file(motion_path, "motion file"))
    t0, t1 = motion.time[0], motion.time[-1]
    inside = (gtime >= t0) & (gtime <= t1)

    assignments: list[Assignment] = []
    need_cop = []
    for plate in plates:
        force = np.stack([gcols[plate.force_id + a] for a in _AXES], axis=1)
        stance = inside & (np.linalg.norm(force, axis=1) > STANCE_THRESHOLD_N)
        side = side_from_name(plate.base)
        if side is not None:
            assignments.append(Assignment(plate, f"calcn_{side}", "name", int(stance.sum())))
        elif not stance.any():
            assignments.append(Assignment(plate, None, "unused", 0))
        else:
            assignments.append(None)  # decided below, keeping plate order
            need_cop.append((len(assignments) - 1, plate, stance))

    if need_cop:
        # One pose per stance sample of any plate; the GRF usually runs at a multiple of the
        # motion rate, so this is at most a few thousand cheap position realisations.
        union = np.zeros_like(gtime, dtype=bool)
        for _, _, stance in need_cop:
            union |= stance
        idx = np.flatnonzero(union)
        feet = _foot_centres(model.clone(), motion, gtime[idx])
        where = {g: k for k, g in enumerate(idx)}
        for pos, plate, stance in need_cop:
            rows = [where[g] for g in np.flatnonzero(stance)]
            cop = np.stack([gcols[plate.point_id + a] for a in _AXES], axis=1)[stance]
            # Horizontal distance only (OpenSim's ground Y is up): the CoP lies on the plate
            # surface, the foot centre some centimetres above it.
            d = {s: np.hypot(*(cop - feet[s][rows])[:, [0, 2]].T) for s in ("r", "l")}
            right_nearer = float(np.mean(d["r"] < d["l"]))
            side = "r" if right_nearer >= 0.5 else "l"
            agree = right_nearer if side == "r" else 1.0 - right_nearer
            assignments[pos] = Assignment(plate, f"calcn_{side}", "cop", len(rows), agree)
            if agree < 1.0 - SHARED_PLATE_FRACTION:
                warnings.warn(f"{grf_path}: plate {plate.base!r} is loaded by both feet "
                              f"({100 * (1 - agree):.0f}% of its stance frames nearer the other "
                              f"foot); all of it is applied to calcn_{side}", stacklevel=2)

    loads = osim.ExternalLoads()
    loads.setName(name)
    loads.setDataFileName(str(grf_path))
    used = [a for a in assignments if a.body is not None]
    if not used:
        raise InputError("no force plate is loaded (|F| > "
                         f"{STANCE_THRESHOLD_N:g} N) during the motion's time range", grf_path)
    for k, a in enumerate(used):
        loads.cloneAndAppend(_make_force(_force_name(a, k), a.body, a.plate))
    return loads, assignments


def _force_name(a: Assignment, k: int) -> str:
    side = "right" if a.body.endswith("_r") else "left"
    safe = re.sub(r"[^A-Za-z0-9]+", "_", a.plate.base).strip("_") or "plate"
    return f"{side}_{safe}_{k}" if safe else f"{side}_{k}"
