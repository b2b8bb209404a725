"""Model scaling with OpenSim's ScaleTool.

Three ways in, one way out (``model_scaled.osim``, ``scale_setup.xml``, ``scale_factors.xml`` in
``out_dir``, each moved there atomically after a successful run, so a failure leaves earlier
results intact):

* :func:`scale_from_setup`: an existing Scale setup file, its relative paths taken relative to
  the setup file's folder (what OpenSim's GUI does) whatever the current directory;
* :func:`scale_model`: a generic model, a static marker trial and a measurement set given as
  data (marker pairs per group of bodies);
* :func:`scale_from_segment_lengths`: measured segment lengths (joint centre to joint centre),
  subject height and mass; unmeasured bodies scale by the height ratio.

``scale_setup.xml`` reruns the same scaling with ``osim.ScaleTool(path).run()`` from any
current directory: its paths are relative to its own folder, because ScaleTool prefixes every
path with the setup's folder (absolute ones too).
"""
from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
import time as _time
from pathlib import Path
from typing import Mapping

import numpy as np

from .errors import InputError, KinevidError, ModelError
from .osim_model import first_line, load_model, quiet_stdout

MODEL_FILE = "model_scaled.osim"
SETUP_FILE = "scale_setup.xml"
FACTORS_FILE = "scale_factors.xml"
STATIC_FILE = "static_markers.trc"

#: Segment names accepted by :func:`scale_from_segment_lengths` besides body names.
SEGMENT_ALIASES = {"thigh": "femur", "shank": "tibia", "leg": "tibia", "foot": "calcn",
                   "upper_arm": "humerus", "forearm": "radius"}


@dataclasses.dataclass
class ScaleResult:
    model_path: Path
    setup_xml: Path
    scale_factors_xml: Path
    factors: dict[str, tuple[float, float, float]]   # body -> (sx, sy, sz)
    mass: float                                       # total mass of the scaled model, kg
    wall_s: float


@dataclasses.dataclass(frozen=True)
class Measurement:
    """A measurement of OpenSim's ScaleTool: the mean ratio of experimental to model distances
    between each marker pair scales ``bodies`` along ``axes``."""

    name: str
    marker_pairs: tuple[tuple[str, str], ...]
    bodies: tuple[str, ...]
    axes: str = "XYZ"


def _existing(path, what: str, error=InputError) -> Path:
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise error(f"{what} not found", path)
    return path


def read_scale_factors(path) -> dict[str, tuple[float, float, float]]:
    """``{body: (sx, sy, sz)}`` from a ScaleSet XML (OpenSim's output_scale_file)."""
    from defusedxml import ElementTree as ET

    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise InputError(f"cannot read scale factors: {exc}", path) from exc
    out = {}
    for scale in root.iter("Scale"):
        seg = (scale.findtext("segment") or "").strip()
        vals = (scale.findtext("scales") or "").split()
        if seg and len(vals) == 3:
            out[seg] = tuple(float(v) for v in vals)
    if not out:
        raise InputError("no <Scale> entries found", path)
    return out


def _mass_and_bodies(model_path) -> tuple[float, set[str]]:
    model = load_model(model_path)
    bodies = model.getBodySet()
    return (float(sum(bodies.get(i).getMass() for i in range(bodies.getSize()))),
            _model_bodies(model))


