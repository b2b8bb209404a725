"""An OpenSim model's display geometry, for viewers without OpenSim (the Blender add-on).

* :func:`model_geometry` lists every Geometry component of a model: the body (or ground) it
  moves with, its placement in that body's frame, scale factors, colour and opacity, and
  either a mesh file name or an analytic shape with its dimensions.
* :func:`geometry_search_paths` / :func:`find_mesh_file` resolve a mesh file as OpenSim's
  visualizer does: an absolute path as written; else the model's folder, its ``Geometry/``
  subfolder, the folders the user names, then the folders in ``OPENSIM_GEOMETRY_PATH``.
* :func:`read_mesh` reads ``.vtp`` (VTK XML PolyData: ascii, base64 binary, zlib-compressed,
  inline or base64-appended data), ``.stl`` (ascii or binary) and ``.obj`` into vertices and
  triangles, polygons and triangle strips triangulated.

Everything is pure Python + numpy except :func:`model_geometry`, which walks an ``osim.Model``.
"""
from __future__ import annotations

import base64
import os
import re
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError

#: Environment variable with extra geometry folders (``os.pathsep``-separated).
GEOMETRY_PATH_ENV = "OPENSIM_GEOMETRY_PATH"
MESH_SUFFIXES = (".vtp", ".stl", ".obj")


# --------------------------------------------------------------------------- meshes
@dataclass(frozen=True)
class MeshData:
    """A triangle mesh: ``vertices`` (V, 3) float32, ``triangles`` (T, 3) uint32 indices."""

    vertices: np.ndarray
    triangles: np.ndarray
    source: str = ""

    def __post_init__(self):
        v, t = self.vertices, self.triangles
        if v.ndim != 2 or v.shape[1] != 3:
            raise InputError(f"mesh vertices have shape {v.shape}; expected (V, 3)", self.source or None)
        if t.ndim != 2 or t.shape[1] != 3:
            raise InputError(f"mesh triangles have shape {t.shape}; expected (T, 3)", self.source or None)
        if t.size and (int(t.max()) >= len(v)):
            raise InputError(f"a triangle refers to vertex {int(t.max())} but the mesh has "
                             f"{len(v)} vertices", self.source or None)
        if not np.isfinite(v).all():
            raise InputError("mesh vertices contain NaN or infinite values", self.source or None)


_VTK_TYPES = {
    "Int8": "i1", "UInt8": "u1", "Int16": "i2", "UInt16": "u2", "Int32": "i4", "UInt32": "u4",
    "Int64": "i8", "UInt64": "u8", "Float32": "f4", "Float64": "f8",
    # Old VTK spellings.
    "Char": "i1", "UnsignedChar": "u1", "Short": "i2", "UnsignedShort": "u2", "Int": "i4",
    "UnsignedInt": "u4", "Long": "i8", "UnsignedLong": "u8", "Float": "f4", "Double": "f8",
}


def _b64(text: str, fail) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except ValueError as exc:
        fail(f"invalid base64 data ({exc})")


