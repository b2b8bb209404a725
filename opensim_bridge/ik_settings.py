"""Inverse-kinematics task weights and solver settings, read from an OpenSim IK setup XML or a
small TOML file.

What a task set means (as in OpenSim's InverseKinematicsTool):

* Only markers with an applied ``IKMarkerTask`` take part; markers in the data without a task
  are ignored. With no settings at all (``run_ik(..., settings=None)``) every marker common to
  model and data gets weight 1.
* ``IKCoordinateTask`` pulls a coordinate towards a value: ``default_value`` (the model's
  default), ``manual_value`` (``value``, in the model's internal units, i.e. radians for
  rotational coordinates, exactly as OpenSim's tool reads it) or ``from_file`` (the column of
  ``coordinate_file``, a .mot/.sto).

TOML form::

    accuracy = 1e-5
    constraint_weight = 20          # omitted: inf (constraints strictly enforced)
    time_range = [0.4, 1.6]
    coordinate_file = "coords.mot"  # relative to the TOML file
    [markers]
    "R.ASIS" = 10
    "L.ASIS" = { weight = 10, apply = true }
    [coordinates]
    subtalar_angle_r = { weight = 1000, value = 0 }          # manual value, radians / metres
    mtp_angle_r = { weight = 1000, value_deg = 5 }           # manual value given in degrees
    knee_angle_r = { weight = 1, value_type = "from_file" }
    lumbar_extension = 100                                   # default_value with weight 100
"""
from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from pathlib import Path
from typing import Iterable

import defusedxml
from defusedxml import ElementTree as DET

from .errors import InputError

VALUE_TYPES = ("default_value", "manual_value", "from_file")


@dataclasses.dataclass(frozen=True)
class MarkerTask:
    name: str
    weight: float = 1.0
    apply: bool = True


@dataclasses.dataclass(frozen=True)
class CoordinateTask:
    name: str
    weight: float = 1.0
    apply: bool = True
    value_type: str = "default_value"
    #: Target for ``manual_value``, in model units (radians or metres).
    value: float = 0.0


@dataclasses.dataclass(frozen=True)
class IKSettings:
    marker_tasks: tuple[MarkerTask, ...] = ()
    coordinate_tasks: tuple[CoordinateTask, ...] = ()
    #: OpenSim's default: constraints strictly enforced.
    constraint_weight: float = math.inf
    accuracy: float = 1e-5
    time_range: tuple[float, float] | None = None
    #: Absolute path of the coordinate observations for ``from_file`` tasks.
    coordinate_file: str | None = None
    #: The file these settings came from, for error messages.
    source: str | None = None

    @property
    def marker_weights(self) -> dict[str, float]:
        """Applied marker tasks, name -> weight, in task order."""
        return {t.name: float(t.weight) for t in self.marker_tasks if t.apply}

    @property
    def applied_coordinate_tasks(self) -> tuple[CoordinateTask, ...]:
        return tuple(t for t in self.coordinate_tasks if t.apply)

    def without_markers(self, names: Iterable[str]) -> "IKSettings":
        """A copy without the tasks of ``names``: what OpenSim's tool does silently with tasks
        whose marker is missing from the data (e.g. virtual joint-centre markers)."""
        drop = set(names)
        return dataclasses.replace(
            self, marker_tasks=tuple(t for t in self.marker_tasks if t.name not in drop))

    def with_marker_weights(self, weights: dict[str, float]) -> "IKSettings":
        """A copy whose marker tasks are exactly ``weights`` (all applied)."""
        return dataclasses.replace(
            self, marker_tasks=tuple(MarkerTask(n, float(w)) for n, w in weights.items()))


# --------------------------------------------------------------------------- loading
def load_ik_settings(path: str | os.PathLike) -> IKSettings:
    """Read IK settings from an OpenSim setup/task-set XML or a TOML file (by suffix)."""
    path = Path(path)
    src = os.fspath(path)
    if not path.is_file():
        raise InputError("IK settings file not found" if not path.exists() else "not a file", src)
    if path.suffix.lower() == ".toml":
        return _load_toml(path)
    return _load_xml(path)


def _float(text: str | None, what: str, src: str) -> float:
    t = (text or "").strip()
    low = t.lower()
    if low in ("inf", "infinity", "+inf"):
        return math.inf
    try:
        return float(t)
    except ValueError:
        raise InputError(f"{what}: cannot read {t!r} as a number", src) from None


