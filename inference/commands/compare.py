"""``kinevid compare OURS LAB``: agreement of kinevid's results with lab data.

Prints a short summary and writes ``channels.csv`` or ``markers.csv``, ``summary.txt`` and PNG
figures into the output folder. See :mod:`opensim_bridge.compare` for the method.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from opensim_bridge.errors import InputError

__all__ = ["add_compare_parser", "run_compare"]


def _default_output(ours: str, lab: str) -> Path:
    return Path.cwd() / f"compare_{Path(ours).stem}_vs_{Path(lab).stem}"


def run_compare(args: argparse.Namespace) -> int:
    # Imported here so `kinevid --help` stays instant (scipy, matplotlib).
    from opensim_bridge.atomic import atomic_write
    from opensim_bridge.compare import compare_files, summary_text, write_csv

    if args.max_lag < 0:
        raise InputError(f"--max-lag must be >= 0 s, got {args.max_lag:g}")
    if args.rows < 1:
        raise InputError(f"--rows must be >= 1, got {args.rows}")
    if args.per_page < 1:
        raise InputError(f"--per-page must be >= 1, got {args.per_page}")
    result = compare_files(args.ours, args.lab, mapping=args.map, align=not args.no_align,
                           max_lag_s=args.max_lag, mode=args.mode, rigid=not args.no_rigid)
    out = Path(args.output) if args.output else _default_output(args.ours, args.lab)
    out.mkdir(parents=True, exist_ok=True)
    text = summary_text(result)
    written = [write_csv(result, out / f"{result.kind}.csv")]
    with atomic_write(out / "summary.txt") as fh:
        fh.write(text + "\n")
    written.append(out / "summary.txt")
    if not args.no_plots:
        from opensim_bridge.compare_plots import plot_comparison

        written += plot_comparison(result, out, per_page=args.per_page)
    # The printed summary stays short; summary.txt and the CSV list every row.
    print(summary_text(result, max_rows=args.rows))
    for p in written:
        print(f"wrote {p}")
    sys.stdout.flush()
    return 0


def add_compare_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``compare`` on an ``add_subparsers()`` object; returns its parser."""
    p = subparsers.add_parser(
        "compare", help="compare results with lab data (angles, moments or markers)",
        description="Side-by-side comparison of OURS (kinevid's output) with LAB (reference "
                    "data): time alignment by cross-correlation, RMSE, MAE, bias, SD, Pearson r "
                    "and Bland-Altman limits per channel; for marker files, per-marker error "
                    "after a rigid fit. Inputs: .mot/.sto (coordinates, moments), .c3d (model "
                    "outputs such as Plug-in Gait angles, or markers), .trc (markers).")
    p.add_argument("ours", metavar="OURS", help="our result (.mot, .sto, .trc or .c3d)")
    p.add_argument("lab", metavar="LAB", help="the lab reference (.mot, .sto, .trc or .c3d)")
    p.add_argument("-o", "--output",
                   help="output folder (default: ./compare_<OURS>_vs_<LAB>)")
    p.add_argument("--map", metavar="TOML",
                   help="channel pairing file: [pairs] knee_angle_r = \"RKneeAngles_X\" or "
                        "{ lab = \"RAnkleAngles_X\", scale = -1, offset = 0 }")
    p.add_argument("--mode", choices=("auto", "channels", "markers"), default="auto",
                   help="compare as scalar channels or as markers (default: from the file types; "
                        "two C3D files: channels when both hold model outputs)")
    p.add_argument("--no-align", action="store_true",
                   help="take both time axes as they are (no lag estimate)")
    p.add_argument("--max-lag", type=float, default=1.0,
                   help="largest lag searched, seconds (default 1)")
    p.add_argument("--no-rigid", action="store_true",
                   help="markers: no rigid fit (both are in the same frame already)")
    p.add_argument("--no-plots", action="store_true", help="write no PNG figures (faster)")
    p.add_argument("--rows", type=int, default=25,
                   help="channels or markers listed in the printed summary, worst first "
                        "(default 25; the files list all)")
    p.add_argument("--per-page", type=int, default=12,
                   help="channels per figure page (default 12)")
    p.set_defaults(func=run_compare)
    return p
