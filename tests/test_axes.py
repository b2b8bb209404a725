"""Axis mappings to OpenSim's Y-up frame: parsing, reflections refused, round trips, and the
detection of the vertical and the walking direction on real upright subjects."""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

from conftest import data_path
from opensim_bridge.axes import (AxisMapping, IDENTITY, apply_axes, auto_mapping, detect_up_axis,
                                 parse_axes)
from opensim_bridge.c3d_markers import read_c3d_markers
from opensim_bridge.errors import InputError
from opensim_bridge.timeseries import KeypointSeries
from opensim_bridge.trc import read_trc

SAMPLES = ("c3d-org-samples", "tests", "c3d_org_samples")
NIMBLE_C3D = ("nimblephysics", "data", "c3d")
GAIT2354_TRC = ("opensim-models", "Pipelines", "Gait2354_Simbody", "subject01_walk1.trc")
JA1_TRC = ("nimblephysics", "data", "osim", "JA1GaitResults", "JA1Gait35.trc")


def all_signed_permutations():
    for axes in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            yield AxisMapping(axes, signs)


ROTATIONS = [m for m in all_signed_permutations() if round(np.linalg.det(m.matrix)) == 1]
REFLECTIONS = [m for m in all_signed_permutations() if round(np.linalg.det(m.matrix)) == -1]


# ----------------------------------------------------------------------------- parsing
def test_there_are_24_rotations_and_24_reflections():
    assert len(ROTATIONS) == len(REFLECTIONS) == 24


def test_parse_reads_each_axis_and_sign():
    m = parse_axes("x,z,-y")
    np.testing.assert_array_equal(m.matrix @ np.array([1.0, 2.0, 3.0]), [1.0, 3.0, -2.0])
    assert parse_axes(" X, +Z ,-y ") == m
    assert parse_axes("none") == parse_axes("x,y,z") == IDENTITY
    assert parse_axes(m) is m


@pytest.mark.parametrize("text", ["x,x,y", "x,y", "x,y,z,x", "a,b,c", "x;z;-y", "--x,z,y", ""])
def test_parse_rejects_malformed_mappings(text):
    with pytest.raises(InputError, match="axis mapping") as err:
        parse_axes(text, "trial.c3d")
    assert err.value.path == "trial.c3d"


@pytest.mark.parametrize("mapping", REFLECTIONS, ids=str)
def test_reflections_are_rejected(mapping):
    with pytest.raises(InputError, match="reflection"):
        parse_axes(str(mapping))
    with pytest.raises(InputError, match="reflection"):
        parse_axes(mapping)


@pytest.mark.parametrize("mapping", ROTATIONS, ids=str)
def test_mapping_round_trips(mapping):
    r = mapping.matrix
    np.testing.assert_array_equal(r @ r.T, np.eye(3))
    assert parse_axes(str(mapping)) == mapping
    assert AxisMapping.from_matrix(r) == mapping
    rng = np.random.default_rng(7)
    data = rng.normal(size=(5, 4, 3))
    data[1, 2] = np.nan
    series = KeypointSeries(np.arange(5) * 0.01, list("abcd"), data, source="gen")
    there = apply_axes(series, str(mapping))
    back = apply_axes(there, mapping.inverse())
    np.testing.assert_allclose(back.data, data, rtol=0, atol=1e-15, equal_nan=True)
    assert np.array_equal(np.isnan(there.data), np.isnan(data))
    assert there.names == series.names and np.array_equal(there.time, series.time)
    # lengths (and so the body's shape) are kept
    np.testing.assert_allclose(np.linalg.norm(there.data, axis=2), np.linalg.norm(data, axis=2))


def test_apply_refuses_2d_points():
    s = KeypointSeries([0.0], ["a"], np.zeros((1, 1, 2)), units="px", source="kp.json")
    with pytest.raises(InputError, match="3D"):
        apply_axes(s, "x,z,-y")


# ----------------------------------------------------------------------------- detection
def test_opensim_trc_is_y_up():
    assert detect_up_axis(read_trc(data_path(*GAIT2354_TRC))) == (1, 1)


# Each was looked at (a middle frame drawn in the three lab planes) and is an upright person.
Z_UP = [
    (*NIMBLE_C3D, "cmu_02_05.c3d"),
    (*NIMBLE_C3D, "cmu_dribble_shoot_basketball.c3d"),
    (*SAMPLES, "sample_00", "Motion Analysis Corporation", "Walk1.c3d"),
    (*SAMPLES, "sample_00", "Motion Analysis Corporation", "Sample_Jump2.c3d"),
    (*SAMPLES, "sample_00", "Innovative Sports Training", "Static Pose.c3d"),
    (*SAMPLES, "sample_00", "Innovative Sports Training", "Gait with EMG.c3d"),
    (*SAMPLES, "sample_26", "Capture0002.c3d"),
    (*SAMPLES, "sample_32", "vicon_zerowire.c3d"),   # with 16 unlabelled ghost points
    ("nimblephysics", "data", "osim", "JA1GaitResults", "original.c3d"),  # sprint: long strides
]
Y_UP = [
    (*NIMBLE_C3D, "squat.c3d"),
    (*NIMBLE_C3D, "nick_freeform_001.c3d"),
    (*SAMPLES, "sample_00", "NexGen Ergonomics", "test1.c3d"),
]