def _bool(text: str | None, what: str, src: str) -> bool:
    t = (text or "").strip().lower()
    if t in ("true", "1", "yes"):
        return True
    if t in ("false", "0", "no"):
        return False
    raise InputError(f"{what}: expected true or false, found {t!r}", src)


def _parse_xml(path: Path):
    src = os.fspath(path)
    try:
        return DET.parse(src).getroot()
    except DET.ParseError as exc:
        raise InputError(f"not valid XML: {exc}", src) from None
    except (defusedxml.DefusedXmlException, ValueError) as exc:
        raise InputError(f"XML rejected for safety ({type(exc).__name__})", src) from None
    except OSError as exc:
        raise InputError(f"cannot read IK settings: {exc.strerror or exc}", src) from None


def _child_text(elem, tag: str) -> str | None:
    child = elem.find(tag)
    return None if child is None or child.text is None else child.text.strip()


def _tasks_from_taskset(taskset, src: str, base: Path, depth: int = 0):
    """Tasks of an <IKTaskSet>, following ``file="..."`` references to a separate task file."""
    ref = taskset.get("file")
    if ref:
        if depth > 4:
            raise InputError("IKTaskSet file references nest too deeply", src)
        ref_path = (base / ref.strip()).resolve()
        if not ref_path.is_file():
            raise InputError(f"the IKTaskSet refers to task file {ref.strip()!r}, which does not "
                             f"exist (looked for {ref_path})", src)
        root = _parse_xml(ref_path)
        inner = root if root.tag == "IKTaskSet" else root.find(".//IKTaskSet")
        if inner is None:
            raise InputError("no <IKTaskSet> in the task file", os.fspath(ref_path))
        return _tasks_from_taskset(inner, os.fspath(ref_path), ref_path.parent, depth + 1)
    markers, coords = [], []
    objects = taskset.find("objects")
    for task in (list(objects) if objects is not None else []):
        name = (task.get("name") or "").strip()
        if task.tag not in ("IKMarkerTask", "IKCoordinateTask"):
            continue
        if not name:
            raise InputError(f"an {task.tag} has no name", src)
        what = f"{task.tag} {name!r}"
        weight = _float(_child_text(task, "weight") or "0", f"{what} weight", src)
        apply = _bool(_child_text(task, "apply") or "true", f"{what} apply", src)
        if weight < 0 or math.isnan(weight):
            raise InputError(f"{what}: weight must be >= 0, got {weight}", src)
        if task.tag == "IKMarkerTask":
            markers.append(MarkerTask(name, weight, apply))
        else:
            vt = (_child_text(task, "value_type") or "default_value").strip()
            if vt not in VALUE_TYPES:
                raise InputError(f"{what}: value_type {vt!r} is not one of {', '.join(VALUE_TYPES)}",
                                 src)
            value = _float(_child_text(task, "value") or "0", f"{what} value", src)
            coords.append(CoordinateTask(name, weight, apply, vt, value))
    return markers, coords


def _resolve_file(text: str | None, base: Path) -> str | None:
    t = (text or "").strip()
    if not t or t == "Unassigned":
        return None
    return os.fspath((base / t).resolve())


def _load_xml(path: Path) -> IKSettings:
    src = os.fspath(path)
    root = _parse_xml(path)
    tool = root if root.tag in ("InverseKinematicsTool", "IKTaskSet") else None
    if tool is None:
        tool = root.find(".//InverseKinematicsTool")
    if tool is None:
        tool = root.find(".//IKTaskSet")
    if tool is None:
        raise InputError("no <InverseKinematicsTool> or <IKTaskSet> element: not an OpenSim IK "
                         "setup or task file", src)
    if tool.tag == "IKTaskSet":
        markers, coords = _tasks_from_taskset(tool, src, path.parent)
        return _check(IKSettings(tuple(markers), tuple(coords), source=src))
    taskset = tool.find("IKTaskSet")
    markers, coords = _tasks_from_taskset(taskset, src, path.parent) if taskset is not None \
        else ([], [])
    cw = _child_text(tool, "constraint_weight")
    acc = _child_text(tool, "accuracy")
    tr = _child_text(tool, "time_range")
    time_range = None
    if tr:
        parts = tr.split()
        if len(parts) != 2:
            raise InputError(f"time_range must hold two numbers, found {tr!r}", src)
        time_range = (_float(parts[0], "time_range", src), _float(parts[1], "time_range", src))
    return _check(IKSettings(
        tuple(markers), tuple(coords),
        constraint_weight=_float(cw, "constraint_weight", src) if cw else math.inf,
        accuracy=_float(acc, "accuracy", src) if acc else 1e-5,
        time_range=time_range,
        coordinate_file=_resolve_file(_child_text(tool, "coordinate_file"), path.parent),
        source=src))


