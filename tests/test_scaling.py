"""Model scaling against OpenSim's Gait2354 reference pipeline and against known factors."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

osim = pytest.importorskip("opensim")

from opensim_bridge.errors import InputError, ModelError  # noqa: E402
from opensim_bridge.scaling import (Measurement, model_height, model_segment_lengths,  # noqa: E402
                                    read_scale_factors, scale_from_segment_lengths,
                                    scale_from_setup, scale_model)
from opensim_bridge.trc import read_trc  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PIPE = DATA / "opensim-models" / "Pipelines" / "Gait2354_Simbody"
GENERIC = DATA / "opensim-models" / "Models" / "Gait2354_Simbody" / "gait2354_simbody.osim"
SETUP = PIPE / "subject01_Setup_Scale.xml"
STATIC = PIPE / "subject01_static.trc"
MARKER_SET = PIPE / "gait2354_Scale_MarkerSet.xml"
REFERENCE = PIPE / "OutputReference" / "subject01_scaleSet_applied.xml"

pytestmark = pytest.mark.skipif(not PIPE.is_dir(), reason="reference data not present")

osim.Logger.setLevelString("error")


@pytest.fixture(scope="module")
def from_setup(tmp_path_factory):
    cwd = os.getcwd()
    # Relative paths in the setup must resolve against its folder, not the current directory.
    os.chdir(tmp_path_factory.mktemp("elsewhere"))
    try:
        # The setup's generic model lives in Models/, not beside the setup: passed explicitly.
        return scale_from_setup(SETUP, tmp_path_factory.mktemp("scaled"), model=GENERIC)
    finally:
        os.chdir(cwd)


def test_scale_from_setup_matches_reference(from_setup):
    ref = read_scale_factors(REFERENCE)
    ref.pop("ground")
    assert set(ref) == set(from_setup.factors)
    worst = max(abs(from_setup.factors[b][k] / ref[b][k] - 1) for b in ref for k in range(3))
    print(f"\nGait2354 scale factors: worst relative difference to reference {worst:.2e}")
    assert worst < 0.02
    assert from_setup.mass == pytest.approx(72.6, rel=1e-9)
    for path in (from_setup.model_path, from_setup.setup_xml, from_setup.scale_factors_xml):
        assert path.is_file()
    assert not [p for p in from_setup.model_path.parent.iterdir() if p.name.startswith(".")]


def test_scale_setup_file_reruns(from_setup, tmp_path, monkeypatch):
    factors_before = read_scale_factors(from_setup.scale_factors_xml)
    from_setup.scale_factors_xml.unlink()  # so the rerun must write it again
    monkeypatch.chdir(tmp_path)
    assert osim.ScaleTool(str(from_setup.setup_xml)).run()
    again = read_scale_factors(from_setup.scale_factors_xml)
    assert again == factors_before
    osim.Model(str(from_setup.model_path))  # still a loadable model


def test_setup_paths_that_do_not_exist(tmp_path):
    with pytest.raises(InputError, match="gait2354_simbody.osim") as err:
        scale_from_setup(SETUP, tmp_path)
    assert str(SETUP.resolve()) in str(err.value)
    bad = tmp_path / "broken.osim"
    bad.write_text("not xml at all", encoding="utf-8")
    with pytest.raises(ModelError) as err:
        scale_from_setup(SETUP, tmp_path / "out", model=bad)
    assert "broken.osim" in str(err.value)
    assert not (tmp_path / "out" / "model_scaled.osim").exists()


#: The setup's measurement set, written out as data.
MEASUREMENTS = {
    "torso": ([("V.Sacral", "Top.Head")], ["torso"]),
    "pelvis": ([("R.ASIS", "L.ASIS")], ["pelvis"]),
    "thigh": ([("R.ASIS", "R.Knee.Lat"), ("L.ASIS", "L.Knee.Lat")],
              ["femur_r", "femur_l", "patella_r", "patella_l"]),
    "shank": ([("R.Knee.Lat", "R.Ankle.Lat"), ("L.Knee.Lat", "L.Ankle.Lat")],
              ["tibia_r", "tibia_l", "talus_r", "talus_l"]),
    "foot": ([("R.Heel", "R.Toe.Tip"), ("L.Heel", "L.Toe.Tip")],
             ["calcn_r", "calcn_l", "toes_r", "toes_l"]),
}


def test_scale_model_from_measurement_data(tmp_path):
    series = read_trc(STATIC)
    # gait2354 has no patella: drop those bodies rather than fail.
    items = [Measurement(name, tuple(pairs), tuple(b for b in bodies if "patella" not in b))
             for name, (pairs, bodies) in MEASUREMENTS.items()]
    res = scale_model(GENERIC, series, tmp_path, measurements=items, mass=72.6,
                      marker_set=MARKER_SET, time_range=(1.0, 2.0))
    ref = read_scale_factors(REFERENCE)
    # femur/tibia are set manually in the reference setup (measurement then manualScale):
    # every other body is the measurement alone and must agree.
    for body in ("pelvis", "torso", "talus_r", "talus_l", "calcn_r", "calcn_l", "toes_r", "toes_l"):
        np.testing.assert_allclose(res.factors[body], ref[body], rtol=0.02)
    assert res.mass == pytest.approx(72.6)
    assert (tmp_path / "static_markers.trc").is_file()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(InputError, match="Nowhere"):
        scale_model(GENERIC, series, tmp_path, mass=70, marker_set=MARKER_SET,
                    measurements={"m": ([("R.ASIS", "Nowhere")], ["pelvis"])})
    # A failed run leaves the earlier results as they were.
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def _scaled_with_known_factors(tmp_path, factors: dict[str, float]) -> Path:
    """The generic model scaled by OpenSim's Model.scale with the given uniform factors."""
    model = osim.Model(str(GENERIC))
    state = model.initSystem()
    sset = osim.ScaleSet()
    for body, k in factors.items():
        s = osim.Scale()
        s.setSegmentName(body)
        s.setScaleFactors(osim.Vec3(k, k, k))
        s.setApply(True)
        sset.cloneAndAppend(s)
    model.scale(state, sset, True, -1.0)
    path = tmp_path / "known.osim"
    model.printToXML(str(path))
    return path


