"""Keypoint-to-marker maps on the real models in ../shared/data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import opensim as osim
import pytest
from conftest import data_path
from defusedxml import ElementTree as DET

from opensim_bridge.builtin_model import KEYPOINT_MARKERS, write_builtin_model
from opensim_bridge.errors import InputError, ModelError
from opensim_bridge.keypoint_maps import (
    MAPS_DIR,
    apply_keypoint_map,
    auto_keypoint_map,
    body_role,
    body_side,
    load_keypoint_map,
    missing_for_map,
    pick_keypoint_map,
    shipped_map,
    shipped_maps,
    write_keypoint_map,
)
from opensim_bridge.osim_model import load_model
from opensim_bridge.timeseries import KeypointSeries

MODELS = "opensim-models/Models"
OPENCAP = "opencap-core/opensimPipeline/Models"
POSE2SIM = "pose2sim/Pose2Sim/OpenSim_Setup"

# shipped map (file stem) -> the real model files it targets
TARGETS = {
    "gait2354": [f"{MODELS}/Gait2354_Simbody/gait2354_simbody.osim"],
    "gait2392": [f"{MODELS}/Gait2392_Simbody/gait2392_thelen2003muscle.osim",
                 f"{MODELS}/Gait2392_Simbody/gait2392_millard2012muscle.osim"],
    "rajagopal2016": [f"{MODELS}/Rajagopal/Rajagopal2016.osim"],
    "rajagopal_lai_uhlrich2023": [f"{MODELS}/Rajagopal/RajagopalLaiUhlrich2023.osim"],
    "laiuhlrich2022": [f"{OPENCAP}/LaiUhlrich2022.osim", f"{OPENCAP}/LaiUhlrich2022_shoulder.osim"],
    "pose2sim": [f"{POSE2SIM}/Model_Pose2Sim_simple.osim",
                 f"{POSE2SIM}/Model_Pose2Sim_muscles_flex.osim"],
}
CASES = [(stem, rel) for stem, rels in TARGETS.items() for rel in rels]


def _markers(model) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
    """name -> (body, location in body, position in ground) at the default pose."""
    state = model.initSystem()
    model.realizePosition(state)
    ms = model.getMarkerSet()
    out = {}
    for i in range(ms.getSize()):
        m = ms.get(i)
        out[m.getName()] = (m.getParentFrame().findBaseFrame().getName(),
                            m.get_location().to_numpy().copy(),
                            m.getLocationInGround(state).to_numpy().copy())
    return out


def _xml_markers(path: Path) -> dict[str, tuple[str, np.ndarray]]:
    out = {}
    for m in DET.parse(str(path)).getroot().iter("Marker"):
        frame = (m.findtext("socket_parent_frame") or m.findtext("body")).strip()
        out[m.get("name")] = (frame.split("/")[-1],
                              np.array([float(v) for v in m.findtext("location").split()]))
    return out


def test_every_shipped_map_has_a_target_model():
    stems = {p.stem for p in MAPS_DIR.glob("*.toml")}
    assert stems == set(TARGETS) | {"builtin"}
    for kmap in shipped_maps():
        assert set(kmap.markers) <= set(KEYPOINT_MARKERS), kmap.source
        assert kmap.match, kmap.source


@pytest.mark.parametrize("stem,rel", CASES, ids=[f"{s}:{Path(r).name}" for s, r in CASES])
def test_shipped_map_applies_to_its_model(stem, rel, tmp_path):
    model_file = data_path(*rel.split("/"))
    kmap = pick_keypoint_map(model_file)
    assert Path(kmap.source).stem == stem          # the model is recognised
    model = load_model(model_file)
    assert missing_for_map(model, kmap) == {"bodies": [], "joints": [], "markers": []}
    out = apply_keypoint_map(model_file, kmap, tmp_path / "with_keypoints.osim")
    written = osim.Model(str(out))
    marks = _markers(written)                      # initSystem()s
    joints = {written.getJointSet().get(i).getName(): written.getJointSet().get(i)
              for i in range(written.getJointSet().getSize())}
    state = written.initSystem()
    written.realizePosition(state)
    for key, spec in kmap.markers.items():
        body, loc, ground = marks[spec.marker]
        if spec.location is not None:
            assert body == spec.body, key
            np.testing.assert_allclose(loc, spec.location, atol=1e-9, err_msg=key)
        else:  # joint centres: the marker sits on the centre(s) of the named joint(s)
            centre = np.mean([joints[j].getChildFrame().getPositionInGround(state).to_numpy()
                              for j in spec.joint_centre], axis=0)
            np.testing.assert_allclose(ground, centre, atol=1e-9, err_msg=key)
            if spec.body is None:
                assert body == joints[spec.joint_centre[0]].getChildFrame() \
                    .findBaseFrame().getName()
    # the model's own markers are kept
    assert set(_markers(load_model(model_file))) <= set(marks)


def test_pose2sim_and_opencap_maps_use_their_projects_marker_sets():
    """Every location of these maps is the marker of the same keypoint in the project's own
    keypoint marker set (Pose2Sim: HALPE-26, COCO-133 for eyes and hands; OpenCap: OpenPose)."""
    halpe = _xml_markers(data_path(*POSE2SIM.split("/"), "Markers_Halpe26.xml"))
    coco = _xml_markers(data_path(*POSE2SIM.split("/"), "Markers_Coco133.xml"))
    for key, spec in shipped_map("pose2sim").markers.items():
        body, loc = halpe.get(key) or coco[key]
        assert spec.body == body and np.allclose(spec.location, loc, atol=1e-6), key
    assert {"RKnee", "Hip", "Head", "Neck", "REye", "RIndex"} <= set(shipped_map("pose2sim").markers)
    openpose = _xml_markers(data_path(*OPENCAP.split("/"), "LaiUhlrich2022_markers_openpose.xml"))
    lai = shipped_map("LaiUhlrich2022")
    assert lai.markers["Hip"].marker == "midHip"
    for key, spec in lai.markers.items():
        body, loc = openpose[spec.marker]
        assert spec.body == body and np.allclose(spec.location, loc, atol=1e-6), key


def test_builtin_map_is_the_identity(tmp_path):
    path = write_builtin_model(tmp_path / "builtin.osim", 1.70, 65.0, "f")
    kmap = pick_keypoint_map(path)
    assert kmap.name == "builtin" and list(kmap.markers) == KEYPOINT_MARKERS
    before = _markers(load_model(path))
    out = apply_keypoint_map(path, kmap, tmp_path / "same.osim")
    after = _markers(load_model(out))
    for k in KEYPOINT_MARKERS:
        assert after[k][0] == before[k][0]
        np.testing.assert_allclose(after[k][2], before[k][2], atol=1e-12)


def test_model_lacking_bodies_is_a_clear_error(tmp_path):
    """Pose2Sim's map on gait2354 (no head, no arms): every missing body is listed, with the
    model and map files, and nothing is written."""
    model_file = data_path(*MODELS.split("/"), "Gait2354_Simbody", "gait2354_simbody.osim")
    kmap = shipped_map("pose2sim")
    out = tmp_path / "x.osim"
    with pytest.raises(ModelError) as err:
        apply_keypoint_map(model_file, kmap, out)
    msg = str(err.value)
    for body in ("head", "humerus_r", "humerus_l", "radius_r", "radius_l", "hand_r", "hand_l"):
        assert body in msg
    assert "femur_r" not in msg and "torso" not in msg
    assert str(model_file.resolve()) in msg and kmap.source in msg
    assert not out.exists()
    # joints too: Rajagopal's walker knee and arms are not in gait2354
    with pytest.raises(ModelError, match=r"joints acromial_l, acromial_r, elbow_l, elbow_r, "
                       r"radius_hand_l, radius_hand_r, walker_knee_l, walker_knee_r$"):
        apply_keypoint_map(model_file, shipped_map("Rajagopal2016"), out)


def _offset_translation(osim_file: Path, joint: str, which: str) -> tuple[str, np.ndarray]:
    """(body, translation) of a joint's parent or child offset frame, read from the XML."""
    root = DET.parse(str(osim_file)).getroot()
    for j in root.iter():
        if j.get("name") == joint and j.find("socket_child_frame") is not None:
            frame_name = j.findtext(f"socket_{which}_frame").strip()
            for f in j.iter("PhysicalOffsetFrame"):
                if f.get("name") == frame_name:
                    body = f.findtext("socket_parent").strip().split("/")[-1]
                    return body, np.array([float(v) for v in f.findtext("translation").split()])
    raise AssertionError(f"joint {joint} not found in {osim_file}")


