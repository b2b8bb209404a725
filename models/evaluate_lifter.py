"""Held-out evaluation of kinevid's own lifter (printed).

    python -m models.evaluate_lifter [--weights models/weights/kinevid_lifter.pt] [--quick]

The held-out trials/subjects (:data:`models.lifter_data.HELD_OUT_GROUPS`, never sampled in
training) are resampled to 30 fps; every ``stride``-th frame is the centre of one window
(sequence ends padded by repeating the end frames, as inference pads). Each window gets a
random camera (the training distribution: 0.5-2 m high, 2.5-10 m away, 40-80 deg FOV,
roll +-5 deg, landscape or portrait), the same cameras for every noise level. 2D noise levels,
as a fraction of the person's 2D height (per-coordinate standard deviation of the jitter):

* ``0``: exact projection, full confidence, no dropout;
* ``1.5%`` (the *realistic* level): jitter 1.5 %, a per-joint bias of half that, confidences
  drawn, low-confidence joints noisier, joints under 0.2 confidence dropped, 1 % outliers;
* ``3%`` and ``5%``: the same with more jitter.

Metrics: MPJPE (mean Euclidean distance of root-relative points, mm) and P-MPJPE (after a
per-frame similarity Procrustes alignment), per joint and overall (the mean of the per-joint
figures), and the error of the angles between segments that IK turns into joint angles (hip,
knee, ankle, elbow; :data:`ANGLES`). Points a trial never measured are left out: the
subject01_walk1 trial was processed with models without arms, so its elbows, wrists and hands
are the built-in model's default pose, hanging still while the subject walks
(``Clip.measured``). The lifter runs as
``kinevid lift``/``kinevid run`` run it: with test-time flip augmentation (``--no-flip``: without;
the overall figures are printed both ways).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from models import lifter_data as D

LEVELS: tuple[tuple[str, D.NoiseSpec], ...] = (
    ("0", D.NoiseSpec(sigma=0.0, bias=0.0, outlier_rate=0.0, drop_below=-1.0, conf_noise=False)),
    ("1.5%", D.NoiseSpec(sigma=0.015)),
    ("3%", D.NoiseSpec(sigma=0.03)),
    ("5%", D.NoiseSpec(sigma=0.05)),
)
REALISTIC = "1.5%"
EVAL_FPS = 30.0


def load(weights: str | Path):
    """(TemporalModel in eval mode, spec) through kinevid's own loader (strict)."""
    from models.lifter_registry import load_lifter
    return load_lifter(Path(weights), quiet=True)


def clip_windows(clip: D.Clip, window: int, fps: float = EVAL_FPS, stride: int = 5):
    """World windows (N, window, 30, 3) at unit height, centred on every stride-th frame."""
    n_out = int(np.floor((clip.frames - 1) * fps / clip.fps)) + 1
    centres = np.arange(0, n_out, stride)
    k = np.arange(window) - window // 2
    t = np.clip((centres[:, None] + k[None, :]) * clip.fps / fps, 0, clip.frames - 1)
    i0 = np.floor(t).astype(int)
    i1 = np.minimum(i0 + 1, clip.frames - 1)
    a = (t - i0)[..., None, None]
    return (1 - a) * clip.markers[i0] + a * clip.markers[i1]


def held_out_windows(clips: list[D.Clip], window: int, stride: int):
    """Every clip's windows (:func:`clip_windows`) stacked: (N, window, 30, 3) unit-height
    world points, the clip group of each window (N,) and which of its points the source
    measured (N, 30)."""
    wins, groups, meas = [], [], []
    for c in clips:
        w = clip_windows(c, window, stride=stride)
        wins.append(w)
        groups += [c.group] * len(w)
        ok = np.ones(len(D.OUTPUT_MARKERS), bool) if c.measured is None else c.measured
        meas.append(np.broadcast_to(ok, (len(w), len(ok))))
    return np.concatenate(wins), np.array(groups), np.concatenate(meas)


