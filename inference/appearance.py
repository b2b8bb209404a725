"""What a person looks like: a colour signature to tell the subject from other people.

Used where only one person is followed (``pose2d.max_people = 1``, the light tier): when the
followed person is lost, or when a reader starts in the middle of the video, the detector may
offer several persons and the most prominent is not always the one followed so far (two
people crossing). Clothes tell them apart: the signature is the hue-saturation histogram of the
pixels inside the torso (shoulders to hips) and the thighs (hips to knees), which keypoints
locate without any extra model. Brightness is left out so that shade and lighting matter less.
"""
from __future__ import annotations

import threading

import numpy as np

from .layouts import get_layout

__all__ = ["signature", "distance", "SharedSignature", "HUE_BINS", "SAT_BINS"]

HUE_BINS, SAT_BINS = 16, 8
#: Fewer pixels than this (a person a few pixels tall, keypoints off the frame): no signature.
MIN_PIXELS = 64
_MIN_CONF = 0.3


def _polygons(kp: np.ndarray, layout: str) -> list[np.ndarray]:
    lay = get_layout(layout)

    def pt(name):
        j = lay.index(name)
        p = kp[j]
        return p[:2] if np.isfinite(p[:2]).all() and p[2] > _MIN_CONF else None

    polys = []
    for names in (("left_shoulder", "right_shoulder", "right_hip", "left_hip"),
                  ("left_hip", "right_hip", "right_knee", "left_knee")):
        pts = [pt(n) for n in names]
        if all(p is not None for p in pts):
            polys.append(np.array(pts))
    return polys


def signature(image: np.ndarray, kp: np.ndarray, layout: str = "blazepose33") -> np.ndarray | None:
    """Normalised (HUE_BINS x SAT_BINS) histogram of the person's torso and thighs in ``image``
    (H, W, 3 RGB uint8) given their keypoints ``kp`` (K, 3: x, y in pixels, confidence), or
    None when too little of them is visible."""
    import cv2

    polys = _polygons(np.asarray(kp, dtype=np.float64), layout)
    if not polys:
        return None
    pts = np.concatenate(polys)
    h, w = image.shape[:2]
    x0, y0 = np.clip(np.floor(pts.min(axis=0)).astype(int), 0, [w, h])
    x1, y1 = np.clip(np.ceil(pts.max(axis=0)).astype(int) + 1, 0, [w, h])
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    region = np.ascontiguousarray(image[y0:y1, x0:x1])
    mask = np.zeros(region.shape[:2], np.uint8)
    for poly in polys:
        cv2.fillConvexPoly(mask, np.round(poly - [x0, y0]).astype(np.int32), 255)
    if int(np.count_nonzero(mask)) < MIN_PIXELS:
        return None
    hsv = cv2.cvtColor(region, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], mask, [HUE_BINS, SAT_BINS], [0, 180, 0, 256])
    total = float(hist.sum())
    return (hist / total).astype(np.float32) if total > 0 else None


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Bhattacharyya distance of two signatures: 0 = same colours, 1 = nothing in common."""
    import cv2

    return float(cv2.compareHist(a, b, cv2.HISTCMP_BHATTACHARYYA))


class SharedSignature:
    """The followed person's signature, set by one reader and awaited by the others."""

    def __init__(self):
        self._event = threading.Event()
        self._value: np.ndarray | None = None

    def set(self, value: np.ndarray | None) -> None:
        if not self._event.is_set():
            self._value = value
            self._event.set()

    def get(self, timeout: float | None = None) -> np.ndarray | None:
        """The signature; None if there is none (yet, after ``timeout`` seconds)."""
        self._event.wait(timeout)
        return self._value