class _VtpContext:
    """What decoding a DataArray needs from the file's root element."""

    def __init__(self, root, src: str, appended: str | None):
        self.src = src
        self.endian = "<" if root.get("byte_order", "LittleEndian") == "LittleEndian" else ">"
        header = root.get("header_type", "UInt32")
        if header not in ("UInt32", "UInt64"):
            self.fail(f"unsupported header_type {header!r}")
        self.header = self.endian + ("u4" if header == "UInt32" else "u8")
        self.header_size = 4 if header == "UInt32" else 8
        compressor = root.get("compressor")
        if compressor not in (None, "", "vtkZLibDataCompressor"):
            self.fail(f"unsupported compressor {compressor!r} (only vtkZLibDataCompressor)")
        self.compressed = bool(compressor)
        self.appended = appended

    def fail(self, problem: str):
        raise InputError(f"VTP: {problem}", self.src)

    def _b64_len(self, n_bytes: int) -> int:
        return 4 * ((n_bytes + 2) // 3)

    def decode_binary(self, text: str) -> bytes:
        """Bytes of a base64 binary block: a header then data (see VTK's XML file format)."""
        text = "".join(text.split())
        hs = self.header_size
        if not self.compressed:
            # VTK encodes header and data as one base64 stream; some writers encode them
            # separately, which leaves padding after the header.
            first = self._b64_len(hs)
            if "=" in text[:first]:
                head, data = _b64(text[:first], self.fail), _b64(text[first:], self.fail)
            else:
                raw = _b64(text, self.fail)
                head, data = raw[:hs], raw[hs:]
            n = int(np.frombuffer(head[:hs], self.header)[0])
            if len(data) < n:
                self.fail(f"binary block holds {len(data)} bytes but its header says {n}")
            return data[:n]
        # Compressed: header [n_blocks, block_size, last_block_size, size_1..size_n] is its own
        # base64 stream, followed by the concatenated zlib blocks as a second stream.
        probe = _b64(text[:self._b64_len(hs)] if len(text) >= self._b64_len(hs) else text, self.fail)
        n_blocks = int(np.frombuffer(probe[:hs], self.header)[0])
        head_len = self._b64_len(hs * (3 + n_blocks))
        head = np.frombuffer(_b64(text[:head_len], self.fail)[:hs * (3 + n_blocks)], self.header)
        body = _b64(text[head_len:], self.fail)
        return self._inflate(head, body)

    def _inflate(self, head: np.ndarray, body: bytes) -> bytes:
        n_blocks = int(head[0])
        sizes = [int(s) for s in head[3:3 + n_blocks]]
        if sum(sizes) > len(body):
            self.fail(f"compressed block sizes add up to {sum(sizes)} bytes but "
                      f"{len(body)} are present")
        out, pos = [], 0
        for s in sizes:
            try:
                out.append(zlib.decompress(body[pos:pos + s]))
            except zlib.error as exc:
                self.fail(f"corrupt zlib block ({exc})")
            pos += s
        return b"".join(out)

    def decode_appended(self, offset: int) -> bytes:
        """A base64-encoded appended block starting ``offset`` characters after the ``_``."""
        if self.appended is None:
            self.fail('a DataArray is format="appended" but the file has no base64 AppendedData')
        text = self.appended[offset:]
        hs = self.header_size
        if not self.compressed:
            first = self._b64_len(hs)
            n = int(np.frombuffer(_b64(text[:first], self.fail)[:hs], self.header)[0])
            # Appended blocks are encoded header and data separately.
            return _b64(text[first:first + self._b64_len(n)], self.fail)[:n]
        n_blocks = int(np.frombuffer(_b64(text[:self._b64_len(hs)], self.fail)[:hs], self.header)[0])
        head_len = self._b64_len(hs * (3 + n_blocks))
        head = np.frombuffer(_b64(text[:head_len], self.fail)[:hs * (3 + n_blocks)], self.header)
        total = sum(int(s) for s in head[3:3 + n_blocks])
        return self._inflate(head, _b64(text[head_len:head_len + self._b64_len(total)], self.fail))

    def array(self, element) -> np.ndarray:
        vtk_type = element.get("type")
        if vtk_type not in _VTK_TYPES:
            self.fail(f"DataArray {element.get('Name', '')!r} has unsupported type {vtk_type!r}")
        dtype = np.dtype(self.endian + _VTK_TYPES[vtk_type])
        fmt = element.get("format", "ascii")
        if fmt == "ascii":
            text = element.text or ""
            try:
                values = np.array(text.split(), dtype=np.float64)
            except ValueError:
                self.fail(f"DataArray {element.get('Name', '')!r} holds text that is not numbers")
            return values.astype(dtype.newbyteorder("="), copy=False) if dtype.kind in "iu" else values
        if fmt == "binary":
            raw = self.decode_binary(element.text or "")
        elif fmt == "appended":
            try:
                raw = self.decode_appended(int(element.get("offset", "0")))
            except ValueError:
                self.fail(f"DataArray has a bad offset {element.get('offset')!r}")
        else:
            self.fail(f"DataArray format {fmt!r} is not ascii, binary or appended")
        if len(raw) % dtype.itemsize:
            self.fail(f"DataArray {element.get('Name', '')!r}: {len(raw)} bytes is not a whole "
                      f"number of {vtk_type} values")
        return np.frombuffer(raw, dtype).astype(dtype.newbyteorder("="))


def _cells(ctx: _VtpContext, element, n_cells: int, what: str) -> list[np.ndarray]:
    """The cells of a Polys/Strips element as a list of index arrays."""
    if element is None or n_cells == 0:
        return []
    arrays = {a.get("Name"): a for a in element.findall("DataArray")}
    if "connectivity" not in arrays or "offsets" not in arrays:
        ctx.fail(f"{what} lacks its connectivity or offsets array")
    conn = ctx.array(arrays["connectivity"]).astype(np.int64)
    offsets = ctx.array(arrays["offsets"]).astype(np.int64)
    # Classic files list end offsets; some newer writers add a leading 0.
    if len(offsets) == n_cells + 1 and offsets[0] == 0:
        offsets = offsets[1:]
    if len(offsets) != n_cells:
        ctx.fail(f"{what}: {len(offsets)} offsets for {n_cells} cells")
    if len(offsets) and (np.any(np.diff(offsets) < 0) or offsets[-1] > len(conn) or offsets[0] < 0):
        ctx.fail(f"{what}: offsets are not increasing or run past the connectivity array")
    starts = np.concatenate([[0], offsets[:-1]])
    return [conn[a:b] for a, b in zip(starts, offsets)]


def triangulate_polygons(polys: Iterable[np.ndarray]) -> np.ndarray:
    """Fan-triangulate polygons (index arrays); winding is kept. Cells under 3 points drop."""
    tris = []
    by_size: dict[int, list[np.ndarray]] = {}
    for p in polys:
        if len(p) >= 3:
            by_size.setdefault(len(p), []).append(p)
    for n, group in by_size.items():
        g = np.asarray(group)
        for k in range(1, n - 1):
            tris.append(np.stack([g[:, 0], g[:, k], g[:, k + 1]], axis=1))
    return np.concatenate(tris) if tris else np.zeros((0, 3), np.int64)


def triangulate_strips(strips: Iterable[np.ndarray]) -> np.ndarray:
    """Triangles of triangle strips, alternating order so every triangle keeps the strip's
    winding; degenerate triangles (repeated indices, used to join strips) are dropped."""
    tris = []
    for s in strips:
        if len(s) < 3:
            continue
        k = np.arange(len(s) - 2)
        a, b, c = s[k], s[k + 1], s[k + 2]
        odd = (k % 2) == 1
        t = np.stack([np.where(odd, b, a), np.where(odd, a, b), c], axis=1)
        tris.append(t)
    if not tris:
        return np.zeros((0, 3), np.int64)
    t = np.concatenate(tris)
    keep = (t[:, 0] != t[:, 1]) & (t[:, 1] != t[:, 2]) & (t[:, 0] != t[:, 2])
    return t[keep]


def read_vtp(path: str | os.PathLike) -> MeshData:
    """Read a VTK XML PolyData (.vtp) file: all pieces' points, polygons and triangle strips."""
    from defusedxml import ElementTree as ET
    from defusedxml.common import DefusedXmlException

    path = Path(path)
    src = os.fspath(path)
    if not path.is_file():
        raise InputError("mesh file not found" if not path.exists() else "not a file", src)
    data = path.read_bytes()
    appended = None
    m = re.search(rb"<AppendedData[^>]*>", data)
    if m:
        head = m.group(0)
        if b'encoding="raw"' in head or b"encoding='raw'" in head:
            raise InputError("VTP: raw appended binary data is not supported; save the mesh "
                             "as ascii or base64 binary", src)
        end = data.find(b"</AppendedData>", m.end())
        block = data[m.end():end if end >= 0 else len(data)].decode("ascii", "replace").strip()
        appended = block.removeprefix("_")
    try:
        root = ET.fromstring(data)
    except (ET.ParseError, DefusedXmlException) as exc:
        raise InputError(f"VTP: not a readable XML file ({exc})", src) from None
    if root.tag != "VTKFile" or root.get("type") != "PolyData":
        raise InputError(f"VTP: expected <VTKFile type=\"PolyData\">, found <{root.tag} "
                         f"type={root.get('type')!r}>", src)
    ctx = _VtpContext(root, src, appended)
    pieces = root.findall("./PolyData/Piece")
    if not pieces:
        ctx.fail("no PolyData Piece")
    all_v, all_t, base = [], [], 0
    for piece in pieces:
        try:
            n_points = int(piece.get("NumberOfPoints", "0"))
            n_polys = int(piece.get("NumberOfPolys", "0"))
            n_strips = int(piece.get("NumberOfStrips", "0"))
        except ValueError:
            ctx.fail("a Piece has a non-integer NumberOf... attribute")
        pts = piece.find("./Points/DataArray")
        if pts is None:
            if n_points:
                ctx.fail("a Piece has points but no Points DataArray")
            continue
        v = ctx.array(pts).astype(np.float64)
        ncomp = int(pts.get("NumberOfComponents", "3"))
        if ncomp != 3 or v.size != 3 * n_points:
            ctx.fail(f"Points hold {v.size} values; expected 3 x {n_points}")
        v = v.reshape(n_points, 3)
        tris = [triangulate_polygons(_cells(ctx, piece.find("Polys"), n_polys, "Polys")),
                triangulate_strips(_cells(ctx, piece.find("Strips"), n_strips, "Strips"))]
        t = np.concatenate(tris).astype(np.int64)
        if t.size and (t.min() < 0 or t.max() >= n_points):
            ctx.fail(f"a cell refers to point {int(t.max() if t.max() >= n_points else t.min())} "
                     f"but the piece has {n_points} points")
        all_v.append(v)
        all_t.append(t + base)
        base += n_points
    verts = np.concatenate(all_v) if all_v else np.zeros((0, 3))
    tris = np.concatenate(all_t) if all_t else np.zeros((0, 3), np.int64)
    return MeshData(verts.astype(np.float32), tris.astype(np.uint32), src)


def read_stl(path: str | os.PathLike) -> MeshData:
    """Read an ascii or binary STL file; coincident vertices are merged."""
    path = Path(path)
    src = os.fspath(path)
    if not path.is_file():
        raise InputError("mesh file not found", src)
    data = path.read_bytes()
    if len(data) >= 84:
        n = struct.unpack("<I", data[80:84])[0]
        if 84 + 50 * n == len(data):  # binary: the size check is what tells the two apart
            rec = np.frombuffer(data, dtype=np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)),
                                                      ("a", "<u2")]), count=n, offset=84)
            corners = rec["v"].reshape(-1, 3)
            return _merge_corners(corners, src)
    text = data.decode("ascii", "replace")
    if not text.lstrip().lower().startswith("solid"):
        raise InputError("STL: neither a binary STL (size does not match its triangle count) "
                         "nor an ascii one (no 'solid' line)", src)
    nums = re.findall(r"^\s*vertex\s+(\S+)\s+(\S+)\s+(\S+)", text, re.MULTILINE | re.IGNORECASE)
    if len(nums) % 3:
        raise InputError(f"STL: {len(nums)} vertices is not a whole number of triangles", src)
    try:
        corners = np.array(nums, dtype=np.float64)
    except ValueError:
        raise InputError("STL: a vertex line holds text that is not numbers", src) from None
    return _merge_corners(corners.reshape(-1, 3), src)


