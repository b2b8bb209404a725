"""kinevid's built-in full-body model: built from de Leva (1996) / Winter (2009) tables,
Rajagopal2016 coordinate conventions, markers at 2D-keypoint landmarks, and OpenSim's own IK
recovering random poses from the model's own markers."""
from __future__ import annotations

import math

import defusedxml.ElementTree as ET
import numpy as np
import opensim as osim
import pytest

from conftest import data_path
from opensim_bridge import anthropometry as anth
from opensim_bridge import builtin_model as bm
from opensim_bridge.errors import InputError, KinevidError

SUBJECTS = [(1.75, 70.0, "m"), (1.62, 55.5, "f"), (1.93, 104.0, "m")]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The default subject's model written to disk and read back (what users get)."""
    path = tmp_path_factory.mktemp("builtin") / "kinevid_fullbody.osim"
    bm.write_builtin_model(path, 1.75, 70.0, "m")
    return path


def _loaded(path):
    model = osim.Model(str(path))
    state = model.initSystem()
    return model, state


def _markers_at(model, coords):
    return bm.marker_positions(model, coords)


@pytest.mark.parametrize("height,mass,sex", SUBJECTS)
def test_saved_model_loads_and_weighs_the_subject(tmp_path, height, mass, sex):
    path = bm.write_builtin_model(tmp_path / "m.osim", height, mass, sex)
    model, state = _loaded(path)
    assert model.getTotalMass(state) == pytest.approx(mass, rel=1e-9)
    bodies = model.getBodySet()
    total = sum(bodies.get(i).getMass() for i in range(bodies.getSize()))
    assert total == pytest.approx(mass, rel=1e-9)
    assert all(bodies.get(i).getMass() > 0 for i in range(bodies.getSize()))


def test_body_names_follow_rajagopal(saved):
    model, _ = _loaded(saved)
    names = {model.getBodySet().get(i).getName() for i in range(model.getBodySet().getSize())}
    expected = {"pelvis", "torso", "head"} | {
        f"{b}_{s}" for s in "rl" for b in ("femur", "tibia", "talus", "calcn", "toes",
                                           "humerus", "ulna", "radius", "hand")}
    assert names == expected
    raj = osim.Model(str(data_path("opensim-models", "Models", "Rajagopal", "Rajagopal2016.osim")))
    raj_names = {raj.getBodySet().get(i).getName() for i in range(raj.getBodySet().getSize())}
    # every body but the head (merged into Rajagopal's torso) exists in Rajagopal2016
    assert names - {"head"} <= raj_names


def test_coordinates_named_as_listed_with_ranges_containing_defaults(saved):
    model, state = _loaded(saved)
    cs = model.getCoordinateSet()
    names = [cs.get(i).getName() for i in range(cs.getSize())]
    assert sorted(names) == sorted(bm.COORDINATES)
    assert len(set(bm.COORDINATES)) == 37
    for name in names:
        c = cs.get(name)
        assert c.getRangeMin() < c.getRangeMax()
        assert c.getRangeMin() <= c.getDefaultValue() <= c.getRangeMax(), name
        assert c.getValue(state) == pytest.approx(c.getDefaultValue())
        kind = c.getMotionType()
        if name in bm.TRANSLATIONAL_COORDINATES:
            assert kind == osim.Coordinate.Translational
        else:
            assert kind == osim.Coordinate.Rotational
            assert (c.getRangeMin(), c.getRangeMax()) == pytest.approx(bm.coordinate_range(name))


# The shoulder is the one place the built-in model departs from Rajagopal2016's ranges (see
# builtin_model._RANGES_R): an arm raised overhead must be reachable.
_WIDER = {"arm_flex": (-90.0, 180.0), "arm_add": (-180.0, 90.0), "arm_rot": (-120.0, 120.0)}