def test_auto_map_on_gait2354_finds_joint_centres(tmp_path):
    model_file = data_path(*MODELS.split("/"), "Gait2354_Simbody", "gait2354_simbody.osim")
    kmap = auto_keypoint_map(model_file)
    out = apply_keypoint_map(model_file, kmap, tmp_path / "auto.osim")
    marks = _markers(load_model(out))
    for side in "rl":
        S = side.upper()
        for key, joint in ((f"{S}Hip", f"hip_{side}"), (f"{S}Knee", f"knee_{side}"),
                           (f"{S}Ankle", f"ankle_{side}")):
            body, loc = _offset_translation(model_file, joint, "child")
            assert marks[key][0] == body, key                 # on the joint's child body
            np.testing.assert_allclose(marks[key][1], loc, atol=1e-9, err_msg=key)
    # mid-hip on the pelvis, half-way between the hip centres (the hip_r/hip_l parent frames)
    _, hr = _offset_translation(model_file, "hip_r", "parent")
    _, hl = _offset_translation(model_file, "hip_l", "parent")
    assert marks["Hip"][0] == "pelvis"
    np.testing.assert_allclose(marks["Hip"][1], (hr + hl) / 2, atol=1e-9)
    # mesh landmarks agree with OpenSim's own gait2354 scale marker set (skin markers)
    ref = _xml_markers(data_path("opensim-models", "Pipelines", "Gait2354_Simbody",
                                 "gait2354_Scale_MarkerSet.xml"))
    for key, name in (("RHeel", "R.Heel"), ("LHeel", "L.Heel"), ("Head", "Top.Head"),
                      ("RBigToe", "R.Toe.Tip")):
        body, loc = ref[name]
        got = _markers(load_model(out))[key]
        ref_model = load_model(model_file)
        st = ref_model.initSystem()
        ref_ground = ref_model.getBodySet().get(body).findStationLocationInGround(
            st, osim.Vec3(*loc)).to_numpy()
        assert np.linalg.norm(got[2] - ref_ground) < 0.03, (key, got[2], ref_ground)
    # what it could not place is listed: gait2354 has no arms
    assert {"RElbow", "RWrist", "LElbow", "LWrist", "REye", "REar"} <= set(kmap.missing)
    assert not set(kmap.missing) & set(kmap.markers)


