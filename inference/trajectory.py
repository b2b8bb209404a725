"""From root-relative 3D + 2D pixels to a metric world trajectory with the floor at Y = 0.

Steps (all camera-frame quantities use the pinhole convention: x right, y down, z forward):

1. **Intrinsics** (:func:`intrinsics_for`): the focal length in pixels is given, or derived from a
   35 mm-equivalent focal length found in the video metadata (``f_px = f35 * diagonal_px /
   43.27``, the diagonal of a 36x24 mm frame), or from a field of view across the image's
   LONGER side; without either, :data:`DEFAULT_FOV_DEG` = 60 deg is assumed (phone main cameras
   film at about 65-70 deg, webcams about 55-60 deg; a wrong focal length scales depth
   proportionally). Principal point: the image centre.
2. **Scale** (:func:`estimate_scale`): the lifted skeleton is rescaled so its limb lengths match
   the subject's stature (Winter 2009 segment proportions: thigh 0.245 H, shank 0.246 H,
   upper arm 0.186 H, forearm 0.146 H), using per-bone medians over confident frames.
3. **Camera-frame root** (:func:`solve_root_camera`): per frame, the translation T that puts the
   metric skeleton on its 2D keypoints: u = f (P + T)_x / (P + T)_z + c_x (and y), linear least
   squares in T weighted by the 2D confidences, the hands left out (:data:`ROOT_SOLVE_LEFT_OUT`:
   a lifter's least accurate points, with the longest lever). The 2D size of the subject fixes
   the depth. Frames solved alone carry the 2D noise straight into depth (about 1.5 % of the
   distance, frame to frame), while a body's root moves smoothly: the solved trajectory is
   low-passed (``root_lowpass_hz``, zero-lag Butterworth, default 6 Hz as for the keypoints).
4. **Back-projection onto the 2D** (:func:`reproject_to_2d`, ``reproject`` weight): each
   keypoint seen in 2D is moved, at the depth the lifter gave it, onto the camera ray through its
   detected pixel, blended by ``reproject`` x its 2D confidence. A learnt lifter regresses
   towards average poses (a walking knee's 70 deg swing flexion came out as 45-55 deg), while
   the detector's pixels say exactly where the joint is across the image; only depth, which the
   image cannot give, is left to the lifter.
5. **Floor and world frame** (:func:`fit_floor`, :func:`world_frame`): the lowest foot point of
   each frame (heels, toes, ankles, minus their height above the sole) is a floor candidate;
   a RANSAC plane through the candidates (its normal within 45 deg of the body's mean vertical)
   is refined by least squares, with a weak prior towards the body's vertical for directions the
   contacts do not span (walking along a line only spans one). World axes: Y = floor normal (up,
   gravity along -Y); X on the floor, by ``heading`` (:data:`HEADINGS`): ``"travel"`` the
   subject's net direction of travel (as a gait lab's X runs along the walkway, so that
   pelvis_rotation means what biomechanists expect), ``"facing"`` the mean direction the pelvis
   faces (the hips' right-to-left line turned about Y), ``"camera"`` the camera's x axis, and
   ``"auto"`` (default) travel when the root moves at least :data:`MIN_TRAVEL_M` net over the
   floor and the body faces that way, else facing when the hips are seen, else camera;
   Z = X x Y (the subject's right for travel/facing). Origin: on the floor below the root at the
   first frame.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "HEADINGS",
    "choose_heading",
    "DEFAULT_FOV_DEG",
    "FOOT_HEIGHTS",
    "FloorPlane",
    "Intrinsics",
    "WorldTrajectory",
    "estimate_scale",
    "fit_floor",
    "intrinsics_for",
    "solve_root_camera",
    "root_solve_confidence",
    "smooth_root",
    "ROOT_SOLVE_LEFT_OUT",
    "to_world",
    "world_frame",
]

DEFAULT_FOV_DEG = 60.0

#: height above the sole of each foot point, as a fraction of stature (Winter 2009 ankle height
#: 0.039 H; heel and toe keypoints sit on the skin near the sole: 0.012 H and 0.008 H, as the
#: built-in model's Heel and toe markers)
FOOT_HEIGHTS: dict[str, float] = {
    "left_heel": 0.012, "right_heel": 0.012, "left_big_toe": 0.008, "right_big_toe": 0.008,
    "left_small_toe": 0.008, "right_small_toe": 0.008, "left_foot_index": 0.008,
    "right_foot_index": 0.008, "left_ankle": 0.039, "right_ankle": 0.039,
}

# (proximal, distal, fraction of stature) - Winter 2009 fig. 4.1 proportions
_BONES_STATURE = (
    ("left_hip", "left_knee", 0.245), ("right_hip", "right_knee", 0.245),
    ("left_knee", "left_ankle", 0.246), ("right_knee", "right_ankle", 0.246),
    ("left_shoulder", "left_elbow", 0.186), ("right_shoulder", "right_elbow", 0.186),
    ("left_elbow", "left_wrist", 0.146), ("right_elbow", "right_wrist", 0.146),
)
_DIAG_35MM = math.hypot(36.0, 24.0)


@dataclasses.dataclass(frozen=True)
class Intrinsics:
    focal_px: float
    cx: float
    cy: float
    width: int
    height: int
    source: str          # how the focal length was obtained, for the report

    @property
    def fov_long_deg(self) -> float:
        return math.degrees(2 * math.atan(0.5 * max(self.width, self.height) / self.focal_px))


def intrinsics_for(video_size: Sequence[int], *, focal_px: float | None = None,
                   fov_deg: float | None = None, metadata: Mapping | None = None) -> Intrinsics:
    """Pinhole intrinsics for a ``(width, height)`` frame (see the module notes for the order)."""
    w, h = int(video_size[0]), int(video_size[1])
    if w <= 0 or h <= 0:
        raise ValueError(f"bad video size {video_size}")
    long_side = max(w, h)
    meta = dict(metadata or {})
    if focal_px is not None:
        if not focal_px > 0:
            raise ValueError(f"focal length must be positive, got {focal_px}")
        f, src = float(focal_px), f"given: {float(focal_px):.1f} px"
    elif fov_deg is not None:
        if not 1.0 < fov_deg < 179.0:
            raise ValueError(f"field of view must be between 1 and 179 degrees, got {fov_deg}")
        f = 0.5 * long_side / math.tan(math.radians(fov_deg) / 2)
        src = f"given field of view {fov_deg:g} deg across the longer side"
    elif meta.get("focal_px"):
        f, src = float(meta["focal_px"]), "video metadata (focal length in pixels)"
    elif meta.get("focal_length_35mm"):
        f35 = float(meta["focal_length_35mm"])
        f = f35 * math.hypot(w, h) / _DIAG_35MM
        src = f"video metadata: {f35:g} mm (35 mm equivalent)"
    else:
        f = 0.5 * long_side / math.tan(math.radians(DEFAULT_FOV_DEG) / 2)
        src = f"default field of view {DEFAULT_FOV_DEG:g} deg across the longer side (not in the video metadata)"
    return Intrinsics(f, 0.5 * w, 0.5 * h, w, h, src)


def estimate_scale(names: Sequence[str], pose3d: np.ndarray, stature: float,
                   confidence: np.ndarray | None = None, min_conf: float = 0.3) -> float:
    """Factor making the skeleton's limb lengths those of a person of height ``stature`` (m)."""
    idx = {n: i for i, n in enumerate(names)}
    p = np.asarray(pose3d, dtype=np.float64)
    have, want = 0.0, 0.0
    for a, b, frac in _BONES_STATURE:
        if a not in idx or b not in idx:
            continue
        length = np.linalg.norm(p[:, idx[a]] - p[:, idx[b]], axis=-1)
        ok = np.isfinite(length)
        if confidence is not None:
            ok &= (confidence[:, idx[a]] >= min_conf) & (confidence[:, idx[b]] >= min_conf)
        if ok.sum() == 0:
            continue
        have += float(np.median(length[ok]))
        want += frac * stature
    if have <= 0:
        raise ValueError("no limb (thigh, shank, upper arm, forearm) could be measured to scale "
                         "the skeleton")
    return want / have


