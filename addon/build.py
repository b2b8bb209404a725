"""Build the zip that Blender's "Install from Disk" takes: ``python addon/build.py -o ZIP`` or
``kinevid addon build -o ZIP``.

The zip holds one folder, ``kinevid_blender/``, with the add-on's Python files and
``blender_manifest.toml``: Blender 4.2+ installs it as an extension (its installer finds the
manifest in a single top-level folder), older Blender and ``Install legacy add-on`` take the
folder as an add-on package with ``bl_info``. Only pure-Python files go in (no compiled
dependencies); entries have a fixed timestamp so the same source gives the same zip.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "kinevid_blender"
PACKAGE = "kinevid_blender"
_FIXED_TIME = (2024, 1, 1, 0, 0, 0)


def addon_files(source: Path = SOURCE) -> list[Path]:
    files = sorted(p for p in source.rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts
                   and (p.suffix == ".py" or p.name == "blender_manifest.toml"))
    names = {p.name for p in files}
    for needed in ("__init__.py", "blender_manifest.toml"):
        if needed not in names:
            raise FileNotFoundError(f"{source / needed}: missing from the add-on source")
    return files


def manifest(source: Path = SOURCE) -> dict:
    with open(source / "blender_manifest.toml", "rb") as fh:
        return tomllib.load(fh)


def build_zip(output, source: Path = SOURCE) -> Path:
    """Write the add-on zip atomically; returns its path."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    m = manifest(source)
    if m.get("id") != PACKAGE:
        raise ValueError(f"blender_manifest.toml id is {m.get('id')!r}, expected {PACKAGE!r}")
    fd, tmp = tempfile.mkstemp(suffix=".zip", dir=output.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for p in addon_files(source):
                info = zipfile.ZipInfo(f"{PACKAGE}/{p.relative_to(source).as_posix()}", _FIXED_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, p.read_bytes())
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return output


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default="kinevid_blender.zip", help="zip to write")
    args = ap.parse_args(argv)
    path = build_zip(args.output)
    print(f"wrote {path} (kinevid add-on {manifest()['version']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
