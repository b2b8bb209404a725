"""World trajectory from real walking markers seen by a known virtual camera.

The 3D comes from the Gait2354 walking trial (real motion capture, lab frame Y up, floor at
Y = 0): its markers are projected through a tilted, rolled pinhole camera; the root-relative 3D
(in camera axes, as a lifter would give it) and the 2D pixels go through inference.trajectory,
and the recovered depth, floor and world heights are compared with the truth.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from inference.trajectory import (
    DEFAULT_FOV_DEG,
    estimate_scale,
    fit_floor,
    intrinsics_for,
    solve_root_camera,
    to_world,
)
from opensim_bridge.trc import read_trc

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WALK = DATA / "opensim-models" / "Pipelines" / "Gait2354_Simbody" / "subject01_walk1.trc"

# canonical keypoint name -> markers averaged to make it
MARKERS = {
    "mid_hip": ("R.ASIS", "L.ASIS", "V.Sacral"), "head_top": ("Top.Head",),
    "right_shoulder": ("R.Acromium",), "left_shoulder": ("L.Acromium",),
    "right_elbow": ("R.Elbow",), "left_elbow": ("L.Elbow",),
    "right_wrist": ("R.Wrist.Med", "R.Wrist.Lat"), "left_wrist": ("L.Wrist.Med", "L.Wrist.Lat"),
    "right_knee": ("R.Shank.Upper",), "left_knee": ("L.Shank.Upper",),
    "right_heel": ("R.Heel",), "left_heel": ("L.Heel",),
    "right_big_toe": ("R.Toe.Tip",), "left_big_toe": ("L.Toe.Tip",),
}


STATIC = WALK.with_name("subject01_static.trc")


def _walk(path=WALK):
    s = read_trc(path).to_metres()
    names = list(MARKERS)
    pts = np.stack([np.mean([s[m] for m in MARKERS[n]], axis=0) for n in names], axis=1)
    keep = np.isfinite(pts).all(axis=(1, 2))
    return names, pts[keep]


def _camera(pitch_deg: float, roll_deg: float, position: np.ndarray, target: np.ndarray):
    """Rotation lab -> camera (rows: camera x right, y down, z forward) looking at ``target``."""
    fwd = target - position
    fwd[1] = 0.0
    fwd /= np.linalg.norm(fwd)
    up = np.array([0.0, 1.0, 0.0])
    right = np.cross(fwd, up)
    R0 = np.stack([right, -up, fwd])                 # level camera
    p, r = math.radians(pitch_deg), math.radians(roll_deg)
    pitch = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    roll = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return roll @ pitch @ R0


def _project(cam_pts, f, cx, cy):
    return np.stack([f * cam_pts[..., 0] / cam_pts[..., 2] + cx,
                     f * cam_pts[..., 1] / cam_pts[..., 2] + cy], axis=-1)


@pytest.mark.parametrize("pitch,roll,noise_px", [(8.0, 0.0, 0.0), (12.0, 4.0, 1.0)])
def test_depth_floor_and_heights_recovered(pitch, roll, noise_px):
    names, lab = _walk()
    centre = lab[:, 0].mean(axis=0)
    position = centre + np.array([0.3, 1.3 - centre[1], 4.5])   # beside the walkway, 1.3 m high
    R = _camera(pitch, roll, position, centre)
    cam = (lab - position) @ R.T
    K = intrinsics_for((1920, 1080), fov_deg=65.0)
    uv = _project(cam, K.focal_px, K.cx, K.cy)
    uv = uv + np.random.default_rng(3).normal(0, noise_px, uv.shape)
    rel = cam - cam[:, :1]
    conf = np.ones(uv.shape[:2])

    root = solve_root_camera(rel, uv, conf, K)
    depth_err = np.abs(root[:, 2] - cam[:, 0, 2]) / cam[:, 0, 2]
    assert np.median(depth_err) < 0.01 and depth_err.max() < 0.04

    # the markers' own height above the sole, from the static trial (standing on the floor)
    snames, static = _walk(STATIC)
    feet = {n: float(np.median(static[:, snames.index(n), 1])) for n in
            ("right_heel", "left_heel", "right_big_toe", "left_big_toe")}
    wt = to_world(names, rel, uv, conf, K, stature=1.80, scale=1.0, foot_heights=feet)
    # the floor's normal is the lab's vertical, seen from the camera
    up_cam = R @ np.array([0.0, 1.0, 0.0])
    angle = math.degrees(math.acos(np.clip(wt.floor.normal @ up_cam, -1, 1)))
    assert angle < 2.0
    # world heights are the lab heights (floor at 0)
    err = wt.points[..., 1] - lab[..., 1]
    assert np.median(np.abs(err)) < 0.03
    heels = [names.index("right_heel"), names.index("left_heel")]
    assert abs(np.percentile(wt.points[:, heels, 1], 2) - np.percentile(lab[:, heels, 1], 2)) < 0.03
    # metric placement on the floor: horizontal distance from the camera to the pelvis
    cam_xz = wt.camera_position[[0, 2]]
    dist = np.linalg.norm(wt.root[:, [0, 2]] - cam_xz, axis=1)
    truth = np.linalg.norm(lab[:, 0, [0, 2]] - position[[0, 2]], axis=1)
    assert np.median(np.abs(dist - truth) / truth) < 0.02
    # 1 deg of floor tilt moves a camera 4.5 m away by 8 cm
    assert abs(wt.camera_position[1] - position[1]) < 0.1


def test_scale_from_stature_and_limb_lengths():
    names, lab = _walk()
    rel = lab - lab[:, :1]
    s1 = estimate_scale(names, rel, 1.80)
    s2 = estimate_scale(names, 0.5 * rel, 1.80)
    assert s2 == pytest.approx(2 * s1, rel=1e-9)
    # the subject's own limbs give a plausible stature: within 15 % of 1.8 m scaled
    assert 0.8 < s1 < 1.25


def test_intrinsics_sources():
    K = intrinsics_for((1920, 1080))
    assert K.fov_long_deg == pytest.approx(DEFAULT_FOV_DEG)
    assert "default" in K.source
    K = intrinsics_for((1080, 1920), fov_deg=70)
    assert K.fov_long_deg == pytest.approx(70)
    K = intrinsics_for((1920, 1080), metadata={"focal_length_35mm": 26})
    assert "metadata" in K.source and 60 < K.fov_long_deg < 75
    assert intrinsics_for((640, 480), focal_px=500).focal_px == 500


def test_floor_fallback_without_contacts_spread():
    names = ["mid_hip", "neck", "left_ankle", "right_ankle"]
    pts = np.zeros((1, 4, 3))
    pts[0] = [[0, 0, 3], [0, -0.5, 3], [-0.1, 0.9, 3], [0.1, 0.9, 3]]
    fl = fit_floor(names, pts, 1.8)
    assert fl.method == "body-vertical fallback"
    assert fl.normal @ np.array([0, -1.0, 0]) > 0.99


@pytest.mark.parametrize("yaw_deg", [25.0, -60.0])
def test_world_x_follows_the_walk_not_the_camera(yaw_deg):
    """The walk runs along the lab's X; a camera seeing it obliquely must not turn the world:
    with heading auto the world X is the direction of travel (a gait lab's convention), with
    'facing' the pelvis' forward direction, with 'camera' the camera's x axis on the floor."""
    hips = {"right_hip": ("R.ASIS",), "left_hip": ("L.ASIS",)}
    s = read_trc(WALK).to_metres()
    names = list(MARKERS) + list(hips)
    table = {**MARKERS, **hips}
    lab = np.stack([np.mean([s[m] for m in table[n]], axis=0) for n in names], axis=1)
    keep = np.isfinite(lab).all(axis=(1, 2))
    # the trial's pelvis stays near x = 0.55 m (a treadmill-like capture volume): move it
    # along the lab's X at 1.2 m/s, as the same gait over ground
    lab = lab[keep] + np.outer(1.2 * s.time[keep], [1.0, 0.0, 0.0])[:, None, :]
    centre = lab[:, 0].mean(axis=0)
    a = math.radians(yaw_deg)
    # the camera looks at the walkway's middle from 5 m, its view turned by yaw from the side
    position = centre + 5.0 * np.array([math.sin(a), 0.0, math.cos(a)])
    position[1] = 1.3
    R = _camera(8.0, 0.0, position, centre)
    cam = (lab - position) @ R.T
    K = intrinsics_for((1920, 1080), fov_deg=65.0)
    uv = _project(cam, K.focal_px, K.cx, K.cy)
    rel = cam - cam[:, :1]
    conf = np.ones(uv.shape[:2])

    def angle_to_lab_x(wt):
        travel = wt.root[-1] - wt.root[0]
        return math.degrees(math.atan2(travel[2], travel[0]))

    auto = to_world(names, rel, uv, conf, K, stature=1.80, scale=1.0)
    assert auto.heading == "travel" and auto.summary()["heading"] == "travel"
    assert abs(angle_to_lab_x(auto)) < 2.0      # the pelvis sways sideways by +-3 cm
    facing = to_world(names, rel, uv, conf, K, stature=1.80, scale=1.0, heading="facing")
    assert abs(angle_to_lab_x(facing)) < 10.0
    # the lab's right (+Z) is the world's right: a right-handed frame, not a mirrored one
    r = names.index("right_hip")
    l_ = names.index("left_hip")
    assert np.median(auto.points[:, r, 2] - auto.points[:, l_, 2]) > 0.1
    camera = to_world(names, rel, uv, conf, K, stature=1.80, scale=1.0, heading="camera")
    assert camera.heading == "camera"
    assert abs(abs(angle_to_lab_x(camera)) - abs(yaw_deg)) < 2.0
    with pytest.raises(ValueError, match="heading"):
        to_world(names, rel, uv, conf, K, stature=1.80, scale=1.0, heading="north")


def test_standing_still_keeps_the_facing_direction():
    names, lab = _walk(STATIC)
    hips = {"right_hip": ("R.ASIS",), "left_hip": ("L.ASIS",)}
    s = read_trc(STATIC).to_metres()
    extra = np.stack([np.mean([s[m] for m in hips[n]], axis=0) for n in hips], axis=1)
    keep = np.isfinite(extra).all(axis=(1, 2))
    lab = np.concatenate([lab, extra[keep][: len(lab)]], axis=1)
    names = names + list(hips)
    centre = lab[:, 0].mean(axis=0)
    position = centre + np.array([3.0, 1.3 - centre[1], 3.0])   # 45 deg off the subject's side
    R = _camera(8.0, 0.0, position, centre)
    cam = (lab - position) @ R.T
    K = intrinsics_for((1920, 1080), fov_deg=65.0)
    uv = _project(cam, K.focal_px, K.cx, K.cy)
    wt = to_world(names, cam - cam[:, :1], uv, np.ones(uv.shape[:2]), K, stature=1.80, scale=1.0)
    assert wt.heading == "facing"
    # facing the lab's +X: the right hip is at +Z, and the hips' line is across X
    r, l_ = names.index("right_hip"), names.index("left_hip")
    d = np.median(wt.points[:, r] - wt.points[:, l_], axis=0)
    assert d[2] > 0.15 and abs(d[0]) < 0.05


def test_reprojection_moves_points_onto_their_rays_at_their_depth():
    from inference.trajectory import reproject_to_2d

    K = intrinsics_for((1920, 1080), focal_px=1500.0)
    rng = np.random.default_rng(8)
    truth = rng.uniform([-0.5, -0.8, 4.0], [0.5, 0.8, 6.0], (10, 5, 3))
    uv = _project(truth, K.focal_px, K.cx, K.cy)
    lifted = truth + np.concatenate([rng.normal(0, 0.05, (10, 5, 2)), np.zeros((10, 5, 1))], -1)
    conf = np.ones((10, 5))
    names = ["right_knee", "right_ankle", "right_heel", "right_big_toe", "nose"]
    full = reproject_to_2d(lifted, uv, conf, K, 1.0)
    np.testing.assert_allclose(full, truth, atol=1e-9)          # same depth, exact rays
    half = reproject_to_2d(lifted, uv, 0.5 * conf, K, 1.0)
    np.testing.assert_allclose(half, 0.5 * (lifted + truth), atol=1e-9)
    assert np.array_equal(reproject_to_2d(lifted, uv, conf, K, 0.0), lifted)
    # an unseen keypoint keeps the lifter's position
    uv_gap = uv.copy()
    uv_gap[3, 4] = np.nan
    np.testing.assert_allclose(reproject_to_2d(lifted, uv_gap, conf, K, 1.0)[3, 4], lifted[3, 4])
    # heel and toe keep the foot's lifted shape: they move with the ankle
    moved = reproject_to_2d(lifted, uv, conf, K, 1.0, names)
    np.testing.assert_allclose(moved[:, 2] - lifted[:, 2], moved[:, 1] - lifted[:, 1], atol=1e-12)
    np.testing.assert_allclose(moved[:, 3] - lifted[:, 3], moved[:, 1] - lifted[:, 1], atol=1e-12)
    np.testing.assert_allclose(moved[:, [0, 1, 4]], truth[:, [0, 1, 4]], atol=1e-9)
    with pytest.raises(ValueError, match="reproject"):
        reproject_to_2d(lifted, uv, conf, K, 1.5)


def test_root_solve_leaves_the_hands_out():
    """Hands pulled towards the body (as a lifter regressing to the mean pulls them) move the
    subject in depth when they take part in the root solve; left out, they do not."""
    from inference.trajectory import Intrinsics, root_solve_confidence
    names, pts = _walk()
    pts = pts[::10]
    root = pts[:, names.index("mid_hip")]
    cam = pts - root[:, None] + np.array([0.0, 0.0, 5.0])     # 5 m in front, camera axes
    cam[..., 1] *= -1.0                                     # y down
    K = Intrinsics(1500.0, 960.0, 540.0, 1920, 1080, "test")
    uv = _project(cam, K.focal_px, K.cx, K.cy)
    rel = cam - cam[:, names.index("mid_hip")][:, None]
    shrunk = rel.copy()
    for n in ("left_wrist", "right_wrist"):                 # hands 15 cm closer to the pelvis
        j = names.index(n)
        shrunk[:, j] -= 0.15 * shrunk[:, j] / np.linalg.norm(shrunk[:, j], axis=-1, keepdims=True)
    conf = np.ones(uv.shape[:2])
    w = root_solve_confidence(names, conf, conf.shape)
    assert (w[:, [names.index("left_wrist"), names.index("right_wrist")]] == 0).all()
    assert (w[:, names.index("left_knee")] == 1).all()
    with_hands = solve_root_camera(shrunk, uv, conf, K)[:, 2]
    without = solve_root_camera(shrunk, uv, w, K)[:, 2]
    assert np.abs(without - 5.0).max() < 1e-6
    assert np.abs(with_hands - 5.0).mean() > 0.002                 # 5 mm here
    # a frame with too few other points keeps its hands
    few = np.zeros_like(conf)
    few[:, [names.index("left_wrist"), names.index("right_wrist"), names.index("mid_hip")]] = 1
    np.testing.assert_array_equal(root_solve_confidence(names, few, few.shape), few)


def test_root_low_pass_removes_depth_noise_and_keeps_the_walk():
    """Each frame's solve turns 2D noise into depth noise; the low-passed root is closer to the
    true one in every axis, while the pelvis's own motion (the walk's 60 Hz markers, resampled
    to 30 fps) passes through the filter intact."""
    from inference.trajectory import root_solve_confidence, smooth_root
    names, lab = _walk()
    lab = lab[::2]                                            # 60 Hz trial -> 30 fps video
    centre = lab[:, 0].mean(axis=0)
    position = centre + np.array([0.3, 1.3 - centre[1], 6.0])
    R = _camera(8.0, 0.0, position, centre)
    cam = (lab - position) @ R.T
    K = intrinsics_for((1920, 1080), fov_deg=60.0)
    uv = _project(cam, K.focal_px, K.cx, K.cy)
    noisy = uv + np.random.default_rng(5).normal(0, 3.0, uv.shape)
    rel = cam - cam[:, :1]
    conf = np.ones(uv.shape[:2])
    truth = cam[:, 0]
    # the filter alone leaves the true trajectory as it is (mm)
    assert np.abs(smooth_root(truth, 30.0, 6.0) - truth).max() < 0.003
    raw = solve_root_camera(rel, noisy, root_solve_confidence(names, conf, conf.shape), K)
    smooth = smooth_root(raw, np.arange(len(raw)) / 30.0, 6.0)
    err_raw = np.linalg.norm(raw - truth, axis=1).mean()
    err_smooth = np.linalg.norm(smooth - truth, axis=1).mean()
    assert err_raw > 0.02 and err_smooth < 0.8 * err_raw      # white noise: 6 of 15 Hz kept
    # to_world applies it when asked, and only then
    off = to_world(names, rel, noisy, conf, K, stature=1.80, scale=1.0)
    on = to_world(names, rel, noisy, conf, K, stature=1.80, scale=1.0, time=30.0,
                  root_lowpass_hz=6.0)
    np.testing.assert_allclose(off.points_camera[:, 0], raw, atol=1e-9)
    np.testing.assert_allclose(on.points_camera[:, 0], smooth, atol=1e-9)
    # 0 = off; a cut-off near Nyquist of a low frame rate leaves it; no times is an error
    np.testing.assert_array_equal(smooth_root(raw, 30.0, 0.0), raw)
    np.testing.assert_array_equal(smooth_root(raw, 12.0, 6.0), raw)
    with pytest.raises(ValueError, match="frame times"):
        smooth_root(raw, None, 6.0)
