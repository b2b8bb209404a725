"""Inverse dynamics against OpenSim's own tool and the reference pipelines' shipped outputs."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

osim = pytest.importorskip("opensim")

from opensim_bridge.errors import InputError, ModelError  # noqa: E402
from opensim_bridge.external_loads import find_plates, side_from_name  # noqa: E402
from opensim_bridge.filters import butter_lowpass  # noqa: E402
from opensim_bridge.inverse_dynamics import id_from_setup, run_id  # noqa: E402
from opensim_bridge.storage import read_table, write_table  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
G2354 = DATA / "opensim-models" / "Pipelines" / "Gait2354_Simbody"
G10 = DATA / "opensim-models" / "Pipelines" / "Gait10dof18musc"
JA1 = DATA / "nimblephysics" / "data" / "osim" / "JA1GaitResults"

G_MODEL = G2354 / "OutputReference" / "subject01_simbody.osim"
G_IK = G2354 / "OutputReference" / "subject01_walk1_ik.mot"
G_GRF = G2354 / "subject01_walk1_grf.mot"
G_LOADS = G2354 / "subject01_walk1_grf.xml"

pytestmark = pytest.mark.skipif(not G2354.is_dir(), reason="reference data not present")

osim.Logger.setLevelString("error")


def _opensim_id(setup: Path, out: Path, **paths):
    """OpenSim's InverseDynamicsTool from a shipped setup file, only its paths fixed."""
    tool = osim.InverseDynamicsTool(str(setup))
    tool.setModelFileName(str(paths["model"]))
    tool.setCoordinatesFileName(str(paths["motion"]))
    tool.setExternalLoadsFileName(str(paths["loads"]))
    tool.setResultsDir(str(out))
    tool.setOutputGenForceFileName("opensim_id.sto")
    tool.run()
    return read_table(out / "opensim_id.sto")


def _diffs(ours, ref, rows=slice(None)) -> dict[str, tuple[float, float]]:
    """Per column: (RMS, max |difference|), after checking the two tables share their times."""
    np.testing.assert_allclose(ours.time[rows], ref.time[rows], atol=1e-6)
    out = {}
    for label in ref.labels:
        d = ours[label][rows] - ref[label][rows]
        out[label] = (float(np.sqrt(np.mean(d ** 2))), float(np.abs(d).max()))
    return out


def _report(title: str, diffs: dict[str, tuple[float, float]]) -> None:
    print(f"\n{title}: RMS / max |diff| per coordinate")
    for label, (rms, mx) in diffs.items():
        print(f"  {label:28s} {rms:10.4g} {mx:10.4g}")


@pytest.fixture(scope="module")
def g2354(tmp_path_factory):
    out = tmp_path_factory.mktemp("g2354_id")
    cwd = os.getcwd()
    # Run from an unrelated folder: the loads' datafile must resolve against the XML's folder.
    os.chdir(tmp_path_factory.mktemp("elsewhere"))
    try:
        res = run_id(G_MODEL, G_IK, out, loads=G_LOADS, lowpass_hz=6.0, start=0.4, end=1.6)
    finally:
        os.chdir(cwd)
    return res


def test_gait2354_matches_opensim_tool_and_reference(g2354, tmp_path):
    ours = g2354.table
    assert ours.shape == (73, 23)
    assert g2354.id_sto.is_file() and g2354.setup_xml.is_file()
    theirs = _opensim_id(G2354 / "subject01_Setup_InverseDynamics.xml", tmp_path,
                         model=G_MODEL, motion=G_IK, loads=G_LOADS)
    vs_tool = _diffs(ours, theirs)
    _report("Gait2354: kinevid vs OpenSim 4.6 InverseDynamicsTool", vs_tool)
    assert max(mx for _, mx in vs_tool.values()) < 0.5

    shipped = read_table(G2354 / "OutputReference" / "ResultsInverseDynamics" / "inverse_dynamics.sto")
    vs_ref = _diffs(ours, shipped)
    _report("Gait2354: kinevid vs shipped OutputReference", vs_ref)
    # Loose sanity bound only: the shipped file may come from an older OpenSim.
    assert max(rms for rms, _ in vs_ref.values()) < 5.0
    # The result is real dynamics, not zeros: the stance knee moment is tens of N m.
    assert np.abs(ours["knee_angle_r_moment"]).max() > 20


def test_setup_file_reproduces_the_run(g2354, tmp_path, monkeypatch):
    before = read_table(g2354.id_sto)
    monkeypatch.chdir(tmp_path)
    assert osim.InverseDynamicsTool(str(g2354.setup_xml)).run()
    again = read_table(g2354.id_sto)
    np.testing.assert_allclose(again.data, before.data, atol=1e-6)
    loads = osim.ExternalLoads(str(g2354.external_loads_xml), True)
    assert Path(loads.getDataFileName()) == G_GRF.resolve()


