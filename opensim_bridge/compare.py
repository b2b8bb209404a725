"""Compare kinevid's results with lab data: time alignment, agreement figures, rigid marker fit.

Two kinds of comparison, both pure numpy/scipy:

* **channels** (:func:`compare_tables`): scalar curves over time -- IK coordinates (.mot/.sto),
  ID moments, or a C3D file's model outputs (Vicon Plug-in Gait ``POINT:ANGLES`` etc., from
  :func:`opensim_bridge.c3d_read.read_c3d`, as ``LKneeAngles_X``/``_Y``/``_Z`` by
  :func:`read_c3d_model_outputs`). Channels pair by identical name, then by a user mapping
  (:func:`read_mapping`).
* **markers** (:func:`compare_markers`): 3D trajectories; per-marker positional error after a
  rigid (rotation + translation, no scale) fit of OURS onto LAB over all frames and markers.

Time alignment (both kinds), :func:`estimate_lag`:

1. both sides are resampled (linear, NaN-aware) onto one uniform grid at the higher of the two
   sampling rates, spanning both recordings in absolute time;
2. for every integer lag within ``max_lag_s`` the Pearson correlation of each paired channel is
   computed over the samples both sides have at that lag (local means and SDs, so different
   offsets or recording lengths do not bias it), and the channels' correlation curves are
   averaged, each weighted by its sample count times its signal-to-noise ratio r^2/(1 - r^2) at
   its own best lag (r capped at 0.999) -- nearly still, noise-dominated channels would
   otherwise pull the peak (with equal weights a 5-frame lag under 1 deg noise came out up to
   0.19 frame off, with these weights within 0.05); lags whose overlap is under half the best
   overlap are not considered (a few overlapping samples can correlate perfectly by chance);
3. the peak is refined to a fraction of a frame by fitting a parabola through it and its two
   neighbours.

Convention: ``lag_s > 0`` means OURS is late, ``ours(t) ~ lab(t - lag_s)``; LAB's time is shifted
by ``+lag_s`` before comparing. Markers are aligned on each marker's *speed*, which a rigid
change of frame leaves unchanged, so the two recordings may use different axes (lab Z-up vs
OpenSim Y-up) and origins; the speed is a central difference over +-20 ms, which keeps marker
noise from dominating it at high rates.

After alignment, figures are computed on the *native* samples of the side with the higher rate
(OURS when the rates are equal) within the overlap, the other side interpolated there: the
higher-rate side is never interpolated, so its noise is not smoothed and the errors are not
underestimated. Missing samples (NaN) are excluded pair by pair.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from scipy import signal

from .c3d_read import MODEL_OUTPUT_GROUPS, C3DData, read_c3d
from .errors import InputError
from .storage import Table
from .timeseries import KeypointSeries

#: Fewest common samples (after alignment) a comparison accepts.
MIN_SAMPLES = 10
#: Bland-Altman limits of agreement: bias +- this many SDs of the differences.
LOA_Z = 1.96
#: Units of a C3D file's model outputs when it names none: Plug-in Gait's; scalars have no
#: usual unit ("?": taken from the other side when paired).
_DEFAULT_OUTPUT_UNITS = {"angles": "deg", "moments": "Nmm", "forces": "N", "powers": "W",
                         "scalars": "?", "reactions": "N"}
_COMPONENTS = ("X", "Y", "Z")
#: A channel's peak correlation is capped here before its weight r^2/(1-r^2) (infinite at 1).
_R_CAP = 0.999


# =========================================================================== results
@dataclasses.dataclass(frozen=True)
class Alignment:
    """The time shift applied to LAB. ``lag_s > 0``: OURS is late (``ours(t) ~ lab(t - lag_s)``)."""

    lag_s: float
    rate: float            # Hz of the grid the lag was searched on (the higher of the two rates)
    peak_r: float          # pooled correlation at the peak (NaN when alignment was skipped)
    max_lag_s: float
    at_limit: bool         # the peak lies at the edge of the search range: the lag may be larger
    aligned: bool          # False with --no-align (lag 0)

    @property
    def lag_frames(self) -> float:
        return self.lag_s * self.rate


@dataclasses.dataclass(frozen=True)
class ChannelStats:
    """Agreement of one paired channel (or a pooled group) over its common valid samples."""

    name: str
    ours: str
    lab: str
    units: str
    n: int
    rmse: float
    mae: float
    bias: float            # mean(OURS - LAB)
    sd: float              # SD of the differences (ddof=1)
    r: float               # Pearson correlation (NaN for pooled rows or constant signals)

    @property
    def loa_low(self) -> float:
        return self.bias - LOA_Z * self.sd

    @property
    def loa_high(self) -> float:
        return self.bias + LOA_Z * self.sd


@dataclasses.dataclass(frozen=True)
class Pair:
    """OURS channel ``ours`` against LAB channel ``lab`` transformed as ``lab * scale + offset``."""

    ours: str
    lab: str
    scale: float = 1.0
    offset: float = 0.0

    @property
    def name(self) -> str:
        return self.ours if self.ours == self.lab else f"{self.ours}~{self.lab}"


@dataclasses.dataclass
class ChannelComparison:
    pairs: list[Pair]
    alignment: Alignment
    time: np.ndarray       # (n,) OURS time of the common samples
    ours: np.ndarray       # (n, k) OURS values
    lab: np.ndarray        # (n, k) LAB values, shifted in time and transformed by the pair
    stats: list[ChannelStats]
    pooled: list[ChannelStats]   # one row per unit: all channels of that unit together
    unpaired_ours: list[str]
    unpaired_lab: list[str]
    warnings: list[str]
    ours_source: str | None = None
    lab_source: str | None = None
    kind: str = "channels"


@dataclasses.dataclass(frozen=True)
class MarkerStats:
    name: str
    n: int                 # frames where both sides have the marker
    rmse_mm: float         # RMS of the 3D distance
    mean_mm: float
    max_mm: float


@dataclasses.dataclass
class MarkerComparison:
    names: list[str]       # common markers (OURS names)
    lab_names: list[str]
    alignment: Alignment
    time: np.ndarray       # (n,)
    ours: np.ndarray       # (n, m, 3) metres, OURS after the rigid fit (in LAB's frame)
    lab: np.ndarray        # (n, m, 3) metres, LAB shifted in time
    rotation: np.ndarray   # (3, 3): lab ~ rotation @ ours + translation
    translation: np.ndarray  # (3,) metres
    rigid: bool
    stats: list[MarkerStats]
    overall: MarkerStats
    unpaired_ours: list[str]
    unpaired_lab: list[str]
    warnings: list[str]
    ours_source: str | None = None
    lab_source: str | None = None
    kind: str = "markers"

    @property
    def rotation_deg(self) -> float:
        """Angle of the fitted rotation, degrees."""
        c = (np.trace(self.rotation) - 1.0) / 2.0
        return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


# =========================================================================== reading
def _strip_subject(labels: Sequence[str]) -> list[str]:
    """Drop Vicon's ``Subject:`` prefixes when every label stays unique without them."""
    short = [lab.rsplit(":", 1)[-1] for lab in labels]
    return short if len(set(short)) == len(short) and all(short) else list(labels)


