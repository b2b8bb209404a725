"""A C3D trial as OpenSim inputs: ``markers.trc``, ``grf.mot``, ``grf_external_loads.xml`` and
``axes.json`` (the axis mapping and how each plate was assigned).

* Axes: the lab frame is mapped to OpenSim's (X forward, Y up, Z right) by an
  :class:`~opensim_bridge.axes.AxisMapping` (``"auto"`` detects it from the markers, see
  :func:`opensim_bridge.axes.auto_mapping`); markers, forces, points and torques all get it.
* ``grf.mot`` follows the column names of OpenSim's gait examples (e.g. nimblephysics'
  JA1Gait35_grf.mot): per plate i, ``ground_force_{i}_vx/vy/vz`` (force applied TO the subject,
  N), ``ground_force_{i}_px/py/pz`` (centre of pressure, m) and ``ground_force_{i}_mx/my/mz``
  (the free moment about the plate's normal at the CoP, N·m), at the analog rate, in seconds as
  in the C3D file. While a plate's vertical force is below the threshold (20 N by default) its
  force, point and torque are written as 0, so that noise on an unloaded plate and a
  meaningless CoP never reach inverse dynamics. ``lowpass_grf`` (Hz) filters force, free moment
  and CoP (zero-lag Butterworth, 4th order) before that.
* ExternalLoads: each loaded plate goes to ``calcn_r`` or ``calcn_l``, the side whose foot
  markers (heel, toe, metatarsal, ankle markers by common names: RHEE, R.Heel, RCAL, RTOE,
  RMT5, RANK, ...) are nearer the CoP, horizontally, over the plate's stance frames (majority
  vote). Plates never loaded are left out; with no foot markers a plate's body is
  ``calcn_r``/``calcn_l`` alternately and a warning says to check it.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import re
import warnings
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .axes import AxisMapping, apply_axes, auto_mapping, parse_axes
from .c3d_read import C3DData, C3DError, read_c3d
from .storage import Table, write_table

log = logging.getLogger(__name__)

_FOOT = re.compile(r"(HEE|HEEL|CAL|TOE|MT[1-5]?|MET|P1MT|P5MT|ANK|MAL|FOOT)", re.IGNORECASE)
_SIDE = re.compile(r"^(?:.*:)?(?P<side>[LR])(?:[._ ]|(?=[A-Z]))", re.IGNORECASE)


@dataclasses.dataclass
class OpenSimFiles:
    trc: Path | None
    grf: Path | None
    external_loads: Path | None
    axes_json: Path
    mapping: AxisMapping
    assignments: dict[int, str | None]   # plate index -> body (None: never loaded)
    data: C3DData


def _foot_markers(names) -> dict[str, list[int]]:
    feet = {"r": [], "l": []}
    for i, name in enumerate(names):
        bare = name.split(":")[-1]
        m = _SIDE.match(bare)
        if m and _FOOT.search(bare[m.end():] or bare):
            feet[m.group("side").lower()].append(i)
    return feet


def grf_table(data: C3DData, mapping: AxisMapping, *, lowpass_hz: float | None = None) -> Table:
    """The plates of ``data`` as OpenSim GRF columns in OpenSim's frame (module docstring)."""
    from .filters import butter_lowpass

    if not data.force_plates:
        raise C3DError("the file has no usable force plate", data.path)
    r = mapping.matrix
    time = data.force_plates[0].time
    labels, cols = [], []
    for plate in data.force_plates:
        f, cop, tq = plate.force.copy(), plate.cop.copy(), plate.free_moment.copy()
        if lowpass_hz:
            try:
                f = butter_lowpass(f, time, lowpass_hz)
                tq = butter_lowpass(tq, time, lowpass_hz)
                cop = butter_lowpass(cop, time, lowpass_hz)
            except ValueError as exc:
                raise C3DError(f"--lowpass-grf: {exc}", data.path) from exc
        vertical = np.abs(f @ plate.normal)
        off = ~(vertical > plate.threshold) | np.isnan(cop).any(axis=1)
        f[off], cop[off], tq[off] = 0.0, 0.0, 0.0
        i = plate.index
        for stem, values in (("v", f), ("p", cop), ("m", tq)):
            labels += [f"ground_force_{i}_{stem}{a}" for a in "xyz"]
            cols.append(values @ r.T)
    return Table(time, labels, np.concatenate(cols, axis=1), name="grf", source=data.path)