def _merge_corners(corners: np.ndarray, src: str) -> MeshData:
    verts, inverse = np.unique(corners.astype(np.float32), axis=0, return_inverse=True)
    tris = inverse.reshape(-1, 3)
    keep = (tris[:, 0] != tris[:, 1]) & (tris[:, 1] != tris[:, 2]) & (tris[:, 0] != tris[:, 2])
    return MeshData(verts, tris[keep].astype(np.uint32), src)


def read_obj(path: str | os.PathLike) -> MeshData:
    """Read the vertices and faces of a Wavefront .obj file (other records are ignored)."""
    path = Path(path)
    src = os.fspath(path)
    if not path.is_file():
        raise InputError("mesh file not found", src)
    verts, faces = [], []
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            if parts[0] == "v":
                verts.append([float(x) for x in parts[1:4]])
            elif parts[0] == "f":
                idx = [int(p.split("/")[0]) for p in parts[1:]]
                # OBJ indices are 1-based; negative ones count back from the latest vertex.
                faces.append(np.array([i - 1 if i > 0 else len(verts) + i for i in idx]))
        except ValueError:
            raise InputError(f"OBJ: line {lineno}: cannot read {line.strip()!r}", src) from None
    v = np.array(verts, dtype=np.float32).reshape(-1, 3)
    t = triangulate_polygons(faces)
    if t.size and (t.min() < 0 or t.max() >= len(v)):
        raise InputError("OBJ: a face refers to a vertex that does not exist", src)
    return MeshData(v, t.astype(np.uint32), src)


