"""Read other tools' 2D keypoints into :class:`~inference.pose2d.Pose2D`, so labs can bring
their own detector.

Supported:

* **OpenPose JSON** (:func:`read_openpose`): a folder with one JSON file per frame
  (``<name>_<frame>_keypoints.json`` from OpenPose, ``cam01.0000.json`` from Pose2Sim), each
  ``{"people": [{"person_id": [-1], "pose_keypoints_2d": [x, y, c, ...]}, ...]}``. BODY_25 and
  BODY_25B both have 25 points, so the layout is recognised from the geometry (see
  :func:`guess_openpose_layout`) unless given. Undetected points are ``0, 0, 0`` -> missing.
* **MMPose predictions** (:func:`read_mmpose`): the ``--save-predictions`` file of mmpose 1.x's
  ``topdown_demo_with_mmdet.py`` (``{"meta_info": ..., "instance_info": [{"frame_id": 1,
  "instances": [{"keypoints": [[x, y], ...], "keypoint_scores": [...], "bbox": [[x1, y1, x2,
  y2]], "bbox_score": s}]}]}``; its frame ids start at 1), the MMPoseInferencer form (a list of
  ``{"frame_id", "instances"}``, or for one image a list of instances), and the older mmpose 0.x
  form (instances with ``"keypoints": [[x, y, score], ...]`` and maybe ``"track_id"``).
* **COCO results JSON** (:func:`read_coco_results`): ``[{"image_id", "category_id",
  "keypoints": [x, y, s] * K, "score"}, ...]``. Images become frames in order of ``image_id``
  (image ids without any detection are unknown to the file and therefore absent).
* **DeepLabCut CSV** (:func:`read_deeplabcut`): three header rows (scorer / bodyparts / coords =
  x, y, likelihood) for one animal, four (scorer / individuals / bodyparts / coords) for
  multi-animal projects; the first column is the frame index. Body-part names are matched to
  canonical keypoint names (``LHip``, ``left_hip``, ``l_hip``, ``hip_left``...) or through
  ``names``.

Detections without identities (OpenPose's ``person_id`` -1, COCO results) become *provisional*
tracks: detection p of each frame is track p, in the detector's order. ``pose.extra["tracked"]``
says whether ids came from the file; the tracker re-links provisional tracks later, and
``Pose2D.by_frame()`` gives the per-frame (P_t, K, 3) form it needs.

Frame times are ``frame / fps`` (default 30 fps) or, with ``video=``, that video's real frame
timestamps, which also supplies the video size and rotation.
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from opensim_bridge.errors import InputError

from .layouts import LAYOUTS, Layout, get_layout
from .pose2d import Pose2D
from .video import _natural_key, open_video

DEFAULT_FPS = 30.0

# ---------------------------------------------------------------------- shared helpers


def _load_json(path: Path):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError as exc:
        raise InputError("file not found", path) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid JSON: {exc}", path) from exc


def _timeline(frames: Sequence[int], fps: float | None, video, path) -> tuple[np.ndarray, dict]:
    """Times of the given frame indices and the metadata a video supplies."""
    frames = np.asarray(frames, dtype=np.int64)
    if video is not None:
        src = open_video(video)
        times = src.timestamps()
        if frames.size and frames.max() >= len(times):
            raise InputError(f"frame {int(frames.max())} is beyond the {len(times)} frames of "
                             f"the video {src.info.path}", path)
        return times[frames], {"video_size": (src.info.width, src.info.height),
                               "rotation": src.info.rotation, "source": str(src.info.path)}
    fps = DEFAULT_FPS if fps is None else float(fps)
    if not (fps > 0 and math.isfinite(fps)):
        raise InputError(f"frame rate must be positive, got {fps}", path)
    return frames / fps, {}


def _layout_for_count(k: int, path, hint: str | None = None) -> Layout:
    if hint is not None:
        layout = get_layout(hint)
        if layout.n != k:
            raise InputError(f"{k} keypoints per person but layout {layout.name} has {layout.n}", path)
        return layout
    by_count = {17: "coco17", 133: "coco_wholebody133", 26: "halpe26", 33: "blazepose33"}
    if k not in by_count:
        raise InputError(f"cannot tell the keypoint layout from {k} keypoints per person; "
                         f"pass layout= (known: {', '.join(LAYOUTS)})", path)
    return get_layout(by_count[k])


def _frame_number(name: str) -> int | None:
    """The frame number in a per-frame file name: the last group of digits."""
    stem = name[:-len("_keypoints.json")] if name.endswith("_keypoints.json") else Path(name).stem
    digits = re.findall(r"\d+", stem)
    return int(digits[-1]) if digits else None


# ---------------------------------------------------------------------- OpenPose


def guess_openpose_layout(people: Sequence[np.ndarray]) -> str:
    """BODY_25 or BODY_25B for 25-point OpenPose detections.

    The two share a count but not an order; two geometric cues tell them apart, each a
    log-ratio that is positive for BODY_25 and negative for BODY_25B:

    * head: in BODY_25 point 1 is the neck and 15 an eye, so the nose is far from point 1 and
      near point 15; in BODY_25B point 1 is an eye and 15 an ankle - the other way round.
    * legs: in BODY_25 points 13, 14, 19 are left knee, left ankle, left big toe, so 14 is
      nearer 19 (a foot) than 13 (a shank); in BODY_25B they are left knee, right knee, left big
      toe, so 14 is nearer 13 (the other knee) than 19. This one also works for people seen
      from behind, whose nose is often undetected.

    The median over every available cue of every person decides."""
    feats = []

    def cue(k, a, b, c, d):
        if min(k[a, 2], k[b, 2], k[c, 2], k[d, 2]) > 0:
            num, den = np.linalg.norm(k[a, :2] - k[b, :2]), np.linalg.norm(k[c, :2] - k[d, :2])
            if num > 0 and den > 0:
                feats.append(math.log(num / den))

    for k in people:
        cue(k, 1, 0, 15, 0)
        cue(k, 14, 13, 14, 19)
    if not feats:
        raise ValueError("no detection shows the nose or the legs well enough to tell BODY_25 "
                         "from BODY_25B; pass layout=")
    return "body25" if float(np.median(feats)) > 0 else "body25b"


def read_openpose(folder: str | os.PathLike, layout: str | None = None, fps: float | None = None,
                  video: str | os.PathLike | None = None) -> Pose2D:
    """Read a folder of OpenPose per-frame JSON files (body keypoints only)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("OpenPose output must be a folder of per-frame JSON files", folder)
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() == ".json"),
                   key=lambda p: _natural_key(p.name))
    if not files:
        raise InputError("no .json files in the folder", folder)
    numbers = [_frame_number(p.name) for p in files]
    if all(n is not None for n in numbers) and len(set(numbers)) == len(numbers):
        order = np.argsort(numbers, kind="stable")
        files = [files[i] for i in order]
        frames = [numbers[i] for i in order]
    else:  # no usable numbering: the sorted order is the frame order
        frames = list(range(len(files)))

    detections, ids, k_count, tracked = [], [], None, False
    for path in files:
        doc = _load_json(path)
        people = doc.get("people") if isinstance(doc, dict) else None
        if not isinstance(people, list):
            raise InputError("no 'people' list: not an OpenPose keypoints file", path)
        frame_kp, frame_ids = [], []
        for p, person in enumerate(people):
            flat = np.asarray(person.get("pose_keypoints_2d", []), dtype=np.float64)
            if flat.size == 0:
                continue
            if flat.size % 3:
                raise InputError(f"person {p}: pose_keypoints_2d has {flat.size} values, "
                                 "not a multiple of 3", path)
            if k_count is None:
                k_count = flat.size // 3
            elif flat.size // 3 != k_count:
                raise InputError(f"person {p} has {flat.size // 3} keypoints, earlier files "
                                 f"had {k_count}", path)
            frame_kp.append(flat.reshape(-1, 3))
            pid = person.get("person_id", -1)
            pid = pid[0] if isinstance(pid, list) and pid else pid
            frame_ids.append(int(pid) if isinstance(pid, (int, float)) else -1)
        detections.append(frame_kp)
        ids.append(frame_ids)
    if k_count is None:
        raise InputError("no person in any frame", folder)
    detections = [np.array(f).reshape(-1, k_count, 3) for f in detections]

    if layout is None:
        if k_count != 25:
            raise InputError(f"{k_count} keypoints per person: only BODY_25 and BODY_25B are "
                             "recognised automatically; pass layout=", folder)
        try:
            layout = guess_openpose_layout([d for frame in detections for d in frame])
        except ValueError as exc:
            raise InputError(str(exc), folder) from exc
    lay = _layout_for_count(k_count, folder, layout)

    # Real ids only if every detection has one (>= 0); a mix cannot be trusted as tracks.
    flat_ids = [i for f in ids for i in f]
    tracked = bool(flat_ids) and all(i >= 0 for i in flat_ids)
    times, meta = _timeline(frames, fps, video, folder)
    meta.setdefault("source", None)
    return Pose2D.from_detections(frames, times, detections, lay.name, ids if tracked else None,
                                  model="openpose", extra={"tracked": tracked, "imported_from": str(folder)},
                                  **meta)