def model_outputs_table(c3d: C3DData) -> Table:
    """The model outputs of a read C3D file (see :func:`read_c3d_model_outputs`)."""
    groups = [g for g in MODEL_OUTPUT_GROUPS if c3d.model_outputs.get(g)]
    if not groups:
        raise InputError("the C3D file has no model outputs (no POINT:ANGLES, MOMENTS, POWERS, "
                         "FORCES, SCALARS or REACTIONS labels); compare it as a marker file",
                         c3d.path)
    labels, units, blocks = [], [], []
    for group in groups:
        unit = c3d.model_output_units.get(group) or _DEFAULT_OUTPUT_UNITS[group]
        for label, values in c3d.model_outputs[group].items():
            labels.append(label)
            units.append(unit)
            blocks.append(values)
    cols, meta = [], {}
    for name, unit in zip(_strip_subject(labels), units):
        for comp in _COMPONENTS:
            cols.append(f"{name}_{comp}")
            meta[f"unit.{name}_{comp}"] = unit
    data = np.concatenate(blocks, axis=1)          # point-major: L_X, L_Y, L_Z, next...
    return Table(c3d.point_time, cols, data, in_degrees=True, name=Path(c3d.path).stem,
                 meta=meta, source=c3d.path)


def read_c3d_model_outputs(path: str | os.PathLike) -> Table:
    """Model outputs of a C3D file (POINT:ANGLES, MOMENTS, POWERS, FORCES, SCALARS, REACTIONS,
    as :func:`~opensim_bridge.c3d_read.read_c3d` splits them from the markers) as a
    :class:`Table` with columns ``<label>_X``, ``_Y``, ``_Z`` (subject prefixes dropped).

    Units per column are in ``table.meta["unit.<column>"]`` (from POINT:ANGLE_UNITS etc.; Plug-in
    Gait's own units when the file gives none). Samples with a negative residual are NaN. Time is
    the file's point time, ``(first_frame - 1 + i) / POINT:RATE``.
    """
    return model_outputs_table(read_c3d(path))


def load_channels(path: str | os.PathLike) -> Table:
    """A .mot/.sto table or a C3D file's model outputs."""
    return _load_channels(path, read_c3d)


def _load_channels(path: str | os.PathLike, read) -> Table:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".mot", ".sto"):
        from .storage import read_table
        return read_table(path)
    if suffix == ".c3d":
        return model_outputs_table(read(path))
    raise InputError(f"cannot compare {path.suffix or '(no suffix)'!r} files as channels; "
                     "expected .mot, .sto or .c3d", path)


def load_markers(path: str | os.PathLike) -> KeypointSeries:
    """Markers in metres from .trc/.c3d (a C3D file's model outputs are not markers: the C3D
    reader keeps them apart, and a C3D file without markers is an :class:`InputError`)."""
    from .markers import read_markers

    return read_markers(path).to_metres()


# =========================================================================== units
_TRANSLATION = re.compile(r"(^|_)t[xyz]$|translation", re.IGNORECASE)


def channel_units(table: Table) -> dict[str, str]:
    """Units of each column: from ``meta["unit.<label>"]`` when given (C3D model outputs), else
    by OpenSim's naming: ``*_moment`` N m, ``*_force`` N, ``*_tx/_ty/_tz`` m, anything else an
    angle in deg or rad as the header's ``inDegrees`` says ("?" when it says nothing)."""
    angle = {True: "deg", False: "rad", None: "?"}[table.in_degrees]
    out = {}
    for lab in table.labels:
        given = table.meta.get(f"unit.{lab}")
        low = lab.lower()
        if given:
            out[lab] = given
        elif low.endswith("_moment") or "moment" in low:
            out[lab] = "N m"
        elif low.endswith("_force"):
            out[lab] = "N"
        elif "power" in low:
            out[lab] = "W"
        elif _TRANSLATION.search(lab):
            out[lab] = "m"
        else:
            out[lab] = angle
    return out


