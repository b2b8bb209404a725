"""The 2D pose result: every tracked person's keypoints in pixels on the video's frame timeline.

:class:`Pose2D` holds the frame indices and times of the video (or of the frames that were
processed), and one :class:`~opensim_bridge.timeseries.KeypointSeries` per person id (2D, units
"px", with confidence), all on that same timeline: NaN coordinates and confidence 0 where the
person is absent. It also records the keypoint layout, the video size *after* rotation, the
rotation that was applied, the source video, the model that produced the keypoints and the
selected subject id (``None`` until a subject is chosen). All tracks are kept so a user can pick
another person without rerunning the detector.

File format (``pose2d.npz`` + ``pose2d.json``)
----------------------------------------------
``pose2d.npz`` is a NumPy ``.npz`` archive (zip, compressed) of plain arrays, readable with
``np.load(path, allow_pickle=False)`` - no pickled objects:

============== ================= ============================================================
name           dtype, shape      meaning
============== ================= ============================================================
``header``     str, ()           JSON text, see below
``frames``     int64, (n,)       frame index in the video (0 = first decoded frame)
``time``       float64, (n,)     frame time in seconds, strictly increasing (variable rate kept)
``person_ids`` int64, (P,)       track ids, unique
``keypoints``  float32, (P,n,K,2) x, y in pixels of the upright frame (origin top-left, y down);
                                 NaN where the person or keypoint is missing
``confidence`` float32, (P,n,K)  detector confidence in [0, 1]; 0 where missing
============== ================= ============================================================

``header`` fields: ``format`` ("kinevid-pose2d"), ``version`` (1), ``layout`` (a name from
:mod:`inference.layouts`), ``keypoint_names`` (canonical names, K of them, in the array order),
``units`` ("px"), ``video_size`` ([width, height] after rotation), ``rotation`` (degrees
counter-clockwise applied to the decoded frames), ``source`` (video path or null), ``model``
(detector/model name or null), ``subject`` (selected person id or null), ``extra`` (free-form
JSON object for provenance).

``pose2d.json`` beside it repeats the header and describes each array (dtype, shape, meaning) so
the file can be understood without this code; the ``.npz`` header is authoritative when reading.
Both files are written atomically.
"""
from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from opensim_bridge.atomic import atomic_write
from opensim_bridge.errors import InputError
from opensim_bridge.timeseries import KeypointSeries

from .layouts import convert, get_layout

FORMAT_NAME = "kinevid-pose2d"
FORMAT_VERSION = 1

_ARRAY_DOC = {
    "frames": ("int64", "(n,)", "frame index in the video"),
    "time": ("float64", "(n,)", "frame time in seconds, strictly increasing"),
    "person_ids": ("int64", "(P,)", "track ids"),
    "keypoints": ("float32", "(P, n, K, 2)",
                  "x, y in pixels of the upright frame, origin top-left, y down; NaN = missing"),
    "confidence": ("float32", "(P, n, K)", "confidence in [0, 1]; 0 = missing"),
}


