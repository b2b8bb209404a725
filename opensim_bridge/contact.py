"""Foot contact and gait events from kinematics alone (foot point heights and speeds).

Each foot is tracked by two points, a heel point and a toe point (see
:func:`opensim_bridge.grf_estimate.foot_points` for where they are on a model). A point touches
the ground when it is both **low** (its height above its own lowest position within
``floor_window_s`` around the frame below a threshold) and **slow** (its horizontal speed relative to the ground below a threshold); a foot
is in contact when either of its points is. Thresholds have hysteresis: a point must get lower
and slower to enter contact than it must get high or fast to leave it, so noise near a threshold
does not make contact flicker.

Why "relative to the ground": on a treadmill the stance foot moves backwards at belt speed and
the body stays in place. The ground's velocity is taken as the median horizontal velocity of the
lowest foot point over the frames where that point is within ``ground_band_m`` of its minimum
(the stance foot): about zero over ground, minus the belt speed on a treadmill. The progression
speed (walking or running speed) is the body's centre-of-mass speed relative to that ground; the
speed thresholds are fractions of it, bounded below and above so that slow walking (and
standing) and sprinting both get sensible values.

Contact runs shorter than ``min_contact_s`` are dropped and gaps shorter than ``min_gap_s`` are
closed, then each start of contact inside the trial is a ``Foot Strike`` and each end a
``Foot Off`` (:class:`opensim_bridge.timeseries.Event`, context ``Left``/``Right``). A contact
already under way at the first frame, or still going at the last, has no event there.

:func:`events_from_grf` gives the reference events from measured force-plate data (the usual
20 N threshold) for comparison.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from .errors import InputError
from .filters import butter_lowpass
from .timeseries import Event

SIDES = ("r", "l")
CONTEXT = {"r": "Right", "l": "Left"}
_HORIZONTAL = [0, 2]  # OpenSim's ground: Y is up, X and Z span the floor


@dataclasses.dataclass(frozen=True)
class ContactSettings:
    """Thresholds of :func:`detect_contacts` (lengths in m, speeds in m/s, times in s)."""

    #: A point enters contact below this height above its lowest position in the trial ...
    height_enter_m: float = 0.05
    #: ... and leaves it above this one (hysteresis).
    height_exit_m: float = 0.07
    #: A point enters contact below this fraction of the progression speed ...
    speed_enter_fraction: float = 0.5
    #: ... and leaves it above this fraction.
    speed_exit_fraction: float = 1.0
    #: Bounds (m/s) on the speed thresholds, whatever the progression speed: a slow walk still
    #: tolerates IK jitter, a sprint's stance foot still has to be nearly still (2 m/s is a fifth
    #: of sprinting speed). These defaults were chosen on the Gait2354 walk and the JA1 sprint
    #: (benchmarks/grf_estimate_report.py); walking events hardly depend on them.
    speed_enter_bounds: tuple[float, float] = (0.3, 2.0)
    speed_exit_bounds: tuple[float, float] = (0.6, 3.0)
    #: Contact runs shorter than this are noise (sprint contacts last about 0.1 s).
    min_contact_s: float = 0.04
    #: Gaps in contact shorter than this are closed (a sprint's flight lasts about 0.1 s).
    min_gap_s: float = 0.03
    #: Low-pass cut-off (Hz) of the foot points before they are differentiated into speeds.
    lowpass_hz: float = 10.0
    #: Each point's height is measured from its lowest position within this window (s)
    #: centred on the frame, not over the whole trial: IK puts the foot a few centimetres
    #: higher in one stance than in another, and a sloping floor or treadmill does the same.
    #: It must exceed a swing phase (about 0.4 s in walking) so that it always holds a stance.
    floor_window_s: float = 1.0
    #: Band above its minimum within which the lowest foot point counts as on the ground when
    #: the ground's velocity (treadmill belt) is estimated.
    ground_band_m: float = 0.01
    #: Support fallback (:func:`fill_supported_gaps`): a stretch without any detected contact
    #: that lasts at least ``support_min_s`` while the estimated vertical force carries at least
    #: ``support_fraction`` of body weight is not flight: the body is standing on something.
    #: The lower foot (or both, when within ``support_level_m`` of each other) takes it. Longer
    #: than a running flight (0.1-0.15 s) so a sprint's flights, which the force filter smears,
    #: stay flights; a jump's flight is free fall and carries no force. 0 turns it off.
    support_fraction: float = 0.5
    support_min_s: float = 0.2
    support_level_m: float = 0.02
    #: Below this progression speed (m/s) the motion is walking, standing or balancing, which
    #: have no flight at all: a supported stretch of any length is a missed contact.
    support_walk_speed: float = 2.0

    def __post_init__(self):
        for name in ("height_enter_m", "height_exit_m", "speed_enter_fraction",
                     "speed_exit_fraction", "min_contact_s", "min_gap_s", "lowpass_hz",
                     "floor_window_s", "ground_band_m", "support_fraction", "support_min_s",
                     "support_level_m", "support_walk_speed"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"ContactSettings.{name} must be a finite number >= 0, "
                                 f"not {value!r}")
        if self.height_exit_m < self.height_enter_m:
            raise ValueError("ContactSettings.height_exit_m must be >= height_enter_m")
        if self.speed_exit_fraction < self.speed_enter_fraction:
            raise ValueError("ContactSettings.speed_exit_fraction must be >= "
                             "speed_enter_fraction")
        for name in ("speed_enter_bounds", "speed_exit_bounds"):
            lo, hi = getattr(self, name)
            if not (0 < lo <= hi):
                raise ValueError(f"ContactSettings.{name} must be (low, high) with "
                                 f"0 < low <= high, not {(lo, hi)!r}")


@dataclasses.dataclass(frozen=True)
class ContactInterval:
    """One foot's uninterrupted contact, frames ``start``..``end`` inclusive."""

    side: str            # "r" or "l"
    start: int
    end: int
    start_time: float
    end_time: float
    starts_in_trial: bool  # False: already in contact at the first frame (no strike seen)
    ends_in_trial: bool    # False: still in contact at the last frame (no foot off seen)


