"""Inverse dynamics with OpenSim's InverseDynamicsTool.

:func:`run_id` checks the inputs (model, coordinates, GRF, time range) so that a bad input fails
with a :class:`~opensim_bridge.errors.KinevidError` naming the file instead of deep inside
OpenSim, configures the tool through the API with absolute paths, runs it in a scratch folder
inside ``out_dir`` and only then moves ``id.sto``, ``id_setup.xml`` (and ``external_loads.xml``)
into ``out_dir``, each atomically: a failed run leaves earlier results untouched.

``id_setup.xml`` reproduces the run: ``osim.InverseDynamicsTool(path).run()`` rewrites
``out_dir/id.sto`` from the same absolute inputs.

:func:`id_from_setup` runs an existing InverseDynamics setup file, resolving its relative paths
against the setup's own folder, with any input replaceable.
"""
from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
import time as _time
import warnings
from pathlib import Path

from .errors import InputError, KinevidError
from .osim_model import first_line, load_model, quiet_stdout
from .external_loads import (Assignment, build_external_loads, check_loads, load_external_loads,
                             read_grf)

#: Slack (s) when checking a requested time range against the data, for files whose times were
#: printed with few digits (0.39999976 for 0.4).
TIME_TOLERANCE = 1e-5

ID_FILE = "id.sto"
SETUP_FILE = "id_setup.xml"
LOADS_FILE = "external_loads.xml"


@dataclasses.dataclass
class IDResult:
    """What :func:`run_id` produced."""

    table: object                 # storage.Table of generalized forces (N m / N), time in s
    id_sto: Path
    setup_xml: Path
    external_loads_xml: Path | None
    wall_s: float
    time_range: tuple[float, float]
    lowpass_hz: float | None
    assignments: list[Assignment] = dataclasses.field(default_factory=list)  # auto GRF only
    warnings: list[str] = dataclasses.field(default_factory=list)


def check_motion(model, motion, motion_path) -> list[str]:
    """Match a coordinates table against the model; returns warnings, raises on missing data.

    Columns the model lacks are ignored by OpenSim, so they only warn. A model coordinate with no
    column is an error unless OpenSim does not need it: locked by default, or dependent (driven
    by a constraint such as a CoordinateCouplerConstraint, e.g. the patella's knee_angle_beta).
    """
    state = model.initSystem()
    coords = model.getCoordinateSet()
    names = [coords.get(i).getName() for i in range(coords.getSize())]
    # OpenSim 4 states files name columns by path: /jointset/hip_r/hip_flexion_r/value.
    present = set()
    for label in motion.labels:
        parts = [p for p in label.split("/") if p]
        present.add(parts[-2] if label.startswith("/") and len(parts) >= 2 else label)
    missing = [n for n in names if n not in present
               and not coords.get(n).getDefaultLocked() and not coords.get(n).isDependent(state)]
    if missing:
        raise InputError(f"motion lacks {len(missing)} coordinate(s) of model "
                         f"{Path(model.getInputFileName()).name}: {', '.join(missing)}",
                         motion_path)
    notes = []
    unknown = sorted(present - set(names))
    if unknown:
        notes.append(f"{motion_path}: {len(unknown)} column(s) are not coordinates of the model "
                     f"and are ignored: {', '.join(unknown)}")
    if motion.in_degrees is None:
        notes.append(f"{motion_path}: header has no inDegrees line; OpenSim reads its angles "
                     "as radians")
    return notes


def _time_window(motion, motion_path, start, end) -> tuple[float, float]:
    t0, t1 = float(motion.time[0]), float(motion.time[-1])
    start = t0 if start is None else float(start)
    end = t1 if end is None else float(end)
    if not (math.isfinite(start) and math.isfinite(end)) or start >= end:
        raise InputError(f"invalid time range {start:g}-{end:g} s", motion_path)
    if start < t0 - TIME_TOLERANCE or end > t1 + TIME_TOLERANCE:
        raise InputError(f"time range {start:g}-{end:g} s lies outside the motion's data "
                         f"({t0:g}-{t1:g} s)", motion_path)
    return max(start, t0), min(end, t1)


