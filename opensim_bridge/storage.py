"""OpenSim scalar tables (.mot / .sto): a validated :class:`Table`, a tolerant reader, a writer.

Three header dialects occur in real data and all are read here:

* OpenSim 4: a name line, ``version=1``, ``nRows=``, ``nColumns=``, ``inDegrees=``, ``endheader``;
* SIMM / OpenSim 1-3: ``name ...``, ``datacolumns N``, ``datarows N``, ``range a b``, ``endheader``;
* anything else with ``key=value`` lines (e.g. OpenCap's ``DataType=double``, ``OpenSimVersion=``)
  or free text ("Angles are in degrees.") before ``endheader``.

Files are written in the OpenSim 4 dialect (name line, ``version=3``, ``nRows``, ``nColumns``,
``inDegrees``, ``DataType=double``, ``endheader``), which ``osim.TimeSeriesTable`` and
``osim.Storage`` both read in full, NaN included (``osim.Storage`` stops at the first NaN row of a
``version=1`` file).
"""
from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from .atomic import atomic_write
from .errors import InputError, ModelError
from .timeseries import time_window

_KEY_VALUE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*=\s*(.*?)\s*$")
_OLD_STYLE = re.compile(r"^\s*(name|datacolumns|datarows|range|otherdata)\b\s*(.*?)\s*$", re.I)
#: Spellings of NaN written by C/C++ runtimes (MSVC's "-nan(ind)", old "1.#QNAN").
_NAN_WORDS = {"nan", "-nan", "+nan", "nan(ind)", "-nan(ind)", "1.#qnan", "-1.#qnan", "1.#ind",
              "-1.#ind", "n/a", "na"}


