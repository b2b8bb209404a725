"""The ``kinevid`` command line.

Each subcommand parses its arguments, calls one function of the library and turns kinevid's own
errors into a one-line message and exit status 2. Heavy imports (OpenSim, torch) happen inside the
subcommand so ``kinevid --help`` stays instant.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from opensim_bridge.errors import KinevidError

from .progress import ProgressBar

__all__ = ["main", "build_parser"]


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("kinevid")
    except Exception:  # running from a source tree without installation
        return "0+unknown"


# ---------------------------------------------------------------------------- subcommands
def _cmd_model(args) -> int:
    from opensim_bridge.builtin_model import write_builtin_model

    out = Path(args.output)
    write_builtin_model(out, height=args.height, mass=args.mass, sex=args.sex)
    print(f"wrote {out} (built-in full-body model, {args.height} m, {args.mass} kg, sex {args.sex})")
    return 0


def _resolve_model(args, out_dir: Path) -> Path:
    """The user's .osim, or the built-in model written into the output folder."""
    if args.model and args.model != "builtin":
        return Path(args.model)
    from opensim_bridge.builtin_model import write_builtin_model

    path = out_dir / "model_builtin.osim"
    write_builtin_model(path, height=args.height, mass=args.mass, sex=args.sex)
    print(f"using the built-in model ({args.height} m, {args.mass} kg): {path}")
    return path


def _cmd_ik(args) -> int:
    from opensim_bridge import ik_pool
    from opensim_bridge.ik import run_ik
    from opensim_bridge.ik_settings import load_ik_settings
    from opensim_bridge.markers import read_markers

    # Workers start now so their start-up overlaps reading the inputs.
    ik_pool.prestart(args.jobs)
    out_dir = Path(args.output)
    markers = read_markers(args.markers, axes=args.axes)
    settings_file = args.setup or args.weights
    settings = load_ik_settings(settings_file) if settings_file else None  # all common markers, weight 1
    model = _resolve_model(args, out_dir)
    with ProgressBar("IK", unit="frames") as bar:
        result = run_ik(model, markers, settings, out_dir, jobs=args.jobs, start=args.start,
                        end=args.end, joint_limits=args.joint_limits, progress=bar.update)
    rms = result.marker_errors.column("marker_error_RMS")
    print(f"IK: {len(result.coordinates.time)} frames in {result.wall_time:.2f} s; marker RMS error "
          f"mean {1000 * rms.mean():.1f} mm, worst frame {1000 * rms.max():.1f} mm")
    for p in result.files.values():
        print(f"wrote {p}")
    return 0


def _cmd_id(args) -> int:
    from opensim_bridge.inverse_dynamics import run_id

    lowpass = None if args.lowpass is not None and args.lowpass <= 0 else args.lowpass
    result = run_id(args.model, args.motion, Path(args.output), grf=args.grf, loads=args.loads,
                    lowpass_hz=lowpass, start=args.start, end=args.end)
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    for a in result.assignments:
        target = a.body or "unused (never loaded)"
        print(f"ground force {a.plate.force_id}: {target} (by {a.rule}, {a.stance_frames} stance frames)")
    print(f"ID: {len(result.table.time)} frames ({result.time_range[0]:g}-{result.time_range[1]:g} s) "
          f"in {result.wall_s:.2f} s")
    for p in (result.id_sto, result.setup_xml, result.external_loads_xml):
        if p is not None:
            print(f"wrote {p}")
    return 0


def _cmd_scale(args) -> int:
    from opensim_bridge import scaling

    result = scaling.scale_from_setup(args.setup, Path(args.output), static=args.static,
                                      model=args.model, mass=args.mass, height=args.height)
    print(f"scaled in {result.wall_s:.2f} s; total mass {result.mass:.2f} kg; scale factors (x y z):")
    for body, factors in sorted(result.factors.items()):
        print(f"  {body:<14} " + " ".join(f"{f:6.3f}" for f in factors))
    for p in (result.model_path, result.setup_xml, result.scale_factors_xml):
        print(f"wrote {p}")
    return 0


# ---------------------------------------------------------------------------- parser
def _add_subject(p: argparse.ArgumentParser) -> None:
    p.add_argument("--height", type=float, default=1.75, help="subject height in metres (default 1.75)")
    p.add_argument("--mass", type=float, default=70.0, help="subject mass in kg (default 70)")
    p.add_argument("--sex", choices=("m", "f"), default="m",
                   help="selects the anthropometric table of the built-in model (default m)")


