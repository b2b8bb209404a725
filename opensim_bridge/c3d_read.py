"""Read everything kinevid needs from a C3D file: markers, model outputs, analogs, force plates,
events and who wrote it.

Built on the ``c3d`` package's header, parameter and number-format code (see
:mod:`opensim_bridge.c3d_params`); the data section is decoded here in one vectorised pass
(the package's frame-by-frame loop is ~10x slower) after every count has been checked against
the file's size. Any problem becomes :class:`C3DError` naming the file and the reason.

Conventions:

* markers are in metres, in the lab's frame (no axis change), time
  ``(first_frame - 1 + i) / POINT:RATE`` with the 1-based first frame (as ezc3d);
* a point with a negative residual word (or a non-finite coordinate) is missing (NaN);
* points listed in POINT:ANGLES, MOMENTS, FORCES, POWERS, SCALARS or REACTIONS are model
  outputs (Vicon Plug-in Gait and the like), kept apart from markers, in the file's units;
* analog value = (raw - ANALOG:OFFSET) * ANALOG:SCALE * ANALOG:GEN_SCALE;
* force plates: see :mod:`opensim_bridge.c3d_forceplates`.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from pathlib import Path

import numpy as np

from .c3d_params import C3DError, Parameters, read_header, read_parameters
from .timeseries import Event, KeypointSeries, normalise_unit

__all__ = ["C3DError", "C3DData", "AnalogData", "read_c3d", "MODEL_OUTPUT_GROUPS"]

log = logging.getLogger(__name__)

#: POINT parameters that list model outputs rather than markers, and the parameter naming
#: their units.
MODEL_OUTPUT_GROUPS = {"angles": "ANGLE_UNITS", "moments": "MOMENT_UNITS",
                       "forces": "FORCE_UNITS", "powers": "POWER_UNITS",
                       "scalars": "SCALAR_UNITS", "reactions": "REACTION_UNITS"}
#: Largest file we read whole into memory.
MAX_FILE_BYTES = 2 << 30


@dataclasses.dataclass
class AnalogData:
    """Analog channels at the analog rate: ``data`` is (samples, channels) in ``units``."""

    labels: tuple[str, ...]
    units: tuple[str, ...]
    rate: float
    samples_per_frame: int
    time: np.ndarray
    data: np.ndarray

    def column(self, label: str) -> np.ndarray:
        return self.data[:, self.labels.index(label)]


@dataclasses.dataclass
class C3DData:
    """What :func:`read_c3d` returns. ``markers`` is None when the file holds no marker."""

    path: str
    markers: KeypointSeries | None
    point_rate: float
    first_frame: int                  # 1-based, as in the header
    n_frames: int
    point_time: np.ndarray            # (n_frames,) seconds
    point_labels: tuple[str, ...]     # all POINT:USED labels (markers and model outputs)
    points: np.ndarray                # (n_frames, used, 3) in the file's units, NaN = invalid
    model_outputs: dict[str, dict[str, np.ndarray]]   # group -> label -> (n_frames, 3)
    model_output_units: dict[str, str]
    analog: AnalogData | None
    force_plates: list                # of c3d_forceplates.ForcePlate
    events: list[Event]
    manufacturer: dict[str, str]
    processor: str                    # "Intel", "DEC" or "MIPS"
    format: str                       # "integer" or "float"
    point_scale: float
    point_units: str                  # as written in the file (markers are converted to m)
    parameters: Parameters
    warnings: list[str]

    @property
    def duration(self) -> float:
        return self.n_frames / self.point_rate if self.point_rate > 0 else float("nan")


# ---------------------------------------------------------------------------- helpers
def _unique(names: list[str], prefix: str, notes: list[str]) -> list[str]:
    out, seen, renamed = [], set(), []
    for i, name in enumerate(names):
        base = name or f"{prefix}{i + 1}"
        new, k = base, 2
        while new in seen:
            new, k = f"{base}_{k}", k + 1
        if new != name:
            renamed.append(f"{name or '(blank)'}->{new}")
        seen.add(new)
        out.append(new)
    blanks = [r for r in renamed if r.startswith("(blank)")]
    dups = [r for r in renamed if not r.startswith("(blank)")]
    if blanks:
        notes.append(f"{len(blanks)} blank labels named {prefix}N")
    if dups:
        notes.append(f"duplicate labels renamed: {', '.join(dups[:20])}"
                     + (f" and {len(dups) - 20} more" if len(dups) > 20 else ""))
    return out


def _frame_range(header, params: Parameters) -> tuple[int, int]:
    """(first, last) 1-based frame numbers. Files with more than 65535 frames keep the real
    range in TRIAL:ACTUAL_START_FIELD / ACTUAL_END_FIELD (two 16-bit words, low first)."""
    first, last = int(header.first_frame), int(header.last_frame)
    start = params.numbers("TRIAL:ACTUAL_START_FIELD", unsigned=True)
    end = params.numbers("TRIAL:ACTUAL_END_FIELD", unsigned=True)
    if start is not None and end is not None and start.size >= 2 and end.size >= 2 \
            and params.get("TRIAL:ACTUAL_END_FIELD").bytes_per_element == 2:
        s = int(start[0]) + 65536 * int(start[1])
        e = int(end[0]) + 65536 * int(end[1])
        if e >= last and e >= s:
            return s, e
    return first, last


def _guess_manufacturer(params: Parameters) -> dict[str, str]:
    info = {}
    for key in ("COMPANY", "SOFTWARE", "VERSION_LABEL", "EDITION"):
        v = params.string(f"MANUFACTURER:{key}")
        if v:
            info[key.lower()] = v
    if "MANUFACTURER:VERSION" in params and "version_label" not in info:
        v = params.numbers("MANUFACTURER:VERSION")
        if v is not None and v.size:
            info["version"] = ".".join(str(int(x)) for x in v[:4])
    if "company" not in info:
        groups = set(params.group_names())
        # Groups only one vendor's software writes, when the MANUFACTURER group is missing.
        if {"PROCESSING", "SUBJECTS"} & groups and "POINT:ANGLES" in params:
            info["guess"] = "Vicon (Nexus/Workstation parameters present)"
        elif "EVART" in " ".join(params.group_names()).upper():
            info["guess"] = "Motion Analysis (EVaRT)"
        elif params.string("FORCE_PLATFORM:MODEL"):
            info["guess"] = f"force plate model {params.string('FORCE_PLATFORM:MODEL')}"
    return info


def _events(header, params: Parameters, notes: list[str]) -> list[Event]:
    events: list[Event] = []
    used = int(params.number("EVENT:USED", 0, unsigned=True) or 0)
    if used > 0:
        labels = params.strings("EVENT:LABELS")
        contexts = params.strings("EVENT:CONTEXTS")
        times = params.array("EVENT:TIMES", (2,))
        if times is None:
            notes.append("EVENT:USED is set but EVENT:TIMES is missing; events ignored")
        else:
            n = min(used, len(times))
            if n < used:
                notes.append(f"EVENT:USED says {used} events but EVENT:TIMES holds {len(times)}")
            for i in range(n):
                t = 60.0 * times[i, 0] + times[i, 1]
                if not np.isfinite(t):
                    continue
                name = labels[i] if i < len(labels) and labels[i] else f"event_{i + 1}"
                ctx = contexts[i] if i < len(contexts) else ""
                events.append(Event(name, float(t), ctx))
    else:
        for t, label in header.events:
            label = str(label).strip(" \x00")
            if np.isfinite(t):
                events.append(Event(label or "event", float(t), ""))
    return sorted(events, key=lambda e: e.time)


# ---------------------------------------------------------------------------- the reader
def read_c3d(path: str | os.PathLike, *, force_threshold: float = 20.0,
             zero_baseline: bool = True) -> C3DData:
    """Read a C3D file. ``force_threshold`` (N): the centre of pressure is NaN below it;
    ``zero_baseline``: subtract each plate channel's mean over FORCE_PLATFORM:ZERO frames."""
    src = os.fspath(path)
    p = Path(path)
    if not p.is_file():
        raise C3DError("C3D file not found" if not p.exists() else "not a file", src)
    size = p.stat().st_size
    if size > MAX_FILE_BYTES:
        raise C3DError(f"file is {size / 2**30:.1f} GiB; kinevid reads C3D files up to "
                       f"{MAX_FILE_BYTES >> 30} GiB", src)
    try:
        with open(p, "rb") as fh:
            buf = fh.read()
    except OSError as exc:
        raise C3DError(f"cannot read the file ({exc.strerror or exc})", src) from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the c3d package warns on odd-but-legal values
            with np.errstate(all="ignore"):
                data = _read(buf, src, force_threshold, zero_baseline)
    except C3DError:
        raise
    except MemoryError as exc:
        raise C3DError("not enough memory to read the file", src) from exc
    except Exception as exc:  # the c3d package and numpy raise many types on corrupt bytes
        raise C3DError(f"corrupt or unsupported C3D file ({type(exc).__name__}: {exc})",
                       src) from exc
    for note in data.warnings:
        # Renamed labels change what the user will look for; the rest is detail for `info`.
        (log.warning if "renamed" in note else log.info)("%s: %s", src, note)
    return data


