"""Speed of the video -> 2D keypoints stage, in one run:

* decoding alone (PyAV, upright RGB frames, as the pose models receive them);
* BlazePose through ``estimate_pose2d`` (decoding, multi-person BlazePose, tracking, all in);
* ViTPose-S and ViTPose-B with random weights (speed does not depend on the values) on the
  person boxes BlazePose finds, top-down with flip test, on the CPU and, when
  ``torch.cuda.is_available()``, on the GPU (fp16).

Reported per video: frames per second (wall clock, best of ``--repeat``) and CPU seconds per
frame (all threads). On a shared machine the wall-clock rate falls with the other load; the
CPU time per frame does much less, and ``cores / cpu_s_per_frame`` bounds what an idle machine
could reach. The goal for BlazePose is >= 30 frames/s for 1080p on 2 CPU cores. Run from the
repository root:

    .venv/bin/python benchmarks/pose2d_speed.py [--repeat 2] [--vit-frames 10] [--skip-vit]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np

from inference.pose2d_run import BackendChoice, estimate_pose2d
from inference.video import open_video

DATA = REPO.parent / "shared" / "data"
VIDEOS = [
    DATA / "pose2sim/Pose2Sim/Demo_SinglePerson/videos/cam01.mp4",   # 1080x1920 H.264, 60 fps
    DATA / "pose2sim/Pose2Sim/Demo_SinglePerson/videos/cam02.mp4",   # 1080x1920 VP9
    DATA / "sports2d/Sports2D/Demo/demo.mp4",                        # 1768x994 VP9, 2 persons
]


def _timed(fn, repeat: int) -> tuple[int, float, float]:
    """(frames, best frames/s, CPU seconds per frame of that best run)."""
    best = (0, 0.0, float("nan"))
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        n = fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if n / wall > best[1]:
            best = (n, n / wall, cpu / max(n, 1))
    return best


def bench_decode(path: Path, repeat: int):
    return _timed(lambda: sum(1 for _ in open_video(path).frames()), repeat)


def bench_blazepose(path: Path, repeat: int):
    choice = BackendChoice("blazepose", None, "benchmark")
    return _timed(lambda: len(estimate_pose2d(path, choice=choice)), repeat)


def bench_vitpose(path: Path, variant: str, device: str, frames: int, repeat: int):
    """Top-down ViTPose on BlazePose's boxes of the first ``frames`` frames (boxes computed
    beforehand: this times the ViTPose part alone, crops + network + decoding)."""
    import torch

    from inference.blazepose import MultiPersonBlazePose
    from inference.layouts import get_layout
    from inference.tracking import keypoint_boxes
    from models.topdown import TopDownPredictor
    from models.vitpose import create_vitpose

    images, boxes = [], []
    with MultiPersonBlazePose() as finder:
        for f in open_video(path).frames(max_frames=frames):
            people = finder.process(f.image)
            images.append(f.image)
            boxes.append(keypoint_boxes(np.stack(people), 0.3) if people else np.zeros((0, 4)))
    torch.manual_seed(0)
    model = create_vitpose(variant, head="classic", num_keypoints=17)
    pred = TopDownPredictor(model, flip_pairs=get_layout("coco17").flip_pairs, device=device)
    pred.predict(images[0], boxes[0] if len(boxes[0]) else np.array([[0, 0, 100, 200]]))  # warm-up

    def run() -> int:
        for img, b in zip(images, boxes):
            pred.predict(img, b)
        if pred.device.type == "cuda":
            torch.cuda.synchronize()
        return len(images)

    n, fps, cpu = _timed(run, repeat)
    persons = sum(len(b) for b in boxes) / max(len(boxes), 1)
    return n, fps, cpu, persons


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--vit-frames", type=int, default=10, help="frames for ViTPose on the CPU")
    ap.add_argument("--skip-vit", action="store_true")
    args = ap.parse_args()

    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"CPU cores available: {cores}; torch threads: {torch.get_num_threads()}; "
          f"CUDA: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}; "
          f"load average: {os.getloadavg()[0]:.1f}")
    print(f"{'video':<12} {'size':>10} {'stage':<26} {'frames':>6} {'fps':>7} {'cpu s/frame':>12} {'cores/cpu':>9}")

    def row(path, size, stage, n, fps, cpu, extra=""):
        bound = cores / cpu if cpu and np.isfinite(cpu) else float("nan")
        print(f"{path.stem:<12} {size:>10} {stage:<26} {n:>6} {fps:>7.1f} {cpu:>12.4f} {bound:>9.1f}{extra}",
              flush=True)

    for path in VIDEOS:
        if not path.is_file():
            print(f"missing {path}")
            continue
        info = open_video(path).info
        size = f"{info.width}x{info.height}"
        row(path, size, "decode (RGB)", *bench_decode(path, args.repeat))
        row(path, size, "blazepose (incl. decode)", *bench_blazepose(path, args.repeat))
        if args.skip_vit:
            continue
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for device in devices:
            for variant in ("s", "b"):
                frames = args.vit_frames if device == "cpu" else 100
                n, fps, cpu, persons = bench_vitpose(path, variant, device, frames, 1)
                row(path, size, f"vitpose-{variant} {device} (flip)", n, fps, cpu,
                    f"  ({persons:.1f} persons/frame; boxes given)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
