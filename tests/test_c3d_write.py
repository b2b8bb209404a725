"""C3D writer: files written by kinevid read back by the ``c3d`` package and by ezc3d.

Real data: OpenSim's Gait2354 example (60 Hz markers, IK 0.4-1.6 s, ID, 600 Hz GRF with two
forces) and nimblephysics' JA1 running trial (250 Hz, IK in radians, Rajagopal-type knee, eight
GRF forces). Expected values are computed here from the inputs, independently of the writer:
the lab frame is rebuilt from its definition, the knee's sign from the model's coordinate range,
the body mass with OpenSim's API, the centre of pressure from the wrench's line of action.
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import pytest

import c3d
import ezc3d
import opensim as osim

from opensim_bridge.c3d_write import frame_times, resample_table, uniform_rate, write_c3d
from opensim_bridge.errors import InputError
from opensim_bridge.external_loads import find_plates
from opensim_bridge.markers import read_markers
from opensim_bridge.storage import Table, read_table
from opensim_bridge.timeseries import Event
from opensim_bridge.trc import read_trc
from opensim_bridge.vicon_outputs import joint_powers

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GAIT = DATA / "opensim-models" / "Pipelines" / "Gait2354_Simbody"
JA1 = DATA / "nimblephysics" / "data" / "osim" / "JA1GaitResults"

#: lab = LAB @ opensim for the default axes: lab X = X, lab Y = -Z, lab Z = Y.
LAB = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])

pytestmark = pytest.mark.skipif(not GAIT.is_dir() or not JA1.is_dir(),
                                reason="reference data not available")


# --------------------------------------------------------------------------- helpers
def _labels(reader: c3d.Reader, key: str) -> list[str]:
    return [s.strip() for s in reader.get(key).string_array]


def _read_c3d(path):
    """(reader, points (n, P, 5), analog (n, C, k)) with the c3d package."""
    with open(path, "rb") as fh, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reader = c3d.Reader(fh)
        frames = list(reader.read_frames(copy=True))
    points = np.stack([f[1] for f in frames])
    analog = np.stack([f[2] for f in frames])
    return reader, points, analog


def _model_info(path):
    """(knee flexion sign, mass) straight from OpenSim."""
    osim.Logger.setLevelString("error")
    model = osim.Model(str(path))
    state = model.initSystem()
    knee = model.getCoordinateSet().get("knee_angle_r")
    lo, hi = knee.getRangeMin(), knee.getRangeMax()
    return (-1 if abs(lo) > abs(hi) else 1), model.getTotalMass(state)


def _expected_cop(grf: Table, plate) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(force, CoP of the wrench in lab mm, loaded mask) for one OpenSim force.

    The CoP is where the force's line of action meets the floor plane through the given point:
    for a wrench (F at p, torque T) in OpenSim's Y-up frame the horizontal moment vanishes at
    q = p + (Tz / Fy, 0, -Tx / Fy); q = p when T is a free moment about the vertical."""
    col = lambda ident: np.column_stack([grf[ident + a] for a in "xyz"])  # noqa: E731
    force, point = col(plate.force_id), col(plate.point_id)
    torque = col(plate.torque_id) if plate.torque_id else np.zeros_like(force)
    loaded = np.abs(force[:, 1]) > 20.0
    q = point.copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        q[:, 0] = point[:, 0] + torque[:, 2] / force[:, 1]
        q[:, 2] = point[:, 2] - torque[:, 0] / force[:, 1]
    return force @ LAB.T, 1000.0 * q @ LAB.T, loaded


def _check_plates(path, grf: Table, offset: int = 0):
    """Recompute force and CoP with ezc3d; compare with the GRF input. Returns the worst CoP error."""
    plates = [p for p in find_plates(grf.labels) if (np.abs(grf[p.force_id + "y"]) > 20).any()]
    e = ezc3d.c3d(str(path), extract_forceplat_data=True)
    platforms = e["data"]["platform"]
    assert len(platforms) == len(plates) > 0
    worst = 0.0
    n = len(grf)
    for plate, pf in zip(plates, platforms):
        force, cop, loaded = _expected_cop(grf, plate)
        # A type-2 plate measures the force applied ON it: ezc3d reports minus the GRF.
        got_force = -pf["force"][:, offset:offset + n].T
        np.testing.assert_allclose(got_force, force, atol=0.1)
        got_cop = pf["center_of_pressure"][:, offset:offset + n].T
        err = np.abs(got_cop[loaded] - cop[loaded]).max()
        assert err < 1.0, f"{plate.force_id}: CoP off by {err:.3f} mm"
        worst = max(worst, float(err))
        # Every loaded CoP lies inside the plate's corners (horizontal extent).
        corners = pf["corners"]
        lo, hi = corners[:2].min(axis=1), corners[:2].max(axis=1)
        assert (got_cop[loaded, :2] >= lo).all() and (got_cop[loaded, :2] <= hi).all()
    return worst


