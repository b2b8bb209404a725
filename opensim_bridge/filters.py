"""Zero-lag low-pass filtering and gap filling for marker and coordinate time series.

Conventions (all settings are explicit arguments; nothing is guessed):

* ``order`` is the order of the single Butterworth pass. The filter runs forward and backward
  (``scipy.signal.sosfiltfilt``), so the total response is order ``2*order``, the phase lag is
  zero, and the gain at ``cutoff_hz`` is -6 dB (the -3 dB of one pass, squared), not -3 dB.
  Pass a higher cutoff yourself if you want -3 dB overall (Winter's correction:
  ``cutoff / (sqrt(2) - 1) ** (1 / (2 * order))``).
* Padding matches ``scipy.signal.filtfilt``'s default (``padlen = 3 * (order + 1)``, odd
  extension), so on gap-free uniform data the result equals ``filtfilt(*butter(order, wn))`` to
  rounding; second-order sections keep it stable for high orders and low cutoffs where the
  transfer-function form is not.
* NaN marks missing samples. Each run of finite samples is filtered on its own; NaN stays NaN.
  A run of ``padlen`` samples or fewer is too short for the padded filter and is returned
  **unfiltered** (a short island between gaps cannot be low-passed meaningfully); fill short gaps
  first (:func:`fill_gaps`, as :func:`filter_series` does) to avoid such islands.
* Time that is not uniform (variable-frame-rate video) is handled per run by cubic-spline
  resampling onto a uniform grid at the median rate, filtering there, and cubic-spline
  interpolation back to the original times. Jitter below ``uniform_tolerance`` (a fraction of the
  median interval, default 10 %) is treated as uniform, because files often store rounded times
  (0.017, 0.033, 0.05 s at 60 Hz) for data that were sampled uniformly; the rate of such data is
  the mean rate (see :func:`nominal_rate`).
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
from scipy import signal
from scipy.interpolate import CubicSpline

from .storage import Table
from .timeseries import KeypointSeries


def nominal_rate(time, uniform_tolerance: float = 0.1) -> float:
    """Sampling rate in Hz of sample times ``time``.

    When every interval is within ``uniform_tolerance`` (fraction) of the median interval the
    data were sampled uniformly and the times are merely rounded (0.017, 0.033, 0.05 s at 60 Hz):
    the mean rate ``(n - 1) / duration`` is then exact where the median of rounded intervals is
    not (1 / 0.017 s = 58.8 Hz). Otherwise (variable frame rate) the median rate is returned.
    """
    t = np.asarray(time, dtype=float)
    if t.ndim != 1 or t.size < 2:
        return math.nan
    dt = np.diff(t)
    med = float(np.median(dt))
    if med <= 0:
        return math.nan
    if np.max(np.abs(dt - med)) <= uniform_tolerance * med:
        return float((t.size - 1) / (t[-1] - t[0]))
    return 1.0 / med


def _rate_and_time(time_or_rate, n: int, tol: float) -> tuple[float, np.ndarray | None]:
    arr = np.asarray(time_or_rate, dtype=float)
    if arr.ndim == 0:
        rate = float(arr)
        if not math.isfinite(rate) or rate <= 0:
            raise ValueError(f"sampling rate must be a positive number of Hz, got {rate!r}")
        return rate, None
    if arr.shape != (n,):
        raise ValueError(f"time has shape {arr.shape}; expected ({n},) to match the samples")
    if not np.isfinite(arr).all() or (n > 1 and np.any(np.diff(arr) <= 0)):
        raise ValueError("time must be finite and strictly increasing")
    if n < 2:
        raise ValueError("need at least two samples to know the sampling rate")
    return nominal_rate(arr, tol), arr


def _finite_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index pairs of the True runs in a 1-D bool array."""
    padded = np.concatenate(([False], mask, [False]))
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[::2], edges[1::2]))


def butter_lowpass(values, time_or_rate, cutoff_hz: float, order: int = 4, axis: int = 0,
                   *, uniform_tolerance: float = 0.1) -> np.ndarray:
    """Zero-lag Butterworth low-pass along ``axis``; see the module docstring for the rules.

    ``time_or_rate``: the sampling rate in Hz, or the sample times in seconds (which may be
    non-uniform). Raises ValueError for a cutoff at or above the Nyquist frequency.
    """
    x = np.asarray(values, dtype=float)
    if x.ndim == 0:
        raise ValueError("values must have at least one dimension")
    x = np.moveaxis(x, axis, 0)
    n = x.shape[0]
    rate, time = _rate_and_time(time_or_rate, n, uniform_tolerance)
    cutoff_hz = float(cutoff_hz)
    nyquist = rate / 2.0
    if not (math.isfinite(cutoff_hz) and cutoff_hz > 0):
        raise ValueError(f"cutoff must be a positive frequency, got {cutoff_hz!r} Hz")
    if cutoff_hz >= nyquist:
        raise ValueError(f"cutoff {cutoff_hz:g} Hz is at or above the Nyquist frequency "
                         f"{nyquist:g} Hz of data sampled at {rate:g} Hz; choose a cutoff below "
                         f"{nyquist:g} Hz")
    if int(order) != order or order < 1:
        raise ValueError(f"order must be a positive integer, got {order!r}")
    order = int(order)
    sos = signal.butter(order, cutoff_hz / nyquist, btype="low", output="sos")
    padlen = 3 * (order + 1)

    uniform = True
    if time is not None:
        dt = np.diff(time)
        uniform = bool(np.max(np.abs(dt - 1.0 / rate)) <= uniform_tolerance / rate)

    flat = x.reshape(n, -1)
    out = flat.copy()
    for c in range(flat.shape[1]):
        col = flat[:, c]
        for a, b in _finite_runs(np.isfinite(col)):
            if b - a <= padlen:
                continue  # too short for the padded filter: left unfiltered (documented)
            if uniform:
                out[a:b, c] = signal.sosfiltfilt(sos, col[a:b], padlen=padlen)
            else:
                out[a:b, c] = _filter_resampled(sos, padlen, time[a:b], col[a:b], rate)
    return np.moveaxis(out.reshape(x.shape), 0, axis)


