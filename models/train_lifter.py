"""Train kinevid's own 2D->3D lifter and write the shipped weights.

    python -m models.train_lifter --out models/weights/kinevid_lifter.pt

Reproduces ``models/weights/kinevid_lifter.pt`` from a fixed seed on a 2-core CPU
(deterministic algorithms; one torch thread for the network in bfloat16, the batches made by a
second process). Data: :mod:`models.lifter_data` (real motion from ``../shared/data``, random
cameras, detector-like noise; the held-out trials/subjects are never sampled).
Model: :class:`models.tcn.TemporalModelOptimized1f` on random windows (one output frame per
window); its parameters load unchanged into :class:`models.tcn.TemporalModel` for sequences.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import queue
import sys
import time
from pathlib import Path

import numpy as np
import torch

from models import lifter_data as D
from models.tcn import TemporalModelOptimized1f

# The shipped settings (the model card quotes them from the file's meta).
DEFAULTS = {
    "seed": 20240611, "filter_widths": (3, 3, 3), "channels": 512, "dropout": 0.1,
    "steps": 50000, "batch": 256, "lr": 2e-3, "lr_final": 1e-4, "bn_momentum": (0.1, 0.001),
    "opensim_weight": 5.0, "sigma_range": (0.0, 0.04), "fps_range": (25.0, 60.0),
    "speed_range": (0.8, 1.25), "height_range": (1.5, 1.95), "bn_batches": 100,
    "normalisation": "person_window", "output_units": "height", "edge_fraction": 0.0,
    "precision": "bf16", "threads": 1, "group_cap_s": 80.0,
    # the kinds of 2D detector a window's input imitates (lifter_data.INPUT_SOURCES: the points
    # each never gives); BlazePose is kinevid's offline default, so the largest share
    "input_sources": {"halpe26": 0.25, "wholebody": 0.2, "blazepose": 0.35, "body25": 0.1,
                      "all": 0.1},
    # the fraction of windows whose arms move as another window's do (lifter_data.swap_parts):
    # held-out arm errors were the largest gap to the training subjects'
    "arm_swap": 0.3,
}


def plain(obj):
    """``obj`` with numpy scalars/arrays and tuples turned into plain Python types, so that the
    checkpoint loads with ``torch.load(weights_only=True)``."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [plain(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj)
    return str(obj)


def input_sources_meta(sources) -> dict[str, list[str]] | None:
    """{detector kind: canonical names of the input points it never gives} for the kinds
    training drew (``cfg["input_sources"]``), as the checkpoint's meta states them."""
    if not sources:
        return None
    from inference.layouts import get_layout
    lay = get_layout(D.INPUT_LAYOUT)
    return {k: [lay.names[lay.index(n)] for n in D.INPUT_SOURCES[k]] for k in sources}


