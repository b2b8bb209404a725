"""Keypoint-to-marker maps: how the video keypoints (named as the built-in model's
:data:`~opensim_bridge.builtin_model.KEYPOINT_MARKERS`) sit on the bodies of an OpenSim model.

A map is data, a TOML file (the shipped ones live in ``opensim_bridge/keypoint_maps/``, one per
model; a user gives their own with ``--keypoint-map FILE``)::

    [model]
    name = "Rajagopal2016"
    match = ["Rajagopal2016", "Rajagopal2016*.osim"]   # model names, or file-name patterns
    description = "..."

    [markers.RKnee]                 # the keypoint's name
    joint_centre = "walker_knee_r"  # a joint's centre, on the joint's child body ...
    body = "femur_r"                # ... or on this body instead (optional)
    weight = 1.0                    # IK weight (optional, default 1)

    [markers.Hip]
    joint_centre = ["hip_r", "hip_l"]   # the mean of joint centres, on their common parent

    [markers.RHeel]
    body = "calcn_r"
    location = [-0.01, 0.01, -0.005]    # in the body frame, metres
    marker = "RHeel"                    # the model marker's name (default: the keypoint's)

    [markers.Neck]
    marker = "Neck"                 # no placement: the model must already have this marker

Every entry with a placement (``location`` or ``joint_centre``, optionally shifted by
``offset``, a vector in the body frame) is added to the model as a marker (replacing a marker
of the same name); an entry without one names a marker the model already has.

A joint's centre is the origin of its child frame, which is fixed in the child body; expressed
in another body (``body``) it is taken at the model's default pose. A joint centre is what a
keypoint detector's hip/knee/ankle/shoulder/elbow/wrist point means, so maps built from joint
centres work on any scaled copy of a model too.

:func:`auto_keypoint_map` builds a map for any model from its body and joint names (and the
heel, toes and head from its meshes); :func:`pick_keypoint_map` returns the shipped map whose
``match`` fits a model, else the automatic one.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import math
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from .atomic import atomic_path, atomic_write
from .errors import InputError, ModelError
from .osim_model import first_line, load_model
from .timeseries import KeypointSeries

#: Folder of the shipped maps.
MAPS_DIR = Path(__file__).with_name("keypoint_maps")

_ENTRY_KEYS = {"body", "location", "joint_centre", "offset", "marker", "weight", "note"}
_MODEL_KEYS = {"name", "match", "description", "source"}


@dataclasses.dataclass(frozen=True)
class MarkerSpec:
    """Where one keypoint sits on the model."""

    keypoint: str
    marker: str                                   # the model marker's name
    body: str | None = None                       # body the marker is attached to
    location: tuple[float, float, float] | None = None   # in ``body``'s frame, m
    joint_centre: tuple[str, ...] = ()            # joints whose centres' mean is the location
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)   # added, in the body frame, m
    weight: float = 1.0
    note: str = ""

    @property
    def placed(self) -> bool:
        """True when the map places the marker (else the model must already have it)."""
        return self.location is not None or bool(self.joint_centre)


@dataclasses.dataclass(frozen=True)
class KeypointMap:
    name: str
    markers: dict[str, MarkerSpec]                # keypoint -> spec
    match: tuple[str, ...] = ()
    description: str = ""
    source: str | None = None                     # the TOML file, for messages
    missing: tuple[str, ...] = ()                 # keypoints an automatic map could not place

    @property
    def keypoints(self) -> tuple[str, ...]:
        return tuple(self.markers)

    @property
    def marker_names(self) -> dict[str, str]:
        """keypoint -> model marker name."""
        return {k: s.marker for k, s in self.markers.items()}

    def ik_weights(self, keypoints: Iterable[str] | None = None) -> dict[str, float]:
        """model marker -> IK weight, for the given keypoints (default: all mapped)."""
        keep = None if keypoints is None else set(keypoints)
        return {s.marker: s.weight for k, s in self.markers.items()
                if (keep is None or k in keep) and s.weight > 0}

    def to_model_markers(self, keypoints: KeypointSeries) -> KeypointSeries:
        """The mapped keypoints of a series, renamed to the model's marker names (what IK and
        scaling read). InputError when none of the map's keypoints is in the series."""
        names = [k for k in self.markers if k in keypoints.names]
        if not names:
            raise InputError(f"none of the keypoints of the map {self.source or self.name} "
                             f"({', '.join(self.markers)}) is in the keypoint data",
                             keypoints.source)
        sel = keypoints.select(names)
        return sel.copy(names=[self.markers[k].marker for k in names])

    def matches(self, model_path: str | os.PathLike, model_name: str | None = None) -> bool:
        """True when a ``match`` entry equals the model's name or fits the file name."""
        fname = Path(model_path).name.lower()
        for pat in self.match:
            p = pat.lower()
            if model_name is not None and p == model_name.lower():
                return True
            if fnmatch.fnmatchcase(fname, p):
                return True
        return False


