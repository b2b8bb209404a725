"""``kinevid addon build -o ZIP``: the Blender add-on's installable zip."""
from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_addon_parser", "run_addon_build"]


def run_addon_build(args: argparse.Namespace) -> int:
    from addon.build import build_zip, manifest

    path = build_zip(Path(args.output))
    print(f"wrote {path} (kinevid Blender add-on {manifest()['version']}; in Blender: "
          "Edit > Preferences > Get Extensions > Install from Disk)")
    return 0


def add_addon_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``addon build`` on an ``add_subparsers()`` object; returns the ``addon`` parser."""
    p = subparsers.add_parser("addon", help="the Blender add-on: build its installable zip",
                              description="kinevid's Blender add-on.")
    sub = p.add_subparsers(dest="addon_command", required=True, metavar="ADDON_COMMAND")
    b = sub.add_parser("build", help="write the zip Blender's 'Install from Disk' takes",
                       description="Build the add-on zip (a Blender 4.2+ extension, also a "
                                   "legacy add-on).")
    b.add_argument("-o", "--output", default="kinevid_blender.zip", help="zip to write")
    b.set_defaults(func=run_addon_build)
    return p
