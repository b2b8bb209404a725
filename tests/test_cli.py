"""The ``kinevid`` command line, end to end on real and generated data.

Most tests call ``inference.cli.main`` in this process (fast); one runs the installed console
script as a user would, to prove the entry point and exit codes.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, REPO
from inference.cli import main
from opensim_bridge.storage import read_table
from opensim_bridge.timeseries import KeypointSeries
from opensim_bridge.trc import write_trc

G10 = DATA / "opensim-models" / "Pipelines" / "Gait10dof18musc"
G10_MODEL = G10 / "OutputReference" / "subject01.osim"
G10_TRC = G10 / "ExperimentalData" / "subject01_walk.trc"
G10_SETUP = G10 / "IK" / "walk_Setup_IK.xml"
G2354 = DATA / "opensim-models" / "Pipelines" / "Gait2354_Simbody"


def run(*args: str) -> int:
    return main([str(a) for a in args])


def test_console_script_runs_ik_and_reports_errors(tmp_path):
    exe = Path(sys.executable).with_name("kinevid")
    assert exe.exists(), "the setup script installs the kinevid console script into the venv"
    ok = subprocess.run([exe, "ik", "--model", G10_MODEL, "--markers", G10_TRC, "--setup", G10_SETUP,
                         "--start", "0.5", "--end", "0.7", "-o", tmp_path / "ik"],
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    motion = read_table(tmp_path / "ik" / "ik.mot")
    assert motion.time[0] == pytest.approx(0.5, abs=0.01) and motion.time[-1] == pytest.approx(0.7, abs=0.01)
    assert "marker RMS error" in ok.stdout

    bad = subprocess.run([exe, "ik", "--model", G10_MODEL, "--markers", tmp_path / "nope.trc",
                          "-o", tmp_path / "bad"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert "nope.trc" in bad.stderr and "Traceback" not in bad.stderr


def test_ik_with_toml_weights_matches_setup_xml(tmp_path):
    """The same task weights given as TOML or as OpenSim setup XML give the same angles."""
    from opensim_bridge.ik_settings import load_ik_settings

    settings = load_ik_settings(G10_SETUP)
    lines = [f"accuracy = {settings.accuracy!r}", "[markers]"]
    lines += [f'"{name}" = {w!r}' for name, w in settings.marker_weights.items()]
    if settings.applied_coordinate_tasks:
        lines.append("[coordinates]")
        for task in settings.applied_coordinate_tasks:
            lines.append(f'"{task.name}" = {{ weight = {task.weight!r}, value = {task.value!r} }}')
    toml = tmp_path / "weights.toml"
    toml.write_text("\n".join(lines) + "\n")
    common = ["ik", "--model", G10_MODEL, "--markers", G10_TRC, "--start", "1.0", "--end", "1.1", "--jobs", "1"]
    assert run(*common, "--setup", G10_SETUP, "-o", tmp_path / "xml") == 0
    assert run(*common, "--weights", toml, "-o", tmp_path / "toml") == 0
    a, b = read_table(tmp_path / "xml" / "ik.mot"), read_table(tmp_path / "toml" / "ik.mot")
    assert a.labels == b.labels
    np.testing.assert_allclose(a.data, b.data, atol=1e-6)


def test_builtin_model_ik_recovers_its_own_motion(tmp_path):
    """No --model: the built-in model is written for the subject and used; markers made by its
    own forward kinematics along a smooth random motion are fitted back within 0.1 deg."""
    from opensim_bridge.builtin_model import (COORDINATES, TRANSLATIONAL_COORDINATES, build_model,
                                              coordinate_range, marker_positions)

    model = build_model(height=1.68, mass=61.0, sex="f")
    rng = np.random.default_rng(7)
    n = 12
    t = np.arange(n) / 50.0
    phase = rng.uniform(0, 2 * np.pi, len(COORDINATES))
    truth = {}
    for i, name in enumerate(COORDINATES):
        lo, hi = coordinate_range(name)
        mid, half = 0.5 * (lo + hi), 0.3 * (hi - lo)  # central 60 % of the range
        if name in TRANSLATIONAL_COORDINATES:
            mid, half = (0.0, 0.05) if name != "pelvis_ty" else (model.getCoordinateSet().get(name).getDefaultValue(), 0.02)
        truth[name] = mid + half * np.sin(phase[i] + 2 * np.pi * 1.5 * t)
    frames = [marker_positions(model, {c: truth[c][k] for c in COORDINATES}) for k in range(n)]
    names = sorted(frames[0])
    data = np.array([[f[m] for m in names] for f in frames])
    trc = tmp_path / "synthetic.trc"
    write_trc(KeypointSeries(t, names, data, units="m"), trc)

    assert run("ik", "--markers", trc, "--height", "1.68", "--mass", "61", "--sex", "f",
               "-o", tmp_path / "out") == 0
    assert (tmp_path / "out" / "model_builtin.osim").is_file()
    result = read_table(tmp_path / "out" / "ik.mot")
    assert result.in_degrees
    for name in COORDINATES:
        got = result.column(name)
        if name in TRANSLATIONAL_COORDINATES:
            assert np.abs(got - truth[name]).max() < 1e-4, name
        else:
            assert np.abs(got - np.degrees(truth[name])).max() < 0.1, name


def test_id_from_grf_alone_and_scale_from_setup(tmp_path, capsys):
    ref = G2354 / "OutputReference"
    assert run("id", "--model", ref / "subject01_simbody.osim", "--motion", ref / "subject01_walk1_ik.mot",
               "--grf", G2354 / "subject01_walk1_grf.mot", "-o", tmp_path / "id") == 0
    out = capsys.readouterr().out
    assert "calcn_r" in out and "calcn_l" in out, "the plate-to-foot assignment is shown"
    forces = read_table(tmp_path / "id" / "id.sto")
    assert "knee_angle_r_moment" in forces.labels
    assert (tmp_path / "id" / "external_loads.xml").is_file()

    generic = DATA / "opensim-models" / "Models" / "Gait2354_Simbody" / "gait2354_simbody.osim"
    assert run("scale", "--setup", G2354 / "subject01_Setup_Scale.xml", "--model", generic,
               "-o", tmp_path / "scale") == 0
    assert (tmp_path / "scale" / "model_scaled.osim").is_file()
    assert "femur_r" in capsys.readouterr().out


def test_model_command_writes_a_loadable_model(tmp_path):
    import opensim as osim

    path = tmp_path / "subject.osim"
    assert run("model", "--height", "1.9", "--mass", "88", "-o", path) == 0
    model = osim.Model(str(path))
    state = model.initSystem()
    assert model.getTotalMass(state) == pytest.approx(88.0, rel=1e-9)


@pytest.mark.parametrize("case", ["missing_markers", "bad_model", "unknown_marker", "outside_time",
                                  "mm_as_m", "all_nan"])
def test_bad_input_is_one_clear_line_and_keeps_earlier_results(case, tmp_path, capsys):
    out = tmp_path / "out"
    assert run("ik", "--model", G10_MODEL, "--markers", G10_TRC, "--setup", G10_SETUP,
               "--start", "0.5", "--end", "0.55", "-o", out) == 0
    before = (out / "ik.mot").read_bytes()
    capsys.readouterr()

    model, markers, extra, named = G10_MODEL, G10_TRC, [], None
    if case == "missing_markers":
        markers = named = tmp_path / "absent.trc"
    elif case == "bad_model":
        model = named = tmp_path / "broken.osim"
        model.write_text("<OpenSimDocument><Model name='x'><BodySet>")
    elif case == "unknown_marker":
        weights = tmp_path / "w.toml"
        weights.write_text('[markers]\n"R.Heel" = 1\n"Not.A.Marker" = 1\n')
        extra, named = ["--weights", weights], "Not.A.Marker"
    elif case == "outside_time":
        extra, named = ["--start", "50", "--end", "60"], G10_TRC.name
    elif case in ("mm_as_m", "all_nan"):
        text = G10_TRC.read_text().splitlines()
        header = text[2].split("\t")
        if case == "mm_as_m":
            header[4] = "m"   # the values stay in mm
            text[2] = "\t".join(header)
        else:
            text = text[:5] + ["\t".join(line.split("\t")[:2]) for line in text[5:] if line.strip()]
        markers = named = tmp_path / f"{case}.trc"
        markers.write_text("\n".join(text) + "\n")
    args = ["ik", "--model", model, "--markers", markers, "-o", out] + extra
    if case != "unknown_marker":
        args += ["--setup", G10_SETUP]
    if case != "outside_time":
        args += ["--start", "0.5", "--end", "0.55"]
    assert run(*args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kinevid ik: error:"), err
    assert str(named) in err[0]
    assert (out / "ik.mot").read_bytes() == before, "an earlier result must survive a failed run"
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temporary files left behind"
