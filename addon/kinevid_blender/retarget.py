"""Retargeting logic: which bone drives which, and the pose that copies the motion across.

Bone matching: an explicit mapping first (text ``source = target`` per line, or a dict), then
identical names, then names equal after normalisation (case, separators, common rig prefixes such
as ``mixamorig:`` or ``DEF-``, and side markers: ``_l``/``.L``/``Left``/``l_`` are one thing).

Motion transfer: each mapped target bone takes its source bone's rotation *change from rest*,
in world space (``R_t = R_s @ R_s_rest^T @ R_t_rest``), so rigs with different bone axes work as
long as both rest poses are alike (e.g. both standing with arms down; a T-pose target needs its
arms posed like the source first). The highest mapped target bone also follows the source's
root displacement, scaled by the ratio of the two roots' rest heights. Unmapped target bones
keep their rest pose relative to their parent. Pure numpy: no bpy.
"""
from __future__ import annotations

import json
import re

import numpy as np

__all__ = ["normalise_name", "parse_mapping", "match_bones", "retarget_pose"]

_PREFIXES = ("mixamorig:", "mixamorig_", "def-", "def_", "org-", "bip01_", "bip01 ", "cc_base_")
_SIDE_PATTERNS = [
    (re.compile(r"(^|[^a-z])(left)([^a-z]|$)"), r"\1l\3"),
    (re.compile(r"(^|[^a-z])(right)([^a-z]|$)"), r"\1r\3"),
]


def normalise_name(name: str) -> str:
    """A comparable form of a bone name: 'mixamorig:LeftUpLeg' -> 'upleg_l', 'femur.R' ->
    'femur_r', 'l_hand' -> 'hand_l'."""
    s = name.strip()
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s).lower()  # CamelCase -> snake
    for p in _PREFIXES:
        if s.startswith(p):
            s = s[len(p):]
    s = re.sub(r"[\s.\-:|]+", "_", s)
    for pat, rep in _SIDE_PATTERNS:
        s = pat.sub(rep, s)
    parts = [p for p in s.split("_") if p]
    side = None
    if parts and parts[0] in ("l", "r") and len(parts) > 1:
        side = parts.pop(0)
    elif parts and parts[-1] in ("l", "r") and len(parts) > 1:
        side = parts.pop()
    base = "".join(parts)
    return f"{base}_{side}" if side else base


def parse_mapping(text: str) -> dict[str, str]:
    """A bone mapping from text: JSON object, or lines ``source = target`` / ``source: target``
    (``#`` starts a comment). Raises ValueError naming the bad line."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        data = json.loads(text)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            raise ValueError("mapping JSON must map bone names to bone names")
        return dict(data)
    out: dict[str, str] = {}
    for no, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.match(r"^(.+?)\s*(?:=|:|->)\s*(.+)$", line)
        if not m:
            raise ValueError(f"mapping line {no}: expected 'source = target', got {line!r}")
        out[m.group(1).strip().strip("\"'")] = m.group(2).strip().strip("\"'")
    return out


def match_bones(source: list[str], target: list[str],
                mapping: dict[str, str] | None = None) -> dict[str, str]:
    """source bone -> target bone. Explicit mapping entries must name existing bones."""
    out: dict[str, str] = {}
    used: set[str] = set()
    src_set, tgt_set = set(source), set(target)
    for s, t in (mapping or {}).items():
        if s not in src_set:
            raise ValueError(f"mapping names source bone {s!r}, which the source armature lacks")
        if t not in tgt_set:
            raise ValueError(f"mapping names target bone {t!r}, which the target armature lacks")
        out[s] = t
        used.add(t)
    for s in source:
        if s not in out and s in tgt_set and s not in used:
            out[s] = s
            used.add(s)
    norm_target: dict[str, list[str]] = {}
    for t in target:
        norm_target.setdefault(normalise_name(t), []).append(t)
    for s in source:
        if s in out:
            continue
        cands = [t for t in norm_target.get(normalise_name(s), []) if t not in used]
        if len(cands) == 1:
            out[s] = cands[0]
            used.add(cands[0])
    return out


def _ortho(m: np.ndarray) -> np.ndarray:
    """Rotation part of (..., 4, 4) or (..., 3, 3) matrices, scale removed."""
    r = np.asarray(m)[..., :3, :3]
    return r / np.linalg.norm(r, axis=-2, keepdims=True)


def retarget_pose(src_rest_world: np.ndarray, src_pose_world: np.ndarray,
                  tgt_rest: np.ndarray, tgt_parents: list[int], tgt_object: np.ndarray,
                  pairs: list[tuple[int, int]]) -> np.ndarray:
    """Pose-bone ``matrix_basis`` of the target, (F, T, 4, 4).

    src_rest_world (S,4,4) and src_pose_world (F,S,4,4): source bones in world space at rest and
    per frame; tgt_rest (T,4,4): target ``Bone.matrix_local`` (armature space); tgt_parents:
    parent index per target bone (-1 none; parents first); tgt_object: the target armature
    object's world matrix; pairs: (source index, target index).
    """
    n_frames = src_pose_world.shape[0]
    n_t = tgt_rest.shape[0]
    for j, p in enumerate(tgt_parents):
        if p >= j:
            raise ValueError("target bones must be ordered parents first")
    obj_inv = np.linalg.inv(tgt_object)
    obj_rot = _ortho(tgt_object)
    tgt_rest_world = tgt_object @ tgt_rest
    by_target = {t: s for s, t in pairs}
    # Root of the motion: the mapped target bone with no mapped ancestor that comes first.
    def mapped_ancestor(t: int) -> bool:
        p = tgt_parents[t]
        while p >= 0:
            if p in by_target:
                return True
            p = tgt_parents[p]
        return False
    roots = [t for t in sorted(by_target) if not mapped_ancestor(t)]
    root_t = roots[0] if roots else None
    scale = 1.0
    if root_t is not None:
        s = by_target[root_t]
        hs, ht = src_rest_world[s, 2, 3], tgt_rest_world[root_t, 2, 3]
        if abs(hs) > 1e-6 and ht / hs > 0:
            scale = float(ht / hs)
    pose = np.empty((n_frames, n_t, 4, 4))
    basis = np.empty_like(pose)
    inv_rest = np.linalg.inv(tgt_rest)
    for t in range(n_t):
        p = tgt_parents[t]
        chain = (np.broadcast_to(tgt_rest[t], (n_frames, 4, 4)) if p < 0
                 else pose[:, p] @ (inv_rest[p] @ tgt_rest[t]))
        m = chain.copy()
        if t in by_target:
            s = by_target[t]
            delta = _ortho(src_pose_world[:, s]) @ _ortho(src_rest_world[s]).T
            world_rot = delta @ _ortho(tgt_rest_world[t])
            m[:, :3, :3] = obj_rot.T @ world_rot  # into armature space
            if t == root_t:
                disp = src_pose_world[:, s, :3, 3] - src_rest_world[s, :3, 3]
                world_pos = tgt_rest_world[t, :3, 3] + scale * disp
                m[:, :3, 3] = world_pos @ obj_inv[:3, :3].T + obj_inv[:3, 3]
        pose[:, t] = m
        basis[:, t] = np.linalg.inv(chain) @ m if p >= 0 else inv_rest[t] @ m
    return basis
