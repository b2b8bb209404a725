"""Force platforms of a C3D file (FORCE_PLATFORM group, types 1-4), in the lab frame.

Sign convention: :attr:`ForcePlate.force` and :attr:`ForcePlate.free_moment` are the ground
REACTION on the subject (what OpenSim's ExternalLoads apply: upward while the subject stands on a
floor plate), the same vectors as ezc3d's ``force`` and ``Tz`` (checked in the tests on
sample_10, and against the GRF file made from nimblephysics' JA1 trial).
:attr:`ForcePlate.moment` is the moment about the centre of the plate's surface (ezc3d's
``moment``). Units are N, N·m and metres, at the analog rate.

How the plate's outputs become lab-frame vectors:

* the plate frame comes from FORCE_PLATFORM:CORNERS (corner 1 in the plate's +x+y quadrant,
  numbered around): x along corner2->corner1, y along corner4->corner1, z = x X y (usually
  pointing down into the floor); the surface centre is the corners' mean;
* FORCE_PLATFORM:ORIGIN is the vector between the transducer origin and the surface centre in
  the plate frame. Files disagree on its direction; as BTK and ezc3d do, it is taken as
  centre-minus-transducer with a non-positive z (the surface lies above the transducer), i.e.
  negated when its z is positive (types 2 and 4);
* type 1: channels Fx Fy Fz, CoP x y (plate frame, from the centre) and Tz; type 2: Fx Fy Fz
  Mx My Mz about the transducer origin; type 4: the same after FORCE_PLATFORM:CAL_MATRIX;
  type 3 (Kistler, 8 channels fx12 fx34 fy14 fy23 fz1 fz2 fz3 fz4): moments from the sensor
  offsets ORIGIN = (a, b, az0), az0 being the (negative) height of the sensors below the surface;
* CoP on the surface: x = -My/Fz, y = Mx/Fz with moments about the surface centre; NaN where
  the vertical force is below the threshold (20 N by default), where it means nothing;
* FORCE_PLATFORM:ZERO = (first, last) frames, when given and not (0, 0), is a baseline: each
  channel's mean over those frames is subtracted, unless the plate is loaded then (|F| above
  the threshold, e.g. a standing trial), in which case the baseline is skipped with a warning.
"""
from __future__ import annotations

import dataclasses

import numpy as np

_MOMENT_UNITS = {"nmm": 1e-3, "n.mm": 1e-3, "n*mm": 1e-3, "n mm": 1e-3, "nm": 1.0, "n.m": 1.0,
                 "n*m": 1.0, "n m": 1.0, "": 1e-3}
_FORCE_UNITS = {"n": 1.0, "": 1.0, "kn": 1e3}
_N_CHANNELS = {1: 6, 2: 6, 3: 8, 4: 6}


@dataclasses.dataclass
class ForcePlate:
    index: int                    # 1-based, as in FORCE_PLATFORM:USED order
    type: int
    corners: np.ndarray           # (4, 3) lab frame, m
    origin: np.ndarray            # (3,) FORCE_PLATFORM:ORIGIN as written, m
    centre: np.ndarray            # (3,) surface centre, lab frame, m
    rotation: np.ndarray          # (3, 3) columns = plate axes in the lab frame
    channels: tuple[int, ...]     # 0-based analog channel indices
    time: np.ndarray              # (n,) analog time, s
    force: np.ndarray             # (n, 3) reaction force on the subject, lab frame, N
    moment: np.ndarray            # (n, 3) reaction moment about the surface centre, N·m
    cop: np.ndarray               # (n, 3) centre of pressure, lab frame, m (NaN when unloaded)
    free_moment: np.ndarray       # (n, 3) reaction free moment (about the plate normal), N·m
    threshold: float

    @property
    def normal(self) -> np.ndarray:
        return self.rotation[:, 2]

    def extent(self) -> tuple[np.ndarray, np.ndarray]:
        return self.corners.min(axis=0), self.corners.max(axis=0)


