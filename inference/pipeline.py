"""``kinevid run``: video -> 2D keypoints -> 3D keypoints -> scaled model -> IK -> estimated GRF
and ID -> C3D and Blender file, as cached, resumable stages.

Stages (each writes only into the output folder OUT, every file atomically):

=========  ==================================  =============================================
stage      reads                               writes
=========  ==================================  =============================================
pose2d     VIDEO (or ``--from-pose2d FILE``)   pose2d.npz, pose2d.json
overlay    VIDEO, pose2d.npz                   pose2d_overlay.mp4
lift       pose2d.npz (or ``--from-keypoints   markers.trc (3D keypoints, m, world frame),
           FILE``, then no 2D stages)          keypoints3d_confidence.csv, keypoints3d.npz
scale      markers.trc + confidence, model     model_generic_keypoints.osim, model_scaled.osim,
                                               scale_setup.xml, scale_factors.xml,
                                               keypoint_scaling.json, keypoint_map.toml
                                               (+ model_builtin.osim for the built-in model)
ik         markers.trc + confidence,           ik.mot, ik_marker_errors.sto, ik_setup.xml,
           model_scaled.osim, keypoint_map     ik_markers.trc (the filtered markers IK used)
id         model_scaled.osim, ik.mot           grf.mot, external_loads.xml, id.sto,
                                               id_setup.xml
c3d        markers.trc, ik.mot, id.sto,        motion.c3d
           grf.mot, model_scaled.osim
blender    model_scaled.osim, ik.mot,          motion.kvb
           markers.trc, grf.mot, VIDEO
=========  ==================================  =============================================

Caching. A stage's *key* is the sha256 of: its name, the content hashes (sha256) of the files it
reads, its own settings (only the sections it uses; :mod:`inference.config`), and its code
version (the source of the modules it runs, plus the versions of kinevid and OpenSim). After a
stage succeeds, its key and its output files' hashes go to ``OUT/.kinevid/stage_hashes.json``.
A stage is reused when its recorded key equals the current one and its outputs are still on
disk unchanged. Downstream keys hold the *content* of upstream outputs, so changing an IK
setting reruns ik, id, c3d and blender but not pose2d, lift or scale; a rerun stage that
produces identical files does not invalidate the later ones.

Reuse vs. resume (explicit, and documented in ``kinevid run --help``):

* Valid cached stages are **always** reused, with or without ``--resume``: a cached output is by
  construction what the same inputs, settings and code produce. ``--force`` reruns everything.
* ``--resume`` continues the run recorded in ``OUT/run.json`` with the inputs and settings
  recorded there (VIDEO and the options need not be repeated; options that are given override
  the recorded ones) - for a run that failed, was interrupted, or stopped at ``--stop-after``.

Failure. A stage's record is dropped before it runs, so a stage that fails midway is never
reused; earlier stages' outputs are untouched; ``run.json`` gets ``status: "failed"`` and the
error (stage, message, file), and the exception goes on to the caller.

``run.json`` (rewritten atomically after every stage): status, command, inputs with sha256,
versions (kinevid, python, opensim, torch, numpy, mediapipe), weights used with sha256, the
2D backend and why, every setting and where it came from, each stage's status (ran / cached /
failed / skipped / pending), wall time, outputs and details, warnings, quality flags (frames
with low keypoint confidence, IK error outliers, frames where the subject was lost; as time
ranges) and pelvis residuals.
"""
from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import functools
import hashlib
import importlib.util
import json
import math
import os
import platform
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, TextIO

import numpy as np

from opensim_bridge.atomic import atomic_copy, atomic_write
from opensim_bridge.errors import InputError, KinevidError

from .config import RunConfig, settings_dict

__all__ = ["STAGES", "RunInputs", "StageOutcome", "RunResult", "Pipeline", "run_pipeline",
           "read_run_json", "load_confidence_csv", "file_sha256", "STATE_DIR", "HASH_FILE",
           "RUN_JSON"]

STATE_DIR = ".kinevid"
HASH_FILE = "stage_hashes.json"
RUN_JSON = "run.json"
CONFIDENCE_FILE = "keypoints3d_confidence.csv"
KEYPOINT_MAP_FILE = "keypoint_map.toml"
RUN_FORMAT = "kinevid-run"
RUN_VERSION = 1

#: stage -> (title, modules whose source is its code version)
STAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "pose2d": ("2D keypoints", ("inference.pose2d_run", "inference.blazepose", "inference.tracking",
                                "inference.video", "inference.pose2d", "inference.layouts",
                                "models.topdown", "models.vitpose", "models.heatmap")),
    "overlay": ("overlay video", ("inference.overlay", "inference.video")),
    "lift": ("3D keypoints", ("inference.lift", "inference.trajectory", "inference.confidence3d",
                              "inference.layouts", "models.lift_infer", "models.tcn",
                              "models.lifter_registry", "models.lifter_numpy",
                              "opensim_bridge.trc")),
    "scale": ("scaled model", ("opensim_bridge.keypoint_scaling", "opensim_bridge.keypoint_maps",
                               "opensim_bridge.builtin_model", "opensim_bridge.anthropometry",
                               "opensim_bridge.scaling", "opensim_bridge.filters")),
    "ik": ("inverse kinematics", ("opensim_bridge.ik", "opensim_bridge.ik_solver",
                                  "opensim_bridge.ik_settings", "opensim_bridge.ik_pool",
                                  "opensim_bridge.filters", "opensim_bridge.keypoint_maps")),
    "id": ("ground forces and inverse dynamics", ("opensim_bridge.grf_estimate",
                                                  "opensim_bridge.contact",
                                                  "opensim_bridge.inverse_dynamics",
                                                  "opensim_bridge.external_loads")),
    "c3d": ("C3D file", ("opensim_bridge.c3d_write", "opensim_bridge.vicon_outputs")),
    "blender": ("Blender motion file", ("opensim_bridge.blender_export",
                                        "opensim_bridge.geometry")),
}