# Points the root solve leaves out: the hands (wrists, knuckles, thumbs) are a lifter's least
# accurate points (kinevid's lifter, held out: 73-94 mm against 13-82 for the rest) and, far
# from the trunk, they weigh most in a least-squares depth; a lifter pulling them towards the
# body put walkers 1-2 % closer than they were (held-out walks, 20 cameras each: 12.0 and
# 8.6 cm root error with them, 10.3 and 8.2 without).
ROOT_SOLVE_LEFT_OUT = frozenset(f"{side}_{part}" for side in ("left", "right")
                                for part in ("wrist", "index", "pinky", "thumb"))


def root_solve_confidence(names: Sequence[str], confidence: np.ndarray | None,
                          shape: tuple[int, int]) -> np.ndarray:
    """(T, J) weights for :func:`solve_root_camera`: the 2D confidences (1 where None), 0 for
    :data:`ROOT_SOLVE_LEFT_OUT`; a frame with fewer than 4 other points keeps its hands."""
    c = np.ones(shape) if confidence is None else np.nan_to_num(np.asarray(confidence, float))
    out = c.copy()
    drop = [j for j, n in enumerate(names) if n in ROOT_SOLVE_LEFT_OUT]
    if drop:
        out[:, drop] = 0.0
        few = (out > 0.05).sum(1) < 4
        out[few] = c[few]
    return out


