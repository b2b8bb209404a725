"""Ground reaction forces estimated from kinematics alone, and inverse dynamics with them.

The steps of :func:`estimate_grf`:

1. **Total external force (Newton).** The model is posed at every frame of the motion and
   OpenSim gives the whole-body centre of mass (``Model.calcMassCenterPosition``). Its trajectory
   is low-passed (zero-lag Butterworth, :func:`opensim_bridge.filters.butter_lowpass`, 4th order,
   ``lowpass_hz``) and differentiated twice with second-order central differences
   (``numpy.gradient``; one-sided at the two end frames). Then ``F = m (a_com - g)`` with
   ``g = (0, -9.80665, 0)`` in OpenSim's Y-up ground frame: the sum of all external forces,
   which without other supports are the ground reaction forces. On a treadmill running at
   constant speed the belt frame is inertial too, so the same holds.
2. **Contact** of each foot from the heights and speeds of a heel and a toe point
   (:mod:`opensim_bridge.contact`), which also gives the gait events.
3. **Split between the feet.** In single support the stance foot takes all of ``F``; in flight
   (no contact) nobody does, and ``F`` should then be about zero (reported as a check). Through
   double support the *smooth transition assumption* of Ren, Jones & Howard (2008, J Biomech
   41:2750, "Whole body inverse dynamics over a complete gait cycle based only on measured
   kinematics") is used: the trailing foot's force decays smoothly from its value at the
   leading foot's strike to zero at its own foot off, and the leading foot takes the rest.
   Ren et al. use ``exp(-(2 tau)^2)`` (``tau`` = fraction of double support elapsed); here a
   linear term is subtracted so that it reaches exactly zero at foot off:
   ``w(tau) = exp(-4 tau^2) - tau exp(-4)``. ``transition="share"`` instead gives the trailing
   foot the share ``w(tau)`` of the *current* total force (Villeger et al. 2014 compare such
   laws). When the double support is cut by the trial's start (the strike is not seen), the
   share law is used for it, with the double support's length taken from the complete ones.
   A negative vertical component left for the leading foot is moved to the trailing one.
4. **Centre of pressure** on the floor (``y`` = the trial's lowest foot point height) along the
   stance foot, from the heel point towards the toe point: at the heel while only the heel
   touches, at the toe while only the toe touches, and in proportion to the time elapsed in the
   contact while both do, smoothed. The free moment is zero.
5. ``grf.mot`` (OpenSim's ``ground_force_r_vx`` ... ``ground_torque_l_z`` columns, which
   :func:`opensim_bridge.external_loads.find_plates` recognises and assigns by name) and
   ``external_loads.xml`` are written atomically.

:func:`estimate_and_run_id` then runs :func:`opensim_bridge.inverse_dynamics.run_id` with those
loads and reports the residual forces and moments at the model's root joint (pelvis).
"""
from __future__ import annotations

import dataclasses
import math
import os
import warnings
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .contact import SIDES, ContactResult, ContactSettings, detect_contacts, fill_supported_gaps
from .errors import InputError, ModelError
from .filters import butter_lowpass
from .osim_model import load_model
from .storage import Table, read_table, rotational_coordinates, write_table

GRAVITY = np.array([0.0, -9.80665, 0.0])
G = 9.80665
#: Order of the single Butterworth pass on the centre of mass (filtfilt doubles it).
FILTER_ORDER = 4
#: Winter (2009), Fig. 4.1: the hip joint (greater trochanter) at 0.530 of standing height.
HIP_HEIGHT_FRACTION = 0.530
#: The toe point sits this fraction of the heel-to-toes-origin length beyond the toes origin
#: (the metatarsophalangeal joint): about the tip of the toes.
TOE_TIP_FRACTION = 0.3
GRF_FILE = "grf.mot"
LOADS_FILE = "external_loads.xml"


# --------------------------------------------------------------------------- model and motion
@dataclasses.dataclass(frozen=True)
class FootPoint:
    body: str
    station: tuple[float, float, float]  # in the body's frame, m


