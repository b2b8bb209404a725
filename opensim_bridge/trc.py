"""TRC marker files: a tolerant reader, a standard writer, and the bridge to OpenSim tables.

OpenSim's own TRCFileAdapter is strict: it rejects files whose header values are separated by
double tabs, whose rows are short, or whose NumFrames disagrees with the data. Such files are
common (the Rajagopal walking trial in opensim-models is one), so kinevid reads TRC itself and
hands OpenSim a clean ``TimeSeriesTableVec3`` (:func:`series_to_opensim_table`) or a clean file
(:func:`write_trc`).

Everything leaves :func:`read_trc` in metres; the declared unit is checked against the size of
the marker cloud, because a millimetre file labelled "m" (or the reverse) would otherwise reach
inverse kinematics as a 1000-fold scaled subject.
"""
from __future__ import annotations

import logging
import math
import os
import re
import warnings
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .errors import InputError
from .filters import nominal_rate
from .timeseries import LENGTH_UNITS, KeypointSeries, normalise_unit

log = logging.getLogger(__name__)

#: Header keys of a standard TRC file, in the order OpenSim writes them.
HEADER_KEYS = ("DataRate", "CameraRate", "NumFrames", "NumMarkers", "Units", "OrigDataRate",
               "OrigDataStartFrame", "OrigNumFrames")

#: Plausible size (metres) of the cloud of markers on one person in one frame. Real marker sets
#: span ~0.2 m (a foot) to ~2.5 m (arms raised). A unit error moves the size by a factor of
#: 10-1000, far outside this window.
PLAUSIBLE_EXTENT_M = (0.03, 5.0)
#: With a single marker there is no cloud; a lab coordinate beyond this is implausible.
PLAUSIBLE_COORD_M = 100.0

_COORD_LABEL = re.compile(r"^[XYZxyz]\d+$")


def _split(line: str) -> list[str]:
    """TRC is tab separated; some writers use spaces. Keep empty cells only for tabs."""
    line = line.rstrip("\r\n")
    if "\t" in line:
        return [c.strip() for c in line.split("\t")]
    return line.split()


def _parse_header_values(keys_line: str, values_line: str) -> dict[str, str]:
    keys = [k for k in _split(keys_line) if k]
    raw = _split(values_line)
    nonempty = [v for v in raw if v]
    # Some writers separate values with double tabs (empty cells between real values): when the
    # non-empty cells match the keys one to one, that is the intended pairing.
    values = nonempty if len(nonempty) == len(keys) else raw
    return {k: (values[i] if i < len(values) else "") for i, k in enumerate(keys)}


