"""Decoding speed of kinevid's video input (PyAV), alone, on the reference videos.

Reports frames per second for decoding only (``convert=False``) and for decoding plus the
upright RGB conversion that pose models receive, on the Pose2Sim 1080x1920 clips (H.264 and
VP9) and the Sports2D demo (VP9, 1768x994). Run from the repository root:

    .venv/bin/python benchmarks/decode_speed.py [--repeat 3] [--no-threads]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from inference.video import open_video

DATA = REPO.parent / "shared" / "data"
VIDEOS = [
    DATA / "pose2sim/Pose2Sim/Demo_SinglePerson/videos/cam01.mp4",
    DATA / "pose2sim/Pose2Sim/Demo_SinglePerson/videos/cam02.mp4",
    DATA / "sports2d/Sports2D/Demo/demo.mp4",
]


def measure(path: Path, convert: bool, threads: bool, repeat: int) -> tuple[int, float]:
    """Best-of-``repeat`` frames per second (best, because the machine's other load only slows)."""
    best = 0.0
    n = 0
    for _ in range(repeat):
        src = open_video(path, threads=threads)
        t0 = time.perf_counter()
        n = sum(1 for _ in src.frames(convert=convert))
        best = max(best, n / (time.perf_counter() - t0))
    return n, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-threads", action="store_true", help="single-threaded decoding")
    args = ap.parse_args()
    threads = not args.no_threads
    print(f"CPU cores: {os.cpu_count()}, threaded decoding: {threads}")
    print(f"{'video':<12} {'codec':<6} {'size':>10} {'frames':>6} {'decode fps':>11} {'+RGB fps':>9}")
    for path in VIDEOS:
        if not path.exists():
            print(f"missing: {path}")
            continue
        info = open_video(path).info
        n, fps_dec = measure(path, False, threads, args.repeat)
        _, fps_rgb = measure(path, True, threads, args.repeat)
        print(f"{path.name:<12} {info.codec:<6} {info.width:>5}x{info.height:<4} {n:>6} "
              f"{fps_dec:>11.1f} {fps_rgb:>9.1f}")


if __name__ == "__main__":
    main()