def _report_units(table: Table) -> tuple[np.ndarray, dict[str, str]]:
    """Data with angles in degrees (readers like degrees), and the units of each column."""
    units = channel_units(table)
    data = table.data.copy()
    for j, lab in enumerate(table.labels):
        if units[lab] == "rad":
            data[:, j] = np.degrees(data[:, j])
            units[lab] = "deg"
    return data, units


# =========================================================================== pairing
def read_mapping(path: str | os.PathLike) -> tuple[list[Pair], bool]:
    """A pairing file (TOML)::

        [pairs]
        knee_angle_r = "RKneeAngles_X"                      # OURS name = LAB name
        ankle_angle_r = { lab = "RAnkleAngles_X", scale = -1, offset = 0 }

        [options]
        match_names = true     # also pair identically named channels (default true)

    LAB values are compared as ``lab * scale + offset``. Returns (pairs, match_names).
    """
    import tomllib

    path = Path(path)
    src = os.fspath(path)
    if not path.is_file():
        raise InputError("mapping file not found" if not path.exists() else "not a file", src)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid TOML: {exc}", src) from exc
    unknown = set(doc) - {"pairs", "options"}
    if unknown:
        raise InputError(f"unknown section(s) {sorted(unknown)}; expected [pairs] and [options]", src)
    raw = doc.get("pairs")
    if not isinstance(raw, dict) or not raw:
        raise InputError("no [pairs] table (e.g. knee_angle_r = \"RKneeAngles_X\")", src)
    pairs = []
    for ours, spec in raw.items():
        if isinstance(spec, str):
            spec = {"lab": spec}
        if not isinstance(spec, dict) or not isinstance(spec.get("lab"), str) or not spec["lab"]:
            raise InputError(f"pair {ours!r}: expected a LAB channel name or "
                             "{ lab = \"NAME\", scale = 1, offset = 0 }", src)
        extra = set(spec) - {"lab", "scale", "offset"}
        if extra:
            raise InputError(f"pair {ours!r}: unknown keys {sorted(extra)} (lab, scale, offset)", src)
        try:
            scale = float(spec.get("scale", 1.0))
            offset = float(spec.get("offset", 0.0))
        except (TypeError, ValueError):
            raise InputError(f"pair {ours!r}: scale and offset must be numbers", src) from None
        if not (math.isfinite(scale) and math.isfinite(offset)) or scale == 0:
            raise InputError(f"pair {ours!r}: scale must be finite and non-zero, offset finite", src)
        pairs.append(Pair(ours, spec["lab"], scale, offset))
    options = doc.get("options", {})
    if not isinstance(options, dict) or set(options) - {"match_names"}:
        raise InputError("[options] accepts only match_names = true/false", src)
    match_names = options.get("match_names", True)
    if not isinstance(match_names, bool):
        raise InputError("match_names must be true or false", src)
    return pairs, match_names


def pair_channels(ours: Sequence[str], lab: Sequence[str], mapping: Iterable[Pair] = (),
                  match_names: bool = True, source: str | None = None) -> list[Pair]:
    """Mapped pairs first (each name checked), then identically named channels."""
    ours_set, lab_set = set(ours), set(lab)
    pairs, used_o, used_l = [], set(), set()
    for p in mapping:
        if p.ours not in ours_set:
            raise InputError(f"mapping names OURS channel {p.ours!r}, which OURS lacks; OURS has: "
                             f"{', '.join(ours)}", source)
        if p.lab not in lab_set:
            raise InputError(f"mapping names LAB channel {p.lab!r}, which LAB lacks; LAB has: "
                             f"{', '.join(lab)}", source)
        if p.ours in used_o:
            raise InputError(f"mapping pairs OURS channel {p.ours!r} twice", source)
        pairs.append(p)
        used_o.add(p.ours)
        used_l.add(p.lab)
    if match_names:
        pairs += [Pair(n, n) for n in ours if n in lab_set and n not in used_o and n not in used_l]
    return pairs


# =========================================================================== resampling
def sampling_rate(time: np.ndarray) -> float:
    """Mean rate over the whole span: robust to timestamps rounded to the millisecond (a
    median of differences is not: 60 Hz written as 0.017/0.016 s steps reads as 58.8 Hz)."""
    if len(time) < 2:
        return math.nan
    return float((len(time) - 1) / (time[-1] - time[0]))


def interp_nan(t_src: np.ndarray, y: np.ndarray, t_new: np.ndarray,
               tol: float | None = None) -> np.ndarray:
    """Linear interpolation of the columns of ``y`` (n, ...) at ``t_new``; NaN outside the data
    (beyond ``tol`` seconds, where the end sample is used) and wherever a neighbouring sample is
    NaN; a time that hits a sample returns it exactly."""
    y = np.asarray(y, dtype=float)
    out_shape = (len(t_new),) + y.shape[1:]
    out = np.full(out_shape, np.nan)
    if len(t_src) == 0:
        return out
    if tol is None:
        tol = 1e-9 * max(1.0, abs(t_src[-1]))
    inside = (t_new >= t_src[0] - tol) & (t_new <= t_src[-1] + tol)
    tn = np.clip(t_new[inside], t_src[0], t_src[-1])
    j = np.clip(np.searchsorted(t_src, tn, side="right") - 1, 0, max(len(t_src) - 2, 0))
    if len(t_src) == 1:
        out[inside] = y[0]
        return out
    w = (tn - t_src[j]) / (t_src[j + 1] - t_src[j])
    w = np.clip(w, 0.0, 1.0).reshape((-1,) + (1,) * (y.ndim - 1))
    a, b = y[j], y[j + 1]
    with np.errstate(invalid="ignore"):
        val = (1.0 - w) * a + w * b
    # Exact hits must not inherit a NaN neighbour.
    val = np.where(w == 0.0, a, np.where(w == 1.0, b, val))
    out[inside] = val
    return out