class Pose2D:
    """2D keypoint tracks of all persons in a video, on one frame timeline."""

    def __init__(self, frames: Sequence[int] | np.ndarray, time: Sequence[float] | np.ndarray,
                 tracks: Mapping[int, KeypointSeries], layout: str,
                 video_size: tuple[int, int] | None = None, rotation: int = 0,
                 source: str | os.PathLike | None = None, model: str | None = None,
                 subject: int | None = None, extra: dict | None = None):
        self.source = None if source is None else os.fspath(source)
        self.layout = get_layout(layout).name
        names = get_layout(self.layout).names
        self.frames = np.asarray(frames, dtype=np.int64)
        self.time = np.asarray(time, dtype=np.float64)
        if self.frames.ndim != 1 or self.frames.shape != self.time.shape:
            self._fail(f"frames {self.frames.shape} and time {self.time.shape} must be 1-D and equal")
        if self.frames.size > 1 and np.any(np.diff(self.frames) <= 0):
            self._fail("frame indices must be strictly increasing")
        self.tracks: dict[int, KeypointSeries] = {}
        for pid, series in tracks.items():
            if series.names != names:
                self._fail(f"track {pid}: keypoint names do not match layout {self.layout}")
            if series.dim != 2 or series.units != "px":
                self._fail(f"track {pid}: expected 2D keypoints in px, got {series.dim}D {series.units}")
            if len(series) != len(self.time) or not np.array_equal(series.time, self.time):
                self._fail(f"track {pid}: its times differ from the frame timeline")
            self.tracks[int(pid)] = series
        self.video_size = None if video_size is None else (int(video_size[0]), int(video_size[1]))
        self.rotation = int(rotation) % 360
        self.model = model
        if subject is not None and int(subject) not in self.tracks:
            self._fail(f"selected subject {subject} is not one of the tracks {sorted(self.tracks)}")
        self.subject = None if subject is None else int(subject)
        self.extra = dict(extra or {})

    def _fail(self, problem: str):
        raise InputError(problem, self.source)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(cls, frames, time, person_ids: Iterable[int], keypoints: np.ndarray,
                    confidence: np.ndarray | None, layout: str, **meta) -> Pose2D:
        """Build from stacked arrays: keypoints (P, n, K, 2) px, confidence (P, n, K) or None
        (None means 1 where a keypoint exists). Confidence is forced to 0 where a point is NaN."""
        source = meta.get("source")
        kp = np.asarray(keypoints, dtype=np.float64)
        ids = [int(i) for i in person_ids]
        names = get_layout(layout).names
        time = np.asarray(time, dtype=np.float64)
        if kp.ndim != 4 or kp.shape[0] != len(ids) or kp.shape[1] != len(time) or kp.shape[2:] != (len(names), 2):
            raise InputError(f"keypoints have shape {kp.shape}, expected ({len(ids)}, {len(time)}, "
                             f"{len(names)}, 2) for layout {get_layout(layout).name}", source)
        if len(set(ids)) != len(ids):
            raise InputError(f"person ids are not unique: {ids}", source)
        valid = ~np.isnan(kp).any(axis=3)
        if confidence is None:
            conf = valid.astype(np.float64)
        else:
            conf = np.asarray(confidence, dtype=np.float64)
            if conf.shape != kp.shape[:3]:
                raise InputError(f"confidence has shape {conf.shape}, expected {kp.shape[:3]}", source)
            conf = np.where(valid, np.nan_to_num(conf, nan=0.0), 0.0)
        kp = np.where(valid[..., None], kp, np.nan)  # a point is missing as a whole
        tracks = {pid: KeypointSeries(time, names, kp[p], units="px", confidence=conf[p], source=source)
                  for p, pid in enumerate(ids)}
        return cls(frames, time, tracks, layout, **meta)

    @classmethod
    def from_detections(cls, frames, time, detections: Sequence[np.ndarray], layout: str,
                        ids: Sequence[Sequence[int]] | None = None, **meta) -> Pose2D:
        """Build from per-frame detections: ``detections[t]`` is (P_t, K, 3) (x, y, confidence).

        With ``ids`` (one id per detection, per frame) the detections are tracks already;
        without, detection p of every frame becomes provisional track p (detector order) - a
        tracker is expected to re-link them. Points with confidence 0 are treated as missing
        (OpenPose writes 0, 0, 0 for them)."""
        n = len(detections)
        K = get_layout(layout).n
        if ids is None:
            ids = [list(range(len(d))) for d in detections]
        all_ids = sorted({int(i) for frame_ids in ids for i in frame_ids})
        slot = {pid: p for p, pid in enumerate(all_ids)}
        kp = np.full((len(all_ids), n, K, 2), np.nan)
        conf = np.zeros((len(all_ids), n, K))
        for t, (det, frame_ids) in enumerate(zip(detections, ids)):
            det = np.asarray(det, dtype=np.float64).reshape(-1, K, 3)
            if len(frame_ids) != len(det):
                raise InputError(f"frame {t}: {len(det)} detections but {len(frame_ids)} ids", meta.get("source"))
            if len(set(frame_ids)) != len(frame_ids):
                raise InputError(f"frame {t}: person id repeated in {list(frame_ids)}", meta.get("source"))
            for d, pid in zip(det, frame_ids):
                p = slot[int(pid)]
                ok = (d[:, 2] > 0) & np.isfinite(d[:, :2]).all(axis=1)
                kp[p, t][ok] = d[ok, :2]
                conf[p, t][ok] = np.clip(d[ok, 2], 0.0, 1.0)
        return cls.from_arrays(frames, time, all_ids, kp, conf, layout, **meta)

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.time)

    @property
    def n_frames(self) -> int:
        return len(self.time)

    @property
    def person_ids(self) -> list[int]:
        return sorted(self.tracks)

    @property
    def keypoint_names(self) -> tuple[str, ...]:
        return get_layout(self.layout).names

    def keypoints(self) -> np.ndarray:
        """(P, n, K, 2) in the order of :attr:`person_ids`."""
        K = len(self.keypoint_names)
        if not self.tracks:
            return np.zeros((0, len(self), K, 2))
        return np.stack([self.tracks[i].data for i in self.person_ids])

    def confidence(self) -> np.ndarray:
        """(P, n, K) in the order of :attr:`person_ids`."""
        if not self.tracks:
            return np.zeros((0, len(self), len(self.keypoint_names)))
        return np.stack([self.tracks[i].weights() for i in self.person_ids])

    def present(self) -> np.ndarray:
        """(P, n) bool: the person has at least one keypoint in the frame."""
        return (~np.isnan(self.keypoints()).any(axis=3)).any(axis=2)

    def by_frame(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per frame: (ids (P_t,), keypoints (P_t, K, 3) as x, y, confidence) of the persons
        present in it - the form trackers and per-frame drawing want."""
        ids = np.asarray(self.person_ids, dtype=np.int64)
        kp, conf, pres = self.keypoints(), self.confidence(), self.present()
        out = []
        for t in range(len(self)):
            sel = pres[:, t]
            out.append((ids[sel], np.concatenate([kp[sel, t], conf[sel, t, :, None]], axis=2)))
        return out

    def subject_series(self) -> KeypointSeries:
        """The selected subject's track (error if none is selected)."""
        if self.subject is None:
            self._fail("no subject selected in this 2D result")
        return self.tracks[self.subject]

    def with_subject(self, person_id: int | None) -> Pose2D:
        return self._replace(subject=person_id)

    def to_layout(self, layout: str) -> Pose2D:
        """The same tracks re-expressed in another keypoint layout (see :func:`layouts.convert`)."""
        dst = get_layout(layout).name
        kp, conf = convert(self.keypoints(), self.confidence(), self.layout, dst)
        return Pose2D.from_arrays(self.frames, self.time, self.person_ids, kp, conf, dst,
                                  **self._meta())

    def _meta(self) -> dict:
        return {"video_size": self.video_size, "rotation": self.rotation, "source": self.source,
                "model": self.model, "subject": self.subject, "extra": self.extra}

    def _replace(self, **changes) -> Pose2D:
        meta = self._meta()
        meta.update(changes)
        return Pose2D(self.frames, self.time, self.tracks, self.layout, **meta)

    def header(self) -> dict:
        return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "layout": self.layout,
                "keypoint_names": list(self.keypoint_names), "units": "px",
                "video_size": None if self.video_size is None else list(self.video_size),
                "rotation": self.rotation, "source": self.source, "model": self.model,
                "subject": self.subject, "extra": self.extra}

    def __repr__(self) -> str:
        span = f"{self.time[0]:.3f}-{self.time[-1]:.3f} s" if len(self) else "empty"
        return (f"Pose2D({len(self)} frames, {span}, {len(self.tracks)} persons, {self.layout}, "
                f"video {self.video_size}, subject {self.subject})")

    # ------------------------------------------------------------------ files
    def write(self, path: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``path`` (.npz) and its ``.json`` sidecar atomically; returns both paths."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        header = self.header()
        arrays = {
            "header": np.array(json.dumps(header)),
            "frames": self.frames.astype(np.int64),
            "time": self.time.astype(np.float64),
            "person_ids": np.asarray(self.person_ids, dtype=np.int64),
            "keypoints": self.keypoints().astype(np.float32),
            "confidence": self.confidence().astype(np.float32),
        }
        sidecar = path.with_suffix(".json")
        doc = dict(header)
        doc["data_file"] = path.name
        doc["n_frames"] = len(self)
        doc["person_ids"] = self.person_ids
        doc["arrays"] = {k: {"dtype": d, "shape": s, "meaning": m} for k, (d, s, m) in _ARRAY_DOC.items()}
        doc["description"] = ("2D keypoints per person; read with numpy.load(allow_pickle=False). "
                              "See inference/pose2d.py for the format.")
        # Everything is serialised before the first file is touched, so a bad value cannot
        # leave a new .npz beside an old .json.
        sidecar_text = json.dumps(doc, indent=2) + "\n"
        with atomic_write(path, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        with atomic_write(sidecar, "w") as fh:
            fh.write(sidecar_text)
        return path, sidecar


def read_pose2d(path: str | os.PathLike) -> Pose2D:
    """Read and validate a ``pose2d.npz``; any defect raises InputError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise InputError(f"not a readable pose2d .npz file: {exc}", path) from exc
    missing = [k for k in ("header", *_ARRAY_DOC) if k not in arrays]
    if missing:
        raise InputError(f"missing arrays: {', '.join(missing)}", path)
    try:
        header = json.loads(str(arrays["header"][()]))
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise InputError(f"header is not valid JSON: {exc}", path) from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise InputError(f"not a {FORMAT_NAME} file (format field {header.get('format') if isinstance(header, dict) else None!r})", path)
    if header.get("version") != FORMAT_VERSION:
        raise InputError(f"unsupported version {header.get('version')!r} (this reader knows {FORMAT_VERSION})", path)
    try:
        layout = get_layout(header["layout"])
    except (KeyError, ValueError) as exc:
        raise InputError(f"bad layout in header: {exc}", path) from exc
    if list(header.get("keypoint_names", [])) != list(layout.names):
        raise InputError(f"keypoint names in the header do not match layout {layout.name}", path)
    for k, (dtype, _, _) in _ARRAY_DOC.items():
        kind = np.dtype(dtype).kind
        if arrays[k].dtype.kind != kind and not (kind == "f" and arrays[k].dtype.kind == "f"):
            raise InputError(f"array {k} has dtype {arrays[k].dtype}, expected {dtype}", path)
    kp, conf = arrays["keypoints"], arrays["confidence"]
    if kp.ndim != 4 or conf.shape != kp.shape[:3]:
        raise InputError(f"keypoints {kp.shape} and confidence {conf.shape} are inconsistent", path)
    vs = header.get("video_size")
    if vs is not None and (not isinstance(vs, list) or len(vs) != 2):
        raise InputError(f"video_size must be [width, height], got {vs!r}", path)
    try:
        # KeypointSeries validates times, confidences and shapes; report against this file.
        pose = Pose2D.from_arrays(arrays["frames"], arrays["time"], arrays["person_ids"].tolist(),
                                  kp, conf, layout.name, video_size=vs,
                                  rotation=int(header.get("rotation") or 0), source=str(path),
                                  model=header.get("model"), subject=header.get("subject"),
                                  extra=header.get("extra") or {})
    except InputError as exc:
        raise InputError(exc.problem, path) from exc
    # The source video path is provenance, kept apart from the file being read.
    pose.source = header.get("source")
    return pose