# --------------------------------------------------------------------------- TOML
def _vec3(value, what: str, src) -> tuple[float, float, float]:
    if (not isinstance(value, (list, tuple)) or len(value) != 3
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise InputError(f"{what} must be a list of 3 numbers, not {value!r}", src)
    out = tuple(float(v) for v in value)
    if not all(math.isfinite(v) for v in out):
        raise InputError(f"{what} must be finite, not {value!r}", src)
    return out


def _parse_entry(key: str, entry, src) -> MarkerSpec:
    what = f"[markers.{key}]"
    if not isinstance(entry, dict):
        raise InputError(f"{what} must be a table (body/location, joint_centre or marker)", src)
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        raise InputError(f"{what} has unknown key(s) {', '.join(unknown)}; allowed: "
                         f"{', '.join(sorted(_ENTRY_KEYS))}", src)
    marker = entry.get("marker", key)
    if not isinstance(marker, str) or not marker.strip():
        raise InputError(f"{what} marker must be a non-empty string", src)
    body = entry.get("body")
    if body is not None and (not isinstance(body, str) or not body):
        raise InputError(f"{what} body must be a body name", src)
    loc = entry.get("location")
    jc = entry.get("joint_centre")
    if loc is not None and jc is not None:
        raise InputError(f"{what} gives both location and joint_centre; give one", src)
    location = None
    if loc is not None:
        if body is None:
            raise InputError(f"{what} gives a location but no body", src)
        location = _vec3(loc, f"{what} location", src)
    joints: tuple[str, ...] = ()
    if jc is not None:
        joints = (jc,) if isinstance(jc, str) else tuple(jc) if isinstance(jc, list) else ()
        if not joints or not all(isinstance(j, str) and j for j in joints):
            raise InputError(f"{what} joint_centre must be a joint name or a list of them", src)
    if location is None and not joints and body is not None:
        raise InputError(f"{what} gives a body but neither location nor joint_centre", src)
    offset = _vec3(entry.get("offset", [0.0, 0.0, 0.0]), f"{what} offset", src)
    if "offset" in entry and location is None and not joints:
        raise InputError(f"{what} gives an offset but no placement", src)
    weight = entry.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) \
            or not math.isfinite(weight) or weight < 0:
        raise InputError(f"{what} weight must be a number >= 0, not {weight!r}", src)
    note = entry.get("note", "")
    return MarkerSpec(key, marker.strip(), body, location, joints, offset, float(weight),
                      str(note))