def _read(buf: bytes, src: str, force_threshold: float, zero_baseline: bool) -> C3DData:
    from .c3d_forceplates import read_force_plates

    header, dtypes, processor, pstart = read_header(buf, src)
    params = read_parameters(buf, pstart, dtypes, src)
    notes = list(params.warnings)

    # ---- counts, each checked before anything is allocated from it
    used = params.number("POINT:USED", None, unsigned=True)
    used = int(header.point_count if used is None else used)
    if used != header.point_count:
        notes.append(f"header says {header.point_count} points, POINT:USED {used}; "
                     f"POINT:USED is used")
    scale = params.number("POINT:SCALE", None)
    if scale is None or not np.isfinite(scale) or scale == 0:
        scale = float(header.scale_factor)
    if not np.isfinite(scale) or scale == 0:
        raise C3DError(f"invalid POINT:SCALE {scale!r}", src)
    is_float = scale < 0
    rate = params.number("POINT:RATE", None)
    if rate is None or not (np.isfinite(rate) and rate > 0):
        rate = float(header.frame_rate)
    if not (np.isfinite(rate) and rate > 0):
        raise C3DError(f"invalid point rate {rate!r} (POINT:RATE and header)", src)
    n_analog = params.number("ANALOG:USED", None, unsigned=True)
    if n_analog is None:
        # No ANALOG group: the header's analog values per frame still occupy the data section.
        hs = int(header.analog_per_frame)
        n_analog = header.analog_count // hs if hs > 0 else 0
        if n_analog:
            notes.append(f"ANALOG:USED is missing; the header's {header.analog_count} analog "
                         f"values per frame are read as {n_analog} channels")
    n_analog = int(n_analog)
    spf = int(header.analog_per_frame) if n_analog else 0
    analog_rate = params.number("ANALOG:RATE", None)
    if n_analog:
        if analog_rate is None or not (np.isfinite(analog_rate) and analog_rate > 0):
            notes.append("ANALOG:RATE is missing; using the header's samples per frame")
            analog_rate = spf * rate
        ratio = int(analog_rate / rate + 1e-6)
        if ratio > 0 and ratio != spf:
            # ANALOG:RATE / POINT:RATE describes the data section's layout in files whose
            # header disagrees (e.g. EVaRT's evart.c3d: header 17, data laid out with 16),
            # as ezc3d and the c3d package read it.
            notes.append(f"header says {spf} analog samples per frame, ANALOG:RATE / "
                         f"POINT:RATE gives {ratio}; {ratio} is used")
            spf = ratio
        if spf <= 0:
            raise C3DError(f"{n_analog} analog channels but no analog samples per frame", src)
        if header.analog_count and header.analog_count != n_analog * spf:
            notes.append(f"header says {header.analog_count} analog values per frame, "
                         f"ANALOG:USED x samples per frame = {n_analog * spf}")
    first, last = _frame_range(header, params)
    n_frames = last - first + 1
    if n_frames <= 0:
        raise C3DError(f"no frames (first frame {first}, last frame {last})", src)
    word = 4 if is_float else 2
    data_block = params.number("POINT:DATA_START", None, unsigned=True)
    if data_block is None or data_block < 2 or (data_block - 1) * 512 >= len(buf):
        data_block = header.data_block
    elif int(data_block) != header.data_block:
        notes.append(f"header data block {header.data_block} != POINT:DATA_START "
                     f"{int(data_block)}; POINT:DATA_START is used")
    data_start = (int(data_block) - 1) * 512
    available = len(buf) - data_start
    if data_start <= pstart or available <= 0:
        raise C3DError(f"data section (block {int(data_block)}) lies outside the file", src)
    point_bytes = 4 * used * word
    frame_bytes = point_bytes + n_analog * spf * word
    alt = 4 * int(header.point_count) * word + n_analog * spf * word
    if n_frames * frame_bytes > available and used != header.point_count \
            and 0 < n_frames * alt <= available:
        # POINT:USED disagrees with the header and only the header's count fits the file.
        notes.append(f"POINT:USED ({used}) does not fit the data section; the header's point "
                     f"count ({header.point_count}) does and is used")
        used = int(header.point_count)
        point_bytes, frame_bytes = 4 * used * word, alt
    if frame_bytes == 0:
        raise C3DError("the file holds neither points nor analog channels", src)
    if n_frames * frame_bytes > available:
        whole = available // frame_bytes
        raise C3DError(f"declares {n_frames} frames of {frame_bytes} bytes "
                       f"({n_frames * frame_bytes} bytes) but only {available} bytes follow "
                       f"the data start ({whole} whole frames): truncated or corrupt", src)

    # ---- the data section, decoded in one pass
    block = np.frombuffer(buf, dtype=np.uint8, count=n_frames * frame_bytes, offset=data_start)
    block = block.reshape(n_frames, frame_bytes)
    points_xyz, point_valid = _decode_points(block[:, :point_bytes], used, is_float, abs(scale),
                                             dtypes)
    time = (first - 1 + np.arange(n_frames)) / rate

    # ---- labels and the marker / model-output split
    labels = params.strings_continued("POINT:LABELS")[:used]
    labels += [""] * (used - len(labels))
    labels = _unique(labels, "unlabelled_", notes)
    output_of: dict[str, str] = {}
    for group, _unit_key in MODEL_OUTPUT_GROUPS.items():
        for name in params.strings_continued(f"POINT:{group.upper()}"):
            if name and name not in output_of:
                output_of[name] = group
    model_outputs: dict[str, dict[str, np.ndarray]] = {}
    marker_idx = []
    for i, name in enumerate(labels):
        group = output_of.get(name)
        if group is None:
            marker_idx.append(i)
        else:
            values = points_xyz[:, i].copy()
            values[~point_valid[:, i]] = np.nan
            model_outputs.setdefault(group, {})[name] = values
    out_units = {g: params.string(f"POINT:{u}") for g, u in MODEL_OUTPUT_GROUPS.items()
                 if g in model_outputs}

    unit_text = params.string("POINT:UNITS").strip()
    if not unit_text:
        notes.append("POINT:UNITS is empty; millimetres assumed (the C3D convention)")
        unit_text = "mm"
    # Some writers cut the unit to 4 characters ("mete" for metres).
    cut = {"mete": "m", "metr": "m", "mill": "mm", "cent": "cm"}.get(unit_text.lower()[:4])
    if cut and unit_text.lower() not in ("m", "mm", "cm"):
        notes.append(f"POINT:UNITS {unit_text!r} read as {cut!r}")
        unit_text = cut
    try:
        unit = normalise_unit(unit_text.lower())
        if unit == "px":
            raise ValueError
    except ValueError:
        raise C3DError(f"unknown POINT:UNITS {unit_text!r} (expected mm, cm or m)", src) from None
    factor = {"m": 1.0, "cm": 0.01, "mm": 0.001}[unit]

    events = _events(header, params, notes)
    all_points = points_xyz.copy()
    all_points[~point_valid] = np.nan
    markers = None
    if marker_idx:
        xyz = points_xyz[:, marker_idx] * factor
        xyz[~point_valid[:, marker_idx]] = np.nan
        markers = KeypointSeries(time, [labels[i] for i in marker_idx], xyz, units="m",
                                 events=events, source=src)

    analog = None
    if n_analog:
        analog = _decode_analog(block[:, point_bytes:], n_analog, spf, is_float, params,
                                float(analog_rate), (first - 1) / rate, notes)
    plates = read_force_plates(params, analog, factor, rate, first, notes, src,
                               force_threshold=force_threshold, zero_baseline=zero_baseline)
    return C3DData(
        path=src, markers=markers, point_rate=float(rate), first_frame=first, n_frames=n_frames,
        point_time=time, point_labels=tuple(labels), points=all_points,
        model_outputs=model_outputs, model_output_units=out_units,
        analog=analog, force_plates=plates, events=events,
        manufacturer=_guess_manufacturer(params), processor=processor,
        format="float" if is_float else "integer", point_scale=float(scale),
        point_units=unit_text, parameters=params, warnings=notes)