@pytest.mark.filterwarnings("ignore:.*POINT labels renamed")
@pytest.mark.parametrize("parts,up", [(p, (2, 1)) for p in Z_UP] + [(p, (1, 1)) for p in Y_UP],
                         ids=lambda p: p[-1] if isinstance(p, tuple) and isinstance(p[0], str)
                         else str(p))
def test_detects_the_vertical_of_upright_people(parts, up):
    assert detect_up_axis(read_c3d_markers(data_path(*parts))) == up


@pytest.mark.parametrize("mapping", ROTATIONS, ids=str)
def test_detection_follows_any_rotation_of_the_lab(mapping):
    """Turn an OpenSim (Y-up) trial into every possible lab frame: the vertical is found, and for
    a trial that travels (JA1 runs 11 m along +X) auto_mapping undoes the turn exactly."""
    gait = read_trc(data_path(*GAIT2354_TRC))
    lab = apply_axes(gait, mapping)            # lab = R @ opensim, so opensim Y is lab row...
    r = mapping.matrix
    up_axis = int(np.argmax(np.abs(r[:, 1])))  # ...the lab axis that OpenSim's Y went to
    assert detect_up_axis(lab) == (up_axis, int(r[up_axis, 1]))

    ja1 = read_trc(data_path(*JA1_TRC))
    lab = apply_axes(ja1, mapping)
    found = auto_mapping(lab)
    assert found == mapping.inverse()
    np.testing.assert_allclose(apply_axes(lab, found).data, ja1.data, rtol=0, atol=1e-12,
                               equal_nan=True)


def test_standing_trial_keeps_the_labs_first_horizontal_axis():
    # Standing still: no travel, so OpenSim X = lab x, Y = lab z, and Z = X x Y = -y.
    static = read_c3d_markers(data_path(*SAMPLES, "sample_00", "Innovative Sports Training",
                                        "Static Pose.c3d"))
    assert str(auto_mapping(static)) == "x,z,-y"


@pytest.mark.filterwarnings("ignore:.*POINT labels renamed", "ignore:All-NaN slice")
def test_walking_direction_becomes_plus_x():
    for parts in Z_UP[:-1]:
        lab = read_c3d_markers(data_path(*parts))
        osim = apply_axes(lab, auto_mapping(lab))
        centre = np.nanmedian(osim.data, axis=1)
        centre = centre[~np.isnan(centre).any(axis=1)]
        shift = centre[-10:].mean(axis=0) - centre[:10].mean(axis=0)
        if np.abs(shift[[0, 2]]).max() > 1.0:           # clearly walking
            assert shift[0] > abs(shift[2]), parts[-1]


def test_sign_without_telling_names_uses_the_floor():
    """Markers named m1..mN: the sign comes from the lab's origin lying on the floor."""
    gait = read_trc(data_path(*GAIT2354_TRC))
    blind = gait.copy(names=[f"m{i}" for i in range(len(gait.names))])
    assert detect_up_axis(blind) == (1, 1)
    assert detect_up_axis(apply_axes(blind, "-x,-y,z")) == (1, -1)


def test_lying_subject_is_a_known_failure():
    """A person lying along X looks like one standing along X: the documented failure case,
    where the user must give the mapping."""
    gait = read_trc(data_path(*GAIT2354_TRC))
    lying = apply_axes(gait, "y,-x,z")  # OpenSim's up now points along lab x
    assert detect_up_axis(lying)[0] == 0


def test_ambiguous_cloud_warns_and_empty_cloud_fails():
    rng = np.random.default_rng(3)
    cube = KeypointSeries(np.arange(20) * 0.01, [f"p{i}" for i in range(30)],
                          rng.uniform(0, 1, size=(20, 30, 3)), source="cube")
    with pytest.warns(UserWarning, match="vertical axis is uncertain"):
        detect_up_axis(cube)
    empty = cube.copy(data=np.full((20, 30, 3), np.nan))
    with pytest.raises(InputError, match="no frame has 3 or more markers"):
        detect_up_axis(empty)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        detect_up_axis(read_trc(data_path(*GAIT2354_TRC)))  # a clear case: no warning