def parse_keypoint_map(data: Mapping, source: str | None = None) -> KeypointMap:
    """A map from already-parsed TOML data (see the module docstring)."""
    src = source
    unknown = sorted(set(data) - {"model", "markers"})
    if unknown:
        raise InputError(f"unknown table(s) {', '.join(unknown)}; a keypoint map has [model] "
                         "and [markers.NAME] tables", src)
    model = data.get("model", {})
    if not isinstance(model, dict):
        raise InputError("[model] must be a table", src)
    bad = sorted(set(model) - _MODEL_KEYS)
    if bad:
        raise InputError(f"[model] has unknown key(s) {', '.join(bad)}", src)
    name = model.get("name") or (Path(source).stem if source else "custom")
    match = model.get("match", [])
    if isinstance(match, str):
        match = [match]
    if not isinstance(match, list) or not all(isinstance(m, str) for m in match):
        raise InputError("[model] match must be a list of model names or file patterns", src)
    markers = data.get("markers")
    if not isinstance(markers, dict) or not markers:
        raise InputError("the map has no [markers.NAME] entries", src)
    specs = {key: _parse_entry(key, entry, src) for key, entry in markers.items()}
    names = [s.marker for s in specs.values()]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"several keypoints map to the same marker: {', '.join(dup)}", src)
    return KeypointMap(str(name), specs, tuple(match), str(model.get("description", "")), src)


