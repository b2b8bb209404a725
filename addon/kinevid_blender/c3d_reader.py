"""A small pure-Python C3D reader for lab markers (3D points only), bundled in the add-on.

Blender's Python has numpy but no C3D library, and the add-on must install from one zip without
compiled dependencies, so this reads the format itself: the 512-byte header, the parameter
section (groups and parameters, every data type) and the 3D point data in integer or float form,
for the three processor types of the standard (Intel, DEC VAX, MIPS/SGI big-endian). Analog data
are skipped. Stdlib + numpy only; no import of bpy, so it is tested outside Blender.

Layout reminders (C3D user guide): blocks are 512 bytes and numbered from 1; header word 1 is the
first parameter block; the parameter block's 4th byte is the processor type (84 Intel, 85 DEC,
86 MIPS); each 3D point per frame is X, Y, Z and a 4th word whose low byte is the residual
(negative = the point is invalid in that frame).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["C3DError", "C3DMarkers", "read_c3d", "read_parameters", "lab_up_axis", "lab_to_blender"]

BLOCK = 512
PROCESSORS = {84: "intel", 85: "dec", 86: "mips"}
_UNIT_TO_METRES = {"mm": 1e-3, "cm": 1e-2, "m": 1.0, "in": 0.0254, "inch": 0.0254, "ft": 0.3048}


class C3DError(ValueError):
    """A C3D file that cannot be read: the message names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


@dataclass
class C3DMarkers:
    """3D points of a C3D file. ``points`` is (frames, markers, 3) in the file's units, NaN where
    the file marks a point invalid; ``to_metres`` is the factor from those units to metres."""

    path: str
    rate: float
    first_frame: int
    labels: list[str]
    units: str
    points: np.ndarray
    processor: str
    is_float: bool
    parameters: dict = field(default_factory=dict, repr=False)

    @property
    def n_frames(self) -> int:
        return int(self.points.shape[0])

    @property
    def to_metres(self) -> float:
        return _UNIT_TO_METRES.get(self.units.strip().lower(), 1e-3)

    @property
    def times(self) -> np.ndarray:
        """Time of each frame in seconds, from the file's first frame number (frame 1 = 0 s)."""
        return (np.arange(self.n_frames) + self.first_frame - 1) / self.rate

    def metres(self) -> np.ndarray:
        return self.points * self.to_metres


# ------------------------------------------------------------------------------ numbers
def _dec_to_ieee(raw: bytes | np.ndarray) -> np.ndarray:
    """DEC VAX F-floats -> float32. The VAX layout is IEEE's with the two 16-bit halves swapped,
    an exponent bias of 128 instead of 127 and the hidden bit at 0.1 instead of 1.0: swapping the
    halves and dividing by 4 gives the value (exact, since it only changes the exponent)."""
    b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 4)[:, [2, 3, 0, 1]]
    return np.ascontiguousarray(b).view("<f4").ravel() / np.float32(4.0)


class _Decoder:
    def __init__(self, processor: str):
        self.processor = processor
        self.end = ">" if processor == "mips" else "<"

    def int16(self, raw: bytes) -> int:
        return struct.unpack(self.end + "h", raw)[0]

    def uint16(self, raw: bytes) -> int:
        return struct.unpack(self.end + "H", raw)[0]

    def float32(self, raw: bytes) -> float:
        if self.processor == "dec":
            return float(_dec_to_ieee(raw)[0])
        return struct.unpack(self.end + "f", raw)[0]

    def int16_array(self, raw: bytes) -> np.ndarray:
        return np.frombuffer(raw, dtype=self.end + "i2")

    def float_array(self, raw: bytes) -> np.ndarray:
        if self.processor == "dec":
            return _dec_to_ieee(raw)
        return np.frombuffer(raw, dtype=self.end + "f4")


