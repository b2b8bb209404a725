"""``kinevid c3d from-opensim``: OpenSim results (TRC, IK .mot, ID .sto, GRF .mot) -> one C3D.

The frames are the markers' (or, without markers, the joint angles', else the moments'); joint
angles, moments and powers are interpolated to those times (NaN, i.e. missing, outside their
range), the GRF onto the analog grid when its samples do not already fall on it. Joint powers
are computed when both angles and moments are given. See :mod:`opensim_bridge.c3d_write`.
"""
from __future__ import annotations

import argparse

from opensim_bridge.errors import InputError

__all__ = ["add_parsers", "add_from_opensim_parser", "run_from_opensim", "parse_event"]


def parse_event(text: str):
    """``"Foot Strike,Left,1.02"`` -> ``Event("Foot Strike", 1.02, "Left")``."""
    from opensim_bridge.timeseries import Event

    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3:
        raise InputError(f"--event {text!r}: expected NAME,CONTEXT,TIME (e.g. 'Foot Strike,Left,1.02')")
    name, context, when = parts
    try:
        t = float(when)
    except ValueError:
        raise InputError(f"--event {text!r}: time {when!r} is not a number of seconds") from None
    if not name:
        raise InputError(f"--event {text!r}: the event has no name")
    return Event(name, t, context)


def run_from_opensim(args: argparse.Namespace) -> int:
    # Heavy imports here so `kinevid --help` stays instant.
    from opensim_bridge.c3d_write import (frame_times, grf_on_analog_grid, resample_table,
                                          write_c3d)
    from opensim_bridge.external_loads import read_grf
    from opensim_bridge.markers import read_markers
    from opensim_bridge.storage import read_table
    from opensim_bridge.vicon_outputs import joint_powers

    if not (args.markers or args.ik or args.id):
        raise InputError("give at least one of --markers, --ik, --id (a GRF alone has no frames)")
    if args.mass is not None and not args.mass > 0:
        raise InputError(f"--mass must be a positive number of kg, got {args.mass:g}")
    events = [parse_event(e) for e in args.event or []]
    markers = read_markers(args.markers, axes=args.marker_axes) if args.markers else None
    ik = read_table(args.ik) if args.ik else None
    idt = read_table(args.id) if args.id else None
    grf = read_grf(args.grf) if args.grf else None

    base = markers if markers is not None else (ik if ik is not None else idt)
    time = frame_times(base.time, base.source)
    powers = None
    if ik is not None and idt is not None:
        powers = resample_table(joint_powers(ik, resample_table(idt, ik.time)), time)
    angles = resample_table(ik, time) if ik is not None else None
    moments = resample_table(idt, time) if idt is not None else None
    if grf is not None:
        grf = grf_on_analog_grid(grf, time)
    out = write_c3d(args.output, markers=markers, angles=angles, moments=moments, powers=powers,
                    grf=grf, events=events, model=args.model, body_mass_kg=args.mass,
                    axes=args.axes, subject=args.subject)
    what = []
    if markers is not None:
        what.append(f"{len(markers.names)} markers")
    for name, table in (("angles", angles), ("moments", moments), ("powers", powers)):
        if table is not None:
            what.append(name)
    if grf is not None:
        what.append("force platforms")
    print(f"wrote {out} ({', '.join(what)}; {len(time)} frames; lab axes {args.axes})")
    return 0


def add_from_opensim_parser(c3d_subparsers) -> argparse.ArgumentParser:
    p = c3d_subparsers.add_parser(
        "from-opensim", help="write OpenSim results (markers, IK, ID, GRF) as a C3D file",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--markers", help="marker file (.trc, or .c3d), in OpenSim's frame")
    p.add_argument("--marker-axes", default=None,
                   help="axis mapping for reading the marker file (default: none for TRC, "
                        "auto for C3D), as in 'kinevid ik'")
    p.add_argument("--ik", help="joint angles (.mot from inverse kinematics)")
    p.add_argument("--id", help="joint moments (.sto from inverse dynamics)")
    p.add_argument("--grf", help="ground reaction forces (.mot), written as virtual force plates")
    p.add_argument("--model", help=".osim model: body mass for per-kg moments and powers, and "
                                   "the knee's sign convention")
    p.add_argument("--mass", type=float, default=None,
                   help="body mass in kg for per-kg moments and powers (overrides --model's)")
    p.add_argument("--event", action="append", metavar="NAME,CONTEXT,TIME",
                   help="a gait event, e.g. 'Foot Strike,Left,1.02' (repeatable)")
    p.add_argument("--axes", default="opensim-to-lab",
                   help="lab frame as OpenSim X,Y,Z in lab axes (default opensim-to-lab = "
                        "x,z,-y: Z-up lab; 'none' keeps OpenSim's Y-up frame)")
    p.add_argument("--subject", default=None,
                   help="subject name (EVENT:SUBJECTS and the SUBJECTS group, for Nexus/Polygon)")
    p.add_argument("-o", "--output", required=True, help="output .c3d file")
    p.set_defaults(func=run_from_opensim)
    return p


def add_parsers(subparsers) -> None:
    """Register the C3D export subcommands on ``kinevid c3d``'s subparsers."""
    add_from_opensim_parser(subparsers)
