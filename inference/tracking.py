"""Persistent person identities across frames, and choice of the subject (numpy/scipy only).

:class:`Tracker` links per-frame detections ((P_t, K, 3) arrays of x, y, confidence) into
tracks:

* every live track predicts its keypoints in the new frame with a constant velocity (per
  keypoint, smoothed, in pixels per frame) from its last matched detection, however many frames
  ago that was;
* the similarity between a prediction and a detection is the larger of the IoU of their
  keypoint boxes and their OKS (COCO's object keypoint similarity, on the keypoints both have,
  with one per-keypoint tolerance ``oks_sigma`` times the box scale);
* detections and tracks are paired by the Hungarian method (``scipy.optimize.
  linear_sum_assignment``) on 1 - similarity; a pair below ``min_similarity`` is not a match;
* a track that finds no detection stays alive for ``max_missed`` frames (short occlusions keep
  their identity); an unmatched detection starts a new track; ids are never reused.

:func:`subject_scores` / :func:`select_subject` pick the subject: the track with the largest
sum over frames of mean keypoint confidence times box size (the diagonal of its keypoint box),
which favours people who are in view long, large and clearly seen - the person filmed, not a
passer-by in the background.
"""
from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import numpy as np

__all__ = [
    "Tracker",
    "box_iou",
    "fix_left_right_swaps",
    "keypoint_boxes",
    "oks",
    "select_subject",
    "subject_scores",
    "track_detections",
]