def _uniform_grid(t0: float, t1: float, rate: float) -> np.ndarray:
    n = int(math.floor((t1 - t0) * rate + 1e-6)) + 1
    return t0 + np.arange(n) / rate


# =========================================================================== time alignment
def _xcorr(a: np.ndarray, b: np.ndarray, max_lag: int) -> np.ndarray:
    """sum_i a[i] b[i - k] for k = -max_lag..max_lag (a, b same length, NaN-free)."""
    full = signal.correlate(a, b, mode="full", method="fft")
    lags = signal.correlation_lags(len(a), len(b), mode="full")
    keep = (lags >= -max_lag) & (lags <= max_lag)
    return full[keep]


def estimate_lag(t_ours: np.ndarray, ours: np.ndarray, t_lab: np.ndarray, lab: np.ndarray,
                 max_lag_s: float = 1.0, rate: float | None = None,
                 source: str | None = None) -> Alignment:
    """Lag of OURS behind LAB from the pooled cross-correlation of paired channels.

    ``ours`` (n, k) and ``lab`` (m, k) hold the same k channels in the same order, on their own
    time bases. See the module docstring for the method.
    """
    ours = np.asarray(ours, dtype=float).reshape(len(t_ours), -1)
    lab = np.asarray(lab, dtype=float).reshape(len(t_lab), -1)
    if rate is None:
        rate = max(sampling_rate(t_ours), sampling_rate(t_lab))
    if not (math.isfinite(rate) and rate > 0):
        raise InputError("cannot estimate a sampling rate (fewer than two samples)", source)
    if not (math.isfinite(max_lag_s) and max_lag_s >= 0):
        raise InputError(f"maximum lag must be >= 0 s, got {max_lag_s!r}", source)
    # Overlap must be possible within the allowed lag.
    if t_ours[0] > t_lab[-1] + max_lag_s or t_lab[0] > t_ours[-1] + max_lag_s:
        raise InputError(f"the recordings do not overlap in time even with a lag of up to "
                         f"{max_lag_s:g} s (OURS {t_ours[0]:g}-{t_ours[-1]:g} s, LAB "
                         f"{t_lab[0]:g}-{t_lab[-1]:g} s); raise --max-lag", source)
    grid = _uniform_grid(min(t_ours[0], t_lab[0]), max(t_ours[-1], t_lab[-1]), rate)
    go = interp_nan(t_ours, ours, grid)
    gl = interp_nan(t_lab, lab, grid)
    max_lag = int(round(max_lag_s * rate))
    max_lag = min(max_lag, len(grid) - 1)
    curves, counts = [], []          # per channel: r_c(k), N_c(k)
    for c in range(go.shape[1]):
        a, b = go[:, c], gl[:, c]
        ma, mb = np.isfinite(a), np.isfinite(b)
        if ma.sum() < 3 or mb.sum() < 3:
            continue
        # Centre first so the sums below do not lose precision by cancellation.
        a0 = np.where(ma, a - np.nanmean(a), 0.0)
        b0 = np.where(mb, b - np.nanmean(b), 0.0)
        if not (np.any(a0) and np.any(b0)):
            continue  # a constant channel (a locked coordinate) says nothing about time
        fa, fb = ma.astype(float), mb.astype(float)
        n = np.round(_xcorr(fa, fb, max_lag))
        sa, sb = _xcorr(a0, fb, max_lag), _xcorr(fa, b0, max_lag)
        saa, sbb = _xcorr(a0 * a0, fb, max_lag), _xcorr(fa, b0 * b0, max_lag)
        sab = _xcorr(a0, b0, max_lag)
        with np.errstate(invalid="ignore", divide="ignore"):
            cov = sab - sa * sb / n
            va = saa - sa * sa / n
            vb = sbb - sb * sb / n
            r = cov / np.sqrt(va * vb)
        ok = ((n >= 3) & (va > 1e-12 * float(np.sum(a0 * a0)))
              & (vb > 1e-12 * float(np.sum(b0 * b0))) & np.isfinite(r))
        curves.append(np.where(ok, np.clip(r, -1.0, 1.0), 0.0))
        counts.append(np.where(ok, n, 0.0))
    if not curves:
        raise InputError("cannot align in time: no paired channel varies over the common time "
                         "(use --no-align)", source)
    curves, counts = np.array(curves), np.array(counts)
    den = counts.sum(axis=0)
    candidates = den >= 0.5 * den.max()
    # Weight each channel by its signal-to-noise ratio r^2 / (1 - r^2) at its own best lag:
    # a channel that is mostly noise (a nearly still coordinate) correlates at random and
    # would drag the pooled peak.
    peak = np.clip(np.where(candidates, curves, -1.0).max(axis=1), 0.0, _R_CAP)
    weight = counts * (peak * peak / (1.0 - peak * peak))[:, None]
    if not np.any(weight.sum(axis=0)[candidates] > 0):
        raise InputError("cannot align in time: no paired channel correlates positively at any "
                         "lag (a sign flip? give scale = -1 in a mapping file, or --no-align)",
                         source)
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = (weight * curves).sum(axis=0) / weight.sum(axis=0)
    candidates = den >= 0.5 * den.max()
    score = np.where(candidates & np.isfinite(pooled), pooled, -np.inf)
    i = int(np.argmax(score))
    delta = 0.0
    if 0 < i < len(score) - 1 and candidates[i - 1] and candidates[i + 1]:
        y0, y1, y2 = pooled[i - 1], pooled[i], pooled[i + 1]
        curv = y0 - 2 * y1 + y2
        if curv < 0:
            delta = float(np.clip(0.5 * (y0 - y2) / curv, -0.5, 0.5))
    lags = np.arange(-max_lag, max_lag + 1)
    at_limit = bool(max_lag > 0 and (i == 0 or i == len(score) - 1 or not candidates[i - 1]
                                     or not candidates[min(i + 1, len(score) - 1)]))
    return Alignment(lag_s=float((lags[i] + delta) / rate), rate=float(rate),
                     peak_r=float(pooled[i]), max_lag_s=float(max_lag_s), at_limit=at_limit,
                     aligned=True)