def _decode_points(raw: np.ndarray, used: int, is_float: bool, scale: float, dtypes):
    """(n, used, 3) coordinates in the file's units and (n, used) validity."""
    n = raw.shape[0]
    if used == 0:
        return np.zeros((n, 0, 3)), np.zeros((n, 0), dtype=bool)
    flat = np.ascontiguousarray(raw).reshape(-1)
    if is_float:
        if dtypes.is_dec:
            from c3d.c3d import DEC_to_IEEE_BYTES
            words = DEC_to_IEEE_BYTES(flat.tobytes())
        else:
            words = flat.view(dtypes.float32)
        words = words.reshape(n, used, 4).astype(np.float64)
        xyz = words[..., :3]
        # The fourth word is the residual/camera word stored as a float; negative = invalid.
        valid = words[..., 3] >= 0
    else:
        words = flat.view(dtypes.int16).reshape(n, used, 4)
        xyz = words[..., :3].astype(np.float64) * scale
        valid = words[..., 3] >= 0
    valid &= np.isfinite(xyz).all(axis=2)
    return xyz, valid


def _decode_analog(raw: np.ndarray, channels: int, spf: int, is_float: bool,
                   params: Parameters, rate: float, t0: float, notes: list[str]) -> AnalogData:
    n = raw.shape[0]
    flat = np.ascontiguousarray(raw).reshape(-1)
    dtypes = params.dtypes
    unsigned = params.string("ANALOG:FORMAT").upper() == "UNSIGNED"
    if is_float:
        if dtypes.is_dec:
            from c3d.c3d import DEC_to_IEEE_BYTES
            values = DEC_to_IEEE_BYTES(flat.tobytes())
        else:
            values = flat.view(dtypes.float32)
    else:
        values = flat.view(dtypes.uint16 if unsigned else dtypes.int16)
    values = values.reshape(n * spf, channels).astype(np.float64)
    gen = params.number("ANALOG:GEN_SCALE", 1.0)
    scales = np.ones(channels)
    s = params.numbers_continued("ANALOG:SCALE")
    if s is not None and s.size:
        k = min(channels, s.size)
        scales[:k] = s[:k]
    offsets = np.zeros(channels)
    o = params.numbers_continued("ANALOG:OFFSET", unsigned=unsigned)
    if o is not None and o.size:
        k = min(channels, o.size)
        offsets[:k] = o[:k]
    if not unsigned and (offsets < 0).any() and len(values):
        # Offsets near 32768 do not fit a signed 16-bit parameter; some writers store them
        # wrapped (32768 -> -32768) for raw ADC values in 0..65535. An offset exists to bring its
        # channel near zero, so each negative one is read unsigned when that does so.
        med = np.median(values, axis=0)
        wrapped = (offsets < 0) & (np.abs(med - (offsets + 65536)) < np.abs(med - offsets))
        if wrapped.any():
            offsets = np.where(wrapped, offsets + 65536, offsets)
            notes.append(f"{int(wrapped.sum())} negative ANALOG:OFFSET values read as unsigned "
                         f"(they centre their channels only that way)")
    values = (values - offsets) * (scales * gen)
    labels = params.strings_continued("ANALOG:LABELS")[:channels]
    labels += [""] * (channels - len(labels))
    labels = _unique(labels, "analog_", notes)
    units = params.strings_continued("ANALOG:UNITS")[:channels]
    units += [""] * (channels - len(units))
    time = t0 + np.arange(n * spf) / rate
    return AnalogData(tuple(labels), tuple(units), rate, spf, time, values)