def keypoint_boxes(kp: np.ndarray, min_conf: float = 0.0) -> np.ndarray:
    """(..., 4) boxes x1, y1, x2, y2 of keypoints (..., K, 3) with confidence > min_conf; NaN
    where there is none."""
    kp = np.asarray(kp, dtype=np.float64)
    ok = np.isfinite(kp[..., :2]).all(axis=-1) & (kp[..., 2] > min_conf)
    x = np.where(ok, kp[..., 0], np.nan)
    y = np.where(ok, kp[..., 1], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows give NaN boxes
        return np.stack([np.nanmin(x, -1), np.nanmin(y, -1), np.nanmax(x, -1), np.nanmax(y, -1)], -1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (M, N) of boxes (M, 4) and (N, 4); 0 where a box is NaN."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)[:, None]
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)[None]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area = lambda c: (c[..., 2] - c[..., 0]) * (c[..., 3] - c[..., 1])
    union = area(a) + area(b) - inter
    with np.errstate(all="ignore"):
        out = np.where(union > 0, inter / union, 0.0)
    return np.nan_to_num(out, nan=0.0)


def oks(a: np.ndarray, b: np.ndarray, sigma: float = 0.1, min_conf: float = 0.0) -> float:
    """Object keypoint similarity of two (K, 3) poses on the keypoints both see; the scale is
    the diagonal of the union of their boxes. 0 when they share no keypoint."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    ok = (np.isfinite(a[:, :2]).all(1) & np.isfinite(b[:, :2]).all(1)
          & (a[:, 2] > min_conf) & (b[:, 2] > min_conf))
    if not ok.any():
        return 0.0
    pts = np.concatenate([a[ok, :2], b[ok, :2]])
    scale = max(float(np.hypot(*(pts.max(0) - pts.min(0)))), 1.0)
    d2 = np.sum((a[ok, :2] - b[ok, :2]) ** 2, axis=1)
    return float(np.mean(np.exp(-d2 / (2 * (sigma * scale) ** 2))))


def assignment(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the minimum-cost pairing (``scipy.optimize.linear_sum_assignment``).

    With one row or one column the pairing is the smallest entry, found here directly: with a
    one-person detector (BlazePose) that is every frame, and importing scipy.optimize costs
    ~0.5 s of a run's start-up, before its 2D stage."""
    if cost.shape[0] == 1:
        return np.array([0]), np.array([int(np.argmin(cost[0]))])
    if cost.shape[1] == 1:
        return np.array([int(np.argmin(cost[:, 0]))]), np.array([0])
    from scipy.optimize import linear_sum_assignment
    return linear_sum_assignment(cost)


@dataclasses.dataclass
class _Track:
    id: int
    kp: np.ndarray            # last matched detection (K, 3)
    velocity: np.ndarray      # (K, 2) px per frame; NaN where unknown
    last_frame: int
    hits: int = 1

    def predict(self, frame: int) -> np.ndarray:
        gap = frame - self.last_frame
        out = self.kp.copy()
        v = np.nan_to_num(self.velocity, nan=0.0)
        out[:, :2] = self.kp[:, :2] + v * gap
        return out


class Tracker:
    """Online multi-person tracker; call :meth:`update` once per frame, in order."""

    def __init__(self, max_missed: int = 15, min_similarity: float = 0.1, min_conf: float = 0.2,
                 oks_sigma: float = 0.1, velocity_smoothing: float = 0.5, min_keypoints: int = 3):
        self.max_missed = int(max_missed)
        self.min_similarity = float(min_similarity)
        self.min_conf = float(min_conf)
        self.oks_sigma = float(oks_sigma)
        self.alpha = float(velocity_smoothing)
        self.min_keypoints = int(min_keypoints)
        self._tracks: list[_Track] = []
        self._next_id = 0
        self._frame = -1

    @property
    def live_ids(self) -> list[int]:
        return [t.id for t in self._tracks]

    def similarity(self, predicted: np.ndarray, detections: np.ndarray) -> np.ndarray:
        """(T, D) similarities between predicted poses (T, K, 3) and detections (D, K, 3)."""
        if len(predicted) == 0 or len(detections) == 0:
            return np.zeros((len(predicted), len(detections)))
        iou = box_iou(keypoint_boxes(predicted, self.min_conf), keypoint_boxes(detections, self.min_conf))
        o = np.array([[oks(p, d, self.oks_sigma, self.min_conf) for d in detections] for p in predicted])
        return np.maximum(iou, o)

    def update(self, detections: Sequence[np.ndarray] | np.ndarray, frame: int | None = None) -> list[int]:
        """Ids for the detections of the next frame ((D, K, 3) or a list of (K, 3)); -1 for a
        detection with fewer than ``min_keypoints`` confident points (ignored)."""
        frame = self._frame + 1 if frame is None else int(frame)
        if frame <= self._frame:
            raise ValueError(f"frames must increase: got {frame} after {self._frame}")
        self._frame = frame
        dets = [np.asarray(d, dtype=np.float64) for d in detections]
        usable = [i for i, d in enumerate(dets)
                  if int(np.sum(np.isfinite(d[:, :2]).all(1) & (d[:, 2] > self.min_conf))) >= self.min_keypoints]
        ids = [-1] * len(dets)
        # Forget tracks missing for too long before matching, so they cannot steal detections.
        self._tracks = [t for t in self._tracks if frame - t.last_frame <= self.max_missed + 1]
        pred = np.array([t.predict(frame) for t in self._tracks]).reshape(len(self._tracks), -1, 3) \
            if self._tracks else np.zeros((0, 0, 3))
        sim = self.similarity(pred, np.array([dets[i] for i in usable])) if usable else np.zeros((len(self._tracks), 0))
        matched_det: set[int] = set()
        if sim.size:
            rows, cols = assignment(1.0 - sim)
            for r, c in zip(rows, cols):
                if sim[r, c] < self.min_similarity:
                    continue
                d = usable[c]
                self._absorb(self._tracks[r], dets[d], frame)
                ids[d] = self._tracks[r].id
                matched_det.add(d)
        for d in usable:
            if d not in matched_det:
                k = dets[d].shape[0]
                self._tracks.append(_Track(self._next_id, dets[d].copy(), np.full((k, 2), np.nan), frame))
                ids[d] = self._next_id
                self._next_id += 1
        return ids

    def _absorb(self, track: _Track, det: np.ndarray, frame: int) -> None:
        gap = frame - track.last_frame
        both = (np.isfinite(det[:, :2]).all(1) & np.isfinite(track.kp[:, :2]).all(1)
                & (det[:, 2] > self.min_conf) & (track.kp[:, 2] > self.min_conf))
        step = np.full_like(track.velocity, np.nan)
        step[both] = (det[both, :2] - track.kp[both, :2]) / gap
        # A keypoint's own step is noisy; the median step of the pose stands in where unknown.
        if both.any():
            med = np.median(step[both], axis=0)
            step[~both] = med
        old = track.velocity
        track.velocity = np.where(np.isnan(old), step, self.alpha * old + (1 - self.alpha) * step)
        track.kp = det.copy()
        track.last_frame = frame
        track.hits += 1


def track_detections(detections: Sequence[Sequence[np.ndarray]], frames: Sequence[int] | None = None,
                     **tracker_options) -> list[list[int]]:
    """Ids for every detection of every frame (see :class:`Tracker`). ``frames`` are the frame
    indices (gaps from skipped frames count as missed frames)."""
    tracker = Tracker(**tracker_options)
    frames = range(len(detections)) if frames is None else frames
    return [tracker.update(d, frame=f) for d, f in zip(detections, frames)]


def subject_scores(keypoints: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """Per track (P,): sum over frames of mean keypoint confidence x keypoint-box diagonal.

    keypoints (P, n, K, 2) with NaN for missing, confidence (P, n, K)."""
    kp = np.asarray(keypoints, dtype=np.float64)
    conf = np.nan_to_num(np.asarray(confidence, dtype=np.float64), nan=0.0)
    boxes = keypoint_boxes(np.concatenate([kp, conf[..., None]], axis=-1), 0.0)  # (P, n, 4)
    diag = np.nan_to_num(np.hypot(boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]), nan=0.0)
    return np.sum(conf.mean(axis=-1) * diag, axis=-1)


def select_subject(pose) -> int | None:
    """Id of the subject of a :class:`~inference.pose2d.Pose2D` (None if it has no track)."""
    ids = pose.person_ids
    if not ids:
        return None
    scores = subject_scores(pose.keypoints(), pose.confidence())
    return int(ids[int(np.argmax(scores))])


def fix_left_right_swaps(keypoints: np.ndarray, confidence: np.ndarray, layout: str,
                         min_width: float = 0.25, min_conf: float = 0.3, max_gap: int = 0
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Undo whole-body left/right label swaps along one track.

    Single-image pose models decide front view vs back view largely from the face; when it is
    hidden (blurred, turned down, in shadow) they may label the left side "right" for a run of
    frames. In 2D such a swap looks like a 180-degree turn between two consecutive frames. A
    real turn goes through a profile view, where the shoulders and hips overlap in the image,
    so: the signed torso width ``w = ((x_ls - x_rs) + (x_lh - x_rh)) / 2 / torso_length`` is
    computed per frame; runs of frames with ``|w| >= min_width`` are cut wherever ``w`` changes
    sign between consecutive frames (an impossible instant turn) into segments of alternating
    labelling; each run bridged only by such cuts keeps the labelling that most of its frames
    (weighted by confidence) have, and the other segments get their flip pairs exchanged.
    Clear frames separated by at most ``max_gap`` unclear or missing frames stay in one run (a
    real half turn takes longer than a brief profile view or a dropped frame; set ``max_gap``
    to about a quarter of a second of frames); longer breaks start a new run, decided on its own.
    The majority rule assumes the model labels the sides right more often than not.

    keypoints (n, K, 2), confidence (n, K) for one track. Returns corrected copies and the
    (n,) mask of frames whose labels were exchanged.
    """
    from .layouts import get_layout

    lay = get_layout(layout)
    kp = np.array(keypoints, dtype=np.float64, copy=True)
    conf = np.array(confidence, dtype=np.float64, copy=True)
    n = kp.shape[0]
    swapped = np.zeros(n, dtype=bool)
    try:
        ls, rs, lh, rh = (lay.index(k) for k in ("left_shoulder", "right_shoulder", "left_hip", "right_hip"))
    except KeyError:
        return kp, conf, swapped
    torso_pts = kp[:, [ls, rs, lh, rh]]
    ok = np.isfinite(torso_pts).all(axis=(1, 2)) & (conf[:, [ls, rs, lh, rh]] >= min_conf).all(axis=1)
    with np.errstate(all="ignore"):
        length = np.hypot(*((torso_pts[:, 0] + torso_pts[:, 1]) / 2 - (torso_pts[:, 2] + torso_pts[:, 3]) / 2).T)
        w = ((torso_pts[:, 0, 0] - torso_pts[:, 1, 0]) + (torso_pts[:, 2, 0] - torso_pts[:, 3, 0])) / 2 / length
    clear = ok & (length > 0) & (np.abs(np.nan_to_num(w)) >= min_width)
    weight = np.nan_to_num(conf[:, [ls, rs, lh, rh]].mean(axis=1))
    idx = np.flatnonzero(clear)
    i = 0
    while i < len(idx):
        # A run of clear frames with gaps of at most max_gap; parity flips at every sign change.
        members, parity = [idx[i]], [0]
        while i + 1 < len(idx) and idx[i + 1] - idx[i] - 1 <= max_gap:
            parity.append(parity[-1] ^ int(np.sign(w[idx[i + 1]]) != np.sign(w[idx[i]])))
            members.append(idx[i + 1])
            i += 1
        members, parity = np.array(members), np.array(parity)
        # Frames of parity 1 disagree with those of parity 0; the heavier side is kept.
        w0, w1 = weight[members][parity == 0].sum(), weight[members][parity == 1].sum()
        flip = members[parity == (1 if w0 >= w1 else 0)]
        swapped[flip] = True
        # Unclear frames inside the run follow the labelling of the clear frame before them.
        for a, b, flipped in zip(members[:-1], members[1:], np.isin(members[:-1], flip)):
            if b - a > 1 and flipped:
                gap = np.arange(a + 1, b)
                swapped[gap[np.isfinite(kp[gap]).any(axis=(1, 2))]] = True
        i += 1
    if swapped.any():
        p = lay.flip_index
        kp[swapped] = kp[swapped][:, p]
        conf[swapped] = conf[swapped][:, p]
    return kp, conf, swapped