# ---------------------------------------------------------------------- MMPose


def _mmpose_instance(inst: dict, path) -> tuple[np.ndarray, int | None]:
    if not isinstance(inst, dict) or "keypoints" not in inst:
        raise InputError("an instance has no 'keypoints'", path)
    kp = np.asarray(inst["keypoints"], dtype=np.float64)
    if kp.ndim == 3 and kp.shape[0] == 1:  # some versions keep a leading batch axis
        kp = kp[0]
    if kp.ndim != 2 or kp.shape[1] not in (2, 3):
        raise InputError(f"instance keypoints have shape {kp.shape}, expected (K, 2) or (K, 3)", path)
    if "keypoint_scores" in inst:
        scores = np.asarray(inst["keypoint_scores"], dtype=np.float64).reshape(-1)
        if scores.size != kp.shape[0]:
            raise InputError(f"{scores.size} keypoint_scores for {kp.shape[0]} keypoints", path)
        kp = np.column_stack([kp[:, :2], scores])
    elif kp.shape[1] == 2:
        kp = np.column_stack([kp, np.ones(len(kp))])
    track = inst.get("track_id")
    return kp, (None if track is None else int(track))


def read_mmpose(path: str | os.PathLike, layout: str | None = None, fps: float | None = None,
                video: str | os.PathLike | None = None) -> Pose2D:
    """Read an MMPose prediction JSON file (see the module docstring for the accepted forms)."""
    path = Path(path)
    doc = _load_json(path)
    meta_info = {}
    if isinstance(doc, dict) and "instance_info" in doc:
        meta_info = doc.get("meta_info") or {}
        entries = doc["instance_info"]
        one_based = True  # topdown_demo_with_mmdet counts frames from 1
    elif isinstance(doc, list) and doc and isinstance(doc[0], dict) and "instances" in doc[0]:
        entries, one_based = doc, False
    elif isinstance(doc, list) and (not doc or isinstance(doc[0], dict) and "keypoints" in doc[0]):
        entries, one_based = [{"frame_id": 0, "instances": doc}], False  # one image
    elif isinstance(doc, list) and doc and isinstance(doc[0], list):
        entries, one_based = [{"frame_id": i, "instances": f} for i, f in enumerate(doc)], False
    else:
        raise InputError("not an MMPose prediction file (expected 'instance_info' or a list of "
                         "frames with 'instances')", path)
    if not isinstance(entries, list) or not entries:
        raise InputError("no frames in the prediction file", path)

    frames, detections, ids = [], [], []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("instances"), list):
            raise InputError(f"frame entry {i} has no 'instances' list", path)
        fid = entry.get("frame_id", entry.get("frame_idx", i + 1 if one_based else i))
        frames.append(int(fid) - (1 if one_based else 0))
        parsed = [_mmpose_instance(inst, path) for inst in entry["instances"]]
        detections.append([k for k, _ in parsed])
        ids.append([t for _, t in parsed])
    counts = {k.shape[0] for frame in detections for k in frame}
    if not counts:
        raise InputError("no person in any frame", path)
    if len(counts) > 1:
        raise InputError(f"instances have different keypoint counts: {sorted(counts)}", path)
    k_count = counts.pop()
    if layout is None:
        name = str(meta_info.get("dataset_name", "")).lower()
        layout = {"coco": "coco17", "coco_wholebody": "coco_wholebody133", "halpe": "halpe26",
                  "h36m": "h36m17"}.get(name)
    lay = _layout_for_count(k_count, path, layout)

    order = np.argsort(frames, kind="stable")
    frames = [frames[i] for i in order]
    if len(set(frames)) != len(frames) or (frames and frames[0] < 0):
        raise InputError("frame ids are repeated or negative", path)
    detections = [np.array(detections[i]).reshape(-1, k_count, 3) for i in order]
    ids = [ids[i] for i in order]
    tracked = all(t is not None for f in ids for t in f) and any(ids)
    times, vmeta = _timeline(frames, fps, video, path)
    return Pose2D.from_detections(frames, times, detections, lay.name, ids if tracked else None,
                                  model="mmpose", extra={"tracked": bool(tracked), "imported_from": str(path)},
                                  **vmeta)


