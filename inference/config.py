"""Settings of ``kinevid run``: every one, with its default, its check and its meaning.

Sources, later ones winning: the defaults here < a TOML file (``--config kinevid.toml``) <
the command line (its named options, then ``--set SECTION.KEY=VALUE`` for any setting).
A TOML file has one table per section::

    [subject]
    height = 1.75          # m
    mass = 70.0            # kg
    sex = "f"

    [ik]
    jobs = 2

    [grf.contact]          # opensim_bridge.contact.ContactSettings fields
    height_enter_m = 0.04

Unknown sections or keys, and values of the wrong type or outside their range, raise
:class:`~opensim_bridge.errors.InputError` naming the file and the setting, so a typo never
silently runs with a default. :func:`settings_dict` gives the complete, resolved settings (what
``run.json`` records); each pipeline stage's cache key holds only its own sections.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import tomllib
from pathlib import Path
from typing import Any

from opensim_bridge.errors import InputError

__all__ = ["Setting", "SCHEMA", "TIERS", "RunConfig", "apply_tier", "default_config", "load_config", "apply_overrides",
           "parse_set", "settings_dict", "describe"]


@dataclasses.dataclass(frozen=True)
class Setting:
    default: Any
    kind: type | tuple[type, ...]           # accepted Python type(s); None always allowed if optional
    help: str
    optional: bool = False                  # None (TOML: leave it out / "none") is allowed
    choices: tuple | None = None
    minimum: float | None = None            # inclusive
    maximum: float | None = None            # inclusive
    positive: bool = False                  # strictly > 0


def _contact_settings() -> dict[str, Setting]:
    from opensim_bridge.contact import ContactSettings

    out = {}
    for f in dataclasses.fields(ContactSettings):
        default = f.default
        kind = (list, tuple) if isinstance(default, tuple) else (int, float)
        out[f.name] = Setting(default, kind, f"opensim_bridge.contact.ContactSettings.{f.name}")
    return out


#: 2D pose backends (here, not in inference.pose2d_run, so that building the command line
#: imports nothing heavy).
POSE_CHOICES = ("auto", "blazepose", "vitpose-s", "vitpose-b", "vitpose-l", "vitpose-h")

#: section -> key -> Setting. The pipeline reads nothing that is not here.
SCHEMA: dict[str, dict[str, Setting]] = {
    "run": {
        "tier": Setting("standard", str, "preset of settings applied before the config file "
                        "and the options: standard, or light (real-time on 2 cores: the most "
                        "prominent person only, at most 30 frames per second, no overlay video, IK at 15 Hz)",
                        choices=("standard", "light")),
    },
    "subject": {
        "height": Setting(None, (int, float), "subject height, m (required)", optional=True,
                          minimum=0.5, maximum=2.6),
        "mass": Setting(None, (int, float), "subject mass, kg (required)", optional=True,
                        minimum=10.0, maximum=400.0),
        "sex": Setting("m", str, "anthropometric table of the built-in model", choices=("m", "f")),
    },
    "model": {
        "model": Setting("builtin", str, "'builtin' or the path of an OpenSim model (.osim)"),
        "keypoint_map": Setting(None, str, "custom keypoint-to-marker map (TOML); default: the "
                                "shipped map that matches the model, else an automatic one",
                                optional=True),
    },
    "pose2d": {
        "pose": Setting("auto", str, "2D backend: auto, blazepose, vitpose-s/b/l/h",
                        choices=POSE_CHOICES),
        "person": Setting(None, int, "track id of the subject (default: chosen automatically)",
                          optional=True, minimum=0),
        "max_frames": Setting(None, int, "process only the first N frames", optional=True,
                              minimum=1),
        "max_people": Setting(4, int, "persons followed at once (1: the most prominent person "
                              "only, fastest)", minimum=1, maximum=64),
        "max_fps": Setting(None, (int, float), "estimate at most this many frames per second: "
                           "every 2nd frame of a 60 fps video at 30 (default: every frame)",
                           optional=True, minimum=1.0),
        "readers": Setting(2, int, "BlazePose: threads that each follow the persons through one "
                           "consecutive part of the video (MediaPipe and FFmpeg run outside "
                           "Python's lock, so 2 use 2 cores)", minimum=1, maximum=64),
        "device": Setting("auto", str, "ViTPose device: auto, cpu, cuda, mps"),
        "overlay": Setting(True, bool, "write pose2d_overlay.mp4"),
    },
    "lift": {
        "lifter": Setting("kinevid", str, "2D->3D lifter: kinevid, videopose3d-243, "
                          "videopose3d-cpn-243, or a checkpoint path"),
        "focal_px": Setting(None, (int, float), "camera focal length in pixels (default: video "
                            "metadata, else a 60 deg field of view)", optional=True, positive=True),
        "fov_deg": Setting(None, (int, float), "camera field of view across the longer side, deg",
                           optional=True, minimum=1.0, maximum=179.0),
        "flip": Setting(True, bool, "test-time flip augmentation of the lifter"),
        "reproject": Setting(1.0, (int, float), "move each lifted keypoint, at its lifted depth, "
                             "onto the camera ray of its 2D detection by this weight x its 2D "
                             "confidence (0: keep the lifter's x/y)", minimum=0.0, maximum=1.0),
        "root_lowpass_hz": Setting(6.0, (int, float), "zero-lag Butterworth cut-off for the "
                                   "camera-frame root trajectory (each frame's solve turns 2D "
                                   "noise into depth noise); 0 = no filter", minimum=0.0),
        "heading": Setting("auto", str, "world X axis: auto (direction of travel when the subject "
                           "walks somewhere, else the direction they face), travel, facing, or "
                           "camera (the camera's x axis)", choices=("auto", "travel", "facing",
                                                                     "camera")),
        "trust": Setting(False, bool, "accept downloaded lifter weights whose sha256 is not on "
                         "record"),
    },
    "keypoints": {
        "lowpass_hz": Setting(6.0, (int, float), "zero-lag Butterworth cut-off for the 3D "
                              "keypoints before scaling and IK; 0 = no filter", minimum=0.0),
        "filter_order": Setting(4, int, "order of the single filter pass", minimum=1, maximum=8),
        "max_gap_s": Setting(0.1, (int, float), "gaps up to this long are filled before "
                             "filtering, s", minimum=0.0),
    },
    "scale": {
        "n_best_frames": Setting(50, int, "frames (most confident) a segment length is measured "
                                 "over", minimum=1),
        "min_confidence": Setting(0.5, (int, float), "keypoint pair confidence preferred for "
                                  "measuring", minimum=0.0, maximum=1.0),
        "average_sides": Setting(True, bool, "average left and right segment ratios"),
        "from_height": Setting(["foot"], (list, tuple), "segments (keypoint_scaling.SEGMENTS "
                               "names) scaled by the subject's height instead of their "
                               "measured length. The feet by default: a lifter gives the heel "
                               "to big toe distance ~7 % short (regression towards the ankle), "
                               "the model's feet scaled to it turn that into an ankle angle "
                               "bias (synthetic walk: ankle RMSE 6.1 -> 4.9 deg, knees 3.5 -> "
                               "2.7); anthropometric foot length (0.15 x height) is closer"),
    },
    "ik": {
        "jobs": Setting(None, int, "IK worker processes (default: all cores)", optional=True,
                        minimum=1),
        "accuracy": Setting(1e-5, (int, float), "solver accuracy (kinevid uses at most 1e-7)",
                            positive=True),
        "use_confidence": Setting(True, bool, "weight each marker per frame by its 3D "
                                  "confidence"),
        "joint_limits": Setting(True, bool, "keep every joint coordinate within its range in "
                                "the model (OpenSim's bounded solve, as with clamped "
                                "coordinates). Without it, frames where video keypoints are "
                                "unsure can end in impossible poses (a leg turned 180 deg at "
                                "the hip, an ankle at 140 deg) that later frames track"),
        "solve_rate_hz": Setting(0.0, (int, float), "solve IK on every n-th frame only, n the "
                                 "largest that keeps at least this rate (frame rate / this, "
                                 "rounded down), and fill the frames between by monotone cubic "
                                 "interpolation (marker errors there by forward kinematics); "
                                 "0 = every frame. Keypoints are low-passed "
                                 "(keypoints.lowpass_hz) first, so a rate well above that "
                                 "cut-off loses little", minimum=0.0),
        "weights": Setting({}, dict, "marker weight overrides: {keypoint or marker: weight}"),
        "coordinate_priors": Setting(
            {"lumbar_extension": {"weight": 0.02, "value_deg": -20.0},
             "lumbar_bending": 0.02, "lumbar_rotation": 0.02,
             "mtp_angle_r": 0.01, "mtp_angle_l": 0.01}, dict,
            "weak pulls of coordinates towards a value {coordinate: weight, or {weight, "
            "value_deg}} (default value: the model's default); a config's entries add to these "
            "defaults or replace them one by one (weight 0 removes one). Video keypoints put "
            "the hips and mid-hip on one line, so the pelvis tilt is unobservable and trades "
            "freely against lumbar extension and hip flexion; the prior "
            "settles the split at the lumbar extension of typical gait in Rajagopal-convention "
            "models (about -20 deg in the reference walks in ../shared/data). The toes (mtp) "
            "pull towards neutral: a heel and two toe keypoints cannot tell the toe joint from "
            "the ankle, and a free mtp bends 25-30 deg to absorb a few mm of toe-keypoint error, "
            "taking the ankle angle with it (synthetic walk: ankle RMSE 6.1 -> 3.6 deg); real "
            "toe extension at push-off is then under-reported. Coordinates the model lacks are "
            "ignored"),
        "start": Setting(None, (int, float), "first time to process, s", optional=True),
        "end": Setting(None, (int, float), "last time to process, s", optional=True),
    },
    "grf": {
        "lowpass_hz": Setting(6.0, (int, float), "centre-of-mass filter cut-off (running: "
                              "12-20)", positive=True),
        "transition": Setting("ren2008", str, "double-support law", choices=("ren2008", "share")),
        "contact": Setting({}, dict, "contact detection thresholds (ContactSettings fields)"),
    },
    "id": {
        "lowpass_hz": Setting(6.0, (int, float), "coordinate filter cut-off of the ID tool; "
                              "0 = none", minimum=0.0),
    },
    "output": {
        "c3d": Setting(True, bool, "write motion.c3d"),
        "blender": Setting(True, bool, "write motion.kvb (Blender add-on)"),
        "c3d_axes": Setting("opensim-to-lab", str, "lab frame of the C3D (see kinevid c3d "
                            "from-opensim --axes)"),
    },
    "quality": {
        "low_confidence": Setting(0.3, (int, float), "a frame whose mean keypoint confidence is "
                                  "below this is flagged", minimum=0.0, maximum=1.0),
        "ik_outlier_mm": Setting(40.0, (int, float), "a frame whose IK marker RMS error exceeds "
                                 "this (or 3x the median) is flagged, mm", positive=True),
    },
}


#: Settings each tier changes from the defaults (a config file and the options still win).
TIERS: dict[str, dict[str, Any]] = {
    "standard": {},
    "light": {"pose2d.max_people": 1, "pose2d.max_fps": 30.0, "pose2d.readers": 2,
              "pose2d.overlay": False, "ik.joint_limits": True, "ik.solve_rate_hz": 15.0},
}


@dataclasses.dataclass
class RunConfig:
    """Resolved settings: ``cfg["ik"]["jobs"]``; ``sources`` says where each came from."""

    values: dict[str, dict[str, Any]]
    sources: dict[str, str] = dataclasses.field(default_factory=dict)   # "sec.key" -> origin

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.values[section]

    def section(self, *names: str) -> dict[str, dict[str, Any]]:
        return {n: copy.deepcopy(self.values[n]) for n in names}


def default_config() -> RunConfig:
    values = {sec: {k: copy.deepcopy(s.default) for k, s in keys.items()}
              for sec, keys in SCHEMA.items()}
    return RunConfig(values, {f"{s}.{k}": "default" for s, ks in SCHEMA.items() for k in ks})


def _check(section: str, key: str, value: Any, origin: str | None) -> Any:
    if section not in SCHEMA:
        raise InputError(f"unknown section [{section}]; known: {', '.join(SCHEMA)}", origin)
    if key not in SCHEMA[section]:
        raise InputError(f"unknown setting {section}.{key}; [{section}] has "
                         f"{', '.join(SCHEMA[section])}", origin)
    s = SCHEMA[section][key]
    name = f"{section}.{key}"
    if value is None or (isinstance(value, str) and value.lower() == "none" and s.optional):
        if not s.optional:
            raise InputError(f"{name} cannot be empty", origin)
        return None
    kinds = s.kind if isinstance(s.kind, tuple) else (s.kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise InputError(f"{name} must be {_kind_name(kinds)}, not {value!r}", origin)
    if not isinstance(value, kinds):
        raise InputError(f"{name} must be {_kind_name(kinds)}, not {value!r}", origin)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise InputError(f"{name} must be finite, not {value!r}", origin)
        if s.positive and not value > 0:
            raise InputError(f"{name} must be > 0, not {value!r}", origin)
        if s.minimum is not None and value < s.minimum:
            raise InputError(f"{name} must be >= {s.minimum:g}, not {value!r}", origin)
        if s.maximum is not None and value > s.maximum:
            raise InputError(f"{name} must be <= {s.maximum:g}, not {value!r}", origin)
        if float in kinds and int in kinds:
            value = float(value)
    if s.choices is not None and value not in s.choices:
        raise InputError(f"{name} must be one of {', '.join(map(str, s.choices))}, not {value!r}",
                         origin)
    if name == "scale.from_height":
        if not all(isinstance(v, str) for v in value):
            raise InputError(f"{name} must be a list of segment names, not {value!r}", origin)
        value = [str(v) for v in value]
    if name == "ik.weights":
        for m, w in value.items():
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0:
                raise InputError(f"ik.weights.{m} must be a weight >= 0, not {w!r}", origin)
        value = {str(m): float(w) for m, w in value.items()}
    if name == "grf.contact":
        fields = _contact_settings()
        out = {}
        for k, v in value.items():
            if k not in fields:
                raise InputError(f"unknown setting grf.contact.{k}; known: {', '.join(fields)}",
                                 origin)
            if isinstance(v, bool) or not isinstance(v, fields[k].kind):
                raise InputError(f"grf.contact.{k} must be like {fields[k].default!r}, not {v!r}",
                                 origin)
            out[k] = [float(x) for x in v] if isinstance(v, (list, tuple)) else float(v)
        value = out
    return value


def _kind_name(kinds) -> str:
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "text",
             dict: "a table", list: "a list", tuple: "a list"}
    return " or ".join(dict.fromkeys(names[k] for k in kinds))


def _merge(cfg: RunConfig, data: dict, origin: str) -> None:
    for section, table in data.items():
        if section not in SCHEMA:
            raise InputError(f"unknown section [{section}]; known: {', '.join(SCHEMA)}", origin)
        if not isinstance(table, dict):
            raise InputError(f"[{section}] must be a table of settings", origin)
        for key, value in table.items():
            _set(cfg, section, key, _check(section, key, value, origin))
            cfg.sources[f"{section}.{key}"] = origin


# Tables whose entries are added to (or replace entries of) the current table instead of
# replacing it: a config that adds one coordinate prior keeps the default ones.
ADDITIVE = {("ik", "coordinate_priors")}


def _set(cfg: RunConfig, section: str, key: str, value: Any) -> None:
    if (section, key) in ADDITIVE:
        value = {**cfg.values[section][key], **value}
    cfg.values[section][key] = value


def load_config(path: str | os.PathLike | None = None, base: RunConfig | None = None) -> RunConfig:
    """Defaults (or ``base``) overlaid with the TOML file ``path`` (when given)."""
    cfg = copy.deepcopy(base) if base is not None else default_config()
    if path is None:
        return cfg
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError("config file not found", path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not a valid TOML file: {exc}", path) from None
    _merge(cfg, data, str(path))
    return cfg


def parse_set(text: str) -> tuple[str, str, Any]:
    """``"ik.jobs=2"`` -> ("ik", "jobs", 2); the value is read as TOML (``true``, ``1.5``,
    ``"text"``, ``{a = 1}``), else kept as plain text."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise InputError(f"--set {text!r}: expected SECTION.KEY=VALUE, e.g. ik.jobs=2")
    lhs, raw = text.split("=", 1)
    section, key = (p.strip() for p in lhs.split(".", 1))
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return section, key, value


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any], origin: str = "command line") -> RunConfig:
    """A copy of ``cfg`` with ``{"section.key": value}`` set (None values are skipped: an
    option the user did not give)."""
    out = copy.deepcopy(cfg)
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, key = dotted.split(".", 1)
        _set(out, section, key, _check(section, key, value, origin))   # raises when unknown
        out.sources[dotted] = origin
    return out


def apply_tier(cfg: RunConfig, tier: str, origin: str = "tier") -> RunConfig:
    """A copy of ``cfg`` with the tier's preset settings and ``run.tier`` set."""
    if tier not in TIERS:
        raise InputError(f"unknown tier {tier!r}; known: {', '.join(TIERS)}")
    out = apply_overrides(cfg, TIERS[tier], origin=f"{origin} {tier}")
    return apply_overrides(out, {"run.tier": tier}, origin=origin)


def settings_dict(cfg: RunConfig) -> dict[str, dict[str, Any]]:
    """All settings as plain JSON-able data."""
    return copy.deepcopy(cfg.values)


def describe() -> str:
    """Every setting with its default and meaning (for ``kinevid run --help-config``)."""
    lines = []
    for section, keys in SCHEMA.items():
        lines.append(f"[{section}]")
        for key, s in keys.items():
            default = "none" if s.default is None else repr(s.default)
            lines.append(f"  {key} = {default}    # {s.help}")
    return "\n".join(lines)