def test_coordinate_ranges_are_rajagopals(saved):
    raj = osim.Model(str(data_path("opensim-models", "Models", "Rajagopal", "Rajagopal2016.osim")))
    model, _ = _loaded(saved)
    for name in bm.COORDINATES:
        ours = model.getCoordinateSet().get(name)
        theirs = raj.getCoordinateSet().get(name)
        wider = _WIDER.get(name.rsplit("_", 1)[0])
        if wider is not None:
            assert math.degrees(ours.getRangeMin()) == pytest.approx(wider[0], abs=1e-3), name
            assert math.degrees(ours.getRangeMax()) == pytest.approx(wider[1], abs=1e-3), name
            # wider than Rajagopal's, never narrower
            assert ours.getRangeMin() <= theirs.getRangeMin() + 1e-6, name
            assert ours.getRangeMax() >= theirs.getRangeMax() - 1e-6, name
            continue
        assert ours.getRangeMin() == pytest.approx(theirs.getRangeMin(), abs=1e-4), name
        assert ours.getRangeMax() == pytest.approx(theirs.getRangeMax(), abs=1e-4), name


# Each coordinate moves a body whose mass centre lies off the joint axis in both models; the
# base pose bends the knees, elbows and wrists so that axial rotations move something.
_TRACKED = {"hip_flexion": "calcn", "hip_adduction": "calcn", "hip_rotation": "calcn",
            "knee_angle": "calcn", "ankle_angle": "calcn", "subtalar_angle": "calcn",
            "mtp_angle": "toes", "arm_flex": "hand", "arm_add": "hand", "arm_rot": "hand",
            "elbow_flex": "hand", "pro_sup": "hand", "wrist_flex": "hand", "wrist_dev": "hand"}
_BASE = {"knee_angle": 0.8, "elbow_flex": 1.2, "wrist_flex": 0.6}


def _tracked_body(coord: str) -> tuple[str, str]:
    """(body, 'com' | 'origin') that moves when ``coord`` changes."""
    if coord.startswith("lumbar"):
        return "humerus_r", "origin"
    if coord.startswith("pelvis"):
        return "calcn_r", "com"
    stem, side = coord.rsplit("_", 1)
    return f"{_TRACKED[stem]}_{side}", "com"


def _point(model, state, body_name, where):
    body = model.getBodySet().get(body_name)
    if where == "origin":
        return body.getPositionInGround(state).to_numpy()
    return body.findStationLocationInGround(state, body.getMassCenter()).to_numpy()


def _displacement(model, coord, delta):
    state = model.initSystem()
    cs = model.getCoordinateSet()
    for i in range(cs.getSize()):      # Rajagopal2016 locks subtalar, mtp and wrist
        cs.get(i).setLocked(state, False)
    for stem, value in _BASE.items():
        for side in "rl":
            cs.get(f"{stem}_{side}").setValue(state, value, False)
    body, where = _tracked_body(coord)
    model.realizePosition(state)
    before = _point(model, state, body, where)
    c = cs.get(coord)
    c.setValue(state, c.getValue(state) + delta, False)
    model.realizePosition(state)
    return _point(model, state, body, where) - before


def test_coordinates_move_the_body_the_way_rajagopals_do(saved):
    """Same name, same sign, same axis: a small positive change of each coordinate moves the
    distal segment in the same direction in kinevid's model and in Rajagopal2016."""
    raj = osim.Model(str(data_path("opensim-models", "Models", "Rajagopal", "Rajagopal2016.osim")))
    ours, _ = _loaded(saved)
    worst = 1.0
    for coord in bm.COORDINATES:
        delta = 0.02 if coord in bm.TRANSLATIONAL_COORDINATES else 0.15
        a = _displacement(ours, coord, delta)
        b = _displacement(raj, coord, delta)
        assert np.linalg.norm(a) > 1e-3 and np.linalg.norm(b) > 1e-3, coord
        cos = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
        worst = min(worst, cos)
        assert cos > 0.8, f"{coord}: direction differs from Rajagopal2016 (cos {cos:.2f})"


_MARKER_BODIES = {
    "Nose": "head", "REye": "head", "LEye": "head", "REar": "head", "LEar": "head",
    "Head": "head", "Neck": "torso", "Hip": "pelvis", "RHip": "pelvis", "LHip": "pelvis",
    "RShoulder": "torso", "LShoulder": "torso", "RElbow": "humerus_r", "LElbow": "humerus_l",
    "RWrist": "radius_r", "LWrist": "radius_l", "RIndex": "hand_r", "LPinky": "hand_l",
    "RKnee": "femur_r", "LKnee": "femur_l", "RAnkle": "tibia_r", "LAnkle": "tibia_l",
    "RHeel": "calcn_r", "LHeel": "calcn_l", "RBigToe": "toes_r", "LSmallToe": "toes_l",
    "RMT5": "calcn_r", "LKneeLat": "femur_l", "RRadStyl": "radius_r", "LUlnStyl": "ulna_l",
}