def _run(tool, out_dir: Path, *, place_markers: bool, keep: Mapping[str, Path] = {},
         before_print=None) -> ScaleResult:
    """Run a configured ScaleTool in a scratch folder and move its outputs into ``out_dir``.

    ``keep``: extra files (name -> path) the setup refers to, moved into ``out_dir`` alongside;
    ``before_print``: called before the setup is written, to point it at their final places.
    """
    t_start = _time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix=".scale_run_", dir=out_dir))
    try:
        return _run_in(tool, out_dir, scratch, place_markers, keep, before_print, t_start)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run_in(tool, out_dir, scratch, place_markers, keep, before_print, t_start) -> ScaleResult:
    scaler = tool.getModelScaler()
    placer = tool.getMarkerPlacer()
    # ScaleTool prefixes every file name with this path; absolute names need an empty prefix.
    tool.setPathToSubject("")
    placer.setApply(place_markers)

    def point_outputs(folder: Path):
        if place_markers:
            scaler.setOutputModelFileName("Unassigned")
            placer.setOutputModelFileName(str(folder / MODEL_FILE))
        else:
            scaler.setOutputModelFileName(str(folder / MODEL_FILE))
            placer.setOutputModelFileName("Unassigned")
        scaler.setOutputScaleFileName(str(folder / FACTORS_FILE))
        placer.setOutputMotionFileName("Unassigned")
        placer.setOutputMarkerFileName("Unassigned")

    point_outputs(scratch)
    try:
        with quiet_stdout():
            ok = tool.run()
    except RuntimeError as exc:
        raise KinevidError(f"OpenSim's ScaleTool failed: {first_line(exc)}",
                           tool.getDocumentFileName() or None) from exc
    # OpenSim 4.6's ScaleTool.run() returns False whenever the marker placer is not applied,
    # even after writing the scaled model; the files in the fresh scratch folder are the truth.
    produced = (scratch / MODEL_FILE).is_file() and (scratch / FACTORS_FILE).is_file()
    if not produced or (place_markers and not ok):
        raise KinevidError("OpenSim's ScaleTool reported failure and wrote no model",
                           tool.getDocumentFileName() or None)
    mass, bodies = _mass_and_bodies(scratch / MODEL_FILE)
    # OpenSim 4 also lists ground and every offset frame (all 1): keep the bodies.
    factors = {k: v for k, v in read_scale_factors(scratch / FACTORS_FILE).items() if k in bodies}
    point_outputs(out_dir)
    if before_print is not None:
        before_print()
    _relative_to(tool, out_dir)
    tool.printToXML(str(scratch / SETUP_FILE))
    for name, path in keep.items():
        os.replace(path, out_dir / name)
    os.replace(scratch / FACTORS_FILE, out_dir / FACTORS_FILE)
    os.replace(scratch / SETUP_FILE, out_dir / SETUP_FILE)
    os.replace(scratch / MODEL_FILE, out_dir / MODEL_FILE)
    return ScaleResult(out_dir / MODEL_FILE, out_dir / SETUP_FILE, out_dir / FACTORS_FILE,
                       factors, mass, _time.perf_counter() - t_start)


def _relative_to(tool, folder: Path) -> None:
    """Rewrite the tool's file names relative to ``folder``, where its setup is written.

    ``osim.ScaleTool(setup)`` prefixes every file name with the setup's folder, absolute names
    included (OpenSim 4.6 concatenates the strings), so only relative names rerun correctly.
    """
    def rel(name: str) -> str:
        name = name.strip()
        if not name or name == "Unassigned" or not os.path.isabs(name):
            return name
        try:
            return os.path.relpath(name, folder)
        except ValueError:  # another drive (Windows): nothing relative exists
            return name

    maker, scaler, placer = tool.getGenericModelMaker(), tool.getModelScaler(), tool.getMarkerPlacer()
    maker.setModelFileName(rel(maker.getModelFileName()))
    maker.setMarkerSetFileName(rel(maker.getMarkerSetFileName()))
    scaler.setMarkerFileName(rel(scaler.getMarkerFileName()))
    scaler.setOutputModelFileName(rel(scaler.getOutputModelFileName()))
    scaler.setOutputScaleFileName(rel(scaler.getOutputScaleFileName()))
    placer.setMarkerFileName(rel(placer.getMarkerFileName()))
    placer.setCoordinateFileName(rel(placer.getCoordinateFileName()))
    placer.setOutputModelFileName(rel(placer.getOutputModelFileName()))


# --------------------------------------------------------------------------- from a setup file
def _setup_path(setup: Path, name: str, what: str, override) -> str:
    if override is not None:
        return str(_existing(override, what))
    name = (name or "").strip()
    if not name or name == "Unassigned":
        return "Unassigned"
    path = Path(name) if os.path.isabs(name) else setup.parent / name
    if not path.is_file():
        raise InputError(f"its {what} {name!r} does not exist (looked for "
                         f"{os.path.normpath(path)}); pass the file explicitly", setup)
    return str(path.resolve())


