"""Keypoint layouts, defined once as data, and conversion between them.

Every layout lists its keypoints in the official order of the tool or dataset that defines it,
each with a *canonical* name (the same anatomical point has the same canonical name in every
layout, e.g. ``"left_hip"``) and the *native* name the tool writes (``"LHip"``). Skeleton edges
(for drawing) are written as name pairs and turned into index pairs; left/right flip pairs are
derived from the names (``left_x`` <-> ``right_x``), plus an explicit table for the 68 face points,
whose names carry no side.

Sources of the orders: COCO keypoints (17), COCO-WholeBody (mmpose ``coco_wholebody.py``: body 17,
then feet ``left_big_toe, left_small_toe, left_heel, right_...``, face 68 in the iBUG-300W order,
left hand 21, right hand 21), HALPE-26 (AlphaPose; Pose2Sim's ``HALPE_26``), BlazePose-33
(MediaPipe ``PoseLandmark``), H36M-17 (VideoPose3D / mmpose ``h36m.py``), OpenPose BODY_25 and
BODY_25B (OpenPose ``poseParameters``; the BODY_25B order matches Pose2Sim's demo detections).

Canonical points that need a note:

* ``neck`` - the mid-shoulder point: OpenPose BODY_25 "Neck", HALPE "Neck", H36M "Thorax".
* ``upper_neck`` - BODY_25B "UpperNeck", above the shoulders; *not* the same point as ``neck``.
* ``head_top`` - BODY_25B "HeadTop", HALPE "Head".
* ``mid_hip`` - BODY_25 "MidHip", HALPE "Hip", H36M "Pelvis"/root.
* ``head`` - H36M "Head" (joint 10).
* H36M joint 9 ("Neck/Nose") has canonical name ``nose``: 2D-to-3D lifters trained on
  H36M-format detections fill it from the detector's nose, and so do we.
* BlazePose ``left_foot_index`` is the tip of the foot; it is kept apart from ``left_big_toe``.

Derived joints (:data:`DERIVED`): when the target layout has a point the source lacks, it is
computed from other points, the first rule whose sources are all available winning:

* ``mid_hip = (left_hip + right_hip) / 2``
* ``neck = (left_shoulder + right_shoulder) / 2``
* ``spine = (mid_hip + neck) / 2``   (H36M "Spine", as in mmpose's COCO->H36M conversion)
* ``head = (left_eye + right_eye) / 2``, else ``head_top``   (H36M "Head", mmpose's rule)
* ``left_big_toe = left_foot_index`` (and right): BlazePose's foot tip stands in for the big toe

A derived point's confidence is the minimum of its sources' confidences; a point that can be
neither copied nor derived is NaN with confidence 0.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import re
from collections.abc import Iterable, Sequence

import numpy as np

# ---------------------------------------------------------------------- keypoint name tables
_COCO17 = [
    ("nose", "nose"), ("left_eye", "left_eye"), ("right_eye", "right_eye"),
    ("left_ear", "left_ear"), ("right_ear", "right_ear"),
    ("left_shoulder", "left_shoulder"), ("right_shoulder", "right_shoulder"),
    ("left_elbow", "left_elbow"), ("right_elbow", "right_elbow"),
    ("left_wrist", "left_wrist"), ("right_wrist", "right_wrist"),
    ("left_hip", "left_hip"), ("right_hip", "right_hip"),
    ("left_knee", "left_knee"), ("right_knee", "right_knee"),
    ("left_ankle", "left_ankle"), ("right_ankle", "right_ankle"),
]

_FEET6 = [("left_big_toe", "left_big_toe"), ("left_small_toe", "left_small_toe"),
          ("left_heel", "left_heel"), ("right_big_toe", "right_big_toe"),
          ("right_small_toe", "right_small_toe"), ("right_heel", "right_heel")]

_FINGERS = ("thumb", "index", "middle", "ring", "pinky")
# mmpose's native finger names for COCO-WholeBody hands.
_NATIVE_FINGERS = {"thumb": "thumb", "index": "forefinger", "middle": "middle_finger",
                   "ring": "ring_finger", "pinky": "pinky_finger"}


def _hand(side: str) -> list[tuple[str, str]]:
    """21 hand points: root (wrist of the hand model), then 4 joints per finger, base to tip."""
    pts = [(f"{side}_hand_root", f"{side}_hand_root")]
    for finger in _FINGERS:
        for j in range(1, 5):
            pts.append((f"{side}_{finger}{j}", f"{side}_{_NATIVE_FINGERS[finger]}{j}"))
    return pts


_FACE68 = [(f"face_{i}", f"face-{i}") for i in range(68)]

_WHOLEBODY133 = _COCO17 + _FEET6 + _FACE68 + _hand("left") + _hand("right")

_HALPE26 = [(c, n) for c, n in zip(
    [c for c, _ in _COCO17] + ["head_top", "neck", "mid_hip", "left_big_toe", "right_big_toe",
                               "left_small_toe", "right_small_toe", "left_heel", "right_heel"],
    ["Nose", "LEye", "REye", "LEar", "REar", "LShoulder", "RShoulder", "LElbow", "RElbow",
     "LWrist", "RWrist", "LHip", "RHip", "LKnee", "RKnee", "LAnkle", "RAnkle",
     "Head", "Neck", "Hip", "LBigToe", "RBigToe", "LSmallToe", "RSmallToe", "LHeel", "RHeel"])]

# HALPE-26 and the index and pinky knuckles BlazePose and COCO-WholeBody hands give: the input
# of kinevid's own lifter (a detector without hands leaves them out; the lifter is trained so)
_HALPE26_HANDS = _HALPE26 + [("left_index", "LIndex"), ("right_index", "RIndex"),
                             ("left_pinky", "LPinky"), ("right_pinky", "RPinky")]

_BLAZEPOSE33 = [
    ("nose", "nose"), ("left_eye_inner", "left_eye_inner"), ("left_eye", "left_eye"),
    ("left_eye_outer", "left_eye_outer"), ("right_eye_inner", "right_eye_inner"),
    ("right_eye", "right_eye"), ("right_eye_outer", "right_eye_outer"),
    ("left_ear", "left_ear"), ("right_ear", "right_ear"),
    ("left_mouth_corner", "mouth_left"), ("right_mouth_corner", "mouth_right"),
    ("left_shoulder", "left_shoulder"), ("right_shoulder", "right_shoulder"),
    ("left_elbow", "left_elbow"), ("right_elbow", "right_elbow"),
    ("left_wrist", "left_wrist"), ("right_wrist", "right_wrist"),
    ("left_pinky", "left_pinky"), ("right_pinky", "right_pinky"),
    ("left_index", "left_index"), ("right_index", "right_index"),
    ("left_thumb", "left_thumb"), ("right_thumb", "right_thumb"),
    ("left_hip", "left_hip"), ("right_hip", "right_hip"),
    ("left_knee", "left_knee"), ("right_knee", "right_knee"),
    ("left_ankle", "left_ankle"), ("right_ankle", "right_ankle"),
    ("left_heel", "left_heel"), ("right_heel", "right_heel"),
    ("left_foot_index", "left_foot_index"), ("right_foot_index", "right_foot_index"),
]

_H36M17 = [
    ("mid_hip", "root"), ("right_hip", "right_hip"), ("right_knee", "right_knee"),
    ("right_ankle", "right_foot"), ("left_hip", "left_hip"), ("left_knee", "left_knee"),
    ("left_ankle", "left_foot"), ("spine", "spine"), ("neck", "thorax"), ("nose", "neck_base"),
    ("head", "head"), ("left_shoulder", "left_shoulder"), ("left_elbow", "left_elbow"),
    ("left_wrist", "left_wrist"), ("right_shoulder", "right_shoulder"),
    ("right_elbow", "right_elbow"), ("right_wrist", "right_wrist"),
]

_BODY25 = [
    ("nose", "Nose"), ("neck", "Neck"), ("right_shoulder", "RShoulder"), ("right_elbow", "RElbow"),
    ("right_wrist", "RWrist"), ("left_shoulder", "LShoulder"), ("left_elbow", "LElbow"),
    ("left_wrist", "LWrist"), ("mid_hip", "MidHip"), ("right_hip", "RHip"), ("right_knee", "RKnee"),
    ("right_ankle", "RAnkle"), ("left_hip", "LHip"), ("left_knee", "LKnee"), ("left_ankle", "LAnkle"),
    ("right_eye", "REye"), ("left_eye", "LEye"), ("right_ear", "REar"), ("left_ear", "LEar"),
    ("left_big_toe", "LBigToe"), ("left_small_toe", "LSmallToe"), ("left_heel", "LHeel"),
    ("right_big_toe", "RBigToe"), ("right_small_toe", "RSmallToe"), ("right_heel", "RHeel"),
]

_BODY25B = [
    ("nose", "Nose"), ("left_eye", "LEye"), ("right_eye", "REye"), ("left_ear", "LEar"),
    ("right_ear", "REar"), ("left_shoulder", "LShoulder"), ("right_shoulder", "RShoulder"),
    ("left_elbow", "LElbow"), ("right_elbow", "RElbow"), ("left_wrist", "LWrist"),
    ("right_wrist", "RWrist"), ("left_hip", "LHip"), ("right_hip", "RHip"), ("left_knee", "LKnee"),
    ("right_knee", "RKnee"), ("left_ankle", "LAnkle"), ("right_ankle", "RAnkle"),
    ("upper_neck", "UpperNeck"), ("head_top", "HeadTop"),
    ("left_big_toe", "LBigToe"), ("left_small_toe", "LSmallToe"), ("left_heel", "LHeel"),
    ("right_big_toe", "RBigToe"), ("right_small_toe", "RSmallToe"), ("right_heel", "RHeel"),
]

# ---------------------------------------------------------------------- skeleton edges (by name)
_FACE_HEAD = [("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "left_ear"),
              ("right_eye", "right_ear")]
_ARMS = [("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
         ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist")]
_LEGS = [("left_hip", "left_knee"), ("left_knee", "left_ankle"),
         ("right_hip", "right_knee"), ("right_knee", "right_ankle")]
_TORSO4 = [("left_shoulder", "right_shoulder"), ("left_hip", "right_hip"),
           ("left_shoulder", "left_hip"), ("right_shoulder", "right_hip")]
_FEET = [(f"{s}_ankle", f"{s}_{p}") for s in ("left", "right") for p in ("big_toe", "small_toe", "heel")] + \
        [(f"{s}_big_toe", f"{s}_small_toe") for s in ("left", "right")]
_COCO_EDGES = _FACE_HEAD + [("left_ear", "left_shoulder"), ("right_ear", "right_shoulder")] + \
    _ARMS + _LEGS + _TORSO4


def _chain(names: Sequence[str], closed: bool = False) -> list[tuple[str, str]]:
    pairs = list(itertools.pairwise(names))
    return pairs + [(names[-1], names[0])] if closed else pairs


def _face_edges() -> list[tuple[str, str]]:
    f = [f"face_{i}" for i in range(68)]
    # iBUG-300W contours: jaw, brows, nose bridge, nostrils, eyes (closed), lips (closed).
    return (_chain(f[0:17]) + _chain(f[17:22]) + _chain(f[22:27]) + _chain(f[27:31]) +
            _chain(f[31:36]) + _chain(f[36:42], True) + _chain(f[42:48], True) +
            _chain(f[48:60], True) + _chain(f[60:68], True))


def _hand_edges(side: str) -> list[tuple[str, str]]:
    edges = []
    for finger in _FINGERS:
        edges += _chain([f"{side}_hand_root"] + [f"{side}_{finger}{j}" for j in range(1, 5)])
    return edges


# iBUG-300W 68-point mirror pairs (0-based): face points carry no side in their names.
_FACE68_FLIP = ([(i, 16 - i) for i in range(8)] + [(17 + i, 26 - i) for i in range(5)] +
                [(31, 35), (32, 34), (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46),
                 (48, 54), (49, 53), (50, 52), (59, 55), (58, 56), (60, 64), (61, 63), (67, 65)])

# ---------------------------------------------------------------------- derived joints
#: canonical name -> alternatives; each alternative is a tuple of canonical sources averaged.
DERIVED: dict[str, tuple[tuple[str, ...], ...]] = {
    "mid_hip": (("left_hip", "right_hip"),),
    "neck": (("left_shoulder", "right_shoulder"),),
    "spine": (("mid_hip", "neck"),),
    "head": (("left_eye", "right_eye"), ("head_top",)),
    # BlazePose's foot index (the tip of the foot, over the second toe) stands in for the big
    # toe when a layout has no toes: the two lie within ~1-2 cm, and Pose2Sim's BlazePose marker
    # set places foot_index at the big toe too.
    "left_big_toe": (("left_foot_index",),),
    "right_big_toe": (("right_foot_index",),),
    # BlazePose's index and pinky points are the first (MCP) knuckles; COCO-WholeBody's hand
    # model numbers each finger's joints from that knuckle
    "left_index": (("left_index1",),),
    "right_index": (("right_index1",),),
    "left_pinky": (("left_pinky1",),),
    "right_pinky": (("right_pinky1",),),
}


# ---------------------------------------------------------------------- the Layout type
_SIDE = re.compile(r"^(left|right)_")


def _mirror(name: str) -> str | None:
    m = _SIDE.match(name)
    if not m:
        return None
    other = "right" if m.group(1) == "left" else "left"
    return other + name[m.end() - 1:]


@dataclasses.dataclass(frozen=True)
class Layout:
    """An ordered set of keypoints with their drawing edges and left/right mirror pairs."""

    name: str
    names: tuple[str, ...]          # canonical names, in the layout's official order
    native_names: tuple[str, ...]   # names as the defining tool writes them
    edges: tuple[tuple[int, int], ...]
    flip_pairs: tuple[tuple[int, int], ...]  # (i, j), i < j, each mirrored point once

    def __len__(self) -> int:
        return len(self.names)

    @property
    def n(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """Index of a keypoint by canonical or native name."""
        if name in self._lookup:
            return self._lookup[name]
        raise KeyError(f"layout {self.name} has no keypoint {name!r}")

    @functools.cached_property
    def _lookup(self) -> dict[str, int]:
        d = {n: i for i, n in enumerate(self.native_names)}
        d.update({n: i for i, n in enumerate(self.names)})
        return d

    @property
    def flip_index(self) -> np.ndarray:
        """Permutation p such that ``kp[..., p, :]`` is the mirror-image labelling (an involution)."""
        p = np.arange(self.n)
        for i, j in self.flip_pairs:
            p[i], p[j] = j, i
        return p


def _make(name: str, table: list[tuple[str, str]], edge_names: Iterable[tuple[str, str]],
          extra_flips: Iterable[tuple[int, int]] = ()) -> Layout:
    names = tuple(c for c, _ in table)
    native = tuple(n for _, n in table)
    if len(set(names)) != len(names):
        raise AssertionError(f"duplicate canonical names in {name}")
    idx = {n: i for i, n in enumerate(names)}
    edges = tuple((idx[a], idx[b]) for a, b in edge_names)
    flips = set()
    for i, n in enumerate(names):
        m = _mirror(n)
        if m is not None and m in idx:
            flips.add(tuple(sorted((i, idx[m]))))
    flips |= {tuple(sorted(p)) for p in extra_flips}
    return Layout(name, names, native, edges, tuple(sorted(flips)))


_HALPE_EDGES = (_FACE_HEAD + _ARMS + _LEGS + _FEET
                + [("head_top", "neck"), ("nose", "neck"), ("neck", "left_shoulder"),
                   ("neck", "right_shoulder"), ("neck", "mid_hip"), ("mid_hip", "left_hip"),
                   ("mid_hip", "right_hip")])
_WB_FACE0 = 23  # first face point in COCO-WholeBody
LAYOUTS: dict[str, Layout] = {
    "coco17": _make("coco17", _COCO17, _COCO_EDGES),
    "coco_wholebody133": _make(
        "coco_wholebody133", _WHOLEBODY133,
        _COCO_EDGES + _FEET + _face_edges() + _hand_edges("left") + _hand_edges("right")
        + [("left_wrist", "left_hand_root"), ("right_wrist", "right_hand_root")],
        [(_WB_FACE0 + a, _WB_FACE0 + b) for a, b in _FACE68_FLIP]),
    "halpe26": _make("halpe26", _HALPE26, _HALPE_EDGES),
    "halpe26_hands": _make("halpe26_hands", _HALPE26_HANDS,
                           _HALPE_EDGES
                           + [(f"{s}_{a}", f"{s}_{b}") for s in ("left", "right") for a, b in
                              (("wrist", "index"), ("wrist", "pinky"), ("index", "pinky"))]),
    "blazepose33": _make("blazepose33", _BLAZEPOSE33,
                         _chain(["left_ear", "left_eye_outer", "left_eye", "left_eye_inner", "nose",
                                 "right_eye_inner", "right_eye", "right_eye_outer", "right_ear"])
                         + [("left_mouth_corner", "right_mouth_corner")] + _ARMS + _LEGS + _TORSO4
                         + [(f"{s}_{a}", f"{s}_{b}") for s in ("left", "right") for a, b in
                            (("wrist", "pinky"), ("wrist", "index"), ("wrist", "thumb"), ("pinky", "index"),
                             ("ankle", "heel"), ("heel", "foot_index"), ("ankle", "foot_index"))]),
    "h36m17": _make("h36m17", _H36M17,
                    [("mid_hip", "right_hip"), ("mid_hip", "left_hip"), ("mid_hip", "spine"),
                     ("spine", "neck"), ("neck", "nose"), ("nose", "head"),
                     ("neck", "left_shoulder"), ("neck", "right_shoulder")] + _ARMS + _LEGS),
    "body25": _make("body25", _BODY25,
                    _FACE_HEAD + _ARMS + _LEGS + _FEET
                    + [("nose", "neck"), ("neck", "left_shoulder"), ("neck", "right_shoulder"),
                       ("neck", "mid_hip"), ("mid_hip", "left_hip"), ("mid_hip", "right_hip")]),
    "body25b": _make("body25b", _BODY25B,
                     _COCO_EDGES + _FEET + [("upper_neck", "head_top"), ("nose", "upper_neck")]),
}

_ALIASES = {
    "coco": "coco17", "coco17": "coco17",
    "cocowholebody": "coco_wholebody133", "cocowholebody133": "coco_wholebody133",
    "wholebody": "coco_wholebody133", "coco133": "coco_wholebody133",
    "halpe": "halpe26", "halpe26": "halpe26", "halpe26hands": "halpe26_hands",
    "blazepose": "blazepose33", "blazepose33": "blazepose33", "mediapipe": "blazepose33",
    "h36m": "h36m17", "h36m17": "h36m17", "human36m": "h36m17",
    "body25": "body25", "openposebody25": "body25",
    "body25b": "body25b", "openposebody25b": "body25b",
}


def get_layout(layout: str | Layout) -> Layout:
    """A layout by name; spelling is forgiving ("COCO-17", "BODY_25B", "coco_wholebody")."""
    if isinstance(layout, Layout):
        return layout
    key = re.sub(r"[^a-z0-9]", "", str(layout).lower())
    if key in _ALIASES:
        return LAYOUTS[_ALIASES[key]]
    raise ValueError(f"unknown keypoint layout {layout!r}; known: {', '.join(LAYOUTS)}")


# ---------------------------------------------------------------------- conversion
@functools.cache
def mapping(src: str, dst: str) -> tuple[tuple[int, ...] | None, ...]:
    """For each keypoint of ``dst``: the ``src`` indices averaged to make it (one index = a plain
    copy), or None when it can be neither copied nor derived. Derived joints are flattened to
    their source indices, weighted equally per averaging level (see :func:`mapping_weights`)."""
    return tuple(None if w is None else tuple(sorted(w)) for w in mapping_weights(src, dst))


@functools.cache
def mapping_weights(src: str, dst: str) -> tuple[dict[int, float] | None, ...]:
    """For each keypoint of ``dst``: {src index: weight} (weights sum to 1), or None."""
    s, d = get_layout(src), get_layout(dst)
    have = {n: i for i, n in enumerate(s.names)}

    def resolve(name: str, stack: frozenset) -> dict[int, float] | None:
        if name in have:
            return {have[name]: 1.0}
        if name in stack:  # guard against a cycle in DERIVED
            return None
        for sources in DERIVED.get(name, ()):
            parts = [resolve(n, stack | {name}) for n in sources]
            if all(p is not None for p in parts):
                out: dict[int, float] = {}
                for p in parts:
                    for i, w in p.items():
                        out[i] = out.get(i, 0.0) + w / len(parts)
                return out
        return None

    return tuple(resolve(n, frozenset()) for n in d.names)


def convert(keypoints: np.ndarray, conf: np.ndarray | None, src: str | Layout,
            dst: str | Layout) -> tuple[np.ndarray, np.ndarray | None]:
    """Re-express keypoints of layout ``src`` in layout ``dst``.

    keypoints: (..., K_src, D) coordinates (D = 2 or 3); conf: (..., K_src) or None.
    Returns (..., K_dst, D) float64 and (..., K_dst) confidences (None if ``conf`` is None).
    Copied points keep their values exactly; derived points are the weighted mean of their
    sources (NaN if any source is NaN) with the minimum of their confidences; points that
    cannot be made are NaN with confidence 0.
    """
    s, d = get_layout(src), get_layout(dst)
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim < 2 or kp.shape[-2] != s.n:
        raise ValueError(f"keypoints of shape {kp.shape} do not match layout {s.name} ({s.n} points)")
    if conf is not None:
        conf = np.asarray(conf, dtype=np.float64)
        if conf.shape != kp.shape[:-1]:
            raise ValueError(f"confidence shape {conf.shape} does not match keypoints {kp.shape}")
    out = np.full(kp.shape[:-2] + (d.n, kp.shape[-1]), np.nan)
    out_conf = None if conf is None else np.zeros(kp.shape[:-2] + (d.n,))
    for j, weights in enumerate(mapping_weights(s.name, d.name)):
        if weights is None:
            continue
        idx = list(weights)
        if len(idx) == 1:
            out[..., j, :] = kp[..., idx[0], :]
        else:
            w = np.array([weights[i] for i in idx])
            out[..., j, :] = np.einsum("...kd,k->...d", kp[..., idx, :], w)
        if conf is not None:
            out_conf[..., j] = conf[..., idx].min(axis=-1)
    return out, out_conf