def _parse_float(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return math.nan if cell.lower() in _NAN_WORDS else None


class Table:
    """Named scalar columns over time, as in an OpenSim .mot/.sto file.

    Attributes
    ----------
    time : (n,) float64 seconds, strictly increasing.
    labels : tuple of k unique column names (the time column excluded).
    data : (n, k) float64; NaN marks a missing value.
    in_degrees : True/False when the file says whether angles are in degrees, else None.
    name : the table's name (the first header line of a .mot/.sto file).
    meta : other header entries, as strings.
    source : the file the table came from, for error messages.
    """

    __slots__ = ("time", "labels", "data", "in_degrees", "name", "meta", "source")

    def __init__(self, time, labels: Iterable[str], data, in_degrees: bool | None = None,
                 name: str = "", meta: Mapping[str, str] | None = None,
                 source: str | os.PathLike | None = None):
        self.source = None if source is None else os.fspath(source)
        labels = tuple(str(x) for x in labels)
        time = np.asarray(time, dtype=np.float64)
        data = np.asarray(data, dtype=np.float64)
        if data.ndim == 1 and len(labels) == 1:
            data = data[:, None]
        if time.ndim != 1:
            self._fail(f"time must be one-dimensional, got shape {time.shape}")
        if data.ndim != 2 or data.shape != (len(time), len(labels)):
            self._fail(f"data has shape {data.shape}; expected ({len(time)}, {len(labels)}) "
                       "(times x labels)")
        if not np.isfinite(time).all():
            self._fail("time column contains NaN or infinite values")
        if time.size > 1 and np.any(np.diff(time) <= 0):
            i = int(np.argmax(np.diff(time) <= 0))
            self._fail(f"time is not strictly increasing at row {i + 2} "
                       f"({time[i]:.9g} s then {time[i + 1]:.9g} s)")
        if any(not lab for lab in labels):
            self._fail("a column has an empty label")
        if len(set(labels)) != len(labels):
            seen, dup = set(), set()
            for lab in labels:
                (dup.add(lab) if lab in seen else seen.add(lab))
            self._fail(f"duplicate column labels: {', '.join(sorted(dup))}")
        if in_degrees not in (True, False, None):
            self._fail(f"in_degrees must be True, False or None, not {in_degrees!r}")
        self.time, self.labels, self.data = time, labels, data
        self.in_degrees = in_degrees
        self.name = str(name)
        self.meta = dict(meta or {})

    def _fail(self, problem: str):
        raise InputError(problem, self.source)

    # ----------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.time)

    @property
    def shape(self) -> tuple[int, int]:
        return self.data.shape

    @property
    def rate(self) -> float:
        """Median sampling rate in Hz."""
        return float(1.0 / np.median(np.diff(self.time))) if len(self.time) > 1 else math.nan

    def index(self, label: str) -> int:
        try:
            return self.labels.index(label)
        except ValueError:
            self._fail(f"no column named {label!r}")

    def column(self, label: str) -> np.ndarray:
        return self.data[:, self.index(label)]

    def __getitem__(self, label: str) -> np.ndarray:
        return self.column(label)

    def __contains__(self, label: object) -> bool:
        return label in self.labels

    def copy(self, **changes) -> "Table":
        kw = dict(time=self.time.copy(), labels=self.labels, data=self.data.copy(),
                  in_degrees=self.in_degrees, name=self.name, meta=dict(self.meta),
                  source=self.source)
        kw.update(changes)
        return Table(**kw)

    def select(self, labels: Iterable[str]) -> "Table":
        labels = list(labels)
        idx = [self.index(lab) for lab in labels]
        return self.copy(labels=labels, data=self.data[:, idx])

    def between(self, start: float | None = None, end: float | None = None,
                tolerance: float = 1e-6) -> "Table":
        """Rows with start <= t <= end. A range that misses the data is an error, not empty."""
        keep = time_window(self.time, start, end, self._fail, tolerance)
        return self.copy(time=self.time[keep], data=self.data[keep])

    # ----------------------------------------------------------------- angle units
    def _rotational_columns(self, rotational: Iterable[str]) -> list[int]:
        rot = set(rotational)
        return [j for j, lab in enumerate(self.labels) if _coordinate_of(lab) in rot]

    def to_radians(self, rotational: Iterable[str]) -> "Table":
        """Rotational columns in radians. ``rotational``: coordinate names
        (see :func:`rotational_coordinates`); other columns (translations) are left alone."""
        if self.in_degrees is None:
            self._fail("the table does not say whether angles are in degrees (no inDegrees "
                       "entry); set in_degrees before converting")
        if not self.in_degrees:
            return self.copy()
        data = self.data.copy()
        cols = self._rotational_columns(rotational)
        data[:, cols] = np.deg2rad(data[:, cols])
        return self.copy(data=data, in_degrees=False)

    def to_degrees(self, rotational: Iterable[str]) -> "Table":
        """Rotational columns in degrees; the inverse of :meth:`to_radians`."""
        if self.in_degrees is None:
            self._fail("the table does not say whether angles are in degrees (no inDegrees "
                       "entry); set in_degrees before converting")
        if self.in_degrees:
            return self.copy()
        data = self.data.copy()
        cols = self._rotational_columns(rotational)
        data[:, cols] = np.rad2deg(data[:, cols])
        return self.copy(data=data, in_degrees=True)

    def __repr__(self) -> str:
        span = f"{self.time[0]:.3f}-{self.time[-1]:.3f} s" if len(self) else "empty"
        deg = {True: "degrees", False: "radians", None: "angle unit unknown"}[self.in_degrees]
        return f"Table({self.name!r}, {len(self.labels)} columns x {len(self)} rows, {span}, {deg})"


def _coordinate_of(label: str) -> str:
    """Coordinate name of a column: ``knee_angle_r`` or a state path
    ``/jointset/knee_r/knee_angle_r/value`` (OpenSim 4 states files)."""
    if label.startswith("/"):
        parts = [p for p in label.split("/") if p]
        if len(parts) >= 2 and parts[-1] in ("value", "speed"):
            return parts[-2]
    return label


def rotational_coordinates(model) -> set[str]:
    """Names of an OpenSim model's rotational coordinates (``model``: ``osim.Model`` or path).

    Same rule as OpenSim's own degree/radian conversion (SimbodyEngine): a coordinate whose
    motion type is Rotational. Coupled coordinates are excluded, as OpenSim does.
    """
    import opensim as osim

    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not Path(path).is_file():
            raise ModelError("model file not found", path)
        try:
            model = osim.Model(path)
        except Exception as exc:  # OpenSim raises RuntimeError with its own message.
            raise ModelError(f"OpenSim cannot load the model: {exc}", path) from exc
    coords = model.getCoordinateSet()
    return {coords.get(i).getName() for i in range(coords.getSize())
            if coords.get(i).getMotionType() == osim.Coordinate.Rotational}


# --------------------------------------------------------------------------- reading
def _split(line: str) -> list[str]:
    if "\t" in line:
        cells = [c.strip() for c in line.rstrip("\r\n").split("\t")]
        while cells and not cells[-1]:  # writers often leave a trailing tab
            cells.pop()
        # Leading whitespace-only cell from lines indented before the first tab.
        return cells
    return line.split()


def read_table(path: str | os.PathLike) -> Table:
    """Read an OpenSim .mot/.sto file (any of the dialects in the module docstring)."""
    path = Path(path)
    src = os.fspath(path)
    if not path.is_file():
        raise InputError("table file not found" if not path.exists() else "not a file", src)
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")  # tolerate a BOM
    except OSError as exc:
        raise InputError(f"cannot read table file: {exc.strerror or exc}", src) from exc
    lines = text.splitlines()

    def fail(problem: str, lineno: int | None = None):
        raise InputError(f"line {lineno}: {problem}" if lineno else problem, src)

    end = next((i for i, ln in enumerate(lines) if ln.strip().lower() == "endheader"), None)
    if end is None:
        fail("no 'endheader' line: not an OpenSim .mot/.sto file")

    name, meta, notes = "", {}, []
    for i, raw in enumerate(lines[:end]):
        line = raw.strip()
        if not line:
            continue
        kv = _KEY_VALUE.match(line)
        old = _OLD_STYLE.match(line)
        if kv:
            meta[kv.group(1)] = kv.group(2)
        elif old:
            key = old.group(1).lower()
            if key == "name":
                name = name or old.group(2)
            else:
                meta[key] = old.group(2)
        elif i == 0:
            name = line  # OpenSim 4: the first line is the table's name.
        else:
            notes.append(line)
    if notes:
        meta["notes"] = " | ".join(notes)
    in_degrees = _in_degrees(meta, notes, src)

    body = [(i + 1, ln) for i, ln in enumerate(lines[end + 1:], start=end + 1) if ln.strip()]
    if not body:
        fail("no column labels after 'endheader'")
    label_lineno, label_line = body[0]
    labels = _split(label_line)
    if not labels or labels[0].lower() != "time":
        fail(f"the first column must be 'time', found {labels[0] if labels else 'nothing'!r}",
             label_lineno)
    labels = labels[1:]
    k = len(labels)

    rows = body[1:]
    data = _parse_rows(rows, k + 1, fail)
    if data.shape[0] == 0:
        fail("the table has a header but no data rows")
    time = data[:, 0]
    if np.isnan(time).any():
        fail("empty or NaN time", rows[int(np.argmax(np.isnan(time)))][0])
    if time.size > 1 and np.any(np.diff(time) <= 0):
        i = int(np.argmax(np.diff(time) <= 0))
        fail(f"time is not increasing ({time[i]:.9g} s then {time[i + 1]:.9g} s)", rows[i + 1][0])

    declared_cols = meta.get("nColumns", meta.get("datacolumns"))
    if declared_cols and declared_cols.strip().isdigit() and int(declared_cols) != k + 1:
        warnings.warn(f"{src}: header says {int(declared_cols)} columns but {k + 1} are labelled; "
                      "using the labels", stacklevel=2)
    declared_rows = meta.get("nRows", meta.get("datarows"))
    if declared_rows and declared_rows.strip().isdigit() and int(declared_rows) != len(rows):
        warnings.warn(f"{src}: header says {int(declared_rows)} rows but the file has {len(rows)}; "
                      "using the rows", stacklevel=2)
    labels = _rename_repeated_columns(labels, src)
    return Table(time, labels, data[:, 1:], in_degrees=in_degrees, name=name, meta=meta, source=src)


def _rename_repeated_columns(labels: list[str], src: str) -> list[str]:
    """Some real files repeat column labels (Gait2392's reference IK carries two force plates'
    columns under the same names) and OpenSim reads them. Repeats are kept, as ``<label>_2``,
    ``_3``..., with a warning: even identical values may belong to different plates."""
    taken, seen, out, renamed = set(labels), set(), [], []
    for lab in labels:
        if lab in seen:
            k = 2
            while f"{lab}_{k}" in taken:
                k += 1
            taken.add(f"{lab}_{k}")
            renamed.append(f"{lab}->{lab}_{k}")
            lab = f"{lab}_{k}"
        seen.add(lab)
        out.append(lab)
    if renamed:
        warnings.warn(f"{src}: renamed repeated column labels {', '.join(renamed)}", stacklevel=3)
    return out


def _in_degrees(meta: dict, notes: list[str], src: str) -> bool | None:
    value = meta.get("inDegrees")
    if value is not None:
        v = value.strip().lower()
        if v in ("yes", "true", "1"):
            return True
        if v in ("no", "false", "0"):
            return False
        raise InputError(f"inDegrees={value!r} in the header (expected yes or no)", src)
    text = " ".join(notes).lower()
    if "angles are in degrees" in text:
        return True
    if "angles are in radians" in text:
        return False
    return None


def _parse_rows(rows: list[tuple[int, str]], width: int, fail) -> np.ndarray:
    if not rows:
        return np.zeros((0, width))
    split = [_split(ln) for _, ln in rows]
    # Fast path: rectangular, no empty cells, plain numbers.
    if all(len(c) == width for c in split) and not any("" in c for c in split):
        try:
            return np.array(split, dtype=np.float64)
        except ValueError:
            pass  # fall through to the cell-by-cell parse that names the bad cell
    out = np.full((len(rows), width), np.nan)
    for r, ((lineno, _), cells) in enumerate(zip(rows, split)):
        if len(cells) != width:
            fail(f"row has {len(cells)} values but there are {width} columns "
                 "(time + labels); the file may be truncated", lineno)
        for j, cell in enumerate(cells):
            if cell:
                v = _parse_float(cell)
                if v is None:
                    fail(f"cannot read {cell!r} as a number (column {j + 1})", lineno)
                out[r, j] = v
    if np.isinf(out).any():
        r = int(np.argmax(np.isinf(out).any(axis=1)))
        fail("infinite value", rows[r][0])
    return out


# --------------------------------------------------------------------------- writing
def _fmt(x: float) -> str:
    # repr is the shortest text that reads back to the same double (better than %.10g).
    return "NaN" if math.isnan(x) else repr(float(x))


_RESERVED = {"version", "nrows", "ncolumns", "indegrees", "datacolumns", "datarows", "range",
             "name", "notes", "otherdata", "datatype", "opensimversion"}


def write_table(table: Table, path: str | os.PathLike) -> Path:
    """Write ``table`` as an OpenSim 4 .mot/.sto file, atomically, at full double precision."""
    path = Path(path)
    if len(table) == 0:
        raise InputError("cannot write a table with no rows", table.source or path)
    bad = [lab for lab in table.labels if any(ch in lab for ch in "\t\r\n")]
    if bad:
        raise InputError(f"column labels contain tabs or newlines: {bad!r}", table.source or path)
    name = (table.name or path.stem).replace("\n", " ").strip() or path.stem
    # version=3 + DataType, as OpenSim 4's STOFileAdapter writes: osim.Storage parses a
    # version=1 file with its legacy reader, which silently stops at the first NaN row.
    header = [name, "version=3", f"nRows={len(table)}", f"nColumns={len(table.labels) + 1}"]
    if table.in_degrees is not None:
        header.append(f"inDegrees={'yes' if table.in_degrees else 'no'}")
    header.append("DataType=double")
    for key, value in table.meta.items():
        value = str(value)
        if key.lower() in _RESERVED or not _KEY_VALUE.match(f"{key}=x") or "\n" in value:
            continue
        header.append(f"{key}={value}")
    header.append("endheader")
    header.append("\t".join(("time",) + table.labels))
    with atomic_write(path) as fh:
        fh.write("\n".join(header) + "\n")
        for t, row in zip(table.time, table.data):
            fh.write(_fmt(t) + "\t" + "\t".join(_fmt(v) for v in row) + "\n")
    return path
