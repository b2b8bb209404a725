import numpy as np
import pytest

from opensim_bridge.errors import InputError
from opensim_bridge.timeseries import Event, KeypointSeries


def make(n=5, m=2, units="mm", **kw):
    t = np.arange(n) / 100.0
    data = np.arange(n * m * 3, dtype=float).reshape(n, m, 3)
    return KeypointSeries(t, [f"M{i}" for i in range(m)], data, units=units, source="trial.trc", **kw)


def test_construction_and_derived_values():
    s = make()
    assert len(s) == 5 and s.dim == 3 and s.rate == pytest.approx(100.0)
    np.testing.assert_array_equal(s["M1"], s.data[:, 1])
    assert s.valid.all()


def test_unit_conversion_happens_once_and_scales_data():
    s = make(units="mm")
    m = s.to_metres()
    assert m.units == "m"
    np.testing.assert_allclose(m.data, s.data / 1000.0)
    assert s.units == "mm", "conversion must return a new object, not mutate"
    np.testing.assert_allclose(m.to_units("cm").data, s.data / 10.0)


def test_pixels_cannot_become_metres():
    s = make(units="px")
    with pytest.raises(InputError, match="pixels"):
        s.to_metres()


@pytest.mark.parametrize("bad_time", [[0, 0.1, 0.1, 0.2, 0.3], [0, 0.2, 0.1, 0.3, 0.4]])
def test_time_must_increase(bad_time):
    with pytest.raises(InputError, match="trial.trc: time is not strictly increasing"):
        KeypointSeries(bad_time, ["A"], np.zeros((5, 1, 3)), source="trial.trc")


def test_validation_on_assignment():
    s = make()
    with pytest.raises(InputError, match="shape"):
        s.data = np.zeros((4, 2, 3))
    with pytest.raises(InputError, match="duplicate"):
        s.names = ["A", "A"]
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        s.confidence = np.full((5, 2), 1.5)
    with pytest.raises(InputError, match="unit"):
        s.units = "furlongs"
    s.confidence = np.full((5, 2), 0.5)
    assert s.confidence.shape == (5, 2)


def test_variable_frame_rate_times_are_kept():
    t = np.array([0.0, 0.033, 0.067, 0.1, 0.134])  # phone video, jittered frame times
    s = KeypointSeries(t, ["A"], np.zeros((5, 1, 3)))
    np.testing.assert_array_equal(s.time, t)


def test_weights_combine_missing_and_confidence():
    s = make()
    d = s.data.copy()
    d[2, 0, 1] = np.nan
    s.data = d
    s.confidence = np.full((5, 2), 0.25)
    w = s.weights()
    assert w[2, 0] == 0 and w[2, 1] == 0.25 and w[0, 0] == 0.25


def test_time_range_selection_and_errors():
    s = make(n=11, events=[Event("Foot Strike", 0.05, "Left"), Event("Foot Off", 0.09, "Right")])
    sub = s.between(0.02, 0.06)
    np.testing.assert_allclose(sub.time, [0.02, 0.03, 0.04, 0.05, 0.06])
    assert [e.name for e in sub.events] == ["Foot Strike"]
    with pytest.raises(InputError, match="outside the data"):
        s.between(1.0, 2.0)
    with pytest.raises(InputError, match="reversed"):
        s.between(0.06, 0.02)


def test_select_keeps_confidence_aligned():
    s = make(m=3)
    s.confidence = np.tile([0.1, 0.2, 0.3], (5, 1))
    sub = s.select(["M2", "M0"])
    assert sub.names == ("M2", "M0")
    np.testing.assert_allclose(sub.confidence[0], [0.3, 0.1])
    np.testing.assert_array_equal(sub.data[:, 0], s.data[:, 2])
    with pytest.raises(InputError, match="no channel named 'X'"):
        s.select(["X"])