def _scale(unit: str, table: dict, default: float) -> float:
    return table.get(unit.strip().lower().replace("·", "."), default)


def read_force_plates(params, analog, length_factor: float, point_rate: float, first: int,
                      notes: list[str], src: str, *, force_threshold: float = 20.0,
                      zero_baseline: bool = True) -> list[ForcePlate]:
    used = int(params.number("FORCE_PLATFORM:USED", 0) or 0)
    if used <= 0:
        return []
    if analog is None:
        notes.append(f"FORCE_PLATFORM:USED is {used} but the file has no analog data; "
                     f"force plates ignored")
        return []
    types = params.numbers("FORCE_PLATFORM:TYPE")
    corners = params.array("FORCE_PLATFORM:CORNERS", (4, 3))
    origins = params.array("FORCE_PLATFORM:ORIGIN", (3,))
    chan_p = params.get("FORCE_PLATFORM:CHANNEL")
    if types is None or corners is None or chan_p is None:
        notes.append("FORCE_PLATFORM group lacks TYPE, CORNERS or CHANNEL; force plates ignored")
        return []
    rows = chan_p.dimensions[0] if chan_p.dimensions else 6
    chans = params.array("FORCE_PLATFORM:CHANNEL", (max(int(rows), 1),))
    cal_p = params.get("FORCE_PLATFORM:CAL_MATRIX")
    zero = params.numbers("FORCE_PLATFORM:ZERO")
    plates = []
    for k in range(used):
        if k >= len(types) or k >= len(corners) or chans is None or k >= len(chans):
            notes.append(f"force plate {k + 1}: parameters missing; ignored")
            continue
        ptype = int(types[k])
        if ptype not in _N_CHANNELS:
            notes.append(f"force plate {k + 1}: type {ptype} is not supported (1-4); ignored")
            continue
        need = _N_CHANNELS[ptype]
        ch = [int(c) - 1 for c in chans[k][:need]]
        if len(ch) < need or any(c < 0 or c >= analog.data.shape[1] for c in ch):
            notes.append(f"force plate {k + 1}: type {ptype} needs {need} valid analog "
                         f"channels, FORCE_PLATFORM:CHANNEL gives {[c + 1 for c in ch]}; ignored")
            continue
        raw = analog.data[:, ch].copy()
        cal = None
        if ptype == 4:
            cal = _cal_matrix(params, cal_p, k)
            if cal is None:
                notes.append(f"force plate {k + 1}: type 4 without a 6x6 CAL_MATRIX; ignored")
                continue
        origin = origins[k] if origins is not None and k < len(origins) else np.zeros(3)
        plate = _compute(k + 1, ptype, raw, [analog.units[c] for c in ch], corners[k], origin,
                         cal, length_factor, analog.time, force_threshold)
        if plate is None:
            notes.append(f"force plate {k + 1}: its corners do not span a plane; ignored")
            continue
        if zero_baseline and zero is not None and zero.size >= 2:
            z0, z1 = int(zero[0]), int(zero[1])
            if z0 >= 1 and z1 >= z0:
                spf = analog.samples_per_frame
                a, b = (z0 - 1) * spf, min(z1 * spf, raw.shape[0])
                if b - a >= 1:
                    loaded = np.linalg.norm(plate.force[a:b], axis=1).mean()
                    if loaded > force_threshold:
                        notes.append(f"force plate {k + 1}: loaded ({loaded:.0f} N) during the "
                                     f"FORCE_PLATFORM:ZERO frames {z0}-{z1}; no baseline "
                                     f"subtracted")
                    else:
                        raw = raw - raw[a:b].mean(axis=0)
                        plate = _compute(k + 1, ptype, raw, [analog.units[c] for c in ch],
                                         corners[k], origin, cal, length_factor, analog.time,
                                         force_threshold)
        plates.append(dataclasses.replace(plate, channels=tuple(ch)))
    return plates


