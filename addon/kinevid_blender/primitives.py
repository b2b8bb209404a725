"""Triangle meshes for OpenSim's analytic geometry (sphere, ellipsoid, cylinder, brick, cone,
torus), in the shapes' own frames as docs/blender_motion_format.md defines them. Pure numpy, so
the add-on builds every shape the same way and the shapes are tested without Blender."""
from __future__ import annotations

import numpy as np

__all__ = ["primitive_mesh", "geometry_matrix"]


def _grid_faces(rows: int, cols: int, wrap: bool = True) -> list[tuple[int, int, int]]:
    faces = []
    for r in range(rows - 1):
        for c in range(cols if wrap else cols - 1):
            a, b = r * cols + c, r * cols + (c + 1) % cols
            faces += [(a, b, b + cols), (a, b + cols, a + cols)]
    return faces


def _ellipsoid(radii, seg: int = 24, rings: int = 12):
    th = np.linspace(0, np.pi, rings + 1)[1:-1]
    ph = np.linspace(0, 2 * np.pi, seg, endpoint=False)
    t, p = np.meshgrid(th, ph, indexing="ij")
    v = np.stack([np.sin(t) * np.cos(p), np.cos(t), np.sin(t) * np.sin(p)], -1).reshape(-1, 3)
    n = len(v)
    v = np.vstack([v, [[0, 1, 0], [0, -1, 0]]]) * np.asarray(radii, dtype=float)
    faces = _grid_faces(rings - 1, seg)
    for c in range(seg):
        faces.append((n, (c + 1) % seg, c))
        base = (rings - 2) * seg
        faces.append((n + 1, base + c, base + (c + 1) % seg))
    f = np.array(faces)
    # The shape is convex around the origin: turn every face to face away from it.
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    inward = np.einsum("ij,ij->i", np.cross(b - a, c - a), a + b + c) < 0
    f[inward] = f[inward][:, [0, 2, 1]]
    return v, f


def _cylinder(radius, half_height, seg: int = 24):
    ang = np.linspace(0, 2 * np.pi, seg, endpoint=False)
    ring = np.stack([radius * np.cos(ang), np.zeros(seg), radius * np.sin(ang)], -1)
    v = np.vstack([ring + [0, -half_height, 0], ring + [0, half_height, 0],
                   [[0, -half_height, 0], [0, half_height, 0]]])
    faces = [(a, c, b) for a, b, c in _grid_faces(2, seg)]
    bot, top = 2 * seg, 2 * seg + 1
    for c in range(seg):
        faces.append((bot, c, (c + 1) % seg))
        faces.append((top, seg + (c + 1) % seg, seg + c))
    return v, np.array(faces)


def _brick(half):
    h = np.asarray(half, dtype=float)
    v = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=float) * h
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = [f for a, b, c, d in quads for f in ((a, b, c), (a, c, d))]
    return v, np.array(faces)


def _cone(origin, direction, base_radius, height, seg: int = 24):
    d = np.asarray(direction, dtype=float)
    d = d / np.linalg.norm(d) if np.linalg.norm(d) > 0 else np.array([0.0, 1.0, 0.0])
    a = np.cross(d, [1.0, 0, 0] if abs(d[0]) < 0.9 else [0, 1.0, 0])
    a /= np.linalg.norm(a)
    b = np.cross(d, a)
    ang = np.linspace(0, 2 * np.pi, seg, endpoint=False)
    o = np.asarray(origin, dtype=float)
    ring = o + base_radius * (np.cos(ang)[:, None] * a + np.sin(ang)[:, None] * b)
    v = np.vstack([ring, o + height * d, o])
    apex, centre = seg, seg + 1
    faces = []
    for c in range(seg):
        faces.append((c, (c + 1) % seg, apex))
        faces.append((centre, (c + 1) % seg, c))
    return v, np.array(faces)


def _torus(ring_radius, cross_radius, seg: int = 32, sides: int = 12):
    u = np.linspace(0, 2 * np.pi, seg, endpoint=False)
    w = np.linspace(0, 2 * np.pi, sides, endpoint=False)
    uu, ww = np.meshgrid(u, w, indexing="ij")
    r = ring_radius + cross_radius * np.cos(ww)
    v = np.stack([r * np.cos(uu), r * np.sin(uu), cross_radius * np.sin(ww)], -1).reshape(-1, 3)
    faces = []
    for i in range(seg):
        for j in range(sides):
            a = i * sides + j
            b = ((i + 1) % seg) * sides + j
            c = ((i + 1) % seg) * sides + (j + 1) % sides
            d = i * sides + (j + 1) % sides
            faces += [(a, b, c), (a, c, d)]
    return v, np.array(faces)


def primitive_mesh(geom: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """(vertices, triangles) of an analytic geometry entry, or None for kinds it does not draw
    (lines, arrows, unknown kinds)."""
    kind = geom.get("kind")
    if kind == "sphere":
        r = float(geom["radius"])
        return _ellipsoid([r, r, r])
    if kind == "ellipsoid":
        return _ellipsoid(geom["radii"])
    if kind == "cylinder":
        return _cylinder(float(geom["radius"]), float(geom["half_height"]))
    if kind == "brick":
        return _brick(geom["half_lengths"])
    if kind == "cone":
        return _cone(geom.get("origin", [0, 0, 0]), geom.get("direction", [0, 1, 0]),
                     float(geom["base_radius"]), float(geom["height"]))
    if kind == "torus":
        return _torus(float(geom["ring_radius"]), float(geom["cross_section_radius"]))
    return None


def geometry_matrix(geom: dict) -> np.ndarray:
    """4x4 matrix placing a geometry's own frame (scale included) in its body's frame."""
    from .motion_file import quat_to_matrix

    m = np.eye(4)
    m[:3, :3] = quat_to_matrix(np.asarray(geom.get("rotation", [1, 0, 0, 0]), dtype=float)) \
        @ np.diag(np.asarray(geom.get("scale", [1, 1, 1]), dtype=float))
    m[:3, 3] = np.asarray(geom.get("translation", [0, 0, 0]), dtype=float)
    return m
