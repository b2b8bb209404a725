"""``kinevid run VIDEO --height H --mass M -o OUT``: the whole pipeline in one command.

video -> 2D keypoints (+ overlay) -> 3D keypoints (markers.trc) -> scaled model -> IK ->
estimated ground forces + ID -> motion.c3d + motion.kvb, with run.json; stages are cached and
resumable (see :mod:`inference.pipeline`). Settings: defaults < ``--config FILE`` < options <
``--set SECTION.KEY=VALUE`` (``--list-settings`` prints them all).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_run_parser", "run_command", "config_from_args"]

#: inference.pipeline.STAGES, repeated so that `kinevid --help` imports nothing heavy
STAGES = ("pose2d", "overlay", "lift", "scale", "ik", "id", "c3d", "blender")

_EPILOG = """\
caching and resume:
  Every stage's outputs are reused when its input files, its settings and kinevid's code are
  unchanged (hashes in OUT/.kinevid/stage_hashes.json): rerunning with other IK settings reruns
  IK and what follows, not the 2D stage. This happens with or without --resume; --force reruns
  everything. --resume continues the run recorded in OUT/run.json with the inputs and settings
  recorded there (no need to repeat VIDEO or the options; options given override them), e.g.
  after a failure or an interruption.

inputs:
  VIDEO, or --from-pose2d pose2d.npz (skips the 2D stage), or --from-keypoints FILE (.trc or
  .c3d 3D keypoints named like the built-in model's keypoint markers, in OpenSim's Y-up frame;
  a FILE_confidence.csv beside it is used as per-frame confidence; skips 2D and lifting).
