"""Frames per second of each lifter on CPU, in one run.

Random weights in each registry entry's architecture (speed does not depend on the values); the
shipped kinevid file is used when present. Times :func:`models.lift_infer.run_lifter` (edge
padding, flip test on and off) on a sequence of N frames; prints one line per lifter and setting.

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
from models.lift_infer import mirror_permutation, run_lifter
from models.lifter_registry import LIFTER_REGISTRY, REPO_ROOT, build_lifter, load_lifter


def _models():
    for name, spec in LIFTER_REGISTRY.items():
        if spec.file and (REPO_ROOT / spec.file).is_file():
            model, spec = load_lifter(name, quiet=True)
            yield name + " (shipped weights)", model, spec
        else:
            yield name + " (random weights)", build_lifter(spec).eval(), spec


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
        params = sum(p.numel() for p in model.parameters()) / 1e6
        lay = get_layout(spec.input_layout)
        x = rng.normal(0, 0.3, (args.frames, lay.n, spec.in_features)).astype(np.float32)
        for flip in (True, False):
            run_lifter(model, x[:50], flip=flip, input_flip=lay.flip_index,
                       output_flip=mirror_permutation(spec.output_names))  # warm-up
            best = float("inf")
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                run_lifter(model, x, flip=flip, input_flip=lay.flip_index,
                           output_flip=mirror_permutation(spec.output_names))
                best = min(best, time.perf_counter() - t0)
            print(f"{label:<34} rf {spec.receptive_field:>3} {params:5.1f} M params  "
                  f"flip {'on ' if flip else 'off'}  {args.frames / best:8.1f} frames/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