def _edge_tolerance(t_ours: np.ndarray, t_lab: np.ndarray) -> float:
    """How far (s) past the other side's last sample a compared sample may lie: 5 % of a frame,
    so a lag estimated a hair past a whole frame does not drop the end samples."""
    return 0.05 / max(sampling_rate(t_ours), sampling_rate(t_lab))


_AT_LIMIT = ("the best lag lies at the edge of the lags searched (+-{:g} s, with at least half the "
             "best overlap): the alignment may be wrong; check the overlay plots, raise --max-lag "
             "or use --no-align")


def _common_samples(t_ours: np.ndarray, t_lab: np.ndarray, lag_s: float, source: str | None):
    """Times (on OURS's clock) where both are compared: the native samples of the higher-rate
    side within the overlap. Returns (t_grid_ours_clock, grid_is_ours)."""
    t_lab_s = t_lab + lag_s
    lo, hi = max(t_ours[0], t_lab_s[0]), min(t_ours[-1], t_lab_s[-1])
    r_o, r_l = sampling_rate(t_ours), sampling_rate(t_lab)
    # Equal within 1 %: keep OURS (no resampling of the result being judged).
    use_ours = not (r_l > 1.01 * r_o) or not math.isfinite(r_l)
    base = t_ours if use_ours else t_lab_s
    tol = _edge_tolerance(t_ours, t_lab)
    grid = base[(base >= lo - tol) & (base <= hi + tol)]
    if len(grid) < MIN_SAMPLES:
        raise InputError(
            f"the recordings overlap by only {len(grid)} samples ({max(hi - lo, 0):.3g} s) after "
            f"aligning (lag {lag_s:+.4g} s; OURS {t_ours[0]:g}-{t_ours[-1]:g} s, LAB "
            f"{t_lab[0]:g}-{t_lab[-1]:g} s); at least {MIN_SAMPLES} are needed", source)
    return grid, use_ours


# =========================================================================== figures
def agreement(ours: np.ndarray, lab: np.ndarray, name: str = "", ours_name: str = "",
              lab_name: str = "", units: str = "", with_r: bool = True) -> ChannelStats:
    """Agreement figures of paired samples; pairs with a NaN on either side are dropped."""
    o = np.asarray(ours, dtype=float).ravel()
    b = np.asarray(lab, dtype=float).ravel()
    ok = np.isfinite(o) & np.isfinite(b)
    o, b = o[ok], b[ok]
    n = int(ok.sum())
    nan = math.nan
    if n == 0:
        return ChannelStats(name, ours_name, lab_name, units, 0, nan, nan, nan, nan, nan)
    d = o - b
    sd = float(np.std(d, ddof=1)) if n > 1 else nan
    r = nan
    if with_r and n > 2:
        so, sb = np.std(o), np.std(b)
        if so > 0 and sb > 0:
            r = float(np.clip(np.mean((o - o.mean()) * (b - b.mean())) / (so * sb), -1, 1))
    return ChannelStats(name, ours_name, lab_name, units, n, float(np.sqrt(np.mean(d * d))),
                        float(np.mean(np.abs(d))), float(np.mean(d)), sd, r)