"""


def _overrides(args: argparse.Namespace) -> dict:
    """Named options -> {"section.key": value}; None = not given."""
    o = {
        "subject.height": args.height, "subject.mass": args.mass, "subject.sex": args.sex,
        "model.model": args.model, "model.keypoint_map": args.keypoint_map,
        "pose2d.pose": args.pose, "pose2d.person": args.person,
        "pose2d.max_frames": args.max_frames, "pose2d.device": args.device,
        "lift.lifter": args.lifter, "lift.focal_px": args.focal_px, "lift.fov_deg": args.fov,
        "lift.trust": True if args.trust else None,
        "ik.jobs": args.jobs,
        # the tier's preset is applied under the config file (config_from_args); this records
        # it last, so a file's [run] tier cannot relabel a run the command line gave a tier
        "run.tier": getattr(args, "tier", None),
        "pose2d.overlay": False if args.no_overlay else None,
        "output.blender": False if args.no_blender else None,
        "output.c3d": False if args.no_c3d else None,
    }
    return o


def config_from_args(args: argparse.Namespace, base_settings: dict | None = None):
    """The resolved :class:`~inference.config.RunConfig`: recorded settings (``--resume``) or
    defaults, then ``--config``, then the options, then ``--set``."""
    from inference.config import (apply_overrides, apply_tier, default_config, load_config,
                                  parse_set)

    cfg = default_config()
    if base_settings:
        flat = {f"{s}.{k}": v for s, d in base_settings.items() for k, v in d.items()
                if v is not None}
        cfg = apply_overrides(cfg, flat, origin="run.json (--resume)")
    # The tier is a preset under the config file and the options: apply the one asked for
    # (--tier, else the file's [run] tier) first. A resumed run's recorded settings already
    # hold its tier's values and any changes made to them, so nothing is re-applied there.
    tier = getattr(args, "tier", None)
    if tier is None and args.config:
        from_file = load_config(args.config)
        if from_file.sources.get("run.tier") != "default":
            tier = from_file["run"]["tier"]
    if tier is not None:
        cfg = apply_tier(cfg, tier, origin="--tier" if getattr(args, "tier", None) else "tier")
    cfg = load_config(args.config, base=cfg)
    cfg = apply_overrides(cfg, _overrides(args))
    sets = {}
    for text in args.set or []:
        section, key, value = parse_set(text)
        sets[f"{section}.{key}"] = value
    return apply_overrides(cfg, sets, origin="--set")


def run_command(args: argparse.Namespace) -> int:
    from inference.config import describe
    from inference.pipeline import Pipeline, RunInputs, read_run_json
    from opensim_bridge.errors import InputError

    if args.list_settings:
        print(describe())
        return 0
    if not args.output:
        raise InputError("give the output folder with -o OUT")
    out = Path(args.output)
    base, recorded = None, {}
    if args.resume:
        doc = read_run_json(out)
        recorded = doc.get("request", {}).get("inputs", {})
        base = doc.get("request", {}).get("settings")
        print(f"resuming the run in {out} (was: {doc.get('status')})", file=sys.stderr)
    given = {"video": args.video, "from_pose2d": args.from_pose2d,
             "from_keypoints": args.from_keypoints}
    if any(given.values()):
        inputs = RunInputs(**given)
    elif recorded:
        inputs = RunInputs(**{k: v for k, v in recorded.items() if v is not None})
    else:
        raise InputError("give a VIDEO (or --from-pose2d / --from-keypoints), or --resume to "
                         "continue the run recorded in the output folder")
    cfg = config_from_args(args, base)
    pipe = Pipeline(out, cfg, inputs, force=args.force, stop_after=args.stop_after,
                    command=list(sys.argv))
    result = pipe.run()
    ran, cached = result.ran(), result.cached()
    print(f"{result.status}: ran {', '.join(ran) or 'nothing'}; reused {', '.join(cached) or 'nothing'}")
    if "pose2d" in result.stages and "backend_label" in result.stages["pose2d"].info:
        info = result.stages["pose2d"].info
        print(f"2D pose backend: {info['backend_label']} ({info['backend_reason']})")
    q = result.quality
    for key in ("subject_lost", "low_confidence", "ik_error_outliers"):
        if key in q and q[key]["n_frames"]:
            print(f"quality: {q[key]['n_frames']}/{q[key]['of_frames']} {q[key]['what']}")
    lim = q.get("at_joint_limits")
    if lim and lim["n_frames"]:
        worst = ", ".join(f"{n} {k}" for n, k in list(lim["coordinates"].items())[:4])
        print(f"quality: {lim['n_frames']}/{lim['of_frames']} {lim['what']}: {worst}")
    if "ik_marker_rms_mm" in q:
        print(f"IK marker RMS error: median {q['ik_marker_rms_mm']['median']:.1f} mm, "
              f"worst frame {q['ik_marker_rms_mm']['max']:.1f} mm")
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    doc = read_run_json(out)
    if doc.get("real_time_factor") is not None:
        print(f"time: {doc['total_wall_s']:.1f} s for {doc['video_s']:.1f} s of video "
              f"(real-time factor {doc['real_time_factor']:.2f})")
    print(f"wrote {result.run_json}")
    return 0


def add_run_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``run`` on an ``add_subparsers()`` object; returns its parser."""
    from inference.config import POSE_CHOICES

    p = subparsers.add_parser(
        "run", help="video -> scaled OpenSim model, joint angles, estimated forces, moments, C3D",
        description=__doc__, epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video", nargs="?", metavar="VIDEO", help="video file (or a folder of images)")
    p.add_argument("-o", "--output", help="output folder")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--from-pose2d", metavar="FILE", help="start from a pose2d.npz (no 2D stage)")
    src.add_argument("--from-keypoints", metavar="FILE",
                     help="start from 3D keypoints (.trc/.c3d; no 2D or lifting stage)")
    p.add_argument("--height", type=float, help="subject height in metres (required, here or in "
                   "the config)")
    p.add_argument("--mass", type=float, help="subject mass in kg (required, here or in the config)")
    p.add_argument("--sex", choices=("m", "f"), help="anthropometric table of the built-in model "
                   "(default m)")
    p.add_argument("--model", help="'builtin' (default) or an OpenSim model .osim to retarget to")
    p.add_argument("--keypoint-map", metavar="FILE", help="custom keypoint-to-marker map (TOML)")
    p.add_argument("--pose", choices=POSE_CHOICES,
                   help="2D model: auto = ViTPose when its weights are cached, else BlazePose")
    p.add_argument("--person", type=int, metavar="ID", help="track id of the subject")
    p.add_argument("--max-frames", type=int, metavar="N", help="process only the first N frames")
    p.add_argument("--device", help="ViTPose device: auto, cpu, cuda, mps")
    p.add_argument("--lifter", help="kinevid (default, shipped), videopose3d-243, "
                   "videopose3d-cpn-243 (CC BY-NC 4.0, non-commercial) or a checkpoint file")
    cam = p.add_mutually_exclusive_group()
    cam.add_argument("--focal-px", type=float, help="camera focal length in pixels")
    cam.add_argument("--fov", type=float, help="camera field of view in degrees")
    p.add_argument("--trust", action="store_true", help="accept downloaded lifter weights whose "
                   "sha256 is not on record")
    p.add_argument("--tier", choices=("standard", "light"),
                   help="preset: standard (default) or light (real time on 2 cores: the most "
                   "prominent person only, at most 30 fps, no overlay video)")
    p.add_argument("--jobs", type=int, help="IK worker processes (default: all cores)")
    p.add_argument("--no-overlay", action="store_true", help="do not write pose2d_overlay.mp4")
    p.add_argument("--no-c3d", action="store_true", help="do not write motion.c3d")
    p.add_argument("--no-blender", action="store_true", help="do not write motion.kvb")
    p.add_argument("--config", metavar="FILE", help="settings as TOML (see --list-settings)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="any setting, e.g. --set ik.accuracy=1e-6 (repeatable; wins over all)")
    p.add_argument("--list-settings", action="store_true",
                   help="print every setting with its default and meaning, then exit")
    p.add_argument("--resume", action="store_true",
                   help="continue the run recorded in OUT/run.json (see below)")
    p.add_argument("--force", action="store_true", help="rerun every stage, ignoring the cache")
    p.add_argument("--stop-after", choices=tuple(STAGES), metavar="STAGE",
                   help=f"stop once this stage is done ({', '.join(STAGES)})")
    p.set_defaults(func=run_command)
    return p
