"""BlazePose (MediaPipe Pose) backend: offline, CPU-only, 33 landmarks, several persons.

**Weights.** mediapipe 0.10.21's wheel carries the person detector (``pose_detection.tflite``)
and the landmark model of complexity 1 (``pose_landmark_full.tflite``) only. Complexity 0 and 2
need ``pose_landmark_lite.tflite`` / ``pose_landmark_heavy.tflite``, which mediapipe downloads
into its own package folder on first use; :func:`check_complexity` refuses them with a clear
message unless the file is already there, so nothing is fetched behind the user's back.

**One person per graph.** ``solutions.pose.Pose`` follows a single person. The Tasks API
(``PoseLandmarker`` with ``num_poses > 1``) needs a ``.task`` bundle that the wheel does not
ship; rebuilding one from the wheel's tflite files works, but on real clips it returned
duplicates of one person and missed small ones, so it is not used. Instead
:class:`MultiPersonBlazePose` runs one tracking-mode graph per person ("slot") on a square crop
around that person:

1. each slot's crop is centred on the box of the person's previous keypoints, moved by their
   last velocity and enlarged (``crop_margin``), and resampled to ``crop_size`` pixels, so
   the cost per person does not depend on the video resolution (a 1080p frame is never handed
   to MediaPipe whole; its landmark model sees a 256x256 region anyway);
2. every ``detect_every`` frames (every frame while nobody is followed) new persons are looked
   for on the frame with the followed persons painted out: the full frame, then overlapping
   square tiles (small persons on wide frames), one new person per pass until a pass finds
   none or ``max_people`` are followed;
   with ``candidates`` above the free slots, a pass looks for that many persons and follows
   the one that looks most like the person followed first (colour signature, see
   :mod:`inference.appearance`; ``reference`` may come from another reader), else the most
   prominent (keypoint-box diagonal x torso visibility), so a reader that follows one person
   stays with the subject when two people cross, rather than taking whoever the detector
   returns first;
3. a slot whose graph loses its person, whose landmarks are mostly invisible, or that
   converges onto another slot's person is released.

Limits: persons who overlap strongly (one in front of the other) can be merged into one slot
until they separate; a person is found at the next detection pass, so up to ``detect_every``
frames after entering the view are missed; the detector needs a visible face-and-torso, so a
person seen from behind at a small size may be found late. Identities are *not* decided here:
per-frame detections go to :mod:`inference.tracking`.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np

from opensim_bridge.errors import InputError, KinevidError

from .layouts import get_layout

__all__ = [
    "LANDMARK_FILES",
    "LAYOUT",
    "N_LANDMARKS",
    "BlazePose",
    "MultiPersonBlazePose",
    "check_complexity",
    "import_mediapipe",
    "keypoint_box",
    "mediapipe_dir",
]

LAYOUT = "blazepose33"
N_LANDMARKS = 33
#: landmark model file each ``model_complexity`` needs, under mediapipe/modules/pose_landmark.
LANDMARK_FILES = {0: "pose_landmark_lite.tflite", 1: "pose_landmark_full.tflite",
                  2: "pose_landmark_heavy.tflite"}
DETECTOR_FILE = "pose_detection.tflite"

# Torso points (shoulders, hips) in the BlazePose order: a slot whose torso is not seen is lost.
_TORSO = [get_layout(LAYOUT).index(n) for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip")]


def _quiet_mediapipe() -> None:
    # MediaPipe's C++ side logs through glog/absl to stderr; only errors matter to users.
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def _native_stderr_silenced():
    """Send file descriptor 2 to /dev/null for the duration of the block.

    MediaPipe's C++ side logs through absl before its logging is initialised, straight to
    stderr, at every graph start (``Created TensorFlow Lite XNNPACK delegate``, ``Feedback
    manager requires a model with a single signature``...): noise for users that no setting
    turns off. Only graph starts are wrapped (a few per video), so other output is rarely
    affected; Python's own ``sys.stderr`` is flushed first so nothing already written is lost.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (embedded interpreters)
        yield
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
        finally:
            os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def import_mediapipe():
    """Import mediapipe without matplotlib.

    mediapipe's package import loads its drawing utilities, which import ``matplotlib.pyplot``
    for a 3D plotting helper kinevid never calls: a third of a second of a cold start, spent
    where the 2D stage waits for its first frame. Unless matplotlib is already loaded, empty
    placeholder modules stand in for it during the import and are removed afterwards, so a
    later ``import matplotlib.pyplot`` (kinevid's comparison plots) loads the real one.
    """
    import types

    if "mediapipe" in sys.modules:
        return sys.modules["mediapipe"]
    placeholders = {}
    if "matplotlib" not in sys.modules:
        top = types.ModuleType("matplotlib")
        top.pyplot = types.ModuleType("matplotlib.pyplot")
        placeholders = {"matplotlib": top, "matplotlib.pyplot": top.pyplot}
        sys.modules.update(placeholders)
    try:
        import mediapipe
    except ImportError as exc:  # pragma: no cover - mediapipe is a project dependency
        raise KinevidError(f"the BlazePose backend needs mediapipe (pip install mediapipe==0.10.21): {exc}") from exc
    finally:
        for name, module in placeholders.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
    return mediapipe


