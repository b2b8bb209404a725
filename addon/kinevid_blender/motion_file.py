"""Reader of kinevid's Blender motion file (``.kvb``, see docs/blender_motion_format.md).

The file is a ZIP of ``manifest.json`` and ``.npy`` arrays, written by
``kinevid export-blender``. This module reads and checks it with the standard library and numpy
only (both are in Blender's Python), and holds the pure maths the add-on needs to turn it into
Blender data: frame conversion (OpenSim Y-up -> Blender Z-up), bone rest/pose matrices, timing,
GRF arrows and confidence colours. Nothing here imports bpy, so it is tested outside Blender.
"""
from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "FORMAT", "SUPPORTED_VERSIONS", "MotionFileError", "Body", "MotionFile", "read_motion_file",
    "TO_BLENDER", "quat_to_matrix", "matrix_to_quat", "body_matrices", "bone_offsets",
    "pose_basis", "Timing", "scene_timing", "grf_arrows", "confidence_colour",
    "body_confidence", "find_result_file",
]

FORMAT = "kinevid-blender-motion"
SUPPORTED_VERSIONS = (1,)
RESULT_SUFFIX = ".kvb"
# Blender (x, y, z) = OpenSim (x, -z, y): +90 degrees about X.
TO_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
DEFAULT_BONE_LENGTH = 0.1  # m, for bodies without a child joint to point at


class MotionFileError(ValueError):
    """A motion file that cannot be used: names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


@dataclass
class Body:
    name: str
    parent: str | None  # None: hangs on ground
    index: int
    joint: str | None
    coordinates: list[str]
    children: list[str]
    child_joint_origins: np.ndarray  # (k, 3) in this body's frame
    geometry: list[dict]


@dataclass
class MotionFile:
    path: str
    manifest: dict
    time: np.ndarray                 # (F,)
    body_translation: np.ndarray     # (F, B, 3) OpenSim ground, m
    body_rotation: np.ndarray        # (F, B, 4) w, x, y, z
    coordinates: np.ndarray          # (F, C)
    bodies: list[Body]
    coordinate_info: list[dict]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    _zip_path: str = ""

    @property
    def n_frames(self) -> int:
        return int(self.time.shape[0])

    @property
    def fps(self) -> float:
        return float(self.manifest.get("fps") or _median_rate(self.time))

    @property
    def body_names(self) -> list[str]:
        return [b.name for b in self.bodies]

    @property
    def coordinate_names(self) -> list[str]:
        return [c["name"] for c in self.coordinate_info]

    def array(self, name: str) -> np.ndarray | None:
        """An optional per-frame array (e.g. ``coordinate_confidence``), or None when absent."""
        return self.arrays.get(name)

    def mesh(self, mesh_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(vertices (V,3) float, triangles (T,3) int) of a stored mesh."""
        with zipfile.ZipFile(self._zip_path) as zf:
            v = _load_npy(zf, f"meshes/{mesh_id}.vertices.npy", self.path)
            t = _load_npy(zf, f"meshes/{mesh_id}.triangles.npy", self.path)
        if v.ndim != 2 or v.shape[1] != 3 or t.ndim != 2 or t.shape[1] != 3:
            raise MotionFileError(self.path, f"mesh {mesh_id!r} has shapes {v.shape}, {t.shape}")
        if t.size and int(t.max()) >= len(v):
            raise MotionFileError(self.path, f"mesh {mesh_id!r} indexes a vertex that does not exist")
        return v.astype(np.float64), t.astype(np.int64)

    def video_path(self) -> Path | None:
        """The source video, if the file names one that exists (absolute path first, then the
        path relative to the motion file's folder)."""
        video = self.manifest.get("video") or None
        if not video:
            return None
        for key in ("path", "relative_path"):
            p = video.get(key)
            if not p:
                continue
            cand = Path(p) if Path(p).is_absolute() else Path(self.path).parent / p
            if cand.is_file():
                return cand
        return None