@dataclasses.dataclass(frozen=True)
class Foot:
    side: str
    body: str          # the body the foot's ground force is applied to
    heel: FootPoint
    toe: FootPoint


def _body_names(model) -> list[str]:
    bodies = model.getBodySet()
    return [bodies.get(i).getName() for i in range(bodies.getSize())]


def foot_points(model, state) -> dict[str, Foot]:
    """Heel and toe points of each foot.

    With ``calcn_r/l`` and ``toes_r/l`` (gait2392/2354, Rajagopal, the built-in model): the heel
    point is the calcaneus origin, the toe point lies on the toes body
    :data:`TOE_TIP_FRACTION` of the heel-to-toes length beyond the toes origin, along the foot
    in the default pose. Without toes the toe point is the calcaneus origin too. Without
    calcn bodies: the lowest (in the default pose) leaf body of each side, by name, with one
    point at its origin.
    """
    import opensim as osim

    names = set(_body_names(model))
    bodies = model.getBodySet()
    model.realizePosition(state)
    feet = {}
    for s in SIDES:
        if f"calcn_{s}" in names:
            calcn = bodies.get(f"calcn_{s}")
            heel = FootPoint(calcn.getName(), (0.0, 0.0, 0.0))
            toe = heel
            if f"toes_{s}" in names:
                toes = bodies.get(f"toes_{s}")
                h = calcn.getPositionInGround(state).to_numpy()
                mtp = toes.getPositionInGround(state).to_numpy()
                along = mtp - h
                along[1] = 0.0  # along the floor, not into it
                tip = mtp + TOE_TIP_FRACTION * along
                local = model.getGround().findStationLocationInAnotherFrame(
                    state, osim.Vec3(*tip), toes).to_numpy()
                toe = FootPoint(toes.getName(), tuple(float(x) for x in local))
            feet[s] = Foot(s, calcn.getName(), heel, toe)
        else:
            body = _lowest_leaf(model, state, s)
            point = FootPoint(body, (0.0, 0.0, 0.0))
            feet[s] = Foot(s, body, point, point)
    return feet


def _lowest_leaf(model, state, side: str) -> str:
    from .external_loads import side_from_name

    joints = model.getJointSet()
    parents = {joints.get(i).getParentFrame().findBaseFrame().getName()
               for i in range(joints.getSize())}
    bodies = model.getBodySet()
    leaves = [bodies.get(i) for i in range(bodies.getSize())
              if bodies.get(i).getName() not in parents
              and side_from_name(bodies.get(i).getName()) == side]
    if not leaves:
        raise ModelError(f"cannot find the {'right' if side == 'r' else 'left'} foot: the model "
                         f"has no calcn_{side} body and no end body named for that side",
                         model.getInputFileName() or None)
    return min(leaves, key=lambda b: b.getPositionInGround(state).get(1)).getName()


def model_height(model, state=None) -> float:
    """Standing height (m) estimated from the model's default pose: the mean hip joint centre
    height above the lowest foot point, divided by :data:`HIP_HEIGHT_FRACTION` (Winter 2009).
    An approximation (3 % short on subject01: 1.751 m for 1.803 m); pass the real height
    where known."""
    state = state or model.initSystem()
    feet = foot_points(model, state)
    bodies = model.getBodySet()
    floor = min(bodies.get(p.body).findStationLocationInGround(state, _vec3(p.station)).get(1)
                for f in feet.values() for p in (f.heel, f.toe))
    joints = model.getJointSet()
    hips = []
    for i in range(joints.getSize()):
        j = joints.get(i)
        if j.getParentFrame().findBaseFrame().getName() == _root_body(model) and \
                j.getChildFrame().findBaseFrame().getName().startswith("femur"):
            hips.append(j.getChildFrame().getPositionInGround(state).get(1))
    if not hips:  # no femur: the leg's top is the foot's chain root below the pelvis
        raise ModelError("cannot estimate the subject's height: no femur bodies; pass height_m",
                         model.getInputFileName() or None)
    return float((np.mean(hips) - floor) / HIP_HEIGHT_FRACTION)


def _vec3(v):
    import opensim as osim

    return osim.Vec3(*[float(x) for x in v])