def test_pick_falls_back_to_auto_and_honours_a_custom_map(tmp_path):
    hamner = data_path(*MODELS.split("/"), "Hamner", "FullBodyModel_Hamner2010_v2_0.osim")
    auto = pick_keypoint_map(hamner)
    assert auto.source is None and auto.name.startswith("auto:")
    assert {"RElbow", "RWrist", "RShoulder", "Neck", "RKnee"} <= set(auto.markers)
    custom = write_keypoint_map(auto, tmp_path / "hamner.toml")
    again = pick_keypoint_map(hamner, custom)
    assert again.source == str(custom.resolve())
    assert again.markers == auto.markers           # TOML round trip
    applied = apply_keypoint_map(hamner, again, tmp_path / "hamner_kp.osim")
    assert set(auto.markers) <= set(_markers(load_model(applied)))


def test_custom_map_rename_and_weights():
    lai = shipped_map("LaiUhlrich2022")
    names = ["Hip", "RKnee", "Nose"]
    series = KeypointSeries([0.0, 0.1], names, np.zeros((2, 3, 3)))
    mapped = lai.to_model_markers(series)
    assert mapped.names == ("midHip", "RKnee")      # Nose is not in the map: dropped
    assert lai.ik_weights(["Hip"]) == {"midHip": 1.0}


@pytest.mark.parametrize("text,problem", [
    ('[markers.RKnee]\nbody = "femur_r"\nlocation = [0, 1]\n', "3 numbers"),
    ('[markers.RKnee]\nbody = "femur_r"\nlocation = [0, 1, 2]\njoint_centre = "knee_r"\n',
     "both location and joint_centre"),
    ('[markers.RKnee]\njoint_centre = "knee_r"\ncolour = "red"\n', "unknown key"),
    ('[markers.RKnee]\nlocation = [0, 0, 0]\n', "no body"),
    ('[markers.RKnee]\njoint_centre = "knee_r"\nweight = -1\n', "weight"),
    ('[model]\nname = "x"\n', r"no \[markers"),
    ('[markers.RKnee\n', "TOML"),
])
def test_invalid_custom_maps_are_rejected(tmp_path, text, problem):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(InputError, match=problem) as err:
        load_keypoint_map(path)
    assert str(path.resolve()) in str(err.value) or str(path) in str(err.value)


def test_body_name_rules():
    assert (body_role("femur_r"), body_side("femur_r")) == ("femur", "r")
    assert (body_role("r_thigh"), body_side("r_thigh")) == ("femur", "r")
    assert (body_role("LeftUpLeg"), body_side("LeftUpLeg")) == ("femur", "l")
    assert (body_role("RightLowerLeg"), body_side("RightLowerLeg")) == ("tibia", "r")
    assert (body_role("shank_l"), body_side("shank_l")) == ("tibia", "l")
    assert body_role("l_forearm") == "ulna" and body_role("upperarm_r") == "humerus"
    assert body_role("Thorax") == "torso" and body_role("skull") == "head"
    assert body_role("foot_r") == "calcn" and body_role("RFoot") == "calcn"
    assert body_side("RFoot") == "r" and body_side("pelvis") is None