def _fit_time_range(array, times: np.ndarray) -> None:
    """Keep a setup's time range when the trial covers it, else use the whole trial (a static
    trial given in place of the setup's has its own times)."""
    t0, t1 = float(times[0]), float(times[-1])
    a, b = array.get(0), array.get(1)
    if not (t0 - 1e-6 <= a <= b <= t1 + 1e-6):
        array.set(0, t0)
        array.set(1, t1)


def scale_from_setup(setup_xml, out_dir, *, static=None, model=None, marker_set=None,
                     mass: float | None = None, height: float | None = None) -> ScaleResult:
    """Run OpenSim's ScaleTool from a Scale setup file into ``out_dir``.

    Relative paths in the setup (``model_file``, ``marker_set_file``, both ``marker_file``,
    ``coordinate_file``) are resolved against the setup file's folder. ``static`` (a .trc)
    replaces the static trial of both the scaler and the marker placer; ``model`` and
    ``marker_set`` the generic model and its marker set; ``mass`` (kg) the subject mass;
    ``height`` (m) the recorded height (informational in OpenSim). The marker placer runs
    when the setup applies it.
    """
    import opensim as osim

    setup = _existing(setup_xml, "scale setup file")
    out_dir = Path(out_dir).expanduser().resolve()
    try:
        tool = osim.ScaleTool(str(setup))
    except RuntimeError as exc:
        raise InputError(f"OpenSim cannot read this setup file: {first_line(exc)}",
                         setup) from exc
    maker, scaler, placer = tool.getGenericModelMaker(), tool.getModelScaler(), tool.getMarkerPlacer()
    model_path = _setup_path(setup, maker.getModelFileName(), "model_file", model)
    if model_path == "Unassigned":
        raise InputError("the setup names no generic model; pass model=", setup)
    load_model(model_path)  # a clear ModelError before OpenSim's own message
    maker.setModelFileName(model_path)
    maker.setMarkerSetFileName(_setup_path(setup, maker.getMarkerSetFileName(),
                                           "marker_set_file", marker_set))
    if static is not None:
        from .trc import read_trc

        static_path = str(_existing(static, "static marker file"))
        times = read_trc(static_path).time
        scaler.setMarkerFileName(static_path)
        placer.setMarkerFileName(static_path)
        _fit_time_range(scaler.getTimeRange(), times)
        _fit_time_range(placer.getTimeRange(), times)
    else:
        if scaler.getApply():
            scaler.setMarkerFileName(_setup_path(setup, scaler.getMarkerFileName(),
                                                 "ModelScaler marker_file", None))
        if placer.getApply():
            placer.setMarkerFileName(_setup_path(setup, placer.getMarkerFileName(),
                                                 "MarkerPlacer marker_file", None))
    if placer.getApply():
        coord = placer.getCoordinateFileName().strip()
        if coord and coord != "Unassigned":
            placer.setCoordinateFileName(_setup_path(setup, coord, "coordinate_file", None))
    if mass is not None:
        tool.setSubjectMass(_positive(mass, "mass", setup))
    if height is not None:
        tool.setSubjectHeight(1000.0 * _positive(height, "height", setup))  # setups hold mm
    out_dir.mkdir(parents=True, exist_ok=True)
    return _run(tool, out_dir, place_markers=bool(placer.getApply()))


def _positive(value, what, path) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"{what} must be a positive number, not {value!r}", path)
    return value


# --------------------------------------------------------------------------- programmatic
def _as_measurements(measurements) -> list[Measurement]:
    """Accept Measurement objects or ``{name: (pairs, bodies)}`` / ``{name: (pairs, bodies, axes)}``."""
    if isinstance(measurements, Mapping):
        items = []
        for name, spec in measurements.items():
            if isinstance(spec, Measurement):
                items.append(spec)
            else:
                pairs, bodies, *axes = spec
                items.append(Measurement(name, tuple(tuple(p) for p in pairs), tuple(bodies),
                                         *(axes or [])))
        return items
    return list(measurements)