def mediapipe_dir() -> Path:
    """The installed mediapipe package folder (where its model files live)."""
    _quiet_mediapipe()
    return Path(import_mediapipe().__file__).resolve().parent


def check_complexity(complexity: int) -> Path:
    """The landmark model file for ``complexity``; error if it is not installed.

    MediaPipe would download a missing file from Google's servers into its package folder;
    kinevid works offline and refuses instead, naming the file to put there.
    """
    if complexity not in LANDMARK_FILES:
        raise InputError(f"BlazePose model complexity must be 0, 1 or 2, got {complexity!r}")
    folder = mediapipe_dir() / "modules" / "pose_landmark"
    path = folder / LANDMARK_FILES[complexity]
    if not path.is_file():
        raise InputError(
            f"BlazePose model complexity {complexity} needs {LANDMARK_FILES[complexity]}, which is "
            f"not shipped with mediapipe and would be downloaded; kinevid stays offline. Use "
            f"complexity 1 (shipped), or copy the file from the MediaPipe model repository into "
            f"{folder}", path)
    detector = mediapipe_dir() / "modules" / "pose_detection" / DETECTOR_FILE
    if not detector.is_file():
        raise InputError("the mediapipe installation lacks its pose detector model", detector)
    return path


def keypoint_box(kp: np.ndarray, min_conf: float = 0.0) -> np.ndarray:
    """(x1, y1, x2, y2) of the keypoints (K, 3) whose confidence exceeds ``min_conf``
    (all finite ones if none does); NaN box if none is finite."""
    kp = np.asarray(kp, dtype=np.float64)
    finite = np.isfinite(kp[:, :2]).all(axis=1)
    sel = finite & (kp[:, 2] > min_conf)
    if not sel.any():
        sel = finite
    if not sel.any():
        return np.full(4, np.nan)
    xy = kp[sel, :2]
    return np.array([xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max()])


def _prominence(kp: np.ndarray) -> float:
    """How much a person stands out: keypoint-box diagonal (px) x mean torso visibility."""
    box = keypoint_box(kp, 0.3)
    return float(np.hypot(box[2] - box[0], box[3] - box[1]) * np.mean(kp[_TORSO, 2]))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class BlazePose:
    """One MediaPipe Pose graph: the most prominent person of each image, as (33, 3) arrays of
    x, y in pixels of the given image and visibility in [0, 1] as confidence.

    static=False is MediaPipe's tracking mode: the detector runs only when the person is lost,
    the landmark region comes from the previous landmarks. smooth=False by default because
    the crops fed by :class:`MultiPersonBlazePose` move between frames, and MediaPipe's filter
    works in image-normalised coordinates.
    """

    def __init__(self, complexity: int = 1, static: bool = False, smooth: bool = False,
                 min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5):
        check_complexity(complexity)   # imports mediapipe (without matplotlib)
        from mediapipe.python.solutions import pose as mp_pose

        self.complexity = complexity
        with _native_stderr_silenced():
            self._graph = mp_pose.Pose(static_image_mode=static, model_complexity=complexity,
                                       smooth_landmarks=smooth, enable_segmentation=False,
                                       min_detection_confidence=min_detection_confidence,
                                       min_tracking_confidence=min_tracking_confidence)
            self._settle()
        # The first image of a graph run logs a warning too, and a static graph's landmark
        # stage starts (and logs) at the first image with a person, whenever that comes.
        self._fresh = True
        self._static = static

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
        if self._fresh or self._static:
            with _native_stderr_silenced():
                result = self._graph.process(np.ascontiguousarray(image))
            self._fresh = False
        else:
            result = self._graph.process(np.ascontiguousarray(image))
        if result.pose_landmarks is None:
            return None
        h, w = image.shape[:2]
        # MediaPipe's normalised coordinates put 0 and 1 on the image edges; kinevid puts
        # integer coordinates on pixel centres (as OpenPose and mmpose do): shift by half a pixel.
        out = np.array([(lm.x * w - 0.5, lm.y * h - 0.5, lm.visibility)
                        for lm in result.pose_landmarks.landmark], dtype=np.float64)
        out[:, 2] = np.clip(out[:, 2], 0.0, 1.0)
        return out

    def reset(self) -> None:
        """Forget the tracked person (the next image runs the detector)."""
        with _native_stderr_silenced():
            self._graph.reset()
            self._settle()
        self._fresh = True

    def _settle(self) -> None:
        # Calculators open (and log) on MediaPipe's worker threads, possibly after the call
        # that started the graph has returned: one blank image waits for them, inside the
        # silenced block. A blank image has no person, so the tracking state stays empty.
        self._graph.process(np.zeros((64, 64, 3), np.uint8))

    def close(self) -> None:
        self._graph.close()


