"""``kinevid run`` on every shared video and on the synthetic walk: per-stage wall times, the
real-time factor, quality flags, and the synthetic end-to-end joint-angle errors.

* Videos: Pose2Sim Demo_SinglePerson cam01..cam04 and the Sports2D demo, each run into its own
  output folder (``--out``, default a temporary folder), offline, with the settings given
  (``--pose``, ``--max-frames``). A failing video is reported and the next one runs.
* Synthetic: the Gait2354 walk's reference IK -> built-in model keypoints -> virtual camera ->
  2D noise -> ``kinevid run --from-pose2d`` -> RMSE of every coordinate against the source
  (the same as tests/test_run_e2e.py). ``--skip-synthetic`` leaves it out.

``--yaw 25 40 60`` repeats the synthetic walk from other camera angles. ``--tier`` applies to
the synthetic walk too (its 2D is given, so there only the later stages' settings matter: the
light tier's IK at 15 Hz and joint limits).

Both need kinevid's shipped lifter (models/weights/kinevid_lifter.pt). Run from the repository
root:

    .venv/bin/python benchmarks/run_speed.py [--videos cam01 demo] [--max-frames 100]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("GLOG_minloglevel", "2")

VIDEOS = {
    **{f"cam0{i}": DATA / "pose2sim" / "Pose2Sim" / "Demo_SinglePerson" / "videos" / f"cam0{i}.mp4"
       for i in range(1, 5)},
    "demo": DATA / "sports2d" / "Sports2D" / "Demo" / "demo.mp4",
}


def _run(argv: list[str]) -> tuple[int, str | None]:
    from inference.commands.run import add_run_parser
    from opensim_bridge.errors import KinevidError

    parser = argparse.ArgumentParser(prog="kinevid")
    add_run_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["run", *argv])
    try:
        return args.func(args), None
    except KinevidError as exc:
        return 2, str(exc)


def _report(out: Path, label: str, video: Path | None) -> None:
    run = json.loads((out / "run.json").read_text())
    print(f"\n== {label}: {run['status']}" + (f" - {run['error']['message']}" if run.get("error")
                                             else ""))
    total = 0.0
    for s in run["stages"]:
        total += s["wall_s"]
        print(f"  {s['name']:<8} {s['status']:<8} {s['wall_s']:7.2f} s")
    print(f"  {'total':<17} {total:7.2f} s")
    p2d = next((s["info"] for s in run["stages"] if s["name"] == "pose2d"), {})
    n, step = p2d.get("frames"), p2d.get("step") or 1
    if video is not None and n:
        from inference.video import open_video
        info = open_video(video).info
        fps = info.fps or 30.0
        seconds = n * step / fps
        print(f"  {n} frames estimated (every {step}) = {seconds:.2f} s of video at {fps:.1f} "
              f"fps; real-time factor {total / seconds:.2f} (wall / video duration)")
        per_frame = [s for s in run["stages"] if s["name"] in ("pose2d", "overlay", "ik")]
        rate = sum(s["wall_s"] for s in per_frame) / n
        print(f"  per estimated frame: {1000 * rate:.1f} ms in pose2d+overlay+ik "
              f"({1 / rate:.1f} frames/s); the other stages {total - rate * n:.2f} s in all")
    q = run.get("quality", {})
    for key in ("subject_lost", "low_confidence", "ik_error_outliers"):
        if key in q:
            print(f"  quality {key}: {q[key]['n_frames']}/{q[key]['of_frames']} frames "
                  f"{q[key]['time_ranges_s'][:4]}")
    if "at_joint_limits" in q:
        lim = q["at_joint_limits"]
        print(f"  quality at_joint_limits: {lim['n_frames']}/{lim['of_frames']} frames "
              f"{dict(list(lim['coordinates'].items())[:5])}")
    if "ik_marker_rms_mm" in q:
        print(f"  IK marker RMS: median {q['ik_marker_rms_mm']['median']} mm, max "
              f"{q['ik_marker_rms_mm']['max']} mm")
    for w in run.get("warnings", [])[:5]:
        print(f"  warning: {w}")


def synthetic(root: Path, yaw_deg: float = 25.0, tier: str = "standard") -> None:
    import numpy as np
    import opensim as osim

    from opensim_bridge.builtin_model import write_builtin_model
    from opensim_bridge.storage import read_table
    from test_run_e2e import FLEXION, keypoint_series, source_motion, synthetic_pose2d

    osim.Logger.setLevelString("error")
    height, mass = 1.80, 72.6
    model = write_builtin_model(root / "truth.osim", height=height, mass=mass)
    motion = source_motion()
    pose, cam = synthetic_pose2d(keypoint_series(model, motion), yaw_deg=yaw_deg)
    root = root / f"yaw{yaw_deg:g}"
    root.mkdir(parents=True, exist_ok=True)
    pose.write(root / "pose2d.npz")
    out = root / "synthetic"
    code, err = _run(["--from-pose2d", str(root / "pose2d.npz"), "--height", str(height),
                      "--mass", str(mass), "--focal-px", str(cam.focal), "--tier", tier,
                      "-o", str(out)])
    _report(out, f"synthetic Gait2354 walk (2.5 px noise, camera 5 m, {yaw_deg:g} deg yaw, "
                 f"{tier} tier)", None)
    if code:
        return
    got = read_table(out / "ik.mot")
    print("  RMSE against the source IK, deg:")
    for c in motion.labels:
        if c.startswith("pelvis_t"):
            continue
        est = np.interp(motion.time, got.time, got[c])
        e = float(np.sqrt(np.mean((est - motion[c]) ** 2)))
        print(f"    {c:<18} {e:6.2f}{'  (flexion: limit 6)' if c in FLEXION else ''}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", nargs="*", default=list(VIDEOS), choices=list(VIDEOS))
    ap.add_argument("--max-frames", type=int, default=None)
    ap.add_argument("--pose", default="auto")
    ap.add_argument("--tier", default="standard", choices=("standard", "light"))
    ap.add_argument("--out", default=None, help="output root (default: a temporary folder)")
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--yaw", type=float, nargs="+", default=[25.0],
                    help="camera yaw(s) of the synthetic walk, deg from the side view (the test "
                    "uses 25)")
    args = ap.parse_args()
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="kinevid_run_report_"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"outputs under {root}")
    if not args.skip_synthetic:
        for yaw in args.yaw:
            synthetic(root, yaw, args.tier)
    for name in args.videos:
        out = root / name
        argv = [str(VIDEOS[name]), "--height", "1.75", "--mass", "70", "--pose", args.pose,
                "--tier", args.tier, "-o", str(out)]
        if args.max_frames:
            argv += ["--max-frames", str(args.max_frames)]
        t0 = time.perf_counter()
        code, err = _run(argv)
        if (out / "run.json").is_file():
            _report(out, f"{name} ({VIDEOS[name].name})", VIDEOS[name])
        else:
            print(f"\n== {name}: no run.json ({err})")
        print(f"  wall {time.perf_counter() - t0:.1f} s, exit {code}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