def _filter_resampled(sos, padlen: int, t: np.ndarray, y: np.ndarray, rate: float) -> np.ndarray:
    m = int(math.floor((t[-1] - t[0]) * rate + 1e-9)) + 1
    grid = t[0] + np.arange(m) / rate
    if m <= padlen:
        return y.copy()
    yu = CubicSpline(t, y)(grid)
    fu = signal.sosfiltfilt(sos, yu, padlen=padlen)
    # The grid may stop up to one interval before t[-1]; not-a-knot extrapolation over less
    # than one interval of a low-passed signal is benign.
    return CubicSpline(grid, fu)(t)


def fill_gaps(values, time, max_gap_s: float, method: str = "cubic") -> tuple[np.ndarray, np.ndarray]:
    """Interpolate interior NaN runs along axis 0 whose length is at most ``max_gap_s``.

    The length of a gap is the number of missing samples times the median sample interval
    (computed as the span between the bracketing valid samples minus one interval), so ten missing
    frames at 100 Hz are a 0.1 s gap. Longer gaps and leading/trailing gaps stay NaN.
    ``method``: "cubic" (not-a-knot cubic spline through every valid sample of the channel,
    exact for cubic polynomials) or "linear". Each column (every index beyond axis 0) is handled
    on its own. Returns ``(filled, mask)`` where ``mask`` marks the samples that were filled.
    """
    if method not in ("cubic", "linear"):
        raise ValueError(f"method must be 'cubic' or 'linear', not {method!r}")
    if not (max_gap_s >= 0):
        raise ValueError(f"max_gap_s must be >= 0, got {max_gap_s!r}")
    x = np.asarray(values, dtype=float)
    n = x.shape[0]
    t = np.asarray(time, dtype=float)
    if t.shape != (n,):
        raise ValueError(f"time has shape {t.shape}; expected ({n},)")
    if n > 1 and (not np.isfinite(t).all() or np.any(np.diff(t) <= 0)):
        raise ValueError("time must be finite and strictly increasing")
    dt = float(np.median(np.diff(t))) if n > 1 else 0.0
    flat = x.reshape(n, -1)
    out = flat.copy()
    mask = np.zeros(flat.shape, dtype=bool)
    for c in range(flat.shape[1]):
        ok = np.isfinite(flat[:, c])
        if ok.all() or ok.sum() < 2:
            continue
        gaps = [(a, b) for a, b in _finite_runs(~ok) if a > 0 and b < n
                and (t[b] - t[a - 1]) - dt <= max_gap_s + 1e-9]
        if not gaps:
            continue
        idx = np.concatenate([np.arange(a, b) for a, b in gaps])
        tv, yv = t[ok], flat[ok, c]
        if method == "cubic" and ok.sum() >= 4:
            out[idx, c] = CubicSpline(tv, yv)(t[idx])
        else:
            out[idx, c] = np.interp(t[idx], tv, yv)
        mask[idx, c] = True
    return out.reshape(x.shape), mask.reshape(x.shape)


def filter_series(series: KeypointSeries, cutoff_hz: float, order: int = 4,
                  max_gap_s: float = 0.1, *, method: str = "cubic",
                  uniform_tolerance: float = 0.1) -> KeypointSeries:
    """Fill gaps up to ``max_gap_s`` then low-pass every coordinate; a new series.

    A sample counts as present only when all its coordinates are; confidence and events are kept
    as they were (filled samples keep their original confidence, 0 when the source gave one).
    """
    data = series.data.copy()
    missing = np.isnan(data).any(axis=2)
    data[missing] = np.nan
    if max_gap_s > 0 and len(series) > 1:
        data, _ = fill_gaps(data, series.time, max_gap_s, method=method)
    if len(series) > 1:
        data = butter_lowpass(data, series.time, cutoff_hz, order, axis=0,
                              uniform_tolerance=uniform_tolerance)
    data[np.isnan(data).any(axis=2)] = np.nan
    return series.copy(data=data)


def filter_table(table: Table, cutoff_hz: float, order: int = 4, max_gap_s: float = 0.1, *,
                 columns: Iterable[str] | None = None, method: str = "cubic",
                 uniform_tolerance: float = 0.1) -> Table:
    """Fill gaps and low-pass the given columns (all by default) of a :class:`Table`."""
    idx = list(range(len(table.labels))) if columns is None else [table.index(c) for c in columns]
    data = table.data.copy()
    part = data[:, idx]
    if max_gap_s > 0 and len(table) > 1:
        part, _ = fill_gaps(part, table.time, max_gap_s, method=method)
    data[:, idx] = butter_lowpass(part, table.time, cutoff_hz, order, axis=0,
                                  uniform_tolerance=uniform_tolerance)
    return table.copy(data=data)