def _root_body(model) -> str:
    """The body jointed to ground (the pelvis in gait models)."""
    joints = model.getJointSet()
    for i in range(joints.getSize()):
        j = joints.get(i)
        if j.getParentFrame().findBaseFrame().getName() == "ground":
            return j.getChildFrame().findBaseFrame().getName()
    raise ModelError("the model has no joint to ground", model.getInputFileName() or None)


def root_coordinates(model) -> list[tuple[str, bool]]:
    """(name, is_rotational) of the coordinates of the joint between ground and the model."""
    import opensim as osim

    joints = model.getJointSet()
    for i in range(joints.getSize()):
        j = joints.get(i)
        if j.getParentFrame().findBaseFrame().getName() == "ground":
            return [(j.get_coordinates(k).getName(),
                     j.get_coordinates(k).getMotionType() == osim.Coordinate.Rotational)
                    for k in range(j.numCoordinates())]
    raise ModelError("the model has no joint to ground", model.getInputFileName() or None)


def _coordinate_name(label: str) -> str:
    if label.startswith("/"):
        parts = [p for p in label.split("/") if p]
        if len(parts) >= 2 and parts[-1] == "value":
            return parts[-2]
    return label


def _motion_table(motion) -> Table:
    if isinstance(motion, Table):
        return motion
    path = Path(motion).expanduser().resolve()
    if not path.is_file():
        raise InputError("motion file not found", path)
    return read_table(path)


def pose_trajectories(model, motion: Table, *, source=None):
    """Centre of mass (n, 3) and foot points (side -> (n, 2, 3), heel then toe) per frame.

    Coordinates are set without assembling constraints, except in a model with constraints
    (a coupled patella), where the pose is assembled at every frame so that dependent
    coordinates the motion lacks follow.
    """
    from .inverse_dynamics import check_motion

    state = model.initSystem()
    for note in check_motion(model, motion, source or motion.source or "motion"):
        warnings.warn(note, stacklevel=3)
    if motion.in_degrees is None:
        table = motion  # OpenSim reads such a file as radians; so do we (check_motion warned)
    else:
        table = motion.to_radians(rotational_coordinates(model) &
                                  {_coordinate_name(x) for x in motion.labels})
    coords = model.getCoordinateSet()
    by_name = {_coordinate_name(lab): j for j, lab in enumerate(table.labels)}
    pairs = [(coords.get(i), by_name[coords.get(i).getName()]) for i in range(coords.getSize())
             if coords.get(i).getName() in by_name and not coords.get(i).getLocked(state)]
    feet = foot_points(model, state)
    bodies = model.getBodySet()
    stations = {s: [(bodies.get(p.body), _vec3(p.station)) for p in (f.heel, f.toe)]
                for s, f in feet.items()}
    # Assembling every frame is slow (about 15 ms); it is only needed when a coordinate that a
    # constraint drives (the patella's knee_angle_beta) is missing from the motion.
    constrained = any(coords.get(i).isDependent(state) and
                      coords.get(i).getName() not in by_name for i in range(coords.getSize()))
    n = len(table)
    com = np.empty((n, 3))
    points = {s: np.empty((n, 2, 3)) for s in SIDES}
    data = table.data
    for k in range(n):
        for coord, j in pairs:
            coord.setValue(state, float(data[k, j]), False)
        if constrained:
            model.assemble(state)
        model.realizePosition(state)
        com[k] = model.calcMassCenterPosition(state).to_numpy()
        for s in SIDES:
            for j, (body, station) in enumerate(stations[s]):
                points[s][k, j] = body.findStationLocationInGround(state, station).to_numpy()
    return com, points, feet, float(model.getTotalMass(state))