# ------------------------------------------------------------------------------ parameters
def _parse_parameters(path, data: bytes, start: int, dec: _Decoder) -> dict[str, dict[str, object]]:
    """Groups -> {parameter name -> value}, names upper-case. Values: str / list[str] for
    character data, int / float or nested lists for numbers (first dimension fastest, as stored)."""
    groups: dict[int, str] = {}
    pending: list[tuple[int, str, object]] = []
    pos = start + 4
    end = len(data)
    while pos + 2 <= end:
        name_len = abs(struct.unpack("b", data[pos:pos + 1])[0])  # negative = locked
        gid = struct.unpack("b", data[pos + 1:pos + 2])[0]
        if name_len == 0 or gid == 0:
            break
        name = data[pos + 2:pos + 2 + name_len].decode("latin-1").strip().upper()
        off_pos = pos + 2 + name_len
        if off_pos + 2 > end:
            break
        offset = dec.int16(data[off_pos:off_pos + 2])
        body = off_pos + 2
        if gid < 0:
            groups[-gid] = name
        else:
            pending.append((gid, name, _parse_value(path, data, body, dec)))
        if offset == 0:  # the last entry of the section
            break
        pos = off_pos + offset
    out: dict[str, dict[str, object]] = {}
    for gid, name, value in pending:
        out.setdefault(groups.get(gid, f"GROUP{gid}"), {})[name] = value
    return out


def _parse_value(path, data: bytes, pos: int, dec: _Decoder):
    dtype = struct.unpack("b", data[pos:pos + 1])[0]
    ndim = data[pos + 1]
    dims = list(data[pos + 2:pos + 2 + ndim])
    pos += 2 + ndim
    size = abs(dtype)
    if size not in (1, 2, 4):
        raise C3DError(path, f"parameter with unknown data type {dtype}")
    count = int(np.prod(dims)) if dims else 1
    raw = data[pos:pos + count * size]
    if len(raw) < count * size:
        raise C3DError(path, "parameter section is truncated")
    if dtype == -1:  # characters: first dimension is the string length
        if not dims:
            return raw.decode("latin-1")
        width = dims[0]
        strings = [raw[i:i + width].decode("latin-1").rstrip(" \x00")
                   for i in range(0, len(raw), width)] if width else []
        return strings[0] if len(dims) == 1 else strings
    if dtype == 1:
        values = list(np.frombuffer(raw, dtype=np.uint8).astype(int))
    elif dtype == 2:
        values = list(dec.int16_array(raw).astype(int))
    else:
        values = list(dec.float_array(raw).astype(float))
    values = [v.item() if hasattr(v, "item") else v for v in values]
    return values[0] if not dims else values


# ------------------------------------------------------------------------------ reading
def read_parameters(path) -> tuple[dict, str]:
    """(parameters, processor) of a C3D file, without reading its data."""
    data = Path(path).read_bytes()
    params, dec, _ = _open(path, data)
    return params, dec.processor


def _open(path, data: bytes):
    if len(data) < BLOCK:
        raise C3DError(path, f"too short for a C3D file ({len(data)} bytes)")
    if data[1] != 0x50:
        raise C3DError(path, "not a C3D file (header key byte is not 0x50)")
    pstart = (data[0] - 1) * BLOCK
    if data[0] < 1 or pstart + 4 > len(data):
        raise C3DError(path, f"parameter block {data[0]} lies outside the file")
    ptype = data[pstart + 3]
    if ptype not in PROCESSORS:
        raise C3DError(path, f"unknown processor type {ptype} (expected 84 Intel, 85 DEC, 86 MIPS)")
    dec = _Decoder(PROCESSORS[ptype])
    n_blocks = data[pstart + 2]
    section = data[:pstart + max(n_blocks, 1) * BLOCK]
    params = _parse_parameters(path, section, pstart, dec)
    return params, dec, pstart


def _labels(point: dict, n: int) -> list[str]:
    labels: list[str] = []
    for key in ["LABELS"] + [f"LABELS{i}" for i in range(2, 100)]:
        if key not in point:
            break
        v = point[key]
        labels += [v] if isinstance(v, str) else list(v)
    labels = [s.strip() or f"M{i + 1:03d}" for i, s in enumerate(labels[:n])]
    labels += [f"M{i + 1:03d}" for i in range(len(labels), n)]
    return labels


