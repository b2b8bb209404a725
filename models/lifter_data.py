"""Synthetic 2D/3D training pairs for kinevid's own lifter, made from real motion.

Pipeline: real motion -> 3D positions of the built-in model's 30 keypoint markers (world frame,
OpenSim axes: x forward, y up, z right; scaled to unit body height) -> a random virtual camera
-> HALPE-26 2D keypoints with detector-like noise and confidences, paired with the
camera-frame, root-relative 3D markers in metres.

Motion sources (all in ``../shared/data``; see :func:`build_clips` and the model card):

* OpenSim IK results (``.mot``) driven through forward kinematics of kinevid's *built-in*
  model (:mod:`opensim_bridge.builtin_model`): source coordinate names are Rajagopal2016's
  names already (gait2354/gait2392/gait10dof, Hamner, Rajagopal/OpenCap, JA1); knee angles of
  the gait2392 family (flexion negative) are negated; coordinates a trial lacks keep the
  built-in model's default (e.g. arms hanging in the lower-body models).
* CMU motion capture as original ASF/AMC (subject-calibrated skeletons) and the bvh11 BVH clips
  (CMU subject 131, 3ds Max-friendly skeleton), through a small pure-numpy FK. Joint centres
  map to the skeleton's joints (hip = femur origin, knee, ankle, shoulder = humerus origin,
  elbow, wrist, neck = lower-neck origin, head top = end of the head bone); the landmarks a
  skeleton lacks (heel, toes' lateral offsets, eyes, ears, nose, index/pinky knuckles) are
  placed with the built-in model's own offsets (fractions of body height) carried by the
  segment's rotation: foot for the heel, toes for the toe markers, head for the face, the
  wrist->hand axis and the thumb for the hand.

Every clip is normalised to unit body height (its rest-pose standing height); training draws
a height in [1.5, 1.95] m and scales, which is exact for the built-in model (every length in it
is a fraction of height) and an approximation for the mocap skeletons.

Camera frame of the 3D targets: x right, y down, z forward (OpenCV / VideoPose3D), root
(mid-hip, the built-in model's ``Hip`` marker) at the origin, in metres or (``output_units =
"height"``, kinevid's lifter) in units of the subject's height. Input 2D: HALPE-26 plus a
confidence channel, normalised as :mod:`models.lifter_input` defines (``screen_width``:
VideoPose3D's ``x / w * 2 - 1``, ``y / w * 2 - h / w``; ``person_window``: each window
centred on its centre frame's mid-hip and divided by its 2D size, plus a context row); a
dropped joint is filled over time as inference fills it (:func:`models.lift_infer.fill_missing`)
with confidence 0.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models import lifter_input
from opensim_bridge.builtin_model import KEYPOINT_MARKERS
from opensim_bridge.errors import InputError

# ----------------------------------------------------------------------------- layouts
OUTPUT_MARKERS: tuple[str, ...] = tuple(KEYPOINT_MARKERS)
ROOT_MARKER = "Hip"
ROOT_INDEX = OUTPUT_MARKERS.index(ROOT_MARKER)
INPUT_LAYOUT = "halpe26_hands"
# HALPE-26 native names in AlphaPose order, then the index and pinky knuckles
# (inference/layouts.py, "halpe26_hands")
INPUT_NAMES: tuple[str, ...] = (
    "Nose", "LEye", "REye", "LEar", "REar", "LShoulder", "RShoulder", "LElbow", "RElbow",
    "LWrist", "RWrist", "LHip", "RHip", "LKnee", "RKnee", "LAnkle", "RAnkle",
    "Head", "Neck", "Hip", "LBigToe", "RBigToe", "LSmallToe", "RSmallToe", "LHeel", "RHeel",
    "LIndex", "RIndex", "LPinky", "RPinky")
_HANDS = ("LIndex", "RIndex", "LPinky", "RPinky")
# Which input points each kind of 2D detector never gives (inference/layouts.py conversions
# to "halpe26_hands"): the lifter meets a point missing from a whole video as often as a
# point missing for a few frames, so training draws windows with each pattern.
INPUT_SOURCES: dict[str, tuple[str, ...]] = {
    "halpe26": _HANDS,                                  # AlphaPose HALPE-26, OpenPose BODY_25B
    "wholebody": ("Head",),                             # ViTPose / RTMPose COCO-WholeBody
    "blazepose": ("Head", "LSmallToe", "RSmallToe"),    # MediaPipe BlazePose-33
    "body25": ("Head",) + _HANDS,                       # OpenPose BODY_25
    "all": (),
}
INPUT_ROOT_INDEX = INPUT_NAMES.index("Hip")
# How each input keypoint is made from the built-in model's markers. All are the marker of
# the same name except HALPE "Neck", which is the mid-shoulder point (the built-in "Neck"
# marker is the cervicale, higher up), so it is the mean of the two shoulder joint centres.
INPUT_FROM_MARKERS: dict[str, dict[str, float]] = {
    n: ({"RShoulder": 0.5, "LShoulder": 0.5} if n == "Neck" else {n: 1.0}) for n in INPUT_NAMES}


def input_matrix(names: tuple[str, ...] = INPUT_NAMES) -> np.ndarray:
    """(len(names), 30): 2D-layout points = matrix @ built-in markers, for input points named
    as in :data:`INPUT_NAMES` (a lifter trained on HALPE-26 alone takes its first 26)."""
    w = np.zeros((len(names), len(OUTPUT_MARKERS)))
    for i, n in enumerate(names):
        for m, v in INPUT_FROM_MARKERS[n].items():
            w[i, OUTPUT_MARKERS.index(m)] = v
    return w


INPUT_MATRIX = input_matrix()   # (30, 30): inputs = INPUT_MATRIX @ markers


def _flip_perm(names) -> np.ndarray:
    idx = {n: i for i, n in enumerate(names)}
    perm = np.arange(len(names))
    for i, n in enumerate(names):
        if n[0] in "RL" and n[1:2].isupper():
            perm[i] = idx[("L" if n[0] == "R" else "R") + n[1:]]
    return perm


OUTPUT_FLIP = _flip_perm(OUTPUT_MARKERS)
INPUT_FLIP = _flip_perm(INPUT_NAMES)


def mirror_markers(markers: np.ndarray) -> np.ndarray:
    """Mirror image of world-frame markers (..., 30, 3) across the sagittal plane (z -> -z,
    OpenSim axes), with left and right labels swapped: a valid motion of a mirrored person."""
    out = markers[..., OUTPUT_FLIP, :].copy()
    out[..., 2] *= -1.0
    return out


# Each arm as a chain of (parent, child) markers, from the shoulder out.
ARM_CHAINS: tuple[tuple[tuple[str, str], ...], ...] = tuple(
    ((f"{s}Shoulder", f"{s}Elbow"), (f"{s}Elbow", f"{s}Wrist"), (f"{s}Wrist", f"{s}Index"),
     (f"{s}Wrist", f"{s}Pinky")) for s in "RL")


# The head's landmarks, each from the cervicale (a rigid head turned about the neck).
HEAD_CHAIN: tuple[tuple[str, str], ...] = tuple(
    ("Neck", n) for n in ("Head", "Nose", "REye", "LEye", "REar", "LEar"))


def _trunk_frames(m: np.ndarray) -> np.ndarray:
    """(..., 3, 3) orthonormal trunk frames of markers (..., 30, 3), columns: lateral (left to
    right shoulder), up (mid-hip to mid-shoulder), and their cross product."""
    i = OUTPUT_MARKERS.index
    rs, ls = m[..., i("RShoulder"), :], m[..., i("LShoulder"), :]
    up = 0.5 * (rs + ls) - m[..., ROOT_INDEX, :]
    up /= np.maximum(np.linalg.norm(up, axis=-1, keepdims=True), 1e-9)
    lat = rs - ls
    lat -= (lat * up).sum(-1, keepdims=True) * up
    lat /= np.maximum(np.linalg.norm(lat, axis=-1, keepdims=True), 1e-9)
    return np.stack([lat, up, np.cross(lat, up)], axis=-1)


def swap_parts(body: np.ndarray, donor: np.ndarray, chains=ARM_CHAINS) -> np.ndarray:
    """``body`` (..., 30, 3) with the motion of ``donor`` (same shape) for the parts in
    ``chains`` (default: both arms; :data:`HEAD_CHAIN`: the head): each segment (parent ->
    child marker) takes the donor's direction relative to the donor's trunk, turned into
    ``body``'s trunk frame, with ``body``'s own segment length, chained from ``body``'s parent
    marker (shoulder, cervicale). Mocap holds few arm and head movements per leg movement;
    mixing them makes poses the data lacks (PoseAug-style part recombination) without leaving
    the space of real segment motion."""
    i = OUTPUT_MARKERS.index
    out = body.copy()
    fb, fd = _trunk_frames(body), _trunk_frames(donor)
    for chain in chains:
        for a, b in chain:
            v = donor[..., i(b), :] - donor[..., i(a), :]
            v /= np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)
            local = np.einsum("...ji,...j->...i", fd, v)
            length = np.linalg.norm(body[..., i(b), :] - body[..., i(a), :], axis=-1,
                                    keepdims=True)
            out[..., i(b), :] = out[..., i(a), :] + length * np.einsum("...ij,...j->...i",
                                                                       fb, local)
    return out


# ----------------------------------------------------------------------------- data files
def shared_data_root() -> Path:
    """``../shared/data`` beside the repository."""
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def default_cache_dir() -> Path:
    """Where unpacked mocap and processed clips go: never inside the repository."""
    base = os.environ.get("KINEVID_CACHE") or os.environ.get("XDG_CACHE_HOME") \
        or str(Path.home() / ".cache")
    return Path(base) / "kinevid" / "lifter"


@dataclass
class Clip:
    """One trial: marker positions (T, 30, 3) float32, world frame (OpenSim axes), unit height."""
    name: str
    source: str          # opensim | cmu_amc | bvh
    group: str           # split unit: a trial (OpenSim) or a subject (CMU)
    fps: float
    markers: np.ndarray
    licence: str
    # (30,) bool: which markers the source measured. A trial processed with a model without
    # arms (gait2354/2392/10dof) has the built-in model's default arms, hanging still while
    # the subject walks: a pose nobody measured, so evaluation leaves those markers out.
    measured: np.ndarray | None = None

    @property
    def frames(self) -> int:
        return int(self.markers.shape[0])


# Held-out evaluation split: whole trials (OpenSim) and whole subjects (CMU). The three
# subject01_walk1 files are the same trial processed with three models, so they go together.
HELD_OUT_GROUPS: frozenset[str] = frozenset({
    "opensim:subject01_walk1", "opensim:OpenCap_walking4", "opensim:OpenCap_DJ5",
    "cmu:09", "cmu:13", "cmu:35",
})

# (relative path, trial group, licence)
OPENSIM_TRIALS: tuple[tuple[str, str, str], ...] = (
    ("opensim-models/Pipelines/Gait2354_Simbody/OutputReference/subject01_walk1_ik.mot",
     "subject01_walk1", "CC BY 3.0 (opensim-models gait2354)"),
    ("opensim-models/Pipelines/Gait2392_Simbody/subject01_walk1_ik.mot",
     "subject01_walk1", "CC BY 3.0 (opensim-models gait2392)"),
    ("opensim-models/Pipelines/Gait10dof18musc/OutputReference/IK/subject01_walk_IK.mot",
     "subject01_walk1", "CC BY 3.0 (opensim-models gait10dof18musc)"),
    ("opensim-models/Pipelines/Hamner/outputReference/ResultsIK/subject02_running_ik.mot",
     "Hamner_subject02_running", "opensim-models (Hamner 2010)"),
    ("nimblephysics/data/osim/JA1GaitResults/JA1Gait35_ik_by_opensim.mot",
     "JA1_sprint", "BSD-2 repo; data Dorn 2012"),
) + tuple(
    (f"nimblephysics/data/grf/OpenCapUnfiltered/IK/{t}_ik.mot", f"OpenCap_{t}",
     "CC BY 4.0 (OpenCap lab dataset)")
    for t in ("DJ1", "DJ4", "DJ5", "walking2", "walking3", "walking4"))

BVH_CLIPS: tuple[str, ...] = tuple(f"bvh11/resources/131_0{i}.bvh" for i in (1, 2, 3))


# ----------------------------------------------------------------------------- rotations
def _rot(axis: str, ang: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) about a principal axis, angles in radians."""
    c, s = np.cos(ang), np.sin(ang)
    o, z = np.ones_like(ang), np.zeros_like(ang)
    if axis == "x":
        m = [[o, z, z], [z, c, -s], [z, s, c]]
    elif axis == "y":
        m = [[c, z, s], [z, o, z], [-s, z, c]]
    else:
        m = [[c, -s, z], [s, c, z], [z, z, o]]
    return np.moveaxis(np.array(m, dtype=np.float64), (0, 1), (-2, -1))


