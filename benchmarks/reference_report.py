"""kinevid's accuracy against OpenSim's reference pipelines in ../shared/data, as printed tables.

The tests assert bounds; this prints the figures behind them so they can be read, compared
between versions and quoted. Sections: Gait2354 IK, ID and scaling; Gait10dof18musc IK and ID;
the JA1 sprint (Dorn 2012) IK and ID; IK recovery of a known motion on the built-in model.
Angles in degrees, IK translations in mm, generalized forces in N m (moments) or N (forces).

    .venv/bin/python benchmarks/reference_report.py [--quick] [--csv DIR]

--quick solves JA1's IK on its first 0.16 s instead of the whole trial (the slowest part).
--csv DIR also writes one CSV per section, numbers unrounded.
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import opensim as osim

from opensim_bridge import builtin_model as bm
from opensim_bridge import ik_pool
from opensim_bridge.ik import run_ik
from opensim_bridge.ik_settings import load_ik_settings
from opensim_bridge.inverse_dynamics import id_from_setup, run_id
from opensim_bridge.osim_model import quiet_stdout
from opensim_bridge.scaling import read_scale_factors, scale_from_setup
from opensim_bridge.storage import Table, read_table
from opensim_bridge.timeseries import KeypointSeries
from opensim_bridge.trc import read_trc

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
G2354 = DATA / "opensim-models" / "Pipelines" / "Gait2354_Simbody"
G10 = DATA / "opensim-models" / "Pipelines" / "Gait10dof18musc"
JA1 = DATA / "nimblephysics" / "data" / "osim" / "JA1GaitResults"
G2354_MODEL = G2354 / "OutputReference" / "subject01_simbody.osim"
G10_MODEL = G10 / "OutputReference" / "subject01.osim"
JA1_MODEL = JA1 / "rescaled.osim"


# ------------------------------------------------------------------------------- comparison
def unit_of(label: str) -> str:
    if label.endswith(("_tx", "_ty", "_tz")):
        return "mm"
    return "N" if label.endswith("_force") else "N m" if label.endswith("_moment") else "deg"


def _report_units(t: Table) -> Table:
    """Angles in degrees (some references hold radians), translations in mm."""
    data = t.data.copy()
    for j, lab in enumerate(t.labels):
        if unit_of(lab) == "mm":
            data[:, j] *= 1000.0
        elif unit_of(lab) == "deg" and t.in_degrees is False:
            data[:, j] = np.degrees(data[:, j])
    return t.copy(data=data)


def compare(ours: Table, ref: Table) -> dict[str, tuple[float, float]]:
    """Per shared column: (RMS, max |difference|) in report units. Rows are paired by nearest
    time, never more than half a frame apart: TRC times are rounded to the millisecond while
    the references hold exact 1/60 s times."""
    a, b = _report_units(ours), _report_units(ref)
    idx = np.abs(b.time[None, :] - a.time[:, None]).argmin(axis=1)
    if np.any(np.abs(b.time[idx] - a.time) > 0.5 * float(np.median(np.diff(b.time)))):
        raise SystemExit(f"times of {ref.source} do not cover those compared with it")
    diffs = {lab: a[lab] - b[lab][idx] for lab in a.labels if lab in b.labels}
    return {k: (float(np.sqrt(np.mean(d ** 2))), float(np.abs(d).max())) for k, d in diffs.items()}


def worst(diffs: dict[str, tuple[float, float]], unit: str) -> str:
    """'max unit (label)' of the column in ``unit`` with the largest max |difference|."""
    cols = {k: v[1] for k, v in diffs.items() if unit_of(k) == unit}
    k = max(cols, key=cols.get)
    return f"{fmt(cols[k])} {unit} ({k})"


# ------------------------------------------------------------------------------- output
def fmt(x) -> str:
    if not isinstance(x, float):
        return str(x)
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    return f"{x:.1f}" if abs(x) >= 100 else f"{x:.4f}" if abs(x) >= 0.01 else f"{x:.2e}"


@dataclass
class Section:
    key: str                      # CSV file name
    title: str
    header: list[str]
    rows: list[list] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    text_cols: int = 2            # leading name/unit columns, left-aligned; numbers go right

    def print(self) -> None:
        cells = [self.header] + [[fmt(c) for c in r] for r in self.rows]
        widths = [max(len(r[j]) for r in cells) for j in range(len(self.header))]
        print(f"\n{self.title}\n{'=' * len(self.title)}")
        for i, r in enumerate(cells):
            print("  ".join(c.ljust(w) if j < self.text_cols else c.rjust(w)
                            for j, (c, w) in enumerate(zip(r, widths))).rstrip())
            if i == 0:
                print("  ".join("-" * w for w in widths))
        for note in self.notes:
            print(f"  * {note}")

    def write_csv(self, folder: Path) -> None:
        with open(folder / f"{self.key}.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([self.header] + self.rows)


def comparison(key, title, sources: dict[str, dict[str, tuple[float, float]]]) -> Section:
    """One row per column of the first comparison; RMS and max for each named comparison."""
    header = ["coordinate", "unit"] + [f"{n} {s}" for n in sources for s in ("RMS", "max")]
    rows = [[lab, unit_of(lab)] + [v for d in sources.values() for v in d.get(lab, (math.nan,) * 2)]
            for lab in next(iter(sources.values()))]
    return Section(key, title, header, rows)


# ------------------------------------------------------------------------------- OpenSim tools


def opensim_ik(setup: Path, model: Path, trc: Path, span, out: Path) -> Table:
    """OpenSim's InverseKinematicsTool from a shipped setup (its accuracy and weights), only the
    paths and time range set; it skips task markers absent from the TRC by itself."""
    tool = osim.InverseKinematicsTool(str(setup))
    m = osim.Model(str(model))  # kept alive while the tool runs
    tool.setModel(m)
    tool.set_marker_file(str(trc))
    tool.setStartTime(span[0])
    tool.setEndTime(span[1])
    tool.setResultsDir(str(out))
    tool.setOutputMotionFileName(str(out / "tool_ik.mot"))
    if not tool.run():
        raise SystemExit(f"OpenSim's IK tool failed on {setup}")
    return read_table(out / "tool_ik.mot")


def opensim_id(setup: Path, out: Path, model: Path, motion: Path, loads: Path) -> Table:
    """OpenSim's InverseDynamicsTool from a shipped setup, only its paths fixed."""
    tool = osim.InverseDynamicsTool(str(setup))
    tool.setModelFileName(str(model))
    tool.setCoordinatesFileName(str(motion))
    tool.setExternalLoadsFileName(str(loads))
    tool.setResultsDir(str(out))
    tool.setOutputGenForceFileName("tool_id.sto")
    tool.run()
    return read_table(out / "tool_id.sto")