def read_c3d(path) -> C3DMarkers:
    """Read the 3D points of a C3D file (any of the three processor types, int or float)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise C3DError(path, f"cannot read: {exc.strerror or exc}") from exc
    params, dec, _ = _open(path, data)
    h = data[:BLOCK]
    n_points = dec.uint16(h[2:4])
    analog_per_frame = dec.uint16(h[4:6])
    first = dec.uint16(h[6:8])
    last = dec.uint16(h[8:10])
    scale = dec.float32(h[12:16])
    data_block = dec.uint16(h[16:18])
    rate = dec.float32(h[20:24])

    point = params.get("POINT", {})
    if isinstance(point.get("USED"), int) and point["USED"] >= 0:
        n_points = point["USED"] if point["USED"] < 32768 else point["USED"] - 65536
    if isinstance(point.get("SCALE"), float):
        scale = point["SCALE"]
    if isinstance(point.get("RATE"), float) and point["RATE"] > 0:
        rate = point["RATE"]
    ds = point.get("DATA_START")
    if isinstance(ds, int) and ds > 0:
        data_block = ds
    n_frames = last - first + 1 if last >= first else 0
    # Files longer than 65535 frames keep the count in parameters (TRIAL:ACTUAL_END_FIELD or a
    # float POINT:FRAMES); the header's 16-bit word then wraps.
    frames_param = point.get("FRAMES")
    if isinstance(frames_param, (int, float)) and int(frames_param) > n_frames:
        n_frames = int(frames_param)
    if not (rate > 0 and np.isfinite(rate)):
        raise C3DError(path, f"invalid point rate {rate}")
    if data_block < 1:
        raise C3DError(path, f"invalid data start block {data_block}")

    is_float = scale < 0
    word = 4 if is_float else 2
    frame_words = 4 * n_points + analog_per_frame
    start = (data_block - 1) * BLOCK
    available = max(len(data) - start, 0) // (frame_words * word) if frame_words else 0
    if n_frames > available:
        raise C3DError(path, f"data section holds {available} frames, header says {n_frames}")
    raw = data[start:start + n_frames * frame_words * word]
    if is_float:
        values = dec.float_array(raw).astype(np.float64)
    else:
        values = dec.int16_array(raw).astype(np.float64)
    values = values.reshape(n_frames, frame_words)[:, :4 * n_points].reshape(n_frames, n_points, 4)
    xyz = values[..., :3] * (1.0 if is_float else abs(scale))
    # The 4th word: residual in its low byte; a negative word marks the point invalid. In float
    # files it is the same 16-bit word stored as a float.
    resid = values[..., 3]
    invalid = resid < 0
    xyz[invalid] = np.nan
    units = point.get("UNITS", "mm")
    units = units if isinstance(units, str) and units.strip() else "mm"
    return C3DMarkers(str(path), float(rate), int(first), _labels(point, n_points), units.strip(),
                      xyz, dec.processor, is_float, params)


# ------------------------------------------------------------------------------ lab axes
def lab_up_axis(points: np.ndarray) -> str:
    """The vertical axis of lab data holding a person, e.g. '+Z' or '+Y'. Across one frame's
    markers a standing or walking person spans ~1.5 m vertically and much less sideways, so the
    axis with the largest median per-frame marker spread is vertical; its sign is the one that
    puts the markers' mean above the floor."""
    pts = np.asarray(points, dtype=float)
    valid = np.isfinite(pts).all(axis=-1)
    spreads = []
    for ax in range(3):
        per_frame = [np.ptp(pts[f, valid[f], ax]) for f in range(len(pts)) if valid[f].sum() >= 2]
        spreads.append(np.median(per_frame) if per_frame else 0.0)
    ax = int(np.argmax(spreads))
    mean = np.nanmean(pts[..., ax]) if valid.any() else 1.0
    return ("+" if mean >= 0 else "-") + "XYZ"[ax]


def lab_to_blender(points: np.ndarray, up: str = "auto") -> tuple[np.ndarray, str]:
    """(3x3 rotation taking lab coordinates to Blender's Z-up frame, up axis used). ``up`` is
    'auto' or one of +X -X +Y -Y +Z -Z. The rotation is proper (no mirroring): it turns the up
    axis onto +Z by the shortest rotation."""
    up = lab_up_axis(points) if up == "auto" else up
    if len(up) == 1:
        up = "+" + up
    if up[0] not in "+-" or up[1] not in "XYZ":
        raise ValueError(f"up axis must be auto or one of +X -X +Y -Y +Z -Z, got {up!r}")
    u = np.zeros(3)
    u["XYZ".index(up[1])] = 1.0 if up[0] == "+" else -1.0
    z = np.array([0.0, 0.0, 1.0])
    c = float(u @ z)
    if c > 1 - 1e-9:
        return np.eye(3), up
    if c < -1 + 1e-9:  # upside down: half a turn about X
        return np.diag([1.0, -1.0, -1.0]), up
    axis = np.cross(u, z)
    s = np.linalg.norm(axis)
    k = axis / s
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + s * kx + (1 - c) * kx @ kx, up