def solve_root_camera(pose3d: np.ndarray, keypoints: np.ndarray, confidence: np.ndarray | None,
                      K: Intrinsics, min_conf: float = 0.05) -> np.ndarray:
    """(T, J, 3) metric root-relative pose + (T, J, 2) px -> (T, 3) camera-frame root (NaN where
    fewer than two joints are usable)."""
    P = np.asarray(pose3d, dtype=np.float64)
    uv = np.asarray(keypoints, dtype=np.float64)
    T = P.shape[0]
    w = np.ones(P.shape[:2]) if confidence is None else np.nan_to_num(np.asarray(confidence, float))
    ok = np.isfinite(P).all(-1) & np.isfinite(uv).all(-1) & (w >= min_conf)
    f = K.focal_px
    out = np.full((T, 3), np.nan)
    for t in range(T):
        j = ok[t]
        if j.sum() < 2:
            continue
        du = uv[t, j, 0] - K.cx
        dv = uv[t, j, 1] - K.cy
        px, py, pz = P[t, j, 0], P[t, j, 1], P[t, j, 2]
        n = int(j.sum())
        A = np.zeros((2 * n, 3))
        b = np.empty(2 * n)
        A[:n, 0] = f
        A[:n, 2] = -du
        b[:n] = du * pz - f * px
        A[n:, 1] = f
        A[n:, 2] = -dv
        b[n:] = dv * pz - f * py
        sw = np.sqrt(np.concatenate([w[t, j], w[t, j]]))
        sol, *_ = np.linalg.lstsq(A * sw[:, None], b * sw, rcond=None)
        out[t] = sol
    return out


@dataclasses.dataclass(frozen=True)
class FloorPlane:
    normal: np.ndarray       # unit, camera frame, pointing up (towards the body)
    offset: float            # plane: normal . x + offset = 0
    n_candidates: int
    n_inliers: int
    method: str              # "ransac" or "body-vertical fallback"

    def height(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x) @ self.normal + self.offset


