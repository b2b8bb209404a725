"""Quality-control video: every tracked person's skeleton and id drawn on the video.

The video is decoded again frame by frame (:func:`~inference.video.open_video`) and encoded as
it goes, so memory stays bounded whatever the length. Encoding is H.264 (libx264, yuv420p,
CRF 23) when PyAV's FFmpeg has it, else MPEG-4 Part 2; the frame rate is the video's average,
with each frame stamped at its own time so variable-frame-rate input keeps its timing. The
output is written to a temporary file and renamed on success (no half-written video).

Drawing: the layout's skeleton edges (:mod:`inference.layouts`), keypoints with confidence
below ``min_conf`` left out, one colour per person id, the subject drawn thicker and labelled
``id N (subject)``.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from opensim_bridge.atomic import atomic_path

from .layouts import get_layout
from .pose2d import Pose2D
from .video import open_video

__all__ = ["draw_people", "pick_encoder", "write_overlay"]

# Distinct colours (RGB) for person ids, cycled.
_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
            (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


def pick_encoder() -> str:
    """libx264 when this FFmpeg build has it, else mpeg4 (always built in)."""
    for name in ("libx264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - PyAV raises different types per version for "unknown"
            continue
    raise RuntimeError("neither libx264 nor mpeg4 encoders are available in PyAV's FFmpeg")


def draw_people(image: np.ndarray, ids, people: np.ndarray, layout: str, subject: int | None = None,
                min_conf: float = 0.3) -> np.ndarray:
    """Draw (P, K, 3) poses (x, y, confidence) with their ids onto an RGB image in place."""
    import cv2

    lay = get_layout(layout)
    h, w = image.shape[:2]
    base = max(1, int(round(max(h, w) / 500)))
    for pid, kp in zip(ids, people):
        colour = _PALETTE[int(pid) % len(_PALETTE)]
        thick = base * 2 if pid == subject else base
        ok = np.isfinite(kp[:, :2]).all(axis=1) & (kp[:, 2] >= min_conf)
        pts = np.nan_to_num(kp[:, :2]).round().astype(np.int32)
        for a, b in lay.edges:
            if ok[a] and ok[b]:
                cv2.line(image, tuple(pts[a]), tuple(pts[b]), colour, thick, cv2.LINE_AA)
        for k in np.flatnonzero(ok):
            cv2.circle(image, tuple(pts[k]), thick + 1, (255, 255, 255), -1, cv2.LINE_AA)
        if ok.any():
            top = pts[ok][np.argmin(pts[ok][:, 1])]
            label = f"id {int(pid)}" + (" (subject)" if pid == subject else "")
            org = (int(top[0]) - 20 * base, max(15 * base, int(top[1]) - 10 * base))
            cv2.putText(image, label, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * base, (0, 0, 0),
                        3 * base, cv2.LINE_AA)
            cv2.putText(image, label, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * base, colour,
                        base, cv2.LINE_AA)
    return image


def write_overlay(video: str | os.PathLike, pose: Pose2D, out_path: str | os.PathLike,
                  progress: Callable[[int, int], None] | None = None, min_conf: float = 0.3,
                  codec: str | None = None, max_side: int | None = 1280) -> Path:
    """Write ``out_path`` (.mp4): the frames of ``pose`` with its persons drawn.

    Frames larger than ``max_side`` are halved (once or more) before drawing: a quality-control
    video needs no 1080p detail, and a quarter of the pixels makes encoding about 3x faster.
    Exact halvings keep OpenCV's area resize cheap. ``None`` keeps the full size."""
    import cv2

    out_path = Path(out_path)
    source = open_video(video)
    info = source.info
    codec = codec or pick_encoder()
    per_frame = pose.by_frame()
    row = {int(f): i for i, f in enumerate(pose.frames)}
    last = int(pose.frames[-1]) if len(pose) else -1
    rate = Fraction(info.fps).limit_denominator(1001) if info.fps and info.fps > 0 else Fraction(30)
    # Even sizes: yuv420p subsamples chroma by 2 in each direction.
    shrink = 1
    while max_side and max(info.width, info.height) / shrink > max_side:
        shrink *= 2
    w, h = info.width // shrink, info.height // shrink
    w, h = w - w % 2, h - h % 2
    with atomic_path(out_path) as tmp, av.open(str(tmp), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "23", "preset": "veryfast"}
        else:
            stream.bit_rate = 8_000_000
        tb = Fraction(1, 90000)
        stream.codec_context.time_base = tb
        last_pts = -1
        done = 0
        for frame in source.frames():
            if frame.index > last:
                break
            i = row.get(frame.index)
            if i is None:
                continue  # a frame the pose run skipped
            ids, people = per_frame[i]
            img = frame.image
            if shrink > 1:
                img = cv2.resize(img, (img.shape[1] // shrink, img.shape[0] // shrink),
                                 interpolation=cv2.INTER_AREA)
                people = people.copy()
                people[..., :2] /= shrink
            img = np.ascontiguousarray(img[:h, :w])
            draw_people(img, ids, people, pose.layout, pose.subject, min_conf)
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            pts = max(int(round(frame.time / tb)), last_pts + 1)
            vf.pts, vf.time_base = pts, tb
            last_pts = pts
            for packet in stream.encode(vf):
                container.mux(packet)
            done += 1
            if progress is not None:
                progress(done, len(pose))
        for packet in stream.encode():
            container.mux(packet)
    return out_path