def load_keypoint_map(path: str | os.PathLike) -> KeypointMap:
    """Read a keypoint map from a TOML file; InputError naming the file when it is invalid."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError("keypoint map not found" if not path.exists() else "not a file", path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not a valid TOML keypoint map: {exc}", path) from None
    return parse_keypoint_map(data, str(path.resolve()))


def keypoint_map_to_dict(kmap: KeypointMap) -> dict:
    """The TOML-ready form of a map (what :func:`write_keypoint_map` writes)."""
    model = {"name": kmap.name, "match": list(kmap.match)}
    if kmap.description:
        model["description"] = kmap.description
    markers = {}
    for k, s in kmap.markers.items():
        e: dict = {}
        if s.marker != k:
            e["marker"] = s.marker
        if s.joint_centre:
            e["joint_centre"] = s.joint_centre[0] if len(s.joint_centre) == 1 \
                else list(s.joint_centre)
        if s.body is not None:
            e["body"] = s.body
        if s.location is not None:
            e["location"] = list(s.location)
        if any(s.offset):
            e["offset"] = list(s.offset)
        if s.weight != 1.0:
            e["weight"] = s.weight
        if s.note:
            e["note"] = s.note
        markers[k] = e
    return {"model": model, "markers": markers}


def write_keypoint_map(kmap: KeypointMap, path: str | os.PathLike) -> Path:
    """Write a map as TOML (atomically), e.g. an automatic map for the user to edit."""
    import tomli_w

    path = Path(path)
    text = tomli_w.dumps(keypoint_map_to_dict(kmap))
    if kmap.missing:
        text = ("# keypoints this automatic map could not place: "
                + ", ".join(kmap.missing) + "\n") + text
    with atomic_write(path) as fh:
        fh.write(text)
    return path


def shipped_maps() -> list[KeypointMap]:
    """Every map shipped in :data:`MAPS_DIR`, sorted by file name."""
    return [load_keypoint_map(p) for p in sorted(MAPS_DIR.glob("*.toml"))]


def shipped_map(name: str) -> KeypointMap:
    """A shipped map by its ``[model] name`` or file stem (case-insensitive)."""
    for kmap in shipped_maps():
        if name.lower() in (kmap.name.lower(), Path(kmap.source or "").stem.lower()):
            return kmap
    raise InputError(f"no shipped keypoint map named {name!r}; shipped: "
                     f"{', '.join(m.name for m in shipped_maps())}", MAPS_DIR)


# --------------------------------------------------------------------------- resolving on a model
def _bodies(model) -> dict:
    bs = model.getBodySet()
    return {bs.get(i).getName(): bs.get(i) for i in range(bs.getSize())}


def _joints(model) -> dict:
    js = model.getJointSet()
    return {js.get(i).getName(): js.get(i) for i in range(js.getSize())}


def _marker_names(model) -> set[str]:
    ms = model.getMarkerSet()
    return {ms.get(i).getName() for i in range(ms.getSize())}


def _base_name(frame) -> str:
    return frame.findBaseFrame().getName()


def _to_np(v) -> np.ndarray:
    return np.array([v.get(0), v.get(1), v.get(2)], dtype=float)


def _vec(v):
    import opensim as osim

    return osim.Vec3(float(v[0]), float(v[1]), float(v[2]))


def missing_for_map(model, kmap: KeypointMap) -> dict[str, list[str]]:
    """What ``model`` (an ``osim.Model``) lacks for ``kmap``: {"bodies": [...], "joints": [...],
    "markers": [...]} (empty lists when nothing is missing)."""
    bodies, joints, markers = _bodies(model), _joints(model), _marker_names(model)
    out: dict[str, list[str]] = {"bodies": [], "joints": [], "markers": []}

    def need(kind, name, pool):
        if name not in pool and name not in out[kind]:
            out[kind].append(name)

    for spec in kmap.markers.values():
        if spec.body is not None:
            need("bodies", spec.body, bodies)
        for j in spec.joint_centre:
            need("joints", j, joints)
        if not spec.placed:
            need("markers", spec.marker, markers)
    return out


def _missing_message(missing: Mapping[str, list[str]], kmap: KeypointMap,
                     model_name: str | None) -> str:
    parts = [f"{kind} {', '.join(sorted(names))}" for kind, names in missing.items() if names]
    what = "the model" if model_name is None else f"the model {model_name!r}"
    return (f"{what} lacks what the keypoint map {kmap.source or kmap.name!r} needs - "
            + "; ".join(parts))


def resolve_markers(model, kmap: KeypointMap, model_path=None) -> dict[str, tuple[str, np.ndarray]]:
    """Each keypoint's marker as (body, location in the body frame), on an initialised model.

    Joint centres are evaluated at the model's default pose. ModelError listing everything
    the model lacks (bodies, joints, markers), naming the model and the map.
    """
    src = model_path or model.getInputFileName() or model.getName()
    missing = missing_for_map(model, kmap)
    if any(missing.values()):
        raise ModelError(_missing_message(missing, kmap, None if model_path else src),
                         model_path)
    bodies, joints = _bodies(model), _joints(model)
    state = model.initSystem()
    model.realizePosition(state)
    ground = model.getGround()
    out = {}
    for key, spec in kmap.markers.items():
        if not spec.placed:
            m = model.getMarkerSet().get(spec.marker)
            out[key] = (_base_name(m.getParentFrame()), _to_np(m.get_location()))
            continue
        if spec.location is not None:
            body, loc = spec.body, np.asarray(spec.location, dtype=float)
        else:
            js = [joints[j] for j in spec.joint_centre]
            if spec.body is not None:
                body = spec.body
            elif len(js) == 1:
                body = _base_name(js[0].getChildFrame())
            else:
                parents = {_base_name(j.getParentFrame()) for j in js}
                if len(parents) != 1:
                    raise InputError(f"[markers.{key}] joints {', '.join(spec.joint_centre)} "
                                     f"have different parent bodies ({', '.join(sorted(parents))});"
                                     " say which body carries the marker with body = ...",
                                     kmap.source)
                body = parents.pop()
            if body == "ground" or body not in bodies:
                raise ModelError(f"[markers.{key}] of {kmap.source or kmap.name} would put the "
                                 f"marker on {body!r}, which is not a body of the model", src)
            centre = np.mean([_to_np(j.getChildFrame().getPositionInGround(state)) for j in js],
                             axis=0)
            loc = _to_np(ground.findStationLocationInAnotherFrame(state, _vec(centre),
                                                                  bodies[body]))
        out[key] = (body, loc + np.asarray(spec.offset))
    return out


def add_keypoint_markers(model, kmap: KeypointMap, model_path=None) -> dict[str, tuple[str, np.ndarray]]:
    """Add (or replace) the map's markers on an ``osim.Model`` in memory and re-initialise it.
    Returns :func:`resolve_markers`' placements."""
    import opensim as osim

    placed = resolve_markers(model, kmap, model_path)
    bodies = _bodies(model)
    ms = model.updMarkerSet()
    for key, spec in kmap.markers.items():
        if not spec.placed:
            continue
        body, loc = placed[key]
        idx = ms.getIndex(spec.marker)
        if idx >= 0:
            ms.remove(idx)   # the map's placement wins over a same-named model marker
        marker = osim.Marker(spec.marker, bodies[body], _vec(loc))
        model.addMarker(marker)
    try:
        model.finalizeConnections()
        model.initSystem()
    except RuntimeError as exc:
        raise ModelError(f"the model does not initialise with the keypoint markers of "
                         f"{kmap.source or kmap.name}: {first_line(exc)}", model_path) from None
    return placed