def assign_plates(data: C3DData, mapping: AxisMapping) -> tuple[dict[int, str | None], list[str]]:
    """Plate index -> ``calcn_r``/``calcn_l`` (None when never loaded), and notes."""
    notes = []
    out: dict[int, str | None] = {}
    feet = _foot_markers(data.markers.names) if data.markers is not None else {"r": [], "l": []}
    have_feet = bool(feet["r"] and feet["l"])
    if not have_feet:
        notes.append("no left and right foot markers (heel/toe/metatarsal/ankle) found; plates "
                     "assigned to calcn_r and calcn_l alternately: check the external loads")
    alternate = 0
    for plate in data.force_plates:
        stance = np.abs(plate.force @ plate.normal) > plate.threshold
        stance &= ~np.isnan(plate.cop).any(axis=1)
        if not stance.any():
            out[plate.index] = None
            continue
        if not have_feet:
            out[plate.index] = ("calcn_r", "calcn_l")[alternate % 2]
            alternate += 1
            continue
        # markers at the analog times of stance (nearest point frame)
        t = plate.time[stance]
        k = np.clip(np.searchsorted(data.point_time, t), 0, data.n_frames - 1)
        cop = plate.cop[stance]
        # horizontal distance in the plate's surface plane
        n = plate.normal
        votes = []
        dist = {}
        for side in ("r", "l"):
            m = data.markers.data[k][:, feet[side]]          # (s, k_side, 3)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                centre = np.nanmean(m, axis=1)
            d = centre - cop
            d -= np.outer(d @ n, n)
            dist[side] = np.linalg.norm(d, axis=1)
        valid = np.isfinite(dist["r"]) & np.isfinite(dist["l"])
        if not valid.any():
            out[plate.index] = None
            notes.append(f"plate {plate.index}: foot markers missing during its stance; left out")
            continue
        votes = dist["r"][valid] < dist["l"][valid]
        right = float(votes.mean())
        side = "r" if right >= 0.5 else "l"
        agree = right if side == "r" else 1 - right
        if agree < 0.8:
            notes.append(f"plate {plate.index}: both feet load it ({100 * (1 - agree):.0f}% of "
                         f"stance nearer the other foot); all applied to calcn_{side}")
        out[plate.index] = f"calcn_{side}"
    return out, notes


def c3d_to_opensim(path, out_dir, *, axes: str | AxisMapping = "auto",
                   force_threshold: float = 20.0, lowpass_grf: float | None = None,
                   zero_baseline: bool = True) -> OpenSimFiles:
    """Write the OpenSim files of a C3D trial into ``out_dir`` (see the module docstring)."""
    import opensim as osim

    data = read_c3d(path, force_threshold=force_threshold, zero_baseline=zero_baseline)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(axes, str) and axes.strip().lower() == "auto":
        if data.markers is None:
            raise C3DError("no markers to detect the axes from; give them, e.g. --axes x,z,-y",
                           data.path)
        mapping = auto_mapping(data.markers)
        how = "detected from the markers (opensim_bridge.axes.auto_mapping)"
    else:
        mapping = parse_axes(axes, data.path)
        how = "given"
    notes = list(data.warnings)
    trc = grf = loads_path = None
    if data.markers is not None:
        from .trc import write_trc
        trc = write_trc(apply_axes(data.markers, mapping), out / "markers.trc")
    assignments: dict[int, str | None] = {}
    if data.force_plates:
        table = grf_table(data, mapping, lowpass_hz=lowpass_grf)
        grf = write_table(table, out / "grf.mot")
        assignments, more = assign_plates(data, mapping)
        notes += more
        loads = osim.ExternalLoads()
        loads.setName(Path(path).stem)
        loads.setDataFileName(grf.name)  # relative: OpenSim resolves it beside the XML
        for plate in data.force_plates:
            body = assignments.get(plate.index)
            if body is None:
                continue
            ef = osim.ExternalForce()
            ef.setName(f"plate{plate.index}_{'right' if body.endswith('_r') else 'left'}")
            ef.set_applied_to_body(body)
            ef.set_force_expressed_in_body("ground")
            ef.set_point_expressed_in_body("ground")
            ef.set_force_identifier(f"ground_force_{plate.index}_v")
            ef.set_point_identifier(f"ground_force_{plate.index}_p")
            ef.set_torque_identifier(f"ground_force_{plate.index}_m")
            loads.cloneAndAppend(ef)
        if loads.getSize():
            from .external_loads import write_external_loads
            loads_path = write_external_loads(loads, out / "grf_external_loads.xml")
        else:
            notes.append("no force plate is loaded above the threshold; no external loads file")
    info = {
        "source": str(Path(path).resolve()),
        "axes": str(mapping),
        "axes_meaning": "OpenSim X, Y, Z = the listed signed lab axes (e.g. 'x,z,-y': OpenSim "
                        "X = lab x, Y = lab z, Z = -lab y)",
        "axes_how": how,
        "rotation_lab_to_opensim": mapping.matrix.tolist(),
        "force_threshold_N": force_threshold,
        "lowpass_grf_hz": lowpass_grf,
        "grf_convention": "force applied to the subject; point = centre of pressure; torque = "
                          "free moment about the plate normal at the CoP; 0 while unloaded",
        "plates": {str(k): v for k, v in assignments.items()},
        "time": "seconds as in the C3D file: (first_frame - 1 + i) / POINT:RATE",
        "notes": notes,
    }
    axes_json = out / "axes.json"
    with atomic_write(axes_json) as fh:
        json.dump(info, fh, indent=2)
    return OpenSimFiles(trc, grf, loads_path, axes_json, mapping, assignments, data)