def run_id(model, motion, out_dir, *, grf=None, loads=None, lowpass_hz: float | None = 6.0,
           start: float | None = None, end: float | None = None) -> IDResult:
    """Inverse dynamics of ``motion`` (an IK .mot) on ``model`` (.osim) into ``out_dir``.

    ``loads``: an ExternalLoads XML (its datafile relative to its folder); ``grf``: a GRF .mot
    that replaces that datafile, or, without ``loads``, from which the loads are built by column
    names (see :mod:`opensim_bridge.external_loads`). Neither: no external loads.
    ``lowpass_hz``: cut-off of OpenSim's low-pass filter on the coordinates; None: unfiltered.
    Muscles are excluded from the model's forces, as in OpenSim's standard ID setup.
    """
    import opensim as osim

    from .storage import read_table

    t_start = _time.perf_counter()
    out_dir = Path(out_dir).expanduser().resolve()
    model_path = Path(model).expanduser().resolve()
    motion_path = Path(motion).expanduser().resolve()
    osim_model = load_model(model_path)
    if not motion_path.is_file():
        raise InputError("motion file not found", motion_path)
    motion_table = read_table(motion_path)
    if len(motion_table) < 2:
        raise InputError("motion needs at least two frames for inverse dynamics", motion_path)
    notes = check_motion(osim_model, motion_table, motion_path)
    t0, t1 = _time_window(motion_table, motion_path, start, end)
    if lowpass_hz is not None and not (math.isfinite(lowpass_hz) and lowpass_hz > 0):
        raise InputError(f"low-pass cut-off must be a positive frequency, not {lowpass_hz!r}",
                         motion_path)

    assignments: list[Assignment] = []
    ext = None
    grf_path = None
    if loads is not None:
        loads_path = Path(loads).expanduser().resolve()
        ext, grf_path = load_external_loads(loads_path, grf=grf)
    elif grf is not None:
        loads_path = None
        ext, assignments = build_external_loads(grf, osim_model, motion_path)
        grf_path = Path(grf).expanduser().resolve()
    if ext is not None:
        grf_table = read_grf(grf_path)
        check_loads(ext, grf_path, grf_table.labels, osim_model, loads_path)
        g0, g1 = float(grf_table.time[0]), float(grf_table.time[-1])
        if t0 < g0 - TIME_TOLERANCE or t1 > g1 + TIME_TOLERANCE:
            raise InputError(f"GRF data ({g0:g}-{g1:g} s) does not cover the inverse dynamics "
                             f"time range {t0:g}-{t1:g} s", grf_path)

    for note in notes:
        warnings.warn(note, stacklevel=2)

    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".id_run_", dir=out_dir))
    try:
        tool = osim.InverseDynamicsTool()
        tool.setName("kinevid_id")
        tool.setModelFileName(str(model_path))
        tool.setCoordinatesFileName(str(motion_path))
        tool.setStartTime(t0)
        tool.setEndTime(t1)
        tool.setLowpassCutoffFrequency(-1.0 if lowpass_hz is None else float(lowpass_hz))
        excluded = osim.ArrayStr()
        excluded.append("Muscles")
        tool.setExcludedForces(excluded)
        tool.setOutputGenForceFileName(ID_FILE)
        tool.setResultsDir(str(scratch))
        if ext is not None:
            # The scratch folder is already the staging area, so a plain write is atomic enough.
            ext.printToXML(str(scratch / LOADS_FILE))
            tool.setExternalLoadsFileName(str(scratch / LOADS_FILE))
        try:
            with quiet_stdout():
                ok = tool.run()
        except RuntimeError as exc:
            raise InputError(f"OpenSim's InverseDynamicsTool failed: {first_line(exc)}",
                             motion_path) from exc
        produced = scratch / ID_FILE
        if not ok or not produced.is_file():
            raise KinevidError("OpenSim's InverseDynamicsTool reported failure and wrote no "
                               "results", motion_path)
        table = read_table(produced)
        # The setup written for the user points at the final locations, so that it reruns
        # the same computation from anywhere.
        tool.setResultsDir(str(out_dir))
        if ext is not None:
            tool.setExternalLoadsFileName(str(out_dir / LOADS_FILE))
        tool.printToXML(str(scratch / SETUP_FILE))

        if ext is not None:
            os.replace(scratch / LOADS_FILE, out_dir / LOADS_FILE)
        os.replace(scratch / SETUP_FILE, out_dir / SETUP_FILE)
        os.replace(produced, out_dir / ID_FILE)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    table = table.copy(source=str(out_dir / ID_FILE))
    return IDResult(table=table, id_sto=out_dir / ID_FILE, setup_xml=out_dir / SETUP_FILE,
                    external_loads_xml=(out_dir / LOADS_FILE) if ext is not None else None,
                    wall_s=_time.perf_counter() - t_start, time_range=(t0, t1),
                    lowpass_hz=lowpass_hz, assignments=assignments, warnings=notes)


