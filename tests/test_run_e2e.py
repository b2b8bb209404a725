"""``kinevid run`` end to end.

1. Synthetic, from real motion: the Gait2354 walk's reference IK drives the built-in model
   (forward kinematics of its keypoint markers), a virtual camera 5 m to the side projects them
   (known intrinsics), detector-like pixel noise is added, and the result, a HALPE-26 Pose2D
   with confidences, goes through ``kinevid run --from-pose2d``: lift -> scale -> IK. The
   recovered hip, knee and ankle flexion must be within 6 deg RMSE of the source IK.
2. A real video (Pose2Sim Demo_SinglePerson cam01, 100 frames), offline: every output exists,
   the scaled model initialises, ik.mot's columns are its coordinates, ezc3d reads motion.c3d.

Both need kinevid's shipped lifter (models/weights/kinevid_lifter.pt); without it they fail
with that message (never skip).

The helpers here (forward kinematics, camera, Pose2D) are also used by test_pipeline.py.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conftest import REPO, data_path

GAIT_IK = ("opensim-models", "Pipelines", "Gait2354_Simbody", "subject01_walk1_ik.mot")
VIDEO = ("pose2sim", "Pose2Sim", "Demo_SinglePerson", "videos", "cam01.mp4")
LIFTER = REPO / "models" / "weights" / "kinevid_lifter.pt"

# Gait2354 coordinate -> (built-in model coordinate, sign). Gait2354's knee angle is negative in
# flexion, Rajagopal's (the built-in model's convention) positive.
COORDINATE_MAP = {
    **{c: (c, 1.0) for c in ("pelvis_tilt", "pelvis_list", "pelvis_rotation", "pelvis_tx",
                             "pelvis_ty", "pelvis_tz", "lumbar_extension", "lumbar_bending",
                             "lumbar_rotation")},
    **{f"{c}_{s}": (f"{c}_{s}", 1.0) for s in ("r", "l")
       for c in ("hip_flexion", "hip_adduction", "hip_rotation", "ankle_angle",
                 "subtalar_angle", "mtp_angle")},
    "knee_angle_r": ("knee_angle_r", -1.0), "knee_angle_l": ("knee_angle_l", -1.0),
}
FLEXION = ("hip_flexion_r", "hip_flexion_l", "knee_angle_r", "knee_angle_l", "ankle_angle_r",
           "ankle_angle_l")


def require_lifter() -> None:
    if not LIFTER.is_file():
        pytest.fail(f"kinevid's shipped lifter weights are missing ({LIFTER}); the end-to-end "
                    "test needs them: train them with models/train_lifter.py")


# --------------------------------------------------------------------------- synthetic data
def source_motion():
    """The Gait2354 walk's reference IK, as built-in model coordinates (a Table, degrees/m)."""
    from opensim_bridge.storage import Table, read_table

    src = read_table(data_path(*GAIT_IK))
    labels = [COORDINATE_MAP[c][0] for c in src.labels if c in COORDINATE_MAP]
    cols = [COORDINATE_MAP[c][1] * src[c] for c in src.labels if c in COORDINATE_MAP]
    return Table(src.time, labels, np.stack(cols, axis=1), in_degrees=True, name="source")


def forward_kinematics(model_path, motion, names) -> np.ndarray:
    """(frames, markers, 3) ground positions of ``names`` on the model driven by ``motion``,
    the whole trajectory shifted so the lowest foot keypoint touches y = 0."""
    import opensim as osim

    from opensim_bridge.builtin_model import TRANSLATIONAL_COORDINATES

    model = osim.Model(str(model_path))
    state = model.initSystem()
    cs, ms = model.getCoordinateSet(), model.getMarkerSet()
    coords = [(cs.get(c), motion.index(c), c in TRANSLATIONAL_COORDINATES) for c in motion.labels]
    markers = [ms.get(n) for n in names]
    out = np.empty((len(motion.time), len(names), 3))
    for i in range(len(motion.time)):
        for coord, j, metres in coords:
            v = motion.data[i, j]
            coord.setValue(state, float(v if metres else math.radians(v)), False)
        model.realizePosition(state)
        for k, m in enumerate(markers):
            out[i, k] = m.getLocationInGround(state).to_numpy()
    feet = [k for k, n in enumerate(names) if n[1:] in ("Heel", "BigToe", "SmallToe")]
    out[..., 1] -= out[:, feet, 1].min()
    return out


