"""One video -> :class:`~inference.pose2d.Pose2D`: choose a backend, detect every person in
every frame, link them into tracks, choose the subject.

Backends (``pose=``):

* ``blazepose``: MediaPipe BlazePose, complexity 1 (shipped in the mediapipe wheel), several
  persons through :class:`~inference.blazepose.MultiPersonBlazePose`; layout BlazePose-33.
* ``vitpose-s|b|l|h``: ViTPose top-down on the person boxes that BlazePose finds (no extra
  detector download); layout of the checkpoint (COCO-17 or COCO-WholeBody-133). Needs the
  weights in kinevid's cache (``kinevid weights fetch|import``): the COCO checkpoint of that
  size is preferred, then its simple-head and whole-body variants.
* ``auto``: ViTPose when some ViTPose weights are cached (on a GPU the largest cached size, on
  the CPU the smallest, for speed), else BlazePose. :attr:`BackendChoice.reason` says why.

All tracks are kept in the result (``Pose2D.tracks``); ``subject`` is the chosen one (``person``
or :func:`~inference.tracking.select_subject`), so another person can be chosen later with
``Pose2D.with_subject`` without running the video again.
"""
from __future__ import annotations

import dataclasses
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from opensim_bridge.errors import InputError, KinevidError

from .blazepose import LAYOUT as BLAZEPOSE_LAYOUT
from .appearance import SharedSignature
from .config import POSE_CHOICES
from .blazepose import MultiPersonBlazePose, _iou, keypoint_box
from .layouts import get_layout
from .pose2d import Pose2D
from .tracking import (
    Tracker,
    fix_left_right_swaps,
    keypoint_boxes,
    select_subject,
    subject_scores,
)
from .video import open_video

__all__ = ["POSE_CHOICES", "BackendChoice", "estimate_pose2d", "prefetch", "resolve_backend"]

_SIZES = ("s", "b", "l", "h")


@dataclasses.dataclass(frozen=True)
class BackendChoice:
    backend: str                 # "blazepose" | "vitpose"
    weights: str | None          # registry name of the ViTPose weights
    reason: str

    @property
    def label(self) -> str:
        return self.weights if self.weights else "blazepose (mediapipe, complexity 1)"


def _cached_vitpose(size: str, cache) -> str | None:
    from models.checkpoints import REGISTRY, cached_path

    for name in (f"vitpose-{size}-coco", f"vitpose-{size}-simple-coco", f"vitpose-{size}-wholebody"):
        if name in REGISTRY and cached_path(name, cache, verify=False) is not None:
            return name
    return None


def resolve_backend(pose: str = "auto", cache: str | os.PathLike | None = None,
                    gpu: bool | None = None) -> BackendChoice:
    """Which backend ``pose`` means on this machine (see the module documentation)."""
    if pose not in POSE_CHOICES:
        raise InputError(f"unknown pose backend {pose!r}; choose one of {', '.join(POSE_CHOICES)}")
    if pose == "blazepose":
        return BackendChoice("blazepose", None, "requested")
    if pose.startswith("vitpose-"):
        size = pose.split("-", 1)[1]
        name = _cached_vitpose(size, cache)
        if name is None:
            from models.checkpoints import cache_dir

            raise KinevidError(f"no ViTPose-{size.upper()} weights in the cache {cache_dir(cache)}: run "
                               f"`kinevid weights fetch vitpose-{size}-coco` (or `kinevid weights "
                               f"import FILE` on an offline machine), or use --pose blazepose")
        return BackendChoice("vitpose", name, "requested")
    cached = {size: _cached_vitpose(size, cache) for size in _SIZES}
    if not any(cached.values()):
        # decided without importing torch (a second or two before the video is even opened)
        return BackendChoice("blazepose", None, "auto: no ViTPose weights in the cache")
    if gpu is None:
        try:
            import torch
            gpu = bool(torch.cuda.is_available())
        except ImportError:  # pragma: no cover - torch is a dependency
            gpu = False
    for size in (reversed(_SIZES) if gpu else _SIZES):
        name = cached[size]
        if name is not None:
            return BackendChoice("vitpose", name, f"auto: ViTPose weights {name} are cached "
                                 f"({'GPU: largest' if gpu else 'CPU: smallest'} cached size)")
    raise AssertionError("unreachable")  # pragma: no cover


