"""``kinevid c3d info`` and ``kinevid c3d to-opensim``: look into a C3D file, convert it."""
from __future__ import annotations

import argparse

import numpy as np


def _names(names, limit: int = 12) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... (+{len(names) - limit})" if len(names) > limit else "")


def summary(data) -> str:
    """A human-readable description of a :class:`~opensim_bridge.c3d_read.C3DData`."""
    lines = [f"file: {data.path}",
             f"format: {data.processor} processor, {data.format} data "
             f"(POINT:SCALE {data.point_scale:g}), units {data.point_units!r}"]
    maker = ", ".join(f"{k} {v}" for k, v in data.manufacturer.items()) or "unknown"
    lines.append(f"manufacturer: {maker}")
    lines.append(f"points: {data.n_frames} frames at {data.point_rate:g} Hz, "
                 f"{data.duration:.3f} s, first frame {data.first_frame} "
                 f"(t = {data.point_time[0]:.4f}-{data.point_time[-1]:.4f} s)")
    if data.markers is not None:
        valid = 100 * data.markers.valid.mean()
        lines.append(f"markers: {len(data.markers.names)} ({valid:.0f}% of samples present): "
                     f"{_names(data.markers.names)}")
    else:
        lines.append("markers: none")
    for group, outputs in data.model_outputs.items():
        unit = data.model_output_units.get(group, "")
        lines.append(f"model outputs, {group}{f' ({unit})' if unit else ''}: {len(outputs)}: "
                     f"{_names(outputs)}")
    if data.analog is not None:
        a = data.analog
        lines.append(f"analog: {len(a.labels)} channels at {a.rate:g} Hz "
                     f"({a.samples_per_frame} per frame, {len(a.time)} samples): "
                     f"{_names(a.labels)}")
    else:
        lines.append("analog: none")
    if data.force_plates:
        lines.append(f"force plates: {len(data.force_plates)}")
        for p in data.force_plates:
            lo, hi = p.extent()
            peak = float(np.nanmax(np.linalg.norm(p.force, axis=1))) if len(p.force) else 0.0
            lines.append(f"  plate {p.index}: type {p.type}, corners x {lo[0]:.3f}..{hi[0]:.3f}"
                         f" y {lo[1]:.3f}..{hi[1]:.3f} z {lo[2]:.3f}..{hi[2]:.3f} m, "
                         f"peak |F| {peak:.0f} N")
    else:
        lines.append("force plates: none")
    if data.events:
        lines.append(f"events: {len(data.events)}")
        for e in data.events[:20]:
            lines.append(f"  {e.time:8.3f} s  {e.name}{f' ({e.context})' if e.context else ''}")
        if len(data.events) > 20:
            lines.append(f"  ... (+{len(data.events) - 20})")
    else:
        lines.append("events: none")
    if data.warnings:
        lines.append(f"notes: {len(data.warnings)}")
        lines += [f"  {w}" for w in data.warnings[:20]]
    return "\n".join(lines)


def _cmd_info(args) -> int:
    from opensim_bridge.c3d_read import read_c3d

    print(summary(read_c3d(args.file)))
    return 0


def _cmd_to_opensim(args) -> int:
    from opensim_bridge.c3d_opensim import c3d_to_opensim
    from opensim_bridge.errors import InputError

    if args.force_threshold < 0:
        raise InputError(f"--force-threshold must be >= 0 N, got {args.force_threshold:g}")
    if args.lowpass_grf is not None and args.lowpass_grf <= 0:
        raise InputError(f"--lowpass-grf must be a positive frequency, got {args.lowpass_grf:g}")
    res = c3d_to_opensim(args.file, args.output, axes=args.axes,
                         force_threshold=args.force_threshold, lowpass_grf=args.lowpass_grf,
                         zero_baseline=not args.no_zero_baseline)
    print(f"axes: OpenSim X,Y,Z = lab {res.mapping} "
          f"({'detected' if args.axes == 'auto' else 'given'})")
    for p in (res.trc, res.grf, res.external_loads, res.axes_json):
        if p is not None:
            print(f"wrote {p}")
    for plate, body in res.assignments.items():
        print(f"  plate {plate}: {body or 'never loaded, left out'}")
    return 0


def add_info_parser(c3d_subparsers) -> argparse.ArgumentParser:
    p = c3d_subparsers.add_parser("info", help="summarise a C3D file",
                                  description="Markers, model outputs, rates, analog channels, "
                                              "force plates, events and format of a C3D file.")
    p.add_argument("file", help="the .c3d file")
    p.set_defaults(func=_cmd_info)
    return p


def add_to_opensim_parser(c3d_subparsers) -> argparse.ArgumentParser:
    p = c3d_subparsers.add_parser(
        "to-opensim", help="write markers.trc, grf.mot and external loads from a C3D file",
        description="Markers in metres in OpenSim's Y-up frame (markers.trc), ground reaction "
                    "forces on the subject (grf.mot, OpenSim column names), an ExternalLoads "
                    "XML assigning loaded plates to calcn_r/calcn_l by the nearer foot markers, "
                    "and axes.json recording the axis mapping.")
    p.add_argument("file", help="the .c3d file")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--axes", default="auto",
                   help="lab -> OpenSim axes: 'auto' (detect the vertical from the markers) or "
                        "three signed lab axes for OpenSim X,Y,Z, e.g. 'x,z,-y' (default auto)")
    p.add_argument("--force-threshold", type=float, default=20.0,
                   help="vertical force (N) below which a plate counts as unloaded: CoP, force "
                        "and torque written as 0 (default 20)")
    p.add_argument("--lowpass-grf", type=float, default=None, metavar="HZ",
                   help="low-pass the forces, torques and CoP at HZ (default: no filter)")
    p.add_argument("--no-zero-baseline", action="store_true",
                   help="do not subtract the FORCE_PLATFORM:ZERO baseline")
    p.set_defaults(func=_cmd_to_opensim)
    return p
