"""The header and parameter section of a C3D file, parsed defensively on top of the ``c3d`` package.

The ``c3d`` package's own ``Reader`` asserts that header and parameters agree and gives up on a
repeated parameter name, which rejects many real files that other readers open; it also trusts
every count it reads. Here its building blocks (``Header``, ``DataTypes``, ``Param``, the DEC
float conversion) are driven by a loop that bounds every offset by the bytes actually present,
keeps the first of duplicated parameters with a warning, and records inconsistencies as warnings
for the caller to resolve. Nothing here allocates more than the file's own size.
"""
from __future__ import annotations

import io
import struct

import numpy as np

from .errors import InputError

#: Processor byte of the parameter section: 84 Intel, 85 DEC (VAX), 86 MIPS (SGI, big-endian).
PROCESSORS = {84: "Intel", 85: "DEC", 86: "MIPS"}


class C3DError(InputError):
    """A C3D file kinevid cannot read: corrupt, truncated or inconsistent beyond repair."""


class Parameters:
    """``GROUP:NAME`` -> ``c3d.Param``, plus typed accessors that never raise on odd layouts."""

    def __init__(self, dtypes, params: dict, groups: dict, warnings_: list[str]):
        self.dtypes = dtypes
        self.params = params          # "GROUP:NAME" -> c3d.Param
        self.groups = groups          # group id -> name
        self.warnings = warnings_

    def __contains__(self, key: str) -> bool:
        return key.upper() in self.params

    def get(self, key: str):
        return self.params.get(key.upper())

    def group_names(self) -> list[str]:
        return sorted(set(self.groups.values()))

    def in_group(self, group: str) -> list[str]:
        prefix = group.upper() + ":"
        return [k[len(prefix):] for k in self.params if k.startswith(prefix)]

    # ------------------------------------------------------------------ typed values
    def numbers(self, key: str, unsigned: bool = False) -> np.ndarray | None:
        """All elements as a flat float64 array in file (Fortran) order; None when absent or
        not numeric."""
        p = self.get(key)
        if p is None:
            return None
        bpe = p.bytes_per_element
        n = p.num_elements
        raw = p.bytes[: n * abs(bpe)]
        if bpe == 4:
            if self.dtypes.is_dec:
                from c3d.c3d import DEC_to_IEEE_BYTES
                arr = DEC_to_IEEE_BYTES(raw[: len(raw) // 4 * 4])
            else:
                arr = np.frombuffer(raw, dtype=self.dtypes.float32, count=len(raw) // 4)
        elif bpe == 2:
            dt = self.dtypes.uint16 if unsigned else self.dtypes.int16
            arr = np.frombuffer(raw, dtype=dt, count=len(raw) // 2)
        elif bpe == 1:
            arr = np.frombuffer(raw, dtype=np.uint8 if unsigned else np.int8)
        else:
            return None
        return arr.astype(np.float64)

    def number(self, key: str, default=None, unsigned: bool = False):
        arr = self.numbers(key, unsigned=unsigned)
        if arr is None or arr.size == 0 or not np.isfinite(arr[0]):
            return default
        return float(arr[0])

    def array(self, key: str, tail: tuple[int, ...]) -> np.ndarray | None:
        """Numbers as (k, *tail): ``tail`` is the parameter's dimensions reversed (C order), e.g.
        FORCE_PLATFORM:CORNERS, stored (3, 4, plates) with the first index fastest, is read with
        ``tail=(4, 3)`` as [plate][corner][xyz]. Extra values are dropped; None when there is
        not one full item."""
        arr = self.numbers(key)
        if arr is None:
            return None
        item = int(np.prod(tail))
        k = arr.size // item
        if k == 0:
            return None
        return arr[: k * item].reshape((k, *tail))

    def strings(self, key: str) -> list[str]:
        p = self.get(key)
        if p is None or p.bytes_per_element != -1:
            return []
        dims = list(p.dimensions)
        data = p.bytes
        if not dims:
            return [self._decode(data)] if data else []
        if len(dims) == 1:
            return [self._decode(data)]
        width = dims[0]
        count = int(np.prod(dims[1:]))
        if width <= 0:
            return [""] * count
        return [self._decode(data[i * width:(i + 1) * width]) for i in range(count)]

    def string(self, key: str, default: str = "") -> str:
        s = self.strings(key)
        return " ".join(x for x in s if x) if s else default

    def strings_continued(self, key: str) -> list[str]:
        """``GROUP:NAME`` then ``NAME2``, ``NAME3``... (files with more than 255 entries)."""
        out = list(self.strings(key))
        k = 2
        while f"{key}{k}".upper() in self.params and k < 1000:
            out += self.strings(f"{key}{k}")
            k += 1
        return out

    def numbers_continued(self, key: str, unsigned: bool = False) -> np.ndarray | None:
        first = self.numbers(key, unsigned=unsigned)
        if first is None:
            return None
        parts, k = [first], 2
        while f"{key}{k}".upper() in self.params and k < 1000:
            more = self.numbers(f"{key}{k}", unsigned=unsigned)
            if more is not None:
                parts.append(more)
            k += 1
        return np.concatenate(parts)

    def _decode(self, data: bytes) -> str:
        return self.dtypes.decode_string(data).strip(" \x00\r\n\t")


def read_header(buf: bytes, src: str):
    """``(c3d.Header, c3d.DataTypes, processor name, parameter section offset)``."""
    import c3d.c3d as c3dmod

    if len(buf) < 512:
        raise C3DError(f"file is {len(buf)} bytes, shorter than a C3D header (512 bytes)", src)
    if buf[1] != 0x50:
        raise C3DError(f"not a C3D file (byte 2 is {buf[1]}, a C3D file has 80 there)", src)
    param_block = buf[0]
    if param_block < 2:
        raise C3DError(f"header points to parameter block {param_block}; it must be 2 or more", src)
    start = (param_block - 1) * 512
    if start + 4 > len(buf):
        raise C3DError(f"header points to parameter block {param_block}, beyond the end of the "
                       f"file ({len(buf)} bytes)", src)
    proc = buf[start + 3]
    if proc not in PROCESSORS:
        raise C3DError(f"unknown processor type {proc} in the parameter section (expected 84 "
                       f"Intel, 85 DEC or 86 MIPS)", src)
    dtypes = c3dmod.DataTypes(proc)
    header = c3dmod.Header()
    handle = io.BytesIO(buf[:512])
    fmt = c3dmod.Header.BINARY_FORMAT_READ_BIG_ENDIAN if dtypes.is_mips else \
        c3dmod.Header.BINARY_FORMAT_READ
    header.read(handle, fmt)
    unpack = c3dmod.DEC_to_IEEE if dtypes.is_dec else c3dmod.UNPACK_FLOAT_IEEE
    header.scale_factor = unpack(header.scale_factor)
    header.frame_rate = unpack(header.frame_rate)
    # The header has room for 18 events; a larger count would index past its event block.
    header.event_count = min(int(header.event_count), 18)
    header._parse_events(dtypes, unpack)
    return header, dtypes, PROCESSORS[proc], start


def read_parameters(buf: bytes, start: int, dtypes, src: str) -> Parameters:
    """Walk the parameter section. Every step must move forward and stay inside the section
    (as declared, and as present in the file), so a corrupt section ends the walk, never loops."""
    import c3d.c3d as c3dmod

    n_blocks = buf[start + 2]
    end = min(len(buf), start + 512 * max(int(n_blocks), 1))
    endian = ">" if dtypes.is_mips else "<"
    warnings_: list[str] = []
    groups: dict[int, str] = {}
    raw_params: list[tuple[int, str, bytes]] = []
    pos = start + 4
    while pos + 2 <= end:
        chars, gid = struct.unpack("bb", buf[pos:pos + 2])
        if chars == 0 or gid == 0:
            break
        name_end = pos + 2 + abs(chars)
        if name_end + 2 > end:
            warnings_.append(f"parameter section ends inside an entry at byte {pos}")
            break
        name = dtypes.decode_string(buf[pos + 2:name_end]).strip(" \x00").upper()
        offset, = struct.unpack(endian + "h", buf[name_end:name_end + 2])
        if offset == 0:
            body_end = nxt = end  # the last entry: its size is not given
        elif offset < 2:
            warnings_.append(f"parameter entry {name!r} has an invalid offset ({offset}); "
                             f"the parameter section is read up to it")
            break
        else:
            body_end = nxt = min(name_end + offset, end)
        body = buf[name_end + 2:body_end]
        if gid < 0:
            if abs(gid) not in groups:
                groups[abs(gid)] = name
        else:
            raw_params.append((gid, name, body))
        if nxt <= pos:
            break
        pos = nxt

    params: dict = {}
    orphans: dict[int, int] = {}
    for gid, name, body in raw_params:
        group = groups.get(gid)
        if group is None:
            orphans[gid] = orphans.get(gid, 0) + 1
            continue
        key = f"{group}:{name}"
        if key in params:
            warnings_.append(f"parameter {key} appears twice; the first is kept")
            continue
        try:
            p = c3dmod.Param(name, dtypes, handle=io.BytesIO(body))
        except struct.error:
            warnings_.append(f"parameter {key} is truncated; ignored")
            continue
        if abs(p.bytes_per_element) not in (1, 2, 4, 8):
            warnings_.append(f"parameter {key} has an invalid element size "
                             f"{p.bytes_per_element}; ignored")
            continue
        if len(p.bytes) < p.total_bytes:
            warnings_.append(f"parameter {key} declares {p.total_bytes} bytes but has "
                             f"{len(p.bytes)}; ignored")
            continue
        params[key] = p
    for gid, count in orphans.items():
        warnings_.append(f"{count} parameters belong to group id {gid}, which has no name; "
                         f"ignored")
    return Parameters(dtypes, params, groups, warnings_)