def ik_with_tool(key, title, setup, model, trc, ref, span, out: Path):
    """kinevid (jobs=2) and OpenSim's tool vs a reference motion: (section, kinevid result)."""
    settings, markers = load_ik_settings(setup), read_trc(trc)
    # Setups name virtual markers the TRC lacks: OpenSim skips them silently, kinevid refuses
    # until they are dropped explicitly.
    absent = [n for n in settings.marker_weights if n not in markers.names]
    res = run_ik(model, markers, settings.without_markers(absent), out / "kinevid", jobs=2,
                 start=span[0], end=span[1])
    ref_t = read_table(ref)
    sec = comparison(key, title, {"kinevid": compare(res.coordinates, ref_t),
                                  "OpenSim 4.6": compare(opensim_ik(setup, model, trc, span, out),
                                                         ref_t)})
    t = res.coordinates.time
    sec.notes.append(f"{len(t)} frames {t[0]:g}-{t[-1]:g} s; kinevid accuracy {res.accuracy:g}, "
                     f"jobs {res.jobs}, {res.wall_time:.1f} s; OpenSim at the setup's accuracy "
                     f"{settings.accuracy:g} (there the answer depends on the starting frame by "
                     f"up to ~0.1 deg; at 1e-7 it is the optimum, see opensim_bridge.ik)")
    if absent:
        sec.notes.append(f"{len(absent)} task markers absent from the TRC (virtual joint "
                         f"centres etc.) dropped, e.g. {', '.join(absent[:4])}")
    return sec, res


# ------------------------------------------------------------------------------- sections
def gait2354_ik(out: Path, quick: bool) -> list[Section]:
    setup, trc = G2354 / "subject01_Setup_IK.xml", G2354 / "subject01_walk1.trc"
    sec, par = ik_with_tool("gait2354_ik", "1. Gait2354_Simbody IK vs OutputReference/"
                            "subject01_walk1_ik.mot", setup, G2354_MODEL, trc,
                            G2354 / "OutputReference" / "subject01_walk1_ik.mot",
                            load_ik_settings(setup).time_range, out)
    serial = run_ik(G2354_MODEL, read_trc(trc), load_ik_settings(setup), out / "serial", jobs=1)
    d = compare(serial.coordinates, par.coordinates)
    sec.notes.append(f"serial vs parallel max |diff|: {worst(d, 'deg')}, {worst(d, 'mm')}; "
                     f"hand-off check {par.handoff_max_deg:.2e} deg; serial "
                     f"{serial.wall_time:.1f} s")
    return [sec]


