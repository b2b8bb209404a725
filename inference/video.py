"""Video and image-folder input: streamed, upright RGB frames with their real timestamps.

``open_video(path)`` accepts a video file (anything FFmpeg demuxes) or a folder of images and
returns a :class:`VideoSource`. Iterating it yields :class:`Frame` tuples ``(index, time, image)``
one at a time, so memory stays bounded whatever the length of the video: only the frame being
handed out (and FFmpeg's few reference frames) are alive.

* **Timestamps** come from each frame's ``pts * time_base`` minus the stream's start time, so the
  first frame is at about 0 s and variable-frame-rate phone videos keep their real, uneven
  times. A frame without a pts (raw streams) or with a time that does not increase gets
  ``previous + 1/fps``, because downstream time series must be strictly increasing.
* **Rotation**: phones store portrait video as landscape pixels plus a display matrix. FFmpeg
  exposes its rotation per frame (PyAV: ``VideoFrame.rotation``, degrees counter-clockwise; a
  writer sets it with ``VideoStream.set_display_rotation``). Frames are turned upright with
  ``np.rot90`` and ``width``/``height`` describe the upright frames; ``rotation`` records what
  was applied. Rotations that are not a multiple of 90 degrees are rounded, with a warning.
* **Damaged files**: a truncated or corrupt file yields the frames that could be decoded and
  then a :class:`TruncatedVideoWarning` saying at which frame and time decoding stopped. A file
  that FFmpeg cannot open, that has no video stream, or that has no decodable frame raises
  :class:`~opensim_bridge.errors.InputError` naming the file.
* **Image folders**: the image files of a folder, in natural order (``img2`` before ``img10``),
  decoded with PyAV's image demuxer (no extra dependency), at a given frame rate (default 30).
  All images must have the same size.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import warnings
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple, Self

import av
import numpy as np

from opensim_bridge.errors import InputError

#: File suffixes treated as images when a folder is given.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_FOLDER_FPS = 30.0


class TruncatedVideoWarning(UserWarning):
    """Decoding stopped before the end of the file; the frames before that were returned."""


class Frame(NamedTuple):
    """One decoded frame: its index in the file (0-based, counting every frame), time in
    seconds, and the upright image as an (H, W, 3) uint8 RGB array."""

    index: int
    time: float
    image: np.ndarray


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What is known about an input before decoding it all.

    ``width``/``height`` are those of the frames handed out (after rotation); ``coded_width``/
    ``coded_height`` those stored in the file. ``n_frames`` is the container's count when it has
    one, else ``duration * fps`` rounded (an estimate). ``fps`` is the average frame rate.
    """

    path: str
    width: int
    height: int
    coded_width: int
    coded_height: int
    fps: float
    n_frames: int
    duration: float
    codec: str
    rotation: int
    is_image_folder: bool = False


# (path, mtime, size, fps override) -> (VideoInfo, quarter turns, start pts) of probed files
_PROBED: dict = {}


def _natural_key(name: str):
    # Split digits out so "frame2" sorts before "frame10", as people number image sequences.
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def _quarter_turns(rotation: float, path: str) -> int:
    """Counter-clockwise quarter turns that make a frame with this display rotation upright."""
    if rotation is None or not math.isfinite(rotation):
        return 0
    k = round(rotation / 90.0)
    if abs(rotation - 90.0 * k) > 1.0:
        warnings.warn(f"{path}: display rotation {rotation:g} degrees is not a multiple of 90; "
                      f"rounded to {90 * k % 360}", stacklevel=3)
    return k % 4


def _upright(image: np.ndarray, k: int) -> np.ndarray:
    # np.rot90 turns the picture counter-clockwise as displayed (rows down), which is the
    # sense of FFmpeg's display rotation; contiguous so models and encoders can take it.
    return np.ascontiguousarray(np.rot90(image, k)) if k else image