def test_segment_lengths_recover_known_factors(tmp_path):
    rng = np.random.default_rng(7)
    generic = osim.Model(str(GENERIC))
    bodies = [generic.getBodySet().get(i).getName() for i in range(generic.getBodySet().getSize())]
    k_height = 1.04
    known = {b: k_height for b in bodies}
    measured = model_segment_lengths(generic)
    assert {"femur_r", "tibia_r", "femur_l", "tibia_l"} <= set(measured)
    for body in measured:
        known[body] = float(rng.uniform(0.85, 1.2))
    subject = _scaled_with_known_factors(tmp_path, known)
    lengths = model_segment_lengths(osim.Model(str(subject)))
    for body in measured:  # lengths scale exactly with the body's factor
        assert lengths[body] == pytest.approx(known[body] * measured[body], rel=1e-9)

    h_generic = model_height(generic, MARKER_SET)
    assert 1.5 < h_generic < 2.0
    res = scale_from_segment_lengths(GENERIC, lengths, height=k_height * h_generic, mass=63.0,
                                     out_dir=tmp_path / "out", marker_set=MARKER_SET)
    for body in bodies:
        np.testing.assert_allclose(res.factors[body], (known[body],) * 3, rtol=1e-5)
    scaled = osim.Model(str(res.model_path))
    got = model_segment_lengths(scaled)
    for body in measured:
        assert got[body] == pytest.approx(lengths[body], rel=1e-5)
    masses = np.array([scaled.getBodySet().get(i).getMass() for i in range(len(bodies))])
    generic_masses = np.array([generic.getBodySet().get(i).getMass() for i in range(len(bodies))])
    assert masses.sum() == pytest.approx(63.0)
    np.testing.assert_allclose(masses / masses.sum(), generic_masses / generic_masses.sum())


def test_segment_aliases_and_errors(tmp_path):
    generic = osim.Model(str(GENERIC))
    femur = model_segment_lengths(generic)["femur_r"]
    res = scale_from_segment_lengths(GENERIC, {"thigh_r": 1.1 * femur}, height=1.7, mass=70,
                                     out_dir=tmp_path, model_height_m=1.7)
    assert res.factors["femur_r"][0] == pytest.approx(1.1, rel=1e-5)
    assert res.factors["femur_l"][0] == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(InputError, match="wing_r"):
        scale_from_segment_lengths(GENERIC, {"wing_r": 0.3}, 1.7, 70, tmp_path / "x",
                                   model_height_m=1.7)
    with pytest.raises(InputError, match="pelvis"):  # three child joints: no single length
        scale_from_segment_lengths(GENERIC, {"pelvis": 0.3}, 1.7, 70, tmp_path / "x",
                                   model_height_m=1.7)
    with pytest.raises(ModelError, match="markers"):
        scale_from_segment_lengths(GENERIC, {"femur_r": 0.4}, 1.7, 70, tmp_path / "x")


def test_setup_with_measurement_set_in_its_own_file(tmp_path, monkeypatch):
    """A setup elsewhere, with relative paths and ``<MeasurementSet file=...>``, run from
    another current directory."""
    text = SETUP.read_text(encoding="utf-8")
    start = text.index('<MeasurementSet name="gait2354">')
    stop = text.index("</MeasurementSet>") + len("</MeasurementSet>")
    folder = tmp_path / "setup"
    folder.mkdir()
    (folder / "measurements.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<OpenSimDocument Version="20302">\n'
        + text[start:stop] + "\n</OpenSimDocument>\n", encoding="utf-8")
    rel = os.path.relpath(PIPE, folder)
    text = (text[:start] + '<MeasurementSet file="measurements.xml"/>' + text[stop:])
    for name in ("subject01_static.trc", "gait2354_Scale_MarkerSet.xml"):
        text = text.replace(f"> {name} <", f"> {rel}/{name} <")
    (folder / "setup.xml").write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    res = scale_from_setup(folder / "setup.xml", tmp_path / "out", model=GENERIC)
    ref = read_scale_factors(REFERENCE)
    for body in ("pelvis", "torso", "calcn_r", "talus_l"):
        np.testing.assert_allclose(res.factors[body], ref[body], rtol=0.02)