@dataclasses.dataclass
class ContactResult:
    """What :func:`detect_contacts` found."""

    time: np.ndarray
    contact: dict[str, np.ndarray]          # side -> (n,) bool, foot in contact
    point_contact: dict[str, np.ndarray]    # side -> (n, 2) bool, [heel, toe] in contact
    intervals: list[ContactInterval]
    events: list[Event]
    ground_velocity: np.ndarray             # (2,) m/s along ground X and Z
    progression_speed: float                # m/s, centre of mass relative to the ground
    speed_thresholds: tuple[float, float]   # (enter, exit) in m/s
    heights: dict[str, np.ndarray]          # side -> (n, 2) heel/toe height above own minimum
    speeds: dict[str, np.ndarray]           # side -> (n, 2) heel/toe speed relative to ground

    def intervals_of(self, side: str) -> list[ContactInterval]:
        return [iv for iv in self.intervals if iv.side == side]


def _rolling_min(values: np.ndarray, time: np.ndarray, window_s: float) -> np.ndarray:
    """Minimum along axis 0 over a window of ``window_s`` centred on each frame."""
    from scipy.ndimage import minimum_filter1d

    size = max(1, round(window_s / _dt(time)) | 1)  # odd, so it is centred
    return minimum_filter1d(values, size=min(size, 2 * values.shape[0] - 1), axis=0,
                            mode="nearest")