def _resolve(setup: Path, name: str, what: str, override) -> Path | None:
    """A setup file's path entry, relative to the setup's folder; ``override`` wins."""
    if override is not None:
        return Path(override).expanduser().resolve()
    name = (name or "").strip()
    if not name or name == "Unassigned":
        return None
    path = Path(name) if os.path.isabs(name) else setup.parent / name
    if not path.exists():
        raise InputError(f"its {what} {name!r} does not exist (looked for "
                         f"{os.path.normpath(path)}); pass the file explicitly", setup)
    return path.resolve()


def id_from_setup(setup_xml, out_dir, *, model=None, motion=None, loads=None, grf=None,
                  lowpass_hz: float | None | str = "setup", start=None, end=None) -> IDResult:
    """Run an InverseDynamicsTool setup file through :func:`run_id`.

    Relative paths in the setup are taken relative to the setup file's folder (what OpenSim's
    GUI does), not the current directory. Each keyword replaces the setup's entry; a path the
    setup names that does not exist is an :class:`InputError` unless replaced. ``lowpass_hz``
    defaults to the setup's cut-off (negative there: unfiltered).
    """
    import opensim as osim

    setup = Path(setup_xml).expanduser().resolve()
    if not setup.is_file():
        raise InputError("inverse dynamics setup file not found", setup)
    try:
        tool = osim.InverseDynamicsTool(str(setup))
    except RuntimeError as exc:
        raise InputError(f"OpenSim cannot read this setup file: {first_line(exc)}",
                         setup) from exc
    model_path = _resolve(setup, tool.getModelFileName(), "model_file", model)
    motion_path = _resolve(setup, tool.getCoordinatesFileName(), "coordinates_file", motion)
    loads_path = _resolve(setup, tool.getExternalLoadsFileName(), "external_loads_file", loads)
    if model_path is None:
        raise InputError("the setup names no model_file; pass the model", setup)
    if motion_path is None:
        raise InputError("the setup names no coordinates_file; pass the motion", setup)
    if lowpass_hz == "setup":
        cutoff = tool.getLowpassCutoffFrequency()
        lowpass_hz = float(cutoff) if cutoff > 0 else None
    s0, s1 = tool.getStartTime(), tool.getEndTime()
    # An absent <time_range> reads as (-inf, inf) or as (0, 0) depending on the version: both
    # mean "the whole motion". A setup's range that overshoots the data is clipped to it, as
    # OpenSim does; a range the caller passes is checked strictly by run_id.
    if s0 < s1:
        from .storage import read_table

        times = read_table(motion_path).time
        if start is None and math.isfinite(s0):
            start = max(s0, float(times[0]))
        if end is None and math.isfinite(s1):
            end = min(s1, float(times[-1]))
    return run_id(model_path, motion_path, out_dir, grf=grf, loads=loads_path,
                  lowpass_hz=lowpass_hz, start=start, end=end)