# --------------------------------------------------------------------------- the estimate
@dataclasses.dataclass
class GRFEstimate:
    """Estimated ground reaction forces, one row per motion frame (N, m, Y up)."""

    time: np.ndarray
    mass: float
    total_force: np.ndarray            # (n, 3) m (a_com - g)
    forces: dict[str, np.ndarray]      # side -> (n, 3)
    cop: dict[str, np.ndarray]         # side -> (n, 3), on the floor; NaN-free (0 off contact)
    com: np.ndarray                    # (n, 3) filtered centre of mass
    points: dict[str, np.ndarray]      # side -> (n, 2, 3) heel and toe points (unfiltered)
    com_acceleration: np.ndarray       # (n, 3)
    contact: ContactResult
    feet: dict[str, Foot]
    floor_height: float
    lowpass_hz: float
    transition: str
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def events(self):
        return self.contact.events

    @property
    def body_weight(self) -> float:
        return self.mass * G

    @property
    def flight(self) -> np.ndarray:
        """(n,) True where neither foot is in contact."""
        return ~(self.contact.contact["r"] | self.contact.contact["l"])

    def unassigned_force(self) -> np.ndarray:
        """(n,) |total force| not given to any foot (frames without contact)."""
        return np.where(self.flight, np.linalg.norm(self.total_force, axis=1), 0.0)

    def to_table(self) -> Table:
        """The estimate in OpenSim's GRF column convention."""
        labels, cols = [], []
        for s in SIDES:
            torque = np.zeros_like(self.forces[s])  # free moment taken as zero
            for prefix, arr in ((f"ground_force_{s}_v", self.forces[s]),
                                (f"ground_force_{s}_p", self.cop[s]),
                                (f"ground_torque_{s}_", torque)):
                for a, axis in enumerate("xyz"):
                    labels.append(prefix + axis)
                    cols.append(arr[:, a])
        return Table(self.time, labels, np.stack(cols, axis=1), in_degrees=False,
                     name="estimated_grf")

    def write(self, out_dir) -> tuple[Path, Path]:
        """``grf.mot`` and ``external_loads.xml`` (datafile relative to it) into ``out_dir``."""
        import opensim as osim

        out_dir = Path(out_dir).expanduser().resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        grf = write_table(self.to_table(), out_dir / GRF_FILE)
        loads = osim.ExternalLoads()
        loads.setName("estimated_grf")
        loads.setDataFileName(GRF_FILE)
        for s in SIDES:
            ef = osim.ExternalForce()
            ef.setName("right" if s == "r" else "left")
            ef.set_applied_to_body(self.feet[s].body)
            ef.set_force_expressed_in_body("ground")
            ef.set_point_expressed_in_body("ground")
            ef.set_force_identifier(f"ground_force_{s}_v")
            ef.set_point_identifier(f"ground_force_{s}_p")
            ef.set_torque_identifier(f"ground_torque_{s}_")
            loads.cloneAndAppend(ef)
        xml = out_dir / LOADS_FILE
        with atomic_path(xml) as tmp:
            loads.printToXML(str(tmp))
        return grf, xml


def _transition_weight(tau):
    tau = np.clip(tau, 0.0, 1.0)
    return np.exp(-4.0 * tau ** 2) - tau * math.exp(-4.0)


def _double_support_runs(contact: ContactResult):
    both = contact.contact["r"] & contact.contact["l"]
    n = both.size
    from .contact import _runs

    out = []
    for a, b in _runs(both):
        before = None if a == 0 else ("r" if contact.contact["r"][a - 1] else
                                      "l" if contact.contact["l"][a - 1] else None)
        after = None if b == n - 1 else ("r" if contact.contact["r"][b + 1] else
                                         "l" if contact.contact["l"][b + 1] else None)
        # The trailing foot is the one on the ground before, the one that leaves after.
        trailing = before or ({"r": "l", "l": "r"}[after] if after else None)
        out.append((a, b, trailing))
    return out