def test_markers_exist_on_their_bodies(saved):
    model, _ = _loaded(saved)
    ms = model.getMarkerSet()
    names = [ms.get(i).getName() for i in range(ms.getSize())]
    assert sorted(names) == sorted(bm.MARKERS)
    assert len(set(names)) == len(names)
    for marker, body in _MARKER_BODIES.items():
        assert ms.get(marker).getParentFrame().getName() == body, marker


@pytest.mark.parametrize("height,mass,sex", SUBJECTS)
def test_segment_lengths_scale_with_height(height, mass, sex):
    model = bm.build_model(height, mass, sex)
    pos = _markers_at(model, {})
    table = anth.DE_LEVA_1996_TABLE4[sex]
    stature = anth.DE_LEVA_STATURE_MM[sex]
    for a, b, seg in (("Hip", "Knee", "thigh"), ("Knee", "Ankle", "shank"),
                      ("Shoulder", "Elbow", "upper_arm"), ("Elbow", "Wrist", "forearm")):
        for s in "RL":
            d = np.linalg.norm(pos[s + a] - pos[s + b])
            assert d == pytest.approx(table[seg].length_mm / stature * height, rel=1e-9)
    assert pos["Head"][1] == pytest.approx(height, rel=1e-12)


def test_table_transcription_spot_checks():
    # de Leva (1996) Table 4, as printed: male thigh 422.2 mm, 14.16 %, CM 40.95 %;
    # female forearm 264.3 mm, 1.38 %; the three trunk parts add up to the whole trunk
    t = anth.DE_LEVA_1996_TABLE4
    thigh = t["m"]["thigh"]
    assert (thigh.length_mm, thigh.mass_pct, thigh.cm_pct) == (422.2, 14.16, 40.95)
    assert (t["f"]["forearm"].length_mm, t["f"]["forearm"].mass_pct) == (264.3, 1.38)
    for sex in "mf":
        parts = sum(t[sex][p].mass_pct for p in ("upper_trunk", "mid_trunk", "lower_trunk"))
        assert parts == pytest.approx(t[sex]["trunk"].mass_pct, abs=1e-9)
        lengths = sum(t[sex][p].length_mm for p in ("upper_trunk", "mid_trunk", "lower_trunk"))
        assert lengths == pytest.approx(t[sex]["trunk"].length_mm, abs=0.05)
        assert sum(anth.mass_fractions(sex)[s] * n
                   for s, n in anth.WHOLE_BODY_SEGMENTS.items()) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("sex", ["m", "f"])
def test_inertial_parameters_follow_de_leva(sex):
    height, mass = 1.70, 64.0
    model = bm.build_model(height, mass, sex)
    state = model.initSystem()
    fractions = anth.mass_fractions(sex)
    bodies = model.getBodySet()
    for body, seg in (("femur_r", "thigh"), ("tibia_l", "shank"), ("humerus_r", "upper_arm"),
                      ("hand_l", "hand")):
        row = anth.DE_LEVA_1996_TABLE4[sex][seg]
        length = row.length_mm / anth.DE_LEVA_STATURE_MM[sex] * height
        b = bodies.get(body)
        assert b.getMass() == pytest.approx(fractions[seg] * mass, rel=1e-12)
        # body origin = proximal joint centre, CM along the segment at de Leva's %
        com = b.getMassCenter().to_numpy()
        assert com == pytest.approx([0, -row.cm_pct / 100 * length, 0], abs=1e-12)
        moments = b.getInertia().getMoments().to_numpy()
        r_long, r_sag = row.r_long_pct / 100 * length, row.r_sag_pct / 100 * length
        assert moments[1] == pytest.approx(b.getMass() * r_long ** 2, rel=1e-9)
        assert moments[0] == pytest.approx(b.getMass() * r_sag ** 2, rel=1e-9)
    # the three foot bodies together have de Leva's foot mass and CM (heel to toe tip)
    m_foot, com = 0.0, np.zeros(3)
    for part in ("talus_r", "calcn_r", "toes_r"):
        b = bodies.get(part)
        m_foot += b.getMass()
        com += b.getMass() * b.findStationLocationInGround(state, b.getMassCenter()).to_numpy()
    com /= m_foot
    assert m_foot == pytest.approx(fractions["foot"] * mass, rel=1e-12)
    pos = bm.marker_positions(model, {})
    row = anth.DE_LEVA_1996_TABLE4[sex]["foot"]
    foot_len = row.length_mm / anth.DE_LEVA_STATURE_MM[sex] * height
    heel_back = pos["RBigToe"][0] - foot_len   # toe tip is the foot's anterior end
    assert com[0] - heel_back == pytest.approx(row.cm_pct / 100 * foot_len, rel=1e-9)


