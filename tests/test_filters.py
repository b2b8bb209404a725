"""Low-pass filtering and gap filling on generated signals and real marker data."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from conftest import data_path
from opensim_bridge.filters import (butter_lowpass, fill_gaps, filter_series, filter_table,
                                    nominal_rate)
from opensim_bridge.storage import read_table
from opensim_bridge.trc import read_trc

FS = 100.0


def _mix(n=1000, fs=FS):
    t = np.arange(n) / fs
    low = np.sin(2 * np.pi * 2.0 * t)
    high = 0.5 * np.sin(2 * np.pi * 20.0 * t + 0.3)
    return t, low, high


def _amplitude(x, t, f):
    """Least-squares amplitude of frequency f in x (middle half, away from edge effects)."""
    k = slice(len(t) // 4, 3 * len(t) // 4)
    basis = np.column_stack([np.sin(2 * np.pi * f * t[k]), np.cos(2 * np.pi * f * t[k])])
    coef, *_ = np.linalg.lstsq(basis, x[k], rcond=None)
    return float(np.hypot(*coef))


def test_passband_kept_stopband_attenuated():
    t, low, high = _mix()
    y = butter_lowpass(low + high, FS, cutoff_hz=6.0, order=4)
    assert _amplitude(y, t, 2.0) == pytest.approx(1.0, abs=0.01)
    assert _amplitude(y, t, 20.0) < 0.05 * _amplitude(high, t, 20.0)


def test_zero_phase_lag():
    t, low, high = _mix()
    y = butter_lowpass(low + high, FS, cutoff_hz=6.0)
    k = slice(200, 800)
    lags = np.arange(-20, 21)
    corr = [np.dot(np.roll(y, lag)[k], low[k]) for lag in lags]
    assert lags[int(np.argmax(corr))] == 0


def test_matches_scipy_filtfilt_without_gaps():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((500, 3)).cumsum(axis=0)
    b, a = signal.butter(4, 6.0 / (FS / 2))
    expected = signal.filtfilt(b, a, x, axis=0)
    np.testing.assert_allclose(butter_lowpass(x, FS, 6.0, order=4), expected, rtol=0,
                               atol=1e-10 * np.ptp(x))
    # The same with a time vector instead of a rate, and along another axis.
    t = np.arange(500) / FS
    np.testing.assert_allclose(butter_lowpass(x.T, t, 6.0, axis=1), expected.T, rtol=0,
                               atol=1e-10 * np.ptp(x))


def test_gain_at_cutoff_is_minus_6_db():
    """Documented meaning of order/cutoff: two passes, so |H(fc)| = 0.5."""
    t = np.arange(4000) / FS
    x = np.sin(2 * np.pi * 6.0 * t)
    assert _amplitude(butter_lowpass(x, FS, 6.0), t, 6.0) == pytest.approx(0.5, abs=0.01)


def test_cutoff_at_or_above_nyquist_is_rejected():
    x = np.zeros(100)
    with pytest.raises(ValueError, match="Nyquist frequency 50 Hz"):
        butter_lowpass(x, FS, 50.0)
    with pytest.raises(ValueError, match="positive"):
        butter_lowpass(x, FS, 0.0)
    with pytest.raises(ValueError, match="order"):
        butter_lowpass(x, FS, 6.0, order=0)


def test_nan_runs_filtered_separately_and_short_runs_untouched():
    t, low, high = _mix()
    x = low + high
    x[300:310] = np.nan
    x[500:508] = np.nan
    y = butter_lowpass(x, FS, 6.0)
    assert np.array_equal(np.isnan(y), np.isnan(x))
    # Each long run equals filtering that run alone.
    b, a = signal.butter(4, 6.0 / 50.0)
    np.testing.assert_allclose(y[:300], signal.filtfilt(b, a, x[:300]), atol=1e-10)
    np.testing.assert_allclose(y[508:], signal.filtfilt(b, a, x[508:]), atol=1e-10)
    # A 12-sample island (<= padlen 15 for order 4) is returned unfiltered.
    x[320:] = np.nan
    np.testing.assert_array_equal(butter_lowpass(x, FS, 6.0)[310:320], x[310:320])


def test_non_uniform_time_is_resampled():
    rng = np.random.default_rng(2)
    dt = rng.uniform(0.006, 0.014, 1200)  # variable frame rate around 100 Hz
    t = np.concatenate(([0.0], np.cumsum(dt)))
    clean = np.sin(2 * np.pi * 1.5 * t)
    noisy = clean + 0.3 * np.sin(2 * np.pi * 30.0 * t)
    y = butter_lowpass(noisy, t, 6.0)
    k = slice(100, -100)
    assert np.max(np.abs(y[k] - clean[k])) < 0.02
    assert np.max(np.abs(noisy[k] - clean[k])) > 0.25  # the test can fail: noise was there


def test_nominal_rate_of_rounded_times():
    table = read_table(data_path("opensim-models", "Pipelines", "Gait2354_Simbody",
                                 "subject01_walk1_grf.mot"))  # 600 Hz with 4-decimal times
    assert 1 / np.median(np.diff(table.time)) != pytest.approx(600.0, rel=1e-3)
    assert nominal_rate(table.time) == pytest.approx(600.0, rel=1e-9)


def test_fill_short_gap_exact_on_cubic_and_keep_long_gap():
    t = np.arange(200) / FS
    cubic = 2.0 * t**3 - 3.0 * t**2 + 0.5 * t + 1.0
    x = np.column_stack([cubic, cubic])
    x[50:55, 0] = np.nan    # 5 samples = 0.05 s
    x[100:130, 1] = np.nan  # 30 samples = 0.3 s
    x[:3, 1] = np.nan       # leading
    x[-2:, 0] = np.nan      # trailing
    filled, mask = fill_gaps(x, t, max_gap_s=0.1, method="cubic")
    np.testing.assert_allclose(filled[50:55, 0], cubic[50:55], rtol=0, atol=1e-12)
    assert np.isnan(filled[100:130, 1]).all() and np.isnan(filled[:3, 1]).all()
    assert np.isnan(filled[-2:, 0]).all()
    expected = np.zeros_like(mask)
    expected[50:55, 0] = True
    np.testing.assert_array_equal(mask, expected)
    # A gap of exactly max_gap_s (10 samples at 100 Hz) is filled; 11 are not.
    y = cubic.copy()
    y[20:30] = np.nan
    y[60:71] = np.nan
    f, m = fill_gaps(y, t, 0.1, method="linear")
    assert m[20:30].all() and not m[60:71].any()
    with pytest.raises(ValueError, match="method"):
        fill_gaps(y, t, 0.1, method="quadratic")


def test_filter_series_on_real_markers():
    series = read_trc(data_path("nimblephysics", "data", "osim", "JA1GaitResults", "JA1Gait35.trc"))
    data = series.data.copy()
    data[100:104, 7] = np.nan   # short gap: filled
    data[200:260, 8] = np.nan   # long gap: stays
    gappy = series.copy(data=data)
    out = filter_series(gappy, cutoff_hz=12.0, order=4, max_gap_s=0.05)
    assert out is not gappy and out.names == series.names and out.units == "m"
    assert not np.isnan(out.data[100:104, 7]).any()
    assert np.isnan(out.data[200:260, 8]).all()
    valid = ~np.isnan(out.data) & ~np.isnan(series.data)
    # Smoothing at 12 Hz moves a sprinter's markers by millimetres on average.
    assert np.sqrt(np.mean((out.data[valid] - series.data[valid]) ** 2)) < 0.005
    # A marker without gaps is exactly scipy's filtfilt at the file's 250 Hz.
    j = int(np.flatnonzero(~np.isnan(series.data).any(axis=(0, 2)))[0])
    b, a = signal.butter(4, 12.0 / 125.0)
    np.testing.assert_allclose(out.data[:, j], signal.filtfilt(b, a, series.data[:, j], axis=0),
                               rtol=0, atol=1e-10)
    np.testing.assert_array_equal(gappy.data, data)  # input untouched


def test_filter_table_only_selected_columns():
    table = read_table(data_path("opensim-models", "Pipelines", "Gait10dof18musc",
                                 "OutputReference", "IK", "subject01_walk_IK.mot"))
    out = filter_table(table, cutoff_hz=6.0, columns=["knee_angle_r"])
    np.testing.assert_array_equal(out["hip_flexion_r"], table["hip_flexion_r"])
    assert not np.array_equal(out["knee_angle_r"], table["knee_angle_r"])
    rate = nominal_rate(table.time)
    np.testing.assert_allclose(out["knee_angle_r"],
                               butter_lowpass(table["knee_angle_r"], rate, 6.0), atol=1e-9)
