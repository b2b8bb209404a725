"""``kinevid export-blender MODEL MOTION -o FILE``: an OpenSim model moving over a motion, as
per-body world transforms for the Blender add-on (format: docs/blender_motion_format.md).

Works for any OpenSim model and motion (kinevid's, OpenCap's, Pose2Sim's); the heavy work
(OpenSim) happens here so that Blender needs neither OpenSim nor kinevid's dependencies.
"""
from __future__ import annotations

import argparse
import sys

__all__ = ["add_export_blender_parser", "run_export_blender"]


def run_export_blender(args: argparse.Namespace) -> int:
    from opensim_bridge.blender_export import export_blender
    from opensim_bridge.errors import InputError

    confidence = None
    if args.confidence:
        from opensim_bridge.storage import read_table
        confidence = read_table(args.confidence)
    if args.video_offset != 0.0 and not args.video:
        raise InputError("--video-offset needs --video")
    result = export_blender(args.model, args.motion, args.output, markers=args.markers,
                            grf=args.grf, video=args.video, video_offset=args.video_offset,
                            geometry_paths=args.geometry_path or (), confidence=confidence,
                            ignore_unknown_columns=args.ignore_unknown_columns)
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"export-blender: {result.frame_count} frames x {result.body_count} bodies posed in "
          f"{result.pose_s:.2f} s ({result.frames_per_s:.0f} frames/s); {result.mesh_count} meshes"
          + (f", {len(result.missing_meshes)} missing" if result.missing_meshes else ""))
    print(f"wrote {result.path}")
    return 0


def add_export_blender_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export-blender",
        help="write per-body world transforms of a model over a motion for the Blender add-on",
        description="Pose an OpenSim model at every frame of a motion (.mot/.sto, e.g. an IK "
                    "result) and write the bodies' world transforms, the model's display geometry, "
                    "joint angles and markers into one .kvb file (a zip of JSON and .npy arrays) "
                    "that kinevid's Blender add-on imports. See docs/blender_motion_format.md.")
    p.add_argument("model", metavar="MODEL", help="OpenSim model (.osim)")
    p.add_argument("motion", metavar="MOTION",
                   help="motion: coordinates over time (.mot/.sto, degrees or radians as its header says)")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="output file (conventionally .kvb); written atomically")
    p.add_argument("--markers", metavar="T.trc",
                   help="experimental markers (.trc/.c3d) to show beside the model's, resampled to the motion's frames")
    p.add_argument("--grf", metavar="grf.mot", help="ground reaction forces (.mot) to show as arrows")
    p.add_argument("--video", metavar="V.mp4", help="source video to show in sync (stored as a path)")
    p.add_argument("--video-offset", type=float, default=0.0, metavar="S",
                   help="motion time (s) of the video's first frame (default 0)")
    p.add_argument("--geometry-path", action="extend", nargs="+", metavar="DIR",
                   help="folder to search for mesh files (.vtp/.stl/.obj) after the model's folder "
                        "and its Geometry/ subfolder; repeatable. OPENSIM_GEOMETRY_PATH is searched too")
    p.add_argument("--confidence", metavar="C.sto",
                   help="per-coordinate confidence (0..1) over time, columns named by coordinate")
    p.add_argument("--ignore-unknown-columns", action="store_true",
                   help="pose the model even when the motion has columns that are not its coordinates")
    p.set_defaults(func=run_export_blender)
    return p