def test_standing_default_pose(saved):
    model, _ = _loaded(saved)
    pos = _markers_at(model, {})
    height = 1.75
    y = {k: v[1] for k, v in pos.items()}
    lowest = sorted(y, key=y.get)[:6]
    assert set(lowest) == {"RHeel", "LHeel", "RBigToe", "LBigToe", "RSmallToe", "LSmallToe"}
    assert min(y.values()) > 0 and min(y.values()) < 0.03 * height
    assert max(y, key=y.get) == "Head"
    for k in ("Nose", "REye", "LEar"):
        assert y[k] > y["Neck"] > y["RShoulder"] > y["RElbow"] > y["RWrist"]
    assert y["RHip"] > y["RKnee"] > y["RAnkle"] > y["RHeel"]
    # hip joint centres about half the stature above the soles (Winter: trochanter 0.530 H)
    assert 0.48 * height < y["RHip"] < 0.56 * height
    # nose, eyes in front of the ears; toes in front of the heels
    assert pos["Nose"][0] > pos["REye"][0] > pos["REar"][0]
    assert pos["RBigToe"][0] > pos["RAnkle"][0] > pos["RHeel"][0]
    # right side is +z
    assert pos["RHip"][2] > 0 > pos["LHip"][2]


def _mirror(v):
    return np.array([v[0], v[1], -v[2]])


def test_left_right_symmetry_at_rest_and_in_motion(saved):
    model, _ = _loaded(saved)
    rng = np.random.default_rng(7)
    poses = [{}]
    for _ in range(3):
        q = {}
        for stem in ("hip_flexion", "hip_adduction", "hip_rotation", "knee_angle", "ankle_angle",
                     "subtalar_angle", "mtp_angle", "arm_flex", "arm_add", "arm_rot",
                     "elbow_flex", "pro_sup", "wrist_flex", "wrist_dev"):
            lo, hi = bm.coordinate_range(f"{stem}_r")
            q[f"{stem}_r"] = q[f"{stem}_l"] = rng.uniform(lo, hi)
        poses.append(q)
    for q in poses:
        pos = _markers_at(model, q)
        for name, p in pos.items():
            if name[0] == "R" and name[1].isupper():
                other = pos["L" + name[1:]]
            elif name[0] == "L" and name[1].isupper():
                other = pos["R" + name[1:]]
            else:
                other = p        # midline markers lie on the sagittal plane
            assert _mirror(p) == pytest.approx(other, abs=1e-9), name
    bodies = model.getBodySet()
    for i in range(bodies.getSize()):
        b = bodies.get(i)
        if b.getName().endswith("_r"):
            twin = bodies.get(b.getName()[:-2] + "_l")
            assert twin.getMass() == b.getMass()
            assert _mirror(b.getMassCenter().to_numpy()) == \
                pytest.approx(twin.getMassCenter().to_numpy())


def test_display_geometry_is_analytic_on_every_body(saved):
    root = ET.parse(saved).getroot()
    assert not root.findall(".//Mesh")
    shapes = ("Ellipsoid", "Cylinder", "Brick", "Sphere")
    for body in root.iter("Body"):
        found = [el for s in shapes for el in body.iter(s)]
        assert found, f"body {body.get('name')} has no display geometry"


