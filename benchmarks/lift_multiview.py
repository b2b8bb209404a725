"""The lifter on real video, against a 4-camera triangulation of the same detector.

Pose2Sim's Demo_SinglePerson was filmed by four calibrated cameras (Qualisys ``Calib.qca.txt``).
BlazePose's 2D from all four views, undistorted and triangulated (confidence-weighted linear
DLT per keypoint and frame), gives a multi-view 3D of the subject with no lifting in it. The
monocular result of ``kinevid run`` on one view (its ``keypoints3d.npz``: lifted, placed by
``inference.trajectory``, back-projected onto that view's 2D) is compared with it in that
camera's frame, root-relative (mid-hip = mean of the hips):

* MPJPE and P-MPJPE (per-frame similarity alignment) per joint, mm;
* the triangulation's own reprojection error (px), the quality of the reference.

Caveat: the lifter outputs joint centres of kinevid's built-in model while the reference is the
detector's keypoints (BlazePose hips sit higher and wider than hip joint centres), so part of
the error is definition, not lifting; P-MPJPE removes the scale and rotation part of it.

    .venv/bin/python benchmarks/lift_multiview.py [--frames 100] [--view cam01] [--out DIR]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("GLOG_minloglevel", "2")
DEMO = REPO.parent / "shared" / "data" / "pose2sim" / "Pose2Sim" / "Demo_SinglePerson"
CAMS = ("cam01", "cam02", "cam03", "cam04")
# reference keypoints (BlazePose names) and the lifted point compared with each
JOINTS = {n: n for n in (
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "nose", "left_eye", "right_eye", "left_ear", "right_ear")}
JOINTS.update({"left_foot_index": "left_big_toe", "right_foot_index": "right_big_toe"})


def read_qca(path: Path) -> dict[str, dict]:
    """Camera name -> {K (3x3), dist (k1, k2, p1, p2, k3), R, t (world -> camera, metres)}.

    QCA stores intrinsics in 1/64 pixel units, the camera centre in millimetres and a rotation
    whose rows are the camera axes with y up and z backwards; turned to OpenCV's y down, z
    forward (diag(1, -1, -1)). Of the five readings tried, this one alone puts the subject in
    front of every camera and reprojects the triangulation within about 13 px (the others:
    100-2500 px)."""
    from defusedxml import ElementTree

    cams = {}
    for cam in ElementTree.parse(path).getroot().iter("camera"):
        tr, it = cam.find("transform"), cam.find("intrinsic")
        f = lambda e, k: float(e.get(k))
        r = np.array([[f(tr, f"r{i}{j}") for j in (1, 2, 3)] for i in (1, 2, 3)])
        c = np.array([f(tr, "x"), f(tr, "y"), f(tr, "z")]) / 1000.0
        K = np.array([[f(it, "focalLengthU") / 64, 0, f(it, "centerPointU") / 64],
                      [0, f(it, "focalLengthV") / 64, f(it, "centerPointV") / 64], [0, 0, 1]])
        dist = np.array([f(it, "radialDistortion1"), f(it, "radialDistortion2"),
                         f(it, "tangentalDistortion1"), f(it, "tangentalDistortion2"),
                         f(it, "radialDistortion3")])
        R = np.diag([1.0, -1.0, -1.0]) @ r
        cams[cam.get("serial")] = {"K": K, "dist": dist, "R": R, "t": -R @ c}
    return cams


def undistort(px: np.ndarray, cam: dict) -> np.ndarray:
    """Pixels (..., 2) -> normalised image coordinates (..., 2), lens distortion removed."""
    import cv2

    flat = px.reshape(-1, 1, 2).astype(np.float64)
    ok = np.isfinite(flat).all(-1)[:, 0]
    out = np.full(flat.shape, np.nan)
    if ok.any():
        out[ok] = cv2.undistortPoints(flat[ok], cam["K"], cam["dist"])
    return out.reshape(px.shape)


def triangulate(norm: np.ndarray, conf: np.ndarray, cams: list[dict], min_views: int = 2):
    """norm (V, T, J, 2) normalised coordinates, conf (V, T, J) -> (T, J, 3) world points."""
    V, T, J, _ = norm.shape
    out = np.full((T, J, 3), np.nan)
    for t in range(T):
        for j in range(J):
            rows = []
            for v in range(V):
                x = norm[v, t, j]
                if not np.isfinite(x).all() or conf[v, t, j] < 0.3:
                    continue
                P = np.hstack([cams[v]["R"], cams[v]["t"][:, None]])
                w = conf[v, t, j]
                rows += [w * (x[0] * P[2] - P[0]), w * (x[1] * P[2] - P[1])]
            if len(rows) >= 2 * min_views:
                X = np.linalg.svd(np.array(rows))[2][-1]
                out[t, j] = X[:3] / X[3]
    return out


def project(world: np.ndarray, cam: dict) -> np.ndarray:
    import cv2

    pts = world.reshape(-1, 3)
    ok = np.isfinite(pts).all(-1)
    px = np.full((len(pts), 2), np.nan)
    if ok.any():
        rvec = cv2.Rodrigues(cam["R"])[0]
        px[ok] = cv2.projectPoints(pts[ok], rvec, cam["t"], cam["K"], cam["dist"])[0][:, 0]
    return px.reshape(world.shape[:-1] + (2,))


def procrustes(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    from models.evaluate_lifter import procrustes_aligned
    return procrustes_aligned(pred, gt)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--view", default="cam01", choices=CAMS)
    ap.add_argument("--height", type=float, default=1.72)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--lifter", default="kinevid", help="as kinevid run --lifter")
    a = ap.parse_args(argv)
    from inference.cli import main as kinevid
    from inference.layouts import get_layout
    from inference.pose2d import read_pose2d

    out = a.out or Path(tempfile.mkdtemp(prefix="kinevid_multiview_"))
    names = get_layout("blazepose33").names
    qca = read_qca(DEMO / "calibration" / "Calib.qca.txt")
    kp, cf = [], []
    for cam in CAMS:
        d = out / cam
        if cam == a.view:   # the monocular pipeline, whose lift is evaluated
            args = ["run", str(DEMO / "videos" / f"{cam}.mp4"), "--height", str(a.height),
                    "--mass", "70", "--max-frames", str(a.frames), "--no-c3d", "--no-blender",
                    "--set", "pose2d.overlay=false", "--lifter", a.lifter, "-o", str(d)]
        else:
            args = ["pose2d", str(DEMO / "videos" / f"{cam}.mp4"), "--max-frames",
                    str(a.frames), "--no-overlay", "-o", str(d)]
        # the monocular run always runs: its stages are reused when nothing changed
        if not (d / "pose2d.npz").is_file() or cam == a.view:
            if kinevid(args) != 0:
                print(f"{cam}: kinevid {args[0]} failed")
                return 1
        pose = read_pose2d(d / "pose2d.npz")
        tr = pose.tracks[pose.subject]
        kp.append(tr.data[: a.frames])
        cf.append(np.nan_to_num(tr.weights()[: a.frames]))
    T = min(len(k) for k in kp)
    kp = np.stack([k[:T] for k in kp])
    cf = np.stack([c[:T] for c in cf])
    cams = [qca[c] for c in CAMS]
    norm = np.stack([undistort(kp[v], cams[v]) for v in range(len(CAMS))])
    world = triangulate(norm, cf, cams)
    reproj = np.stack([np.linalg.norm(project(world, cams[v]) - kp[v], axis=-1)
                       for v in range(len(CAMS))])
    good = cf >= 0.3
    print(f"triangulation of BlazePose over {len(CAMS)} views, {T} frames: reprojection error "
          f"median {np.nanmedian(reproj[good]):.1f} px, 90th percentile "
          f"{np.nanpercentile(reproj[good], 90):.1f} px (image 1080x1920)")

    lifted = np.load(out / a.view / "keypoints3d.npz")
    import json
    lnames = json.loads(str(lifted["header"]))["names"]
    lcam = lifted["points_camera"][:T]                           # (T, J, 3) camera frame
    v = CAMS.index(a.view)
    ref_cam = world @ cams[v]["R"].T + cams[v]["t"]
    ref_root = 0.5 * (ref_cam[:, names.index("left_hip")] + ref_cam[:, names.index("right_hip")])
    est_root = 0.5 * (lcam[:, lnames.index("left_hip")] + lcam[:, lnames.index("right_hip")])
    ref = np.stack([ref_cam[:, names.index(n)] for n in JOINTS], 1) - ref_root[:, None]
    est = np.stack([lcam[:, lnames.index(m)] for m in JOINTS.values()], 1) - est_root[:, None]
    ok = np.isfinite(ref).all((1, 2)) & np.isfinite(est).all((1, 2))
    e = np.linalg.norm(est[ok] - ref[ok], axis=-1) * 1000
    pa = np.linalg.norm(procrustes(est[ok], ref[ok]) - ref[ok], axis=-1) * 1000
    depth = np.abs(est[ok][..., 2] - ref[ok][..., 2]).mean() * 1000
    lateral = np.abs(est[ok][..., :2] - ref[ok][..., :2]).mean() * 1000
    root_dist = np.linalg.norm(est_root - ref_root, axis=-1)[ok]
    root_depth = (est_root - ref_root)[ok, 2]
    print(f"monocular {a.view} (kinevid run: lift + placement + back-projection) vs the "
          f"triangulation, {ok.sum()} frames, root-relative, camera frame:")
    print(f"  MPJPE {e.mean():.1f} mm, P-MPJPE {pa.mean():.1f} mm; mean |error| x/y {lateral:.1f} mm, "
          f"depth {depth:.1f} mm; root position error median {100 * np.median(root_dist):.1f} cm "
          f"at {np.median(np.linalg.norm(ref_root[ok], axis=-1)):.1f} m (of it along the "
          f"optical axis: median {100 * np.median(root_depth):+.1f} cm, + = placed too far)")
    # Body size: the lifted pose is scaled by the height the user gives (--height); the RMS
    # size of the triangulated pose against it says how far that height is from the subject's
    # (the distance to the camera scales with it: a person taken as taller is placed farther)
    size = lambda p: np.sqrt(((p - p.mean(1, keepdims=True)) ** 2).sum((1, 2)))
    ratio = float(np.median(size(ref[ok]) / size(est[ok])))
    print(f"  size of the triangulated pose / the lifted one: median {ratio:.3f} (a subject of "
          f"about {ratio * a.height:.2f} m against the {a.height:.2f} m given; the root depth "
          f"error that alone would cause: {100 * (1 / ratio - 1) * np.median(ref_root[ok, 2]):+.1f} cm)")
    print(f"  {'joint':<18} MPJPE  P-MPJPE (mm)")
    for j, n in enumerate(JOINTS):
        print(f"  {n:<18} {e[:, j].mean():6.1f} {pa[:, j].mean():6.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