def compare_tables(ours: Table, lab: Table, mapping: Iterable[Pair] = (), match_names: bool = True,
                   align: bool = True, max_lag_s: float = 1.0) -> ChannelComparison:
    """Agreement of paired channels of two tables after time alignment (see module docstring)."""
    src = f"{ours.source or 'OURS'} vs {lab.source or 'LAB'}"
    pairs = pair_channels(ours.labels, lab.labels, mapping, match_names, source=src)
    if not pairs:
        raise InputError(
            "no channels pair up (names differ; give a mapping file with --map). "
            f"OURS has: {', '.join(ours.labels)}. LAB has: {', '.join(lab.labels)}", src)
    od, ounits = _report_units(ours)
    ld, lunits = _report_units(lab)
    oi = [ours.index(p.ours) for p in pairs]
    li = [lab.index(p.lab) for p in pairs]
    scale = np.array([p.scale for p in pairs])
    offset = np.array([p.offset for p in pairs])
    o_vals = od[:, oi]
    l_vals = ld[:, li] * scale + offset
    notes: list[str] = []
    units = []
    for p in pairs:
        uo, ul = ounits[p.ours], lunits[p.lab]
        units.append(uo if uo != "?" else ul)
        if uo != ul and "?" not in (uo, ul) and p.scale == 1.0:
            notes.append(f"{p.name}: units differ (OURS {uo}, LAB {ul}); give a scale in the "
                         "mapping file to convert")
    if ours.in_degrees is None and any(u == "?" for u in ounits.values()):
        notes.append("OURS does not say whether its angles are in degrees; assumed the same as LAB")

    if align and len(pairs):
        alignment = estimate_lag(ours.time, o_vals, lab.time, l_vals, max_lag_s, source=src)
        if alignment.at_limit:
            notes.append(_AT_LIMIT.format(max_lag_s))
    else:
        rate = max(sampling_rate(ours.time), sampling_rate(lab.time))
        alignment = Alignment(0.0, rate, math.nan, float(max_lag_s), False, False)

    grid, use_ours = _common_samples(ours.time, lab.time, alignment.lag_s, src)
    tol = _edge_tolerance(ours.time, lab.time)
    o_c = o_vals[np.isin(ours.time, grid)] if use_ours else interp_nan(ours.time, o_vals, grid, tol)
    l_c = interp_nan(lab.time + alignment.lag_s, l_vals, grid, tol)
    stats = [agreement(o_c[:, j], l_c[:, j], p.name, p.ours, p.lab, units[j])
             for j, p in enumerate(pairs)]
    pooled = []
    for u in dict.fromkeys(units):
        cols = [j for j, uu in enumerate(units) if uu == u]
        pooled.append(agreement(o_c[:, cols], l_c[:, cols], f"(all {u})", f"{len(cols)} channels",
                                "", u, with_r=False))
    paired_o = {p.ours for p in pairs}
    paired_l = {p.lab for p in pairs}
    return ChannelComparison(
        pairs=pairs, alignment=alignment, time=grid, ours=o_c, lab=l_c, stats=stats, pooled=pooled,
        unpaired_ours=[n for n in ours.labels if n not in paired_o],
        unpaired_lab=[n for n in lab.labels if n not in paired_l], warnings=notes,
        ours_source=ours.source, lab_source=lab.source)


# =========================================================================== markers
def marker_speed(time: np.ndarray, xyz: np.ndarray, rate: float, span_s: float = 0.02) -> np.ndarray:
    """(n, m) speed of each marker on a uniform grid: a central difference over +-``span_s``
    (at least one sample) -- rigid motions of the frame leave it unchanged."""
    h = max(1, int(round(span_s * rate)))
    v = np.full(xyz.shape[:2], np.nan)
    if len(time) > 2 * h:
        d = xyz[2 * h:] - xyz[:-2 * h]
        v[h:-h] = np.linalg.norm(d, axis=2) / (time[2 * h:] - time[:-2 * h])[:, None]
    return v


def rigid_fit(src: np.ndarray, dst: np.ndarray, source: str | None = None):
    """Rotation R and translation t minimising sum |R src + t - dst|^2 (Kabsch/Umeyama without
    scale) over the rows of (N, 3) point sets; rows with a NaN on either side are ignored."""
    p = src.reshape(-1, 3)
    q = dst.reshape(-1, 3)
    ok = np.isfinite(p).all(axis=1) & np.isfinite(q).all(axis=1)
    p, q = p[ok], q[ok]
    if len(p) < 3:
        raise InputError(f"only {len(p)} paired marker samples: a rigid fit needs at least 3",
                         source)
    cp, cq = p.mean(axis=0), q.mean(axis=0)
    h = (p - cp).T @ (q - cq)
    u, s, vt = np.linalg.svd(h)
    if s[1] <= 1e-9 * max(s[0], 1e-300):
        raise InputError("the paired markers are (nearly) collinear over the whole trial: the "
                         "rigid fit is undetermined (use --no-rigid if both share one frame)",
                         source)
    d = 1.0 if np.linalg.det(vt.T @ u.T) > 0 else -1.0  # a proper rotation, never a reflection
    rot = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return rot, cq - rot @ cp


def _pair_markers(ours: Sequence[str], lab: Sequence[str]) -> list[tuple[str, str]]:
    """Identical names; failing that, names equal once a ``Subject:`` prefix is dropped."""
    lab_set = set(lab)
    out = [(n, n) for n in ours if n in lab_set]
    done_o, done_l = {o for o, _ in out}, {b for _, b in out}
    short_lab: dict[str, list[str]] = {}
    for n in lab:
        if n not in done_l:
            short_lab.setdefault(n.rsplit(":", 1)[-1], []).append(n)
    for n in ours:
        if n in done_o:
            continue
        cands = short_lab.get(n.rsplit(":", 1)[-1], [])
        if len(cands) == 1:
            out.append((n, cands[0]))
            short_lab[n.rsplit(":", 1)[-1]] = []
    return out