def _body_vertical(names: Sequence[str], points: np.ndarray) -> np.ndarray:
    """Mean direction from the feet/ankles to the head/neck: a prior for 'up' (camera frame)."""
    idx = {n: i for i, n in enumerate(names)}
    tops = [idx[n] for n in ("neck", "head_top", "head", "nose", "left_shoulder", "right_shoulder")
            if n in idx]
    bottoms = [idx[n] for n in ("left_ankle", "right_ankle", "left_heel", "right_heel") if n in idx]
    if tops and bottoms:
        d = np.nanmean(points[:, tops], axis=1) - np.nanmean(points[:, bottoms], axis=1)
        d = d[np.isfinite(d).all(-1)]
        if len(d):
            v = np.mean(d / np.linalg.norm(d, axis=1, keepdims=True), axis=0)
            if np.linalg.norm(v) > 0.3:
                return v / np.linalg.norm(v)
    return np.array([0.0, -1.0, 0.0])  # camera y points down


def _plane_through(points: np.ndarray, prior: np.ndarray, weight: float) -> tuple[np.ndarray, float]:
    c = points.mean(axis=0)
    d = points - c
    S = d.T @ d + weight * (np.eye(3) - np.outer(prior, prior))
    _, vecs = np.linalg.eigh(S)
    n = vecs[:, 0]
    if n @ prior < 0:
        n = -n
    return n, -float(n @ c)