# --------------------------------------------------------------------------- Gait2354
@pytest.fixture(scope="module")
def gait(tmp_path_factory):
    markers = read_trc(GAIT / "subject01_walk1.trc")
    ik = read_table(GAIT / "OutputReference" / "subject01_walk1_ik.mot")
    idt = read_table(GAIT / "OutputReference" / "ResultsInverseDynamics" / "inverse_dynamics.sto")
    grf = read_table(GAIT / "subject01_walk1_grf.mot")
    model = GAIT / "OutputReference" / "subject01_simbody.osim"
    powers = joint_powers(ik, resample_table(idt, ik.time))
    events = [Event("Foot Strike", 0.5, "Right"), Event("Foot Off", 0.65, "Left"),
              Event("Foot Strike", 1.05, "Left"), Event("Foot Off", 1.2, "Right")]
    path = tmp_path_factory.mktemp("c3d") / "walk.c3d"
    # The TRC's times are rounded to 1 ms; the C3D frames are at exact multiples of 1/60 s.
    times = frame_times(markers.time)
    write_c3d(path, markers=markers, angles=resample_table(ik, times),
              moments=resample_table(idt, times), powers=resample_table(powers, times),
              grf=grf, events=events, model=model, subject="subject01")
    return dict(path=path, markers=markers, ik=ik, idt=idt, grf=grf, events=events,
                model=model)


def test_gait2354_markers_read_back_by_both_readers(gait):
    markers = gait["markers"]
    expected = markers.to_units("mm").data @ LAB.T
    reader, points, analog = _read_c3d(gait["path"])
    labels = _labels(reader, "POINT:LABELS")
    assert labels[:len(markers.names)] == list(markers.names)
    assert reader.point_rate == pytest.approx(60.0)
    assert reader.get("POINT:UNITS").string_value.strip() == "mm"
    assert reader.first_frame == 1 and reader.frame_count == len(markers)
    m = len(markers.names)
    np.testing.assert_allclose(points[:, :m, :3], expected, atol=0.1)
    assert (points[:, :m, 3] == 0).all()  # valid samples, residual 0

    e = ezc3d.c3d(str(gait["path"]))
    assert e["parameters"]["POINT"]["LABELS"]["value"] == labels
    assert e["parameters"]["POINT"]["RATE"]["value"][0] == pytest.approx(60.0)
    assert e["parameters"]["POINT"]["UNITS"]["value"] == ["mm"]
    np.testing.assert_allclose(e["data"]["points"][:3, :m].transpose(2, 1, 0), expected, atol=0.1)
    assert e["header"]["points"]["frame_rate"] == pytest.approx(60.0)
    assert e["header"]["analogs"]["frame_rate"] == pytest.approx(600.0)

    # kinevid's own reader with the inverse mapping gives back OpenSim's frame, in metres.
    # (read_c3d_markers also returns the model outputs as points; keep the markers.)
    back = read_markers(gait["path"], axes="x,z,-y").select(markers.names)
    np.testing.assert_allclose(back.data, markers.to_metres().data, atol=1e-4)
    np.testing.assert_allclose(back.time, np.arange(len(markers)) / 60.0, atol=1e-9)


