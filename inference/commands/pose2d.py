"""``kinevid pose2d VIDEO -o DIR``: 2D keypoints of every person in a video.

Writes ``DIR/pose2d.npz`` + ``DIR/pose2d.json`` (all tracks, the chosen subject; format in
:mod:`inference.pose2d`) and ``DIR/pose2d_overlay.mp4`` (skeletons and ids drawn on the video),
each atomically. ``--person ID`` chooses the subject among the track ids (they are printed, and
drawn on the overlay).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from opensim_bridge.errors import InputError

__all__ = ["add_pose2d_parser", "run_pose2d"]


def run_pose2d(args: argparse.Namespace) -> int:
    # Heavy imports here, so `kinevid --help` stays instant (mediapipe, torch, cv2).
    from inference.overlay import write_overlay
    from inference.pose2d_run import estimate_pose2d, resolve_backend
    from inference.progress import ProgressBar

    if args.readers < 1:
        raise InputError(f"--readers must be >= 1, got {args.readers}")
    if args.max_frames is not None and args.max_frames < 1:
        raise InputError(f"--max-frames must be >= 1, got {args.max_frames}")
    video = Path(args.video)
    if not video.exists():
        raise InputError("file not found", video)
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise InputError("the output must be a folder", out)
    choice = resolve_backend(args.pose)
    print(f"pose backend: {choice.label} ({choice.reason})")
    with ProgressBar("pose2d", unit="frames") as bar:
        pose = estimate_pose2d(video, args.pose, person=args.person, max_frames=args.max_frames,
                               max_people=args.max_people, device=args.device, progress=bar.update,
                               choice=choice, workers=args.readers)
    out.mkdir(parents=True, exist_ok=True)
    npz, sidecar = pose.write(out / "pose2d.npz")
    present = pose.present()
    print(f"{len(pose)} frames, {len(pose.person_ids)} tracks at {pose.extra.get('fps')} frames/s:")
    for row, pid in enumerate(pose.person_ids):
        frames = present[row].nonzero()[0]
        mark = "  <- subject" if pid == pose.subject else ""
        print(f"  id {pid}: {len(frames)} frames ({pose.frames[frames[0]]}-{pose.frames[frames[-1]]}), "
              f"score {pose.extra['subject_scores'][str(pid)]:.0f}{mark}")
    if pose.subject is None:
        print("warning: nobody was found in the video")
    written = [npz, sidecar]
    if not args.no_overlay:
        with ProgressBar("overlay", unit="frames") as bar:
            written.append(write_overlay(video, pose, out / "pose2d_overlay.mp4", progress=bar.update))
    for p in written:
        print(f"wrote {p}")
    return 0


def add_pose2d_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``pose2d`` on an ``add_subparsers()`` object; returns its parser."""
    from inference.config import POSE_CHOICES

    p = subparsers.add_parser(
        "pose2d", help="video -> 2D keypoints of every person (+ overlay video)",
        description="Detect and track every person in a video, choose the subject, and write "
                    "pose2d.npz/.json (all tracks) and pose2d_overlay.mp4 into the output folder.")
    p.add_argument("video", metavar="VIDEO", help="video file, or a folder of images")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--pose", choices=POSE_CHOICES, default="auto",
                   help="pose model: auto = ViTPose when its weights are cached (kinevid weights "
                        "list), else BlazePose (default auto)")
    p.add_argument("--person", type=int, metavar="ID",
                   help="track id of the subject (default: the longest, best-visible track)")
    p.add_argument("--max-frames", type=int, metavar="N", help="process only the first N frames")
    p.add_argument("--max-people", type=int, default=4, help="persons followed at once (default 4)")
    p.add_argument("--readers", type=int, default=2,
                   help="BlazePose threads, each over one part of the video (default 2)")
    p.add_argument("--device", default="auto", help="ViTPose device: auto, cpu, cuda, mps (default auto)")
    p.add_argument("--no-overlay", action="store_true", help="do not write pose2d_overlay.mp4")
    p.set_defaults(func=run_pose2d)
    return p