# ----------------------------------------------------------------------------- built-in offsets
@functools.cache
def _builtin_default(sex: str = "m") -> dict[str, np.ndarray]:
    """Built-in model markers at the default pose, divided by the model's height."""
    from opensim_bridge.builtin_model import build_model, marker_positions
    h = 1.75
    pos = marker_positions(build_model(h, 70.0, sex), {})
    return {k: v / h for k, v in pos.items()}


def _landmark_offsets() -> dict[str, object]:
    b = _builtin_default("m")
    off: dict[str, object] = {}
    for n in ("Nose", "REye", "LEye", "REar", "LEar"):
        off[n] = b[n] - b["Head"]                       # from the vertex, head frame
    for s in "RL":
        off[f"{s}Heel"] = b[f"{s}Heel"] - b[f"{s}Ankle"]            # foot frame
        off[f"{s}BigToe"] = np.array([0.0, 0.0, b[f"{s}BigToe"][2] - b[f"{s}Ankle"][2]])
        off[f"{s}SmallToe"] = b[f"{s}SmallToe"] - b[f"{s}BigToe"]   # toes frame
        for f in ("Index", "Pinky"):
            d = b[f"{s}{f}"] - b[f"{s}Wrist"]
            off[f"{s}{f}"] = (-d[1], abs(d[2]))       # along the hand, towards the thumb
    off["ankle_height"] = float(b["RAnkle"][1])
    return off


