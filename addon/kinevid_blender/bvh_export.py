"""BVH writer (and a small reader) for the body motion, pure Python + numpy.

Input: a joint hierarchy (names, parent indices) and every joint's world rotation and position
per frame, e.g. the kinevid armature's bones sampled frame by frame, or a motion file's bodies.
BVH stores constant offsets from parent to child and per-frame local rotations; OpenSim joints
may also translate a little (the knee's coupled translation), so by default each joint's offset
is its mean position in its parent's frame and only the root carries position channels;
``translations=True`` gives every joint position channels and keeps the motion exact.

Rotation channels are ``Zrotation Xrotation Yrotation`` (the common BVH order): local rotation
R = Rz(a) @ Rx(b) @ Ry(c), angles in degrees, unwrapped over time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["local_motion", "euler_zxy", "euler_zxy_to_matrix", "write_bvh", "BVH", "read_bvh",
           "bvh_world"]


def local_motion(parents: list[int], world_rot: np.ndarray, world_pos: np.ndarray):
    """World (F,n,3,3)/(F,n,3) -> local rotation and position in the parent's frame (roots:
    unchanged)."""
    rot = np.empty_like(world_rot)
    pos = np.empty_like(world_pos)
    for j, p in enumerate(parents):
        if p < 0:
            rot[:, j], pos[:, j] = world_rot[:, j], world_pos[:, j]
        else:
            pt = np.swapaxes(world_rot[:, p], -1, -2)
            rot[:, j] = pt @ world_rot[:, j]
            pos[:, j] = np.einsum("fij,fj->fi", pt, world_pos[:, j] - world_pos[:, p])
    return rot, pos


def euler_zxy(r: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (..., 3) angles (z, x, y) in radians with R = Rz @ Rx @ Ry."""
    b = np.arcsin(np.clip(r[..., 2, 1], -1.0, 1.0))
    a = np.arctan2(-r[..., 0, 1], r[..., 1, 1])
    c = np.arctan2(-r[..., 2, 0], r[..., 2, 2])
    # Gimbal lock (x = +-90 deg): z and y turn about the same axis; put it all in z.
    lock = np.abs(r[..., 2, 1]) > 1 - 1e-9
    if np.any(lock):
        a = np.where(lock, np.arctan2(r[..., 1, 0], r[..., 0, 0]), a)
        c = np.where(lock, 0.0, c)
    return np.stack([a, b, c], axis=-1)


def _rx(t):
    c, s = np.cos(t), np.sin(t)
    o, z = np.ones_like(t), np.zeros_like(t)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def _ry(t):
    c, s = np.cos(t), np.sin(t)
    o, z = np.ones_like(t), np.zeros_like(t)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def _rz(t):
    c, s = np.cos(t), np.sin(t)
    o, z = np.ones_like(t), np.zeros_like(t)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


_AXIS = {"X": _rx, "Y": _ry, "Z": _rz}


def euler_zxy_to_matrix(angles: np.ndarray) -> np.ndarray:
    a = np.asarray(angles, dtype=float)
    return _rz(a[..., 0]) @ _rx(a[..., 1]) @ _ry(a[..., 2])


def _fmt(v: float) -> str:
    s = f"{v:.6f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def write_bvh(path, names: list[str], parents: list[int], world_rot: np.ndarray,
              world_pos: np.ndarray, frame_time: float, scale: float = 1.0,
              translations: bool = False, end_sites: dict[str, np.ndarray] | None = None) -> Path:
    """Write a BVH file. ``world_rot`` (F,n,3,3), ``world_pos`` (F,n,3) in a Y-up frame (BVH's
    convention; OpenSim's ground is Y-up already). Positions are multiplied by ``scale`` (1 =
    metres, 100 = centimetres). Parents must come before children; several roots get a common
    static root named ``world``. Returns the path."""
    names = list(names)
    parents = [int(p) for p in parents]
    world_rot = np.asarray(world_rot, dtype=float)
    world_pos = np.asarray(world_pos, dtype=float) * scale
    n_frames, n = world_rot.shape[:2]
    for j, p in enumerate(parents):
        if p >= j:
            raise ValueError(f"joint {names[j]!r}: its parent must come before it")
    if sum(p < 0 for p in parents) > 1:  # BVH has one ROOT: add a static one above the roots
        names = ["world"] + names
        parents = [-1] + [p + 1 for p in parents]
        eye = np.broadcast_to(np.eye(3), (n_frames, 1, 3, 3))
        world_rot = np.concatenate([eye, world_rot], axis=1)
        world_pos = np.concatenate([np.zeros((n_frames, 1, 3)), world_pos], axis=1)
        n += 1
    rot, pos = local_motion(parents, world_rot, world_pos)
    offsets = np.where(np.array(parents)[:, None] < 0, 0.0, pos.mean(axis=0))
    angles = np.degrees(np.unwrap(euler_zxy(rot), axis=0))
    children = {j: [k for k, p in enumerate(parents) if p == j] for j in range(n)}
    end_sites = end_sites or {}
    lines = ["HIERARCHY"]
    order: list[tuple[int, bool]] = []  # (joint, has position channels) in file order

    def emit(j: int, depth: int) -> None:
        ind = "\t" * depth
        kw = "ROOT" if parents[j] < 0 else "JOINT"
        lines.append(f"{ind}{kw} {names[j]}")
        lines.append(f"{ind}{{")
        lines.append(f"{ind}\tOFFSET " + " ".join(_fmt(v) for v in offsets[j]))
        has_pos = parents[j] < 0 or translations
        ch = (["Xposition", "Yposition", "Zposition"] if has_pos else []) + \
             ["Zrotation", "Xrotation", "Yrotation"]
        lines.append(f"{ind}\tCHANNELS {len(ch)} " + " ".join(ch))
        order.append((j, has_pos))
        for k in children[j]:
            emit(k, depth + 1)
        if not children[j]:
            tip = np.asarray(end_sites.get(names[j], (0.0, 0.05, 0.0)), dtype=float) * scale
            lines.extend([f"{ind}\tEnd Site", f"{ind}\t{{",
                          f"{ind}\t\tOFFSET " + " ".join(_fmt(v) for v in tip), f"{ind}\t}}"])
        lines.append(f"{ind}}}")

    emit(0, 0)
    lines += ["MOTION", f"Frames: {n_frames}", f"Frame Time: {frame_time:.8f}"]
    for f in range(n_frames):
        row = []
        for j, has_pos in order:
            if has_pos:
                row += list(pos[f, j])
            row += list(angles[f, j])
        lines.append(" ".join(_fmt(v) for v in row))
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)  # never leave a half-written BVH behind
    return path


