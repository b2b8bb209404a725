"""Frames per second of each lifter on CPU, in one run.

Random weights in each registry entry's architecture (speed does not depend on the values); the
shipped kinevid file is used when present. Times :func:`models.lift_infer.lift_sequence` from
pixels (normalisation, edge padding, flip test on and off; one dilated pass for VideoPose3D's
screen normalisation, window by window for kinevid's person-window input) on a sequence of N
frames of a person walking across a 1920x1080 image; prints one line per lifter and setting.
kinevid's own lifter is timed twice: in PyTorch and in numpy (:mod:`models.lifter_numpy`, what
``kinevid run`` uses), with the time each takes to load.

    python benchmarks/lift_speed.py [--frames 600] [--threads 2]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from inference.layouts import get_layout
from models.lift_infer import lift_sequence
from models.lifter_registry import LIFTER_REGISTRY, REPO_ROOT, build_lifter, load_lifter


def _models():
    from models.lifter_numpy import load_numpy_lifter

    for name, spec in LIFTER_REGISTRY.items():
        if spec.file and (REPO_ROOT / spec.file).is_file():
            t0 = time.perf_counter()
            model, spec = load_lifter(name, quiet=True)
            t1 = time.perf_counter()
            yield f"{name} torch (load {t1 - t0:.2f} s)", model, spec
            t0 = time.perf_counter()
            model, spec = load_numpy_lifter(name)
            t1 = time.perf_counter()
            yield f"{name} numpy (load {t1 - t0:.2f} s)", model, spec
        else:
            yield name + " (random weights)", build_lifter(spec).eval(), spec


def _params(model) -> float:
    """Millions of parameters (the numpy network's folded matrices count the same weights)."""
    if hasattr(model, "parameters"):
        return sum(p.numel() for p in model.parameters()) / 1e6
    mats = [model._expand, model._shrink] + [m for block in model._blocks for m in block]
    return sum(a.size + b.size for a, b in mats) / 1e6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.frames} frames")
    rng = np.random.default_rng(0)
    for label, model, spec in _models():
        params = _params(model)
        lay = get_layout(spec.input_layout)
        # a skeleton-sized cloud of points drifting across the image, with some jitter
        base = rng.normal(0, 120, (lay.n, 2))
        drift = np.stack([np.linspace(300, 1600, args.frames), np.full(args.frames, 540.0)], -1)
        px = drift[:, None, :] + base[None] + rng.normal(0, 3, (args.frames, lay.n, 2))
        conf = rng.uniform(0.5, 1.0, (args.frames, lay.n))
        run = lambda n, flip: lift_sequence(model, spec, px[:n], conf[:n], (1920, 1080),
                                            flip=flip, height=1.75)
        for flip in (True, False):
            run(50, flip)  # warm-up
            best = float("inf")
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                run(args.frames, flip)
                best = min(best, time.perf_counter() - t0)
            print(f"{label:<36} rf {spec.receptive_field:>3} {params:5.1f} M params  "
                  f"{spec.normalisation:<13} flip {'on ' if flip else 'off'}  "
                  f"{args.frames / best:8.1f} frames/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
