"""GRF estimated from kinematics (opensim_bridge.grf_estimate, opensim_bridge.contact) against
force plates on real trials, ID with the estimate, generated contact data and bad input."""
from __future__ import annotations

import warnings

import dataclasses

import numpy as np
import pytest
from conftest import data_path

from opensim_bridge.contact import (
    ContactSettings,
    detect_contacts,
    events_from_grf,
    match_events,
)
from opensim_bridge.errors import InputError
from opensim_bridge.external_loads import (
    build_external_loads,
    find_plates,
    load_external_loads,
    read_grf,
    side_from_name,
)
from opensim_bridge.grf_estimate import (
    estimate_and_run_id,
    estimate_grf,
    grf_rmse,
    measured_foot_forces,
    plate_sides,
)
from opensim_bridge.inverse_dynamics import run_id
from opensim_bridge.osim_model import load_model
from opensim_bridge.storage import read_table

GAIT = ("opensim-models", "Pipelines", "Gait2354_Simbody")
JA1 = ("nimblephysics", "data", "osim", "JA1GaitResults")


def gait_files():
    return (data_path(*GAIT, "OutputReference", "subject01_simbody.osim"),
            data_path(*GAIT, "OutputReference", "subject01_walk1_ik.mot"),
            data_path(*GAIT, "subject01_walk1_grf.xml"))


@pytest.fixture(scope="module")
def gait_estimate():
    model, motion, _ = gait_files()
    return estimate_grf(model, motion)


def reference_events(loads_xml, time):
    _, grf_path = load_external_loads(loads_xml)
    return events_from_grf(read_grf(grf_path), plate_sides(loads_xml), threshold_n=20.0,
                           start=time[0], end=time[-1])


# --------------------------------------------------------------------------- Gait2354 walk
def test_walk_forces_per_foot_match_the_plates(gait_estimate):
    est = gait_estimate
    _, _, loads = gait_files()
    measured = measured_foot_forces(loads, est.time)
    err = grf_rmse(est, measured)
    for side in ("r", "l"):
        assert err[side][1] < 10.0, f"vertical RMSE {side}: {err[side][1]:.1f}% BW"
        assert err[side][0] < 5.0, f"anterior-posterior RMSE {side}: {err[side][0]:.1f}% BW"
    # Newton on a treadmill: over the trial the mean vertical force is about body weight.
    assert est.total_force[:, 1].mean() == pytest.approx(est.body_weight, rel=0.05)


def test_walk_events_within_two_frames_of_force_plate_events(gait_estimate):
    est = gait_estimate
    _, _, loads = gait_files()
    ref = reference_events(loads, est.time)
    # The IK covers 0.4-1.6 s: right strike, left off, left strike, right off lie inside.
    assert [(e.name, e.context) for e in ref] == [
        ("Foot Strike", "Right"), ("Foot Off", "Left"), ("Foot Strike", "Left"),
        ("Foot Off", "Right")]
    frame = float(np.median(np.diff(est.time)))
    for r, got in match_events(est.events, ref):
        assert got is not None, f"{r} not detected"
        assert abs(got.time - r.time) <= 2 * frame + 1e-9, (r, got)
    assert len(est.events) == len(ref)
    assert not est.flight.any()  # walking: always a foot down


def test_split_conserves_force_and_cop_runs_heel_to_toe(gait_estimate):
    est = gait_estimate
    c = est.contact.contact
    both = est.forces["r"] + est.forces["l"]
    np.testing.assert_allclose(both, est.total_force, atol=1e-9)
    seen = 0
    for side in ("r", "l"):
        assert (est.forces[side][:, 1] >= 0).all()
        assert not est.forces[side][~c[side]].any()
        assert np.all(est.cop[side][c[side], 1] == est.floor_height)
        # Heel first, toe last: at the strike the CoP is under the heel point, at foot off
        # under the toe point, and in between it moves forward along the foot.
        heel, toe = est.points[side][:, 0][:, [0, 2]], est.points[side][:, 1][:, [0, 2]]
        cop = est.cop[side][:, [0, 2]]
        foot = np.linalg.norm(toe - heel, axis=1)
        along = np.einsum("ij,ij->i", cop - heel, toe - heel) / foot ** 2
        for iv in est.contact.intervals_of(side):
            if iv.starts_in_trial:
                assert along[iv.start] < 0.1
            if iv.ends_in_trial:
                assert along[iv.end] > 0.9
            idx = np.arange(iv.start, iv.end + 1)
            assert np.all(np.diff(along[idx]) > -0.02)  # forward, up to smoothing wiggle
            seen += 1
    assert seen == 3  # right stance; left stance cut by the start, left strike near the end