def prefetch(iterable: Iterable, depth: int = 4) -> Iterator:
    """Iterate ``iterable`` in a background thread, at most ``depth`` items ahead.

    FFmpeg decodes (and converts to RGB) without holding the GIL, so decoding the next frames
    overlaps the pose model on the current one: about +30 % frames per second on 2 cores. The
    bounded queue keeps memory at a few frames. An exception in the producer is re-raised here.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in iterable:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put((done, exc))
            return
        q.put((done, None))

    worker = threading.Thread(target=produce, name="kinevid-decode", daemon=True)
    worker.start()
    try:
        while True:
            item, exc = q.get()
            if item is done:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        # The consumer stopped early (max_frames, an error): let the producer end.
        stop.set()
        while worker.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)


class _ViTPoseOnBoxes:
    """ViTPose top-down on boxes taken from BlazePose's persons of the same frame."""

    def __init__(self, weights: str, cache, device: str):
        from models.checkpoints import load_checkpoint
        from models.topdown import TopDownPredictor, select_device

        dev = select_device(device)
        model, spec = load_checkpoint(weights, cache=cache, device=dev)
        self.layout = get_layout(spec.layout).name
        self.predictor = TopDownPredictor.from_spec(model, spec, flip_pairs=get_layout(self.layout).flip_pairs,
                                                    device=dev)
        self.spec = spec

    def __call__(self, image: np.ndarray, people: list[np.ndarray]) -> list[np.ndarray]:
        if not people:
            return []
        boxes = keypoint_boxes(np.stack(people), 0.3)
        # BlazePose's landmarks stop at the eyes and the feet: grow the box for the head top.
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        boxes = boxes + np.stack([-0.05 * w, -0.12 * h, 0.05 * w, 0.04 * h], axis=1)
        kp, scores = self.predictor.predict(image, boxes)
        return [np.concatenate([kp[i], np.clip(scores[i], 0, 1)[:, None]], axis=1) for i in range(len(kp))]