class _Slot:
    """One followed person: its graph, last keypoints (frame pixels) and velocity."""

    def __init__(self, graph: BlazePose):
        self.graph = graph
        self.kp: np.ndarray | None = None
        self.velocity = np.zeros(2)
        self.age = 0


class MultiPersonBlazePose:
    """BlazePose for every person in view; see the module documentation for the method.

    ``process(image)`` returns the detections of one frame: a list of (33, 3) arrays (x, y in
    pixels of ``image``, confidence). Feed consecutive frames of one video.
    """

    def __init__(self, max_people: int = 4, detect_every: int = 10, complexity: int = 1,
                 crop_size: int = 320, crop_margin: float = 1.6, detect_size: int = 640,
                 min_visibility: float = 0.3, min_detection_confidence: float = 0.5,
                 candidates: int = 1, reference=None, on_reference=None):
        if max_people < 1:
            raise ValueError("max_people must be at least 1")
        if detect_every < 1:
            raise ValueError("detect_every must be at least 1")
        check_complexity(complexity)
        import cv2  # opencv-python-headless: fast affine crops (mediapipe depends on it too)

        self._cv2 = cv2
        self.max_people = max_people
        self.candidates = max(1, int(candidates))
        # The signature candidates are compared with: an array, or a callable that waits for
        # one (another reader's); ``on_reference`` hears of the one taken here.
        self._reference = reference
        self._on_reference = on_reference
        self.detect_every = detect_every
        self.complexity = complexity
        self.crop_size = int(crop_size)
        self.crop_margin = float(crop_margin)
        self.detect_size = int(detect_size)
        self.min_visibility = float(min_visibility)
        self._min_det = float(min_detection_confidence)
        self._slots: list[_Slot] = []
        self._pool: list[BlazePose] = []
        self._detector: BlazePose | None = None
        self._frame = 0
        self.stats = {"frames": 0, "detection_passes": 0, "slots_started": 0}

    # ------------------------------------------------------------------ crops
    def _crop_window(self, kp: np.ndarray, velocity: np.ndarray) -> tuple[np.ndarray, float]:
        box = keypoint_box(kp, 0.3)
        centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]) + velocity
        side = max(box[2] - box[0], box[3] - box[1], 32.0) * self.crop_margin
        return centre, side

    def _warp(self, image: np.ndarray, centre: np.ndarray, side: float, size: int
              ) -> tuple[np.ndarray, float, np.ndarray]:
        """A size x size crop of the square of ``side`` pixels around ``centre`` (black outside)
        and the map frame -> crop ``u = s * x + t`` (pixel centres at integers)."""
        cv2 = self._cv2
        s = size / side
        t = s * (0.5 - centre) + size / 2 - 0.5
        h, w = image.shape[:2]
        # Slice the region first so a 4K frame is never resampled whole.
        x0 = int(np.clip(np.floor(centre[0] - side / 2) - 1, 0, w))
        x1 = int(np.clip(np.ceil(centre[0] + side / 2) + 2, 0, w))
        y0 = int(np.clip(np.floor(centre[1] - side / 2) - 1, 0, h))
        y1 = int(np.clip(np.ceil(centre[1] + side / 2) + 2, 0, h))
        region = image[y0:y1, x0:x1]
        if region.size == 0:
            return np.zeros((size, size, 3), np.uint8), s, t
        region, f = self._halve(region, s)
        # region pixel r -> frame pixel x = (r + 0.5) / f - 0.5 + offset
        lin = s / f
        trans = s * (0.5 / f - 0.5 + np.array([x0, y0])) + t
        mat = np.array([[lin[0], 0.0, trans[0]], [0.0, lin[1], trans[1]]])
        crop = cv2.warpAffine(region, mat, (size, size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return crop, s, t

    def _halve(self, region: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray]:
        """Shrink ``region`` by exact halvings while the remaining scale ``s`` is below 0.5.

        warpAffine alone would alias when shrinking more than 2x; an area filter avoids it,
        and OpenCV's area filter is ~10x faster for an exact factor of 2 than for others.
        Returns the region and its scale f = new / old size per axis (x, y); the pixel-centre
        map of a resize is ``new = (old + 0.5) * f - 0.5``, and it composes.
        """
        f = 1.0
        while s < 0.5 and min(region.shape[:2]) >= 4:
            # Dropping an odd last row/column does not move the origin: the factor stays 1/2.
            h, w = region.shape[:2]
            region = self._cv2.resize(region[: h - h % 2, : w - w % 2], (w // 2, h // 2),
                                      interpolation=self._cv2.INTER_AREA)
            s *= 2.0
            f *= 0.5
        return region, np.array([f, f])

    def _run_in_crop(self, graph: BlazePose, image: np.ndarray, centre: np.ndarray, side: float
                     ) -> np.ndarray | None:
        crop, s, t = self._warp(image, centre, side, self.crop_size)
        kp = graph(crop)
        if kp is None:
            return None
        kp[:, :2] = (kp[:, :2] - t) / s
        return kp

    # ------------------------------------------------------------------ slots
    def _new_graph(self) -> BlazePose:
        if self._pool:
            g = self._pool.pop()
            g.reset()
            return g
        return BlazePose(self.complexity, static=False, min_detection_confidence=self._min_det)

    def _release(self, slot: _Slot) -> None:
        self._pool.append(slot.graph)

    def _good(self, kp: np.ndarray | None) -> bool:
        return kp is not None and float(np.mean(kp[_TORSO, 2])) >= self.min_visibility

    def _track_slots(self, image: np.ndarray) -> None:
        kept = []
        for slot in self._slots:
            centre, side = self._crop_window(slot.kp, slot.velocity)
            kp = self._run_in_crop(slot.graph, image, centre, side)
            if not self._good(kp):
                self._release(slot)
                continue
            old = keypoint_box(slot.kp, 0.3)
            new = keypoint_box(kp, 0.3)
            step = np.array([(new[0] + new[2]) - (old[0] + old[2]), (new[1] + new[3]) - (old[1] + old[3])]) / 2
            slot.velocity = 0.5 * slot.velocity + 0.5 * step
            slot.kp = kp
            slot.age += 1
            kept.append(slot)
        # Two graphs that drifted onto the same person: keep the older (its identity is settled).
        kept.sort(key=lambda s: -s.age)
        unique: list[_Slot] = []
        for slot in kept:
            box = keypoint_box(slot.kp, 0.3)
            if any(_iou(box, keypoint_box(u.kp, 0.3)) > 0.5 for u in unique):
                self._release(slot)
            else:
                unique.append(slot)
        self._slots = unique

    # ------------------------------------------------------------------ detection
    def _windows(self, h: int, w: int) -> list[tuple[int, int, int, int]]:
        """Full frame, then overlapping squares along the long side (x0, y0, x1, y1)."""
        wins = [(0, 0, w, h)]
        short, long_ = min(h, w), max(h, w)
        if long_ > 1.3 * short:
            n = int(np.ceil(long_ / short))  # overlapping squares covering the long side
            starts = np.linspace(0, long_ - short, n + 1 if n * short - long_ < short / 4 else n).round().astype(int)
            for s in starts:
                wins.append((s, 0, s + short, h) if w > h else (0, s, w, s + short))
        return wins

    def _detect_once(self, masked: np.ndarray) -> np.ndarray | None:
        """One person on the masked frame (frame pixels), or None."""
        if self._detector is None:
            self._detector = BlazePose(self.complexity, static=True, min_detection_confidence=self._min_det)
        h, w = masked.shape[:2]
        for x0, y0, x1, y1 in self._windows(h, w):
            region = masked[y0:y1, x0:x1]
            target = min(1.0, self.detect_size / max(region.shape[:2]))
            region, f = self._halve(region, target)  # exact halvings while >= 2x too big
            rest = target / f[0]
            if rest < 1.0:
                size = (max(1, round(region.shape[1] * rest)), max(1, round(region.shape[0] * rest)))
                f = f * np.array([size[0] / region.shape[1], size[1] / region.shape[0]])
                region = self._cv2.resize(region, size, interpolation=self._cv2.INTER_LINEAR)
            kp = self._detector(region)
            if self._good(kp):
                # resized pixel centre m -> window pixel (m + 0.5) / f - 0.5
                kp[:, 0] = (kp[:, 0] + 0.5) / f[0] - 0.5 + x0
                kp[:, 1] = (kp[:, 1] + 0.5) / f[1] - 0.5 + y0
                return kp
        return None

    def _mask(self, image: np.ndarray, kp: np.ndarray) -> None:
        box = keypoint_box(kp, 0.3)
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        half_w = (box[2] - box[0]) * 0.6 + 8
        half_h = (box[3] - box[1]) * 0.6 + 8
        h, w = image.shape[:2]
        x0, x1 = int(max(0, cx - half_w)), int(min(w, cx + half_w))
        y0, y1 = int(max(0, cy - half_h)), int(min(h, cy + half_h))
        image[y0:y1, x0:x1] = 127  # mid-grey: no edges for the detector to fire on

    def _detect_new(self, image: np.ndarray) -> None:
        self.stats["detection_passes"] += 1
        masked = image.copy()
        for slot in self._slots:
            self._mask(masked, slot.kp)
        free = self.max_people - len(self._slots)
        found_all: list[np.ndarray] = []
        while len(found_all) < max(free, self.candidates):
            found = self._detect_once(masked)
            if found is None:
                break
            self._mask(masked, found)
            if any(_iou(keypoint_box(found, 0.3), keypoint_box(s.kp, 0.3)) > 0.3 for s in self._slots):
                continue  # a followed person leaking past its mask
            found_all.append(found)
        self._rank(image, found_all, free)
        for found in found_all[:free]:
            slot = _Slot(self._new_graph())
            # Refine on a proper crop of this same frame: the detection pass saw the person small.
            centre, side = self._crop_window(found, np.zeros(2))
            kp = self._run_in_crop(slot.graph, image, centre, side)
            slot.kp = kp if self._good(kp) else found
            self._slots.append(slot)
            self.stats["slots_started"] += 1
        if self.candidates > 1 and self._reference is None and self._slots:
            from .appearance import signature

            sig = signature(image, self._slots[0].kp)
            if sig is not None:
                self._reference = sig
                if self._on_reference is not None:
                    self._on_reference(sig)

    def _rank(self, image: np.ndarray, found: list[np.ndarray], free: int) -> None:
        """Order ``found`` best first: by likeness to the reference when one is known and
        there is a choice to make, else by prominence."""
        found.sort(key=lambda kp: -_prominence(kp))
        if len(found) <= free or self.candidates <= 1:
            return
        ref = self._reference() if callable(self._reference) else self._reference
        if ref is None:
            return
        self._reference = ref
        from .appearance import distance, signature

        def key(kp):
            sig = signature(image, kp)
            return distance(ref, sig) if sig is not None else 2.0

        found.sort(key=key)

    # ------------------------------------------------------------------ API
    def follow(self, kp: np.ndarray) -> None:
        """Follow, from the next image on, the person whose keypoints (frame pixels, (33, 3))
        were ``kp`` in the image before it: a reader that continues where another left off."""
        if len(self._slots) >= self.max_people:
            raise ValueError(f"already following {len(self._slots)} of {self.max_people} persons")
        slot = _Slot(self._new_graph())
        slot.kp = np.array(kp, dtype=np.float64)
        self._slots.append(slot)
        self.stats["slots_started"] += 1

    def process(self, image: np.ndarray) -> list[np.ndarray]:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
        self._track_slots(image)
        if not self._slots or self._frame % self.detect_every == 0:
            if len(self._slots) < self.max_people:
                self._detect_new(image)
        self._frame += 1
        self.stats["frames"] += 1
        return [s.kp.copy() for s in self._slots]

    def reset(self) -> None:
        for slot in self._slots:
            self._release(slot)
        self._slots = []
        self._frame = 0

    def close(self) -> None:
        self.reset()
        for g in self._pool:
            g.close()
        self._pool = []
        if self._detector is not None:
            self._detector.close()
            self._detector = None

    def __enter__(self) -> MultiPersonBlazePose:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