def compare_markers(ours: KeypointSeries, lab: KeypointSeries, align: bool = True,
                    max_lag_s: float = 1.0, rigid: bool = True) -> MarkerComparison:
    """Per-marker positional error of OURS against LAB after time alignment (on marker speed)
    and a rigid fit of OURS onto LAB over all frames and common markers."""
    src = f"{ours.source or 'OURS'} vs {lab.source or 'LAB'}"
    if ours.dim != 3 or lab.dim != 3:
        raise InputError("marker comparison needs 3D markers on both sides", src)
    ours, lab = ours.to_metres(), lab.to_metres()
    pairs = _pair_markers(ours.names, lab.names)
    if not pairs:
        raise InputError("no markers pair up by name. "
                         f"OURS has: {', '.join(ours.names)}. LAB has: {', '.join(lab.names)}", src)
    o_names = [o for o, _ in pairs]
    l_names = [b for _, b in pairs]
    o_xyz = ours.data[:, [ours.index(n) for n in o_names]]
    l_xyz = lab.data[:, [lab.index(n) for n in l_names]]
    notes: list[str] = []
    rate = max(sampling_rate(ours.time), sampling_rate(lab.time))
    if align:
        # Speeds on a uniform grid per side, then the channel cross-correlation.
        go = _uniform_grid(ours.time[0], ours.time[-1], rate)
        gl = _uniform_grid(lab.time[0], lab.time[-1], rate)
        so = marker_speed(go, interp_nan(ours.time, o_xyz, go), rate)
        sl = marker_speed(gl, interp_nan(lab.time, l_xyz, gl), rate)
        alignment = estimate_lag(go, so, gl, sl, max_lag_s, rate=rate, source=src)
        if alignment.at_limit:
            notes.append(_AT_LIMIT.format(max_lag_s))
    else:
        alignment = Alignment(0.0, rate, math.nan, float(max_lag_s), False, False)
    grid, use_ours = _common_samples(ours.time, lab.time, alignment.lag_s, src)
    tol = _edge_tolerance(ours.time, lab.time)
    o_c = o_xyz[np.isin(ours.time, grid)] if use_ours else interp_nan(ours.time, o_xyz, grid, tol)
    l_c = interp_nan(lab.time + alignment.lag_s, l_xyz, grid, tol)
    if rigid:
        rot, trans = rigid_fit(o_c, l_c, src)
        o_c = o_c @ rot.T + trans
    else:
        rot, trans = np.eye(3), np.zeros(3)
    err = np.linalg.norm(o_c - l_c, axis=2) * 1000.0   # (n, m) mm, NaN where either is missing

    def figures(name: str, e: np.ndarray) -> MarkerStats:
        e = e[np.isfinite(e)]
        if e.size == 0:
            return MarkerStats(name, 0, math.nan, math.nan, math.nan)
        return MarkerStats(name, int(e.size), float(np.sqrt(np.mean(e * e))), float(e.mean()),
                           float(e.max()))

    stats = [figures(n, err[:, j]) for j, n in enumerate(o_names)]
    overall = figures("(all markers)", err)
    if overall.n == 0:
        raise InputError("no frame has a marker present on both sides", src)
    missing = [s.name for s in stats if s.n == 0]
    if missing:
        notes.append(f"never present on both sides at once: {', '.join(missing)}")
    return MarkerComparison(
        names=o_names, lab_names=l_names, alignment=alignment, time=grid, ours=o_c, lab=l_c,
        rotation=rot, translation=trans, rigid=rigid, stats=stats, overall=overall,
        unpaired_ours=[n for n in ours.names if n not in set(o_names)],
        unpaired_lab=[n for n in lab.names if n not in set(l_names)], warnings=notes,
        ours_source=ours.source, lab_source=lab.source)


# =========================================================================== files
_CHANNEL_SUFFIXES = (".mot", ".sto")


def detect_mode(ours: str | os.PathLike, lab: str | os.PathLike, mode: str = "auto") -> str:
    """"channels" or "markers" from the file types: a .mot/.sto on either side means channels,
    a .trc means markers; two C3D files are compared as channels when both hold model outputs,
    else as markers."""
    return _detect_mode(ours, lab, mode, read_c3d)


def _detect_mode(ours, lab, mode: str, read) -> str:
    paths = [Path(ours), Path(lab)]
    kinds = []
    for p in paths:
        s = p.suffix.lower()
        if s in _CHANNEL_SUFFIXES:
            kinds.append("channels")
        elif s == ".trc":
            kinds.append("markers")
        elif s == ".c3d":
            kinds.append("either")
        else:
            raise InputError(f"cannot compare {p.suffix or '(no suffix)'!r} files; expected .mot, "
                             ".sto, .trc or .c3d", p)
        if not p.exists():
            raise InputError("file not found", p)
    if mode not in ("auto", "channels", "markers"):
        raise InputError(f"unknown comparison mode {mode!r} (auto, channels, markers)")
    if "channels" in kinds and "markers" in kinds:
        raise InputError(f"cannot compare a table ({paths[kinds.index('channels')].name}) with a "
                         f"marker file ({paths[kinds.index('markers')].name})")
    wanted = "channels" if "channels" in kinds else "markers" if "markers" in kinds else None
    if mode != "auto":
        if wanted and wanted != mode:
            bad = paths[kinds.index(wanted)]
            raise InputError(f"{bad.suffix} files cannot be compared as {mode}", bad)
        return mode
    if wanted:
        return wanted
    return "channels" if all(read(p).model_outputs for p in paths) else "markers"


def compare_files(ours: str | os.PathLike, lab: str | os.PathLike, mapping: str | os.PathLike | None = None,
                  align: bool = True, max_lag_s: float = 1.0, mode: str = "auto", rigid: bool = True):
    """Read both files and compare them; returns a :class:`ChannelComparison` or
    :class:`MarkerComparison`."""
    # Telling two C3D files' mode apart reads them; remembered, they are not read again as
    # channels. (Markers go through read_markers, which reads the file itself.)
    read = functools.lru_cache(maxsize=2)(read_c3d)
    mode = _detect_mode(ours, lab, "channels" if mapping and mode == "auto" else mode, read)
    if mode == "markers":
        if mapping:
            raise InputError("a mapping file applies to channels, not markers", mapping)
        return compare_markers(load_markers(ours), load_markers(lab), align, max_lag_s, rigid)
    pairs, match = read_mapping(mapping) if mapping else ([], True)
    ours_t, lab_t = _load_channels(ours, read), _load_channels(lab, read)
    read.cache_clear()  # the raw C3D data (analogs and all) is not needed any more
    return compare_tables(ours_t, lab_t, pairs, match, align, max_lag_s)