def _hysteresis(low_enter: np.ndarray, high_exit: np.ndarray) -> np.ndarray:
    """Contact state per frame: enters where ``low_enter``, leaves where ``high_exit``."""
    out = np.zeros(low_enter.shape, dtype=bool)
    on = False
    for k in range(low_enter.size):
        if on:
            on = not high_exit[k]
        else:
            on = bool(low_enter[k])
        out[k] = on
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive (first, last) index pairs of the True runs of a 1-D bool array."""
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2])]


def _clean(mask: np.ndarray, time: np.ndarray, min_contact_s: float, min_gap_s: float):
    mask = mask.copy()
    n = mask.size
    dt = _dt(time)
    # A run of k frames lasts k frame intervals. Close short gaps first (a flickering stance is
    # one contact), then drop short contacts.
    for a, b in _runs(~mask):
        if a > 0 and b < n - 1 and (b - a + 1) * dt < min_gap_s:
            mask[a:b + 1] = True
    for a, b in _runs(mask):
        # A run cut by the trial's edge may be the end of a long contact: keep it.
        if a > 0 and b < n - 1 and (b - a + 1) * dt < min_contact_s:
            mask[a:b + 1] = False
    return mask


def _dt(time: np.ndarray) -> float:
    return float(np.median(np.diff(time))) if time.size > 1 else 0.0


def detect_contacts(time, feet: dict[str, np.ndarray], com, settings: ContactSettings | None = None,
                    *, source=None) -> ContactResult:
    """Contact per foot from foot point trajectories.

    ``time``: (n,) s. ``feet``: side ("r"/"l") -> (n, 2, 3) ground positions of the heel and toe
    points in metres (Y up). ``com``: (n, 3) centre of mass, for the progression speed.
    ``source`` names the motion in error messages.
    """
    settings = settings or ContactSettings()
    time = np.asarray(time, dtype=float)
    n = time.size
    if set(feet) != set(SIDES):
        raise ValueError(f"feet must have the sides {SIDES}, got {sorted(feet)}")
    if n < 3:
        raise InputError(f"contact detection needs at least 3 frames, got {n}", source)
    rate = 1.0 / _dt(time)
    cutoff = min(settings.lowpass_hz, 0.45 * rate)  # never at or above Nyquist
    pts = {s: butter_lowpass(np.asarray(feet[s], dtype=float), time, cutoff, 2, axis=0)
           for s in SIDES}
    heights = {s: pts[s][:, :, 1] - _rolling_min(pts[s][:, :, 1], time, settings.floor_window_s)
               for s in SIDES}
    vel = {s: np.gradient(pts[s], time, axis=0)[:, :, _HORIZONTAL] for s in SIDES}

    # Ground velocity: the lowest point of all four, while it is on its floor.
    all_h = np.concatenate([heights[s] for s in SIDES], axis=1)          # (n, 4)
    all_v = np.concatenate([vel[s] for s in SIDES], axis=1)              # (n, 4, 2)
    lowest = np.argmin(all_h, axis=1)
    low_h = all_h[np.arange(n), lowest]
    low_v = all_v[np.arange(n), lowest]
    grounded = low_h <= settings.ground_band_m
    ground_v = np.median(low_v[grounded], axis=0) if grounded.any() else np.zeros(2)
    com = np.asarray(com, dtype=float)
    com_v = np.gradient(butter_lowpass(com, time, cutoff, 2, axis=0), time, axis=0)
    progression = float(np.linalg.norm(np.median(com_v[:, _HORIZONTAL], axis=0) - ground_v))

    lo, hi = settings.speed_enter_bounds
    v_enter = float(np.clip(settings.speed_enter_fraction * progression, lo, hi))
    lo, hi = settings.speed_exit_bounds
    v_exit = float(np.clip(settings.speed_exit_fraction * progression, lo, hi))
    v_exit = max(v_exit, v_enter)

    speeds, point_contact, contact = {}, {}, {}
    for s in SIDES:
        speeds[s] = np.linalg.norm(vel[s] - ground_v, axis=2)
        pc = np.zeros((n, 2), dtype=bool)
        for j in range(2):
            h, v = heights[s][:, j], speeds[s][:, j]
            pc[:, j] = _hysteresis((h < settings.height_enter_m) & (v < v_enter),
                                   (h > settings.height_exit_m) | (v > v_exit))
        point_contact[s] = pc
        contact[s] = _clean(pc.any(axis=1), time, settings.min_contact_s, settings.min_gap_s)
        point_contact[s] &= contact[s][:, None]

    intervals = _intervals(contact, time)
    return ContactResult(time=time, contact=contact, point_contact=point_contact,
                         intervals=intervals, events=gait_events(intervals, time),
                         ground_velocity=ground_v, progression_speed=progression,
                         speed_thresholds=(v_enter, v_exit), heights=heights, speeds=speeds)


def _intervals(contact: dict[str, np.ndarray], time: np.ndarray) -> list[ContactInterval]:
    n = time.size
    out = [ContactInterval(s, a, b, float(time[a]), float(time[b]), a > 0, b < n - 1)
           for s in SIDES for a, b in _runs(contact[s])]
    out.sort(key=lambda iv: (iv.start, iv.side))
    return out


def fill_supported_gaps(result: ContactResult, vertical_force, body_weight: float,
                        settings: ContactSettings | None = None,
                        feet: dict[str, np.ndarray] | None = None) -> tuple[ContactResult, int]:
    """(result with supported no-contact stretches given to a foot, frames filled).

    Video kinematics can leave a standing or balancing foot too jittery to count as "slow", so
    long stretches come out as flight while the centre of mass says the body is carried
    (``vertical_force`` (n,) N, the estimated total). See the ``support_*`` fields of
    :class:`ContactSettings` for the rule; the lower foot is judged by the mean over the
    stretch of its lower point's height: from ``feet`` (side -> (n, 2, 3) ground positions, Y
    up) when given, else above the point's own floor (which cannot tell a foot held up for a
    second from one standing)."""
    settings = settings or ContactSettings()
    if settings.support_fraction <= 0:
        return result, 0
    time = result.time
    fz = np.asarray(vertical_force, dtype=float)
    dt = _dt(time)
    contact = {s: result.contact[s].copy() for s in SIDES}
    point = {s: result.point_contact[s].copy() for s in SIDES}
    filled = 0
    min_s = settings.support_min_s if result.progression_speed >= settings.support_walk_speed else 0.0
    for a, b in _runs(~(contact["r"] | contact["l"])):
        if (b - a + 1) * dt < min_s:
            continue
        if np.median(fz[a:b + 1]) < settings.support_fraction * body_weight:
            continue                                   # a real flight: free fall
        h = {s: (np.asarray(feet[s], dtype=float)[a:b + 1, :, 1] if feet is not None
                 else result.heights[s][a:b + 1]) for s in SIDES}
        low = {s: h[s].min(axis=1).mean() for s in SIDES}
        best = min(low, key=low.get)
        for s in SIDES:
            if s == best or low[s] - low[best] <= settings.support_level_m:
                contact[s][a:b + 1] = True
                point[s][a:b + 1, int(np.argmin(h[s].mean(axis=0)))] = True
        filled += b - a + 1
    if not filled:
        return result, 0
    intervals = _intervals(contact, time)
    return dataclasses.replace(result, contact=contact, point_contact=point, intervals=intervals,
                               events=gait_events(intervals, time)), filled


def gait_events(intervals: list[ContactInterval], time) -> list[Event]:
    """Foot Strike at the first frame of each contact begun inside the trial, Foot Off at the
    first frame after each contact that ends inside it; sorted by time."""
    time = np.asarray(time, dtype=float)
    events = []
    for iv in intervals:
        if iv.starts_in_trial:
            events.append(Event("Foot Strike", float(time[iv.start]), CONTEXT[iv.side]))
        if iv.ends_in_trial:
            events.append(Event("Foot Off", float(time[iv.end + 1]), CONTEXT[iv.side]))
    events.sort(key=lambda e: (e.time, e.context, e.name))
    return events


def events_from_grf(table, plate_sides: dict[str, str], *, threshold_n: float = 20.0,
                    start: float | None = None, end: float | None = None) -> list[Event]:
    """Reference gait events from measured force plates.

    ``table``: a GRF :class:`~opensim_bridge.storage.Table`; ``plate_sides``: force identifier
    (e.g. ``"1_ground_force_v"``) -> ``"r"``/``"l"``. A foot is loaded when the summed vertical
    force of its plates exceeds ``threshold_n``; each crossing inside ``start``..``end`` is an
    event at the first sample past the threshold.
    """
    t = np.asarray(table.time, dtype=float)
    keep = np.ones(t.size, dtype=bool)
    if start is not None:
        keep &= t >= start
    if end is not None:
        keep &= t <= end
    events = []
    for side in SIDES:
        ids = [p for p, s in plate_sides.items() if s == side]
        if not ids:
            continue
        fy = sum(table[p + "y"] for p in ids)
        loaded = fy > threshold_n
        change = np.flatnonzero(np.diff(loaded.astype(np.int8))) + 1
        for k in change:
            if keep[k] and keep[k - 1]:
                name = "Foot Strike" if loaded[k] else "Foot Off"
                events.append(Event(name, float(t[k]), CONTEXT[side]))
    events.sort(key=lambda e: (e.time, e.context, e.name))
    return events


def match_events(estimated: list[Event], reference: list[Event]) -> list[tuple[Event, Event | None]]:
    """Each reference event paired with the nearest estimated event of the same name and
    context (None when there is none)."""
    pairs = []
    for ref in reference:
        same = [e for e in estimated if e.name == ref.name and e.context == ref.context]
        best = min(same, key=lambda e: abs(e.time - ref.time)) if same else None
        pairs.append((ref, best))
    return pairs