def test_loads_built_from_grf_column_names(g2354, tmp_path):
    res = run_id(G_MODEL, G_IK, tmp_path, grf=G_GRF, start=0.4, end=1.6)
    shipped = osim.ExternalLoads(str(G_LOADS), True)
    expected = {shipped.get(i).getForceIdentifier(): shipped.get(i).getAppliedToBodyName()
                for i in range(shipped.getSize())}
    got = {a.plate.force_id: a.body for a in res.assignments}
    assert got == expected
    assert all(a.rule == "cop" for a in res.assignments)  # no side in these names
    assert (tmp_path / "external_loads.xml").is_file()
    np.testing.assert_allclose(res.table.data, g2354.table.data, atol=1e-6)


def test_grf_argument_overrides_the_loads_datafile(g2354, tmp_path):
    grf = read_table(G_GRF)
    copy = tmp_path / "renamed_grf.mot"
    write_table(grf, copy)
    res = run_id(G_MODEL, G_IK, tmp_path / "out", loads=G_LOADS, grf=copy, start=0.4, end=1.6)
    loads = osim.ExternalLoads(str(res.external_loads_xml), True)
    assert Path(loads.getDataFileName()) == copy.resolve()
    np.testing.assert_allclose(res.table.data, g2354.table.data, atol=1e-4)


def test_plate_name_conventions():
    labels = [f"{b}{k}{a}" for b in ("ground_force_r_", "ground_force_l_") for k in "vp"
              for a in "xyz"] + [f"ground_torque_{s}_{a}" for s in "rl" for a in "xyz"]
    plates = find_plates(labels)  # the Rajagopal pipeline's convention
    assert [(p.force_id, p.torque_id) for p in plates] == [
        ("ground_force_r_v", "ground_torque_r_"), ("ground_force_l_v", "ground_torque_l_")]
    assert [side_from_name(p.base) for p in plates] == ["r", "l"]
    assert side_from_name("calcn_l_force_") == "l"
    assert side_from_name("1_ground_force_") is None
    assert side_from_name("ground_force_1_") is None


def test_gait10dof18musc_setup_with_dangling_paths(tmp_path):
    setup = G10 / "ID" / "walk_Setup_ID.xml"
    # As shipped, the setup's model (../subject01.osim) does not exist: a clear error.
    with pytest.raises(InputError, match="model_file") as err:
        id_from_setup(setup, tmp_path / "bad")
    assert str(setup.resolve()) in str(err.value)
    assert not (tmp_path / "bad" / "id.sto").exists()
    # As a user would: point at the files that do exist; the loads path resolves from the setup.
    res = id_from_setup(setup, tmp_path, model=G10 / "OutputReference" / "subject01.osim",
                        motion=G10 / "OutputReference" / "IK" / "subject01_walk_IK.mot")
    ref = read_table(G10 / "OutputReference" / "ID" / "Results" / "subject01_walk_ID.sto")
    diffs = _diffs(res.table, ref)
    _report("Gait10dof18musc: kinevid vs OutputReference", diffs)
    assert max(mx for _, mx in diffs.values()) < 0.5


# --------------------------------------------------------------------------- JA1 (Dorn 2012)
def test_ja1_reproduces_reference_configuration(tmp_path):
    """The shipped ID comes from JA1Gait35_ik.mot with no low-pass (the setup sets none); its
    huge values (18 kN at frame 0) are spline-differentiated raw IK noise. Run the same
    configuration and it matches to the file's printed precision, every frame, first included."""
    res = id_from_setup(JA1 / "JA1Gait35_id_setup.xml", tmp_path)
    assert res.lowpass_hz is None
    ref = read_table(JA1 / "JA1Gait35_id_output.sto")
    theirs = _opensim_id(JA1 / "JA1Gait35_id_setup.xml", tmp_path, model=JA1 / "rescaled.osim",
                         motion=JA1 / "JA1Gait35_ik.mot", loads=JA1 / "JA1Gait35_external_forces.xml")
    ours_vs_ref, tool_vs_ref = _diffs(res.table, ref), _diffs(theirs, ref)
    _report("JA1 unfiltered: kinevid vs JA1Gait35_id_output.sto", ours_vs_ref)
    _report("JA1 unfiltered: OpenSim tool vs JA1Gait35_id_output.sto", tool_vs_ref)
    assert max(mx for _, mx in ours_vs_ref.values()) < 1e-3
    assert max(mx for _, mx in tool_vs_ref.values()) < 1e-3
    # knee_angle_*_beta is absent from the motion but coupled by a constraint: accepted.
    assert "knee_angle_r_beta" not in read_table(JA1 / "JA1Gait35_ik.mot").labels


#: Frames dropped at each end when comparing filtered results: 10 frames = 40 ms at 250 Hz, the
#: span where the zero-lag filter of the reference and OpenSim's filter of the coordinates
#: (each padded differently at the ends) disagree most; beyond it the RMS stops falling.
JA1_EDGE_FRAMES = 10