def split_force(time, total, contact: ContactResult, transition: str = "ren2008"):
    """Split the total force between the feet (see the module docstring, step 3)."""
    if transition not in ("ren2008", "share"):
        raise ValueError(f"transition must be 'ren2008' or 'share', not {transition!r}")
    n = time.size
    cr, cl = contact.contact["r"], contact.contact["l"]
    forces = {"r": np.where((cr & ~cl)[:, None], total, 0.0),
              "l": np.where((cl & ~cr)[:, None], total, 0.0)}
    runs = _double_support_runs(contact)
    # Length of a double support from one frame before it to one frame after it (the feet
    # change between those frames), from the complete ones; cut ones borrow it.
    full = [time[b + 1] - time[a - 1] for a, b, _ in runs if a > 0 and b < n - 1]
    typical = float(np.median(full)) if full else None
    for a, b, trailing in runs:
        idx = np.arange(a, b + 1)
        if trailing is None:  # both feet down throughout (standing): half each
            for s in SIDES:
                forces[s][idx] = 0.5 * total[idx]
            continue
        lead = "l" if trailing == "r" else "r"
        if a > 0:
            t0 = time[a - 1]
            length = time[b + 1] - t0 if b < n - 1 else max(typical or 0.0, time[b] - t0)
        else:
            t1 = time[b + 1] if b < n - 1 else time[b]
            length = max(typical or 0.0, t1 - time[0])
            t0 = t1 - length
        tau = (time[idx] - t0) / length if length > 0 else np.ones(idx.size)
        w = _transition_weight(tau)
        if transition == "ren2008" and a > 0:
            trail = total[a - 1][None, :] * w[:, None]
        else:
            trail = total[idx] * w[:, None]
        lead_f = total[idx] - trail
        # A foot cannot pull on the floor: move a negative vertical share to the other foot.
        neg = lead_f[:, 1] < 0
        trail[neg, 1] = total[idx][neg, 1]
        lead_f[neg, 1] = 0.0
        forces[trailing][idx] = trail
        forces[lead][idx] = lead_f
    return forces


def centre_of_pressure(time, points, contact: ContactResult, floor: float,
                       lowpass_hz: float = 10.0) -> dict[str, np.ndarray]:
    """CoP per foot along heel->toe on the floor (module docstring, step 4); 0 off contact."""
    from .contact import _runs

    cop = {}
    for s in SIDES:
        out = np.zeros((time.size, 3))
        heel_on, toe_on = contact.point_contact[s][:, 0], contact.point_contact[s][:, 1]
        for a, b in _runs(contact.contact[s]):
            idx = np.arange(a, b + 1)
            span = time[b] - time[a]
            frac = (time[idx] - time[a]) / span if span > 0 else np.zeros(idx.size)
            p = np.where(heel_on[idx] & ~toe_on[idx], 0.0,
                         np.where(toe_on[idx] & ~heel_on[idx], 1.0, frac))
            if idx.size > 3 * (2 + 1) + 1 and lowpass_hz < 0.5 / np.median(np.diff(time)):
                p = np.clip(butter_lowpass(p, time[idx], lowpass_hz, 2), 0.0, 1.0)
            heel, toe = points[s][idx, 0], points[s][idx, 1]
            out[idx] = heel + p[:, None] * (toe - heel)
            out[idx, 1] = floor
        cop[s] = out
    return cop


