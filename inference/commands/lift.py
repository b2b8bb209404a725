"""``kinevid lift POSE2D -o DIR``: 2D keypoints -> metric 3D keypoints (TRC) with confidences."""
from __future__ import annotations

import argparse
import sys
import warnings

__all__ = ["add_lift_parser", "run_lift_command"]

_LIFTERS = ("kinevid", "videopose3d-243", "videopose3d-cpn-243")


def run_lift_command(args: argparse.Namespace) -> int:
    from inference.lift import run_lift
    from models.lifter_registry import LIFTER_REGISTRY

    spec = LIFTER_REGISTRY.get(args.lifter)
    if spec is not None and spec.noncommercial:
        print(f"note: lifter {spec.name}: {spec.licence}", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the licence was printed above; trust pins are reported
        result = run_lift(args.pose2d, args.output, lifter=args.lifter, height=args.height,
                          focal_px=args.focal_px, fov_deg=args.fov, subject=args.subject,
                          trust=args.trust, flip=not args.no_flip, heading=args.heading,
                          reproject=args.reproject, root_lowpass_hz=args.root_lowpass)
    s = result.trajectory.summary()
    conf = result.markers.confidence
    print(f"lifted person {result.subject}: {len(result.series)} frames with {result.spec.name} "
          f"({result.fps:.0f} frames/s); scale {s['scale']:.3f}; focal {s['focal_px']:.0f} px "
          f"({s['focal_source']}); camera {s['camera_height_m']:.2f} m high, tilted "
          f"{s['camera_tilt_deg']:.1f} deg; floor from {s['floor_inliers']}/{s['floor_candidates']} "
          f"foot contacts; mean 3D confidence {conf.mean():.2f}")
    for p in result.files.values():
        print(f"wrote {p}")
    return 0


def add_lift_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "lift", help="2D keypoints -> 3D keypoints in metres (TRC) with per-joint confidence",
        description="Lift a pose2d.npz to metric 3D with a temporal lifter, place it in a world "
                    "frame (Y up, floor at Y = 0) and write keypoints3d.trc (built-in model "
                    "marker names), keypoints3d_confidence.csv and keypoints3d.npz.",
        epilog="Lifters: 'kinevid' (shipped, feet included, no download); 'videopose3d-243' "
               "(COCO-17 2D in) and 'videopose3d-cpn-243' (H36M-17 2D in) are the official "
               "VideoPose3D weights, licensed CC BY-NC 4.0: NON-COMMERCIAL use only; they are "
               "downloaded on first use and, as no sha256 is on record, need --trust.")
    p.add_argument("pose2d", help="pose2d.npz from `kinevid pose2d`")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--lifter", default="kinevid", choices=_LIFTERS,
                   help="lifter weights (default kinevid; videopose3d-*: CC BY-NC 4.0, non-commercial)")
    p.add_argument("--height", type=float, default=1.75, help="subject height in metres (default 1.75)")
    cam = p.add_mutually_exclusive_group()
    cam.add_argument("--focal-px", type=float, default=None,
                     help="focal length in pixels (default: video metadata, else a 60 deg field of view)")
    cam.add_argument("--fov", type=float, default=None,
                     help="field of view in degrees across the longer image side")
    p.add_argument("--subject", type=int, default=None, help="person id (default: the selected one)")
    p.add_argument("--trust", action="store_true",
                   help="accept downloaded weights whose sha256 is not on record (pins it)")
    p.add_argument("--no-flip", action="store_true", help="skip test-time flip augmentation")
    p.add_argument("--reproject", type=float, default=1.0,
                   help="0-1: move each lifted keypoint, at its depth, onto the camera ray of its "
                        "2D detection, weighted by its confidence (default 1; 0 keeps the lifter's "
                        "x/y)")
    p.add_argument("--root-lowpass", type=float, default=6.0, metavar="HZ",
                   help="zero-lag low-pass cut-off for the subject's root trajectory (each frame's "
                        "depth carries the 2D noise; default 6 Hz, 0 = none)")
    p.add_argument("--heading", default="auto", choices=("auto", "travel", "facing", "camera"),
                   help="world X axis: direction of travel, direction faced, or the camera's x "
                        "axis on the floor (default auto: travel when the subject walks "
                        "somewhere, else facing)")
    p.set_defaults(func=run_lift_command)
    return p