def _g(x: float) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.6g}"


def write_csv(result, path: str | os.PathLike) -> Path:
    """The figures as CSV (one row per channel or marker, then the pooled row(s)), atomically."""
    import csv

    from .atomic import atomic_write

    path = Path(path)
    with atomic_write(path) as fh:
        w = csv.writer(fh, lineterminator="\n")
        if isinstance(result, ChannelComparison):
            w.writerow(["channel", "ours", "lab", "units", "n", "rmse", "mae", "bias", "sd", "r",
                        "loa_low", "loa_high"])
            for s in result.stats + result.pooled:
                w.writerow([s.name, s.ours, s.lab, s.units, s.n, _g(s.rmse), _g(s.mae), _g(s.bias),
                            _g(s.sd), _g(s.r), _g(s.loa_low), _g(s.loa_high)])
        else:
            w.writerow(["marker", "lab", "n", "rmse_mm", "mean_mm", "max_mm"])
            for s, lab in zip(result.stats, result.lab_names):
                w.writerow([s.name, lab, s.n, _g(s.rmse_mm), _g(s.mean_mm), _g(s.max_mm)])
            o = result.overall
            w.writerow([o.name, "", o.n, _g(o.rmse_mm), _g(o.mean_mm), _g(o.max_mm)])
    return path


def _lag_line(a: Alignment) -> str:
    if not a.aligned:
        return "time alignment: none (--no-align)"
    if abs(a.lag_frames) < 0.005:
        who = "no lag:"
    else:
        who = "OURS is late by" if a.lag_s > 0 else "OURS is early by"
    return (f"time alignment: {who} {abs(a.lag_s):.4f} s = {abs(a.lag_frames):.2f} frames at "
            f"{a.rate:.4g} Hz (pooled r at the peak {a.peak_r:.3f}; searched +-{a.max_lag_s:g} s)")


def _list(names: list[str], limit: int = 12) -> str:
    more = f" ... (+{len(names) - limit})" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _shown(stats: list, key, max_rows: int | None) -> tuple[list, int]:
    """The rows to print: all, or the ``max_rows`` worst (by ``key``) in their original order."""
    if not max_rows or len(stats) <= max_rows:
        return stats, 0
    worst = sorted(range(len(stats)), key=lambda j: -np.nan_to_num(key(stats[j]), nan=-1.0))
    keep = sorted(worst[:max_rows])
    return [stats[j] for j in keep], len(stats) - max_rows


def summary_text(result, max_rows: int | None = None) -> str:
    """A plain-text report of a comparison; with ``max_rows``, only that many channels or
    markers -- those with the largest RMSE -- are listed (the CSV has them all)."""
    lines = [f"OURS: {result.ours_source}", f"LAB:  {result.lab_source}", _lag_line(result.alignment)]
    t = result.time
    if isinstance(result, ChannelComparison):
        rows, hidden = _shown(result.stats, lambda s: s.rmse, max_rows)
        lines.append(f"{len(result.pairs)} channels paired, {len(t)} common samples "
                     f"({t[0]:.4g}-{t[-1]:.4g} s on OURS's clock)")
        w = max([len(s.name) for s in result.stats + result.pooled] + [7])
        lines.append(f"{'channel':<{w}}  {'units':>5} {'n':>5} {'RMSE':>8} {'MAE':>8} {'bias':>8} "
                     f"{'SD':>8} {'r':>6}  limits of agreement")
        for s in rows + result.pooled:
            r = "" if math.isnan(s.r) else f"{s.r:.3f}"
            lines.append(f"{s.name:<{w}}  {s.units:>5} {s.n:>5} {s.rmse:8.3g} {s.mae:8.3g} "
                         f"{s.bias:8.3g} {s.sd:8.3g} {r:>6}  [{s.loa_low:.3g}, {s.loa_high:.3g}]")
    else:
        lines.append(f"{len(result.names)} markers paired, {len(t)} common samples "
                     f"({t[0]:.4g}-{t[-1]:.4g} s on OURS's clock)")
        if result.rigid:
            tr = 1000 * result.translation
            lines.append(f"rigid fit OURS -> LAB: rotation {result.rotation_deg:.2f} deg, "
                         f"translation ({tr[0]:.1f}, {tr[1]:.1f}, {tr[2]:.1f}) mm")
        rows, hidden = _shown(result.stats, lambda s: s.rmse_mm, max_rows)
        w = max([len(s.name) for s in result.stats] + [13])
        lines.append(f"{'marker':<{w}} {'n':>5} {'RMSE mm':>8} {'mean mm':>8} {'max mm':>8}")
        for s in rows + [result.overall]:
            lines.append(f"{s.name:<{w}} {s.n:>5} {s.rmse_mm:8.2f} {s.mean_mm:8.2f} {s.max_mm:8.2f}")
    if hidden:
        lines.append(f"({hidden} rows with smaller RMSE not listed; the CSV has them all)")
    if result.unpaired_ours:
        lines.append(f"unpaired in OURS: {_list(result.unpaired_ours)}")
    if result.unpaired_lab:
        lines.append(f"unpaired in LAB: {_list(result.unpaired_lab)}")
    lines += [f"warning: {n}" for n in result.warnings]
    return "\n".join(lines)