def test_gait2354_angles_moments_powers(gait):
    ik, idt, markers = gait["ik"], gait["idt"], gait["markers"]
    knee_sign, mass = _model_info(gait["model"])
    assert knee_sign == -1  # gait2354: knee range [-120, 10] deg, flexion negative
    e = ezc3d.c3d(str(gait["path"]))
    pp = e["parameters"]["POINT"]
    labels = pp["LABELS"]["value"]
    pts = e["data"]["points"]
    assert set(pp["ANGLES"]["value"]) >= {"LHipAngles", "RHipAngles", "LKneeAngles", "RKneeAngles",
                                          "LAnkleAngles", "RAnkleAngles", "LPelvisAngles"}
    assert "LKneeMoment" in pp["MOMENTS"]["value"] and "RHipPower" in pp["POWERS"]["value"]
    assert pp["ANGLE_UNITS"]["value"] == ["deg"]
    assert pp["MOMENT_UNITS"]["value"] == ["Nmm/kg"] and pp["POWER_UNITS"]["value"] == ["W/kg"]

    def point(label):
        return pts[:3, labels.index(label)].T  # (n, 3)

    # Frames inside the IK range (0.4-1.6 s at 60 Hz: frames 24..96).
    times = np.arange(len(markers)) / 60.0
    frames = np.flatnonzero((times > 0.4 - 1e-6) & (times < 1.6 + 1e-6))
    rows = np.searchsorted(ik.time, times[frames] - 1e-6)
    assert np.abs(ik.time[rows] - times[frames]).max() < 1e-6 and len(rows) == len(ik)
    np.testing.assert_allclose(point("RKneeAngles")[frames, 0],
                               knee_sign * ik["knee_angle_r"][rows], atol=1e-3)
    np.testing.assert_allclose(point("LHipAngles")[frames],
                               np.column_stack([ik["hip_flexion_l"], ik["hip_adduction_l"],
                                                ik["hip_rotation_l"]])[rows], atol=1e-3)
    np.testing.assert_allclose(point("RPelvisAngles")[frames, 0], -ik["pelvis_tilt"][rows],
                               atol=1e-3)
    np.testing.assert_allclose(point("RAnkleAngles")[frames, :2],
                               np.column_stack([ik["ankle_angle_r"],
                                                ik["subtalar_angle_r"]])[rows], atol=1e-3)
    assert (point("RKneeAngles")[frames, 1:] == 0).all()  # knee Y, Z: no such coordinate
    desc = dict(zip(labels, pp["DESCRIPTIONS"]["value"]))
    assert "X=-knee_angle_r" in desc["RKneeAngles"] and "no such coordinate" in desc["RKneeAngles"]
    # Physiology: in Plug-in Gait's convention a walking knee flexes positive (peak ~60 deg).
    knee = point("RKneeAngles")[frames, 0]
    assert knee.max() > 40 and knee.min() > -10
    # Outside the IK range the model outputs are missing (ezc3d: NaN).
    outside = np.flatnonzero(times < 0.39)
    assert np.isnan(point("RKneeAngles")[outside]).all()
    reader, cpoints, _ = _read_c3d(gait["path"])
    assert (cpoints[outside, labels.index("RKneeAngles"), 3] == -1).all()

    # Moments: N mm/kg, PiG sign = -(angle sign) x OpenSim moment.
    mrows = np.array([np.argmin(np.abs(idt.time - t)) for t in times[frames]])
    np.testing.assert_allclose(point("RKneeMoment")[frames, 0],
                               -knee_sign * idt["knee_angle_r_moment"][mrows] * 1000 / mass,
                               rtol=1e-5, atol=1e-2)
    np.testing.assert_allclose(point("LHipMoment")[frames, 1],
                               -idt["hip_adduction_l_moment"][mrows] * 1000 / mass,
                               rtol=1e-5, atol=1e-2)
    # Power (Z): sum of moment x angular velocity over the joint's coordinates, W/kg.
    vel = np.gradient(np.deg2rad(ik["knee_angle_r"]), ik.time)
    mom = resample_table(idt, ik.time)["knee_angle_r_moment"]
    np.testing.assert_allclose(point("RKneePower")[frames, 2], (mom * vel)[rows] / mass,
                               rtol=1e-4, atol=1e-4)


