"""Runs the add-on's headless Blender tests (tests/blender/) in .venv-blender (bpy 5.0.1).

This side, in kinevid's environment, builds the add-on zip, exports a Gait2354 IK motion with
``kinevid export-blender`` (the real command, as a subprocess), and computes the reference the
Blender side checks against with OpenSim itself: every body's origin in ground at chosen frames
(``Body.getPositionInGround`` after setting the IK coordinates), plus a C3D marker read by ezc3d.
.venv-blender is made by scripts/setup_blender_venv.sh (called from scripts/setup.sh): when it is
missing this test fails, it does not skip.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, data_path

BLENDER_PY = REPO / ".venv-blender" / "bin" / "python"
ARTIFACTS = REPO / "test-artifacts" / "blender"
FK_FRAMES = (0, 36, 72)


# The export-blender command module on its own, for a tree whose CLI does not list it yet.
_EXPORT_DRIVER = """import argparse, sys
from inference.cli import main
from inference.commands.export_blender import add_export_blender_parser
p = argparse.ArgumentParser(prog="kinevid")
add_export_blender_parser(p.add_subparsers(dest="command", required=True))
args = p.parse_args(sys.argv[1:])
sys.exit(args.func(args))
"""


def _export_blender_cmd() -> list[str]:
    from inference.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    exe = Path(sys.executable).with_name("kinevid")
    if "export-blender" in sub.choices and exe.is_file():
        return [str(exe), "export-blender"]
    return [sys.executable, "-c", _EXPORT_DRIVER, "export-blender"]


def _opensim_reference(model_path: Path, ik_path: Path) -> dict:
    """Body origins in ground from OpenSim at FK_FRAMES, independently of the exporter."""
    import opensim as osim

    model = osim.Model(str(model_path))
    state = model.initSystem()
    table = osim.TimeSeriesTable(str(ik_path))
    labels = list(table.getColumnLabels())
    in_degrees = table.getTableMetaDataAsString("inDegrees").strip().lower() == "yes"
    coords = model.getCoordinateSet()
    out = []
    for f in FK_FRAMES:
        row = table.getRowAtIndex(f)
        for j, name in enumerate(labels):
            if not coords.contains(name):
                continue
            c = coords.get(name)
            v = row[j]
            if in_degrees and c.getMotionType() == 1:  # rotational
                v = math.radians(v)
            c.setValue(state, v, False)
        model.assemble(state)
        model.realizePosition(state)
        bodies = {}
        for b in model.getBodySet():
            p = b.getPositionInGround(state)
            bodies[b.getName()] = [p.get(0), p.get(1), p.get(2)]
        out.append({"frame": f, "bodies": bodies})
    parents = {}
    for j in model.getJointSet():
        child = j.getChildFrame().findBaseFrame().getName()
        parents[child] = j.getParentFrame().findBaseFrame().getName()
    geometry = 0
    for b in model.getBodySet():
        geometry += b.getPropertyByName("attached_geometry").size()
    return {"fk": out, "parents": parents, "body_count": model.getBodySet().getSize(),
            "marker_count": model.getMarkerSet().getSize(), "geometry_count": geometry,
            "frame_count": table.getNumRows(), "coordinate": labels[6],
            "coordinate_value": float(table.getRowAtIndex(36)[6]),
            "times": list(table.getIndependentColumn())}


def test_addon_in_blender(tmp_path):
    if not BLENDER_PY.is_file():
        pytest.fail(f"{BLENDER_PY} missing: run scripts/setup_blender_venv.sh (scripts/setup.sh "
                    "does) to create the bpy environment")
    sys.path.insert(0, str(REPO))
    from addon.build import build_zip

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    zip_path = build_zip(tmp_path / "kinevid_blender.zip")
    pipe = data_path("opensim-models", "Pipelines", "Gait2354_Simbody")
    model = pipe / "OutputReference" / "subject01_simbody.osim"
    ik = pipe / "OutputReference" / "subject01_walk1_ik.mot"
    kvb = tmp_path / "walk.kvb"
    cmd = _export_blender_cmd() + [str(model), str(ik), "-o", str(kvb),
                        "--markers", str(pipe / "subject01_walk1.trc"),
                        "--grf", str(pipe / "subject01_walk1_grf.mot"),
                        "--geometry-path", str(data_path("opensim-models", "Geometry"))]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    ref = _opensim_reference(model, ik)
    rate = (ref["frame_count"] - 1) / (ref["times"][-1] - ref["times"][0])

    # The .kvb's model marker at a frame (FK by kinevid): the Blender empties must be there.
    import io
    import zipfile
    with zipfile.ZipFile(kvb) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        mm = np.load(io.BytesIO(zf.read(manifest["arrays"]["model_markers"]["file"])))
    marker_name = manifest["model_markers"][5]["name"]

    import ezc3d
    c3d_path = data_path("nimblephysics", "data", "c3d", "cmu_02_05.c3d")
    c3d = ezc3d.c3d(str(c3d_path))
    pts = c3d["data"]["points"]
    c3d_rate = c3d["header"]["points"]["frame_rate"]
    first = c3d["header"]["points"]["first_frame"]  # ezc3d: 0-based
    k = 100
    label = c3d["parameters"]["POINT"]["LABELS"]["value"][3]
    up = c3d["parameters"]["POINT"]["Y_SCREEN"]["value"][0]  # the lab's vertical axis

    inputs = {
        "zip": str(zip_path), "kvb": str(kvb), "artifacts": str(ARTIFACTS),
        "body_count": ref["body_count"], "frame_count": ref["frame_count"], "rate": round(rate, 6),
        "parents": ref["parents"], "fk": ref["fk"], "geometry_count": ref["geometry_count"],
        "marker_count": ref["marker_count"], "grf_count": len(manifest["grf"]),
        "coordinate_check": [ref["coordinate"], 36, ref["coordinate_value"]],
        "marker_check": [marker_name, 36, mm[36, 5].tolist()],
        "c3d": {"path": str(c3d_path), "markers": int(pts.shape[1]),
                "times": ((np.arange(pts.shape[2]) + first) / c3d_rate).tolist(),
                "check": [label, k, pts[:3, 3, k].tolist()], "up": up},
    }
    assert all(len(v) > 0 for v in (inputs["parents"], inputs["fk"]))
    inp = tmp_path / "inputs.json"
    inp.write_text(json.dumps(inputs))
    env = dict(os.environ, KINEVID_BLENDER_INPUT=str(inp), PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    run = subprocess.run([str(BLENDER_PY), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(REPO / "tests" / "blender")],
                         capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    print(run.stdout[-4000:])
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert "passed" in run.stdout and "skipped" not in run.stdout
    timings = json.loads((ARTIFACTS / "timings.json").read_text())
    print("blender timings:", timings)
    assert (ARTIFACTS / "kinevid_blender_render.png").is_file()