def _add_time_range(p: argparse.ArgumentParser) -> None:
    p.add_argument("--start", type=float, help="first time to process, seconds")
    p.add_argument("--end", type=float, help="last time to process, seconds")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kinevid", description="From an ordinary video of a person to OpenSim biomechanics.")
    parser.add_argument("--version", action="version", version=f"kinevid {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("ik", help="inverse kinematics: markers -> joint angles (ik.mot)",
                       description="Inverse kinematics with OpenSim's solver, parallel over frame chunks.")
    p.add_argument("--model", help="OpenSim model (.osim); default: the built-in model at --height/--mass")
    p.add_argument("--markers", required=True, help="marker trajectories (.trc or .c3d)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--setup", help="OpenSim IK setup XML: its task weights are used")
    g.add_argument("--weights", help="task weights as TOML ([markers] NAME = w, [coordinates] ...)")
    p.add_argument("--axes", help="lab-to-OpenSim axis mapping: auto (default for C3D: up axis found "
                   "from the body), none (default for TRC), or e.g. x,z,-y = OpenSim X,Y,Z from lab x, z, -y")
    p.add_argument("--jobs", type=int, help="worker processes (default: all cores)")
    p.add_argument("--joint-limits", action="store_true",
                   help="keep joint coordinates within the model's ranges (as if clamped)")
    _add_time_range(p)
    _add_subject(p)
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.set_defaults(func=_cmd_ik)

    p = sub.add_parser("id", help="inverse dynamics: joint angles + ground forces -> joint moments",
                       description="Inverse dynamics with OpenSim's InverseDynamicsTool.")
    p.add_argument("--model", required=True, help="OpenSim model (.osim), scaled")
    p.add_argument("--motion", required=True, help="coordinates over time (ik.mot)")
    p.add_argument("--grf", help="ground reaction forces (.mot)")
    p.add_argument("--loads", help="OpenSim ExternalLoads XML (which body each force acts on)")
    p.add_argument("--lowpass", type=float, default=6.0,
                   help="low-pass cut-off for the coordinates in Hz (default 6; 0 = none)")
    _add_time_range(p)
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.set_defaults(func=_cmd_id)

    p = sub.add_parser("scale", help="scale a model to a subject from a static trial",
                       description="Model scaling with OpenSim's ScaleTool.")
    p.add_argument("--setup", required=True,
                   help="OpenSim Scale setup XML (its relative paths are resolved from its folder)")
    p.add_argument("--model", help="generic model (.osim), replacing the setup's")
    p.add_argument("--static", help="static trial (.trc), replacing the setup's")
    p.add_argument("--mass", type=float, help="subject mass in kg, replacing the setup's")
    p.add_argument("--height", type=float, help="subject height in metres, replacing the setup's")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.set_defaults(func=_cmd_scale)

    p = sub.add_parser("model", help="write the built-in full-body model for a subject",
                       description="Generate kinevid's built-in full-body OpenSim model.")
    _add_subject(p)
    p.add_argument("-o", "--output", required=True, help="output .osim file")
    p.set_defaults(func=_cmd_model)

    _add_command_modules(sub)
    return parser


def _add_command_modules(sub) -> None:
    """Subcommands that live in their own modules under ``inference/commands``."""
    from .commands import c3d_export, c3d_import
    from .commands.addon import add_addon_parser
    from .commands.compare import add_compare_parser
    from .commands.export_blender import add_export_blender_parser
    from .commands.lift import add_lift_parser
    from .commands.pose2d import add_pose2d_parser
    from .commands.run import add_run_parser
    from .commands.weights import add_weights_parser

    add_run_parser(sub)
    add_pose2d_parser(sub)
    add_lift_parser(sub)
    p = sub.add_parser("c3d", help="C3D files: convert to and from OpenSim, summarise",
                       description="C3D input and output for labs' motion-capture data.")
    c3d_sub = p.add_subparsers(dest="c3d_command", required=True, metavar="C3D_COMMAND")
    c3d_import.add_info_parser(c3d_sub)
    c3d_import.add_to_opensim_parser(c3d_sub)
    c3d_export.add_parsers(c3d_sub)
    add_compare_parser(sub)
    add_addon_parser(sub)
    add_export_blender_parser(sub)
    add_weights_parser(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        code = args.func(args)
    except KinevidError as exc:
        print(f"kinevid {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kinevid {args.command}: interrupted", file=sys.stderr)
        return 130
    print(f"done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