class VideoSource:
    """A video file or an image folder, decoded on demand. Use :func:`open_video`.

    Each call to :meth:`frames` (or ``iter(source)``) starts a fresh decode, so a source can be
    read several times (e.g. a pose pass and then an overlay pass) without keeping frames.
    """

    def __init__(self, path: str | os.PathLike, fps: float | None = None, threads: bool = True):
        self.path = Path(path)
        self.threads = threads
        if not self.path.exists():
            raise InputError("file not found", self.path)
        if self.path.is_dir():
            self._images = self._list_images()
            self.info = self._probe_folder(DEFAULT_FOLDER_FPS if fps is None else float(fps))
        else:
            self._images = None
            # One run opens the same file several times (the frame step, the 2D stage, the
            # report); probing decodes its first frame (~55 ms for 1768x994 VP9): once per file.
            st = self.path.stat()
            key = (str(self.path.resolve()), st.st_mtime_ns, st.st_size, fps)
            cached = _PROBED.get(key)
            if cached is None:
                cached = _PROBED[key] = (self._probe_file(fps), self._k, self._start_pts)
            self.info, self._k, self._start_pts = cached

    # ------------------------------------------------------------------ probing
    def _open_container(self):
        try:
            return av.open(str(self.path))
        except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot open as a video (not a video, or damaged: a cut MP4 whose "
                             f"index is at its end cannot be read at all): {exc}", self.path) from exc

    def _probe_file(self, fps_override: float | None) -> VideoInfo:
        container = self._open_container()
        try:
            if not container.streams.video:
                raise InputError("no video stream in the file", self.path)
            stream = container.streams.video[0]
            first = None
            try:
                for first in container.decode(stream):
                    break
            except av.FFmpegError as exc:
                raise InputError(f"no frame could be decoded: {exc}", self.path) from exc
            if first is None:
                raise InputError("the video stream has no frames", self.path)
            rotation = first.rotation or 0
            k = _quarter_turns(rotation, str(self.path))
            coded_w, coded_h = first.width, first.height
            w, h = (coded_h, coded_w) if k % 2 else (coded_w, coded_h)
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(fps_override) if fps_override else (float(rate) if rate else float("nan"))
            tb = stream.time_base or Fraction(1, 1)
            if stream.duration:
                duration = float(stream.duration * tb)
            elif container.duration:
                duration = container.duration / 1e6  # AV_TIME_BASE is microseconds
            else:
                duration = float("nan")
            if stream.frames:
                n = int(stream.frames)
            elif math.isfinite(duration) and math.isfinite(fps):
                n = round(duration * fps)
            else:
                n = 0
            self._k = k
            self._start_pts = stream.start_time if stream.start_time is not None else (first.pts or 0)
            return VideoInfo(str(self.path), w, h, coded_w, coded_h, fps, n, duration,
                             stream.codec_context.name, (90 * k) % 360)
        finally:
            container.close()

    def _list_images(self) -> list[Path]:
        files = [p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise InputError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder", self.path)
        return sorted(files, key=lambda p: _natural_key(p.name))

    def _read_image(self, path: Path) -> np.ndarray:
        try:
            with av.open(str(path)) as container:
                frame = next(container.decode(video=0))
                k = _quarter_turns(frame.rotation or 0, str(path))
                return _upright(frame.to_ndarray(format="rgb24"), k)
        except (av.FFmpegError, StopIteration, IndexError, OSError) as exc:
            raise InputError(f"cannot read the image: {exc}", path) from exc

    def _probe_folder(self, fps: float) -> VideoInfo:
        if not (fps > 0 and math.isfinite(fps)):
            raise InputError(f"frame rate must be positive, got {fps}", self.path)
        img = self._read_image(self._images[0])
        h, w = img.shape[:2]
        self._k = 0
        n = len(self._images)
        return VideoInfo(str(self.path), w, h, w, h, fps, n, n / fps, "image", 0, True)

    # ------------------------------------------------------------------ reading
    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def frames(self, step: int = 1, max_frames: int | None = None, start: float | None = None,
               end: float | None = None, convert: bool = True, seek: bool = False
               ) -> Iterator[Frame]:
        """Yield frames one at a time.

        step: keep every ``step``-th frame (indices stay those of the file).
        max_frames: stop after yielding this many.
        start, end: keep frames with ``start <= time <= end`` (seconds). Earlier frames are
            decoded but not converted: FFmpeg can only seek to key frames, and decoding from the
            start keeps every index exact.
        seek: with ``start``, jump to the key frame before it instead of decoding from the first
            frame; indices then come from the packet times (:meth:`timestamps`), exact for a
            sound file. For readers that start mid-video (parallel pose estimation).
        convert: False yields ``image=None`` (decoding only: timing, counting, benchmarks).
        """
        if step < 1:
            raise ValueError(f"step must be >= 1, got {step}")
        if max_frames is not None and max_frames <= 0:
            return
        if seek and start is not None and start > 0 and self._images is None:
            gen = lambda: self._file_frames(seek_to=start)  # noqa: E731
        else:
            gen = self._folder_frames if self._images is not None else self._file_frames
        yielded = 0
        for index, time, make_image in gen():
            if end is not None and time > end + 1e-9:
                break
            if start is not None and time < start - 1e-9:
                continue
            if index % step:
                continue
            yield Frame(index, time, make_image() if convert else None)
            yielded += 1
            if max_frames is not None and yielded >= max_frames:
                break

    def _folder_frames(self):
        fps = self.info.fps
        for i, path in enumerate(self._images):
            def make(path=path):
                img = self._read_image(path)
                if img.shape[:2] != (self.info.height, self.info.width):
                    raise InputError(f"image is {img.shape[1]}x{img.shape[0]} but the first image "
                                     f"of the folder is {self.info.width}x{self.info.height}", path)
                return img
            yield i, i / fps, make

    def _file_frames(self, seek_to: float | None = None):
        container = self._open_container()
        try:
            stream = container.streams.video[0]
            if self.threads:
                # Frame + slice threading: several times faster on multi-core machines.
                stream.thread_type = "AUTO"
            tb = stream.time_base
            dt = 1.0 / self.info.fps if self.info.fps > 0 else 1.0 / 30.0
            index, last_t = 0, None
            k = self._k
            table = None
            if seek_to is not None and tb is not None:
                table = self.timestamps()
                # backward=True: the key frame at or before the target, so no frame is lost.
                container.seek(int(self._start_pts + seek_to / float(tb)), stream=stream,
                               backward=True, any_frame=False)
            try:
                for packet in container.demux(stream):
                    for frame in stream.decode(packet):
                        if table is not None:
                            if frame.pts is None:
                                raise InputError("cannot seek in this video: a frame has no "
                                                 "time stamp", self.path)
                            t = float((frame.pts - self._start_pts) * tb)
                            index = int(np.clip(np.searchsorted(table, t - 1e-6), 0,
                                                len(table) - 1))
                            last_t = t
                            yield index, t, (lambda f=frame: _upright(f.to_ndarray(format="rgb24"), k))
                            continue
                        if frame.pts is None or tb is None:
                            t = 0.0 if last_t is None else last_t + dt
                        else:
                            t = float((frame.pts - self._start_pts) * tb)
                            if last_t is not None and t <= last_t:
                                t = last_t + dt
                        last_t = t
                        yield index, t, (lambda f=frame: _upright(f.to_ndarray(format="rgb24"), k))
                        index += 1
            except av.FFmpegError as exc:
                where = (f"after frame {index - 1} ({last_t:.3f} s)" if index else "before the first frame")
                warnings.warn(f"{self.path}: decoding stopped {where}: {exc}", TruncatedVideoWarning,
                              stacklevel=3)
                return
            if table is not None:
                return  # a reader of part of the file: the whole-file checks do not apply
            # No error from FFmpeg does not mean the whole file was read: a cut file often just
            # ends. Compare with what the header announces (frame count, else duration).
            expected = self.info.n_frames if stream.frames else 0
            duration = self.info.duration
            short = ""
            if expected and index < expected:
                short = f"the file announces {expected} frames"
            elif (not expected and math.isfinite(duration) and last_t is not None
                  and last_t + max(3 * dt, 0.05 * duration) < duration):
                short = f"the file announces {duration:.3f} s"
            if short:
                where = f"after frame {index - 1} ({last_t:.3f} s)" if index else "before the first frame"
                warnings.warn(f"{self.path}: decoding stopped {where}; {short} (truncated file?)",
                              TruncatedVideoWarning, stacklevel=3)
        finally:
            container.close()

    def timestamps(self) -> np.ndarray:
        """Times (s) of every frame, read from the packets without decoding the pictures.

        Packets carry presentation times in decode order, so they are sorted; the result equals
        the times :meth:`frames` yields for a sound file (cheap way to build a frame timeline).
        Read once per source (read-only array): seeking readers of one source share it."""
        if getattr(self, "_table", None) is None:
            self._table = self._read_timestamps()
            self._table.setflags(write=False)
        return self._table

    def _read_timestamps(self) -> np.ndarray:
        if self._images is not None:
            return np.arange(len(self._images)) / self.info.fps
        container = self._open_container()
        pts: list[int] = []
        try:
            stream = container.streams.video[0]
            tb = float(stream.time_base)
            for packet in container.demux(stream):
                if packet.pts is not None and packet.size:
                    pts.append(packet.pts)
        except av.FFmpegError:
            pass  # a damaged tail: keep the times read so far
        finally:
            container.close()
        t = np.sort(np.asarray(pts, dtype=np.int64) - self._start_pts) * tb
        return t.astype(np.float64)

    def __repr__(self) -> str:
        i = self.info
        return (f"VideoSource({i.path!r}, {i.width}x{i.height}, {i.fps:.3g} fps, ~{i.n_frames} frames, "
                f"{i.codec}, rotation {i.rotation})")

    # Context-manager form for symmetry with files; nothing is held open between reads.
    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        return None


def open_video(path: str | os.PathLike, fps: float | None = None, threads: bool = True) -> VideoSource:
    """Open a video file or a folder of images.

    fps: for a folder, the frame rate of the images (default 30); for a file, overrides the
        reported average rate in :class:`VideoInfo` only (timestamps still come from the file).
    threads: let FFmpeg decode with several threads.
    """
    return VideoSource(path, fps=fps, threads=threads)