def test_grf_file_follows_opensim_convention_and_id_runs(tmp_path):
    model, motion, loads = gait_files()
    res = estimate_and_run_id(model, motion, tmp_path, height_m=1.8034)
    assert res.grf_mot == tmp_path / "grf.mot" and res.grf_mot.is_file()
    labels = read_table(res.grf_mot).labels
    plates = find_plates(labels)
    assert sorted(p.force_id for p in plates) == ["ground_force_l_v", "ground_force_r_v"]
    assert {p.force_id: side_from_name(p.base) for p in plates} == {
        "ground_force_r_v": "r", "ground_force_l_v": "l"}
    assert all(p.torque_id == p.force_id.replace("force", "torque")[:-1] for p in plates)
    # kinevid's automatic loads assign the file's plates to the right feet by name.
    _, assign = build_external_loads(res.grf_mot, load_model(model), motion)
    assert {a.plate.force_id: (a.body, a.rule) for a in assign} == {
        "ground_force_r_v": ("calcn_r", "name"), "ground_force_l_v": ("calcn_l", "name")}
    assert res.external_loads_xml.is_file() and res.id.id_sto.is_file()

    cols = {r.column for r in res.residuals}
    assert cols == {"pelvis_tilt_moment", "pelvis_list_moment", "pelvis_rotation_moment",
                    "pelvis_tx_force", "pelvis_ty_force", "pelvis_tz_force"}
    bw = res.estimate.body_weight
    for r in res.residuals:
        ref = bw if r.unit == "N" else bw * 1.8034
        assert r.rms_pct == pytest.approx(100 * r.rms / ref)
        assert r.peak >= r.rms
    # Forces that obey Newton for this body leave a small vertical residual at the pelvis.
    ty = next(r for r in res.residuals if r.column == "pelvis_ty_force")
    assert ty.rms_pct < 5.0

    measured = run_id(model, motion, tmp_path / "measured", loads=loads).table
    est_tab = res.id.table
    for name in ("hip_flexion", "knee_angle", "ankle_angle"):
        for side in ("r", "l"):
            col = f"{name}_{side}_moment"
            err = np.sqrt(np.mean((est_tab[col] - np.interp(est_tab.time, measured.time,
                                                            measured[col])) ** 2))
            assert 100 * err / (bw * 1.8034) < 7.0, f"{col}: {err:.1f} N m"


def test_table_input_matches_file_input(gait_estimate, tmp_path):
    model, motion, _ = gait_files()
    table = read_table(motion)
    est = estimate_grf(model, table)
    np.testing.assert_allclose(est.total_force, gait_estimate.total_force)
    assert est.events == gait_estimate.events