@dataclasses.dataclass
class RunInputs:
    """What the run starts from: a video, or a 2D result, or 3D keypoints."""

    video: Path | None = None
    from_pose2d: Path | None = None
    from_keypoints: Path | None = None
    keypoint_confidence: Path | None = None    # CSV beside --from-keypoints (optional)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is not None:
                setattr(self, f.name, Path(v).expanduser().resolve())
        if self.from_pose2d is not None and self.from_keypoints is not None:
            raise InputError("give either --from-pose2d or --from-keypoints, not both")
        if self.video is None and self.from_pose2d is None and self.from_keypoints is None:
            raise InputError("nothing to process: give a VIDEO, --from-pose2d FILE or "
                             "--from-keypoints FILE")
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is not None and not v.exists():
                raise InputError("file not found", v)
        if (self.from_keypoints is not None and self.keypoint_confidence is None):
            guess = self.from_keypoints.with_name(self.from_keypoints.stem + "_confidence.csv")
            if guess.is_file():
                self.keypoint_confidence = guess

    def to_json(self) -> dict:
        return {f.name: (None if getattr(self, f.name) is None else str(getattr(self, f.name)))
                for f in dataclasses.fields(self)}


@dataclasses.dataclass
class StageOutcome:
    name: str
    status: str                      # ran | cached | failed | skipped | pending
    wall_s: float = 0.0
    outputs: list[str] = dataclasses.field(default_factory=list)
    info: dict = dataclasses.field(default_factory=dict)
    key: str | None = None
    reason: str = ""

    def to_json(self) -> dict:
        d = {"name": self.name, "title": STAGES[self.name][0], "status": self.status,
             "wall_s": round(self.wall_s, 3), "outputs": self.outputs, "info": self.info}
        if self.reason:
            d["reason"] = self.reason
        return d


@dataclasses.dataclass
class RunResult:
    out_dir: Path
    status: str
    stages: dict[str, StageOutcome]
    run_json: Path
    quality: dict
    warnings: list[str]

    def ran(self) -> list[str]:
        return [n for n, s in self.stages.items() if s.status == "ran"]

    def cached(self) -> list[str]:
        return [n for n, s in self.stages.items() if s.status == "cached"]


# --------------------------------------------------------------------------- hashing
_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's content (memoised on path, size and mtime within the process)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def _module_source_hash(modules: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for mod in modules:
        try:
            spec = importlib.util.find_spec(mod)
        except (ImportError, ValueError):
            spec = None
        origin = getattr(spec, "origin", None)
        h.update(mod.encode())
        if origin and os.path.isfile(origin):
            h.update(Path(origin).read_bytes())
        else:
            h.update(b"<absent>")
    return h.hexdigest()


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    raise TypeError(f"not JSON-able: {type(o).__name__}")


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=_json_default, separators=(",", ":"))


@functools.lru_cache(maxsize=1)
def _package_versions() -> tuple[tuple[str, str | None], ...]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("kinevid", "opensim", "torch", "numpy", "scipy", "mediapipe", "ezc3d", "c3d", "av"):
        try:
            out.append((pkg, version(pkg)))
        except PackageNotFoundError:
            out.append((pkg, None))
    return tuple(out)


def _versions() -> dict[str, str | None]:
    """Installed versions, from package metadata (no heavy import)."""
    out: dict[str, str | None] = {"python": platform.python_version(), **dict(_package_versions())}
    if "opensim" in sys.modules:
        try:
            out["opensim_build"] = sys.modules["opensim"].GetVersionAndDate()
        except Exception:  # noqa: BLE001 - provenance only
            pass
    return out