# ----------------------------------------------------------------------------- skeletons
# Common description of a mocap skeleton's frame: points and segment rotations, already in
# OpenSim axes (x forward, y up, z right), rotations identity in the rest pose.
_SKEL_POINTS = ("LHip", "RHip", "LKnee", "RKnee", "LAnkle", "RAnkle", "LToeTip", "RToeTip",
                "LShoulder", "RShoulder", "LElbow", "RElbow", "LWrist", "RWrist",
                "LHandEnd", "RHandEnd", "LThumb", "RThumb", "Neck", "HeadTop")
_SKEL_ROTS = ("Head", "LFoot", "RFoot", "LToes", "RToes")


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def skeleton_to_markers(points: dict[str, np.ndarray], rots: dict[str, np.ndarray],
                        height: float) -> np.ndarray:
    """The 30 built-in keypoint markers (T, 30, 3) from a skeleton's joints and rotations."""
    off = _landmark_offsets()
    H = float(height)
    T = points["LHip"].shape[0]
    out = np.zeros((T, len(OUTPUT_MARKERS), 3))
    put = {}
    put["Hip"] = 0.5 * (points["LHip"] + points["RHip"])
    put["Neck"] = points["Neck"]
    put["Head"] = points["HeadTop"]
    for n in ("Nose", "REye", "LEye", "REar", "LEar"):
        put[n] = points["HeadTop"] + rots["Head"] @ (off[n] * H)
    for s in "RL":
        for j in ("Hip", "Knee", "Ankle", "Shoulder", "Elbow", "Wrist"):
            put[f"{s}{j}"] = points[f"{s}{j}"]
        put[f"{s}Heel"] = points[f"{s}Ankle"] + rots[f"{s}Foot"] @ (off[f"{s}Heel"] * H)
        big = points[f"{s}ToeTip"] + rots[f"{s}Toes"] @ (off[f"{s}BigToe"] * H)
        put[f"{s}BigToe"] = big
        put[f"{s}SmallToe"] = big + rots[f"{s}Toes"] @ (off[f"{s}SmallToe"] * H)
        w = points[f"{s}Wrist"]
        a = _unit(points[f"{s}HandEnd"] - w)
        t = points[f"{s}Thumb"] - w
        b = _unit(t - np.sum(t * a, axis=-1, keepdims=True) * a)
        for f, sign in (("Index", 1.0), ("Pinky", -1.0)):
            along, across = off[f"{s}{f}"]
            put[f"{s}{f}"] = w + along * H * a + sign * across * H * b
    for i, n in enumerate(OUTPUT_MARKERS):
        out[:, i] = put[n]
    return out


def _to_opensim_axes(points, rots, rest_points):
    """Rotate a Y-up skeleton so that it faces +x with +z to its right, from its rest pose."""
    up = np.array([0.0, 1.0, 0.0])
    right = rest_points["RHip"] - rest_points["LHip"]
    right = _unit(right - (right @ up) * up)
    fwd = np.cross(up, right)
    A = np.stack([fwd, up, right])            # rows: new axes in old coordinates
    P = {k: v @ A.T for k, v in points.items()}
    R = {k: A @ v @ A.T for k, v in rots.items()}
    return P, R, {k: v @ A.T for k, v in rest_points.items()}


def _standing_height(rest_points) -> float:
    ankle_y = 0.5 * (rest_points["LAnkle"][1] + rest_points["RAnkle"][1])
    return float((rest_points["HeadTop"][1] - ankle_y) / (1.0 - _landmark_offsets()["ankle_height"]))


def _finish(points, rots, rest_points) -> np.ndarray:
    P, R, rest = _to_opensim_axes(points, rots, rest_points)
    H = _standing_height(rest)
    m = skeleton_to_markers(P, R, H) / H
    return _floor(m)


def _floor(m: np.ndarray) -> np.ndarray:
    """Shift vertically so the feet stand on y = 0 (5th percentile of the lowest foot marker)."""
    feet = [OUTPUT_MARKERS.index(f"{s}{p}") for s in "RL" for p in ("Heel", "BigToe", "SmallToe")]
    low = np.percentile(m[:, feet, 1].min(axis=1), 5)
    m = m.copy()
    m[..., 1] -= low
    return m


# ----------------------------------------------------------------------------- ASF/AMC
@dataclass
class _Bone:
    name: str
    direction: np.ndarray
    length: float
    C: np.ndarray
    dof: tuple[str, ...]
    parent: str = "root"


def read_asf(path: str | os.PathLike) -> dict[str, _Bone]:
    """Bones of an Acclaim skeleton file (direction, length, axis, dof, parent)."""
    path = Path(path)
    text = path.read_text(errors="replace")
    bones: dict[str, _Bone] = {}
    sec = re.search(r":bonedata(.*?):hierarchy", text, re.DOTALL)
    hier = re.search(r":hierarchy(.*)", text, re.DOTALL)
    if not sec or not hier:
        raise InputError("not an ASF skeleton (no :bonedata/:hierarchy)", path)
    for block in re.findall(r"begin(.*?)end", sec.group(1), re.DOTALL):
        fields: dict[str, list[str]] = {}
        for line in block.strip().splitlines():
            tok = line.split()
            if tok:
                fields.setdefault(tok[0], tok[1:])
        ax = fields["axis"]
        a = np.radians([float(x) for x in ax[:3]])
        # ASF "axis ax ay az XYZ" (the only order CMU uses): a static x-then-y-then-z
        # rotation, C = Rz Ry Rx
        C = _rot("z", np.array(a[2])) @ _rot("y", np.array(a[1])) @ _rot("x", np.array(a[0]))
        bones[fields["name"][0]] = _Bone(
            fields["name"][0], np.array([float(x) for x in fields["direction"]]),
            float(fields["length"][0]), C, tuple(fields.get("dof", [])))
    for line in hier.group(1).splitlines():
        tok = line.split()
        if not tok or tok[0] in ("begin", "end"):
            continue
        for child in tok[1:]:
            if child in bones:
                bones[child].parent = tok[0]
    return bones