def _model_markers(model) -> set[str]:
    ms = model.getMarkerSet()
    return {ms.get(i).getName() for i in range(ms.getSize())}


def _model_bodies(model) -> set[str]:
    bs = model.getBodySet()
    return {bs.get(i).getName() for i in range(bs.getSize())}


def scale_model(model, static_markers, out_dir, *, measurements, mass: float,
                height: float | None = None, marker_set=None,
                time_range: tuple[float, float] | None = None,
                place_markers: bool = False,
                preserve_mass_distribution: bool = True) -> ScaleResult:
    """Scale ``model`` (.osim) to a static trial by marker-pair measurements.

    ``static_markers``: a :class:`~opensim_bridge.timeseries.KeypointSeries` or a .trc path; it
    is written as ``static_markers.trc`` (metres) in ``out_dir`` so the setup can rerun.
    ``measurements``: :class:`Measurement` objects or ``{name: (marker_pairs, bodies[, axes])}``.
    ``time_range``: frames averaged (default: the whole trial). ``place_markers`` also runs
    OpenSim's MarkerPlacer (model markers moved onto the trial).
    """
    import opensim as osim

    from .timeseries import KeypointSeries
    from .trc import read_trc, write_trc

    model_path = _existing(model, "model file", ModelError)
    osim_model = load_model(model_path)
    series = static_markers if isinstance(static_markers, KeypointSeries) \
        else read_trc(_existing(static_markers, "static marker file"))
    src = series.source or "static markers"
    if series.dim != 3:
        raise InputError("static markers must be 3D", src)
    if time_range is not None:
        series = series.between(*time_range)
    items = _as_measurements(measurements)
    if not items:
        raise InputError("no measurements given", src)
    known_markers = _model_markers(osim_model)
    if marker_set is not None:
        ms = osim.MarkerSet(str(_existing(marker_set, "marker set file")))
        known_markers |= {ms.get(i).getName() for i in range(ms.getSize())}
    bodies = _model_bodies(osim_model)
    needed = sorted({m for it in items for pair in it.marker_pairs for m in pair})
    absent_trial = [m for m in needed if m not in series.names]
    if absent_trial:
        raise InputError(f"static trial lacks marker(s) used by the measurements: "
                         f"{', '.join(absent_trial)}", src)
    absent_model = [m for m in needed if m not in known_markers]
    if absent_model:
        raise ModelError(f"model has no marker(s) {', '.join(absent_model)}", model_path)
    unknown_bodies = sorted({b for it in items for b in it.bodies} - bodies)
    if unknown_bodies:
        raise ModelError(f"model has no body {', '.join(unknown_bodies)}", model_path)
    for it in items:
        for pair in it.marker_pairs:
            data = series.select(list(pair)).data
            if not np.isfinite(data).all(axis=2).all(axis=1).any():
                raise InputError(f"markers {pair[0]} and {pair[1]} of measurement {it.name!r} "
                                 "are never visible together", src)

    out_dir = Path(out_dir).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch_trc = Path(tempfile.mkdtemp(prefix=".scale_trc_", dir=out_dir))
    try:
        trc_path = write_trc(series.to_metres(), scratch_trc / STATIC_FILE)
        tool = _scale_tool("kinevid_scale", model_path, _positive(mass, "mass", src),
                           None if height is None else _positive(height, "height", src),
                           "measurements", preserve_mass_distribution)
        if marker_set is not None:
            tool.getGenericModelMaker().setMarkerSetFileName(str(Path(marker_set).resolve()))
        scaler = tool.getModelScaler()
        mset = scaler.getMeasurementSet()
        for it in items:
            m = osim.Measurement()
            m.setName(it.name)
            m.setApply(True)
            for a, b in it.marker_pairs:
                m.getMarkerPairSet().cloneAndAppend(osim.MarkerPair(a, b))
            for body in it.bodies:
                bs = osim.BodyScale()
                bs.setName(body)
                axes = osim.ArrayStr()
                for ax in it.axes.replace(" ", "").upper():
                    axes.append(ax)
                bs.setAxisNames(axes)
                m.getBodyScaleSet().cloneAndAppend(bs)
            mset.cloneAndAppend(m)
        t0, t1 = float(series.time[0]), float(series.time[-1])
        placer = tool.getMarkerPlacer()
        for part in (scaler, placer):
            part.setMarkerFileName(str(trc_path))
            tr = part.getTimeRange()
            tr.set(0, t0)
            tr.set(1, t1)

        def to_final():
            # The written setup must name the trial where it will live, beside the model.
            for part in (scaler, placer):
                part.setMarkerFileName(str(out_dir / STATIC_FILE))

        return _run(tool, out_dir, place_markers=place_markers,
                    keep={STATIC_FILE: trc_path}, before_print=to_final)
    finally:
        shutil.rmtree(scratch_trc, ignore_errors=True)


