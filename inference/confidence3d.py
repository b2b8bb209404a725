"""Per-joint confidence of lifted 3D keypoints, for weighting inverse kinematics.

confidence3d = c2d x bone x accel, each in [0, 1]:

* ``c2d`` - the 2D detector's confidence of the joint (points the 2D layout lacks take their
  sources' minimum as :func:`inference.layouts.convert` derives them, else the frame's median),
  limited by its mean over a short window: a lifter looks at neighbouring frames too, so a joint
  that flickers in 2D is not trusted at its good instants either.
* ``bone`` - bone-length stability: a rigid bone keeps its length; for each bone touching the
  joint, ``exp(-(dev / 0.1)^2)`` with dev the relative deviation of this frame's length from the
  bone's median length (10 % off -> 0.37); the joint takes the worst of its bones.
* ``accel`` - acceleration outliers: the joint's acceleration magnitude (second difference over
  time) as a robust z-score against its own median and MAD; 1 up to z = 3, then
  ``exp(-((z - 3) / 3)^2)``. Frames that jump are where lifters fail.

Missing joints (NaN) have confidence 0.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["BONES", "acceleration_score", "bone_stability", "confidence_3d", "smoothed_2d"]

#: bones by canonical names; only those whose two ends are present are used
BONES: tuple[tuple[str, str], ...] = tuple(
    [(f"{s}_{a}", f"{s}_{b}") for s in ("left", "right") for a, b in
     (("hip", "knee"), ("knee", "ankle"), ("ankle", "heel"), ("ankle", "big_toe"),
      ("ankle", "small_toe"), ("heel", "big_toe"), ("shoulder", "elbow"), ("elbow", "wrist"),
      ("ankle", "foot_index"), ("eye", "ear"))]
    + [("left_hip", "right_hip"), ("left_shoulder", "right_shoulder"), ("mid_hip", "spine"),
       ("spine", "neck"), ("neck", "nose"), ("nose", "head"), ("neck", "head_top"),
       ("nose", "left_eye"), ("nose", "right_eye"), ("mid_hip", "left_hip"),
       ("mid_hip", "right_hip")])


def bone_stability(names: Sequence[str], points: np.ndarray, tolerance: float = 0.1) -> np.ndarray:
    """(T, J) in [0, 1]: worst bone-length consistency among the bones touching each joint."""
    idx = {n: i for i, n in enumerate(names)}
    P = np.asarray(points, dtype=np.float64)
    out = np.ones(P.shape[:2])
    for a, b in BONES:
        if a not in idx or b not in idx:
            continue
        ia, ib = idx[a], idx[b]
        length = np.linalg.norm(P[:, ia] - P[:, ib], axis=-1)
        ok = np.isfinite(length)
        if ok.sum() < 2:
            continue
        ref = np.median(length[ok])
        if ref <= 0:
            continue
        score = np.exp(-((length - ref) / (tolerance * ref)) ** 2)
        score = np.where(ok, score, 0.0)
        out[:, ia] = np.minimum(out[:, ia], score)
        out[:, ib] = np.minimum(out[:, ib], score)
    return out


def acceleration_score(points: np.ndarray, z0: float = 3.0) -> np.ndarray:
    """(T, J) in [0, 1]: 1 for ordinary accelerations, decaying for outliers (robust z > z0)."""
    P = np.asarray(points, dtype=np.float64)
    T = P.shape[0]
    out = np.ones(P.shape[:2])
    if T < 3:
        return out
    acc = np.full(P.shape[:2], np.nan)
    acc[1:-1] = np.linalg.norm(P[2:] - 2 * P[1:-1] + P[:-2], axis=-1)
    acc[0], acc[-1] = acc[1], acc[-2]   # the ends share their neighbour's second difference
    med = np.nanmedian(acc, axis=0)
    mad = 1.4826 * np.nanmedian(np.abs(acc - med), axis=0)
    mad = np.where(mad > 0, mad, np.nan)
    z = (acc - med) / mad
    z = np.nan_to_num(z, nan=0.0, posinf=1e6)
    out = np.where(z <= z0, 1.0, np.exp(-((z - z0) / z0) ** 2))
    return out


def smoothed_2d(conf2d: np.ndarray, window: int = 9) -> np.ndarray:
    """min(confidence, its centred moving average over ``window`` frames)."""
    c = np.clip(np.nan_to_num(np.asarray(conf2d, dtype=np.float64)), 0.0, 1.0)
    if window <= 1 or c.shape[0] < 2:
        return c
    half = window // 2
    padded = np.pad(c, ((half, half), (0, 0)), mode="edge")
    csum = np.cumsum(np.vstack([np.zeros((1, c.shape[1])), padded]), axis=0)
    mean = (csum[window:] - csum[:-window]) / window
    return np.minimum(c, mean[: c.shape[0]])


def confidence_3d(names: Sequence[str], points: np.ndarray, conf2d: np.ndarray, *,
                  window: int = 9) -> np.ndarray:
    """(T, J) per-joint 3D confidence (see the module notes); 0 where a point is NaN."""
    P = np.asarray(points, dtype=np.float64)
    c = smoothed_2d(conf2d, window) * bone_stability(names, P) * acceleration_score(P)
    c = np.where(np.isfinite(P).all(-1), c, 0.0)
    return np.clip(c, 0.0, 1.0)
