"""How 2D keypoints become a lifter's input: the one definition training and inference share.

Two normalisations (a lifter's ``normalisation`` field names the one it was trained with):

``screen_width`` (VideoPose3D): pixels -> ``x / w * 2 - 1``, ``y / w * 2 - h / w``, per frame.
    The network sees where the person is and how big they are in the image, mixed together:
    a tall person far away and a short one close look alike except in size, and the size of
    a person in the image varies tenfold over ordinary camera set-ups, so much of the network's
    capacity goes into undoing the framing.

``person_window`` (kinevid's lifter): each receptive-field window is normalised on its own.
    Keypoints are taken relative to the 2D root (mid-hip) of the window's centre frame and
    divided by the window's 2D size ``s`` (median over the window's frames of the RMS distance
    of the keypoints from that frame's root: robust to a jumping joint and to a single bad
    frame), so the pose arrives framed the same whatever the camera distance or resolution;
    the motion of the root inside the window is kept. What the framing says about perspective
    is not thrown away but given apart, as one extra input row appended after the keypoints:
    (root x, root y in ``screen_width`` coordinates, ``10 s / w``), confidence slot holding the
    size. Under a left/right image flip the row's x negates like every keypoint's x, so the
    usual flip test stays exact.

With ``person_window`` a model predicts the 3D pose in units of the subject's height
(``output_units = "height"``); inference multiplies by the height the user gives. Body size is
then never guessed from the image, where it cannot be told apart from distance.
"""
from __future__ import annotations

import numpy as np

SCREEN_WIDTH = "screen_width"
PERSON_WINDOW = "person_window"
NORMALISATIONS = (SCREEN_WIDTH, PERSON_WINDOW)
SIZE_GAIN = 10.0        # 10 s / w is of order 1 for a person filling a tenth to half of the width


def extra_rows(normalisation: str) -> int:
    """Input rows a normalisation adds after the keypoints (the context row)."""
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"unknown lifter input normalisation {normalisation!r} "
                         f"(known: {', '.join(NORMALISATIONS)})")
    return 1 if normalisation == PERSON_WINDOW else 0


def screen_width(xy: np.ndarray, w, h) -> np.ndarray:
    """Pixels (B, ..., 2) -> VideoPose3D screen coordinates; ``w``, ``h`` scalars or (B,)."""
    xy = np.asarray(xy, dtype=np.float64)
    w, h = np.asarray(w, float), np.asarray(h, float)
    if w.ndim or h.ndim:   # one image size per batch item
        shp = (xy.shape[0],) + (1,) * (xy.ndim - 2)
        w = np.broadcast_to(w, (xy.shape[0],)).reshape(shp)
        h = np.broadcast_to(h, (xy.shape[0],)).reshape(shp)
    return np.stack([xy[..., 0] / w * 2 - 1, xy[..., 1] / w * 2 - h / w], axis=-1)


def window_size(xy: np.ndarray, root_index: int) -> np.ndarray:
    """(B,) 2D size of each window of filled pixels (B, T, J, 2): the median over frames of
    the RMS distance of the keypoints from the frame's root."""
    rel = xy - xy[:, :, root_index: root_index + 1]
    rms = np.sqrt(np.mean(np.sum(rel ** 2, axis=-1), axis=-1))       # (B, T)
    return np.median(rms, axis=1)


def person_window(xy: np.ndarray, conf: np.ndarray, w, h, root_index: int) -> np.ndarray:
    """Filled pixels (B, T, J, 2) and confidences (B, T, J) -> (B, T, J + 1, 3) float32."""
    xy = np.asarray(xy, dtype=np.float64)
    B, T, J, _ = xy.shape
    w = np.broadcast_to(np.asarray(w, float), (B,))
    h = np.broadcast_to(np.asarray(h, float), (B,))
    root = xy[:, T // 2, root_index]                                  # (B, 2)
    # a degenerate window (every keypoint on one pixel) must not divide by zero
    s = np.maximum(window_size(xy, root_index), 1e-4 * w)
    norm = (xy - root[:, None, None, :]) / s[:, None, None, None]
    ctx_xy = screen_width(root[:, None, :], w, h)[:, 0]               # (B, 2)
    ctx = np.concatenate([ctx_xy, (SIZE_GAIN * s / w)[:, None]], axis=-1)
    out = np.empty((B, T, J + 1, 3), np.float32)
    out[:, :, :J, :2] = norm
    out[:, :, :J, 2] = conf
    out[:, :, J] = ctx[:, None, :]
    return out
