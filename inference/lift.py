"""2D -> 3D orchestration: Pose2D -> subject -> lifter -> world frame -> TRC + confidences.

Outputs in the output folder (all written atomically):

* ``keypoints3d.trc`` - OpenSim markers in metres, world frame (Y up, floor at Y = 0), named as
  the built-in model's keypoint markers (``opensim_bridge.builtin_model.KEYPOINT_MARKERS``:
  Nose, REye, ..., RHip, RKnee, RAnkle, RHeel, RBigToe, RSmallToe ...); lifter outputs without
  such a marker (H36M "spine" and "head") are left out of the TRC. Frames where the subject was
  not detected at all are empty cells.
* ``keypoints3d_confidence.csv`` - time, then one column per TRC marker: the per-joint 3D
  confidence in [0, 1] (:mod:`inference.confidence3d`), for IK weighting.
* ``keypoints3d.npz`` - every lifter output (canonical names) in world and camera frames,
  confidences, the camera rotation/origin and a JSON header with the lifter, scale, focal length
  and floor fit (``np.load(allow_pickle=False)``).
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import time as _time
import warnings
from pathlib import Path

import numpy as np

from opensim_bridge.atomic import atomic_write
from opensim_bridge.errors import InputError
from opensim_bridge.timeseries import KeypointSeries

from .confidence3d import confidence_3d
from .layouts import convert, get_layout, mapping_weights
from .pose2d import Pose2D, read_pose2d
from .trajectory import WorldTrajectory, intrinsics_for, to_world

__all__ = [
    "MARKER_FOR",
    "LiftResult",
    "lift_pose2d",
    "run_lift",
    "select_subject",
    "write_lift_outputs",
]

#: canonical keypoint name -> built-in model keypoint marker
MARKER_FOR: dict[str, str] = {
    "nose": "Nose", "right_eye": "REye", "left_eye": "LEye", "right_ear": "REar",
    "left_ear": "LEar", "head_top": "Head", "neck": "Neck", "mid_hip": "Hip",
    **{f"{side}_{part}": f"{s}{m}" for side, s in (("right", "R"), ("left", "L"))
       for part, m in (("shoulder", "Shoulder"), ("elbow", "Elbow"), ("wrist", "Wrist"),
                       ("index", "Index"), ("pinky", "Pinky"), ("hip", "Hip"), ("knee", "Knee"),
                       ("ankle", "Ankle"), ("heel", "Heel"), ("big_toe", "BigToe"),
                       ("small_toe", "SmallToe"))},
}


@dataclasses.dataclass
class LiftResult:
    series: KeypointSeries        # all lifter outputs, canonical names, world frame, metres
    markers: KeypointSeries       # the TRC content: built-in model marker names
    trajectory: WorldTrajectory
    spec: object                  # models.lifter_registry.LifterSpec
    subject: int
    seconds: float                # lifter wall time
    files: dict[str, Path] = dataclasses.field(default_factory=dict)

    @property
    def fps(self) -> float:
        return len(self.series) / self.seconds if self.seconds > 0 else float("inf")


def select_subject(pose: Pose2D, subject: int | None = None) -> int:
    """The chosen person: ``subject``, else the file's selection, else the only or the
    most-present track."""
    if subject is not None:
        if int(subject) not in pose.tracks:
            raise InputError(f"person {subject} is not in this 2D result (ids {pose.person_ids})",
                             pose.source)
        return int(subject)
    if pose.subject is not None:
        return pose.subject
    if not pose.tracks:
        raise InputError("the 2D result holds no person", pose.source)
    present = pose.present().sum(axis=1)
    return pose.person_ids[int(np.argmax(present))]


def _conf_for_outputs(pose_layout: str, conf: np.ndarray, out_names) -> np.ndarray:
    """2D confidence for each lifter output joint (derived points: min of sources)."""
    src = get_layout(pose_layout)
    have = {n: i for i, n in enumerate(src.names)}
    out = np.empty((conf.shape[0], len(out_names)))
    frame_med = np.median(conf, axis=1)
    for j, n in enumerate(out_names):
        if n in have:
            out[:, j] = conf[:, have[n]]
            continue
        rule = None
        for lay in ("h36m17", "halpe26", "coco_wholebody133", "blazepose33"):
            names = get_layout(lay).names
            if n in names:
                rule = mapping_weights(src.name, lay)[names.index(n)]
                break
        out[:, j] = conf[:, sorted(rule)].min(axis=1) if rule else frame_med
    return out


def load_lifter_for_inference(lifter="kinevid", *, cache=None, trust: bool = False):
    """(network, spec) for inference: kinevid's own (``person_window``) lifters run in numpy
    (:mod:`models.lifter_numpy`: the same answer without importing PyTorch, about a second of a
    cold start on 2 cores); VideoPose3D-style lifters, or a file the numpy reader cannot take,
    load through PyTorch (:func:`models.lifter_registry.load_lifter`)."""
    from models.checkpoints import CheckpointError
    from models.lifter_registry import LIFTER_REGISTRY, LifterSpec, load_lifter

    if isinstance(lifter, LifterSpec):
        known = lifter
    else:
        known = LIFTER_REGISTRY.get(lifter) if isinstance(lifter, str) else None
    # a shipped file's meta says how it normalises; the official VideoPose3D entries need torch
    if known is None or known.file or known.normalisation == "person_window":
        from models.lifter_numpy import load_numpy_lifter
        try:
            return load_numpy_lifter(lifter, cache=cache, trust=trust)
        except CheckpointError:
            pass   # PyTorch's loader takes it, or says what is wrong with it
    return load_lifter(lifter, cache=cache, trust=trust)


def lift_pose2d(pose: Pose2D, *, lifter="kinevid", height: float = 1.75,
                focal_px: float | None = None, fov_deg: float | None = None,
                subject: int | None = None, trust: bool = False, cache=None, flip: bool = True,
                model=None, spec=None, chunk: int = 1024, heading: str = "auto",
                reproject: float = 1.0, root_lowpass_hz: float = 6.0) -> LiftResult:
    """Lift one person of ``pose`` to a metric 3D world trajectory (nothing is written)."""
    from models.lift_infer import lift_sequence

    if not 0.5 < height < 2.6:
        raise InputError(f"height {height} m is not a plausible human stature", pose.source)
    if not 0.0 <= reproject <= 1.0:
        raise InputError(f"reproject weight {reproject} is outside [0, 1]", pose.source)
    if not root_lowpass_hz >= 0.0:
        raise InputError(f"root low-pass cut-off {root_lowpass_hz} Hz is negative", pose.source)
    if pose.video_size is None:
        raise InputError("the 2D result has no video size; lifters need it to normalise the "
                         "coordinates", pose.source)
    pid = select_subject(pose, subject)
    if model is None or spec is None:
        model, spec = load_lifter_for_inference(lifter, cache=cache, trust=trust)
    series2d = pose.tracks[pid]
    kp, conf = series2d.data, series2d.weights()
    present = np.isfinite(kp).all(-1).any(-1)
    if not present.any():
        raise InputError(f"person {pid} has no keypoints in any frame", pose.source)
    kp_in, conf_in = convert(kp, conf, pose.layout, spec.input_layout)
    never = [n for j, n in enumerate(get_layout(spec.input_layout).names)
             if not np.isfinite(kp_in[present, j]).any()]
    # a lifter trained on detections that never give these points takes them as they are
    trained_for = any(set(never) <= set(v) for v in (spec.input_sources or {}).values())
    if never and not trained_for and spec.in_features == 3 and len(never) <= 3:
        # a confidence-aware lifter was trained with dropped joints: a few absent ones are fine
        warnings.warn(f"lifter {spec.name}: the {pose.layout} detections never provide "
                      f"{', '.join(never)}; lifting with confidence 0 for them", stacklevel=2)
    elif never and not trained_for:
        raise InputError(f"lifter {spec.name} needs 2D keypoints in the {spec.input_layout} layout; "
                         f"the {pose.layout} detections never provide {', '.join(never)}. Use a "
                         "detector with these points or another --lifter", pose.source)

    t0 = _time.perf_counter()
    rel = lift_sequence(model, spec, kp_in, conf_in, pose.video_size, flip=flip, chunk=chunk,
                        height=height)
    seconds = _time.perf_counter() - t0
    names = tuple(spec.output_names)

    # 2D of the output joints (for the root solve) and their 2D confidences
    idx_in = {n: i for i, n in enumerate(get_layout(spec.input_layout).names)}
    kp_out = np.full(rel.shape[:2] + (2,), np.nan)
    conf_out = _conf_for_outputs(pose.layout, conf, names)
    for j, n in enumerate(names):
        if n in idx_in:
            kp_out[:, j] = kp_in[:, idx_in[n]]
    kp_out[~present] = np.nan
    K = intrinsics_for(pose.video_size, focal_px=focal_px, fov_deg=fov_deg, metadata=pose.extra)
    solve_conf = np.where(present[:, None], conf_out, 0.0)
    try:
        # a lifter predicting in units of height was already scaled by the given height: its
        # limb proportions are learnt, re-fitting them to a stature table only adds a bias
        # (held-out runs: root error 27-33 cm with the re-fit, 8-11 cm without)
        world = to_world(names, rel, kp_out, solve_conf, K, height, root_index=spec.root_index,
                         heading=heading, scale=1.0 if spec.output_units == "height" else None,
                         reproject=reproject, time=pose.time, root_lowpass_hz=root_lowpass_hz)
    except ValueError as exc:
        raise InputError(f"cannot place the subject in the world: {exc}", pose.source) from exc

    pts = world.points.copy()
    pts[~present] = np.nan
    c3d = confidence_3d(names, pts, conf_out)
    c3d[~present] = 0.0
    series = KeypointSeries(pose.time, names, pts, units="m", confidence=c3d, source=pose.source)
    keep = [n for n in names if n in MARKER_FOR]
    markers = series.select(keep)
    markers = KeypointSeries(markers.time, [MARKER_FOR[n] for n in keep], markers.data, units="m",
                             confidence=markers.confidence, source=pose.source)
    return LiftResult(series, markers, world, spec, pid, seconds)


def _npz_bytes(result: LiftResult) -> bytes:
    w = result.trajectory
    header = {"format": "kinevid-keypoints3d", "version": 1, "lifter": result.spec.name,
              "lifter_licence": result.spec.licence, "subject": result.subject,
              "names": list(result.series.names), "markers": list(result.markers.names),
              "units": "m", "frame": "world: Y up (floor normal), X on the floor along the heading named in "
              "'heading' (travel, facing or camera x), Z = X x Y; origin on the floor below the "
              "first root position",
              **w.summary()}
    buf = io.BytesIO()
    np.savez_compressed(buf, header=np.array(json.dumps(header)), time=result.series.time,
                        points=result.series.data, confidence=result.series.confidence,
                        points_camera=w.points_camera, root=w.root, rotation=w.rotation,
                        origin=w.origin)
    return buf.getvalue()


def write_lift_outputs(result: LiftResult, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write the TRC, the confidence CSV and the npz (see the module notes)."""
    from opensim_bridge.trc import write_trc

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # everything is serialised first, so a failure cannot leave a mixed set of files
    npz = _npz_bytes(result)
    text = io.StringIO()
    wr = csv.writer(text, lineterminator="\n")
    wr.writerow(["time"] + list(result.markers.names))
    for t, row in zip(result.markers.time, result.markers.confidence):
        wr.writerow([repr(float(t))] + [f"{v:.4f}" for v in row])
    files = {"trc": write_trc(result.markers, out / "keypoints3d.trc")}
    with atomic_write(out / "keypoints3d_confidence.csv") as fh:
        fh.write(text.getvalue())
    files["confidence"] = out / "keypoints3d_confidence.csv"
    with atomic_write(out / "keypoints3d.npz", "wb") as fh:
        fh.write(npz)
    files["npz"] = out / "keypoints3d.npz"
    result.files = files
    return files


def run_lift(pose2d: str | os.PathLike | Pose2D, out_dir: str | os.PathLike, **kwargs) -> LiftResult:
    """Read a ``pose2d.npz``, lift it and write the outputs; returns the result."""
    pose = pose2d if isinstance(pose2d, Pose2D) else read_pose2d(pose2d)
    result = lift_pose2d(pose, **kwargs)
    write_lift_outputs(result, out_dir)
    return result