def read_mesh(path: str | os.PathLike) -> MeshData:
    """Read a mesh file by its suffix (.vtp, .stl, .obj)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".vtp":
        return read_vtp(path)
    if suffix == ".stl":
        return read_stl(path)
    if suffix == ".obj":
        return read_obj(path)
    raise InputError(f"unsupported mesh type {suffix or '(no suffix)'!r}; expected one of "
                     f"{', '.join(MESH_SUFFIXES)}", path)


# --------------------------------------------------------------------------- finding files
def geometry_search_paths(model_path: str | os.PathLike | None,
                          extra: Sequence[str | os.PathLike] = (),
                          use_env: bool = True) -> list[Path]:
    """Folders searched for mesh files, in order (see the module docstring)."""
    paths: list[Path] = []
    if model_path:
        folder = Path(model_path).expanduser().resolve().parent
        paths += [folder, folder / "Geometry"]
    paths += [Path(p).expanduser().resolve() for p in extra]
    if use_env:
        env = os.environ.get(GEOMETRY_PATH_ENV, "")
        paths += [Path(p).expanduser().resolve() for p in env.split(os.pathsep) if p.strip()]
    seen, out = set(), []
    for p in paths:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def find_mesh_file(mesh_file: str, search_paths: Sequence[Path]) -> Path | None:
    """The first existing file for a model's ``mesh_file`` entry, or None."""
    name = Path(mesh_file.replace("\\", "/"))  # models written on Windows
    if name.is_absolute():
        return name if name.is_file() else None
    for folder in search_paths:
        cand = folder / name
        if cand.is_file():
            return cand
    return None


