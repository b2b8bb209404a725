"""IK speed: kinevid serial and parallel (jobs=2) vs OpenSim's InverseKinematicsTool.

Gait2354 walking trial, whole trial, task weights of subject01_Setup_IK.xml. Every timing is end
to end from files (reading the TRC included). OpenSim's tool is timed at the setup's accuracy
(1e-5) and at kinevid's accuracy (1e-7, see opensim_bridge.ik): only the latter solves the same
problem, so only it can give identical results. "cold" parallel includes starting the worker
processes; "warm" reuses them, as a batch of trials does.

    python benchmarks/ik_speed.py
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "opensim-models" / "Pipelines" / "Gait2354_Simbody"
MODEL = DATA / "OutputReference" / "subject01_simbody.osim"
TRC = DATA / "subject01_walk1.trc"
SETUP = DATA / "subject01_Setup_IK.xml"


def opensim_tool(out: Path, accuracy: float):
    import opensim as osim

    from opensim_bridge.storage import read_table
    osim.Logger.setLevelString("error")
    t0 = time.perf_counter()
    tool = osim.InverseKinematicsTool(str(SETUP))
    model = osim.Model(str(MODEL))
    tool.setModel(model)
    tool.set_marker_file(str(TRC))
    tool.set_accuracy(accuracy)
    tool.setStartTime(0.0)
    tool.setEndTime(1e9)
    tool.setResultsDir(str(out))
    tool.setOutputMotionFileName(str(out / "tool.mot"))
    tool.run()
    wall = time.perf_counter() - t0
    return wall, read_table(out / "tool.mot")


def kinevid(out: Path, jobs: int):
    from opensim_bridge.ik import run_ik
    from opensim_bridge.ik_settings import load_ik_settings
    from opensim_bridge.trc import read_trc
    t0 = time.perf_counter()
    res = run_ik(MODEL, read_trc(TRC), load_ik_settings(SETUP), out, jobs=jobs, start=0.0,
                 end=1e9)
    return time.perf_counter() - t0, res.coordinates


def main():
    from opensim_bridge import ik_pool
    import opensim  # noqa: F401  (import cost is not part of any timing)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = {}
        runs["opensim tool, accuracy 1e-5"] = opensim_tool(tmp, 1e-5)
        runs["opensim tool, accuracy 1e-7"] = opensim_tool(tmp, 1e-7)
        runs["kinevid serial"] = kinevid(tmp / "s", 1)
        ik_pool.shutdown()
        runs["kinevid jobs=2 cold"] = kinevid(tmp / "c", 2)
        runs["kinevid jobs=2 warm"] = kinevid(tmp / "w", 2)
        n = len(runs["kinevid serial"][1])
        print(f"Gait2354 walk, {n} frames, {len(runs['kinevid serial'][1].labels)} coordinates")
        for name, (wall, _) in runs.items():
            print(f"  {name:30s} {wall:7.3f} s  {n / wall:7.1f} frames/s")
        ref = runs["opensim tool, accuracy 1e-7"]
        for name in ("kinevid jobs=2 cold", "kinevid jobs=2 warm"):
            print(f"  ratio {name} / opensim tool 1e-7: {ref[0] / runs[name][0]:.2f}x;"
                  f" / opensim tool 1e-5: {runs['opensim tool, accuracy 1e-5'][0] / runs[name][0]:.2f}x")
        names = list(runs)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                d = np.abs(runs[a][1].data - runs[b][1].data).max()
                print(f"  max |diff| {a} vs {b}: {d:.5f}")


if __name__ == "__main__":
    main()