def test_gait2354_force_plates_recover_cop(gait):
    worst = _check_plates(gait["path"], gait["grf"])
    assert worst < 1.0
    reader, _, analog = _read_c3d(gait["path"])
    assert _labels(reader, "ANALOG:LABELS") == [f"{q}{i}" for i in (1, 2) for q in
                                                 ("Fx", "Fy", "Fz", "Mx", "My", "Mz")]
    assert _labels(reader, "ANALOG:UNITS") == ["N", "N", "N", "Nmm", "Nmm", "Nmm"] * 2
    assert reader.analog_rate == pytest.approx(600.0) and analog.shape[1:] == (12, 10)
    assert reader.get("FORCE_PLATFORM:USED").int16_value == 2
    assert list(reader.get("FORCE_PLATFORM:TYPE").int16_array) == [2, 2]
    # The c3d package lists a parameter's dimensions last-first: (plates, 6).
    assert reader.get("FORCE_PLATFORM:CHANNEL").int16_array.tolist() == [[1, 2, 3, 4, 5, 6],
                                                                         [7, 8, 9, 10, 11, 12]]
    # Analog channels as the c3d package reads them: Fz1 = minus the vertical GRF (plate Z down).
    grf = gait["grf"]
    fz = analog[:, 2, :].ravel()[:len(grf)]
    np.testing.assert_allclose(fz, grf["ground_force_vy"], atol=0.1)


def test_gait2354_events_and_manufacturer(gait):
    events = gait["events"]
    e = ezc3d.c3d(str(gait["path"]))
    ev = e["parameters"]["EVENT"]
    assert ev["USED"]["value"][0] == len(events)
    assert ev["LABELS"]["value"] == [x.name for x in events]
    assert ev["CONTEXTS"]["value"] == [x.context for x in events]
    times = np.asarray(ev["TIMES"]["value"])  # (2, n): minutes, seconds
    np.testing.assert_allclose(60 * times[0] + times[1], [x.time for x in events], atol=1e-6)
    assert list(ev["ICON_IDS"]["value"]) == [1, 2, 1, 2]
    assert ev["SUBJECTS"]["value"] == ["subject01"] * 4
    assert e["parameters"]["SUBJECTS"]["NAMES"]["value"] == ["subject01"]
    assert e["parameters"]["EVENT_CONTEXT"]["LABELS"]["value"] == ["Left", "Right", "General"]
    man = e["parameters"]["MANUFACTURER"]
    assert man["COMPANY"]["value"] == ["kinevid"] and man["SOFTWARE"]["value"] == ["kinevid"]
    assert man["VERSION_LABEL"]["value"][0]
    # The header's event block, as older readers see it.
    header = e["header"]["events"]
    assert list(header["events_label"][:4]) == ["RFS ", "LFO ", "LFS ", "RFO "]
    np.testing.assert_allclose(header["events_time"][:4], [x.time for x in events], atol=1e-6)

    reader, _, _ = _read_c3d(gait["path"])
    assert _labels(reader, "EVENT:LABELS") == [x.name for x in events]
    assert _labels(reader, "EVENT:CONTEXTS") == [x.context for x in events]
    assert reader.get("MANUFACTURER:SOFTWARE").string_value.strip() == "kinevid"


# --------------------------------------------------------------------------- JA1
def test_ja1_running_trial_round_trip(tmp_path):
    markers = read_trc(JA1 / "JA1Gait35.trc")
    ik = read_table(JA1 / "JA1Gait35_ik.mot")
    idt = read_table(JA1 / "JA1Gait35_id_output.sto")
    grf = read_table(JA1 / "JA1Gait35_grf.mot")
    model = JA1 / "rescaled.osim"
    assert ik.in_degrees is False
    path = tmp_path / "ja1.c3d"
    write_c3d(path, markers=markers, angles=ik, moments=idt, grf=grf, model=model,
              events=[Event("Foot Strike", 0.2, "Left")])
    knee_sign, mass = _model_info(model)
    assert knee_sign == 1  # Rajagopal-type knee, range [0, 160] deg

    e = ezc3d.c3d(str(path))
    labels = e["parameters"]["POINT"]["LABELS"]["value"]
    pts = e["data"]["points"]
    m = len(markers.names)
    assert labels[:m] == list(markers.names)
    assert e["parameters"]["POINT"]["RATE"]["value"][0] == pytest.approx(250.0)
    np.testing.assert_allclose(pts[:3, :m].transpose(2, 1, 0),
                               markers.to_units("mm").data @ LAB.T, atol=0.1)
    knee = pts[0, labels.index("RKneeAngles")]
    np.testing.assert_allclose(knee, np.rad2deg(ik["knee_angle_r"]), atol=1e-3)
    assert knee.max() > 40 and knee.min() > -10
    np.testing.assert_allclose(pts[:3, labels.index("LShoulderAngles")].T,
                               np.rad2deg(np.column_stack([ik["arm_flex_l"], ik["arm_add_l"],
                                                           ik["arm_rot_l"]])), atol=1e-3)
    np.testing.assert_allclose(pts[0, labels.index("RAnkleMoment")],
                               -idt["ankle_angle_r_moment"] * 1000 / mass, rtol=1e-5, atol=1e-2)
    assert _check_plates(path, grf) < 1.0
    assert e["header"]["analogs"]["frame_rate"] == pytest.approx(250.0)