def gait2354_id(out: Path, quick: bool) -> list[Section]:
    ik = G2354 / "OutputReference" / "subject01_walk1_ik.mot"
    loads = G2354 / "subject01_walk1_grf.xml"
    res = run_id(G2354_MODEL, ik, out / "kinevid", loads=loads, lowpass_hz=6.0, start=0.4, end=1.6)
    tool = opensim_id(G2354 / "subject01_Setup_InverseDynamics.xml", out, G2354_MODEL, ik, loads)
    shipped = read_table(G2354 / "OutputReference" / "ResultsInverseDynamics"
                         / "inverse_dynamics.sto")
    sec = comparison("gait2354_id", "2. Gait2354_Simbody ID (6 Hz) vs OpenSim 4.6 and the shipped "
                     "reference", {"vs OpenSim 4.6": compare(res.table, tool),
                                   "vs shipped": compare(res.table, shipped),
                                   "4.6 vs shipped": compare(tool, shipped)})
    sec.notes += [f"{len(res.table)} frames {res.time_range[0]:g}-{res.time_range[1]:g} s, "
                  f"{res.wall_s:.1f} s; inputs: OutputReference IK, subject01_walk1_grf.mot/.xml",
                  "'shipped' = OutputReference/ResultsInverseDynamics, written by an older "
                  "OpenSim: '4.6 vs shipped' shows how much of the gap is OpenSim's own"]
    return [sec]


def gait2354_scaling(out: Path, quick: bool) -> list[Section]:
    generic = DATA / "opensim-models" / "Models" / "Gait2354_Simbody" / "gait2354_simbody.osim"
    res = scale_from_setup(G2354 / "subject01_Setup_Scale.xml", out, model=generic)
    ref = read_scale_factors(G2354 / "OutputReference" / "subject01_scaleSet_applied.xml")
    sec = Section("gait2354_scaling", "3. Gait2354 scaling vs OutputReference/subject01_scaleSet_"
                  "applied.xml", ["body", "kinevid sx", "sy", "sz", "reference sx", "sy", "sz",
                                  "max rel diff"], text_cols=1)
    for body, k in res.factors.items():
        r = ref.get(body, (math.nan,) * 3)
        sec.rows.append([body, *k, *r, max(abs(a / b - 1) for a, b in zip(k, r))])
    rels = [r[-1] for r in sec.rows if not math.isnan(r[-1])]
    sec.notes.append(f"worst relative difference {max(rels):.2e} over {len(rels)} bodies (0: equal "
                     f"to the reference's printed digits); scaled mass {res.mass:g} kg; "
                     f"{res.wall_s:.1f} s")
    return [sec]


def gait10dof(out: Path, quick: bool) -> list[Section]:
    motion = G10 / "OutputReference" / "IK" / "subject01_walk_IK.mot"
    ik, _ = ik_with_tool("gait10dof_ik", "4a. Gait10dof18musc IK vs OutputReference/IK",
                         G10 / "IK" / "walk_Setup_IK.xml", G10_MODEL,
                         G10 / "ExperimentalData" / "subject01_walk.trc", motion, (0.0, 2.5), out)
    setup = G10 / "ID" / "walk_Setup_ID.xml"
    # The setup's model path (../subject01.osim) does not exist: the model is passed, as a user
    # would; the loads resolve from the setup's folder.
    res = id_from_setup(setup, out / "id", model=G10_MODEL, motion=motion)
    tool = opensim_id(setup, out, G10_MODEL, motion,
                      G10 / "ExperimentalData" / "subject01_walk_grf.xml")
    ref = read_table(G10 / "OutputReference" / "ID" / "Results" / "subject01_walk_ID.sto")
    idsec = comparison("gait10dof_id", "4b. Gait10dof18musc ID vs OpenSim 4.6 and OutputReference/"
                       "ID", {"vs OpenSim 4.6": compare(res.table, tool),
                              "vs reference": compare(res.table, ref)})
    idsec.notes.append(f"{len(res.table)} frames, low-pass {res.lowpass_hz:g} Hz (the setup's), "
                       f"{res.wall_s:.1f} s")
    return [ik, idsec]