def fit_floor(names: Sequence[str], points: np.ndarray, stature: float,
              confidence: np.ndarray | None = None, *, tol: float | None = None,
              iterations: int = 300, seed: int = 0, min_conf: float = 0.3,
              foot_heights: Mapping[str, float] | None = None) -> FloorPlane:
    """Floor plane from the lowest foot point of each frame ((T, J, 3) camera frame, metres).

    ``foot_heights``: height above the sole of each foot point in metres (default
    :data:`FOOT_HEIGHTS` times ``stature``), e.g. measured on a static trial.
    """
    pts = np.asarray(points, dtype=np.float64)
    idx = {n: i for i, n in enumerate(names)}
    heights = ({n: v * stature for n, v in FOOT_HEIGHTS.items()} if foot_heights is None
               else dict(foot_heights))
    feet = [n for n in heights if n in idx]
    up = _body_vertical(names, pts)
    tol = 0.015 * stature if tol is None else tol
    if not feet:
        raise ValueError("no foot points (heels, toes or ankles) to find the floor with")
    fi = np.array([idx[n] for n in feet])
    lift = np.array([heights[n] for n in feet])
    usable = np.isfinite(pts[:, fi]).all(-1)
    if confidence is not None:
        usable &= np.asarray(confidence)[:, fi] >= min_conf

    def candidates(up_dir):
        sole = pts[:, fi] - lift[None, :, None] * up_dir        # drop each point to the sole
        h = np.where(usable, sole @ up_dir, np.inf)
        k = np.argmin(h, axis=1)
        rows = np.isfinite(h[np.arange(len(h)), k])
        return sole[np.arange(len(h)), k][rows]

    cand = candidates(up)
    n_c = len(cand)
    prior_w = max(n_c, 1) * 0.05 ** 2  # prior wins only in directions spread less than ~5 cm
    if n_c < 3:
        c = cand.mean(axis=0) if n_c else np.nanmin(pts[:, fi].reshape(-1, 3), axis=0)
        return FloorPlane(up, -float(up @ c), n_c, n_c, "body-vertical fallback")
    rng = np.random.default_rng(seed)
    best = None
    cos_max = math.cos(math.radians(45))
    for _ in range(iterations):
        s = cand[rng.choice(n_c, 3, replace=False)]
        n = np.cross(s[1] - s[0], s[2] - s[0])
        if np.linalg.norm(n) < 1e-9:
            continue
        n /= np.linalg.norm(n)
        if n @ up < 0:
            n = -n
        if n @ up < cos_max:
            continue
        inl = np.abs((cand - s[0]) @ n) < tol
        if best is None or inl.sum() > best.sum():
            best = inl
    if best is None or best.sum() < 3:
        best = np.ones(n_c, bool)
    normal, offset = up, 0.0
    for _ in range(3):  # refine: refit, recompute candidates with the new 'up', re-select inliers
        normal, offset = _plane_through(cand[best], up, prior_w)
        cand = candidates(normal)
        resid = cand @ normal + offset
        best = np.abs(resid) < tol
        if best.sum() < 3:
            best = np.argsort(np.abs(resid))[:max(3, n_c // 2)]
            best = np.isin(np.arange(len(cand)), best)
    normal, offset = _plane_through(cand[best], up, prior_w)
    return FloorPlane(normal, offset, n_c, int(best.sum()), "ransac")


HEADINGS = ("auto", "travel", "facing", "camera")
MIN_TRAVEL_M = 1.0


def _floor_unit(v: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """``v`` projected on the floor (normal ``y``) and normalised; None if nearly vertical."""
    v = v - (v @ y) * y
    n = np.linalg.norm(v)
    return v / n if n > 1e-6 else None


def _camera_x(y: np.ndarray) -> np.ndarray:
    """The camera's x axis on the floor (its optical axis if the camera is rolled 90 deg)."""
    x = _floor_unit(np.array([1.0, 0.0, 0.0]), y)
    return x if x is not None else _floor_unit(np.array([0.0, 0.0, 1.0]), y)


def travel_direction(root_cam: np.ndarray, y: np.ndarray) -> tuple[np.ndarray | None, float]:
    """(unit floor direction of net travel or None, net distance in metres): from the median
    root of the first fifth of the frames to that of the last fifth (robust to jitter)."""
    r = root_cam[np.isfinite(root_cam).all(-1)]
    if len(r) < 5:
        return None, 0.0
    k = max(1, len(r) // 5)
    d = np.median(r[-k:], axis=0) - np.median(r[:k], axis=0)
    d = d - (d @ y) * y
    dist = float(np.linalg.norm(d))
    return (d / dist if dist > 1e-9 else None), dist


def facing_direction(points_cam: np.ndarray, names: Sequence[str], y: np.ndarray) -> np.ndarray | None:
    """Unit floor direction the pelvis faces on average: up x (right hip - left hip), as in
    OpenSim's axes (X forward, Y up, Z right); None without both hips."""
    try:
        li, ri = list(names).index("left_hip"), list(names).index("right_hip")
    except ValueError:
        return None
    right = points_cam[:, ri] - points_cam[:, li]
    right = right[np.isfinite(right).all(-1)]
    if not len(right):
        return None
    right = right / np.maximum(np.linalg.norm(right, axis=-1, keepdims=True), 1e-9)
    return _floor_unit(np.cross(y, right.mean(0)), y)


def choose_heading(heading: str, floor: FloorPlane, root_cam: np.ndarray,
                   points_cam: np.ndarray | None = None, names: Sequence[str] = ()) -> tuple[np.ndarray, str]:
    """(unit world X in camera axes, the rule used) for a ``heading`` of :data:`HEADINGS`."""
    if heading not in HEADINGS:
        raise ValueError(f"heading must be one of {', '.join(HEADINGS)}, got {heading!r}")
    y = floor.normal / np.linalg.norm(floor.normal)
    camera = _camera_x(y)
    if heading == "camera":
        return camera, "camera"
    face = facing_direction(points_cam, names, y) if points_cam is not None else None
    travel, dist = travel_direction(root_cam, y)
    if heading == "travel":
        if travel is None:
            raise ValueError("the subject does not move: no direction of travel for the world X axis")
        return travel, "travel"
    if heading == "facing":
        if face is None:
            raise ValueError("the hips are not seen: no facing direction for the world X axis")
        return face, "facing"
    # auto: travel when the subject goes somewhere forwards (walking backwards or a side-step
    # sequence keeps the facing direction), else facing, else the camera
    if travel is not None and dist >= MIN_TRAVEL_M and (face is None or travel @ face > 0.5):
        return travel, "travel"
    if face is not None:
        return face, "facing"
    return camera, "camera"


def world_frame(floor: FloorPlane, root_cam: np.ndarray, x_axis: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """(R, origin): world = R @ (camera - origin); rows of R are the world X, Y, Z in camera axes.
    ``x_axis``: the world X direction in camera axes (projected on the floor); default the
    camera's x axis on the floor."""
    y = floor.normal / np.linalg.norm(floor.normal)
    x = None if x_axis is None else _floor_unit(np.asarray(x_axis, float), y)
    if x is None:
        x = _camera_x(y)
    z = np.cross(x, y)
    R = np.stack([x, y, z])
    roots = root_cam[np.isfinite(root_cam).all(-1)]
    first = roots[0] if len(roots) else np.zeros(3)
    origin = first - floor.height(first) * y      # on the floor below the first root position
    return R, origin


@dataclasses.dataclass
class WorldTrajectory:
    points: np.ndarray        # (T, J, 3) world frame, metres (Y up, floor at 0)
    root: np.ndarray          # (T, 3) world root position
    points_camera: np.ndarray  # (T, J, 3) camera frame, metres
    rotation: np.ndarray      # (3, 3) camera -> world
    origin: np.ndarray        # (3,) world origin in camera coordinates
    intrinsics: Intrinsics
    scale: float              # factor applied to the lifter's output
    floor: FloorPlane
    heading: str = "camera"   # the rule that chose the world X axis (see HEADINGS)

    @property
    def camera_position(self) -> np.ndarray:
        return self.rotation @ (-self.origin)

    def summary(self) -> dict:
        tilt = math.degrees(math.acos(float(np.clip(-self.floor.normal[1], -1, 1))))
        return {"focal_px": self.intrinsics.focal_px, "focal_source": self.intrinsics.source,
                "fov_long_side_deg": self.intrinsics.fov_long_deg, "scale": self.scale,
                "camera_height_m": float(self.camera_position[1]),
                "camera_tilt_deg": tilt, "floor_method": self.floor.method,
                "floor_candidates": self.floor.n_candidates, "floor_inliers": self.floor.n_inliers,
                "heading": self.heading}


# Points on a short segment take their leader's correction instead of their own: the foot is
# 20 cm long, so a few pixels of detector noise on heel and toes would swing its angle by
# degrees (measured on the synthetic walk at 8 px noise: ankle angle RMSE 2.5 -> 10.5 deg),
# while the lifter, seeing 27 frames, keeps the foot's shape steady.
REPROJECT_FOLLOW = {f"{side}_{pt}": f"{side}_ankle" for side in ("left", "right")
                    for pt in ("heel", "big_toe", "small_toe")}


def reproject_to_2d(cam: np.ndarray, keypoints: np.ndarray, confidence: np.ndarray | None,
                    K: Intrinsics, weight: float = 1.0, names: Sequence[str] = ()) -> np.ndarray:
    """Camera-frame points (T, J, 3) moved towards the rays of their 2D keypoints (T, J, 2)
    at unchanged depth, by ``weight`` x confidence (0: unchanged; NaN pixels: unchanged).
    Points named in :data:`REPROJECT_FOLLOW` move with their leader (when ``names`` has it)."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"reproject weight must be in [0, 1], got {weight}")
    out = np.array(cam, dtype=np.float64, copy=True)
    kp = np.asarray(keypoints, dtype=np.float64)
    z = out[..., 2]
    ok = np.isfinite(kp).all(-1) & np.isfinite(z) & (z > 1e-3)
    c = np.ones(kp.shape[:2]) if confidence is None else np.nan_to_num(
        np.clip(np.asarray(confidence, dtype=np.float64), 0.0, 1.0))
    w = np.where(ok, weight * c, 0.0)[..., None]
    ray_xy = np.stack([(kp[..., 0] - K.cx) / K.focal_px, (kp[..., 1] - K.cy) / K.focal_px], -1)
    target = np.where(ok[..., None], ray_xy * z[..., None], out[..., :2])
    delta = w * (target - out[..., :2])
    index = {n: i for i, n in enumerate(names)}
    for follower, leader in REPROJECT_FOLLOW.items():
        if follower in index and leader in index:
            delta[:, index[follower]] = delta[:, index[leader]]
    out[..., :2] += delta
    return out


def smooth_root(root: np.ndarray, time: np.ndarray | float | None, cutoff_hz: float,
                order: int = 4) -> np.ndarray:
    """Zero-lag low-pass of a (T, 3) camera-frame root trajectory.

    Each frame's solve turns the 2D noise into depth noise of about 1.5 % of the distance
    (held-out walks at 6 m, 1.5 % 2D noise, kinevid lifter: 9 cm frame to frame); the root of a
    walking or running body has little above a few hertz. At 6 Hz (order 4) the root error over
    20 cameras per held-out walk fell from 10.3 / 8.2 cm to 9.3 / 6.4 cm, and over CMU subject
    35's walks and runs from 7.3-10.7 to 4.7-8.6 cm. ``cutoff_hz`` 0 returns ``root`` unchanged;
    a cut-off at or above 0.8 x the Nyquist frequency of a low frame rate leaves it unfiltered
    too (there is then nothing below the cut-off to keep apart from the noise).
    """
    if cutoff_hz <= 0 or len(root) < 2:
        return root
    if time is None:
        raise ValueError("root_lowpass_hz needs the frame times (or the frame rate)")
    from opensim_bridge.filters import butter_lowpass, nominal_rate

    rate = float(time) if np.ndim(time) == 0 else nominal_rate(np.asarray(time, float))
    if cutoff_hz >= 0.4 * rate:
        return root
    return butter_lowpass(root, time, cutoff_hz, order)


def to_world(names: Sequence[str], pose3d: np.ndarray, keypoints: np.ndarray,
             confidence: np.ndarray | None, K: Intrinsics, stature: float, *,
             scale: float | None = None, root_index: int = 0,
             foot_heights: Mapping[str, float] | None = None,
             heading: str = "auto", reproject: float = 0.0,
             time: np.ndarray | float | None = None, root_lowpass_hz: float = 0.0,
             root_filter_order: int = 4) -> WorldTrajectory:
    """The whole chain: scale -> camera-frame root -> floor -> world points (see module notes).

    ``pose3d`` (T, J, 3) root-relative camera-axes 3D; ``keypoints`` (T, J, 2) the same joints in
    pixels (NaN where unseen), ``confidence`` (T, J). ``time`` (frame times in s, or the frame
    rate in Hz) is needed for ``root_lowpass_hz`` > 0.
    """
    P = np.asarray(pose3d, dtype=np.float64)
    if scale is None:
        scale = estimate_scale(names, P, stature, confidence)
    P = P * scale
    root = solve_root_camera(P, keypoints,
                             root_solve_confidence(names, confidence, P.shape[:2]), K)
    # frames the solver could not place take the nearest solved frame's depth (interpolated)
    ok = np.isfinite(root).all(-1)
    if not ok.any():
        raise ValueError("the subject could not be placed in any frame (too few 2D keypoints)")
    t = np.arange(len(root))
    root = np.stack([np.interp(t, t[ok], root[ok, d]) for d in range(3)], axis=1)
    root = smooth_root(root, time, root_lowpass_hz, root_filter_order)
    cam = P + root[:, None, :] - P[:, root_index: root_index + 1]
    if reproject > 0:
        cam = reproject_to_2d(cam, keypoints, confidence, K, reproject, names)
    floor = fit_floor(names, cam, stature, confidence, foot_heights=foot_heights)
    x_axis, rule = choose_heading(heading, floor, root, cam, names)
    R, origin = world_frame(floor, root, x_axis)
    world = (cam - origin) @ R.T
    return WorldTrajectory(world, (root - origin) @ R.T, cam, R, origin, K, float(scale), floor,
                           rule)