# --------------------------------------------------------------------------- missing data
def _small_series(n=50, rate=100.0, t0=0.0):
    from opensim_bridge.timeseries import KeypointSeries

    rng = np.random.default_rng(3)
    t = t0 + np.arange(n) / rate
    data = rng.uniform(-1, 1, size=(n, 4, 3)) + np.array([0, 1, 0])
    return KeypointSeries(t, ["A", "B", "C", "D"], data, units="m", source="generated")


def test_missing_markers_are_written_missing(tmp_path):
    series = _small_series()
    data = series.data.copy()
    data[5:9, 1] = np.nan
    data[:, 3] = np.nan            # a marker never seen
    data[0, 0, 2] = np.nan         # one NaN coordinate makes the whole sample missing
    series = series.copy(data=data)
    residuals = np.full((len(series), 4), 3.2)
    path = write_c3d(tmp_path / "gaps.c3d", markers=series, residuals=residuals, axes="none")
    _, points, _ = _read_c3d(path)
    missing = np.isnan(data).any(axis=2)
    assert (points[..., 3][missing] == -1).all()
    assert (points[..., 3][~missing] == 3).all()       # 1 mm resolution (POINT:SCALE -1)
    assert (points[..., :3][missing] == 0).all()       # zeros, not the previous frame's values
    np.testing.assert_allclose(points[..., :3][~missing], 1000 * data[~missing], atol=1e-3)
    e = ezc3d.c3d(str(path))
    got = e["data"]["points"][:3].transpose(2, 1, 0)
    assert np.isnan(got[missing]).all() and np.isfinite(got[~missing]).all()


def test_axes_none_keeps_opensim_frame_and_plate_points_down(tmp_path):
    markers = read_trc(GAIT / "subject01_walk1.trc")
    grf = read_table(GAIT / "subject01_walk1_grf.mot")
    path = write_c3d(tmp_path / "yup.c3d", markers=markers, grf=grf, axes="none")
    e = ezc3d.c3d(str(path), extract_forceplat_data=True)
    m = len(markers.names)
    np.testing.assert_allclose(e["data"]["points"][:3, :m].transpose(2, 1, 0),
                               markers.to_units("mm").data, atol=0.1)
    pf = e["data"]["platform"][0]
    corners = pf["corners"]
    x, y = corners[:, 0] - corners[:, 1], corners[:, 0] - corners[:, 3]
    z = np.cross(x, y)
    assert np.allclose(z / np.linalg.norm(z), [0, -1, 0])  # plate Z down = -OpenSim Y
    force = np.column_stack([grf["ground_force_v" + a] for a in "xyz"])
    np.testing.assert_allclose(-pf["force"][:, :len(grf)].T, force, atol=0.1)


def test_model_outputs_without_markers_use_motion_times(tmp_path):
    ik = read_table(GAIT / "OutputReference" / "subject01_walk1_ik.mot")
    path = write_c3d(tmp_path / "angles.c3d", angles=ik)
    reader, points, _ = _read_c3d(path)
    assert reader.point_rate == pytest.approx(60.0)
    assert reader.first_frame == 25  # 0.4 s at 60 Hz: frame 25 (frame 1 = 0 s)
    assert reader.get("POINT:MOMENTS") is None
    labels = _labels(reader, "POINT:LABELS")
    assert labels == _labels(reader, "POINT:ANGLES")
    # Knee sign without a model: from the data (gait2354 knee mostly negative = flexed).
    np.testing.assert_allclose(points[:, labels.index("LKneeAngles"), 0],
                               -ik["knee_angle_l"], atol=1e-3)