def keypoint_series(model_path, motion):
    from opensim_bridge.builtin_model import KEYPOINT_MARKERS
    from opensim_bridge.timeseries import KeypointSeries

    pts = forward_kinematics(model_path, motion, KEYPOINT_MARKERS)
    return KeypointSeries(motion.time, KEYPOINT_MARKERS, pts, units="m", source="synthetic FK")


class Camera:
    """A pinhole camera ``distance`` m from the walkway's middle, seen from the subject's right
    side turned by ``yaw_deg``; x right, y down, z forward in the camera frame."""

    def __init__(self, target, distance=5.0, yaw_deg=25.0, height=1.3, size=(1920, 1080),
                 focal_px=1500.0):
        yaw = math.radians(yaw_deg)
        self.centre = np.asarray(target, float) + np.array(
            [distance * math.sin(yaw), height - target[1], distance * math.cos(yaw)])
        f = np.asarray(target, float) - self.centre
        f /= np.linalg.norm(f)
        r = np.cross(f, [0.0, 1.0, 0.0])
        r /= np.linalg.norm(r)
        d = np.cross(f, r)
        self.R = np.stack([r, d, f])           # rows: camera axes in world
        self.size, self.focal = size, focal_px

    def project(self, pts: np.ndarray) -> np.ndarray:
        cam = (pts - self.centre) @ self.R.T
        uv = self.focal * cam[..., :2] / cam[..., 2:3]
        return uv + np.array(self.size) / 2.0


def synthetic_pose2d(keypoints, noise_px=2.5, seed=0, **camera):
    """A HALPE-26 Pose2D of ``keypoints`` (built-in marker names) seen by a :class:`Camera`,
    with Gaussian pixel noise and detector-like confidences; returns (pose, camera)."""
    from inference.layouts import get_layout
    from inference.lift import MARKER_FOR
    from inference.pose2d import Pose2D

    names = get_layout("halpe26").names
    idx = [keypoints.index(MARKER_FOR[n]) for n in names]
    pts = keypoints.data[:, idx]
    target = np.nanmean(keypoints.data[:, keypoints.index("Hip")], axis=0)
    cam = Camera(target, **camera)
    rng = np.random.default_rng(seed)
    uv = cam.project(pts) + rng.normal(0.0, noise_px, pts.shape[:2] + (2,))
    conf = np.clip(rng.normal(0.85, 0.05, pts.shape[:2]), 0.5, 0.99)
    n = len(keypoints.time)
    pose = Pose2D.from_arrays(np.arange(n), keypoints.time, [0], uv[None], conf[None], "halpe26",
                              video_size=cam.size, source="synthetic camera",
                              model="synthetic", subject=0,
                              extra={"focal_px": cam.focal})
    return pose, cam


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("tier", ["standard", "light"])
def test_synthetic_end_to_end_recovers_the_source_joint_angles(tmp_path, tier):
    """Standard tier, and the light tier (its 2D being given, what changes is IK: joint limits,
    solved at 15 Hz, here every 4th of the 60 fps frames, and interpolated between)."""
    require_lifter()
    from inference.cli import main
    from opensim_bridge.builtin_model import write_builtin_model
    from opensim_bridge.storage import read_table

    height, mass = 1.80, 72.6
    model = write_builtin_model(tmp_path / "truth.osim", height=height, mass=mass)
    motion = source_motion()
    pose, cam = synthetic_pose2d(keypoint_series(model, motion))
    pose.write(tmp_path / "pose2d.npz")
    out = tmp_path / "out"
    code = main(["run", "--from-pose2d", str(tmp_path / "pose2d.npz"), "--height", str(height),
                 "--mass", str(mass), "--focal-px", str(cam.focal), "--no-blender", "--no-c3d",
                 "--tier", tier, "-o", str(out)])
    assert code == 0
    got = read_table(out / "ik.mot")
    run = json.loads((out / "run.json").read_text())
    ik_info = next(s for s in run["stages"] if s["name"] == "ik")["info"]
    assert ik_info["stride"] == (4 if tier == "light" else 1)
    errors = {}
    for c in motion.labels:
        if c.startswith("pelvis_t"):
            continue
        ref = motion[c]
        est = np.interp(motion.time, got.time, got[c])
        errors[c] = float(np.sqrt(np.mean((est - ref) ** 2)))
    print(f"\nsynthetic end to end (Gait2354 walk -> camera -> 2D noise 2.5 px -> kinevid run, "
          f"{tier} tier), RMSE per coordinate, deg:")
    for c, e in sorted(errors.items()):
        print(f"  {c:<18} {e:6.2f}{'  <- flexion, limit 6' if c in FLEXION else ''}")
    bad = {c: round(errors[c], 2) for c in FLEXION if not errors[c] <= 6.0}
    assert not bad, f"flexion RMSE above 6 deg: {bad}"