def test_ja1_filtered_against_filtered_reference(tmp_path):
    ref = read_table(JA1 / "JA1Gait35_id_output.sto")
    ref_f = ref.copy(data=butter_lowpass(ref.data, ref.time, 6.0))
    res = run_id(JA1 / "rescaled.osim", JA1 / "JA1Gait35_ik_by_opensim.mot", tmp_path,
                 loads=JA1 / "JA1Gait35_external_forces.xml", lowpass_hz=6.0)
    rows = slice(JA1_EDGE_FRAMES, len(ref) - JA1_EDGE_FRAMES)
    diffs = _diffs(res.table, ref_f, rows)
    _report(f"JA1 6 Hz (IK by OpenSim) vs reference low-passed at 6 Hz, "
            f"{JA1_EDGE_FRAMES} frames dropped per end", diffs)
    # Loose: filtering the output is not filtering the kinematics (GRF impacts get smeared too).
    assert np.median([rms for rms, _ in diffs.values()]) < 100.0


def test_ja1_plates_assigned_like_the_shipped_xml(tmp_path):
    res = run_id(JA1 / "rescaled.osim", JA1 / "JA1Gait35_ik_by_opensim.mot", tmp_path,
                 grf=JA1 / "JA1Gait35_grf.mot", lowpass_hz=6.0)
    shipped = osim.ExternalLoads(str(JA1 / "JA1Gait35_external_forces.xml"), True)
    expected = {shipped.get(i).getForceIdentifier(): shipped.get(i).getAppliedToBodyName()
                for i in range(shipped.getSize())}
    used = {a.plate.force_id: a.body for a in res.assignments if a.body is not None}
    assert used  # some plates carried the runner
    for force_id, body in used.items():
        assert expected[force_id] == body
    unused = [a.plate.force_id for a in res.assignments if a.body is None]
    grf = read_table(JA1 / "JA1Gait35_grf.mot")
    for force_id in unused:  # left out only when never loaded
        assert np.abs(grf[force_id + "y"]).max() < 20


# --------------------------------------------------------------------------- bad input
def test_missing_motion(tmp_path):
    with pytest.raises(InputError, match="not found") as err:
        run_id(G_MODEL, tmp_path / "nope.mot", tmp_path, loads=G_LOADS)
    assert "nope.mot" in str(err.value)


def test_unreadable_model(tmp_path):
    bad = tmp_path / "broken.osim"
    bad.write_text("<OpenSimDocument><Model name='x'><BodySet>", encoding="utf-8")
    with pytest.raises(ModelError) as err:
        run_id(bad, G_IK, tmp_path / "out", loads=G_LOADS)
    assert "broken.osim" in str(err.value)


def test_grf_without_matching_columns(tmp_path):
    grf = read_table(G_GRF)
    renamed = grf.copy(labels=[lab.replace("1_ground", "plate2") for lab in grf.labels])
    path = tmp_path / "odd_grf.mot"
    write_table(renamed, path)
    with pytest.raises(InputError, match="1_ground_force_vx") as err:
        run_id(G_MODEL, G_IK, tmp_path / "out", loads=G_LOADS, grf=path)
    assert "odd_grf.mot" in str(err.value)


def test_motion_column_checks(tmp_path):
    ik = read_table(G_IK)
    keep = [lab for lab in ik.labels if lab != "hip_flexion_r"]
    missing = tmp_path / "missing.mot"
    write_table(ik.select(keep), missing)
    with pytest.raises(InputError, match="hip_flexion_r") as err:
        run_id(G_MODEL, missing, tmp_path / "out", loads=G_LOADS)
    assert "missing.mot" in str(err.value)

    extra = tmp_path / "extra.mot"
    write_table(ik.copy(labels=ik.labels + ("not_a_coordinate",),
                        data=np.column_stack([ik.data, np.zeros(len(ik))])), extra)
    with pytest.warns(UserWarning, match="not_a_coordinate"):
        res = run_id(G_MODEL, extra, tmp_path / "out", loads=G_LOADS, start=0.4, end=0.6)
    assert any("extra.mot" in w for w in res.warnings)


def test_failed_run_keeps_previous_results(g2354, tmp_path):
    out = tmp_path / "out"
    run_id(G_MODEL, G_IK, out, loads=G_LOADS, start=0.4, end=1.0)
    before = (out / "id.sto").read_bytes()
    with pytest.raises(InputError, match="outside the motion"):
        run_id(G_MODEL, G_IK, out, loads=G_LOADS, start=0.0, end=1.0)
    with pytest.raises(InputError, match="GRF"):
        run_id(G_MODEL, G_IK, out, loads=G_LOADS, grf=G_IK)
    assert (out / "id.sto").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["external_loads.xml", "id.sto", "id_setup.xml"]