def mpjpe(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean per-joint position error (same units as the inputs)."""
    return torch.linalg.vector_norm(pred - target, dim=-1).mean()


class FastDropout(torch.nn.Dropout):
    """:class:`torch.nn.Dropout` (zero each element with probability ``p``, scale the others
    by ``1 / (1 - p)``) with its random mask drawn as 16-bit integers: on the CPU, torch's
    ``bernoulli_`` took ~30 % of a training step, ten times the cost of the integer draw.
    A subclass, so the network's parameters and state dict are unchanged and the swap is only
    made for training (:func:`fast_dropout`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        threshold = round(self.p * 32768)       # random_() on int16 draws from [0, 32767]
        drop = torch.empty(x.shape, dtype=torch.int16, device=x.device).random_() < threshold
        return x.masked_fill(drop, 0.0) * (1.0 / (1.0 - self.p))


def fast_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Replace every ``nn.Dropout`` of ``model`` by a :class:`FastDropout` of the same ``p``."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Dropout:
                setattr(parent, name, FastDropout(child.p))
    return model


def _produce(sampler, batch: int, count: int, out) -> None:
    try:
        for _ in range(count):
            out.put(sampler.batch(batch))
    except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
        out.put(RuntimeError(f"training data process failed: {exc!r}"))


class BatchStream:
    """``count`` batches of ``sampler``, made ahead by a forked process while the network
    trains: the same batches in the same order as calling ``sampler.batch`` in a loop (the
    child owns the sampler and its random state). Making a batch is about as long as a
    bfloat16 training step, so overlapping the two is most of the remaining speed-up. Where
    processes cannot be forked, the batches are made in this process."""

    def __init__(self, sampler, batch: int, count: int, ahead: int = 4):
        self.sampler, self.batch, self.left = sampler, batch, count
        self._proc = None
        if "fork" in mp.get_all_start_methods():
            ctx = mp.get_context("fork")
            self._queue = ctx.Queue(maxsize=ahead)
            self._proc = ctx.Process(target=_produce, args=(sampler, batch, count, self._queue),
                                     daemon=True)
            self._proc.start()

    def next(self):
        if self.left <= 0:
            raise StopIteration("no batches left")
        self.left -= 1
        if self._proc is None:
            return self.sampler.batch(self.batch)
        while True:
            try:
                item = self._queue.get(timeout=5.0)
                break
            except queue.Empty:
                if not self._proc.is_alive():
                    raise RuntimeError("the training data process died "
                                       f"(exit code {self._proc.exitcode})") from None
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.terminate()
        if self._proc is not None:
            self._proc.join()


@torch.no_grad()
def recalibrate_batchnorm(model, stream: BatchStream, batches: int, device="cpu") -> None:
    """Recompute BatchNorm running statistics with the final weights, as a plain average over
    fresh training batches (dropout off), so that eval mode sees the statistics of the
    network it runs rather than an average over weights that kept changing."""
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    saved = [d.p for d in drops]
    for d in drops:
        d.p = 0.0
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.reset_running_stats()
            m.momentum = None           # cumulative moving average
    model.train()
    for _ in range(batches):
        x, _ = stream.next()
        model(torch.from_numpy(x).to(device))
    for d, p in zip(drops, saved):
        d.p = p
    model.eval()


def build_model(cfg: dict, optimised: bool = True):
    from models.tcn import TemporalModel
    from models.lifter_input import extra_rows
    cls = TemporalModelOptimized1f if optimised else TemporalModel
    n_in = len(D.INPUT_NAMES) + extra_rows(cfg.get("normalisation", "screen_width"))
    return cls(n_in, 3, len(D.OUTPUT_MARKERS), tuple(cfg["filter_widths"]),
               causal=False, dropout=cfg["dropout"], channels=cfg["channels"])


def train(cfg: dict, out: Path, log=print, clips: list | None = None) -> dict:
    """Train with settings ``cfg`` (:data:`DEFAULTS` and more) and write the checkpoint to
    ``out``; ``clips``: the motion to split and sample (default: all of ``../shared/data``)."""
    t_start = time.perf_counter()
    torch.manual_seed(cfg["seed"])
    device = torch.device(cfg.get("device", "cpu"))
    if device.type == "cuda":
        # deterministic cuBLAS needs a fixed workspace, set before CUDA starts
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(cfg.get("threads", 1))
    clips = D.build_clips(log=log) if clips is None else clips
    train_clips, held = D.split_clips(clips)
    assert not {c.group for c in train_clips} & D.HELD_OUT_GROUPS
    model = fast_dropout(build_model(cfg)).to(device)
    rf = model.receptive_field()
    sampler = D.PairSampler(train_clips, rf, seed=cfg["seed"], fps_range=cfg["fps_range"],
                            speed_range=cfg["speed_range"], height_range=cfg["height_range"],
                            sigma_range=cfg["sigma_range"], normalisation=cfg["normalisation"],
                            output_units=cfg["output_units"],
                            edge_fraction=cfg.get("edge_fraction", 0.0),
                            group_cap_s=cfg.get("group_cap_s"),
                            input_sources=cfg.get("input_sources"),
                            arm_swap=cfg.get("arm_swap", 0.0),
                            head_swap=cfg.get("head_swap", 0.0))
    # OpenSim-driven clips are the built-in model itself (the output's own geometry) but only
    # a minute of motion: weight them up
    w = sampler.p * np.array([cfg["opensim_weight"] if c.source == "opensim" else 1.0
                              for c in train_clips])
    sampler.p = w / w.sum()
    # fused: one kernel per step instead of ~10 elementwise passes over the parameters
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], amsgrad=True, fused=True)
    steps = int(cfg["steps"])
    gamma = (cfg["lr_final"] / cfg["lr"]) ** (1.0 / max(steps - 1, 1))
    m0, m1 = cfg["bn_momentum"]
    n_params = sum(p.numel() for p in model.parameters())
    log(f"train clips {len(train_clips)}, held-out clips {len(held)}; receptive field {rf}, "
        f"{n_params} parameters")
    # the loss is printed in mm of a 1.75 m subject when the targets are in units of height
    unit_m = 1.75 if cfg["output_units"] == "height" else 1.0
    bf16 = cfg.get("precision", "fp32") == "bf16"
    model.train()
    run = 0.0
    t_data = 0.0
    stream = BatchStream(sampler, cfg["batch"], steps + cfg["bn_batches"])
    try:
        for step in range(steps):
            t0 = time.perf_counter()
            x, y = stream.next()
            t_data += time.perf_counter() - t0
            for g in opt.param_groups:
                g["lr"] = cfg["lr"] * gamma ** step
            model.set_bn_momentum(m0 * (m1 / m0) ** (step / max(steps - 1, 1)))
            # bfloat16 products (fp32 BatchNorm statistics, loss and weights): on CPUs with
            # matrix units the step is ~3x faster than fp32 convolutions, so the hour of CPU
            # training sees ~3x the windows; inference runs the same weights in fp32
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                pred = model(torch.from_numpy(x).to(device))[:, 0]
            loss = mpjpe(pred.float(), torch.from_numpy(y).to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            run = loss.item() if step == 0 else 0.98 * run + 0.02 * loss.item()
            if step % 200 == 0 or step == steps - 1:
                el = time.perf_counter() - t_start
                log(f"step {step:6d}  loss {1000 * run * unit_m:6.1f} mm  lr {opt.param_groups[0]['lr']:.2e}  "
                    f"{el:7.0f} s (waiting for data {t_data:.0f} s)")
        recalibrate_batchnorm(model, stream, cfg["bn_batches"], device)
    finally:
        stream.close()
    train_s = time.perf_counter() - t_start
    meta = {
        "format": "kinevid-lifter-1",
        "input_layout": D.INPUT_LAYOUT,
        "input_names": list(D.INPUT_NAMES),
        "input_sources": input_sources_meta(cfg.get("input_sources")),
        "in_features": 3,
        "output_names": list(D.OUTPUT_MARKERS),
        "root_index": D.ROOT_INDEX,
        "input_root_index": D.INPUT_ROOT_INDEX,
        "output_units": cfg["output_units"],
        "output_frame": "camera: x right, y down, z forward; root-relative (root = Hip, mid-hip)",
        "normalisation": cfg["normalisation"],
        "missing_2d": "linear in time between samples (held at ends), confidence 0; a point "
                      "never seen in the window: the mean of the seen points, confidence 0",
        "filter_widths": list(cfg["filter_widths"]),
        "channels": int(cfg["channels"]),
        "causal": False,
        "dense": False,
        "train": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
        "train_seconds": round(train_s, 1),
        "train_threads": int(torch.get_num_threads()),
        "train_device": str(device),
        "train_machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch_version": str(torch.__version__),
        "held_out_groups": sorted(D.HELD_OUT_GROUPS),
        "train_groups": sorted({c.group for c in train_clips}),
        "train_clips": len(train_clips),
        "train_minutes": round(sum(c.frames / c.fps for c in train_clips) / 60, 2),
        "data_version": D.DATA_VERSION,
        "licence": "kinevid's own weights; training data licences in kinevid_lifter.md",
    }
    from models.lifter_registry import save_lifter_checkpoint
    out.parent.mkdir(parents=True, exist_ok=True)
    save_lifter_checkpoint(model, out, meta=plain(meta), epoch=steps)
    log(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) after {train_s:.0f} s")
    return meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("models/weights/kinevid_lifter.pt"))
    ap.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    ap.add_argument("--batch", type=int, default=DEFAULTS["batch"])
    ap.add_argument("--channels", type=int, default=DEFAULTS["channels"])
    ap.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    ap.add_argument("--threads", type=int, default=DEFAULTS["threads"],
                    help="torch threads (the training data is made by a second process)")
    ap.add_argument("--dropout", type=float, default=DEFAULTS["dropout"])
    ap.add_argument("--edge-fraction", type=float, default=DEFAULTS["edge_fraction"],
                    help="fraction of training windows at a clip's padded end")
    ap.add_argument("--precision", default=DEFAULTS["precision"], choices=("bf16", "fp32"),
                    help="arithmetic of the training products (weights stay fp32)")
    ap.add_argument("--device", default="cpu",
                    help="torch device to train on (cpu, cuda); the data is made on the CPU")
    ap.add_argument("--normalisation", default=DEFAULTS["normalisation"],
                    choices=("screen_width", "person_window"))
    a = ap.parse_args(argv)
    cfg = dict(DEFAULTS, steps=a.steps, batch=a.batch, channels=a.channels, seed=a.seed,
               threads=a.threads, dropout=a.dropout, normalisation=a.normalisation,
               edge_fraction=a.edge_fraction, precision=a.precision, device=a.device,
               output_units="height" if a.normalisation == "person_window" else "m")
    train(cfg, a.out, log=lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