def _to_float(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def marker_cloud_extent(data: np.ndarray) -> float | None:
    """Median over frames of the largest per-axis spread of the markers, in file units.

    Position in the lab does not matter (a sprint may be 10 m from the origin); the size of the
    subject does. ``None`` when no frame holds two distinct markers.
    """
    valid = ~np.isnan(data).any(axis=2)
    frames = valid.sum(axis=1) >= 2
    if not frames.any():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        spread = np.nanmax(data[frames], axis=1) - np.nanmin(data[frames], axis=1)
    extent = np.max(spread, axis=1)
    extent = extent[extent > 0]
    return float(np.median(extent)) if extent.size else None


def plausible_units(data: np.ndarray) -> tuple[list[str], str | None]:
    """Which length units make ``data`` (raw numbers) look like markers on a person.

    Returns the plausible units and the single most likely one (closest to a ~1 m body), or
    ``([...all...], None)`` when the data give no evidence.
    """
    extent = marker_cloud_extent(data)
    if extent is not None:
        ok = [u for u, f in LENGTH_UNITS.items()
              if PLAUSIBLE_EXTENT_M[0] <= extent * f <= PLAUSIBLE_EXTENT_M[1]]
        best = min(LENGTH_UNITS, key=lambda u: abs(math.log10(extent * LENGTH_UNITS[u])))
        return ok, best
    finite = np.abs(data[np.isfinite(data)])
    if finite.size == 0:
        return list(LENGTH_UNITS), None
    biggest = float(finite.max())
    ok = [u for u, f in LENGTH_UNITS.items() if biggest * f <= PLAUSIBLE_COORD_M]
    return ok, (None if len(ok) == len(LENGTH_UNITS) else (ok[0] if ok else "mm"))


def read_trc(path: str | os.PathLike, *, assume_units: str | None = None) -> KeypointSeries:
    """Read a TRC file into a :class:`KeypointSeries` in metres.

    ``assume_units`` overrides the file's Units field (and the plausibility check): use it for a
    file known to be mislabelled. Empty cells and short rows are missing samples (NaN). When the
    header disagrees with the data (NumFrames, NumMarkers) the data win and a warning is issued.
    """
    path = Path(path)
    src = os.fspath(path)
    if not path.is_file():
        raise InputError("marker file not found" if not path.exists() else "not a file", src)
    try:
        # utf-8-sig drops a byte-order mark that Windows editors put before "PathFileType".
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as exc:
        raise InputError(f"cannot read marker file: {exc.strerror or exc}", src) from exc
    lines = text.splitlines()

    def fail(problem: str, lineno: int | None = None):
        raise InputError(f"line {lineno}: {problem}" if lineno else problem, src)

    if not lines or not lines[0].strip().lower().startswith("pathfiletype"):
        fail("not a TRC file: the first line does not start with 'PathFileType'", 1)
    if len(lines) < 4:
        fail(f"TRC header is incomplete ({len(lines)} lines; expected at least 5)")
    if not lines[1].strip().lower().startswith("datarate"):
        fail("expected the header keys (DataRate CameraRate NumFrames ...)", 2)
    header = _parse_header_values(lines[1], lines[2])

    names_cells = _split(lines[3])
    if len(names_cells) < 2 or names_cells[0].lower().rstrip("#") != "frame" \
            or names_cells[1].lower() != "time":
        fail("expected the column header 'Frame#  Time  marker names ...'", 4)
    names = [c for c in names_cells[2:] if c]
    if not names:
        fail("no marker names in the column header", 4)

    first_data = 4
    if len(lines) > 4:
        coord = [c for c in _split(lines[4]) if c]
        if coord and all(_COORD_LABEL.match(c) for c in coord):
            if len(coord) != 3 * len(names):
                fail(f"{len(names)} marker names but {len(coord)} coordinate labels "
                     "(expected 3 per marker)", 5)
            first_data = 5

    m = len(names)
    frames, time, data, linenos, extra_columns = _parse_rows(lines, first_data, m, fail)
    if extra_columns:
        _warn(f"{src}: rows hold {extra_columns} more coordinate column(s) than there are "
              f"marker names; the unnamed columns are ignored")
    rate = _to_float(header.get("DataRate", ""))
    time = _repair_time(time, frames, rate, linenos, src)

    n_frames = _to_float(header.get("NumFrames", ""))
    if n_frames is not None and int(n_frames) != len(data):
        _warn(f"{src}: header says NumFrames={int(n_frames)} but the file has {len(data)} "
              "data rows; using the rows")
    n_markers = _to_float(header.get("NumMarkers", ""))
    if n_markers is not None and int(n_markers) != m:
        _warn(f"{src}: header says NumMarkers={int(n_markers)} but {m} markers are named; "
              "using the names")

    if np.isnan(data).all():
        fail("no marker has any data (every cell is empty)")
    empty = [names[j] for j in range(m) if np.isnan(data[:, j]).all()]
    if empty:
        _warn(f"{src}: {len(empty)} marker(s) have no data in any frame: {', '.join(empty)}")

    units = _resolve_units(header.get("Units", ""), data, assume_units, src)
    series = KeypointSeries(time, names, data, units=units, source=src)
    return series.to_metres()


def _parse_rows(lines: list[str], first: int, m: int, fail):
    """Frame numbers, times, (n, m, 3) data, source line numbers, count of unnamed columns."""
    width = 2 + 3 * m
    linenos, split = [], []
    for i in range(first, len(lines)):
        if lines[i].strip():
            linenos.append(i + 1)
            split.append(_split(lines[i]))
    if not split:
        fail("the file has a header but no data rows")
    extra = max(len(c) for c in split) - width
    extra_columns = 0
    if extra > 0:
        extra_columns = max((len(c) - width for c in split if any(c[width:])), default=0)
    # Fast path: pad short rows, read empty cells as NaN, convert in one go. Only a file with a
    # bad cell takes the slow path below, which names the line and column.
    try:
        block = np.array([[cell or "nan" for cell in c[:width]] + ["nan"] * (width - len(c))
                          for c in split], dtype=np.float64)
    except ValueError:
        block = None
    if block is not None:
        if np.isinf(block).any():
            r = int(np.argmax(np.isinf(block).any(axis=1)))
            fail("infinite value", linenos[r])
        if any(len(c) < 2 for c in split):
            r = next(i for i, c in enumerate(split) if len(c) < 2)
            fail(f"data row has {len(split[r])} cell(s); expected frame, time and coordinates",
                 linenos[r])
        return (block[:, 0], block[:, 1], block[:, 2:].reshape(len(split), m, 3), linenos,
                extra_columns)
    frames = np.full(len(split), np.nan)
    times = np.full(len(split), np.nan)
    data = np.full((len(split), 3 * m), np.nan)
    for r, (lineno, cells) in enumerate(zip(linenos, split)):
        if len(cells) < 2:
            fail(f"data row has {len(cells)} cell(s); expected frame, time and coordinates", lineno)
        for j, cell in enumerate(cells[:width]):
            if not cell:
                continue  # empty cell = missing
            v = _to_float(cell)
            if v is None:
                what = "frame number" if j == 0 else "time" if j == 1 else "number"
                fail(f"cannot read {cell!r} as a {what} (column {j + 1})", lineno)
            if math.isinf(v):
                fail(f"infinite value {cell!r} (column {j + 1})", lineno)
            if j == 0:
                frames[r] = v
            elif j == 1:
                times[r] = v
            else:
                data[r, j - 2] = v
    return frames, times, data.reshape(len(split), m, 3), linenos, extra_columns


def _warn(message: str) -> None:
    log.warning(message)
    warnings.warn(message, stacklevel=3)


def _repair_time(time: np.ndarray, frames: np.ndarray, rate: float | None, linenos, src) -> np.ndarray:
    """Use the file's times; rebuild them from frame numbers and DataRate only when they are
    missing or not increasing (e.g. 250 Hz times rounded to 2 decimals)."""
    have_rate = rate is not None and rate > 0
    bad_time = np.isnan(time).any() or (time.size > 1 and np.any(np.diff(time) <= 0))
    if not bad_time:
        return time
    frames_ok = np.isfinite(frames).all() and (frames.size < 2 or np.all(np.diff(frames) > 0))
    if have_rate and frames_ok:
        i0 = int(np.argmax(np.isfinite(time))) if np.isfinite(time).any() else None
        t0 = time[i0] - (frames[i0] - frames[0]) / rate if i0 is not None else \
            (frames[0] - 1) / rate
        _warn(f"{src}: the Time column is missing or not increasing; rebuilding time from "
              f"frame numbers and DataRate={rate:g}")
        return t0 + (frames - frames[0]) / rate
    if np.isnan(time).any():
        i = int(np.argmax(np.isnan(time)))
        raise InputError(f"line {linenos[i]}: empty time and no usable frame number/DataRate "
                         "to rebuild it", src)
    i = int(np.argmax(np.diff(time) <= 0))
    raise InputError(f"line {linenos[i + 1]}: time is not increasing ({time[i]:g} s then "
                     f"{time[i + 1]:g} s)", src)


def _resolve_units(declared: str, data: np.ndarray, assume: str | None, src: str) -> str:
    if assume is not None:
        try:
            return normalise_unit(assume)
        except ValueError as exc:
            raise InputError(f"assume_units: {exc}", src) from exc
    ok, likely = plausible_units(data)
    if not declared.strip():
        if likely is None or likely not in ok:
            raise InputError("the Units field is empty and the marker values do not reveal the "
                             "unit; pass assume_units='m' or 'mm'", src)
        _warn(f"{src}: the Units field is empty; the marker sizes suggest {likely!r}")
        return likely
    try:
        unit = normalise_unit(declared.strip().lower())
    except ValueError:
        raise InputError(f"unknown Units {declared.strip()!r} in the header (expected m, cm or mm)",
                         src) from None
    if unit == "px":
        raise InputError("TRC units are pixels; a marker file must be in m, cm or mm", src)
    if unit not in ok:
        extent = marker_cloud_extent(data)
        size = (f"the markers span about {extent:g} {unit}" if extent is not None
                else "the marker coordinates are too large")
        raise InputError(
            f"Units say {unit!r} but {size}, which is implausible for a person; the data look "
            f"like {likely!r}. Fix the header or pass assume_units={likely!r}", src)
    return unit


# --------------------------------------------------------------------------- writing
def write_trc(series: KeypointSeries, path: str | os.PathLike, *, units: str = "m") -> Path:
    """Write a standard OpenSim TRC (PathFileType 4) atomically; a missing sample is ``nan``.

    Missing samples are written as OpenSim's own TRC writer writes them (``nan``), not as empty
    cells: OpenSim's reader drops a row's trailing empty cells and then rejects the row as too
    short, so a file whose last marker has a gap would not open in OpenSim.

    DataRate is the nominal rate of the times (:func:`opensim_bridge.filters.nominal_rate`:
    the mean rate for uniformly sampled data with rounded times, else the median rate).
    Values are written with the shortest text that reads back to the same double.
    """
    path = Path(path)
    if series.dim != 3:
        raise InputError(f"a TRC file holds 3D markers; this series is {series.dim}D",
                         series.source or path)
    if len(series) == 0:
        raise InputError("cannot write a TRC file with no frames", series.source or path)
    try:
        unit = normalise_unit(units)
    except ValueError as exc:
        raise InputError(str(exc), path) from exc
    if unit == "px" or series.units == "px":
        raise InputError("TRC files hold lengths, not pixels", series.source or path)
    out = series.to_units(unit)
    n, m = len(out), len(out.names)
    rate = nominal_rate(out.time) if n > 1 else 0.0
    rate_txt = f"{rate:.10g}" if math.isfinite(rate) else "0"
    lines = [
        f"PathFileType\t4\t(X/Y/Z)\t{path.name}",
        "\t".join(HEADER_KEYS),
        "\t".join([rate_txt, rate_txt, str(n), str(m), unit, rate_txt, "1", str(n)]),
        "\t".join(["Frame#", "Time"] + [f"{name}\t\t" for name in out.names]).rstrip("\t"),
        "\t\t" + "\t".join(f"X{j}\tY{j}\tZ{j}" for j in range(1, m + 1)),
        "",
    ]
    flat = out.data.reshape(n, 3 * m).tolist()
    times = out.time.tolist()
    with atomic_write(path) as fh:
        fh.write("\n".join(lines) + "\n")
        for i in range(n):
            # v != v is the NaN test on plain floats; repr round-trips exactly.
            fh.write(f"{i + 1}\t{times[i]!r}\t"
                     + "\t".join("nan" if v != v else repr(v) for v in flat[i]) + "\n")
    return path


# --------------------------------------------------------------------------- OpenSim tables
_SUFFIXES = ["_x", "_y", "_z"]


def series_to_opensim_table(series: KeypointSeries):
    """A ``TimeSeriesTableVec3`` in metres for ``osim.MarkersReference``; NaN stays NaN."""
    import opensim as osim

    if series.dim != 3:
        raise InputError(f"OpenSim markers are 3D; this series is {series.dim}D", series.source)
    s = series.to_metres()
    n, m = len(s), len(s.names)
    flat = np.ascontiguousarray(s.data.reshape(n, 3 * m))
    labels = [f"{name}{suf}" for name in s.names for suf in _SUFFIXES]
    scalar = osim.TimeSeriesTable([float(t) for t in s.time], osim.Matrix.createFromMat(flat),
                                  labels)
    table = scalar.packVec3(_SUFFIXES)
    rate = nominal_rate(s.time)
    rate_txt = f"{rate:.10g}" if math.isfinite(rate) else "0"
    for key, value in (("DataRate", rate_txt), ("CameraRate", rate_txt), ("Units", "m"),
                       ("NumFrames", str(n)), ("NumMarkers", str(m))):
        table.addTableMetaDataString(key, value)
    return table


def series_from_opensim_table(table, *, source: str | None = None) -> KeypointSeries:
    """The inverse of :func:`series_to_opensim_table`; honours a ``Units`` metadata entry."""
    units = "m"
    if table.hasTableMetaDataKey("Units"):
        units = table.getTableMetaDataString("Units").strip() or "m"
    names = list(table.getColumnLabels())
    time = np.asarray(table.getIndependentColumn(), dtype=float)
    n, m = len(time), len(names)
    if m == 0 or n == 0:
        data = np.zeros((n, m, 3))
    else:
        # Keep the flattened table alive: getMatrix() returns a view into it, and SWIG would
        # otherwise free the table while numpy still reads from it (a segfault).
        flat = table.flatten(_SUFFIXES)
        data = np.array(flat.getMatrix().to_numpy(), dtype=float).reshape(n, m, 3)
    try:
        unit = normalise_unit(units)
    except ValueError as exc:
        raise InputError(f"table Units: {exc}", source) from exc
    return KeypointSeries(time, names, data, units=unit, source=source).to_metres()