# --------------------------------------------------------------------------- JA1 sprint
def test_sprint_contacts_flight_and_events():
    model = data_path(*JA1, "rescaled.osim")
    motion = data_path(*JA1, "JA1Gait35_ik_by_opensim.mot")
    loads = data_path(*JA1, "JA1Gait35_external_forces.xml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 6 Hz smears the short contacts into flight: warned
        est = estimate_grf(model, motion)
    ref = reference_events(loads, est.time)
    assert len(ref) == 8  # four contacts on the plates
    frame = float(np.median(np.diff(est.time)))
    for r, got in match_events(est.events, ref):
        assert got is not None and abs(got.time - r.time) <= 4 * frame + 1e-9, (r, got)
    # Within the plates' window, loaded plates and detected contact agree frame by frame.
    measured = measured_foot_forces(loads, est.time)
    window = (est.time > ref[0].time - 0.05) & (est.time < ref[-1].time + 0.05)
    for side in ("r", "l"):
        loaded = measured[side][:, 1] > 20.0
        agree = np.mean(loaded[window] == est.contact.contact[side][window])
        assert agree > 0.9, f"{side}: {agree:.2f}"
    assert est.flight[window].sum() > 50  # a sprint has flight phases
    assert not est.forces["r"][est.flight].any() and not est.forces["l"][est.flight].any()


# --------------------------------------------------------------------------- generated data
def _synthetic_gait(belt: float, rate: float = 100.0, cycle: float = 1.0, stance: float = 0.6,
                    speed: float = 1.2):
    """Heel/toe trajectories of two feet with known contacts: during stance the foot is on the
    floor and moves with the ground (-belt), in swing it lifts and moves forward so that it
    advances ``speed * cycle`` per cycle relative to the ground."""
    time = np.arange(0.0, 3.0, 1.0 / rate)
    feet, truth = {}, {}
    for side, phase in (("r", 0.0), ("l", 0.5)):
        u = ((time / cycle) + phase) % 1.0
        on = u < stance
        rel = np.cumsum(np.where(on, 0.0, speed / (1 - stance))) / rate
        x = rel - belt * time
        lift = np.where(on, 0.0, 0.08 * np.sin(np.pi * (u - stance) / (1 - stance)) ** 2)
        heel = np.stack([x, 0.03 + lift, np.full_like(x, 0.1 if side == "r" else -0.1)], 1)
        toe = heel + np.array([0.2, -0.01, 0.0])
        feet[side] = np.stack([heel, toe], axis=1)
        truth[side] = on
    return time, feet, truth


@pytest.mark.parametrize("belt", [0.0, 1.2])
def test_contact_on_generated_gait_overground_and_treadmill(belt):
    time, feet, truth = _synthetic_gait(belt)
    # The body progresses at 1.2 m/s relative to the ground: in place on the treadmill.
    com = np.stack([(1.2 - belt) * time, np.ones_like(time), np.zeros_like(time)], 1)
    res = detect_contacts(time, feet, com)
    assert res.ground_velocity[0] == pytest.approx(-belt, abs=0.05)
    assert res.progression_speed == pytest.approx(1.2, abs=0.15)
    for side in ("r", "l"):
        # Edges of contact within two frames of the truth.
        mismatch = res.contact[side] != truth[side]
        assert mismatch.mean() < 0.05
        true_edges = np.flatnonzero(np.diff(truth[side].astype(int)))
        got_edges = np.flatnonzero(np.diff(res.contact[side].astype(int)))
        assert len(true_edges) == len(got_edges)
        assert np.max(np.abs(true_edges - got_edges)) <= 2
    names = {(e.name, e.context) for e in res.events}
    assert names == {("Foot Strike", "Right"), ("Foot Off", "Right"),
                     ("Foot Strike", "Left"), ("Foot Off", "Left")}


# --------------------------------------------------------------------------- bad input
def test_motion_without_model_coordinates_is_an_error():
    model, motion, _ = gait_files()
    table = read_table(motion)
    keep = [x for x in table.labels if not x.startswith("knee_angle")]
    with pytest.raises(InputError, match="knee_angle_r"):
        estimate_grf(model, table.select(keep))


def test_too_short_trial_is_an_error():
    model, motion, _ = gait_files()
    table = read_table(motion)
    short = table.copy(time=table.time[:10], data=table.data[:10])
    with pytest.raises(InputError, match="too short"):
        estimate_grf(model, short)


def test_cutoff_above_nyquist_is_an_error():
    model, motion, _ = gait_files()
    with pytest.raises(InputError, match="Nyquist"):
        estimate_grf(model, motion, lowpass_hz=40.0)


def test_no_contact_detected_is_an_error():
    model, motion, _ = gait_files()
    # no point is ever that low, and the support fallback is off
    never = ContactSettings(height_enter_m=0.0, height_exit_m=0.0, support_fraction=0.0)
    with pytest.raises(InputError, match="no foot contact"):
        estimate_grf(model, motion, contact=never)


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError):
        ContactSettings(height_enter_m=0.1, height_exit_m=0.05)
    model, motion, _ = gait_files()
    with pytest.raises(ValueError, match="transition"):
        estimate_grf(model, motion, transition="linear")