def ja1(out: Path, quick: bool) -> list[Section]:
    trc, setup = JA1 / "JA1Gait35.trc", JA1 / "JA1Gait35_id_setup.xml"
    times = read_trc(trc).time
    span = (0.0, 0.16) if quick else (float(times[0]), float(times[-1]))
    ik, _ = ik_with_tool("ja1_ik", "5a. JA1 sprint IK vs JA1Gait35_ik_by_opensim.mot"
                         + (" (--quick: first 0.16 s)" if quick else ""),
                         JA1 / "JA1Gait35_ik_setup.xml", JA1_MODEL, trc,
                         JA1 / "JA1Gait35_ik_by_opensim.mot", span, out)
    ik.notes.append("mtp angles: no marker on the toes pins them down, so neither kinevid nor "
                    "OpenSim reproduces them (the solution wanders with the starting point)")
    res = id_from_setup(setup, out / "id")
    tool = opensim_id(setup, out, JA1_MODEL, JA1 / "JA1Gait35_ik.mot",
                      JA1 / "JA1Gait35_external_forces.xml")
    ref = read_table(JA1 / "JA1Gait35_id_output.sto")
    idsec = comparison("ja1_id", "5b. JA1 sprint ID vs JA1Gait35_id_output.sto",
                       {"kinevid": compare(res.table, ref), "OpenSim 4.6": compare(tool, ref)})
    idsec.notes += ["the reference was produced from JA1Gait35_ik.mot (not _ik_by_opensim.mot) "
                    "with no low-pass filter (its setup sets none), run the same way here; its "
                    "huge values (kN at frame 0) are spline-differentiated raw IK noise",
                    f"{len(res.table)} frames, low-pass {res.lowpass_hz}, {res.wall_s:.1f} s; "
                    "0 = equal to the file's 8 printed decimals"]
    return [ik, idsec]


def builtin(out: Path, quick: bool, n_frames: int = 20, rate: float = 50.0) -> list[Section]:
    """Markers of a known smooth motion, made by forward kinematics, solved back by run_ik."""
    path = bm.write_builtin_model(out / "kinevid_fullbody.osim", 1.75, 70.0, "m")
    model = osim.Model(str(path))
    rng, t, truth = np.random.default_rng(2024), np.arange(n_frames) / rate, {}
    for name in bm.COORDINATES:
        lo, hi = bm.coordinate_range(name)
        centre, half = (lo + hi) / 2, 0.3 * (hi - lo)  # the central 60 % of the range
        if name in bm.TRANSLATIONAL_COORDINATES:
            centre, half = {"pelvis_tx": 0.0, "pelvis_ty": 0.95, "pelvis_tz": 0.0}[name], 0.3
        # one slow sinusoid per coordinate, random frequency and phase: smooth, within range
        f, phase = rng.uniform(0.5, 2.0), rng.uniform(0, 2 * np.pi)
        truth[name] = centre + half * np.sin(2 * np.pi * f * t + phase)
    frames = [bm.marker_positions(model, {n: q[k] for n, q in truth.items()})
              for k in range(n_frames)]
    names = list(frames[0])
    series = KeypointSeries(t, names, np.array([[fr[m] for m in names] for fr in frames]))
    res = run_ik(path, series, None, out / "ik", jobs=2)
    labels = res.coordinates.labels
    exact = Table(t, labels, np.column_stack([truth[c] if c in bm.TRANSLATIONAL_COORDINATES
                                              else np.degrees(truth[c]) for c in labels]),
                  in_degrees=True)
    d = compare(res.coordinates, exact)
    sec = comparison("builtin_ik", "6. Built-in model: IK recovery of a known random motion",
                     {"error": d})
    sec.notes.append(f"{n_frames} frames at {rate:g} Hz, {len(names)} markers weight 1, jobs "
                     f"{res.jobs}, {res.wall_time:.1f} s; worst {worst(d, 'deg')}, "
                     f"{worst(d, 'mm')}; worst marker residual "
                     f"{np.nanmax(res.per_marker_errors) * 1000:.2e} mm")
    return [sec]


SECTIONS = [gait2354_ik, gait2354_id, gait2354_scaling, gait10dof, ja1, builtin]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="JA1 IK on its first 0.16 s only")
    ap.add_argument("--csv", type=Path, metavar="DIR", help="also write one CSV per section")
    args = ap.parse_args(argv)
    if not DATA.is_dir():
        raise SystemExit(f"reference data not found: {DATA}")
    osim.Logger.setLevelString("error")
    if args.csv:
        args.csv.mkdir(parents=True, exist_ok=True)
    timings = Section("timings", "Wall time per section", ["section", "seconds"], text_cols=1)
    t_all, failed = time.perf_counter(), False
    try:
        with tempfile.TemporaryDirectory(prefix="kinevid_report_") as tmp:
            for make in SECTIONS:
                t0 = time.perf_counter()
                (Path(tmp) / make.__name__).mkdir()
                try:
                    with quiet_stdout():
                        sections = make(Path(tmp) / make.__name__, args.quick)
                except Exception:  # report it and go on: one broken pipeline hides no other
                    print(f"\n{make.__name__} FAILED\n{traceback.format_exc()}", file=sys.stderr)
                    failed, sections = True, []
                for sec in sections:
                    sec.print()
                    if args.csv:
                        sec.write_csv(args.csv)
                sys.stdout.flush()
                timings.rows.append([make.__name__, time.perf_counter() - t0])
    finally:
        ik_pool.shutdown()
    timings.rows.append(["total", time.perf_counter() - t_all])
    timings.print()
    if args.csv:
        timings.write_csv(args.csv)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