def _load_toml(path: Path) -> IKSettings:
    src = os.fspath(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"not valid TOML: {exc}", src) from None
    known = {"markers", "coordinates", "accuracy", "constraint_weight", "time_range",
             "coordinate_file"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise InputError(f"unknown keys {', '.join(unknown)} (expected {', '.join(sorted(known))})",
                         src)

    def num(v, what):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InputError(f"{what}: expected a number, found {v!r}", src)
        return float(v)

    markers = []
    for name, spec in (doc.get("markers") or {}).items():
        if isinstance(spec, dict):
            bad = sorted(set(spec) - {"weight", "apply"})
            if bad:
                raise InputError(f"marker {name!r}: unknown keys {', '.join(bad)}", src)
            w = num(spec.get("weight", 1.0), f"marker {name!r} weight")
            apply = bool(spec.get("apply", True))
        else:
            w, apply = num(spec, f"marker {name!r} weight"), True
        if w < 0:
            raise InputError(f"marker {name!r}: weight must be >= 0", src)
        markers.append(MarkerTask(name, w, apply))
    coords = []
    for name, spec in (doc.get("coordinates") or {}).items():
        if not isinstance(spec, dict):
            spec = {"weight": spec}
        bad = sorted(set(spec) - {"weight", "apply", "value", "value_deg", "value_type"})
        if bad:
            raise InputError(f"coordinate {name!r}: unknown keys {', '.join(bad)}", src)
        if "value" in spec and "value_deg" in spec:
            raise InputError(f"coordinate {name!r}: give value or value_deg, not both", src)
        value = 0.0
        if "value" in spec:
            value = num(spec["value"], f"coordinate {name!r} value")
        elif "value_deg" in spec:
            value = math.radians(num(spec["value_deg"], f"coordinate {name!r} value_deg"))
        has_value = "value" in spec or "value_deg" in spec
        vt = spec.get("value_type", "manual_value" if has_value else "default_value")
        if vt not in VALUE_TYPES:
            raise InputError(f"coordinate {name!r}: value_type {vt!r} is not one of "
                             f"{', '.join(VALUE_TYPES)}", src)
        w = num(spec.get("weight", 1.0), f"coordinate {name!r} weight")
        if w < 0:
            raise InputError(f"coordinate {name!r}: weight must be >= 0", src)
        coords.append(CoordinateTask(name, w, bool(spec.get("apply", True)), vt, value))
    time_range = None
    if "time_range" in doc:
        tr = doc["time_range"]
        if not isinstance(tr, list) or len(tr) != 2:
            raise InputError("time_range must be a list of two numbers", src)
        time_range = (num(tr[0], "time_range"), num(tr[1], "time_range"))
    cf = doc.get("coordinate_file")
    return _check(IKSettings(
        tuple(markers), tuple(coords),
        constraint_weight=num(doc["constraint_weight"], "constraint_weight")
        if "constraint_weight" in doc else math.inf,
        accuracy=num(doc["accuracy"], "accuracy") if "accuracy" in doc else 1e-5,
        time_range=time_range,
        coordinate_file=_resolve_file(cf, path.parent) if cf else None,
        source=src))


def _check(s: IKSettings) -> IKSettings:
    if not (s.accuracy > 0) or math.isinf(s.accuracy):
        raise InputError(f"accuracy must be a positive number, got {s.accuracy}", s.source)
    if not (s.constraint_weight > 0):
        raise InputError(f"constraint_weight must be positive, got {s.constraint_weight}",
                         s.source)
    if s.time_range is not None and s.time_range[1] < s.time_range[0]:
        raise InputError(f"time_range {s.time_range[0]:g}-{s.time_range[1]:g} is reversed",
                         s.source)
    for kind, tasks in (("marker", s.marker_tasks), ("coordinate", s.coordinate_tasks)):
        seen, dup = set(), set()
        for t in tasks:
            (dup.add(t.name) if t.name in seen else seen.add(t.name))
        if dup:
            raise InputError(f"duplicate {kind} tasks: {', '.join(sorted(dup))}", s.source)
    if any(t.value_type == "from_file" and t.apply for t in s.coordinate_tasks) \
            and not s.coordinate_file:
        names = [t.name for t in s.coordinate_tasks if t.value_type == "from_file" and t.apply]
        raise InputError(f"coordinate tasks {', '.join(names)} take values from_file but no "
                         "coordinate_file is given", s.source)
    return s