def procrustes_aligned(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``pred`` (N, J, 3) after the similarity transform that best fits it to ``gt``."""
    mp, mg = pred.mean(1, keepdims=True), gt.mean(1, keepdims=True)
    p, g = pred - mp, gt - mg
    U, S, Vt = np.linalg.svd(np.matmul(np.swapaxes(p, 1, 2), g))
    d = np.sign(np.linalg.det(np.matmul(U, Vt)))
    S[:, 2] *= d
    U[:, :, 2] *= d[:, None]
    R = np.matmul(U, Vt)
    s = S.sum(1) / np.maximum((p ** 2).sum((1, 2)), 1e-12)
    return s[:, None, None] * np.matmul(p, R) + mg


def measured_errors(pred: np.ndarray, gt: np.ndarray, measured: np.ndarray):
    """Per-point errors (mm) and errors after Procrustes alignment, (N, J) each, NaN where
    ``measured`` (N, J) is False; the alignment uses the measured points only."""
    e = np.linalg.norm(pred - gt, axis=-1) * 1000
    pa = np.full(e.shape, np.nan)
    for mask in np.unique(measured, axis=0):
        rows = (measured == mask).all(1)
        a = procrustes_aligned(pred[rows][:, mask], gt[rows][:, mask])
        pa[np.ix_(rows, mask)] = np.linalg.norm(a - gt[rows][:, mask], axis=-1) * 1000
    e[~measured] = np.nan
    return e, pa


# Angles between two segments of the lifted skeleton (first point -> second point of each),
# as IK will see them: each is 0 when the two segments are parallel. Hip: trunk (neck -> mid-hip)
# against thigh; knee: thigh against shank; ankle: shank against the heel -> big-toe line.
ANGLES: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    f"{n}_{s.lower()}": pair for s in "RL" for n, pair in (
        ("hip", (("Neck", "Hip"), (f"{s}Hip", f"{s}Knee"))),
        ("knee", ((f"{s}Hip", f"{s}Knee"), (f"{s}Knee", f"{s}Ankle"))),
        ("ankle", ((f"{s}Knee", f"{s}Ankle"), (f"{s}Heel", f"{s}BigToe"))),
        ("elbow", ((f"{s}Shoulder", f"{s}Elbow"), (f"{s}Elbow", f"{s}Wrist"))))}


def segment_angles(points: np.ndarray) -> dict[str, np.ndarray]:
    """:data:`ANGLES` (degrees) of skeletons (N, 30, 3)."""
    i = D.OUTPUT_MARKERS.index
    out = {}
    for name, ((a, b), (c, d)) in ANGLES.items():
        u = points[:, i(b)] - points[:, i(a)]
        v = points[:, i(d)] - points[:, i(c)]
        cos = (u * v).sum(-1) / np.maximum(np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1),
                                           1e-12)
        out[name] = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    return out


def angle_errors(pred: np.ndarray, gt: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """Mean absolute error (deg) of each :data:`ANGLES` over the windows where its points were
    measured."""
    i = D.OUTPUT_MARKERS.index
    ap, ag = segment_angles(pred), segment_angles(gt)
    out = {}
    for name, pts in ANGLES.items():
        ok = measured[:, [i(n) for seg in pts for n in seg]].all(1)
        out[name] = float(np.abs(ap[name] - ag[name])[ok].mean()) if ok.any() else float("nan")
    return out


def predict(model, x: np.ndarray, batch: int = 2048, flip=None) -> np.ndarray:
    """Centre-frame poses of windows ``x``; ``flip``: (input permutation, output permutation)
    for test-time flip augmentation as inference does it, or None."""
    from models.lift_infer import lift_windows
    perm, out_perm = flip if flip is not None else (None, None)
    out = [lift_windows(model, x[i:i + batch], perm, out_perm) for i in range(0, len(x), batch)]
    return np.concatenate(out)


def flip_permutations(model, spec):
    """(input rows, output markers) left/right permutations for test-time flip of a kinevid
    lifter, as :func:`models.lift_infer.lift_sequence` uses them (extra context rows stay)."""
    from inference.layouts import get_layout
    from models.lift_infer import mirror_permutation
    flip = list(get_layout(spec.input_layout).flip_index)
    return (flip + list(range(len(flip), model.num_joints_in)),
            list(mirror_permutation(spec.output_names)))


def _io(spec) -> dict:
    """make_pairs keywords for a lifter's input normalisation and 2D points (its spec; None:
    VideoPose3D's normalisation on kinevid's input points)."""
    if spec is None:
        return {"normalisation": "screen_width", "output_units": "m"}
    from inference.layouts import get_layout
    return {"normalisation": spec.normalisation, "output_units": spec.output_units,
            "input_names": tuple(get_layout(spec.input_layout).native_names)}


def _absent(io: dict, source: str, n: int) -> np.ndarray:
    """(n, J) points a ``source`` kind of detector never gives, for the lifter's inputs."""
    return D.absent_mask([source] * n, io.get("input_names", D.INPUT_NAMES))