# --------------------------------------------------------------------------- bad input
def test_non_uniform_time_is_rejected(tmp_path):
    series = _small_series()
    t = series.time.copy()
    t[20:] += 0.005  # a dropped half frame
    with pytest.raises(InputError, match="not uniformly sampled.*resampled"):
        write_c3d(tmp_path / "x.c3d", markers=series.copy(time=t))
    # Times rounded to 1 ms at 60 Hz (as in Gait2354's TRC) are uniform.
    assert uniform_rate(np.round(np.arange(151) / 60.0, 3)) == 60.0


def test_mismatched_tables_are_rejected(tmp_path):
    markers = read_trc(GAIT / "subject01_walk1.trc")
    ik = read_table(GAIT / "OutputReference" / "subject01_walk1_ik.mot")
    with pytest.raises(InputError, match="73 rows but there are 151 frames"):
        write_c3d(tmp_path / "x.c3d", markers=markers, angles=ik)
    grf = read_table(GAIT / "subject01_walk1_grf.mot")
    odd = grf.copy(time=grf.time * 600 / 250)   # 250 Hz: not a multiple of 60 Hz
    with pytest.raises(InputError, match="not a whole multiple"):
        write_c3d(tmp_path / "x.c3d", markers=markers, grf=odd)
    with pytest.raises(InputError, match="residuals have shape"):
        write_c3d(tmp_path / "x.c3d", markers=markers, residuals=np.zeros((3, 3)))
    with pytest.raises(InputError, match="reflection"):
        write_c3d(tmp_path / "x.c3d", markers=markers, axes="x,y,-z")
    with pytest.raises(InputError, match="before time 0"):
        write_c3d(tmp_path / "x.c3d", markers=_small_series(t0=-0.1))
    with pytest.raises(InputError, match="context"):
        write_c3d(tmp_path / "x.c3d", markers=markers, events=[Event("Foot Strike", 1.0, "Up")])
    assert not (tmp_path / "x.c3d").exists()


def test_failed_write_leaves_earlier_file_and_no_temporaries(tmp_path):
    path = tmp_path / "out.c3d"
    write_c3d(path, markers=_small_series())
    before = path.read_bytes()
    series = _small_series()
    bad = series.copy(time=series.time ** 1.5 + 0.01)  # non-uniform
    with pytest.raises(InputError):
        write_c3d(path, markers=bad)
    long_name = series.copy(names=["A" * 300, "B", "C", "D"])  # too long for a C3D label
    with pytest.raises(InputError, match="255"):
        write_c3d(path, markers=long_name)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.c3d"]


# --------------------------------------------------------------------------- CLI
def test_cli_from_opensim(tmp_path, capsys):
    from inference.commands.c3d_export import add_parsers

    parser = argparse.ArgumentParser(prog="kinevid c3d")
    add_parsers(parser.add_subparsers(dest="cmd", required=True))
    out = tmp_path / "walk.c3d"
    args = parser.parse_args([
        "from-opensim", "--markers", str(GAIT / "subject01_walk1.trc"),
        "--ik", str(GAIT / "OutputReference" / "subject01_walk1_ik.mot"),
        "--id", str(GAIT / "OutputReference" / "ResultsInverseDynamics" / "inverse_dynamics.sto"),
        "--grf", str(GAIT / "subject01_walk1_grf.mot"), "--mass", "72.6",
        "--event", "Foot Strike,Right,0.5", "--event", "Foot Off,Left,0.65", "-o", str(out)])
    assert args.func(args) == 0
    assert "wrote" in capsys.readouterr().out
    e = ezc3d.c3d(str(out), extract_forceplat_data=True)
    pp = e["parameters"]["POINT"]
    assert pp["MOMENT_UNITS"]["value"] == ["Nmm/kg"]
    assert "RKneePower" in pp["POWERS"]["value"]
    assert e["parameters"]["EVENT"]["LABELS"]["value"] == ["Foot Strike", "Foot Off"]
    assert len(e["data"]["platform"]) == 2

    bad = parser.parse_args(["from-opensim", "--event", "Foot Strike,Left,soon",
                             "--markers", str(GAIT / "subject01_walk1.trc"), "-o", str(out)])
    with pytest.raises(InputError, match="not a number"):
        bad.func(bad)
    none = parser.parse_args(["from-opensim", "-o", str(out)])
    with pytest.raises(InputError, match="at least one"):
        none.func(none)