def _frame_chunks(source, step: int, max_frames: int | None, workers: int, min_chunk: int,
                  lead: int) -> list[tuple[dict, int]] | None:
    """``(frames() arguments, first own frame index)`` for ``workers`` readers of consecutive
    parts of the video, or None when it is not worth splitting (an image folder, a short clip,
    one worker). Every reader after the first starts ``lead`` estimated frames early, so its
    person can be compared with the one its predecessor ends with."""
    if workers <= 1 or source.info.is_image_folder:
        return None
    times = source.timestamps()
    kept = np.arange(0, len(times), step)
    if max_frames is not None:
        kept = kept[:max_frames]
    n = min(workers, len(kept) // max(1, min_chunk))
    if n <= 1:
        return None
    out = []
    for part in np.array_split(np.arange(len(kept)), n):
        first = max(0, part[0] - (lead if part[0] else 0))
        out.append((dict(step=step, start=float(times[kept[first]]),
                         end=float(times[kept[part[-1]]]), seek=True), int(kept[part[0]])))
    return out


def _same_person(before: list, lead: list) -> bool:
    """Whether a reader's lead frames follow the person its predecessor followed over the same
    frames (box overlap in most frames where both saw someone; nobody in both counts as same)."""
    seen = {index: dets for index, _, dets in before}
    votes = []
    for index, _, dets in lead:
        other = seen.get(index)
        if other is None:
            continue
        if not len(dets) and not len(other):
            votes.append(True)
        elif len(dets) and len(other):
            votes.append(_iou(keypoint_box(dets[0], 0.3), keypoint_box(other[0], 0.3)) > 0.5)
        else:
            votes.append(False)
    return not votes or sum(votes) > len(votes) / 2


def _people_in(source, frames_kw: dict, max_people: int, detect_every: int, candidates: int,
               vit, tick, seed: np.ndarray | None = None, reference=None, on_reference=None):
    """Every frame's persons (as the pose model gives them) over one stretch of the video;
    ``seed``: keypoints of a person to follow from the first frame on; ``reference`` /
    ``on_reference``: the followed person's look, see :class:`MultiPersonBlazePose`."""
    out = []
    with MultiPersonBlazePose(max_people=max_people, detect_every=detect_every,
                              candidates=candidates, reference=reference,
                              on_reference=on_reference) as finder:
        if seed is not None:
            finder.follow(seed)
        for frame in prefetch(source.frames(**frames_kw)):
            people = finder.process(frame.image)
            out.append((frame.index, frame.time, vit(frame.image, people) if vit else people))
            tick()
        stats = dict(finder.stats)
    return out, stats


def estimate_pose2d(video: str | os.PathLike, pose: str = "auto", *, person: int | None = None,
                    max_frames: int | None = None, max_people: int = 4, detect_every_s: float = 0.33,
                    max_missed_s: float = 0.5, min_track_s: float = 0.1, device: str = "auto", cache: str | os.PathLike | None = None,
                    progress: Callable[[int, int], None] | None = None,
                    choice: BackendChoice | None = None, fix_swaps: bool = True,
                    step: int = 1, workers: int = 1, min_chunk: int = 30,
                    candidates: int = 3) -> Pose2D:
    """2D keypoints of every person in ``video`` (file or image folder), tracked, with the
    subject selected. ``person``: the track id to select (error if there is no such track).
    ``detect_every_s``: time between searches for new persons; ``max_missed_s``: how long a
    person may stay unseen and keep their id; ``min_track_s``: tracks seen for less time than
    this (and in fewer than 2 frames) are dropped as detector flukes, unless nothing else is left.
    ``fix_swaps``: undo runs of left/right label swaps (:func:`~inference.tracking.fix_left_right_swaps`).
    ``step``: estimate every ``step``-th frame only (a 60 fps video at 30 fps). ``workers``: with
    BlazePose, this many threads each follow the persons through one consecutive part of the video
    (at least ``min_chunk`` frames; MediaPipe and FFmpeg release the GIL); each part starts with
    a search for persons, and the tracker links the parts like any other frames.
    ``candidates``: with ``max_people=1``, persons a search looks at before following the one
    that looks like the subject (else the most prominent); ignored when several are followed,
    where every person found gets a slot."""
    choice = choice or resolve_backend(pose, cache)
    source = open_video(video)
    info = source.info
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    candidates = candidates if max_people == 1 else 1
    total = -(-info.n_frames // step) if info.n_frames else 0
    total = total if max_frames is None else min(max_frames, total or max_frames)
    vit = _ViTPoseOnBoxes(choice.weights, cache, device) if choice.backend == "vitpose" else None
    layout = vit.layout if vit else BLAZEPOSE_LAYOUT
    # Detection passes and track lifetimes are set in seconds so 30 and 240 fps clips behave alike.
    file_fps = info.fps if info.fps and np.isfinite(info.fps) and info.fps > 0 else 30.0
    fps = file_fps / step                      # rate of the frames estimated
    detect_every = max(1, int(round(detect_every_s * fps)))
    # The tracker counts in file frame indices.
    tracker = Tracker(max_missed=max(step, int(round(max_missed_s * file_fps))))
    t0 = time.perf_counter()
    lock, done = threading.Lock(), [0]

    def tick() -> None:
        with lock:
            done[0] += 1
            if progress is not None:
                progress(done[0], max(total, done[0]))

    # ViTPose runs on torch's own threads: several readers would only compete for the cores.
    lead = max(3, int(round(0.2 * fps)))
    chunks = None if vit else _frame_chunks(source, step, max_frames, workers, min_chunk, lead)
    reread = 0
    if chunks is None:
        found, stats = _people_in(source, dict(step=step, max_frames=max_frames), max_people,
                                  detect_every, candidates, vit, tick)
    else:
        from concurrent.futures import ThreadPoolExecutor

        # The first reader's first person is the subject; later readers choose, among the
        # persons they find, the one that looks like it (see inference.appearance).
        look = SharedSignature()

        def read(kw, seed=None, first=False):
            try:
                # one source for every reader: frames() opens its own decoder per call, and
                # the frame-time table the seeks need is read once
                return _people_in(source, kw, max_people, detect_every, candidates,
                                  vit, tick, seed, reference=None if first else
                                  (lambda: look.get(timeout=120.0)),
                                  on_reference=look.set if first else None)
            finally:
                if first:
                    look.set(None)   # nobody found in the whole part: do not keep others waiting

        with ThreadPoolExecutor(len(chunks), thread_name_prefix="kinevid-pose") as pool:
            parts = list(pool.map(lambda ic: read(ic[1][0], first=ic[0] == 0),
                                  enumerate(chunks)))
        found, stats = [], {}
        for (kw, first), (part, st) in zip(chunks, parts):
            lead_rows = [r for r in part if r[0] < first]
            body = [r for r in part if r[0] >= first]
            # Following one person, a reader may have picked another one than its predecessor
            # ended with: read its part again from that person (a rare, sequential cost).
            if max_people == 1 and found and not _same_person(found, lead_rows) \
                    and len(found[-1][2]):
                again = dict(kw, start=body[0][1] if body else kw["start"])
                body, st2 = read(again, seed=found[-1][2][0])
                reread += 1
                st = {k: st.get(k, 0) + st2.get(k, 0) for k in set(st) | set(st2)}
            found += body
            for key, v in st.items():
                stats[key] = stats.get(key, 0) + v
    frames, times, detections, ids = [], [], [], []
    n_kp = get_layout(layout).n
    for index, t, dets in found:
        frame_ids = tracker.update(dets, frame=index)
        keep = [i for i, pid in enumerate(frame_ids) if pid >= 0]
        frames.append(index)
        times.append(t)
        detections.append(np.array([dets[i] for i in keep]).reshape(len(keep), n_kp, 3))
        ids.append([frame_ids[i] for i in keep])
    wall = time.perf_counter() - t0
    if not frames:
        raise InputError("no frame could be read", video)
    meta = dict(video_size=(info.width, info.height), rotation=info.rotation, source=str(video),
                model=choice.weights or "blazepose-full")
    # Tracks seen in fewer frames than min_track_s (at least 2) are detector flukes: dropped.
    counts: dict[int, int] = {}
    for frame_ids in ids:
        for pid in frame_ids:
            counts[pid] = counts.get(pid, 0) + 1
    min_frames = max(2, int(np.ceil(min_track_s * fps)))
    short = {pid for pid, c in counts.items() if c < min_frames}
    if short and len(short) < len(counts):
        for t, frame_ids in enumerate(ids):
            keep = [i for i, pid in enumerate(frame_ids) if pid not in short]
            detections[t] = detections[t][keep]
            ids[t] = [frame_ids[i] for i in keep]
    result = Pose2D.from_detections(frames, times, detections, layout, ids=ids, **meta)
    n_swapped = 0
    if fix_swaps and result.person_ids:
        kp, conf = result.keypoints(), result.confidence()
        for row in range(kp.shape[0]):
            kp[row], conf[row], swapped = fix_left_right_swaps(kp[row], conf[row], layout,
                                                                max_gap=int(round(0.25 * fps)))
            n_swapped += int(swapped.sum())
        result = Pose2D.from_arrays(frames, times, result.person_ids, kp, conf, layout, **meta)
    scores = subject_scores(result.keypoints(), result.confidence()) if result.person_ids else np.zeros(0)
    if person is not None:
        if int(person) not in result.tracks:
            raise InputError(f"--person {person}: no such track; the tracks are "
                             f"{result.person_ids or 'none (nobody was found)'}", video)
        subject = int(person)
    else:
        subject = select_subject(result)
    extra = {
        "backend": choice.backend, "backend_reason": choice.reason, "weights": choice.weights,
        "tracked": True, "subject_rule": "given" if person is not None else
        "largest sum over frames of mean confidence x keypoint-box diagonal",
        "subject_scores": {str(pid): round(float(s), 3) for pid, s in zip(result.person_ids, scores)},
        "frames_with_subject": int(result.present()[result.person_ids.index(subject)].sum()) if subject is not None else 0,
        "left_right_swaps_fixed": n_swapped,
        "short_tracks_dropped": sorted(short) if short and len(short) < len(counts) else [],
        "detection_passes": stats["detection_passes"], "wall_s": round(wall, 3),
        "step": step, "readers": len(chunks) if chunks else 1, "parts_reread": reread,
        "fps": round(len(frames) / wall, 2) if wall > 0 else None,
    }
    return Pose2D(result.frames, result.time, result.tracks, layout, subject=subject, extra=extra, **meta)
