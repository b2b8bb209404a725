"""Ground reaction forces estimated from kinematics vs force plates, and the joint moments
inverse dynamics gets from each.

Two public trials with force plates, each from its reference IK alone:

* Gait2354 subject01 walk1 (opensim-models, treadmill walking at about 1.1 m/s, 60 Hz,
  0.4-1.6 s): measured GRF ``subject01_walk1_grf.mot``, plates assigned by
  ``subject01_walk1_grf.xml``; height 1.8034 m from ``subject01_Setup_Scale.xml``.
* JA1 sprint (nimblephysics, Dorn 2012 data, about 9.7 m/s, 250 Hz): measured GRF
  ``JA1Gait35_grf.mot`` with 8 plates assigned by ``JA1Gait35_external_forces.xml``. The
  plates catch four contacts (0.35-1.15 s); the contacts before and after land off the plates,
  so forces and moments are compared within the plates' window (first plate strike - 0.05 s to
  last plate foot off + 0.05 s, i.e. mid-flight). Height: estimated from the model.

Figures: GRF RMSE per foot and for the sum of both feet (% body weight; X anterior-posterior,
Y vertical, Z medio-lateral), gait event differences in frames against the force-plate events
(20 N), m (a_com - g) during flight (should be about 0), flexion moment RMSE between ID with the
estimated and with the measured GRF (% body weight x height), pelvis residuals with each.

    python benchmarks/grf_estimate_report.py
"""
from __future__ import annotations

import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
GAIT = DATA / "opensim-models" / "Pipelines" / "Gait2354_Simbody"
JA1 = DATA / "nimblephysics" / "data" / "osim" / "JA1GaitResults"
MOMENTS = ("hip_flexion", "knee_angle", "ankle_angle")


def scale_setup_height(path: Path) -> float:
    from defusedxml import ElementTree

    node = ElementTree.parse(path).getroot().find(".//height")
    return float(node.text) / 1000.0  # the setup gives millimetres


TRIALS = [
    {"name": "Gait2354 subject01 walk1 (treadmill walk)",
     "model": GAIT / "OutputReference" / "subject01_simbody.osim",
     "motion": GAIT / "OutputReference" / "subject01_walk1_ik.mot",
     "loads": GAIT / "subject01_walk1_grf.xml",
     "height": lambda: scale_setup_height(GAIT / "subject01_Setup_Scale.xml"),
     "lowpass": (6.0,), "plate_window": False},
    {"name": "JA1 sprint (Dorn 2012)",
     "model": JA1 / "rescaled.osim", "motion": JA1 / "JA1Gait35_ik_by_opensim.mot",
     "loads": JA1 / "JA1Gait35_external_forces.xml", "height": lambda: None,
     "lowpass": (6.0, 15.0), "plate_window": True},
]


def rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def report(trial: dict, work: Path) -> None:
    from opensim_bridge.contact import events_from_grf, match_events
    from opensim_bridge.external_loads import load_external_loads, read_grf
    from opensim_bridge.grf_estimate import (
        estimate_and_run_id,
        grf_rmse,
        measured_foot_forces,
        model_height,
        plate_sides,
        root_residuals,
    )
    from opensim_bridge.inverse_dynamics import run_id
    from opensim_bridge.osim_model import load_model

    print(f"\n=== {trial['name']}")
    model = load_model(trial["model"])
    height = trial["height"]()
    est_height = model_height(model)
    print(f"height: {f'{height:.4f} m (scale setup)' if height else 'not given'}; "
          f"estimated from the model {est_height:.3f} m")
    height = height or est_height

    t0 = time.perf_counter()
    measured_id = run_id(trial["model"], trial["motion"], work / "measured", loads=trial["loads"])
    t_meas = time.perf_counter() - t0
    _, grf_path = load_external_loads(trial["loads"])
    grf = read_grf(grf_path)

    for lp in trial["lowpass"]:
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = estimate_and_run_id(trial["model"], trial["motion"], work / f"est_{lp:g}",
                                      lowpass_hz=lp, height_m=height)
        wall = time.perf_counter() - t0
        est = res.estimate
        t = est.time
        bw = est.body_weight
        dt = float(np.median(np.diff(t)))
        ref_events = events_from_grf(grf, plate_sides(trial["loads"]), start=t[0], end=t[-1])
        if trial["plate_window"]:
            w0, w1 = ref_events[0].time - 0.05, ref_events[-1].time + 0.05
        else:
            w0, w1 = t[0], t[-1]
        window = (t >= w0) & (t <= w1)
        print(f"\n-- centre-of-mass low-pass {lp:g} Hz; {len(t)} frames at {1 / dt:.0f} Hz; "
              f"mass {est.mass:.1f} kg (BW {bw:.0f} N); estimate + ID {wall:.2f} s "
              f"(ID with measured GRF {t_meas:.2f} s)")
        print(f"   progression speed {est.contact.progression_speed:.2f} m/s relative to a ground "
              f"moving at {np.round(est.contact.ground_velocity, 2)} m/s (X, Z)")
        for w in caught:
            print(f"   warning: {w.message}")
        measured = measured_foot_forces(trial["loads"], t)
        scope = f"{w0:.3f}-{w1:.3f} s" + (" (plates' window)" if trial["plate_window"] else "")
        print(f"   GRF RMSE, % body weight, over {scope}:      AP (X)  vertical (Y)  ML (Z)")
        errs = grf_rmse(est, measured, window)
        for key, label in (("r", "right foot"), ("l", "left foot"), ("total", "both (sum)")):
            e = errs[key]
            print(f"     {label:<12} {e[0]:8.1f} {e[1]:12.1f} {e[2]:8.1f}")

        print(f"   gait events vs force plates (20 N), frames of {1000 * dt:.1f} ms "
              f"(estimated - measured):")
        worst = 0.0
        for ref, got in match_events(est.events, ref_events):
            if got is None:
                print(f"     {ref.context:<5} {ref.name:<11} {ref.time:.3f} s: not detected")
                worst = np.inf
                continue
            d = (got.time - ref.time) / dt
            worst = max(worst, abs(d))
            print(f"     {ref.context:<5} {ref.name:<11} plate {ref.time:.3f} s, estimated "
                  f"{got.time:.3f} s: {d:+.1f} frames")
        print(f"     largest difference: {worst:.1f} frames; estimated events in all: "
              f"{len(est.events)}")

        total_meas = measured["r"] + measured["l"]
        flight = est.flight & (np.linalg.norm(total_meas, axis=1) < 20.0) & window
        if flight.any():
            mag = np.linalg.norm(est.total_force[flight], axis=1)
            print(f"   flight ({int(flight.sum())} frames, no contact detected and plates "
                  f"< 20 N): m(a_com - g) median |F| {100 * np.median(mag) / bw:.0f}% BW, "
                  f"mean vertical {100 * est.total_force[flight, 1].mean() / bw:+.0f}% BW "
                  f"(0 expected)")
        else:
            print("   no flight phase")

        e_tab, m_tab = res.id.table, measured_id.table
        tm = (e_tab.time >= w0) & (e_tab.time <= w1)
        scale = 100.0 / (bw * height)
        print("   flexion moment RMSE, ID with estimated vs measured GRF, % BW x height "
              "(N m):")
        for name in MOMENTS:
            cells = []
            for s in ("r", "l"):
                col = f"{name}_{s}_moment"
                m_interp = np.interp(e_tab.time, m_tab.time, m_tab[col])
                err = rmse(e_tab[col][tm], m_interp[tm])
                cells.append(f"{s}: {scale * err:5.2f}% ({err:5.1f} N m)")
            print(f"     {name:<12} " + "   ".join(cells))
        meas_res = root_residuals(m_tab.between(w0, w1), model, est.mass, height)
        est_res = root_residuals(e_tab.between(w0, w1), model, est.mass, height)
        print("   pelvis residuals over the window, RMS / peak:   estimated GRF      "
              "measured GRF")
        for r_e, r_m in zip(est_res, meas_res):
            unit = "%BW" if r_e.unit == "N" else "%BW*h"
            print(f"     {r_e.column:<24} {r_e.rms:7.1f} / {r_e.peak:7.1f} {r_e.unit:<3} "
                  f"({r_e.rms_pct:5.1f} / {r_e.peak_pct:5.1f} {unit})   "
                  f"{r_m.rms:7.1f} / {r_m.peak:7.1f} ({r_m.rms_pct:5.1f} / {r_m.peak_pct:5.1f})")


def main() -> None:
    import opensim as osim

    osim.Logger.setLevelString("error")
    with tempfile.TemporaryDirectory(prefix="kinevid_grf_") as tmp:
        for k, trial in enumerate(TRIALS):
            report(trial, Path(tmp) / str(k))


if __name__ == "__main__":
    main()
