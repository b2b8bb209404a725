"""Scaling an OpenSim model to a subject from video keypoints, height and mass.

Video keypoints are noisy and their confidence varies over a clip, so each segment length is
measured only over the frames where *both* its end keypoints are confident: the
``n_best_frames`` frames with the highest ``min(confidence_a, confidence_b)`` (those at least
``min_confidence`` when there are any), and the median distance over them (robust to the
occasional wrong detection among them). Segments (keypoint pairs, each compared with the same
pair of keypoint markers on the model at its default pose):

==============  =========================  ==================================================
segment         keypoints                  bodies scaled (by the ratio measured / model)
==============  =========================  ==================================================
thigh           RHip-RKnee, LHip-LKnee     femur (+ patella)
shank           RKnee-RAnkle, ...          tibia
foot            RHeel-RBigToe, ...         talus, calcn, toes
upper_arm       RShoulder-RElbow, ...      humerus
forearm         RElbow-RWrist, ...         ulna, radius, hand
pelvis_width    RHip-LHip                  pelvis
trunk           Hip-Neck                   torso along its y (long) axis
shoulder_width  RShoulder-LShoulder        torso along its z (medio-lateral) axis
==============  =========================  ==================================================

The torso's x (antero-posterior) factor is the mean of its two. With ``average_sides`` (the
default) left and right ratios of a segment are averaged, so a depth error on one side of a
monocular reconstruction does not make the limbs unequal. Every body no segment measures (the
head, a body the map cannot reach) scales by ``height`` over the model's stature (top of the
head keypoint marker to the lowest foot keypoint marker), or, when the map has no head marker,
by the median of the measured ratios. Masses are scaled to ``mass`` keeping the model's mass
distribution. Bodies are found by their names (:func:`keypoint_maps.find_body_roles`).

The model's keypoint markers (its keypoint map applied) are scaled with their bodies, so
``model_scaled.osim`` is ready for IK on the keypoints. OpenSim's ScaleTool does the scaling
(manual scale factors); ``scale_setup.xml`` reruns it on ``model_generic_keypoints.osim``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .errors import InputError
from .keypoint_maps import (
    KeypointMap,
    apply_keypoint_map,
    find_body_roles,
    keypoint_marker_positions,
    pick_keypoint_map,
)
from .osim_model import load_model
from .scaling import ScaleResult, _positive, scale_with_factors
from .timeseries import KeypointSeries

GENERIC_FILE = "model_generic_keypoints.osim"
REPORT_FILE = "keypoint_scaling.json"

#: name, end keypoints (R side; L mirrors), whether it is sided, body roles it scales.
SEGMENTS: tuple[tuple[str, tuple[str, str], bool, tuple[str, ...]], ...] = (
    ("thigh", ("Hip", "Knee"), True, ("femur", "patella")),
    ("shank", ("Knee", "Ankle"), True, ("tibia",)),
    ("foot", ("Heel", "BigToe"), True, ("talus", "calcn", "toes")),
    ("upper_arm", ("Shoulder", "Elbow"), True, ("humerus",)),
    ("forearm", ("Elbow", "Wrist"), True, ("ulna", "radius", "hand")),
    ("pelvis_width", ("RHip", "LHip"), False, ("pelvis",)),
    ("trunk", ("Hip", "Neck"), False, ("torso",)),
    ("shoulder_width", ("RShoulder", "LShoulder"), False, ("torso",)),
)


@dataclasses.dataclass
class SegmentMeasurement:
    name: str                    # e.g. "thigh_r", "pelvis_width"
    keypoints: tuple[str, str]
    measured: float              # m, median over the frames used
    model: float                 # m, between the generic model's keypoint markers
    n_frames: int                # frames used
    spread: float                # m, interquartile range over those frames
    min_confidence: float        # lowest pair confidence among the frames used

    @property
    def ratio(self) -> float:
        return self.measured / self.model


@dataclasses.dataclass
class KeypointScaleResult:
    scale: ScaleResult                       # model_scaled.osim, scale_setup.xml, factors
    generic_model: Path                      # the generic model with the keypoint markers
    keypoint_map: KeypointMap
    segments: list[SegmentMeasurement]
    factors: dict[str, tuple[float, float, float]]
    height_ratio: float
    report: Path

    @property
    def model_path(self) -> Path:
        return self.scale.model_path


def measure_segment(keypoints: KeypointSeries, a: str, b: str, *, n_best_frames: int = 50,
                    min_confidence: float = 0.5) -> tuple[float, int, float, float] | None:
    """(median length, frames used, interquartile range, lowest confidence used) of the
    distance between keypoints ``a`` and ``b`` over their most confident frames, or None when
    they are never both present."""
    w = keypoints.weights()
    ia, ib = keypoints.index(a), keypoints.index(b)
    pair = np.minimum(w[:, ia], w[:, ib])
    ok = np.flatnonzero(pair > 0)
    if ok.size == 0:
        return None
    good = ok[pair[ok] >= min_confidence]
    pool = good if good.size else ok
    best = pool[np.argsort(-pair[pool], kind="stable")[:max(1, int(n_best_frames))]]
    d = np.linalg.norm(keypoints.data[best, ia] - keypoints.data[best, ib], axis=1)
    q1, med, q3 = np.percentile(d, [25, 50, 75])
    return float(med), int(best.size), float(q3 - q1), float(pair[best].min())


def _model_stature(pos: dict[str, np.ndarray]) -> float | None:
    """Top of the head keypoint marker to the lowest foot keypoint marker, or None."""
    feet = [pos[k][1] for k in ("RHeel", "LHeel", "RBigToe", "LBigToe", "RSmallToe",
                                "LSmallToe") if k in pos]
    if "Head" not in pos or not feet:
        return None
    h = float(pos["Head"][1] - min(feet))
    return h if h > 0.5 else None


def segment_factors(model, kmap: KeypointMap, segments: list[SegmentMeasurement],
                    height_ratio: float, *, average_sides: bool = True
                    ) -> dict[str, tuple[float, float, float]]:
    """Per-body (sx, sy, sz) from the measured segments (see the module docstring)."""
    roles = find_body_roles(model)
    bs = model.getBodySet()
    factors = {bs.get(i).getName(): (height_ratio,) * 3 for i in range(bs.getSize())}
    ratio = {s.name: s.ratio for s in segments}
    if average_sides:
        for name, _, sided, _ in SEGMENTS:
            if sided and f"{name}_r" in ratio and f"{name}_l" in ratio:
                mean = 0.5 * (ratio[f"{name}_r"] + ratio[f"{name}_l"])
                ratio[f"{name}_r"] = ratio[f"{name}_l"] = mean
    for name, _, sided, body_roles in SEGMENTS:
        if name in ("trunk", "shoulder_width"):
            continue
        for side in (("r", "l") if sided else ("",)):
            key = f"{name}_{side}" if side else name
            if key not in ratio:
                continue
            k = ratio[key]
            for role in body_roles:
                body = roles.get(f"{role}_{side}" if side else role)
                if body is not None:
                    factors[body] = (k, k, k)
    torso = roles.get("torso")
    if torso is not None and ("trunk" in ratio or "shoulder_width" in ratio):
        sy = ratio.get("trunk", ratio.get("shoulder_width"))
        sz = ratio.get("shoulder_width", sy)
        factors[torso] = (0.5 * (sy + sz), sy, sz)
        trunk = next((s for s in segments if s.name == "trunk"), None)
        if trunk is not None:
            exact = _trunk_long_axis_factor(model, kmap, trunk, factors, torso)
            if exact is not None:
                factors[torso] = (0.5 * (exact + sz), exact, sz)
    return factors


def _trunk_long_axis_factor(model, kmap: KeypointMap, trunk: SegmentMeasurement, factors,
                            torso: str) -> float | None:
    """The torso's y factor that makes the scaled model's mid-hip-to-neck distance the
    measured one. That distance spans the pelvis (mid-hip to the lumbar joint), any lumbar
    bodies and the torso, which scale differently, so the plain ratio would not reproduce it.
    Each body's piece of the path (between successive joint centres, at the default pose) is
    scaled in the body's frame; None when the neck marker's body does not descend from the
    mid-hip marker's body through the torso."""
    a_key, b_key = trunk.keypoints
    ms = model.getMarkerSet()
    names = kmap.marker_names
    if names.get(a_key) is None or names.get(b_key) is None:
        return None
    state = model.initSystem()
    model.realizePosition(state)
    ma, mb = ms.get(names[a_key]), ms.get(names[b_key])
    body_a = ma.getParentFrame().findBaseFrame().getName()
    body_b = mb.getParentFrame().findBaseFrame().getName()
    parent_joint = {}
    js = model.getJointSet()
    for i in range(js.getSize()):
        j = js.get(i)
        parent_joint[j.getChildFrame().findBaseFrame().getName()] = j
    chain, b = [], body_b
    while b != body_a:
        j = parent_joint.get(b)
        if j is None:
            return None
        chain.append(j)
        b = j.getParentFrame().findBaseFrame().getName()
    chain.reverse()
    bodies = model.getBodySet()

    def rot(body):
        xf = bodies.get(body).getTransformInGround(state)
        return np.array([[xf.R().get(i, k) for k in range(3)] for i in range(3)])

    point = ma.getLocationInGround(state).to_numpy()
    pieces = []   # (body, piece in the body frame)
    body = body_a
    for j in chain:
        centre = j.getChildFrame().getPositionInGround(state).to_numpy()
        pieces.append((body, rot(body).T @ (centre - point)))
        point, body = centre, j.getChildFrame().findBaseFrame().getName()
    pieces.append((body, rot(body).T @ (mb.getLocationInGround(state).to_numpy() - point)))
    if torso not in {p[0] for p in pieces}:
        return None
    # scaled path = fixed part + s * variable part (the torso's y components), |.| = measured
    fixed, var = np.zeros(3), np.zeros(3)
    for body, piece in pieces:
        f = np.array(factors[body], dtype=float)
        R = rot(body)
        if body == torso:
            fixed += R @ (np.array([f[0], 0.0, f[2]]) * piece)
            var += R @ (np.array([0.0, 1.0, 0.0]) * piece)
        else:
            fixed += R @ (f * piece)
    qa, qb, qc = var @ var, 2 * fixed @ var, fixed @ fixed - trunk.measured ** 2
    disc = qb * qb - 4 * qa * qc
    if qa < 1e-12 or disc < 0:
        return None
    s = (-qb + math.sqrt(disc)) / (2 * qa)
    return s if s > 0 else None