def test_real_video_end_to_end(tmp_path):
    require_lifter()
    import ezc3d
    import opensim as osim

    from inference.cli import main
    from opensim_bridge.storage import read_table

    video = data_path(*VIDEO)
    out = tmp_path / "out"
    code = main(["run", str(video), "--height", "1.75", "--mass", "70", "--pose", "blazepose",
                 "-o", str(out)])
    assert code == 0
    for name in ("pose2d.npz", "pose2d.json", "pose2d_overlay.mp4", "markers.trc",
                 "model_scaled.osim", "ik.mot", "ik_marker_errors.sto", "grf.mot",
                 "external_loads.xml", "id.sto", "motion.c3d", "scale_setup.xml", "ik_setup.xml",
                 "id_setup.xml", "motion.kvb", "run.json"):
        assert (out / name).is_file(), name
    model = osim.Model(str(out / "model_scaled.osim"))
    model.initSystem()
    cs = model.getCoordinateSet()
    coords = {cs.get(i).getName() for i in range(cs.getSize())}
    ik = read_table(out / "ik.mot")
    assert set(ik.labels) == coords
    c3d = ezc3d.c3d(str(out / "motion.c3d"))
    labels = c3d["parameters"]["POINT"]["LABELS"]["value"]
    assert "RKnee" in labels and any(label.endswith("KneeAngles") for label in labels)
    assert c3d["data"]["points"].shape[2] == len(ik.time)
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete"
    assert run["weights"]["lifter"]["sha256"]
    assert {s["name"] for s in run["stages"]} >= {"pose2d", "lift", "scale", "ik", "id", "c3d"}
    assert "blazepose" in run["stages"][0]["info"]["backend_label"]


def test_light_tier_end_to_end(tmp_path):
    """``--tier light`` on a 60 fps clip: every 2nd frame (30 fps), two readers, one person, no
    overlay video, joint limits, IK solved at 15 Hz; the outputs are those of a standard run at
    that rate."""
    require_lifter()
    from inference.cli import main
    from opensim_bridge.storage import read_table

    video = data_path("pose2sim", "Pose2Sim", "Demo_SinglePerson", "videos", "cam02.mp4")
    out = tmp_path / "light"
    assert main(["run", str(video), "--height", "1.75", "--mass", "70", "--tier", "light",
                 "-o", str(out)]) == 0
    assert not (out / "pose2d_overlay.mp4").exists()
    for name in ("markers.trc", "ik.mot", "grf.mot", "id.sto", "motion.c3d", "run.json"):
        assert (out / name).is_file(), name
    run = json.loads((out / "run.json").read_text())
    assert run["settings"]["run"]["tier"] == "light"
    assert run["settings_sources"]["pose2d.max_fps"] == "--tier light"
    stages = {s["name"]: s for s in run["stages"]}
    assert "overlay" not in stages or stages["overlay"]["status"] != "ran"
    p2d = stages["pose2d"]["info"]
    assert p2d["step"] == 2 and p2d["frames"] == 50
    # 50 frames, every 2nd of a 60 fps clip: 100/60 s of video, and the factor is wall / that
    assert run["video_s"] == pytest.approx(100 / 60, abs=1e-3)
    assert run["real_time_factor"] == pytest.approx(run["total_wall_s"] / run["video_s"],
                                                    rel=1e-2)
    ik = read_table(out / "ik.mot")
    assert np.median(np.diff(ik.time)) == pytest.approx(1 / 30, abs=1e-6)
    assert stages["ik"]["info"]["joint_limits"]
    # IK solved at 15 Hz (every 2nd of the 30 fps frames), the frames between filled
    assert stages["ik"]["info"]["stride"] == 2 and not np.isnan(ik.data).any()
    lim = run["quality"]["at_joint_limits"]
    assert lim["of_frames"] == len(ik.time)
    assert set(lim["coordinates"]) <= set(stages["ik"]["info"]["joint_limits"])
    knee = ik.column("knee_angle_r")
    assert np.nanmin(knee) >= -1e-6 and np.nanmax(knee) <= 120 + 1e-6