def evaluate(model, clips: list[D.Clip], seed: int = 7, stride: int = 5,
             levels=LEVELS, height: float = 1.75, spec=None, flip: bool = False,
             source: str = "all") -> dict:
    """{level: {"mpjpe": (J,), "pmpjpe": (J,), "groups": {group: (mpjpe, pmpjpe)}}} in mm.

    A lifter predicting in units of height is scaled by the subject's true height (as
    inference scales by the height the user gives). ``flip``: test-time flip augmentation, as
    ``kinevid lift``/``kinevid run`` use it (needs ``spec``). ``source``: the kind of 2D
    detector (:data:`models.lifter_data.INPUT_SOURCES`) whose never-given points are missing
    from every window ("all": every point given)."""
    io = _io(spec)
    perms = flip_permutations(model, spec) if flip else None
    window = model.receptive_field()
    world, groups, meas = held_out_windows(clips, window, stride)
    world = world * height
    H = np.full(len(world), height)
    cams = D.random_cameras(np.random.default_rng(seed), world[:, window // 2, D.ROOT_INDEX], H)
    res = {}
    for name, spec in levels:
        rng = np.random.default_rng(seed + 1)
        x, y, ok = D.make_pairs(rng, world, H, sigma=spec.sigma, spec=spec, cams=cams,
                                return_valid=True, absent=_absent(io, source, len(world)),
                                **io)
        x, y, g, m = x[ok], y[ok], groups[ok], meas[ok]
        p = predict(model, x, flip=perms)
        if io["output_units"] == "height":
            p, y = p * height, y * height
        e, pa = measured_errors(p, y, m)
        res[name] = {"mpjpe": np.nanmean(e, 0), "pmpjpe": np.nanmean(pa, 0), "n": len(e),
                     "angles": angle_errors(p, y, m),
                     "excluded": int((~ok).sum()),
                     "groups": {k: (float(np.nanmean(e[g == k])), float(np.nanmean(pa[g == k])))
                                for k in sorted(set(g))}}
    return res


def sequence_ends(model, clips: list[D.Clip], seed: int = 7, stride: int = 5,
                  height: float = 1.75, spec=None, flip: bool = False,
                  source: str = "all") -> dict[str, float]:
    """MPJPE (mm, realistic noise) where a sequence ends: windows from inside the clips, as
    they are, and with the 2D of every frame after (or before) the centre replaced by the
    centre frame's, as inference pads the last (or first) frame of a sequence (missing
    points filled first, as inference fills them)."""
    io = _io(spec)
    perms = flip_permutations(model, spec) if flip else None
    window = model.receptive_field()
    half = window // 2
    world, _, meas = held_out_windows(clips, window, stride)
    world = world * height
    H = np.full(len(world), height)
    cams = D.random_cameras(np.random.default_rng(seed), world[:, half, D.ROOT_INDEX], H)
    noise = dict(LEVELS)[REALISTIC]
    _, y, ok, (uv, conf) = D.make_pairs(np.random.default_rng(seed + 1), world, H,
                                        sigma=noise.sigma, spec=noise, cams=cams,
                                        return_valid=True, return_2d=True,
                                        absent=_absent(io, source, len(world)), **io)
    uv, conf, y, meas = D.fill_missing(uv[ok]), conf[ok], y[ok], meas[ok]
    w, h = cams.w[ok], cams.h[ok]
    out = {}
    for name in ("inside", "last frame", "first frame"):
        u, c = uv.copy(), conf.copy()
        cut = slice(half + 1, None) if name == "last frame" else slice(None, half)
        if name != "inside":
            u[:, cut] = u[:, half:half + 1]
            c[:, cut] = c[:, half:half + 1]
        p = predict(model, D.model_input(u, c, w, h, io["normalisation"]), flip=perms)
        yy = y
        if io["output_units"] == "height":
            p, yy = p * height, y * height
        out[name] = float(np.linalg.norm(p - yy, axis=-1)[meas].mean() * 1000)
    return out


_SIDE = {"R": "right", "L": "left"}
_CANON = {"Hip": "mid_hip", "Shoulder": "shoulder", "Elbow": "elbow", "Wrist": "wrist",
          "Knee": "knee", "Ankle": "ankle", "Heel": "heel", "BigToe": "big_toe",
          "SmallToe": "small_toe", "Eye": "eye", "Ear": "ear", "Index": "index",
          "Pinky": "pinky"}


def canonical_name(marker: str) -> str:
    """inference.layouts canonical name of a built-in keypoint marker ('RHeel' -> 'right_heel')."""
    if marker == "Hip":
        return "mid_hip"
    if marker[0] in _SIDE and marker[1:] in _CANON:
        return f"{_SIDE[marker[0]]}_{_CANON[marker[1:]]}"
    return {"Head": "head_top", "Nose": "nose", "Neck": "cervicale"}.get(marker, marker.lower())


def trajectory_error(model, clip: D.Clip, seed: int = 11, height: float = 1.75,
                     spec: D.NoiseSpec | None = None, lifter=None, flip: bool = False,
                     source: str = "all", root_lowpass_hz: float = 6.0) -> dict:
    """Camera-frame root trajectory error over one held-out clip with one static camera.

    The lifted root-relative pose (every frame, ends padded), the noisy 2D, the true focal
    length and the subject's height go through :func:`inference.trajectory.estimate_scale`
    (only for a lifter in metres; one in units of height is used as scaled) and
    :func:`inference.trajectory.solve_root_camera` (the hands left out, as inference leaves
    them out: :func:`inference.trajectory.root_solve_confidence`) and the low-pass of the root
    (:func:`inference.trajectory.smooth_root`, ``root_lowpass_hz``, as ``kinevid lift`` and
    ``kinevid run`` filter it by default); the result is compared with the true
    camera-frame root, frame by frame, without any alignment. Camera: 6 m from the clip's mean
    root, 1.2 m high, random azimuth, 60 deg horizontal FOV, 1920x1080.
    """
    from inference.trajectory import (Intrinsics, estimate_scale, root_solve_confidence,
                                      smooth_root, solve_root_camera)
    rng = np.random.default_rng(seed)
    window = model.receptive_field()
    world_all = clip_windows(clip, window, stride=1) * height        # (T, window, 30, 3)
    T = len(world_all)
    centre = world_all[:, window // 2, D.ROOT_INDEX].mean(0)
    az = rng.uniform(0, 2 * np.pi)
    C = centre + [6.0 * np.cos(az), 0.0, 6.0 * np.sin(az)]
    C[1] = 1.2
    tgt = centre.copy()
    tgt[1] = 0.55 * height
    R = D.look_at(C[None], tgt[None], np.zeros(1))[0]
    f = 960.0 / np.tan(np.radians(30.0))
    cams = D.Cameras(np.repeat(R[None], T, 0), np.repeat(C[None], T, 0), np.full(T, f),
                     np.full(T, 1920.0), np.full(T, 1080.0))
    spec = spec or D.NoiseSpec(sigma=0.015)
    io = _io(lifter)
    x, _, (uv, cf) = D.make_pairs(rng, world_all, np.full(T, height), sigma=spec.sigma, spec=spec,
                                  cams=cams, return_2d=True, absent=_absent(io, source, T), **io)
    pose = predict(model, x, flip=flip_permutations(model, lifter) if flip else None)  # (T, 30, 3)
    if io["output_units"] == "height":
        pose = pose * height
    # the 2D of the centre frames (pixels) for the markers a HALPE-26 detector also sees
    px = uv[:, window // 2].astype(float)
    conf = np.where(np.isfinite(px).all(-1), cf[:, window // 2], 0.0)
    kp = np.full((T, len(D.OUTPUT_MARKERS), 2), np.nan)
    kc = np.zeros((T, len(D.OUTPUT_MARKERS)))
    for i, n in enumerate(io.get("input_names", D.INPUT_NAMES)):
        if n != "Neck":
            j = D.OUTPUT_MARKERS.index(n)
            kp[:, j], kc[:, j] = px[:, i], conf[:, i]
    names = [canonical_name(m) for m in D.OUTPUT_MARKERS]
    # as inference does: a lifter in units of height is already at the subject's scale
    scale = 1.0 if io["output_units"] == "height" else estimate_scale(names, pose, height, kc)
    K = Intrinsics(f, 960.0, 540.0, 1920, 1080, "true")
    root = solve_root_camera(pose * scale, kp, root_solve_confidence(names, kc, kc.shape), K)
    raw = root
    root = smooth_root(root, EVAL_FPS, root_lowpass_hz)
    _, Xc = D.project(world_all[:, window // 2][:, None, D.ROOT_INDEX], cams)
    err = np.linalg.norm(root - Xc[:, 0], axis=-1)
    return {"clip": clip.name, "frames": T, "mean_m": float(np.nanmean(err)),
            "median_m": float(np.nanmedian(err)), "scale": float(scale),
            "raw_mean_m": float(np.nanmean(np.linalg.norm(raw - Xc[:, 0], axis=-1))),
            "depth_bias": float(np.nanmean(root[:, 2] / Xc[:, 0, 2] - 1.0)),
            "distance_m": float(np.median(Xc[:, 0, 2]))}


# The points matching Human3.6M's 17-joint skeleton (its pelvis = our root, thorax ~ cervicale,
# neck/nose ~ nose, head ~ head top; its spine has no counterpart): published lifters' MPJPE is
# over these, without feet or hands, so this subset makes our figure comparable.
H36M_LIKE = ("Hip", "RHip", "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "Neck", "Nose", "Head",
             "LShoulder", "LElbow", "LWrist", "RShoulder", "RElbow", "RWrist")


def report(res: dict, print_=print) -> None:
    names = D.OUTPUT_MARKERS
    lv = list(res)
    print_(f"windows per level: {res[lv[0]]['n']} ({res[lv[0]]['excluded']} excluded: person "
           "within 0.5 m of the camera plane or beyond an image size outside the image); 2D noise as % of the person's 2D height; "
           f"realistic = {REALISTIC}")
    print_("\noverall (mm)        " + "".join(f"{n:>16}" for n in lv))
    print_("MPJPE               " + "".join(f"{res[n]['mpjpe'].mean():16.1f}" for n in lv))
    print_("P-MPJPE             " + "".join(f"{res[n]['pmpjpe'].mean():16.1f}" for n in lv))
    h36m = [names.index(m) for m in H36M_LIKE]
    print_("H36M-like MPJPE     " + "".join(f"{res[n]['mpjpe'][h36m].mean():16.1f}" for n in lv)
           + f"   ({len(h36m)} of Human3.6M's 17 joints, no spine: for comparison only, the "
           "target is on every point)")
    print_("\nper held-out group, MPJPE / P-MPJPE (mm)")
    for g in res[lv[0]]["groups"]:
        print_(f"{g:28s}" + "".join(f"{res[n]['groups'][g][0]:8.1f}/{res[n]['groups'][g][1]:<7.1f}"
                                    for n in lv))
    print_("\nsegment angles as IK sees them, mean absolute error (deg): hip = trunk vs "
           "thigh, knee = thigh vs shank, ankle = shank vs heel-to-big-toe, elbow")
    for a in res[lv[0]]["angles"]:
        print_(f"{a:28s}" + "".join(f"{res[n]['angles'][a]:16.1f}" for n in lv))
    print_("\nper joint, MPJPE / P-MPJPE (mm)")
    for j, name in enumerate(names):
        if j == D.ROOT_INDEX:
            continue
        print_(f"{name:28s}" + "".join(f"{res[n]['mpjpe'][j]:8.1f}/{res[n]['pmpjpe'][j]:<7.1f}"
                                       for n in lv))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default="models/weights/kinevid_lifter.pt")
    ap.add_argument("--stride", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="OpenSim held-out trials only (no CMU)")
    ap.add_argument("--no-flip", dest="flip", action="store_false",
                    help="without test-time flip augmentation (inference uses it)")
    ap.add_argument("--root-cameras", type=int, default=10,
                    help="random cameras per clip for the root trajectory error (default 10)")
    ap.add_argument("--source", default="blazepose", choices=tuple(D.INPUT_SOURCES),
                    help="the kind of 2D detector of the detailed tables (default: BlazePose, "
                         "kinevid's offline 2D backend: no head top, no small toes)")
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    model, lifter = load(a.weights)
    _, held = D.split_clips(D.build_clips(include_cmu=not a.quick, log=lambda s: None))
    print(f"lifter {a.weights}: receptive field {model.receptive_field()}, "
          f"{len(held)} held-out clips: {', '.join(sorted({c.group for c in held}))}")
    print("test-time flip: " + ("on, as kinevid lift/run use it" if a.flip else "off"))
    print("\nby the kind of 2D detector (the points it never gives are missing from every "
          "window), overall MPJPE / P-MPJPE (mm)")
    print(f"{'':28s}" + "".join(f"{n:>16}" for n, _ in LEVELS))
    results = {}
    for src, gone in D.INPUT_SOURCES.items():
        results[src] = r = evaluate(model, held, stride=a.stride, spec=lifter, flip=a.flip,
                                    source=src)
        print(f"{src:28s}" + "".join(f"{v['mpjpe'].mean():8.1f}/{v['pmpjpe'].mean():<7.1f}"
                                     for v in r.values()))
    print("missing: " + "; ".join(f"{k} {', '.join(v) or 'none'}"
                                  for k, v in D.INPUT_SOURCES.items()))
    print(f"\ndetailed: {a.source} 2D (missing: {', '.join(D.INPUT_SOURCES[a.source]) or 'none'})")
    report(results[a.source])
    if a.flip:
        other = evaluate(model, held, stride=a.stride, spec=lifter, flip=False, source=a.source)
        print("\nwithout test-time flip, overall MPJPE / P-MPJPE (mm): " + ", ".join(
            f"{n} {r['mpjpe'].mean():.1f}/{r['pmpjpe'].mean():.1f}" for n, r in other.items()))
    ends = sequence_ends(model, held, stride=a.stride, spec=lifter, flip=a.flip, source=a.source)
    print(f"\nsequence ends ({REALISTIC} noise; windows padded by repeating the end frame, as "
          "inference pads): MPJPE " + ", ".join(f"{k} {v:.1f}" for k, v in ends.items()) + " mm")
    cams = range(11, 11 + a.root_cameras)
    print(f"\nroot trajectory (camera frame, no alignment; 1.5% noise; {a.root_cameras} cameras per "
          "clip, 6 m away, 1.2 m high, random azimuth, true focal length; "
          "inference.trajectory solve_root_camera with the lifted pose as scaled by the true "
          "height, then smooth_root at 6 Hz as kinevid lift/run): mean error low-passed (per "
          "frame, unfiltered), depth bias")
    walks = [c for c in held if c.name.endswith(":m") and ("Gait2354" in c.name
                                                            or "walking4" in c.name)]
    walks += [c for c in held if c.group == "cmu:35"]
    for c in walks:
        ts = [trajectory_error(model, c, seed=s, lifter=lifter, flip=a.flip, source=a.source)
              for s in cams]
        m = [100 * t["mean_m"] for t in ts]
        print(f"  {c.name:55s} {ts[0]['frames']:4d} frames: mean {np.mean(m):.1f} cm "
              f"(cameras {min(m):.1f}-{max(m):.1f}; unfiltered "
              f"{100 * np.mean([t['raw_mean_m'] for t in ts]):.1f}), depth "
              f"{100 * np.mean([t['depth_bias'] for t in ts]):+.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