def estimate_grf(model, motion, *, lowpass_hz: float = 6.0,
                 contact: ContactSettings | None = None,
                 transition: str = "ren2008") -> GRFEstimate:
    """Estimate both feet's ground reaction forces from a motion (see the module docstring).

    ``model``: a scaled .osim path (or an ``osim.Model``); ``motion``: an IK .mot path or a
    :class:`~opensim_bridge.storage.Table` of the model's coordinates. ``lowpass_hz``: cut-off
    of the centre-of-mass filter; ``contact``: contact detection thresholds; ``transition``:
    the double-support law, ``"ren2008"`` or ``"share"``.
    """
    contact = contact or ContactSettings()
    osim_model = load_model(model) if isinstance(model, (str, os.PathLike)) else model
    table = _motion_table(motion)
    src = table.source or "motion"
    if transition not in ("ren2008", "share"):
        raise ValueError(f"transition must be 'ren2008' or 'share', not {transition!r}")
    padlen = 3 * (FILTER_ORDER + 1)
    if len(table) <= padlen:
        raise InputError(f"the trial is too short to estimate forces: {len(table)} frames; the "
                         f"centre-of-mass filter needs more than {padlen}", src)
    if not (isinstance(lowpass_hz, (int, float)) and math.isfinite(lowpass_hz) and lowpass_hz > 0):
        raise InputError(f"low-pass cut-off must be a positive frequency, not {lowpass_hz!r}",
                         src)
    if lowpass_hz >= 0.5 * table.rate:
        raise InputError(f"low-pass cut-off {lowpass_hz:g} Hz is at or above the Nyquist "
                         f"frequency of the motion ({0.5 * table.rate:g} Hz)", src)
    com, points, feet, mass = pose_trajectories(osim_model, table, source=src)
    t = table.time
    com_f = butter_lowpass(com, t, lowpass_hz, FILTER_ORDER, axis=0)
    acc = np.gradient(np.gradient(com_f, t, axis=0), t, axis=0)
    total = mass * (acc - GRAVITY)

    result = detect_contacts(t, points, com, contact, source=src)
    notes = []
    result, filled = fill_supported_gaps(result, total[:, 1], mass * G, contact, points)
    if filled:
        notes.append(f"{src}: {filled} frame(s) without a detected foot contact carry at least "
                     f"{100 * contact.support_fraction:.0f}% body weight: given to the lower "
                     "foot (support fallback; a foot too jittery to count as still)")
    if not any(result.contact[s].any() for s in SIDES):
        raise InputError("no foot contact detected in the motion (feet never low and slow "
                         "enough; see ContactSettings): cannot place the ground forces", src)
    forces = split_force(t, total, result, transition)
    floor = float(min(points[s][:, :, 1].min() for s in SIDES))
    cop = centre_of_pressure(t, points, result, floor, contact.lowpass_hz)
    est = GRFEstimate(time=t.copy(), mass=mass, total_force=total, forces=forces, cop=cop,
                      com=com_f, points=points, com_acceleration=acc, contact=result, feet=feet,
                      floor_height=floor, lowpass_hz=float(lowpass_hz), transition=transition,
                      warnings=notes)
    # In true flight m (a - g) is about zero; half the body weight or more, typically, over
    # the frames without contact means a contact was missed. The median ignores the filter's
    # edge frames and its ringing next to short, hard contacts.
    lost = est.unassigned_force()[est.flight]
    if lost.size and np.median(lost) > 0.5 * est.body_weight:
        notes.append(f"{src}: the {lost.size} frame(s) without foot contact carry a median "
                     f"{np.median(lost):.0f} N ({100 * np.median(lost) / est.body_weight:.0f}% "
                     "body weight) of estimated external force, left unapplied: a contact may "
                     "be missed (see ContactSettings), or the low-pass cut-off is too low for "
                     "short contacts (running: try 12-20 Hz)")
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return est


# --------------------------------------------------------------------------- with ID
@dataclasses.dataclass(frozen=True)
class Residual:
    """RMS and peak (largest absolute value) of one root-joint generalized force."""

    column: str
    unit: str            # "N" or "N m"
    rms: float
    peak: float
    rms_pct: float       # % body weight (forces) or % body weight x height (moments)
    peak_pct: float


@dataclasses.dataclass
class EstimatedID:
    """What :func:`estimate_and_run_id` produced."""

    estimate: GRFEstimate
    id: object                      # inverse_dynamics.IDResult
    grf_mot: Path
    external_loads_xml: Path
    residuals: list[Residual]
    height_m: float
    height_estimated: bool


def root_residuals(id_table: Table, model, mass: float, height_m: float) -> list[Residual]:
    """RMS and peak of the root joint's (pelvis) forces (N, %BW) and moments (N m, %BW*h)."""
    bw = mass * G
    out = []
    for name, rotational in root_coordinates(model):
        col = f"{name}_{'moment' if rotational else 'force'}"
        if col not in id_table.labels:
            continue
        v = id_table[col]
        ref = bw * height_m if rotational else bw
        rms, peak = float(np.sqrt(np.mean(v ** 2))), float(np.max(np.abs(v)))
        out.append(Residual(col, "N m" if rotational else "N", rms, peak,
                            100 * rms / ref, 100 * peak / ref))
    return out