def test_ntsc_rate_many_points_and_analog_grid(tmp_path):
    """59.94 Hz with 10 analog samples per frame (ezc3d truncates ANALOG:RATE / POINT:RATE, so
    the float32 rates must divide exactly) and 300 markers (POINT:LABELS2 beyond 255)."""
    from opensim_bridge.timeseries import KeypointSeries

    rate, n, k = 60000 / 1001, 40, 10
    t = (5 + np.arange(n)) / rate
    rng = np.random.default_rng(1)
    series = KeypointSeries(t, [f"M{i}" for i in range(300)],
                            rng.normal(size=(n, 300, 3)) + [0, 1, 0], source="generated")
    tg = t[0] + np.arange(n * k) / (rate * k)
    cols = [f"ground_force_v{a}" for a in "xyz"] + [f"ground_force_p{a}" for a in "xyz"]
    grf = np.zeros((n * k, 6))
    grf[:, 1] = 700.0
    grf[:, 3] = 0.3 + 0.1 * np.sin(10 * tg)
    grf[:, 5] = 0.1
    path = write_c3d(tmp_path / "ntsc.c3d", markers=series, grf=Table(tg, cols, grf))
    e = ezc3d.c3d(str(path), extract_forceplat_data=True)
    pp = e["parameters"]["POINT"]
    assert pp["LABELS"]["value"] + pp["LABELS2"]["value"] == list(series.names)
    assert pp["RATE"]["value"][0] == pytest.approx(rate, rel=1e-6)
    assert e["header"]["points"]["first_frame"] == 5  # ezc3d counts from 0: frame 6 = 5/rate s
    np.testing.assert_allclose(e["data"]["points"][:3].transpose(2, 1, 0),
                               1000 * series.data @ LAB.T, atol=1e-3)
    cop = e["data"]["platform"][0]["center_of_pressure"]
    assert cop.shape[1] == n * k
    np.testing.assert_allclose(cop[0], 1000 * grf[:, 3], atol=1e-3)
    np.testing.assert_allclose(cop[1], -1000 * grf[:, 5], atol=1e-3)
    reader, points, analog = _read_c3d(path)
    assert reader.first_frame == 6 and len(points) == n and analog.shape[1:] == (6, k)


def test_grf_off_the_analog_grid_is_resampled_for_writing(tmp_path):
    from opensim_bridge.c3d_write import grf_on_analog_grid

    markers = read_trc(GAIT / "subject01_walk1.trc")
    grf = read_table(GAIT / "subject01_walk1_grf.mot")
    shifted = grf.copy(time=grf.time + 0.0008)  # half an analog sample late
    with pytest.raises(InputError, match="do not fall on the analog"):
        write_c3d(tmp_path / "x.c3d", markers=markers, grf=shifted)
    assert grf_on_analog_grid(grf, frame_times(markers.time)) is grf  # already on the grid
    fixed = grf_on_analog_grid(shifted, frame_times(markers.time))
    assert len(fixed) == len(markers) * 10
    np.testing.assert_allclose(fixed.time, np.arange(len(fixed)) / 600.0, atol=1e-12)
    # Within half an analog sample of its ends the GRF's end value holds; beyond, zero (unloaded).
    assert fixed["ground_force_vy"][0] == shifted["ground_force_vy"][0]
    after = fixed.time > shifted.time[-1] + 1 / 1200
    assert after.sum() >= 5 and (fixed.data[after] == 0).all()
    np.testing.assert_allclose(fixed["ground_force_vy"][1:1400],
                               np.interp(fixed.time[1:1400], shifted.time,
                                         shifted["ground_force_vy"]), atol=1e-9)
    path = write_c3d(tmp_path / "x.c3d", markers=markers, grf=fixed)
    assert _check_plates(path, fixed) < 1.0


def test_resample_table_keeps_gaps_and_range():
    t = np.arange(10) * 0.1
    col = np.arange(10.0)
    col[4] = np.nan
    table = Table(t, ["q"], col[:, None], in_degrees=True)
    out = resample_table(table, np.array([-0.2, 0.0, 0.25, 0.3, 0.35, 0.5, 0.55, 0.9, 1.2]))
    np.testing.assert_allclose(out["q"], [np.nan, 0, 2.5, 3, np.nan, 5, 5.5, 9, np.nan])