# ---------------------------------------------------------------------- COCO results


def read_coco_results(path: str | os.PathLike, layout: str | None = None, fps: float | None = None,
                      video: str | os.PathLike | None = None, category_id: int = 1) -> Pose2D:
    """Read a COCO keypoint results file; image ids in increasing order become frames 0, 1, ..."""
    path = Path(path)
    doc = _load_json(path)
    if not isinstance(doc, list):
        raise InputError("a COCO results file is a JSON list of detections", path)
    per_image: dict = {}
    k_count = None
    for i, det in enumerate(doc):
        if not isinstance(det, dict) or "image_id" not in det or "keypoints" not in det:
            raise InputError(f"detection {i} lacks image_id or keypoints", path)
        if det.get("category_id", category_id) != category_id:
            continue
        flat = np.asarray(det["keypoints"], dtype=np.float64).reshape(-1)
        if flat.size % 3:
            raise InputError(f"detection {i}: {flat.size} keypoint values, not a multiple of 3", path)
        if k_count is None:
            k_count = flat.size // 3
        elif flat.size // 3 != k_count:
            raise InputError(f"detection {i} has {flat.size // 3} keypoints, others {k_count}", path)
        per_image.setdefault(det["image_id"], []).append((flat.reshape(-1, 3), det.get("track_id")))
    if k_count is None:
        raise InputError(f"no detection of category {category_id}", path)
    lay = _layout_for_count(k_count, path, layout)
    try:
        image_ids = sorted(per_image)
    except TypeError as exc:
        raise InputError("image ids mix numbers and strings", path) from exc
    frames = list(range(len(image_ids)))
    detections = [np.array([k for k, _ in per_image[im]]) for im in image_ids]
    ids = [[t for _, t in per_image[im]] for im in image_ids]
    tracked = all(t is not None for f in ids for t in f)
    times, vmeta = _timeline(frames, fps, video, path)
    return Pose2D.from_detections(frames, times, detections, lay.name,
                                  [[int(t) for t in f] for f in ids] if tracked else None,
                                  model="coco-results",
                                  extra={"tracked": tracked, "image_ids": list(image_ids),
                                         "imported_from": str(path)}, **vmeta)