def _cal_matrix(params, cal_p, k: int) -> np.ndarray | None:
    if cal_p is None:
        return None
    arr = params.array("FORCE_PLATFORM:CAL_MATRIX", (6, 6))
    if arr is None or k >= len(arr):
        return None
    # Stored with the first index fastest: element (row i, column j) at i + 6 j, i.e. the C
    # reshape gives the transpose.
    return arr[k].T


def _compute(index, ptype, raw, units, corners, origin, cal, length_factor, time, threshold):
    corners = np.asarray(corners, dtype=float) * length_factor
    x = corners[0] - corners[1]
    y = corners[0] - corners[3]
    if np.linalg.norm(x) == 0 or np.linalg.norm(y) == 0:
        return None
    x = x / np.linalg.norm(x)
    y = y / np.linalg.norm(y)
    z = np.cross(x, y)
    if np.linalg.norm(z) < 1e-9:
        return None
    z /= np.linalg.norm(z)
    y = np.cross(z, x)  # re-orthogonalise: measured corners are rarely a perfect rectangle
    rot = np.column_stack([x, y, z])
    centre = corners.mean(axis=0)
    origin_m = np.asarray(origin, dtype=float) * length_factor

    fscale = [_scale(u, _FORCE_UNITS, 1.0) for u in units]
    if ptype == 3:
        f8 = raw * np.array(fscale)
        fx12, fx34, fy14, fy23, fz1, fz2, fz3, fz4 = f8.T
        a, b, az0 = np.abs(origin_m[0]), np.abs(origin_m[1]), origin_m[2]
        if az0 > 0:
            az0 = -az0
        f = np.column_stack([fx12 + fx34, fy14 + fy23, fz1 + fz2 + fz3 + fz4])
        m = np.column_stack([b * (fz1 + fz2 - fz3 - fz4), a * (-fz1 + fz2 + fz3 - fz4),
                             b * (-fx12 + fx34) + a * (fy14 - fy23)])
        # moments about the sensor plane's centre, moved to the surface centre az0 above it
        mc = m + np.cross(np.array([0.0, 0.0, -az0]), f)
    elif ptype == 1:
        f = raw[:, :3] * np.array(fscale[:3])
        px, py = raw[:, 3] * length_factor, raw[:, 4] * length_factor
        tz = raw[:, 5] * _scale(units[5], _MOMENT_UNITS, 1e-3)
        r = np.column_stack([px, py, np.zeros_like(px)])
        mc = np.cross(r, f)
        mc[:, 2] += tz
    else:
        if ptype == 4:
            raw = raw @ cal.T
        f = raw[:, :3] * np.array(fscale[:3])
        m = raw[:, 3:6] * np.array([_scale(u, _MOMENT_UNITS, 1e-3) for u in units[3:6]])
        d = origin_m if origin_m[2] <= 0 else -origin_m  # centre - transducer, plate frame
        mc = m - np.cross(d, f)
    fz = f[:, 2]
    loaded = np.abs(fz) > threshold
    with np.errstate(all="ignore"):
        cx = np.where(loaded, -mc[:, 1] / fz, np.nan)
        cy = np.where(loaded, mc[:, 0] / fz, np.nan)
    tz = mc[:, 2] - (cx * f[:, 1] - cy * f[:, 0])
    cop_local = np.column_stack([cx, cy, np.zeros_like(cx)])
    cop = centre + cop_local @ rot.T
    free = np.outer(tz, z)
    # The plate's channels, rotated by the corner frame, give the force on the subject
    # (upward while standing on a floor plate), the same vectors ezc3d reports.
    return ForcePlate(index=index, type=ptype, corners=corners, origin=origin_m, centre=centre,
                      rotation=rot, channels=(), time=time, force=f @ rot.T,
                      moment=mc @ rot.T, cop=cop, free_moment=free, threshold=threshold)