# --------------------------------------------------------------------------- model geometry
@dataclass
class GeometryItem:
    """One Geometry component of a model, placed in the frame of the body it moves with."""

    name: str
    body: str                      # the base frame's name: a body's name, or "ground"
    kind: str                      # mesh, sphere, ellipsoid, cylinder, brick, cone, torus, line, arrow
    frame: str                     # OpenSim path of the frame the geometry is attached to
    translation: np.ndarray        # (3,) geometry frame origin in the body frame, m
    rotation: np.ndarray           # (3, 3) geometry frame orientation in the body frame
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    opacity: float = 1.0
    visible: bool = True
    representation: str = "surface"
    mesh_file: str | None = None   # as written in the model (kind == "mesh")
    params: dict = field(default_factory=dict)  # analytic dimensions (see the format doc)


_REPRESENTATION = {0: "hide", 1: "points", 2: "wire", 3: "surface"}


def _vec(v) -> list[float]:
    return [float(v.get(i)) for i in range(3)]


def _analytic(osim, geom) -> tuple[str, dict, str | None] | None:
    """(kind, params, mesh_file) for a concrete Geometry, or None for kinds not drawn."""
    for cls, kind, fn in (
        ("Mesh", "mesh", lambda g: {}),
        ("Sphere", "sphere", lambda g: {"radius": float(g.get_radius())}),
        ("Ellipsoid", "ellipsoid", lambda g: {"radii": _vec(g.get_radii())}),
        ("Cylinder", "cylinder", lambda g: {"radius": float(g.get_radius()),
                                            "half_height": float(g.get_half_height())}),
        ("Brick", "brick", lambda g: {"half_lengths": _vec(g.get_half_lengths())}),
        ("Cone", "cone", lambda g: {"origin": _vec(g.get_origin()), "direction": _vec(g.get_direction()),
                                    "base_radius": float(g.get_base_radius()),
                                    "height": float(g.get_height())}),
        ("Torus", "torus", lambda g: {"ring_radius": float(g.get_ring_radius()),
                                      "cross_section_radius": float(g.get_cross_section_radius())}),
        ("LineGeometry", "line", lambda g: {"start_point": _vec(g.get_start_point()),
                                            "end_point": _vec(g.get_end_point())}),
        ("Arrow", "arrow", lambda g: {"start_point": _vec(g.get_start_point()),
                                      "direction": _vec(g.get_direction()),
                                      "length": float(g.get_length())}),
    ):
        c = getattr(osim, cls, None)
        if c is None:
            continue
        down = c.safeDownCast(geom)
        if down is not None:
            mesh = str(down.get_mesh_file()) if kind == "mesh" else None
            return kind, fn(down), mesh
    return None


def model_geometry(model) -> tuple[list[GeometryItem], list[str]]:
    """Every displayable Geometry of an initialised ``osim.Model``, and warnings for those
    skipped (unknown kinds). Frame axes (FrameGeometry) are left out: viewers draw their own."""
    import opensim as osim

    items, warnings = [], []
    for comp in model.getComponentsList():
        geom = osim.Geometry.safeDownCast(comp)
        if geom is None or osim.FrameGeometry.safeDownCast(geom) is not None:
            continue
        what = _analytic(osim, geom)
        path = geom.getAbsolutePathString()
        if what is None:
            warnings.append(f"geometry {path} is a {geom.getConcreteClassName()}, which the "
                            "export does not describe; it is left out")
            continue
        kind, params, mesh_file = what
        frame = geom.getFrame()
        base = frame.findBaseFrame()
        xf = frame.findTransformInBaseFrame()
        rot = np.array([[xf.R().get(i, j) for j in range(3)] for i in range(3)])
        app = geom.get_Appearance()
        body = base.getName() if base.getAbsolutePathString() != "/ground" else "ground"
        items.append(GeometryItem(
            name=geom.getName(), body=body, kind=kind, frame=frame.getAbsolutePathString(),
            translation=np.array(_vec(xf.p())), rotation=rot,
            scale=tuple(_vec(geom.get_scale_factors())), color=tuple(_vec(app.get_color())),
            opacity=float(app.get_opacity()), visible=bool(app.get_visible()),
            representation=_REPRESENTATION.get(int(app.get_representation()), "surface"),
            mesh_file=mesh_file, params=params))
    return items, warnings
