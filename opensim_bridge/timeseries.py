"""The one time-series type that carries keypoints and markers between kinevid's stages.

Modelled on kineticstoolkit's TimeSeries: time in seconds, named channels, units, events, and
validation whenever a field is assigned. Time is stored per sample rather than as a rate because
phone videos have a variable frame rate. Missing samples are NaN. Units are converted to metres
once, at the boundary where a file is read (see :meth:`KeypointSeries.to_metres`).
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import numpy as np

from .errors import InputError

#: Length units we accept, as a factor to metres. Pixels ("px") are for 2D keypoints.
LENGTH_UNITS: dict[str, float] = {"m": 1.0, "cm": 0.01, "mm": 0.001}
_UNIT_ALIASES = {"meters": "m", "metres": "m", "meter": "m", "millimeters": "mm", "millimetres": "mm",
                 "centimeters": "cm", "centimetres": "cm"}


def normalise_unit(unit: str) -> str:
    u = unit.strip()
    u = _UNIT_ALIASES.get(u.lower(), u)
    if u not in LENGTH_UNITS and u != "px":
        raise ValueError(f"unknown length unit {unit!r} (expected one of m, cm, mm, px)")
    return u


def time_window(time: np.ndarray, start: float | None, end: float | None, fail,
                tolerance: float = 1e-6) -> np.ndarray:
    """Boolean mask of ``start <= time <= end`` (open ends = the data's ends). A reversed range,
    or one that misses the data, is reported through ``fail(problem)`` rather than yielding an
    empty selection, so the user hears which file and which times."""
    t0, t1 = float(time[0]), float(time[-1])
    start = t0 if start is None else float(start)
    end = t1 if end is None else float(end)
    if end < start:
        fail(f"time range {start:g}-{end:g} s is reversed")
    if start > t1 + tolerance or end < t0 - tolerance:
        fail(f"time range {start:g}-{end:g} s lies outside the data ({t0:g}-{t1:g} s)")
    keep = (time >= start - tolerance) & (time <= end + tolerance)
    if not keep.any():
        fail(f"no samples between {start:g} and {end:g} s")
    return keep


@dataclasses.dataclass(frozen=True)
class Event:
    """A named instant, e.g. ``Event("Foot Strike", 1.02, "Left")``."""

    name: str
    time: float
    context: str = ""


class KeypointSeries:
    """Named 2D or 3D points over time.

    Attributes
    ----------
    time : (n,) float64, seconds, strictly increasing.
    names : tuple of unique channel names (markers or keypoints), m of them.
    data : (n, m, d) float64 with d = 2 or 3; NaN marks a missing sample.
    units : "m", "cm", "mm" or "px".
    confidence : (n, m) in [0, 1], or None when the source gives none. Missing samples have 0.
    events : list of :class:`Event`.
    source : the file the data came from, used in error messages.
    """

    __slots__ = ("_time", "_names", "_data", "_units", "_confidence", "events", "source")

    def __init__(self, time: Sequence[float] | np.ndarray, names: Iterable[str], data: np.ndarray,
                 units: str = "m", confidence: np.ndarray | None = None,
                 events: Iterable[Event] = (), source: str | None = None):
        self.source = source
        self._names = ()
        self._time = np.zeros(0)
        self._data = np.zeros((0, 0, 3))
        self._confidence = None
        # Assign through the validating setters, names and time first so data can be checked
        # against them.
        names = tuple(str(n) for n in names)
        data = np.asarray(data, dtype=np.float64)
        time = np.asarray(time, dtype=np.float64)
        self._check_names(names)
        self._check_time(time)
        self._check_data(data, len(time), len(names))
        self._names, self._time, self._data = names, time, data
        self.units = units
        self.confidence = confidence
        self.events = list(events)

    # ----------------------------------------------------------------- validation
    def _fail(self, problem: str):
        raise InputError(problem, self.source)

    def _check_names(self, names: tuple[str, ...]):
        if any(not n for n in names):
            self._fail("a channel has an empty name")
        seen, dup = set(), []
        for n in names:
            (dup.append(n) if n in seen else seen.add(n))
        if dup:
            self._fail(f"duplicate channel names: {', '.join(sorted(set(dup)))}")

    def _check_time(self, time: np.ndarray):
        if time.ndim != 1:
            self._fail(f"time must be one-dimensional, got shape {time.shape}")
        if not np.all(np.isfinite(time)):
            self._fail("time column contains NaN or infinite values")
        if time.size > 1 and np.any(np.diff(time) <= 0):
            i = int(np.argmax(np.diff(time) <= 0))
            self._fail(f"time is not strictly increasing at sample {i + 1} "
                       f"({time[i]:.6g} s then {time[i + 1]:.6g} s)")

    def _check_data(self, data: np.ndarray, n: int, m: int):
        if data.ndim != 3 or data.shape[2] not in (2, 3):
            self._fail(f"data must have shape (frames, channels, 2 or 3), got {data.shape}")
        if data.shape[:2] != (n, m):
            self._fail(f"data has shape {data.shape} but there are {n} times and {m} names")
        if np.isinf(data).any():
            self._fail("data contains infinite values")

    # ----------------------------------------------------------------- properties
    @property
    def time(self) -> np.ndarray:
        return self._time

    @time.setter
    def time(self, value):
        value = np.asarray(value, dtype=np.float64)
        self._check_time(value)
        if len(value) != len(self._time):
            self._fail(f"new time has {len(value)} samples, data has {len(self._time)}")
        self._time = value

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    @names.setter
    def names(self, value):
        value = tuple(str(n) for n in value)
        self._check_names(value)
        if len(value) != len(self._names):
            self._fail(f"{len(value)} new names for {len(self._names)} channels")
        self._names = value

    @property
    def data(self) -> np.ndarray:
        return self._data

    @data.setter
    def data(self, value):
        value = np.asarray(value, dtype=np.float64)
        self._check_data(value, len(self._time), len(self._names))
        self._data = value

    @property
    def units(self) -> str:
        return self._units

    @units.setter
    def units(self, value: str):
        try:
            self._units = normalise_unit(value)
        except ValueError as exc:
            self._fail(str(exc))

    @property
    def confidence(self) -> np.ndarray | None:
        return self._confidence

    @confidence.setter
    def confidence(self, value):
        if value is None:
            self._confidence = None
            return
        value = np.asarray(value, dtype=np.float64)
        if value.shape != self._data.shape[:2]:
            self._fail(f"confidence has shape {value.shape}, expected {self._data.shape[:2]}")
        if np.isnan(value).any() or (value < 0).any() or (value > 1).any():
            self._fail("confidence must lie in [0, 1] with no NaN")
        self._confidence = value

    # ----------------------------------------------------------------- derived
    def __len__(self) -> int:
        return len(self._time)

    @property
    def n_frames(self) -> int:
        return len(self._time)

    @property
    def dim(self) -> int:
        return self._data.shape[2]

    @property
    def rate(self) -> float:
        """Median sampling rate in Hz (variable-rate data has no single one)."""
        if len(self._time) < 2:
            return float("nan")
        return float(1.0 / np.median(np.diff(self._time)))

    @property
    def valid(self) -> np.ndarray:
        """(n, m) bool: the sample exists (no NaN coordinate)."""
        return ~np.isnan(self._data).any(axis=2)

    def weights(self) -> np.ndarray:
        """(n, m) per-sample weight for fitting: confidence where given, 0 where missing."""
        w = self.valid.astype(np.float64)
        if self._confidence is not None:
            w *= self._confidence
        return w

    def index(self, name: str) -> int:
        try:
            return self._names.index(name)
        except ValueError:
            self._fail(f"no channel named {name!r}")

    def __getitem__(self, name: str) -> np.ndarray:
        """(n, d) trajectory of one channel."""
        return self._data[:, self.index(name)]

    # ----------------------------------------------------------------- transforms (new objects)
    def copy(self, **changes) -> "KeypointSeries":
        kw = dict(time=self._time.copy(), names=self._names, data=self._data.copy(), units=self._units,
                  confidence=None if self._confidence is None else self._confidence.copy(),
                  events=list(self.events), source=self.source)
        kw.update(changes)
        return KeypointSeries(**kw)

    def to_units(self, unit: str) -> "KeypointSeries":
        unit = normalise_unit(unit)
        if unit == self._units:
            return self.copy()
        if "px" in (unit, self._units):
            self._fail(f"cannot convert {self._units} to {unit}: pixels need a camera model")
        factor = LENGTH_UNITS[self._units] / LENGTH_UNITS[unit]
        return self.copy(data=self._data * factor, units=unit)

    def to_metres(self) -> "KeypointSeries":
        return self.to_units("m")

    def select(self, names: Iterable[str]) -> "KeypointSeries":
        names = list(names)
        idx = [self.index(n) for n in names]
        conf = None if self._confidence is None else self._confidence[:, idx]
        return self.copy(names=names, data=self._data[:, idx], confidence=conf)

    def between(self, start: float | None = None, end: float | None = None,
                tolerance: float = 1e-6) -> "KeypointSeries":
        """Samples with start <= t <= end. A range that misses the data is an error, not empty."""
        keep = time_window(self._time, start, end, self._fail, tolerance)
        lo = -np.inf if start is None else float(start) - tolerance
        hi = np.inf if end is None else float(end) + tolerance
        conf = None if self._confidence is None else self._confidence[keep]
        ev = [e for e in self.events if lo <= e.time <= hi]
        return self.copy(time=self._time[keep], data=self._data[keep], confidence=conf, events=ev)

    def frames(self, idx) -> "KeypointSeries":
        idx = np.arange(len(self))[idx]
        conf = None if self._confidence is None else self._confidence[idx]
        return self.copy(time=self._time[idx], data=self._data[idx], confidence=conf)

    def __repr__(self) -> str:
        span = f"{self._time[0]:.3f}-{self._time[-1]:.3f} s" if len(self) else "empty"
        return (f"KeypointSeries({len(self._names)} channels x {len(self)} frames, {self.dim}D, "
                f"{self._units}, {span}, {len(self.events)} events)")