def _random_pose(rng, names):
    """Coordinates uniform over the central 60 % of each range; pelvis within 0.5 m."""
    q = {}
    for n in names:
        lo, hi = bm.coordinate_range(n)
        centre, half = (lo + hi) / 2, 0.3 * (hi - lo)
        if n in bm.TRANSLATIONAL_COORDINATES:
            centre, half = {"pelvis_tx": 0.0, "pelvis_ty": 0.95, "pelvis_tz": 0.0}[n], 0.5
        q[n] = rng.uniform(centre - half, centre + half)
    return q


def test_opensim_ik_recovers_random_poses_from_the_models_own_markers(saved):
    model, state = _loaded(saved)
    cs = model.getCoordinateSet()
    names = [cs.get(i).getName() for i in range(cs.getSize())]
    markers = [model.getMarkerSet().get(i).getName() for i in range(model.getMarkerSet().getSize())]
    rng = np.random.default_rng(2024)
    poses = [_random_pose(rng, names) for _ in range(6)]

    table = osim.TimeSeriesTableVec3()
    table.setColumnLabels(markers)
    for k, q in enumerate(poses):
        pos = _markers_at(model, q)
        table.appendRow(0.1 * k, osim.RowVectorVec3([osim.Vec3(*pos[m]) for m in markers]))
    table.addTableMetaDataString("Units", "m")
    weights = osim.SetMarkerWeights()
    for m in markers:
        weights.cloneAndAppend(osim.MarkerWeight(m, 1.0))
    state = model.initSystem()
    solver = osim.InverseKinematicsSolver(model, osim.MarkersReference(table, weights),
                                          osim.SimTKArrayCoordinateReference(), math.inf)
    solver.setAccuracy(1e-8)
    worst_deg, worst_mm = 0.0, 0.0
    for k, q in enumerate(poses):
        # every pose is solved on its own from a neutral guess (mid-range, pelvis at rest)
        for n in names:
            c = cs.get(n)
            guess = c.getDefaultValue() if n in bm.TRANSLATIONAL_COORDINATES else \
                0.5 * (c.getRangeMin() + c.getRangeMax())
            c.setValue(state, guess, False)
        state.setTime(0.1 * k)
        solver.assemble(state)
        for n in names:
            err = abs(cs.get(n).getValue(state) - q[n])
            if n in bm.TRANSLATIONAL_COORDINATES:
                worst_mm = max(worst_mm, err * 1000)
                assert err < 1e-4, f"pose {k} {n}: {err * 1000:.4f} mm"
            else:
                worst_deg = max(worst_deg, math.degrees(err))
                assert math.degrees(err) < 0.1, f"pose {k} {n}: {math.degrees(err):.4f} deg"
        marker_errors = osim.SimTKArrayDouble()
        solver.computeCurrentMarkerErrors(marker_errors)
        assert marker_errors.size() == len(markers)
        assert max(marker_errors.getElt(i) for i in range(marker_errors.size())) < 1e-5


def test_marker_positions_reject_unknown_coordinates_and_missing_files(saved, tmp_path):
    with pytest.raises(InputError, match="no coordinate named"):
        bm.marker_positions(saved, {"knee_flexion_r": 0.3})
    with pytest.raises(InputError, match="not found"):
        bm.marker_positions(tmp_path / "absent.osim", {})


@pytest.mark.parametrize("kwargs", [dict(sex="x"), dict(height=-1.0), dict(mass=0.0),
                                    dict(height="tall")])
def test_build_model_rejects_bad_subjects(kwargs):
    with pytest.raises(InputError):
        bm.build_model(**kwargs)


def test_save_model_is_atomic_and_checks_the_suffix(tmp_path):
    target = tmp_path / "model.osim"
    target.write_text("earlier result")
    with pytest.raises(KinevidError):
        bm.save_model(bm.build_model(), tmp_path / "model.txt")
    assert target.read_text() == "earlier result"
    bm.write_builtin_model(target, 1.80, 80.0, "f")
    model, state = _loaded(target)
    assert model.getTotalMass(state) == pytest.approx(80.0, rel=1e-9)
    assert [p.name for p in tmp_path.iterdir()] == ["model.osim"]