def apply_keypoint_map(model_path: str | os.PathLike, kmap: KeypointMap,
                       out_path: str | os.PathLike) -> Path:
    """Write a copy of the model with the map's keypoint markers added (atomically).

    ModelError, naming the model file and the map file, when the model lacks a body, joint or
    marker the map needs (all of them listed).
    """
    model_path = Path(model_path).expanduser().resolve()
    out_path = Path(out_path).expanduser().resolve()
    if out_path.suffix.lower() != ".osim":
        raise InputError("the output model's name must end in .osim", out_path)
    model = load_model(model_path)
    add_keypoint_markers(model, kmap, model_path)
    with atomic_path(out_path) as tmp:
        if not model.printToXML(str(tmp)):
            raise ModelError("OpenSim could not write the model", out_path)
    return out_path


def keypoint_marker_positions(model, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Markers' ground positions at the model's default pose (an ``osim.Model`` or a path)."""
    if not hasattr(model, "getMarkerSet"):
        model = load_model(model)
    state = model.initSystem()
    model.realizePosition(state)
    ms = model.getMarkerSet()
    want = None if names is None else set(names)
    return {ms.get(i).getName(): _to_np(ms.get(i).getLocationInGround(state))
            for i in range(ms.getSize()) if want is None or ms.get(i).getName() in want}


# --------------------------------------------------------------------------- automatic map
# Body-name words for each role, longest first within a role so that "upperleg" wins over
# "leg" and "forearm" over "arm" (roles are also tried in this order).
_ROLE_WORDS: list[tuple[str, tuple[str, ...]]] = [
    ("pelvis", ("pelvis", "hips", "hip", "sacrum", "root")),
    ("femur", ("upperleg", "upleg", "femur", "thigh")),
    ("patella", ("patella",)),
    ("tibia", ("lowerleg", "tibia", "shank", "shin", "crus", "leg")),
    ("talus", ("talus",)),
    ("calcn", ("calcaneus", "calcn", "foot", "heel")),
    ("toes", ("toes", "toe", "phalanges")),
    ("ulna", ("lowerarm", "forearm", "ulna")),
    ("radius", ("radius",)),
    ("humerus", ("upperarm", "humerus", "arm")),
    ("hand", ("hand", "carpals", "palm")),
    ("torso", ("torso", "thorax", "trunk", "chest", "spine", "back")),
    ("head", ("head", "skull", "cranium")),
]
_SIDED = {"femur", "patella", "tibia", "talus", "calcn", "toes", "ulna", "radius", "humerus",
          "hand"}
_SIDE_PATTERNS = {
    "r": re.compile(r"(^|[^a-z])(r|right)([^a-z]|$)|^right|right$|^r(?=[A-Z])"),
    "l": re.compile(r"(^|[^a-z])(l|left)([^a-z]|$)|^left|left$|^l(?=[A-Z])"),
}


def body_side(name: str) -> str | None:
    """'r', 'l' or None from a body name: ``_r``/``_l``, ``r_``/``l_``, right/left, ``RThigh``."""
    low = name.lower()
    for side, pat in _SIDE_PATTERNS.items():
        if pat.search(low) or pat.search(name[:2] if len(name) > 1 else name):
            return side
    if re.match(r"^[RL][A-Z]", name):
        return name[0].lower()
    return None


def _core(name: str) -> str:
    """The name without side tokens and punctuation, lower case."""
    low = name.lower()
    low = re.sub(r"(^|[^a-z])(r|l|right|left)([^a-z]|$)", " ", low)
    low = re.sub(r"^(right|left)|(right|left)$", "", low)
    if re.match(r"^[RL][A-Z]", name):
        low = low[1:]
    return re.sub(r"[^a-z]", "", low)


def body_role(name: str) -> str | None:
    """The anatomical role of a body from its name (``femur``, ``tibia``, ``calcn``, ...)."""
    core = _core(name)
    if not core:
        return None
    for role, words in _ROLE_WORDS:
        if core in words:
            return role
    for role, words in _ROLE_WORDS:
        for w in words:
            if len(w) >= 3 and w in core:
                return role
    return None


def find_body_roles(model) -> dict[str, str]:
    """{role or role_side: body name} for an ``osim.Model``, e.g. {"femur_r": "RThigh"}.

    When several bodies take one role, the one nearest the root of the tree wins (a spine
    chain's first vertebra is not the torso: the body carrying the arms or head is preferred
    for ``torso``).
    """
    bodies = list(_bodies(model))
    joints = _joints(model).values()
    children: dict[str, list[str]] = {}
    for j in joints:
        children.setdefault(_base_name(j.getParentFrame()), []).append(
            _base_name(j.getChildFrame()))
    roles: dict[str, list[str]] = {}
    for b in bodies:
        role = body_role(b)
        if role is None:
            continue
        if role in _SIDED:
            side = body_side(b)
            if side is None:
                continue
            role = f"{role}_{side}"
        roles.setdefault(role, []).append(b)
    out = {}
    for role, cands in roles.items():
        if role == "torso" and len(cands) > 1:
            carrying = [c for c in cands
                        if any(body_role(k) in ("humerus", "head") for k in children.get(c, []))]
            cands = carrying or cands
        out[role] = cands[0]
    return out


def _joint_to(model, child: str, parent: str | None = None):
    for j in _joints(model).values():
        if _base_name(j.getChildFrame()) == child and (
                parent is None or _base_name(j.getParentFrame()) == parent):
            return j
    return None


def _meshes_in_ground(model, model_path) -> list[tuple[str, str, np.ndarray]]:
    """(body, mesh file, vertices in ground at the default pose) of every mesh found on disk
    (searched as OpenSim does, plus ``Geometry`` folders one and two levels up)."""
    from .geometry import (
        find_mesh_file,
        geometry_search_paths,
        model_geometry,
        read_mesh,
    )

    if model_path is None:
        return []
    folder = Path(model_path).resolve().parent
    # opensim-models keeps Models/<model>/*.osim and one shared Geometry/ at its root
    search = geometry_search_paths(model_path, extra=[folder.parent / "Geometry",
                                                      folder.parent.parent / "Geometry"])
    try:
        items, _ = model_geometry(model)
    except RuntimeError:  # geometry is optional for the automatic map
        return []
    state = model.initSystem()
    model.realizePosition(state)
    bodies = _bodies(model)
    out = []
    for it in items:
        if it.kind != "mesh" or not it.mesh_file or it.body not in bodies:
            continue
        path = find_mesh_file(it.mesh_file, search)
        if path is None:
            continue
        try:
            mesh = read_mesh(path)
        except InputError:
            continue
        v = mesh.vertices.astype(float) * np.asarray(it.scale)
        in_body = v @ it.rotation.T + it.translation
        xf = bodies[it.body].getTransformInGround(state)
        R = np.array([[xf.R().get(i, j) for j in range(3)] for i in range(3)])
        out.append((it.body, it.mesh_file, in_body @ R.T + _to_np(xf.p())))
    return out


def _mesh_points(meshes) -> dict[str, np.ndarray]:
    """{body: all its mesh vertices in ground}."""
    out: dict[str, list[np.ndarray]] = {}
    for body, _, v in meshes:
        out.setdefault(body, []).append(v)
    return {k: np.vstack(v) for k, v in out.items()}


def _skull_points(meshes, roles) -> tuple[str, np.ndarray] | None:
    """(body, vertices in ground) of the head: the head body's meshes, or the meshes named
    like a skull/head on the torso (models whose head is part of the torso)."""
    pts = _mesh_points(meshes)
    if "head" in roles and roles["head"] in pts:
        return roles["head"], pts[roles["head"]]
    torso = roles.get("torso")
    skull = [v for body, f, v in meshes
             if body == torso and re.search(r"skull|head|cranium", f.lower())]
    if not skull:
        return None
    return torso, np.vstack(skull)


def _ground_to_body(model, body: str, point: np.ndarray) -> np.ndarray:
    state = model.initSystem()
    model.realizePosition(state)
    return _to_np(model.getGround().findStationLocationInAnotherFrame(
        state, _vec(point), _bodies(model)[body]))


def _foot_landmarks(model, pts: dict[str, np.ndarray], roles: dict[str, str], side: str,
                    add) -> None:
    """Heel, big toe and small toe from the foot meshes (default pose, x forward, y up, z to
    the right): heel = the most posterior vertex of the rear-foot body among its lowest third;
    big toe = the most anterior vertex of the toes (or whole foot); small toe = the most
    anterior vertex of the lateral quarter of the foot's breadth."""
    S = side.upper()
    calcn = roles.get(f"calcn_{side}")
    toes = roles.get(f"toes_{side}") or calcn
    if calcn is None or calcn not in pts:
        return
    c = pts[calcn]
    low = c[c[:, 1] <= c[:, 1].min() + (np.ptp(c[:, 1]) / 3.0)]
    heel = low[np.argmin(low[:, 0])]
    add(f"{S}Heel", calcn, heel, "most posterior vertex of the foot mesh's lowest third")
    t = pts.get(toes, c)
    add(f"{S}BigToe", toes, t[np.argmax(t[:, 0])], "most anterior vertex of the toes mesh")
    foot = np.vstack([c, t]) if toes != calcn else c
    zmin, zmax = foot[:, 2].min(), foot[:, 2].max()
    width = zmax - zmin
    lateral = t[t[:, 2] >= zmax - 0.25 * width] if side == "r" else \
        t[t[:, 2] <= zmin + 0.25 * width]
    if len(lateral):
        add(f"{S}SmallToe", toes, lateral[np.argmax(lateral[:, 0])],
            "most anterior vertex of the lateral quarter of the toes mesh")


def auto_keypoint_map(model_path: str | os.PathLike) -> KeypointMap:
    """A keypoint map for any model, from its body and joint names.

    Joint-centre keypoints (hips, knees, ankles, shoulders, elbows, wrists) are the centres of
    the joints whose child is the femur/thigh, tibia/shank, talus (else calcn/foot),
    humerus/upper arm, ulna/forearm (else radius) and hand of each side, on that child body;
    ``Hip`` is the mean of the hip centres on the pelvis; ``Neck`` the centre of the joint
    carrying the head, else the mean of the shoulder centres on the torso. Heel and toes come
    from the foot meshes, ``Head`` (vertex) and ``Nose`` from the head's (or the torso's skull)
    mesh: the highest and the most anterior vertex. What cannot be found is listed in
    ``missing``; eyes and ears are always missing (no model names them).
    """
    from .builtin_model import KEYPOINT_MARKERS

    model_path = Path(model_path).expanduser().resolve()
    model = load_model(model_path)
    roles = find_body_roles(model)
    specs: dict[str, MarkerSpec] = {}

    def jc(key: str, joint, body: str | None = None, note: str = "") -> None:
        if joint is not None:
            specs[key] = MarkerSpec(key, key, body, None, (joint.getName(),), note=note)

    for side in ("r", "l"):
        S = side.upper()
        r = lambda role, side=side: roles.get(f"{role}_{side}")
        if r("femur"):
            jc(f"{S}Hip", _joint_to(model, r("femur")), note="hip joint centre")
        if r("tibia"):
            jc(f"{S}Knee", _joint_to(model, r("tibia")), note="knee joint centre")
        ankle = None
        if r("talus"):
            ankle = _joint_to(model, r("talus"))
        elif r("calcn"):
            ankle = _joint_to(model, r("calcn"), r("tibia"))
        jc(f"{S}Ankle", ankle, note="ankle joint centre")
        if r("humerus"):
            jc(f"{S}Shoulder", _joint_to(model, r("humerus")), note="shoulder joint centre")
        elbow = None
        if r("ulna"):
            elbow = _joint_to(model, r("ulna"))
        if elbow is None and r("radius"):
            elbow = _joint_to(model, r("radius"), r("humerus"))
        jc(f"{S}Elbow", elbow, note="elbow joint centre")
        if r("hand"):
            jc(f"{S}Wrist", _joint_to(model, r("hand")), note="wrist joint centre")
    if "RHip" in specs and "LHip" in specs:
        hips = specs["RHip"].joint_centre + specs["LHip"].joint_centre
        specs["Hip"] = MarkerSpec("Hip", "Hip", roles.get("pelvis"), None, hips,
                                  note="mean of the hip joint centres")
        if specs["Hip"].body is None:
            del specs["Hip"]
    neck = _joint_to(model, roles["head"]) if "head" in roles else None
    if neck is not None:
        jc("Neck", neck, _base_name(neck.getParentFrame()), note="head-neck joint centre")
    elif "RShoulder" in specs and "LShoulder" in specs and "torso" in roles:
        specs["Neck"] = MarkerSpec("Neck", "Neck", roles["torso"], None,
                                   specs["RShoulder"].joint_centre
                                   + specs["LShoulder"].joint_centre,
                                   note="mean of the shoulder joint centres")

    def add(key: str, body: str, ground_point: np.ndarray, note: str) -> None:
        loc = _ground_to_body(model, body, ground_point)
        specs[key] = MarkerSpec(key, key, body, tuple(float(v) for v in loc), note=note)

    meshes = _meshes_in_ground(model, model_path)
    pts = _mesh_points(meshes)
    for side in ("r", "l"):
        _foot_landmarks(model, pts, roles, side, add)
    skull = _skull_points(meshes, roles)
    if skull is not None:
        body, s = skull
        add("Head", body, s[np.argmax(s[:, 1])], "highest vertex of the head mesh")
        upper = s[s[:, 1] >= s[:, 1].min() + 0.3 * np.ptp(s[:, 1])]
        add("Nose", body, upper[np.argmax(upper[:, 0])],
            "most anterior vertex of the head mesh above its lowest 30 %")
    ordered = {k: specs[k] for k in KEYPOINT_MARKERS if k in specs}
    missing = tuple(k for k in KEYPOINT_MARKERS if k not in specs)
    if not ordered:
        raise ModelError("no keypoint could be placed automatically: no body or joint is named "
                         "like a pelvis, thigh/femur, shank/tibia, foot, upper arm, forearm, "
                         "hand or head; give a keypoint map (--keypoint-map FILE)", model_path)
    return KeypointMap(f"auto:{model.getName()}", ordered, (), "automatic map from body and "
                       "joint names", None, missing)


def pick_keypoint_map(model_path: str | os.PathLike,
                      custom: str | os.PathLike | KeypointMap | None = None) -> KeypointMap:
    """The map for a model: ``custom`` when given (a TOML path or a map); else the shipped map
    whose ``match`` names the model (by its name, then by file name); else
    :func:`auto_keypoint_map`."""
    if custom is not None:
        return custom if isinstance(custom, KeypointMap) else load_keypoint_map(custom)
    model_path = Path(model_path).expanduser().resolve()
    name = _model_name(model_path)
    maps = shipped_maps()
    for kmap in maps:
        if name is not None and any(p.lower() == name.lower() for p in kmap.match):
            return kmap
    for kmap in maps:
        if kmap.matches(model_path):
            return kmap
    return auto_keypoint_map(model_path)


def _model_name(model_path: Path) -> str | None:
    """The ``<Model name>`` attribute, read without loading the model."""
    from defusedxml import ElementTree as DET

    try:
        for _, elem in DET.iterparse(str(model_path), events=("start",)):
            if elem.tag == "Model":
                return elem.get("name")
    except (DET.ParseError, OSError):
        return None
    return None