# --------------------------------------------------------------------------- segment lengths
def _joint_centre(joint, state) -> np.ndarray:
    """Ground position of a joint's centre: the origin of its child frame, which includes the
    joint's own translations (a CustomJoint knee)."""
    return joint.getChildFrame().getPositionInGround(state).to_numpy()


def _body_of(frame) -> str:
    """Name of the body (or ground) a joint frame is attached to."""
    base = frame.findBaseFrame()
    return base.getName()


def model_segment_lengths(model) -> dict[str, float]:
    """Length of each body with exactly one child joint, in the model's default pose: the
    distance between its proximal joint centre (the joint whose child it is) and its distal
    joint centre (its one child joint). E.g. femur_r: hip_r centre to knee_r centre.

    ``model``: an ``osim.Model`` or a path.
    """
    if not hasattr(model, "getJointSet"):
        model = load_model(model)
    state = model.initSystem()
    model.realizePosition(state)
    joints = model.getJointSet()
    proximal, distal = {}, {}
    for i in range(joints.getSize()):
        j = joints.get(i)
        child = _body_of(j.getChildFrame())
        parent = _body_of(j.getParentFrame())
        proximal[child] = j
        distal.setdefault(parent, []).append(j)
    out = {}
    for body, j in proximal.items():
        kids = distal.get(body, [])
        if len(kids) == 1:
            out[body] = float(np.linalg.norm(_joint_centre(kids[0], state) -
                                             _joint_centre(j, state)))
    return out


def model_height(model, marker_set=None) -> float:
    """Standing height of a model in its default pose: the vertical extent of its markers
    (a generic marker set spans heel to head top). ``marker_set``: a MarkerSet XML to use
    instead of the model's own markers. ModelError when there are none."""
    import opensim as osim

    if not hasattr(model, "getMarkerSet"):
        model = load_model(model)
    if marker_set is not None:
        model = model.clone()
        path = _existing(marker_set, "marker set file")
        try:
            model.updateMarkerSet(osim.MarkerSet(str(path)))
        except RuntimeError as exc:
            raise InputError(f"OpenSim cannot use this marker set: {first_line(exc)}",
                             path) from exc
    state = model.initSystem()
    model.realizePosition(state)
    ms = model.getMarkerSet()
    if ms.getSize() < 2:
        raise ModelError("model has no markers to measure its height from; pass a marker set "
                         "or the model's height",
                         model.getInputFileName() or None)
    ys = [ms.get(i).getLocationInGround(state).get(1) for i in range(ms.getSize())]
    return float(max(ys) - min(ys))


def _resolve_segment(name: str, bodies: set[str]) -> str | None:
    if name in bodies:
        return name
    for alias, base in SEGMENT_ALIASES.items():
        for side in ("_r", "_l"):
            if name == alias + side and base + side in bodies:
                return base + side
    return None