@dataclass
class BVH:
    names: list[str]
    parents: list[int]
    offsets: np.ndarray          # (n, 3)
    channels: list[list[str]]    # per joint
    frame_time: float
    motion: np.ndarray           # (F, total channels)

    @property
    def n_frames(self) -> int:
        return int(self.motion.shape[0])


def read_bvh(path) -> BVH:
    """Parse a BVH file's hierarchy and motion (End Sites are skipped)."""
    tokens = Path(path).read_text(encoding="utf-8", errors="replace").split()
    i = 0
    names, parents, offsets, channels = [], [], [], []
    stack: list[int] = []
    in_end = 0
    if not tokens or tokens[0] != "HIERARCHY":
        raise ValueError(f"{path}: not a BVH file (no HIERARCHY)")
    i = 1
    while i < len(tokens) and tokens[i] != "MOTION":
        t = tokens[i]
        if t in ("ROOT", "JOINT"):
            names.append(tokens[i + 1])
            parents.append(stack[-1] if stack else -1)
            offsets.append(None)
            channels.append([])
            i += 2
        elif t == "End":
            in_end += 1
            i += 2  # "End Site"
        elif t == "{":
            if in_end:
                in_end += 1
            else:
                stack.append(len(names) - 1)
            i += 1
        elif t == "}":
            if in_end:
                in_end -= 1
                if in_end == 1:
                    in_end = 0
            else:
                stack.pop()
            i += 1
        elif t == "OFFSET":
            if not in_end:
                offsets[-1] = [float(v) for v in tokens[i + 1:i + 4]]
            i += 4
        elif t == "CHANNELS":
            k = int(tokens[i + 1])
            channels[-1] = tokens[i + 2:i + 2 + k]
            i += 2 + k
        else:
            raise ValueError(f"{path}: unexpected token {t!r} in the hierarchy")
    if i >= len(tokens):
        raise ValueError(f"{path}: no MOTION section")
    n_frames = int(tokens[i + 2])  # MOTION Frames: N
    frame_time = float(tokens[i + 5])  # Frame Time: t
    values = np.array(tokens[i + 6:], dtype=float)
    width = sum(len(c) for c in channels)
    if values.size != n_frames * width:
        raise ValueError(f"{path}: {values.size} motion values, expected {n_frames} x {width}")
    return BVH(names, parents, np.array(offsets, dtype=float), channels, frame_time,
               values.reshape(n_frames, width))


def bvh_world(bvh: BVH) -> tuple[np.ndarray, np.ndarray]:
    """Forward kinematics of a parsed BVH: world rotations (F,n,3,3) and positions (F,n,3)."""
    f = bvh.n_frames
    n = len(bvh.names)
    rot = np.empty((f, n, 3, 3))
    pos = np.empty((f, n, 3))
    col = 0
    for j in range(n):
        local_p = np.broadcast_to(bvh.offsets[j], (f, 3)).copy()
        local_r = np.broadcast_to(np.eye(3), (f, 3, 3)).copy()
        for ch in bvh.channels[j]:
            v = bvh.motion[:, col]
            col += 1
            axis = ch[0].upper()
            if ch.lower().endswith("position"):
                local_p[:, "XYZ".index(axis)] = v
            else:
                local_r = local_r @ _AXIS[axis](np.radians(v))
        p = bvh.parents[j]
        if p < 0:
            rot[:, j], pos[:, j] = local_r, local_p
        else:
            rot[:, j] = rot[:, p] @ local_r
            pos[:, j] = pos[:, p] + np.einsum("fij,fj->fi", rot[:, p], local_p)
    return rot, pos


def frame_time_of(rate: float) -> float:
    return 1.0 / rate if rate > 0 and math.isfinite(rate) else 1.0 / 30.0