# ---------------------------------------------------------------------- DeepLabCut


def _canonical_bodypart(name: str) -> str:
    """Normalise a body-part name to the canonical form: LHip, l_hip, left-hip, hip_left,
    'Left Hip' -> left_hip."""
    s = re.sub(r"([a-z])([A-Z])", r"\1_\2", name.strip())   # LeftHip -> Left_Hip
    s = re.sub(r"^([LR])([A-Z])", r"\1_\2", s)              # LHip -> L_Hip
    s = re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_")
    parts = s.split("_")
    side = {"l": "left", "left": "left", "r": "right", "right": "right"}
    if parts and parts[0] in side:
        return "_".join([side[parts[0]]] + parts[1:])
    if parts and parts[-1] in side:
        return "_".join([side[parts[-1]]] + parts[:-1])
    return s


def read_deeplabcut(path: str | os.PathLike, layout: str | None = None,
                    names: Mapping[str, str] | None = None, fps: float | None = None,
                    video: str | os.PathLike | None = None) -> Pose2D:
    """Read a DeepLabCut prediction CSV (single- or multi-animal).

    names: DeepLabCut body part -> canonical keypoint name, for parts whose names do not say it.
    layout: target layout; by default the one that matches the most body parts (smallest on a tie).
    Body parts matching no keypoint of the layout are dropped with a warning."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except FileNotFoundError as exc:
        raise InputError("file not found", path) from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"not a text CSV file: {exc}", path) from exc
    if len(rows) < 4 or not rows[0] or rows[0][0].strip().lower() != "scorer":
        raise InputError("not a DeepLabCut CSV (first row must start with 'scorer')", path)
    labels = [r[0].strip().lower() for r in rows[:4]]
    multi = len(labels) > 1 and labels[1] == "individuals"
    n_header = 4 if multi else 3
    header = rows[:n_header]
    if header[-1][0].strip().lower() != "coords":
        raise InputError(f"row {n_header} must be 'coords' (x, y, likelihood)", path)
    parts_row = header[2] if multi else header[1]
    indiv_row = header[1] if multi else None
    coords_row = header[-1]
    ncol = len(coords_row)

    # Columns come as (individual, bodypart) triples x, y, likelihood.
    keys: list[tuple[str, str]] = []
    cols: dict[tuple[str, str], dict[str, int]] = {}
    for c in range(1, ncol):
        coord = coords_row[c].strip().lower()
        key = (indiv_row[c].strip() if multi else "", parts_row[c].strip())
        if key not in cols:
            cols[key] = {}
            keys.append(key)
        cols[key][coord] = c
    for key, cc in cols.items():
        if not {"x", "y"} <= set(cc):
            raise InputError(f"body part {key[1]!r} lacks x or y columns", path)
    individuals = list(dict.fromkeys(k[0] for k in keys))
    bodyparts = list(dict.fromkeys(k[1] for k in keys))

    canon = {bp: (names or {}).get(bp, _canonical_bodypart(bp)) for bp in bodyparts}
    if layout is None:
        best = max(LAYOUTS.values(), key=lambda l: (sum(c in l.names for c in canon.values()), -l.n))
        lay = best
    else:
        lay = get_layout(layout)
    matched = {bp: lay.names.index(c) for bp, c in canon.items() if c in lay.names}
    if not matched:
        raise InputError(f"no body part ({', '.join(bodyparts)}) matches a keypoint of layout "
                         f"{lay.name}; pass names= to map them", path)
    dropped = [bp for bp in bodyparts if bp not in matched]
    if dropped:
        warnings.warn(f"{path}: body parts not in layout {lay.name}, dropped: {', '.join(dropped)}",
                      stacklevel=2)

    body = [r for r in rows[n_header:] if r and any(v.strip() for v in r)]
    frames = []
    values = np.full((len(body), ncol), np.nan)
    for i, r in enumerate(body):
        try:
            frames.append(int(float(r[0])))
        except ValueError:  # labelled-data CSVs index rows by image path: take its number
            number = _frame_number(Path(r[0]).name)
            frames.append(i if number is None else number)
        for c in range(1, min(len(r), ncol)):
            v = r[c].strip()
            if v:
                try:
                    values[i, c] = float(v)
                except ValueError as exc:
                    raise InputError(f"row {n_header + i + 1}, column {c + 1}: {v!r} is not a number", path) from exc
    if len(set(frames)) != len(frames):
        raise InputError("frame indices in the first column repeat", path)
    order = np.argsort(frames, kind="stable")
    frames = [frames[i] for i in order]
    values = values[order]

    kp = np.full((len(individuals), len(frames), lay.n, 2), np.nan)
    conf = np.zeros((len(individuals), len(frames), lay.n))
    for (ind, bp), cc in cols.items():
        if bp not in matched:
            continue
        p, j = individuals.index(ind), matched[bp]
        kp[p, :, j, 0] = values[:, cc["x"]]
        kp[p, :, j, 1] = values[:, cc["y"]]
        conf[p, :, j] = np.clip(np.nan_to_num(values[:, cc["likelihood"]], nan=0.0), 0, 1) \
            if "likelihood" in cc else 1.0
    times, vmeta = _timeline(frames, fps, video, path)
    return Pose2D.from_arrays(frames, times, range(len(individuals)), kp, conf, lay.name,
                              model=f"deeplabcut:{header[0][1].strip() if len(header[0]) > 1 else ''}",
                              extra={"tracked": True, "individuals": individuals if multi else [],
                                     "bodyparts": {bp: lay.names[j] for bp, j in matched.items()},
                                     "imported_from": str(path)}, **vmeta)
