"""IK settings from OpenSim setup XML (inline or separate task files) and TOML."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from opensim_bridge.errors import InputError
from opensim_bridge.ik_settings import load_ik_settings

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PIPE = DATA / "opensim-models" / "Pipelines"
G2354 = PIPE / "Gait2354_Simbody" / "subject01_Setup_IK.xml"
HAMNER = PIPE / "Hamner"

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="shared reference data not present")


def _count_applied(text: str, tag: str) -> int:
    # Independent count straight from the text: tasks whose <apply> is true.
    blocks = re.findall(rf"<{tag} name=\"[^\"]+\">(.*?)</{tag}>", text, re.S)
    return sum(1 for b in blocks if re.search(r"<apply>\s*true\s*</apply>", b))


def test_gait2354_setup_weights_and_solver_settings():
    s = load_ik_settings(G2354)
    text = G2354.read_text()
    assert len(s.marker_weights) == _count_applied(text, "IKMarkerTask")
    assert s.marker_weights["R.ASIS"] == 10 and s.marker_weights["Top.Head"] == 0.1
    assert {t.name for t in s.applied_coordinate_tasks} == {
        "subtalar_angle_r", "mtp_angle_r", "subtalar_angle_l", "mtp_angle_l"}
    assert all(t.weight == 1000 and t.value_type == "default_value"
               for t in s.applied_coordinate_tasks)
    assert s.constraint_weight == 20 and s.accuracy == 1e-5
    assert s.time_range == (0.4, 1.6)


def test_apply_false_tasks_are_not_applied_and_inf_constraint_weight():
    path = PIPE / "Gait10dof18musc" / "IK" / "walk_Setup_IK.xml"
    s = load_ik_settings(path)
    assert "R.Knee.Lat" not in s.marker_weights          # apply=false in the file
    assert any(t.name == "R.Knee.Lat" and not t.apply for t in s.marker_tasks)
    assert s.marker_weights["Top.Head"] == 3
    assert math.isinf(s.constraint_weight)


def test_separate_task_file_via_iktaskset_file_attribute(tmp_path):
    setup = tmp_path / "setup.xml"
    setup.write_text(
        '<?xml version="1.0"?><OpenSimDocument Version="30000"><InverseKinematicsTool>'
        f'<IKTaskSet file="{HAMNER / "Tasks_IK.xml"}"/>'
        "<accuracy>1e-6</accuracy><time_range>0 1</time_range>"
        "</InverseKinematicsTool></OpenSimDocument>")
    s = load_ik_settings(setup)
    direct = load_ik_settings(HAMNER / "Tasks_IK.xml")  # a bare IKTaskSet document
    text = (HAMNER / "Tasks_IK.xml").read_text()
    assert s.marker_weights == direct.marker_weights
    assert len(s.marker_weights) == _count_applied(text, "IKMarkerTask") > 10
    assert s.accuracy == 1e-6 and s.time_range == (0.0, 1.0)


def test_missing_task_file_is_named(tmp_path):
    setup = tmp_path / "setup.xml"
    setup.write_text('<OpenSimDocument><InverseKinematicsTool><IKTaskSet file="nope.xml"/>'
                     "</InverseKinematicsTool></OpenSimDocument>")
    with pytest.raises(InputError, match="nope.xml"):
        load_ik_settings(setup)


def test_toml(tmp_path):
    p = tmp_path / "ik.toml"
    p.write_text('accuracy = 1e-6\nconstraint_weight = 20\ntime_range = [0.5, 1.0]\n'
                 '[markers]\n"R.ASIS" = 10\n"L.ASIS" = { weight = 5, apply = false }\n'
                 '[coordinates]\nsubtalar_angle_r = { weight = 1000, value = 0.1 }\n'
                 'mtp_angle_r = { weight = 10, value_deg = 90 }\nlumbar_bending = 100\n')
    s = load_ik_settings(p)
    assert s.marker_weights == {"R.ASIS": 10.0}
    c = {t.name: t for t in s.coordinate_tasks}
    assert c["subtalar_angle_r"].value_type == "manual_value" and c["subtalar_angle_r"].value == 0.1
    assert c["mtp_angle_r"].value == pytest.approx(math.pi / 2)
    assert c["lumbar_bending"].value_type == "default_value" and c["lumbar_bending"].weight == 100
    assert s.accuracy == 1e-6 and s.constraint_weight == 20 and s.time_range == (0.5, 1.0)


@pytest.mark.parametrize("body, match", [
    ("[markers]\nA = -1\n", "weight"),
    ("accuracy = 0\n", "accuracy"),
    ("bogus = 1\n", "unknown keys"),
    ("time_range = [2, 1]\n", "reversed"),
    ("[coordinates]\nq = { value_type = 'from_file' }\n", "coordinate_file"),
    ("[markers\n", "TOML"),
])
def test_bad_toml_is_input_error(tmp_path, body, match):
    p = tmp_path / "bad.toml"
    p.write_text(body)
    with pytest.raises(InputError, match=match) as exc:
        load_ik_settings(p)
    assert str(p) in str(exc.value)


def test_bad_xml_and_entity_expansion_rejected(tmp_path):
    p = tmp_path / "broken.xml"
    p.write_text("<OpenSimDocument><InverseKinematicsTool>")
    with pytest.raises(InputError, match="XML"):
        load_ik_settings(p)
    bomb = tmp_path / "bomb.xml"
    bomb.write_text('<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;">]>'
                    "<OpenSimDocument><InverseKinematicsTool><accuracy>&b;</accuracy>"
                    "</InverseKinematicsTool></OpenSimDocument>")
    with pytest.raises(InputError, match="safety"):
        load_ik_settings(bomb)
    with pytest.raises(InputError, match="not found"):
        load_ik_settings(tmp_path / "absent.xml")