def _jittery_stance(raise_left_m=0.0, seconds=2.0, rate=60.0, wobble_m=0.04, seed=0):
    """Feet standing still but tracked with video-like wobble: a 3 Hz horizontal swing of a
    few centimetres (0.75 m/s peak, too fast to count as still) plus jitter."""
    rng = np.random.default_rng(seed)
    t = np.arange(0, seconds, 1 / rate)
    feet = {}
    for k, (side, z) in enumerate((("r", 0.1), ("l", -0.1))):
        base = np.array([[0.0, 0.02, z], [0.2, 0.02, z]])
        if side == "l":
            base[:, 1] += raise_left_m
        swing = wobble_m * np.sin(2 * np.pi * 3.0 * t + k)[:, None, None] * np.array([1.0, 0, 0])
        feet[side] = base[None] + swing + rng.normal(0, 0.003, (t.size, 2, 3))
    com = np.tile([0.1, 1.0, 0.0], (t.size, 1))
    return t, feet, com


@pytest.mark.parametrize("raise_left_m,expect", [(0.0, {"r", "l"}), (0.12, {"r"})])
def test_support_fallback_gives_a_carried_body_a_foot(raise_left_m, expect):
    from opensim_bridge.contact import detect_contacts, fill_supported_gaps

    t, feet, com = _jittery_stance(raise_left_m)
    raw = detect_contacts(t, feet, com)
    gaps = ~(raw.contact["r"] | raw.contact["l"])
    assert gaps.sum() > 0.1 * t.size          # the wobble hides part of the stance
    bw = 70 * 9.81
    fixed, filled = fill_supported_gaps(raw, np.full(t.size, bw), bw, feet=feet)
    assert filled == gaps.sum()
    assert (fixed.contact["r"] | fixed.contact["l"]).all()
    feet_used = {s for s in ("r", "l") if fixed.contact[s][gaps].any()}
    assert feet_used == expect
    # every contact frame has a contact point
    for s in ("r", "l"):
        assert (fixed.point_contact[s].any(axis=1) == fixed.contact[s]).all()
    # free fall (no force) is a flight and stays one
    same, none = fill_supported_gaps(raw, np.zeros(t.size), bw, feet=feet)
    assert none == 0 and same is raw


def test_support_fallback_keeps_short_flights_of_a_run():
    from opensim_bridge.contact import ContactResult, ContactSettings, fill_supported_gaps

    t = np.arange(0, 1, 0.01)
    contact = {"r": (t % 0.5) < 0.2, "l": ((t + 0.25) % 0.5) < 0.2}   # 0.05 s flights
    point = {s: np.stack([c, c], 1) for s, c in contact.items()}
    heights = {s: np.zeros((t.size, 2)) for s in ("r", "l")}
    raw = ContactResult(t, contact, point, [], [], np.zeros(2), 4.0, (1.0, 2.0), heights,
                        heights)
    bw = 700.0
    # the force filter smears stance force into the flights: still a run's flight at 4 m/s
    out, filled = fill_supported_gaps(raw, np.full(t.size, bw), bw, ContactSettings())
    assert filled == 0
    # the same pattern at walking speed cannot be flight
    slow = dataclasses.replace(raw, progression_speed=1.2)
    _, filled_slow = fill_supported_gaps(slow, np.full(t.size, bw), bw, ContactSettings())
    assert filled_slow == (~(contact["r"] | contact["l"])).sum()