def read_amc(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Per-bone (T, k) values of an AMC motion file."""
    path = Path(path)
    rows: dict[str, list[list[float]]] = {}
    started = False
    with open(path, errors="replace") as fh:
        for line in fh:
            tok = line.split()
            if not tok or tok[0].startswith((":", "#")):
                continue
            if len(tok) == 1 and tok[0].isdigit():
                started = True
                continue
            if started:
                rows.setdefault(tok[0], []).append([float(x) for x in tok[1:]])
    if not rows:
        raise InputError("AMC file holds no frames", path)
    T = min(len(v) for v in rows.values())
    return {k: np.asarray(v[:T]) for k, v in rows.items()}


def asf_amc_fk(bones: dict[str, _Bone], motion: dict[str, np.ndarray] | None, T: int = 1):
    """Global (start, end, rotation) of every bone, (T, 3), (T, 3), (T, 3, 3)."""
    def euler(vals: np.ndarray, dof) -> np.ndarray:
        ang = {"rx": 0.0, "ry": 0.0, "rz": 0.0}
        for j, d in enumerate(dof):
            if d in ang:
                ang[d] = np.radians(vals[:, j])
        z = np.zeros(T)
        a = {k: (v if isinstance(v, np.ndarray) else z) for k, v in ang.items()}
        return _rot("z", a["rz"]) @ _rot("y", a["ry"]) @ _rot("x", a["rx"])

    if motion is not None:
        root = motion["root"]
        T = root.shape[0]
        root_pos = root[:, :3]
        root_R = euler(root[:, 3:6], ("rx", "ry", "rz"))
    else:
        root_pos = np.zeros((T, 3))
        root_R = np.tile(np.eye(3), (T, 1, 1))
    start, end, rot = {"root": root_pos}, {"root": root_pos}, {"root": root_R}
    pending = list(bones)
    while pending:
        for name in list(pending):
            b = bones[name]
            if b.parent not in end:
                continue
            vals = motion.get(name) if motion is not None else None
            if vals is not None and b.dof:
                L = euler(vals[:T], b.dof)
            else:
                L = np.tile(np.eye(3), (T, 1, 1))
            R = rot[b.parent] @ b.C @ L @ b.C.T
            start[name] = end[b.parent]
            end[name] = start[name] + b.length * (R @ b.direction)
            rot[name] = R
            pending.remove(name)
    return start, end, rot


def _asf_skeleton(start, end, rot):
    P = {}
    for s, l in (("L", "l"), ("R", "r")):
        P[f"{s}Hip"] = start[f"{l}femur"]
        P[f"{s}Knee"] = end[f"{l}femur"]
        P[f"{s}Ankle"] = end[f"{l}tibia"]
        P[f"{s}ToeTip"] = end[f"{l}toes"]
        P[f"{s}Shoulder"] = start[f"{l}humerus"]
        P[f"{s}Elbow"] = end[f"{l}humerus"]
        P[f"{s}Wrist"] = end[f"{l}radius"]
        P[f"{s}HandEnd"] = end[f"{l}fingers"]
        P[f"{s}Thumb"] = end[f"{l}thumb"]
    P["Neck"] = start["lowerneck"]
    P["HeadTop"] = end["head"]
    R = {"Head": rot["head"], "LFoot": rot["lfoot"], "RFoot": rot["rfoot"],
         "LToes": rot["ltoes"], "RToes": rot["rtoes"]}
    return P, R


def amc_markers(asf_path, amc_path) -> np.ndarray:
    """Unit-height marker trajectories (T, 30, 3) of one ASF/AMC clip."""
    bones = read_asf(asf_path)
    P, R = _asf_skeleton(*asf_amc_fk(bones, read_amc(amc_path)))
    rest, _ = _asf_skeleton(*asf_amc_fk(bones, None, 1))
    return _finish(P, R, {k: v[0] for k, v in rest.items()})


# ----------------------------------------------------------------------------- BVH
@dataclass
class BVH:
    names: list[str]
    parents: list[int]
    offsets: np.ndarray          # (J, 3)
    channels: list[list[str]]
    motion: np.ndarray           # (T, C)
    frame_time: float


def read_bvh(path: str | os.PathLike) -> BVH:
    """A BVH file: joint hierarchy (End Sites as joints named '<parent>_end') and motion."""
    path = Path(path)
    tokens = path.read_text(errors="replace").split()
    names, parents, offsets, channels = [], [], [], []
    stack: list[int] = []
    i = 0
    try:
        while tokens[i] != "MOTION":
            t = tokens[i]
            if t in ("ROOT", "JOINT"):
                names.append(tokens[i + 1])
                parents.append(stack[-1] if stack else -1)
                offsets.append([0.0, 0.0, 0.0])
                channels.append([])
                i += 2
            elif t == "End":
                names.append(names[stack[-1]] + "_end")
                parents.append(stack[-1])
                offsets.append([0.0, 0.0, 0.0])
                channels.append([])
                i += 2
            elif t == "{":
                stack.append(len(names) - 1)
                i += 1
            elif t == "}":
                stack.pop()
                i += 1
            elif t == "OFFSET":
                offsets[stack[-1]] = [float(x) for x in tokens[i + 1:i + 4]]
                i += 4
            elif t == "CHANNELS":
                n = int(tokens[i + 1])
                channels[stack[-1]] = tokens[i + 2:i + 2 + n]
                i += 2 + n
            else:
                i += 1
        frames = int(tokens[tokens.index("Frames:", i) + 1])
        j = tokens.index("Time:", i)
        frame_time = float(tokens[j + 1])
        nch = sum(len(c) for c in channels)
        data = np.array(tokens[j + 2:j + 2 + frames * nch], dtype=np.float64)
        motion = data.reshape(frames, nch)
    except (IndexError, ValueError) as exc:
        raise InputError(f"malformed BVH file: {exc}", path) from exc
    return BVH(names, parents, np.array(offsets), channels, motion, frame_time)


def bvh_fk(bvh: BVH, motion: np.ndarray | None = None):
    """Global joint positions (T, J, 3) and rotations (T, J, 3, 3)."""
    motion = bvh.motion if motion is None else motion
    T = motion.shape[0]
    J = len(bvh.names)
    pos = np.zeros((T, J, 3))
    rot = np.zeros((T, J, 3, 3))
    col = 0
    for j in range(J):
        R = np.tile(np.eye(3), (T, 1, 1))
        trans = np.zeros((T, 3))
        for ch in bvh.channels[j]:
            v = motion[:, col]
            col += 1
            if ch.endswith("rotation"):
                R = R @ _rot(ch[0].lower(), np.radians(v))
            elif ch.endswith("position"):
                trans[:, "XYZ".index(ch[0])] = v
        p = bvh.parents[j]
        if p < 0:
            pos[:, j] = bvh.offsets[j] + trans
            rot[:, j] = R
        else:
            pos[:, j] = pos[:, p] + np.einsum("tij,j->ti", rot[:, p], bvh.offsets[j])
            rot[:, j] = rot[:, p] @ R
    return pos, rot


_BVH_MAX = {  # cgspeed 3ds Max-friendly CMU conversion (bvh11)
    "Hip": "{S}Hip", "Knee": "{S}Knee", "Ankle": "{S}Ankle", "ToeTip": "{S}Toe_end",
    "Shoulder": "{S}Shoulder", "Elbow": "{S}Elbow", "Wrist": "{S}Wrist",
    "HandEnd": "{s}Fingers_end", "Thumb": "{s}Thumb_end",
}


def bvh_markers(path) -> tuple[np.ndarray, float]:
    """Unit-height marker trajectories (T, 30, 3) and frame rate of a cgspeed 3ds Max BVH."""
    bvh = read_bvh(path)
    idx = {n: i for i, n in enumerate(bvh.names)}

    def skel(pos, rot):
        P, R = {}, {}
        for S, side in (("L", "Left"), ("R", "Right")):
            for k, pat in _BVH_MAX.items():
                P[f"{S}{k}"] = pos[:, idx[pat.format(S=side, s=S)]]
            R[f"{S}Foot"] = rot[:, idx[f"{side}Ankle"]]
            R[f"{S}Toes"] = rot[:, idx[f"{side}Toe"]]
        P["Neck"] = pos[:, idx["lowerneck"]]
        P["HeadTop"] = pos[:, idx["Head_end"]]
        R["Head"] = rot[:, idx["Head"]]
        return P, R

    P, R = skel(*bvh_fk(bvh))
    rest, _ = skel(*bvh_fk(bvh, np.zeros((1, bvh.motion.shape[1]))))
    m = _finish(P, R, {k: v[0] for k, v in rest.items()})
    # cgspeed conversions start with a T-pose frame
    return m[1:], 1.0 / bvh.frame_time


# ----------------------------------------------------------------------------- OpenSim FK
def mot_coordinates(path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Time and the built-in model's coordinates (radians / metres) from an IK .mot."""
    from opensim_bridge.builtin_model import COORDINATES, TRANSLATIONAL_COORDINATES
    from opensim_bridge.storage import read_table
    tab = read_table(path)
    deg = tab.in_degrees is not False
    coords = {}
    for j, lab in enumerate(tab.labels):
        if lab in COORDINATES:
            v = tab.data[:, j].copy()
            if deg and lab not in TRANSLATIONAL_COORDINATES:
                v = np.radians(v)
            coords[lab] = np.nan_to_num(v)
    # gait2392-family knees are negative in flexion; Rajagopal's (the built-in's) positive
    for s in ("r", "l"):
        k = f"knee_angle_{s}"
        if k in coords and np.median(coords[k]) < -0.05:
            coords[k] = -coords[k]
    return tab.time, coords


def opensim_markers(coords: dict[str, np.ndarray], sex: str = "m") -> np.ndarray:
    """Forward kinematics of the built-in model (one model, state reused): (T, 30, 3)/height."""
    import opensim as osim

    from opensim_bridge.builtin_model import build_model
    h = 1.75
    model = build_model(h, 70.0, sex)
    state = model.initSystem()
    cs = model.getCoordinateSet()
    cl = [(cs.get(n), v) for n, v in coords.items()]
    for c, _ in cl:
        c.setLocked(state, False)
    ms = model.getMarkerSet()
    mk = [ms.get(n) for n in OUTPUT_MARKERS]
    T = len(next(iter(coords.values())))
    out = np.zeros((T, len(mk), 3))
    for t in range(T):
        for c, v in cl:
            c.setValue(state, float(v[t]), False)
        model.realizePosition(state)
        for i, m in enumerate(mk):
            out[t, i] = m.getLocationInGround(state).to_numpy()
    del osim
    return out / h


# ----------------------------------------------------------------------------- clip set
def cmu_dir(data_root: Path, cache: Path) -> Path:
    """Unpack the CMU archive into the cache (once) and return its ``mocap`` folder."""
    dest = cache / "cmu"
    done = dest / ".unpacked"
    if not done.exists():
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(data_root / "mocap" / "cmu_mocap.tar.xz") as tf:
            tf.extractall(dest, filter="data")
        done.write_text("ok\n")
    return dest / "mocap"


def cmu_amc_list(mocap: Path) -> list[tuple[str, Path, Path, float]]:
    """(clip id, asf, amc, fps) for every raw ASF/AMC clip in the CMU set."""
    with open(mocap / "MANIFEST.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    asf = {Path(r["path"]).stem: mocap / r["path"] for r in rows if r["kind"] == "skeleton"}
    out = []
    for r in rows:
        if r["kind"] == "clip" and r["format"] == "AMC":
            cid = r["cmu_clip_id"]
            subj = cid.split("_")[0]
            fps = float(r["true_fps"] or 120)
            out.append((cid, asf[subj], mocap / r["path"], fps))
    return sorted(out)


DATA_VERSION = "1"
# The cache file's own format (what it stores besides the markers, e.g. Clip.measured): a new
# format rebuilds the cache without changing the data the lifter is trained on.
CACHE_FORMAT = "2"


def build_clips(data_root: Path | None = None, cache: Path | None = None,
                include_cmu: bool = True, log=print) -> list[Clip]:
    """Every motion clip as unit-height built-in markers; cached as .npz in ``cache``."""
    data_root = Path(data_root or shared_data_root())
    cache = Path(cache or default_cache_dir())
    cache.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha1(f"{DATA_VERSION}|{CACHE_FORMAT}|{include_cmu}|{data_root.resolve()}"
                      .encode()).hexdigest()[:10]
    f = cache / f"clips_{key}.npz"
    if f.exists():
        return _load_clips(f)
    clips: list[Clip] = []
    for rel, trial, lic in OPENSIM_TRIALS:
        t, coords = mot_coordinates(data_root / rel)
        fps = 1.0 / float(np.median(np.diff(t)))
        measured = np.ones(len(OUTPUT_MARKERS), bool)
        if not any(c.startswith("arm_flex") for c in coords):
            measured[[OUTPUT_MARKERS.index(f"{s}{p}") for s in "RL"
                      for p in ("Elbow", "Wrist", "Index", "Pinky")]] = False
        for sex in ("m", "f"):
            m = _floor(opensim_markers(coords, sex))
            clips.append(Clip(f"{Path(rel).stem}:{Path(rel).parts[-3]}:{sex}", "opensim",
                              f"opensim:{trial}", fps, m.astype(np.float32), lic, measured))
        log(f"opensim {rel}: {len(t)} frames at {fps:.0f} Hz")
    for rel in BVH_CLIPS:
        m, fps = bvh_markers(data_root / rel)
        clips.append(Clip(Path(rel).stem, "bvh", "cmu:131", fps, m.astype(np.float32),
                          "CMU mocap terms (bvh11 repo MIT)"))
    if include_cmu:
        mocap = cmu_dir(data_root, cache)
        for cid, asf, amc, fps in cmu_amc_list(mocap):
            m = amc_markers(asf, amc)
            clips.append(Clip(cid, "cmu_amc", f"cmu:{cid.split('_')[0]}", fps,
                              m.astype(np.float32), "CMU mocap terms"))
        log(f"cmu: {sum(c.source == 'cmu_amc' for c in clips)} ASF/AMC clips")
    _save_clips(f, clips)
    return clips


def _save_clips(path: Path, clips: list[Clip]) -> None:
    from opensim_bridge.atomic import atomic_path
    arrays = {f"m{i}": c.markers for i, c in enumerate(clips)}
    arrays.update({f"v{i}": c.measured for i, c in enumerate(clips) if c.measured is not None})
    meta = np.array([[c.name, c.source, c.group, repr(c.fps), c.licence] for c in clips])
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, meta=meta, **arrays)


def _load_clips(path: Path) -> list[Clip]:
    z = np.load(path)
    return [Clip(str(n), str(s), str(g), float(fps), z[f"m{i}"], str(lic),
                 z[f"v{i}"] if f"v{i}" in z.files else None)
            for i, (n, s, g, fps, lic) in enumerate(z["meta"])]


def split_clips(clips: list[Clip]) -> tuple[list[Clip], list[Clip]]:
    """(train, held-out) by whole trial / subject."""
    train = [c for c in clips if c.group not in HELD_OUT_GROUPS]
    held = [c for c in clips if c.group in HELD_OUT_GROUPS]
    return train, held


# ----------------------------------------------------------------------------- cameras
@dataclass
class Cameras:
    """A batch of pinhole cameras: world->camera rotation R (B,3,3) (rows: camera x right,
    y down, z forward in world axes), centre C (B,3), focal f (B,) px, image w, h (B,)."""
    R: np.ndarray
    C: np.ndarray
    f: np.ndarray
    w: np.ndarray
    h: np.ndarray


def project(points: np.ndarray, cam: Cameras) -> tuple[np.ndarray, np.ndarray]:
    """World points (B, ..., 3) -> pixel coords (B, ..., 2) and camera-frame points."""
    B = points.shape[0]
    shp = (B,) + (1,) * (points.ndim - 2)
    d = (points - cam.C.reshape(shp + (3,))).reshape(B, -1, 3)
    Xc = np.matmul(d, np.swapaxes(cam.R, 1, 2)).reshape(points.shape)
    z = np.maximum(Xc[..., 2], 1e-3)
    u = cam.f.reshape(shp) * Xc[..., 0] / z + cam.w.reshape(shp) / 2
    v = cam.f.reshape(shp) * Xc[..., 1] / z + cam.h.reshape(shp) / 2
    return np.stack([u, v], axis=-1), Xc


def look_at(C: np.ndarray, target: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """World->camera rotations (B,3,3) for cameras at C looking at target, Y up, with roll."""
    fwd = _unit(target - C)
    up = np.array([0.0, 1.0, 0.0])
    right = _unit(np.cross(fwd, up))
    down = np.cross(fwd, right)
    cr, sr = np.cos(roll)[:, None], np.sin(roll)[:, None]
    r2 = cr * right + sr * down
    d2 = -sr * right + cr * down
    return np.stack([r2, d2, fwd], axis=1)


def random_cameras(rng: np.random.Generator, root: np.ndarray, height: np.ndarray) -> Cameras:
    """Cameras around people whose mid-window root is ``root`` (B, 3), world axes, metres.

    Camera height 0.5-2 m, horizontal distance 2.5-10 m at any azimuth, 40-80 deg horizontal
    field of view, 1920x1080 or portrait 1080x1920, aimed near the person (so that they are
    anywhere in the central part of the image), roll +-5 deg.
    """
    B = root.shape[0]
    az = rng.uniform(0, 2 * np.pi, B)
    dist = rng.uniform(2.5, 10.0, B)
    ch = rng.uniform(0.5, 2.0, B)
    C = np.stack([root[:, 0] + dist * np.cos(az), ch, root[:, 2] + dist * np.sin(az)], axis=1)
    portrait = rng.random(B) < 0.3
    w = np.where(portrait, 1080.0, 1920.0)
    h = np.where(portrait, 1920.0, 1080.0)
    hfov = np.radians(rng.uniform(40, 80, B))
    f = (w / 2) / np.tan(hfov / 2)
    # aim at a point near the body centre, offset so the person is not always centred
    vfov_half = np.arctan(h / 2 / f)
    hfov_half = hfov / 2
    tgt = root.copy()
    tgt[:, 1] = 0.55 * height
    d = np.linalg.norm(tgt - C, axis=1)
    side = _unit(np.cross(tgt - C, np.array([0.0, 1.0, 0.0])))
    tgt = tgt + side * (rng.uniform(-0.5, 0.5, B) * d * np.tan(hfov_half))[:, None]
    tgt[:, 1] += rng.uniform(-0.3, 0.3, B) * d * np.tan(vfov_half)
    R = look_at(C, tgt, np.radians(rng.uniform(-5, 5, B)))
    return Cameras(R, C, f, w, h)


# ----------------------------------------------------------------------------- 2D noise
@dataclass
class NoiseSpec:
    """Detector-like 2D noise. ``sigma`` is the standard deviation of the per-frame jitter as a
    fraction of the person's 2D height (bounding-box height of the clean keypoints), per
    coordinate, at full confidence; a per-joint bias constant over the window adds ``bias``
    times that. Low-confidence joints get up to ``1 + low_conf_gain`` times more noise;
    joints below ``drop_below`` confidence are zeroed (dropped); ``outlier_rate`` of joints
    jump by up to ``outlier_size`` of the person's height (confidence then low)."""
    sigma: float = 0.015
    bias: float = 0.5
    low_conf_gain: float = 2.0
    drop_below: float = 0.2
    outlier_rate: float = 0.01
    outlier_size: float = 0.2
    conf_noise: bool = True


def add_noise(rng, uv: np.ndarray, spec: NoiseSpec, sigma: np.ndarray | None = None):
    """Noisy 2D (B, T, J, 2) and confidences (B, T, J) from clean projections."""
    B, T, J, _ = uv.shape
    size = (uv[..., 1].max(axis=2) - uv[..., 1].min(axis=2)).mean(axis=1)   # (B,)
    sig = (np.full(B, spec.sigma) if sigma is None else sigma) * size
    if spec.conf_noise:
        # mostly confident, a tail of uncertain joints (roughly what HRNet/RTMPose report)
        conf = np.clip(1.0 - 0.12 * np.abs(rng.standard_normal((B, T, J), dtype=np.float32))
                       - (rng.random((B, 1, J)) < 0.05) * rng.uniform(0, 0.8, (B, 1, J)), 0, 1)
    else:
        conf = np.ones((B, T, J))
    gain = 1.0 + spec.low_conf_gain * (1.0 - conf)
    s = sig[:, None, None, None]
    # float32 draws: half the cost of float64 ones, far below any pixel that matters
    noise = rng.standard_normal((B, T, J, 2), dtype=np.float32) * (s * gain[..., None])
    noise += rng.standard_normal((B, 1, J, 2), dtype=np.float32) * (s * spec.bias)
    out = rng.random((B, T, J), dtype=np.float32) < spec.outlier_rate
    if out.any():
        # draw the jumps for the outliers only (1 % of the joints)
        bi, ti, ji = np.nonzero(out)
        noise[bi, ti, ji] = (rng.uniform(-1, 1, (len(bi), 2))
                             * (spec.outlier_size * size)[bi, None])
        conf[bi, ti, ji] = rng.uniform(0.05, 0.6, len(bi))
    uv_n = uv + noise
    drop = conf < spec.drop_below
    uv_n[drop] = np.nan
    conf = np.where(drop, 0.0, conf)
    return uv_n, conf


def normalize_screen(uv: np.ndarray, w: np.ndarray, h: np.ndarray) -> np.ndarray:
    """VideoPose3D screen normalisation: x / w * 2 - 1, y / w * 2 - h / w (w, h per batch)."""
    return lifter_input.screen_width(uv, w, h)


def fill_missing(xy: np.ndarray) -> np.ndarray:
    """(B, T, J, 2) with NaN -> filled as kinevid's inference fills them
    (:func:`models.lift_infer.fill_missing`): linear in time between samples, held at the ends;
    a joint missing in the whole window takes the frame's mean of the present joints (or 0)."""
    ok = np.isfinite(xy).all(axis=-1)                        # (B, T, J)
    if ok.all():
        return xy
    never = ~ok.any(axis=1)                                  # (B, J): nothing to interpolate
    # only the (window, joint) tracks with a gap need the work: a few percent of a batch, and
    # this function was a third of the training step's data time
    gap = ~ok.all(axis=1) & ~never                           # (B, J)
    if gap.sum() * 4 < gap.size:
        out = xy.copy()
        if gap.any():
            bi, ji = np.nonzero(gap)
            out[bi, :, ji] = _fill_tracks(xy[bi, :, ji][:, :, None])[:, :, 0]
        if never.any():
            _fill_never(out, never)
        return out
    return _fill_tracks(xy, ok)


def _fill_tracks(xy: np.ndarray, ok: np.ndarray | None = None) -> np.ndarray:
    """:func:`fill_missing` on every track of ``xy`` (B, T, J, 2), vectorised."""
    T = xy.shape[1]
    if ok is None:
        ok = np.isfinite(xy).all(axis=-1)
    t = np.arange(T)[None, :, None]
    prev = np.maximum.accumulate(np.where(ok, t, -1), axis=1)
    nxt = np.flip(np.minimum.accumulate(np.flip(np.where(ok, t, T), axis=1), axis=1), axis=1)
    pc, nc = np.clip(prev, 0, T - 1), np.clip(nxt, 0, T - 1)
    take = lambda idx: np.take_along_axis(xy, idx[..., None].repeat(2, -1), axis=1)
    xp, xn = take(pc), take(nc)
    span = np.maximum(nxt - prev, 1)[..., None]
    a = ((t - prev)[..., None] / span)
    lin = xp + a * (xn - xp)
    out = np.where((prev >= 0)[..., None] & (nxt < T)[..., None], lin,
                   np.where((prev >= 0)[..., None], xp, xn))
    out = np.where(ok[..., None], xy, out)
    never = ~ok.any(axis=1)                                  # (B, J)
    if never.any() and out.shape[2] > 1:
        _fill_never(out, never)
    return out


def _fill_never(out: np.ndarray, never: np.ndarray) -> None:
    """In place: joints missing in a whole window (``never`` (B, J)) take the frame's mean of
    the present joints (or 0); every frame of a present joint must be filled already."""
    rows = np.nonzero(never.any(axis=1))[0]                  # only the windows concerned
    sub, nv = out[rows], never[rows]                         # (K, T, J, 2) copy, (K, J)
    sub[np.broadcast_to(nv[:, None, :, None], sub.shape)] = 0.0
    # the mean as a weighted sum over the present joints: most training windows need it,
    # and nanmean over a masked copy cost several times more
    wgt = (~nv).astype(sub.dtype)
    wgt /= np.maximum(wgt.sum(axis=1), 1.0)[:, None]
    centre = np.einsum("ktjc,kj->ktc", sub, wgt)             # (K, T, 2)
    ki, ji = np.nonzero(nv)
    out[rows[ki], :, ji] = centre[ki]


def model_input(uv: np.ndarray, conf: np.ndarray, w, h,
                normalisation: str = lifter_input.SCREEN_WIDTH) -> np.ndarray:
    """(B, T, 26 (+1), 3) float32 network input; NaN (dropped) joints are filled over time as
    inference does (:func:`fill_missing`) and get confidence 0. ``normalisation``: see
    :mod:`models.lifter_input` (``person_window`` adds the context row)."""
    bad = ~np.isfinite(uv).all(axis=-1)
    filled = fill_missing(uv)
    c = np.where(bad, 0.0, conf)
    if normalisation == lifter_input.PERSON_WINDOW:
        return lifter_input.person_window(filled, c, w, h, INPUT_ROOT_INDEX)
    lifter_input.extra_rows(normalisation)      # raises on an unknown name
    xy = normalize_screen(filled, np.asarray(w, float), np.asarray(h, float))
    return np.concatenate([xy, c[..., None]], axis=-1).astype(np.float32)


# ----------------------------------------------------------------------------- sampling
class PairSampler:
    """Random training windows: speed change, height, mirroring, camera, noise."""

    def __init__(self, clips: list[Clip], window: int, seed: int = 0,
                 fps_range=(25.0, 60.0), speed_range=(0.8, 1.25),
                 height_range=(1.5, 1.95), sigma_range=(0.0, 0.04), mirror: bool = True,
                 normalisation: str = lifter_input.SCREEN_WIDTH, output_units: str = "m",
                 edge_fraction: float = 0.0, group_cap_s: float | None = None,
                 input_sources: dict[str, float] | None = None, arm_swap: float = 0.0,
                 head_swap: float = 0.0):
        if not clips:
            raise ValueError("no clips to sample from")
        self.clips = clips
        self.window = int(window)
        self.rng = np.random.default_rng(seed)
        self.fps_range, self.speed_range = fps_range, speed_range
        self.height_range, self.sigma_range = height_range, sigma_range
        self.mirror = mirror
        self.normalisation, self.output_units = normalisation, output_units
        # Inference pads a sequence's ends by repeating its first/last frame; this fraction of
        # windows is centred that close to a clip's end, padded the same way, so the ends of
        # a user's clip are not frames the network never saw.
        self.edge_fraction = float(edge_fraction)
        # these fractions of windows take their arm / head motion from another window (swap_parts)
        self.arm_swap = float(arm_swap)
        self.head_swap = float(head_swap)
        # {detector kind (INPUT_SOURCES): probability}: each window's 2D lacks the points that
        # kind of detector never gives; None: every point given (then only noise drops some)
        if input_sources:
            unknown = set(input_sources) - set(INPUT_SOURCES)
            if unknown:
                raise ValueError(f"unknown input sources {sorted(unknown)}; "
                                 f"known: {', '.join(INPUT_SOURCES)}")
            total = float(sum(input_sources.values()))
            input_sources = {k: float(v) / total for k, v in input_sources.items()}
            self._absent = absent_mask(list(input_sources))          # (kinds, J)
        self.input_sources = input_sources or None
        # weight clips by duration, capped, so long styled-walk takes do not dominate
        dur = np.array([c.frames / c.fps for c in clips])
        wgt = np.minimum(dur, 20.0)
        if group_cap_s is not None:
            # and each subject (group) to at most ``group_cap_s`` seconds of weight, so one
            # subject's many styled walks do not make half of all windows
            groups = np.array([c.group for c in clips])
            for g in np.unique(groups):
                sel = groups == g
                wgt[sel] *= min(1.0, float(group_cap_s) / wgt[sel].sum())
        self.p = wgt / wgt.sum()
        self._all = np.concatenate([c.markers for c in clips]).astype(np.float64)
        self._frames = np.array([c.frames for c in clips])
        self._start = np.concatenate([[0], np.cumsum(self._frames)[:-1]])
        self._fps = np.array([c.fps for c in clips])

    def windows(self, B: int, fps=None, speed=None) -> tuple[np.ndarray, np.ndarray]:
        """World-frame marker windows (B, window, 30, 3) in metres, and the heights (B,)."""
        rng = self.rng
        ci = rng.choice(len(self.clips), B, p=self.p)
        fps = rng.uniform(*self.fps_range, B) if fps is None else np.full(B, float(fps))
        speed = rng.uniform(*self.speed_range, B) if speed is None else np.full(B, float(speed))
        H = rng.uniform(*self.height_range, B)
        k = np.arange(self.window) - self.window // 2
        n = self._frames[ci].astype(float)
        step = self._fps[ci] / fps * speed                  # source frames per output frame
        span = step * (self.window // 2)
        lo, hi = span, n - 1 - span
        mid = np.where(hi > lo, lo + rng.random(B) * np.maximum(hi - lo, 0), (n - 1) / 2)
        if self.edge_fraction > 0:
            edge = rng.random(B) < self.edge_fraction
            at_end = rng.random(B) < 0.5
            into = rng.random(B) * np.minimum(span, n - 1)      # how far inside the clip
            mid = np.where(edge, np.where(at_end, n - 1 - into, into), mid)
        t = np.clip(mid[:, None] + k[None, :] * step[:, None], 0, (n - 1)[:, None])
        i0 = np.floor(t).astype(np.int64)
        i1 = np.minimum(i0 + 1, (n - 1)[:, None].astype(np.int64))
        a = (t - i0)[..., None, None]
        base = self._start[ci][:, None]
        out = (1 - a) * self._all[base + i0] + a * self._all[base + i1]
        out *= H[:, None, None, None]
        for p, chains in ((self.arm_swap, ARM_CHAINS), (self.head_swap, (HEAD_CHAIN,))):
            if p > 0:
                swap = np.flatnonzero(rng.random(B) < p)
                if len(swap):
                    donor = rng.permutation(B)[:len(swap)]
                    out[swap] = swap_parts(out[swap], out[donor], chains)
        if self.mirror:
            flip = rng.random(B) < 0.5
            out[flip] = mirror_markers(out[flip])
        return out, H

    def batch(self, B: int, sigma=None, fps=None, speed=None, spec: NoiseSpec | None = None):
        """(inputs (B, window, 26, 3) float32, targets (B, 30, 3) float32 at the centre frame).

        Windows whose person comes closer than 0.5 m to the camera plane or far outside the
        image (a sprint passing the camera) are redrawn: their projections are meaningless
        and a single one in a batch wrecks BatchNorm's running statistics.
        """
        xs, ys, n = [], [], 0
        while n < B:
            # redraw only what is missing (with a margin), not a whole batch again
            k = B if n == 0 else max(16, int(1.5 * (B - n)))
            world, H = self.windows(k, fps, speed)
            absent = None
            if self.input_sources:
                pick = self.rng.choice(len(self._absent), k, p=list(self.input_sources.values()))
                absent = self._absent[pick]
            x, y, ok = make_pairs(self.rng, world, H, sigma=sigma, spec=spec,
                                  sigma_range=self.sigma_range, return_valid=True,
                                  normalisation=self.normalisation,
                                  output_units=self.output_units, absent=absent)
            xs.append(x[ok])
            ys.append(y[ok])
            n += int(ok.sum())
        return np.concatenate(xs)[:B], np.concatenate(ys)[:B]


def absent_mask(sources, input_names: tuple[str, ...] = INPUT_NAMES) -> np.ndarray:
    """(B, J) True where the detector kind ``sources[b]`` (keys of :data:`INPUT_SOURCES`)
    never gives input point j."""
    pattern = {k: np.isin(input_names, v) for k, v in INPUT_SOURCES.items()}
    return np.array([pattern[k] for k in sources], dtype=bool).reshape(len(sources),
                                                                       len(input_names))


def make_pairs(rng, world: np.ndarray, H: np.ndarray, sigma=None, spec=None,
               sigma_range=(0.0, 0.04), cams: Cameras | None = None, return_valid: bool = False,
               normalisation: str = lifter_input.SCREEN_WIDTH, output_units: str = "m",
               return_2d: bool = False, input_names: tuple[str, ...] = INPUT_NAMES,
               absent: np.ndarray | None = None):
    """Project world windows through random cameras and add noise: (inputs, centre targets)
    (and, with ``return_valid``, a (B,) mask of windows fully in front of the camera, at least
    0.5 m away, and within one image size of the image; with ``return_2d``, last, the noisy
    pixels (B, T, J, 2) with NaN where dropped and the confidences (B, T, J)).
    ``output_units``: "m", or "height" (targets divided by each subject's height ``H``).
    ``input_names``: the 2D points (:data:`INPUT_NAMES` or a prefix, as the lifter takes);
    ``absent`` (B, J): points missing from the whole window, as from a detector that never
    gives them (:func:`absent_mask`)."""
    B, T = world.shape[:2]
    c = T // 2
    if cams is None:
        cams = random_cameras(rng, world[:, c, ROOT_INDEX], H)
    mat = INPUT_MATRIX if input_names == INPUT_NAMES else input_matrix(input_names)
    uv, Xh = project(np.matmul(mat, world), cams)
    _, Xc = project(world[:, c], cams)
    target = Xc - Xc[:, ROOT_INDEX:ROOT_INDEX + 1]
    spec = spec or NoiseSpec()
    sig = rng.uniform(*sigma_range, B) if sigma is None else np.full(B, float(sigma))
    uv_n, conf = add_noise(rng, uv, spec, sig)
    if absent is not None and absent.any():
        gone = np.broadcast_to(absent[:, None, :], conf.shape)
        uv_n[gone] = np.nan
        conf = np.where(gone, 0.0, conf)
    x = model_input(uv_n, conf, cams.w, cams.h, normalisation)
    if output_units == "height":
        target = target / np.asarray(H, float)[:, None, None]
    elif output_units != "m":
        raise ValueError(f"output_units must be 'm' or 'height', got {output_units!r}")
    extra = ((uv_n, conf),) if return_2d else ()
    if not return_valid:
        return (x, target.astype(np.float32)) + extra
    w, h = cams.w[:, None, None], cams.h[:, None, None]
    valid = ((Xh[..., 2] > 0.5).all(axis=(1, 2))
             & ((uv[..., 0] > -w) & (uv[..., 0] < 2 * w)).all(axis=(1, 2))
             & ((uv[..., 1] > -h) & (uv[..., 1] < 2 * h)).all(axis=(1, 2)))
    return (x, target.astype(np.float32), valid) + extra