def segment_scale_factors(model, lengths: Mapping[str, float], height: float,
                          model_height_m: float | None = None,
                          marker_set=None) -> dict[str, tuple[float, float, float]]:
    """Per-body uniform scale factors: measured length / model length for measured bodies,
    ``height / model height`` for every other body."""
    if not hasattr(model, "getJointSet"):
        model = load_model(model)
    src = model.getInputFileName() or None
    bodies = _model_bodies(model)
    model_lengths = model_segment_lengths(model)
    h_model = (model_height(model, marker_set) if model_height_m is None
               else _positive(model_height_m, "model height", src))
    h_ratio = _positive(height, "height", src) / h_model
    factors = {b: (h_ratio,) * 3 for b in bodies}
    for name, length in lengths.items():
        body = _resolve_segment(name, bodies)
        if body is None:
            raise InputError(f"segment {name!r} is not a body of the model (nor an alias: "
                             f"{', '.join(sorted(SEGMENT_ALIASES))} + _r/_l)", src)
        if body not in model_lengths or model_lengths[body] < 1e-4:
            raise InputError(f"body {body!r} has no single distal joint, so it has no "
                             "joint-to-joint length to scale by", src)
        k = _positive(length, f"length of {name}", src) / model_lengths[body]
        factors[body] = (k, k, k)
    return factors


def scale_from_segment_lengths(model, lengths: Mapping[str, float], height: float, mass: float,
                               out_dir, *, model_height_m: float | None = None,
                               marker_set=None) -> ScaleResult:
    """Scale ``model`` from measured segment lengths (m), height (m) and mass (kg).

    Segment lengths follow :func:`model_segment_lengths` (keys: body names, or the aliases in
    :data:`SEGMENT_ALIASES` with ``_r``/``_l``). Unmeasured bodies scale by ``height`` over the
    model's height (``model_height_m``, else :func:`model_height` from the model's markers or
    ``marker_set``). Masses are scaled to ``mass``
    keeping the model's mass distribution. Runs OpenSim's ScaleTool with manual scale factors.
    """
    model_path = _existing(model, "model file", ModelError)
    osim_model = load_model(model_path)
    factors = segment_scale_factors(osim_model, lengths, height, model_height_m, marker_set)
    return scale_with_factors(model_path, factors, height, _positive(mass, "mass", model_path),
                              out_dir, name="kinevid_segment_scale")


def _scale_tool(name: str, model_path: Path, mass: float, height: float | None, order: str,
                preserve_mass_distribution: bool):
    """An OpenSim ScaleTool for ``model_path`` applying one scaling method (``order``)."""
    import opensim as osim

    tool = osim.ScaleTool()
    tool.setName(name)
    tool.setSubjectMass(mass)
    if height is not None:
        tool.setSubjectHeight(1000.0 * height)   # setups hold mm
    tool.getGenericModelMaker().setModelFileName(str(model_path))
    scaler = tool.getModelScaler()
    scaler.setApply(True)
    methods = osim.ArrayStr()
    methods.append(order)
    scaler.setScalingOrder(methods)
    scaler.setPreserveMassDist(preserve_mass_distribution)
    return tool


def scale_with_factors(model, factors: Mapping[str, tuple[float, float, float]], height: float,
                       mass: float, out_dir, *, name: str = "kinevid_scale") -> ScaleResult:
    """OpenSim's ScaleTool with manual per-body scale factors ``{body: (sx, sy, sz)}``; masses
    scaled to ``mass`` keeping the model's mass distribution. ``height`` (m) is recorded."""
    import opensim as osim

    model_path = _existing(model, "model file", ModelError)
    tool = _scale_tool(name, model_path, float(mass), float(height), "manualScale", True)
    sset = tool.getModelScaler().getScaleSet()
    for body, (sx, sy, sz) in sorted(factors.items()):
        s = osim.Scale()
        s.setSegmentName(body)
        s.setScaleFactors(osim.Vec3(sx, sy, sz))
        s.setApply(True)
        sset.cloneAndAppend(s)
    out_dir = Path(out_dir).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    result = _run(tool, out_dir, place_markers=False)
    if abs(result.mass - mass) > 1e-3 * mass:
        raise ModelError(f"the scaled model weighs {result.mass:.3f} kg, not {mass:g} kg",
                         result.model_path)
    return result