# --------------------------------------------------------------------------- small I/O
def load_confidence_csv(path: str | os.PathLike, names, time_) -> np.ndarray:
    """Per-frame keypoint confidences (n, m) from a ``time,NAME...`` CSV, matched by name and
    time; names the file lacks get confidence 1."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows or rows[0][:1] != ["time"]:
        raise InputError("not a keypoint confidence CSV (first column must be 'time')", path)
    header = rows[0][1:]
    try:
        data = np.array([[float(x) for x in r] for r in rows[1:] if r], dtype=float)
    except ValueError as exc:
        raise InputError(f"non-numeric value: {exc}", path) from None
    if data.ndim != 2 or data.shape[1] != len(header) + 1:
        raise InputError("rows do not have one value per column", path)
    t = np.asarray(time_, dtype=float)
    out = np.ones((t.size, len(names)))
    idx = np.searchsorted(data[:, 0], t)
    idx = np.clip(idx, 0, len(data) - 1)
    prev = np.clip(idx - 1, 0, len(data) - 1)
    pick = np.where(np.abs(data[prev, 0] - t) < np.abs(data[idx, 0] - t), prev, idx)
    if np.abs(data[pick, 0] - t).max(initial=0.0) > 1e-4:
        raise InputError("its times do not match the keypoint file's", path)
    col = {n: i + 1 for i, n in enumerate(header)}
    for j, n in enumerate(names):
        if n in col:
            out[:, j] = np.clip(data[pick, col[n]], 0.0, 1.0)
    return out


def read_run_json(out_dir: str | os.PathLike) -> dict:
    path = Path(out_dir) / RUN_JSON
    if not path.is_file():
        raise InputError("no run.json: nothing to resume in this folder", Path(out_dir))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"run.json is not valid JSON: {exc}", path) from None
    if not isinstance(data, dict) or data.get("format") != RUN_FORMAT:
        raise InputError("not a kinevid run.json", path)
    return data


def _runs(mask: np.ndarray, time_: np.ndarray) -> list[list[float]]:
    """Runs of True as [first time, last time] pairs."""
    out, start = [], None
    for i, m in enumerate(mask):
        if m and start is None:
            start = i
        if not m and start is not None:
            out.append([float(time_[start]), float(time_[i - 1])])
            start = None
    if start is not None:
        out.append([float(time_[start]), float(time_[len(mask) - 1])])
    return out


def _flag(mask: np.ndarray, time_: np.ndarray, what: str) -> dict:
    mask = np.asarray(mask, dtype=bool)
    return {"what": what, "n_frames": int(mask.sum()), "of_frames": int(mask.size),
            "time_ranges_s": _runs(mask, time_)}


# --------------------------------------------------------------------------- pipeline
class Pipeline:
    """One ``kinevid run`` in ``out_dir``. ``run()`` executes the stages (see the module doc).

    ``stream``: where stage headers and progress go (stderr); ``log``: one-line messages
    (print). ``stop_after``: end (status "stopped") once this stage is done; ``force``: ignore
    the cache. ``command``: the argument list recorded in run.json."""

    def __init__(self, out_dir: str | os.PathLike, cfg: RunConfig, inputs: RunInputs, *,
                 force: bool = False, stop_after: str | None = None,
                 stream: TextIO | None = None, log: Callable[[str], None] | None = None,
                 command: list[str] | None = None):
        self.out = Path(out_dir).expanduser().resolve()
        if self.out.exists() and not self.out.is_dir():
            raise InputError("the output must be a folder", self.out)
        self.cfg = cfg
        self.inputs = inputs
        self.force = force
        if stop_after is not None and stop_after not in STAGES:
            raise InputError(f"unknown stage {stop_after!r}; stages: {', '.join(STAGES)}")
        self.stop_after = stop_after
        self.stream = stream if stream is not None else sys.stderr
        self.log = log or (lambda msg: print(msg))
        self.command = list(command) if command is not None else None
        self.state_dir = self.out / STATE_DIR
        self.warnings: list[str] = []
        self.weights: dict[str, dict] = {}
        self.outcomes: dict[str, StageOutcome] = {}
        self.error: dict | None = None
        self.started = _dt.datetime.now(_dt.timezone.utc)
        self._check_subject()

    # ------------------------------------------------------------------ plan
    def _check_subject(self) -> None:
        s = self.cfg["subject"]
        missing = [k for k in ("height", "mass") if s[k] is None]
        if missing:
            raise InputError(f"the subject's {' and '.join(missing)} must be given (--height M "
                             "--mass KG, or [subject] in the config file): scaling and ground "
                             "forces depend on them")
        m = self.cfg["model"]["model"]
        if m != "builtin" and not Path(m).expanduser().is_file():
            raise InputError("model file not found", Path(m).expanduser())
        km = self.cfg["model"]["keypoint_map"]
        if km is not None and not Path(km).expanduser().is_file():
            raise InputError("keypoint map file not found", Path(km).expanduser())

    def plan(self) -> list[str]:
        """The stages this run has, in order."""
        stages = []
        if self.inputs.from_keypoints is None:
            stages.append("pose2d")
            if self.inputs.video is not None and self.cfg["pose2d"]["overlay"]:
                stages.append("overlay")
        stages += ["lift", "scale", "ik", "id"]
        if self.cfg["output"]["c3d"]:
            stages.append("c3d")
        if self.cfg["output"]["blender"]:
            stages.append("blender")
        return stages

    def p(self, name: str) -> Path:
        return self.out / name

    # ------------------------------------------------------------------ state
    def _load_hashes(self) -> dict:
        path = self.state_dir / HASH_FILE
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return data.get("stages", {}) if isinstance(data, dict) else {}
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            return {}   # a damaged cache index only costs a rerun

    def _save_hashes(self, records: dict) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.state_dir / HASH_FILE) as fh:
            json.dump({"format": "kinevid-stage-hashes", "version": 1, "stages": records}, fh,
                      indent=1, sort_keys=True, default=_json_default)

    def _stage_key(self, name: str, inputs: dict[str, Path | None], settings: dict) -> str:
        fp = {k: (None if p is None else file_sha256(p)) for k, p in inputs.items()}
        versions = _versions()
        # the pipeline's own source counts too: it decides how each stage calls the library
        code = {"modules": _module_source_hash(STAGES[name][1] + ("inference.pipeline",)),
                "kinevid": versions.get("kinevid"), "opensim": versions.get("opensim")}
        return hashlib.sha256(_canonical({"stage": name, "inputs": fp, "settings": settings,
                                          "code": code}).encode()).hexdigest()

    def _valid(self, record: dict | None, key: str) -> bool:
        if self.force or not record or record.get("key") != key:
            return False
        for rel, digest in record.get("outputs", {}).items():
            path = self.out / rel
            if not path.is_file() or file_sha256(path) != digest:
                return False
        return True

    # ------------------------------------------------------------------ progress
    def _header(self, i: int, n: int, name: str, what: str) -> None:
        # "stages: 2/9 done (22%)" is a progress line the Blender add-on's runner parses
        # (addon/kinevid_blender/runner.py parse_progress); the rest names the stage.
        self.stream.write(f"stages: {i}/{n} done ({round(100 * i / n)}%) - {what} {name}: "
                          f"{STAGES[name][0]}\n")
        self.stream.flush()

    def _bar(self, label: str, unit: str):
        from .progress import ProgressBar
        return ProgressBar(label, unit=unit, stream=self.stream)

    # ------------------------------------------------------------------ run.json
    def _run_json(self, status: str, quality: dict | None = None) -> Path:
        doc = {
            "format": RUN_FORMAT, "version": RUN_VERSION, "status": status,
            "started": self.started.isoformat(timespec="seconds"),
            "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": self.command,
            "request": {"inputs": self.inputs.to_json(), "settings": settings_dict(self.cfg),
                        "force": self.force, "stop_after": self.stop_after},
            "inputs": {k: {"path": str(v), "sha256": file_sha256(v), "bytes": v.stat().st_size}
                       for k, v in dataclasses.asdict(self.inputs).items()
                       if v is not None and Path(v).is_file()},
            "versions": _versions(),
            "weights": self.weights,
            "settings": settings_dict(self.cfg),
            "settings_sources": {k: v for k, v in self.cfg.sources.items() if v != "default"},
            "stages": [o.to_json() for o in self.outcomes.values()],
            "total_wall_s": round(sum(o.wall_s for o in self.outcomes.values()), 3),
            **self._real_time(),
            "warnings": self.warnings,
            "quality": quality or {},
            "error": self.error,
            "cache": f"{STATE_DIR}/{HASH_FILE}",
        }
        self.out.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.out / RUN_JSON) as fh:
            json.dump(doc, fh, indent=2, default=_json_default)
            fh.write("\n")
        return self.out / RUN_JSON

    _video_fps: float | None = None

    def _real_time(self) -> dict:
        """Seconds of video the 2D stage covered and the run's real-time factor (all stage
        wall times over that duration), once the 2D stage has run on a video."""
        info = self.outcomes.get("pose2d")
        if self.inputs.video is None or info is None or not info.info.get("frames"):
            return {}
        if self._video_fps is None:
            from .video import open_video

            self._video_fps = open_video(self.inputs.video).info.fps or 30.0
        seconds = info.info["frames"] * (info.info.get("step") or 1) / self._video_fps
        wall = sum(o.wall_s for o in self.outcomes.values())
        return {"video_s": round(seconds, 3),
                "real_time_factor": round(wall / seconds, 3) if seconds > 0 else None}

    # ------------------------------------------------------------------ main loop
    def run(self) -> RunResult:
        self.out.mkdir(parents=True, exist_ok=True)
        plan = self.plan()
        if "ik" in plan:
            # IK worker processes are forked now, before the 2D stage starts its threads, and
            # are ready (OpenSim imported) when IK comes; idle ones cost nothing. A warm-up
            # thread of an earlier run in this process may still be importing: a fork must not
            # copy a held import lock into the child.
            from opensim_bridge import ik_pool

            _join_warm_up()
            ik_pool.prestart(self.cfg["ik"]["jobs"])
        self.outcomes = {n: StageOutcome(n, "pending") for n in plan}
        records = self._load_hashes()
        self._run_json("running")
        status = "complete"
        try:
            for i, name in enumerate(plan):
                self._stage = name
                t0 = time.perf_counter()
                try:
                    settings, inputs = self._spec(name)
                    key = self._stage_key(name, inputs, settings)
                except BaseException:
                    self.outcomes[name] = StageOutcome(name, "failed", time.perf_counter() - t0)
                    raise
                record = records.get(name)
                if self._valid(record, key):
                    self._header(i, len(plan), name, "cached")
                    self.outcomes[name] = StageOutcome(name, "cached", record.get("wall_s", 0.0),
                                                       sorted(record["outputs"]),
                                                       record.get("info", {}), key)
                    self.weights.update(record.get("weights", {}))
                    self.warnings += record.get("warnings", [])
                else:
                    self._header(i, len(plan), name, "running")
                    records.pop(name, None)
                    self._save_hashes(records)       # a stage that dies midway is never reused
                    t0 = time.perf_counter()
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        try:
                            files, info, weights = getattr(self, f"_stage_{name}")(settings)
                        except BaseException:
                            self.outcomes[name] = StageOutcome(name, "failed",
                                                               time.perf_counter() - t0, key=key)
                            raise
                    wall = time.perf_counter() - t0
                    notes = [f"{name}: {w.message}" for w in caught]
                    notes = list(dict.fromkeys(notes + [f"{name}: {w}"
                                                        for w in info.pop("warnings", [])]))
                    for n in notes:
                        self.stream.write(f"warning: {n}\n")
                    self.warnings += notes
                    self.weights.update(weights)
                    rel = {str(Path(f).resolve().relative_to(self.out)): file_sha256(f)
                           for f in files}
                    records[name] = {"key": key, "outputs": rel, "info": info, "wall_s": wall,
                                     "weights": weights, "warnings": notes,
                                     "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(
                                         timespec="seconds")}
                    self._save_hashes(records)
                    self.outcomes[name] = StageOutcome(name, "ran", wall, sorted(rel), info, key)
                    self.log(f"{name}: {STAGES[name][0]} in {wall:.1f} s")
                self._run_json("running")
                if self.stop_after == name:
                    for rest in plan[i + 1:]:
                        self.outcomes[rest] = StageOutcome(rest, "skipped",
                                                           reason=f"--stop-after {name}")
                    status = "stopped"
                    self.stream.write(f"stages: {i + 1}/{len(plan)} done "
                                      f"({round(100 * (i + 1) / len(plan))}%) - stopped after "
                                      f"{name}\n")
                    break
            else:
                self.stream.write(f"stages: {len(plan)}/{len(plan)} done (100%)\n")
        except KeyboardInterrupt:
            self.error = {"stage": self._current("interrupted"), "message": "interrupted"}
            self._run_json("interrupted", self._quality_safe())
            raise
        except BaseException as exc:
            stage = self._current()
            self.error = {"stage": stage, "type": type(exc).__name__,
                          "message": str(exc) if isinstance(exc, KinevidError) else
                          f"{type(exc).__name__}: {exc}",
                          "path": getattr(exc, "path", None) and str(exc.path)}
            if not isinstance(exc, KinevidError):
                self.error["traceback"] = traceback.format_exc(limit=8)
            self._run_json("failed", self._quality_safe())
            raise
        quality = self._quality_safe()
        path = self._run_json(status, quality)
        return RunResult(self.out, status, self.outcomes, path, quality, self.warnings)

    _stage: str | None = None

    def _current(self, status: str = "failed") -> str | None:
        """The stage that was running when the run ended early."""
        if self._stage is not None and self.outcomes.get(self._stage) is not None \
                and self.outcomes[self._stage].status in ("pending", "failed"):
            self.outcomes[self._stage].status = status
            return self._stage
        return None

    # ------------------------------------------------------------------ per-stage inputs
    def _model_source(self) -> Path | None:
        m = self.cfg["model"]["model"]
        return None if m == "builtin" else Path(m).expanduser().resolve()

    def _confidence_path(self) -> Path | None:
        p = self.p(CONFIDENCE_FILE)
        return p if p.is_file() else None

    def _spec(self, name: str) -> tuple[dict, dict[str, Path | None]]:
        """(settings, input files) of a stage: exactly what its cache key holds."""
        c = self.cfg
        if name == "pose2d":
            if self.inputs.from_pose2d is not None:
                return {"import": True}, {"pose2d": self.inputs.from_pose2d}
            s = {k: v for k, v in c["pose2d"].items() if k != "overlay"}
            choice = self._backend()
            s["backend"] = dataclasses.asdict(choice)
            s["backend_weights_sha256"] = self._vitpose_sha(choice)
            return s, {"video": self.inputs.video}
        if name == "overlay":
            return {}, {"video": self.inputs.video, "pose2d": self.p("pose2d.npz")}
        if name == "lift":
            if self.inputs.from_keypoints is not None:
                return {"import": True}, {"keypoints": self.inputs.from_keypoints,
                                          "confidence": self.inputs.keypoint_confidence}
            s = dict(c["lift"], height=c["subject"]["height"])
            s["lifter_sha256"] = self._lifter_info()["sha256"]
            return s, {"pose2d": self.p("pose2d.npz")}
        if name == "scale":
            km = c["model"]["keypoint_map"]
            return ({"subject": c["subject"], "model": c["model"]["model"],
                     "keypoints": c["keypoints"], "scale": c["scale"]},
                    {"markers": self.p("markers.trc"), "confidence": self._confidence_path(),
                     "model": self._model_source(),
                     "keypoint_map": None if km is None else Path(km).expanduser()})
        if name == "ik":
            return ({"keypoints": c["keypoints"], "ik": c["ik"]},
                    {"markers": self.p("markers.trc"), "confidence": self._confidence_path(),
                     "model": self.p("model_scaled.osim"),
                     "keypoint_map": self.p(KEYPOINT_MAP_FILE)})
        if name == "id":
            return ({"grf": c["grf"], "id": c["id"], "height": c["subject"]["height"]},
                    {"model": self.p("model_scaled.osim"), "motion": self.p("ik.mot")})
        if name == "c3d":
            return ({"axes": c["output"]["c3d_axes"], "mass": c["subject"]["mass"]},
                    {"markers": self.p("markers.trc"), "ik": self.p("ik.mot"),
                     "id": self.p("id.sto"), "grf": self.p("grf.mot"),
                     "model": self.p("model_scaled.osim"),
                     "events": self.state_dir / "gait_events.json"})
        if name == "blender":
            return ({}, {"model": self.p("model_scaled.osim"), "motion": self.p("ik.mot"),
                         "markers": self.p("markers.trc"), "grf": self.p("grf.mot"),
                         "video": self.inputs.video})
        raise KeyError(name)

    # ------------------------------------------------------------------ weights
    _choice = None
    _lifter = None

    def _backend(self):
        if self._choice is None:
            from .pose2d_run import resolve_backend
            self._choice = resolve_backend(self.cfg["pose2d"]["pose"])
        return self._choice

    def _vitpose_sha(self, choice) -> str | None:
        if choice.weights is None:
            return None
        from models.checkpoints import cached_path
        path = cached_path(choice.weights, None, verify=False)
        return None if path is None else file_sha256(path)

    def _lifter_info(self) -> dict:
        """Name, file and sha256 of the lifter weights (CheckpointError, an InputError, with the
        file when they are missing, e.g. kinevid's own weights not trained yet)."""
        if self._lifter is None:
            from models.lifter_registry import LIFTER_REGISTRY, resolve_checkpoint

            name = self.cfg["lift"]["lifter"]
            if name in LIFTER_REGISTRY:
                spec = LIFTER_REGISTRY[name]
                path = resolve_checkpoint(spec, trust=self.cfg["lift"]["trust"])
                licence = spec.licence
            else:
                path = Path(name).expanduser().resolve()
                if not path.is_file():
                    raise InputError(f"unknown lifter {name!r}: neither a registry name "
                                     f"({', '.join(LIFTER_REGISTRY)}) nor a checkpoint file")
                licence = "unknown (user-provided file)"
            self._lifter = {"name": name, "path": str(path), "sha256": file_sha256(path),
                            "licence": licence}
        return self._lifter

    # ------------------------------------------------------------------ stages
    def _stage_pose2d(self, s: dict):
        from .pose2d import read_pose2d

        out = self.p("pose2d.npz")
        if self.inputs.from_pose2d is not None:
            pose = read_pose2d(self.inputs.from_pose2d)
            if self.inputs.from_pose2d != out:
                pose.write(out)
            info = {"imported_from": str(self.inputs.from_pose2d), "layout": pose.layout,
                    "frames": len(pose), "subject": pose.subject, "model": pose.model}
            return [out, out.with_suffix(".json")], info, {}
        from .pose2d_run import estimate_pose2d

        choice = self._backend()
        self.log(f"pose backend: {choice.label} ({choice.reason})")
        p = self.cfg["pose2d"]
        step = frame_step(self.inputs.video, p["max_fps"])
        _start_warm_up()
        with self._bar("pose2d", "frames") as bar:
            pose = estimate_pose2d(self.inputs.video, p["pose"], person=p["person"],
                                   max_frames=p["max_frames"], max_people=p["max_people"],
                                   device=p["device"], progress=bar.update, choice=choice,
                                   step=step, workers=p["readers"])
        npz, js = pose.write(out)
        info = {"backend": choice.backend, "backend_label": choice.label,
                "backend_reason": choice.reason, "layout": pose.layout, "frames": len(pose),
                "tracks": pose.person_ids, "subject": pose.subject,
                "fps": pose.extra.get("fps"), "step": step,
                "readers": pose.extra.get("readers"),
                "parts_reread": pose.extra.get("parts_reread")}
        if pose.subject is None:
            raise InputError("nobody was found in the video", self.inputs.video)
        weights = {"pose2d": {"backend": choice.backend, "name": choice.weights or
                              "blazepose (mediapipe, shipped in the wheel)",
                              "sha256": s["backend_weights_sha256"], "reason": choice.reason}}
        return [npz, js], info, weights

    def _stage_overlay(self, s: dict):
        from .overlay import write_overlay
        from .pose2d import read_pose2d

        pose = read_pose2d(self.p("pose2d.npz"))
        with self._bar("overlay", "frames") as bar:
            path = write_overlay(self.inputs.video, pose, self.p("pose2d_overlay.mp4"),
                                 progress=bar.update)
        return [path], {}, {}

    def _stage_lift(self, s: dict):
        if self.inputs.from_keypoints is not None:
            return self._import_keypoints()
        from .lift import lift_pose2d, write_lift_outputs
        from .pose2d import read_pose2d

        lifter = self._lifter_info()
        c = self.cfg["lift"]
        pose = read_pose2d(self.p("pose2d.npz"))
        self.stream.write(f"lift: 0/{len(pose)} frames\n")
        result = lift_pose2d(pose, lifter=lifter["path"] if c["lifter"] not in _registry()
                             else c["lifter"], height=self.cfg["subject"]["height"],
                             focal_px=c["focal_px"], fov_deg=c["fov_deg"],
                             subject=self.cfg["pose2d"]["person"], trust=c["trust"],
                             flip=c["flip"], heading=c["heading"],
                             reproject=float(c["reproject"]),
                             root_lowpass_hz=float(c["root_lowpass_hz"]))
        self.stream.write(f"lift: {len(pose)}/{len(pose)} frames (100%)\n")
        files = write_lift_outputs(result, self.out)
        # the TRC under the product's name: the lift module calls it keypoints3d.trc
        os.replace(files["trc"], self.p("markers.trc"))
        summary = result.trajectory.summary()
        info = {"lifter": result.spec.name, "subject": result.subject,
                "frames": len(result.series), "lifter_fps": round(result.fps, 1),
                "markers": list(result.markers.names), "world": summary,
                "mean_confidence": float(np.mean(result.markers.confidence))}
        weights = {"lifter": lifter}
        return [self.p("markers.trc"), files["confidence"], files["npz"]], info, weights

    def _import_keypoints(self):
        from opensim_bridge.markers import read_markers
        from opensim_bridge.trc import write_trc

        src = self.inputs.from_keypoints
        series = read_markers(src).to_metres()
        files = [write_trc(series, self.p("markers.trc"))] if src != self.p("markers.trc") \
            else [self.p("markers.trc")]
        conf = self.inputs.keypoint_confidence
        if conf is not None:
            load_confidence_csv(conf, series.names, series.time)   # checked before it is used
            if conf != self.p(CONFIDENCE_FILE):
                atomic_copy(conf, self.p(CONFIDENCE_FILE))
            files.append(self.p(CONFIDENCE_FILE))
        elif self.p(CONFIDENCE_FILE).exists():
            # a confidence file from an earlier video run must not weight these keypoints
            os.remove(self.p(CONFIDENCE_FILE))
        info = {"imported_from": str(src), "frames": len(series), "markers": list(series.names),
                "confidence_file": None if conf is None else str(conf)}
        return files, info, {}

    def _keypoints(self):
        """markers.trc with its confidences, gap-filled and low-passed as configured."""
        from opensim_bridge.filters import filter_series
        from opensim_bridge.trc import read_trc

        k = self.cfg["keypoints"]
        series = read_trc(self.p("markers.trc")).to_metres()
        conf_path = self._confidence_path()
        if conf_path is not None:
            series = series.copy(confidence=load_confidence_csv(conf_path, series.names,
                                                                series.time))
        if k["lowpass_hz"] > 0:
            from opensim_bridge.filters import nominal_rate

            rate = nominal_rate(series.time)
            if k["lowpass_hz"] >= 0.5 * rate:
                raise InputError(f"keypoints.lowpass_hz {k['lowpass_hz']:g} Hz is at or above "
                                 f"the Nyquist frequency of the keypoints ({0.5 * rate:g} Hz)",
                                 self.p("markers.trc"))
            series = filter_series(series, k["lowpass_hz"], k["filter_order"], k["max_gap_s"])
        return series

    def _stage_scale(self, s: dict):
        from opensim_bridge.builtin_model import write_builtin_model
        from opensim_bridge.keypoint_maps import pick_keypoint_map, write_keypoint_map
        from opensim_bridge.keypoint_scaling import GENERIC_FILE, scale_from_keypoints

        subj = self.cfg["subject"]
        files = []
        model = self._model_source()
        if model is None:
            model = write_builtin_model(self.p("model_builtin.osim"), height=subj["height"],
                                        mass=subj["mass"], sex=subj["sex"])
            files.append(model)
        kmap = pick_keypoint_map(model, self.cfg["model"]["keypoint_map"])
        series = self._keypoints()
        sc = self.cfg["scale"]
        res = scale_from_keypoints(model, series, subj["height"], subj["mass"], self.out,
                                   kmap=kmap, n_best_frames=sc["n_best_frames"],
                                   min_confidence=sc["min_confidence"],
                                   average_sides=sc["average_sides"],
                                   from_height=tuple(sc["from_height"]))
        files += [self.p(GENERIC_FILE), res.scale.model_path, res.scale.setup_xml,
                  res.scale.scale_factors_xml, res.report,
                  write_keypoint_map(kmap, self.p(KEYPOINT_MAP_FILE))]
        info = {"model": str(model), "keypoint_map": kmap.source or kmap.name,
                "keypoint_map_missing": list(kmap.missing), "height_ratio": res.height_ratio,
                "segments": {m.name: {"measured_m": round(m.measured, 4), "ratio": round(m.ratio, 4),
                                      "frames": m.n_frames} for m in res.segments},
                "factors": {b: [round(v, 4) for v in f] for b, f in sorted(res.factors.items())}}
        return [Path(f) for f in files], info, {}

    def _stage_ik(self, s: dict):
        from opensim_bridge.ik import run_ik
        from opensim_bridge.ik_settings import CoordinateTask, IKSettings
        from opensim_bridge.keypoint_maps import load_keypoint_map

        ik = self.cfg["ik"]
        kmap = load_keypoint_map(self.p(KEYPOINT_MAP_FILE))
        series = self._keypoints()
        if not ik["use_confidence"]:
            series = series.copy(confidence=None)
        markers = kmap.to_model_markers(series)
        markers.source = str(self.p("markers.trc"))
        weights = kmap.ik_weights([k for k in kmap.keypoints if k in series.names])
        names = kmap.marker_names
        unknown = [w for w in ik["weights"] if w not in names and w not in weights]
        if unknown:
            raise InputError(f"ik.weights names {', '.join(unknown)}, which the keypoint map "
                             f"({kmap.source or kmap.name}) does not have")
        for key, w in ik["weights"].items():
            weights[names.get(key, key)] = w
        weights = {m: w for m, w in weights.items() if w > 0}
        coordinates = _model_coordinates(self.p("model_scaled.osim"))
        priors = tuple(_prior_task(name, spec) for name, spec in ik["coordinate_priors"].items()
                       if name in coordinates)
        priors = tuple(t for t in priors if t.weight > 0)
        settings = IKSettings(accuracy=ik["accuracy"], coordinate_tasks=priors) \
            .with_marker_weights(weights)
        # Solve only where the subject is in view: frames before the first and after the last
        # detection would be NaN rows, which the force estimate and ID cannot use.
        seen = np.flatnonzero(np.isfinite(markers.data).all(axis=2).any(axis=1))
        if not len(seen):
            raise InputError("no 3D keypoint of the subject in any frame", markers.source)
        start = markers.time[seen[0]] if ik["start"] is None else ik["start"]
        end = markers.time[seen[-1]] if ik["end"] is None else ik["end"]
        stride = ik_stride(markers.time, ik["solve_rate_hz"])
        with self._bar("IK", "frames") as bar:
            res = run_ik(self.p("model_scaled.osim"), markers, settings, self.out,
                         jobs=ik["jobs"], start=start, end=end, joint_limits=ik["joint_limits"],
                         stride=stride, progress=bar.update)
        rms = res.marker_errors.column("marker_error_RMS")
        info = {"frames": len(res.coordinates.time), "markers": list(res.marker_names),
                "time_range": [float(start), float(end)],
                "weights": weights, "jobs": res.jobs, "stride": stride,
                "handoff_max_deg": round(res.handoff_max_deg, 4),
                "joint_limits": list(res.limited),
                "coordinate_priors": {t.name: [t.weight, t.value_type, t.value] for t in priors},
                "marker_rms_mm": {"mean": round(1000 * float(np.nanmean(rms)), 2),
                                  "median": round(1000 * float(np.nanmedian(rms)), 2),
                                  "max": round(1000 * float(np.nanmax(rms)), 2)},
                "per_marker_rms_mm": {m: round(1000 * float(np.sqrt(np.nanmean(e ** 2))), 2)
                                      for m, e in zip(res.marker_names, res.per_marker_errors.T)
                                      if np.isfinite(e).any()}}
        return list(res.files.values()), info, {}

    def _stage_id(self, s: dict):
        from opensim_bridge.contact import ContactSettings
        from opensim_bridge.grf_estimate import estimate_and_run_id

        g = self.cfg["grf"]
        contact = {k: tuple(v) if isinstance(v, list) else v for k, v in g["contact"].items()}
        id_lp = self.cfg["id"]["lowpass_hz"] or None
        res = estimate_and_run_id(self.p("model_scaled.osim"), self.p("ik.mot"), self.out,
                                  lowpass_hz=g["lowpass_hz"], id_lowpass_hz=id_lp,
                                  contact=ContactSettings(**contact), transition=g["transition"],
                                  height_m=self.cfg["subject"]["height"])
        events = [{"name": e.name, "time": e.time, "context": e.context}
                  for e in res.estimate.events]
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ev_path = self.state_dir / "gait_events.json"
        with atomic_write(ev_path) as fh:
            json.dump(events, fh, indent=1)
        files = [res.grf_mot, res.external_loads_xml, res.id.id_sto, res.id.setup_xml, ev_path]
        est = res.estimate
        info = {"events": events,
                "residuals": [dataclasses.asdict(r) for r in res.residuals],
                "body_weight_n": round(est.body_weight, 2),
                "flight_frames": int(est.flight.sum()),
                "peak_vertical_force_bw": round(float(est.total_force[:, 1].max() /
                                                      est.body_weight), 3),
                "warnings": list(est.warnings) + list(getattr(res.id, "warnings", []))}
        return [Path(f) for f in files if f is not None], info, {}

    def _stage_c3d(self, s: dict):
        from opensim_bridge.c3d_write import frame_times, grf_on_analog_grid, resample_table, \
            write_c3d
        from opensim_bridge.external_loads import read_grf
        from opensim_bridge.storage import read_table
        from opensim_bridge.timeseries import Event
        from opensim_bridge.trc import read_trc
        from opensim_bridge.vicon_outputs import joint_powers

        markers = read_trc(self.p("markers.trc"))
        ik = read_table(self.p("ik.mot"))
        idt = read_table(self.p("id.sto"))
        grf = read_grf(self.p("grf.mot"))
        events = [Event(e["name"], float(e["time"]), e["context"]) for e in
                  json.loads((self.state_dir / "gait_events.json").read_text(encoding="utf-8"))]
        # the frames are IK's (a --start/--end window, or all the keypoint frames)
        lo, hi = ik.time[0] - 1e-9, ik.time[-1] + 1e-9
        keep = (markers.time >= lo) & (markers.time <= hi)
        markers = markers.frames(np.nonzero(keep)[0])
        t = frame_times(markers.time, markers.source)
        markers = markers.copy(time=t)
        powers = resample_table(joint_powers(ik, resample_table(idt, ik.time)), t)
        path = write_c3d(self.p("motion.c3d"), markers=markers, angles=resample_table(ik, t),
                         moments=resample_table(idt, t), powers=powers,
                         grf=grf_on_analog_grid(grf, t), events=events,
                         model=str(self.p("model_scaled.osim")),
                         body_mass_kg=self.cfg["subject"]["mass"], axes=s["axes"])
        return [path], {"frames": len(t), "events": len(events)}, {}

    def _stage_blender(self, s: dict):
        from opensim_bridge.blender_export import export_blender

        res = export_blender(self.p("model_scaled.osim"), self.p("ik.mot"), self.p("motion.kvb"),
                             markers=self.p("markers.trc"), grf=self.p("grf.mot"),
                             video=self.inputs.video)
        info = {"frames": res.frame_count, "bodies": res.body_count,
                "warnings": list(res.warnings)}
        return [res.path], info, {}

    # ------------------------------------------------------------------ quality
    def _quality_safe(self) -> dict:
        try:
            return self._quality()
        except Exception as exc:  # noqa: BLE001 - quality flags must never hide the result
            return {"error": f"quality flags could not be computed: {exc}"}

    def _quality(self) -> dict:
        q: dict[str, Any] = {}
        thr = self.cfg["quality"]
        pose_path = self.p("pose2d.npz")
        if pose_path.is_file() and self.inputs.from_keypoints is None:
            from .pose2d import read_pose2d
            pose = read_pose2d(pose_path)
            if pose.subject is not None:
                present = pose.present()[pose.person_ids.index(pose.subject)]
                q["subject_lost"] = _flag(~present, pose.time, "frames where the subject was "
                                          "not detected")
        if self.p("markers.trc").is_file():
            from opensim_bridge.trc import read_trc
            m = read_trc(self.p("markers.trc"))
            if "subject_lost" not in q:
                q["subject_lost"] = _flag(np.isnan(m.data).all(axis=(1, 2)), m.time,
                                          "frames without any keypoint")
            conf_path = self._confidence_path()
            if conf_path is not None:
                conf = load_confidence_csv(conf_path, m.names, m.time)
                mean = conf.mean(axis=1)
                q["low_confidence"] = _flag(mean < thr["low_confidence"], m.time,
                                            f"frames whose mean keypoint confidence is below "
                                            f"{thr['low_confidence']:g}")
                q["mean_confidence"] = round(float(mean.mean()), 3)
        if self.p("ik_marker_errors.sto").is_file():
            from opensim_bridge.storage import read_table
            e = read_table(self.p("ik_marker_errors.sto"))
            rms = 1000 * e.column("marker_error_RMS")
            limit = max(thr["ik_outlier_mm"], 3 * float(np.median(rms)))
            q["ik_error_outliers"] = _flag(rms > limit, e.time, f"frames whose IK marker RMS "
                                           f"error exceeds {limit:.1f} mm")
            q["ik_marker_rms_mm"] = {"median": round(float(np.median(rms)), 2),
                                     "max": round(float(rms.max()), 2)}
        ik_rec = self.outcomes.get("ik")
        if ik_rec is not None and ik_rec.info.get("joint_limits") and self.p("ik.mot").is_file():
            q["at_joint_limits"] = _limit_flags_for(self.p("ik.mot"), self.p("model_scaled.osim"),
                                                    ik_rec.info["joint_limits"])
        rec = self.outcomes.get("id")
        if rec is not None and rec.info.get("residuals"):
            q["pelvis_residuals"] = {r["column"]: {"rms": round(r["rms"], 2), "unit": r["unit"],
                                                   "rms_pct": round(r["rms_pct"], 2)}
                                     for r in rec.info["residuals"]}
        return q


# Coordinates a few keypoints barely determine (forearm and wrist rotation from two knuckles,
# subtalar and toes from a heel and two toes): their ranges are what holds them, so resting on a
# bound there says nothing about the pose (the Sports2D demo: pro_sup at 90 deg in 90 % of
# frames). Left out of the at_joint_limits flag.
_WEAKLY_SEEN = ("pro_sup", "wrist_flex", "wrist_dev", "subtalar_angle", "mtp_angle")


def _limit_flags_for(motion, model_path, limited) -> dict:
    """The ``at_joint_limits`` quality flag: frames where IK held a limited coordinate at an end
    of its range (:func:`opensim_bridge.ik_solver.frames_at_limits`), with the frame count of
    each such coordinate, most first."""
    import math

    from opensim_bridge.ik_solver import frames_at_limits
    from opensim_bridge.osim_model import load_model
    from opensim_bridge.storage import read_table

    ik = read_table(motion)
    model = load_model(model_path)
    cs = model.getCoordinateSet()
    ranges = {}
    for name in limited:
        if name.startswith(_WEAKLY_SEEN):
            continue
        if cs.contains(name) and name in ik.labels:
            c = cs.get(name)
            ranges[name] = (math.degrees(c.getRangeMin()), math.degrees(c.getRangeMax()))
    hits = frames_at_limits({n: ik.column(n) for n in ranges}, ranges)
    anyhit = np.logical_or.reduce([*hits.values(), np.zeros(len(ik.time), dtype=bool)])
    flag = _flag(anyhit, ik.time, "frames where IK held a joint at the end of its range (the "
                 "model cannot take the pose the keypoints show there)")
    counts = sorted(((int(m.sum()), n) for n, m in hits.items() if m.any()), reverse=True)
    flag["coordinates"] = {n: k for k, n in counts}
    return flag


def _registry() -> set[str]:
    from models.lifter_registry import LIFTER_REGISTRY
    return set(LIFTER_REGISTRY)


def run_pipeline(out_dir, cfg: RunConfig, inputs: RunInputs, **kwargs) -> RunResult:
    """Build a :class:`Pipeline` and run it."""
    return Pipeline(out_dir, cfg, inputs, **kwargs).run()


_WARM_UP: "threading.Thread | None" = None


def _start_warm_up() -> None:
    global _WARM_UP
    import threading

    if _WARM_UP is None or not _WARM_UP.is_alive():
        _WARM_UP = threading.Thread(target=_warm_up, name="kinevid-warm-up", daemon=True)
        _WARM_UP.start()


def _join_warm_up(timeout: float = 60.0) -> None:
    if _WARM_UP is not None:
        _WARM_UP.join(timeout)


def _warm_up() -> None:
    """Import what the later stages need while the 2D stage runs (OpenSim, SciPy's filters:
    ~1 s of a cold start otherwise spent between stages). Not PyTorch: kinevid's own lifter
    runs in numpy, and a run that lifts with a VideoPose3D model imports it in its lift stage."""
    import importlib

    for name in ("scipy.signal", "models.lift_infer", "models.lifter_numpy", "opensim",
                 "opensim_bridge.ik", "opensim_bridge.keypoint_scaling",
                 "opensim_bridge.grf_estimate", "opensim_bridge.inverse_dynamics"):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the stage that needs it reports the problem
            return


def ik_stride(time: np.ndarray, solve_rate_hz: float | None) -> int:
    """Every how many frames IK is solved so that it still runs at ``solve_rate_hz`` or more
    (1 when the rate is not set or the frames come no faster than it)."""
    from opensim_bridge.filters import nominal_rate

    if not solve_rate_hz or len(time) < 2:
        return 1
    return max(1, int(math.floor(nominal_rate(time) / float(solve_rate_hz) + 1e-6)))


def frame_step(video, max_fps: float | None) -> int:
    """Every how many frames the 2D stage estimates so as not to exceed ``max_fps``."""
    if not max_fps:
        return 1
    from .video import open_video

    fps = open_video(video).info.fps
    if not fps or not math.isfinite(fps) or fps <= max_fps * 1.01:
        return 1
    return max(1, int(math.ceil(fps / max_fps - 0.01)))


def _model_coordinates(model_path) -> set[str]:
    """Names of a model's coordinates (read from the .osim with OpenSim)."""
    from opensim_bridge.osim_model import load_model

    model = load_model(model_path)   # keep the model alive while its coordinate set is read
    coords = model.getCoordinateSet()
    return {coords.get(i).getName() for i in range(coords.getSize())}


def _prior_task(name: str, spec):
    """An IK coordinate task from a ``ik.coordinate_priors`` entry: a weight (towards the model's
    default value) or ``{"weight": w, "value_deg": v}`` (``"value"`` in model units)."""
    import math

    from opensim_bridge.ik_settings import CoordinateTask

    if isinstance(spec, dict):
        unknown = set(spec) - {"weight", "value_deg", "value"}
        if unknown or "weight" not in spec:
            raise InputError(f"ik.coordinate_priors.{name} takes weight and value_deg or value, "
                             f"got {sorted(spec)}")
        value = math.radians(spec["value_deg"]) if "value_deg" in spec else spec.get("value")
        if value is None:
            return CoordinateTask(name, float(spec["weight"]))
        return CoordinateTask(name, float(spec["weight"]), value_type="manual_value",
                              value=float(value))
    return CoordinateTask(name, float(spec))