def _median_rate(time: np.ndarray) -> float:
    dt = np.diff(time)
    return float(1.0 / np.median(dt)) if dt.size else 1.0


def _load_npy(zf: zipfile.ZipFile, member: str, path) -> np.ndarray:
    try:
        raw = zf.read(member)
    except KeyError:
        raise MotionFileError(path, f"member {member!r} is missing") from None
    try:
        return np.load(io.BytesIO(raw), allow_pickle=False)
    except ValueError as exc:
        raise MotionFileError(path, f"member {member!r} is not a plain .npy array: {exc}") from None


def read_motion_file(path) -> MotionFile:
    """Read and check a ``.kvb`` file. Raises MotionFileError with the problem."""
    path = Path(path)
    if not path.is_file():
        raise MotionFileError(path, "file not found")
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise MotionFileError(path, "not a kinevid motion file (not a ZIP archive)") from None
    with zf:
        try:
            manifest = json.loads(zf.read("manifest.json").decode("utf-8"))
        except KeyError:
            raise MotionFileError(path, "manifest.json is missing") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MotionFileError(path, f"manifest.json is not valid JSON: {exc}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise MotionFileError(path, f"not a kinevid motion file (format is not {FORMAT!r})")
        version = manifest.get("version")
        if version not in SUPPORTED_VERSIONS:
            raise MotionFileError(path, f"format version {version!r} is not supported by this "
                                        f"add-on (it reads {SUPPORTED_VERSIONS}); update the add-on")
        arrays = {}
        for name, spec in (manifest.get("arrays") or {}).items():
            arr = _load_npy(zf, spec["file"], path)
            if "shape" in spec and list(arr.shape) != list(spec["shape"]):
                raise MotionFileError(path, f"array {name!r} has shape {list(arr.shape)}, "
                                            f"manifest says {spec['shape']}")
            arrays[name] = arr
    for name in ("time", "body_translation", "body_rotation", "coordinates"):
        if name not in arrays:
            raise MotionFileError(path, f"required array {name!r} is missing")
    time = arrays["time"].astype(np.float64)
    n = time.shape[0]
    if n < 1 or time.ndim != 1:
        raise MotionFileError(path, "the motion has no frames")
    if n > 1 and not np.all(np.diff(time) > 0):
        raise MotionFileError(path, "times are not strictly increasing")
    for name, arr in arrays.items():
        if name != "time" and arr.shape[:1] != (n,) and arr.ndim >= 1:
            raise MotionFileError(path, f"array {name!r} has {arr.shape[0]} frames, time has {n}")
    trans = arrays["body_translation"].astype(np.float64)
    rot = arrays["body_rotation"].astype(np.float64)
    infos = manifest.get("bodies") or []
    if trans.shape[1:] != (len(infos), 3) or rot.shape[1:] != (len(infos), 4):
        raise MotionFileError(path, f"body arrays {trans.shape}, {rot.shape} do not match "
                                    f"{len(infos)} bodies")
    if not (np.all(np.isfinite(trans)) and np.all(np.isfinite(rot))):
        raise MotionFileError(path, "body transforms contain NaN")
    rot /= np.linalg.norm(rot, axis=-1, keepdims=True)
    bodies: list[Body] = []
    seen: set[str] = set()
    for i, b in enumerate(infos):
        parent = b.get("parent")
        parent = None if parent in (None, "", "ground") else parent
        if parent is not None and parent not in seen:
            raise MotionFileError(path, f"body {b['name']!r} comes before its parent {parent!r}")
        seen.add(b["name"])
        origins = np.asarray(b.get("child_joint_origins") or np.zeros((0, 3)), dtype=float).reshape(-1, 3)
        bodies.append(Body(b["name"], parent, i, b.get("joint"), list(b.get("coordinates") or []),
                           list(b.get("children") or []), origins, list(b.get("geometry") or [])))
    coords = arrays["coordinates"].astype(np.float64)
    cinfo = list(manifest.get("coordinates") or [])
    if coords.shape[1:] != (len(cinfo),):
        raise MotionFileError(path, f"coordinates array {coords.shape} does not match "
                                    f"{len(cinfo)} coordinates")
    return MotionFile(str(path), manifest, time, trans, rot, coords, bodies, cinfo, arrays, str(path))


def find_result_file(folder) -> Path | None:
    """The motion file of a kinevid result folder (``motion.kvb`` first, else the newest .kvb)."""
    folder = Path(folder)
    if folder.is_file():
        return folder if folder.suffix.lower() == RESULT_SUFFIX else None
    if not folder.is_dir():
        return None
    preferred = folder / f"motion{RESULT_SUFFIX}"
    if preferred.is_file():
        return preferred
    found = sorted(folder.glob(f"*{RESULT_SUFFIX}"), key=lambda p: p.stat().st_mtime, reverse=True)
    return found[0] if found else None


# ------------------------------------------------------------------------------ rotations
def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """(..., 4) w,x,y,z -> (..., 3, 3)."""
    q = np.asarray(q, dtype=float)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    m = np.empty(q.shape[:-1] + (3, 3))
    m[..., 0, 0] = 1 - 2 * (y * y + z * z)
    m[..., 0, 1] = 2 * (x * y - w * z)
    m[..., 0, 2] = 2 * (x * z + w * y)
    m[..., 1, 0] = 2 * (x * y + w * z)
    m[..., 1, 1] = 1 - 2 * (x * x + z * z)
    m[..., 1, 2] = 2 * (y * z - w * x)
    m[..., 2, 0] = 2 * (x * z - w * y)
    m[..., 2, 1] = 2 * (y * z + w * x)
    m[..., 2, 2] = 1 - 2 * (x * x + y * y)
    return m


def matrix_to_quat(m: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation -> (..., 4) w,x,y,z, kept in one hemisphere along axis 0 when the
    input is a time series (so keyframe interpolation does not flip)."""
    m = np.asarray(m, dtype=float)
    flat = m.reshape(-1, 3, 3)
    out = np.empty((flat.shape[0], 4))
    for i, r in enumerate(flat):
        tr = r[0, 0] + r[1, 1] + r[2, 2]
        if tr > 0:
            s = 2.0 * np.sqrt(tr + 1.0)
            out[i] = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
        elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
            s = 2.0 * np.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
            out[i] = [(r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s]
        elif r[1, 1] > r[2, 2]:
            s = 2.0 * np.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
            out[i] = [(r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s]
        else:
            s = 2.0 * np.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
            out[i] = [(r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s]
    out /= np.linalg.norm(out, axis=-1, keepdims=True)
    out = out.reshape(m.shape[:-2] + (4,))
    if out.ndim >= 2:
        _continuous(out)
    return out


def _continuous(q: np.ndarray) -> None:
    """Flip signs in place along axis 0 so consecutive quaternions have dot >= 0."""
    for f in range(1, q.shape[0]):
        flip = np.sum(q[f] * q[f - 1], axis=-1) < 0
        q[f][flip] *= -1


def _rigid(rot: np.ndarray, trans: np.ndarray) -> np.ndarray:
    m = np.zeros(rot.shape[:-2] + (4, 4))
    m[..., :3, :3] = rot
    m[..., :3, 3] = trans
    m[..., 3, 3] = 1.0
    return m


def body_matrices(motion: MotionFile) -> np.ndarray:
    """(F, B, 4, 4) world matrix of every body frame, in Blender's Z-up world."""
    rot = TO_BLENDER @ quat_to_matrix(motion.body_rotation)
    trans = motion.body_translation @ TO_BLENDER.T
    return _rigid(rot, trans)


# ------------------------------------------------------------------------------ armature
def bone_offsets(motion: MotionFile) -> tuple[np.ndarray, np.ndarray]:
    """Per body: the bone's frame in the body frame (B, 4, 4), and the bone length (B,).

    A Blender bone points along its own Y axis. Each bone starts at its body's origin and points
    at its child body's origin in the first frame (where OpenSim put it, coupled knee
    translations included), so the rig reads as a skeleton; with several children, at the one
    most along the body's +Y (the spine rather than the hips, the head rather than the
    shoulders). Its Z axis is the body's Z made perpendicular, so roll follows the body. Without
    a child the bone follows the body's +Y (OpenSim bodies have Y along the segment).
    """
    n = len(motion.bodies)
    offsets = np.zeros((n, 4, 4))
    lengths = np.zeros(n)
    rot0 = quat_to_matrix(motion.body_rotation[0])
    trans0 = motion.body_translation[0]
    index = {b.name: b.index for b in motion.bodies}
    children: dict[int, list[int]] = {i: [] for i in range(n)}
    for b in motion.bodies:
        if b.parent is not None:
            children[index[b.parent]].append(b.index)
    for i in range(n):
        cands = [rot0[i].T @ (trans0[c] - trans0[i]) for c in children[i]]
        cands = [d for d in cands if np.linalg.norm(d) >= 0.01]
        if cands:
            d = max(cands, key=lambda v: v[1] / np.linalg.norm(v)) if len(cands) > 1 else cands[0]
            length = float(np.linalg.norm(d))
        else:
            d, length = np.array([0.0, 1.0, 0.0]), DEFAULT_BONE_LENGTH
        y = d / np.linalg.norm(d)
        z = np.array([0.0, 0.0, 1.0]) - y[2] * y
        if np.linalg.norm(z) < 1e-6:
            z = np.array([1.0, 0.0, 0.0]) - y[0] * y
        z /= np.linalg.norm(z)
        x = np.cross(y, z)
        offsets[i] = _rigid(np.column_stack([x, y, z]), np.zeros(3))
        lengths[i] = length
    return offsets, lengths


def pose_basis(bone_world: np.ndarray, rest: np.ndarray, parents: list[int]) -> np.ndarray:
    """Blender pose-bone ``matrix_basis`` (F, B, 4, 4) that puts every bone at ``bone_world``
    (F, B, 4, 4, armature space) given the rest matrices ``rest`` (B, 4, 4, Bone.matrix_local)
    and parent indices (-1 = none). Blender computes a pose bone's matrix as
    ``pose[parent] @ inv(rest[parent]) @ rest[bone] @ basis``; this inverts it."""
    out = np.empty_like(bone_world)
    inv_rest = np.linalg.inv(rest)
    for b, p in enumerate(parents):
        if p < 0:
            base = np.broadcast_to(rest[b], bone_world[:, b].shape)
        else:
            base = bone_world[:, p] @ (inv_rest[p] @ rest[b])
        out[:, b] = np.linalg.inv(base) @ bone_world[:, b]
    return out


# ------------------------------------------------------------------------------ timing
@dataclass
class Timing:
    fps: int
    fps_base: float
    frame_start: int
    frame_end: int
    key_frames: np.ndarray  # scene frame of each motion sample (may be fractional)
    time_origin: float      # motion time shown at frame_start

    @property
    def rate(self) -> float:
        return self.fps / self.fps_base

    def frame_of(self, t) -> np.ndarray:
        return self.frame_start + (np.asarray(t, dtype=float) - self.time_origin) * self.rate

    def clip_frame_start(self, video_offset_s: float) -> int:
        """Scene frame at which a video whose first frame is at motion time ``video_offset_s``
        must start (Blender's MovieClip.frame_start; the clip plays one frame per scene frame)."""
        return int(round(float(self.frame_of(video_offset_s))))


def scene_timing(time: np.ndarray, fps: float | None = None, frame_start: int = 1,
                 video_fps: float | None = None) -> Timing:
    """Scene fps / frame range for a motion sampled at ``time``. With a video the scene runs at
    the video's rate, so the clip plays frame for frame and the motion's keys land where their
    times fall (fractional frames when the rates differ)."""
    time = np.asarray(time, dtype=float)
    rate = float(video_fps or fps or _median_rate(time))
    if rate <= 0 or not np.isfinite(rate):
        raise ValueError(f"invalid frame rate {rate}")
    fps_int = int(round(rate))
    if abs(fps_int - rate) < 1e-4 * rate:  # a median of float times: 59.99998 is 60
        fps_base = 1.0
    else:  # e.g. 29.97 = 30 / 1.001
        fps_int = int(np.ceil(rate))
        fps_base = fps_int / rate
    t0 = float(time[0])
    keys = frame_start + (time - t0) * (fps_int / fps_base)
    return Timing(fps_int, fps_base, int(frame_start), int(np.ceil(keys[-1] - 1e-6)), keys, t0)


# ------------------------------------------------------------------------------ forces
def grf_arrows(force: np.ndarray, point: np.ndarray, threshold_n: float = 20.0,
               metres_per_newton: float = 0.001):
    """Keys of one GRF arrow (a Blender empty whose +Z is the arrow) per frame, in Blender's
    frame: location (F,3) = centre of pressure, quaternion (F,4) turning +Z onto the force, and
    scale (F,3) = length |F| * metres_per_newton on every axis; 0 (hidden) below the threshold
    or where the data are missing."""
    f = np.asarray(force, dtype=float) @ TO_BLENDER.T
    p = np.asarray(point, dtype=float) @ TO_BLENDER.T
    mag = np.linalg.norm(f, axis=-1)
    on = np.isfinite(mag) & (mag >= threshold_n) & np.all(np.isfinite(p), axis=-1)
    loc = np.where(on[:, None], p, 0.0)
    # Hold the last valid position while hidden so the arrow does not fly around between keys.
    last = np.zeros(3)
    for i in range(len(loc)):
        if on[i]:
            last = loc[i]
        else:
            loc[i] = last
    quat = np.tile([1.0, 0.0, 0.0, 0.0], (len(f), 1))
    z = np.array([0.0, 0.0, 1.0])
    for i in np.flatnonzero(on):
        d = f[i] / mag[i]
        c = float(np.dot(z, d))
        axis = np.cross(z, d)
        s = np.linalg.norm(axis)
        if s < 1e-9:
            quat[i] = [1, 0, 0, 0] if c > 0 else [0, 1, 0, 0]
        else:
            ang = np.arctan2(s, c)
            quat[i] = np.concatenate([[np.cos(ang / 2)], np.sin(ang / 2) * axis / s])
    _continuous(quat)
    length = np.where(on, mag * metres_per_newton, 0.0)
    return loc, quat, np.repeat(length[:, None], 3, axis=1)


# ------------------------------------------------------------------------------ confidence
def confidence_colour(c: float) -> tuple[float, float, float]:
    """0 -> red, 0.5 -> yellow, 1 -> green (NaN: grey)."""
    if c is None or not np.isfinite(c):
        return (0.5, 0.5, 0.5)
    c = float(np.clip(c, 0.0, 1.0))
    return (min(1.0, 2.0 * (1.0 - c)), min(1.0, 2.0 * c), 0.0)


def body_confidence(motion: MotionFile) -> np.ndarray | None:
    """(F, B) confidence of each body's joint: the lowest of its joint's coordinates' confidence
    (a joint is as trustworthy as its worst degree of freedom); None without confidence data."""
    conf = motion.array("coordinate_confidence")
    if conf is None:
        return None
    index = {n: j for j, n in enumerate(motion.coordinate_names)}
    out = np.full((motion.n_frames, len(motion.bodies)), np.nan)
    for i, b in enumerate(motion.bodies):
        cols = [index[c] for c in b.coordinates if c in index]
        if cols:
            out[:, i] = np.min(conf[:, cols], axis=1)
    return out