def estimate_and_run_id(model, motion, out_dir, *, lowpass_hz: float = 6.0,
                        id_lowpass_hz: float | None = 6.0,
                        contact: ContactSettings | None = None,
                        transition: str = "ren2008", height_m: float | None = None) -> EstimatedID:
    """Estimate GRF, write ``grf.mot`` + ``external_loads.xml`` into ``out_dir`` and run
    OpenSim's inverse dynamics with them (``id.sto``, ``id_setup.xml``).

    A motion given as a Table is first written to ``out_dir/ik.mot``. ``height_m`` scales the
    moment residuals (%BW x height); without it the height is estimated with
    :func:`model_height`.
    """
    from .inverse_dynamics import run_id

    model_path = Path(model).expanduser().resolve()
    osim_model = load_model(model_path)
    out_dir = Path(out_dir).expanduser().resolve()
    if isinstance(motion, Table):
        out_dir.mkdir(parents=True, exist_ok=True)
        motion_path = write_table(motion, out_dir / "ik.mot")
        table = motion
    else:
        motion_path = Path(motion).expanduser().resolve()
        table = _motion_table(motion_path)
    est = estimate_grf(osim_model, table, lowpass_hz=lowpass_hz, contact=contact,
                       transition=transition)
    grf, xml = est.write(out_dir)
    result = run_id(model_path, motion_path, out_dir, loads=xml, grf=grf,
                    lowpass_hz=id_lowpass_hz)
    estimated = height_m is None
    if estimated:
        height_m = model_height(osim_model)
    elif not (math.isfinite(height_m) and height_m > 0):
        raise InputError(f"height must be a positive number of metres, not {height_m!r}",
                         motion_path)
    residuals = root_residuals(result.table, osim_model, est.mass, height_m)
    return EstimatedID(estimate=est, id=result, grf_mot=grf, external_loads_xml=xml,
                       residuals=residuals, height_m=float(height_m),
                       height_estimated=estimated)


# --------------------------------------------------------------------------- comparison
def measured_foot_forces(loads_xml, time, *, grf=None) -> dict[str, np.ndarray]:
    """Measured force per foot (side -> (n, 3), N) at ``time``: the plates of an
    ExternalLoads XML summed by the foot (side of the applied body) they load."""
    from .external_loads import load_external_loads, read_grf, side_from_name

    loads, grf_path = load_external_loads(loads_xml, grf=grf)
    table = read_grf(grf_path)
    time = np.asarray(time, dtype=float)
    out = {s: np.zeros((time.size, 3)) for s in SIDES}
    for i in range(loads.getSize()):
        ef = loads.get(i)
        side = side_from_name(ef.getAppliedToBodyName())
        if side is None or not ef.get_appliesForce():
            continue
        ident = ef.getForceIdentifier().strip()
        for a, axis in enumerate("xyz"):
            out[side][:, a] += np.interp(time, table.time, table[ident + axis])
    return out


def grf_rmse(est: GRFEstimate, measured: dict[str, np.ndarray], mask=None) -> dict[str, np.ndarray]:
    """RMSE (% body weight) of the estimate against measured forces per foot (``"r"``,
    ``"l"``) and for their sum (``"total"``): side -> (3,) along X, Y, Z, over the frames of
    ``mask`` (all by default)."""
    mask = np.ones(est.time.size, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    pairs = {s: (est.forces[s], measured[s]) for s in SIDES}
    pairs["total"] = (est.total_force, measured["r"] + measured["l"])
    return {k: 100 * np.sqrt(np.mean((e[mask] - m[mask]) ** 2, axis=0)) / est.body_weight
            for k, (e, m) in pairs.items()}


def plate_sides(loads_xml) -> dict[str, str]:
    """Force identifier -> "r"/"l" for each force of an ExternalLoads XML."""
    from .external_loads import load_external_loads, side_from_name

    loads, _ = load_external_loads(loads_xml)
    out = {}
    for i in range(loads.getSize()):
        ef = loads.get(i)
        side = side_from_name(ef.getAppliedToBodyName())
        if side is not None:
            out[ef.getForceIdentifier().strip()] = side
    return out