def scale_from_keypoints(model_path: str | os.PathLike, keypoints: KeypointSeries,
                         height: float, mass: float, out_dir: str | os.PathLike, *,
                         kmap: KeypointMap | str | os.PathLike | None = None,
                         n_best_frames: int = 50, min_confidence: float = 0.5,
                         average_sides: bool = True,
                         from_height: tuple[str, ...] | list[str] = ()) -> KeypointScaleResult:
    """Scale ``model_path`` to the subject seen in ``keypoints`` (3D, named like
    :data:`builtin_model.KEYPOINT_MARKERS`), of ``height`` (m) and ``mass`` (kg).

    ``kmap``: the keypoint map (a map or a TOML path; default :func:`pick_keypoint_map`).
    Writes into ``out_dir``: ``model_generic_keypoints.osim`` (the model with the map's
    markers), ``model_scaled.osim``, ``scale_setup.xml``, ``scale_factors.xml`` and
    ``keypoint_scaling.json`` (each segment's measured and model length, frames used).
    ``from_height``: :data:`SEGMENTS` names not measured, their bodies scaled by the height
    ratio like the unmeasured ones (``kinevid run`` does so for the feet: see its
    ``scale.from_height``).
    """
    model_path = Path(model_path).expanduser().resolve()
    if not isinstance(keypoints, KeypointSeries):
        raise InputError(f"keypoints must be a KeypointSeries, not {type(keypoints).__name__}")
    src = keypoints.source or "keypoints"
    if keypoints.dim != 3 or keypoints.units == "px":
        raise InputError("scaling needs 3D keypoints in length units", keypoints.source)
    height = _positive(height, "height", src)
    mass = _positive(mass, "mass", src)
    if n_best_frames < 1:
        raise InputError(f"n_best_frames must be at least 1, not {n_best_frames}")
    unknown = sorted(set(from_height) - {n for n, *_ in SEGMENTS})
    if unknown:
        raise InputError(f"unknown segment(s) {', '.join(unknown)} to scale by height; known: "
                         f"{', '.join(n for n, *_ in SEGMENTS)}")
    series = keypoints.to_metres()
    kmap = pick_keypoint_map(model_path, kmap)
    out_dir = Path(out_dir).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    generic = apply_keypoint_map(model_path, kmap, out_dir / GENERIC_FILE)
    model = load_model(generic)
    names = kmap.marker_names
    at_default = keypoint_marker_positions(model, names.values())
    pos = {k: at_default[m] for k, m in names.items() if m in at_default}

    segments: list[SegmentMeasurement] = []
    for name, (a, b), sided, _ in SEGMENTS:
        if name in from_height:
            continue
        for side in (("R", "L") if sided else ("",)):
            ka, kb = side + a, side + b
            if not (ka in pos and kb in pos and ka in series.names and kb in series.names):
                continue
            got = measure_segment(series, ka, kb, n_best_frames=n_best_frames,
                                  min_confidence=min_confidence)
            model_len = float(np.linalg.norm(pos[ka] - pos[kb]))
            if got is None or model_len < 1e-3:
                continue
            med, n, spread, cmin = got
            segments.append(SegmentMeasurement(f"{name}_{side.lower()}" if side else name,
                                               (ka, kb), med, model_len, n, spread, cmin))
    if not segments:
        raise InputError(f"no segment can be measured: the keypoint data and the map "
                         f"{kmap.source or kmap.name} share no visible keypoint pair "
                         f"({', '.join(f'{a}-{b}' for _, (a, b), _, _ in SEGMENTS)})", src)
    stature = _model_stature(pos)
    height_ratio = (height / stature if stature is not None
                    else float(np.median([s.ratio for s in segments])))
    factors = segment_factors(model, kmap, segments, height_ratio, average_sides=average_sides)
    for body, f in factors.items():
        if not all(math.isfinite(v) and 0.2 < v < 5.0 for v in f):
            raise InputError(f"implausible scale factor {tuple(round(v, 3) for v in f)} for "
                             f"{body}: the keypoints do not look like this model's subject "
                             "(wrong units or a wrong person?)", src)
    result = scale_with_factors(generic, factors, height, mass, out_dir,
                                name="kinevid_keypoint_scale")
    report = out_dir / REPORT_FILE
    with atomic_write(report) as fh:
        json.dump({"model": str(model_path), "keypoint_map": kmap.source or kmap.name,
                   "height_m": height, "mass_kg": mass, "model_stature_m": stature,
                   "height_ratio": height_ratio, "n_best_frames": n_best_frames,
                   "min_confidence": min_confidence, "average_sides": average_sides,
                   "from_height": list(from_height),
                   "segments": [dict(dataclasses.asdict(s), ratio=s.ratio) for s in segments],
                   "factors": {b: list(f) for b, f in sorted(factors.items())}},
                  fh, indent=2)
    return KeypointScaleResult(result, generic, kmap, segments, factors, height_ratio, report)


