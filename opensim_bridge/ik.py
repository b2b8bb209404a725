"""Inverse kinematics with OpenSim's own solver, in parallel over frame ranges.

Accuracy and equality. OpenSim's solver stops when the pose is good to ``accuracy``; at the
usual 1e-5 the stopping point still depends on where the search started (the previous frame's
solution), by up to ~0.1 degree on gait2354 - starting the same trial at another frame changes
the answer that much. A result that depends on how frames were split among processes is not
acceptable, so kinevid solves at ``min(settings.accuracy, MAX_ACCURACY)`` (1e-7): there the
solution is the optimum to ~0.001 degree whatever the starting point, the parallel run equals the
serial run within 0.01 degree (tested), and ``ik_setup.xml`` records that accuracy so OpenSim's
tool reproduces ``ik.mot``.

Parallel scheme. This process solves frames forward from the first one exactly as OpenSim's
InverseKinematicsTool does (assemble at the first frame, then track). Each worker process
(started at once, kept alive between runs, see :mod:`ik_pool`) says when its solver is ready;
it then takes the last part of this process's remaining frames, starting with a few overlap
frames it solves and discards (:data:`ik_solver.WARMUP_FRAMES`) so its first kept frame is
tracked from a neighbouring solution like every other frame. The last overlap frame is checked
against this side's solution of the same frame (``IKResult.handoff_max_deg``). Slow workers
never delay the run: whatever they have not taken, this process solves.

Joint limits (``joint_limits=True``, the default of ``kinevid run``). Video keypoints are at
times wrong in ways markers never are (a leg swapped left for right, a foot the detector
guessed); unbounded, the solver follows them into impossible poses (a hip turned 180 deg, an
ankle at 140 deg) and then tracks from there. With limits the coordinates of every joint not
attached to ground are clamped in the solver's state, so OpenSim solves a bounded problem
(Simbody's L-BFGS-B). That optimiser stops by its own rule: the ``accuracy`` has little effect,
the fit is ~1-2 mm RMS looser than the unbounded optimum, and the answer depends on the path
the solver took, so a run split over processes differs from a serial one: on the synthetic
walk of tests/test_run_e2e.py by <= 1 deg on hip, knee and ankle but up to 114 deg on the wrist
and forearm, which keypoints barely determine; on a noisy real video (Sports2D demo) by up to
15 deg on a leg coordinate in some frames. ``jobs=1`` gives the serial answer; runs with the
same number of processes repeat exactly, because the frames are split before solving starts
(the workers, started first, are waited for up to ``READY_WAIT_S``). It is also about twice as
fast.

Missing markers (NaN) are ignored at that frame by OpenSim's solver; per-frame confidence
(``markers.confidence``) multiplies the marker's task weight at that frame.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time as _time
from multiprocessing.connection import wait as _wait
from pathlib import Path
from typing import Callable

import numpy as np

from . import errors as _errors
from . import ik_pool
from .atomic import atomic_path
from .errors import InputError, KinevidError
from .ik_settings import IKSettings
from .ik_solver import WARMUP_FRAMES, FrameSolver, IKProblem, limited_coordinates, load_model
from .setup_xml import add_property, object_element, set_element, write_document
from .storage import Table, write_table
from .timeseries import KeypointSeries

#: Loosest accuracy kinevid solves at (see the module docstring).
MAX_ACCURACY = 1e-7
#: A worker is given frames only if at least this many are left for it.
MIN_WORKER_FRAMES = 8
#: How long the solving waits for workers still building their solver (they normally take
#: ~0.1 s, started while this process builds its own).
READY_WAIT_S = 2.0

OUTPUT_MOTION = "ik.mot"
OUTPUT_ERRORS = "ik_marker_errors.sto"
OUTPUT_SETUP = "ik_setup.xml"
OUTPUT_MARKERS = "ik_markers.trc"


@dataclasses.dataclass
class IKResult:
    coordinates: Table          # degrees for rotational coordinates, metres for translations
    marker_errors: Table        # total_squared_error, marker_error_RMS, marker_error_max (m)
    marker_names: tuple[str, ...]
    per_marker_errors: np.ndarray  # (n_frames, n_markers) metres; NaN where the marker is missing
    files: dict[str, Path]
    wall_time: float
    accuracy: float
    jobs: int
    handoff_max_deg: float      # largest overlap disagreement between processes (0 if serial)
    limited: tuple[str, ...] = ()  # coordinates kept within their ranges


def _nearest(time: np.ndarray, t: float) -> int:
    return int(np.argmin(np.abs(time - t)))


def _frame_range(markers: KeypointSeries, start, end) -> tuple[int, int]:
    """First and last frame, chosen as OpenSim's tool does: the range is clipped to the data and
    each end goes to the nearest frame. A range entirely outside the data is an error."""
    markers.between(start, end)  # raises InputError naming the data's span if it misses
    t = markers.time
    t0 = t[0] if start is None else max(float(start), t[0])
    t1 = t[-1] if end is None else min(float(end), t[-1])
    return _nearest(t, t0), _nearest(t, t1)


def _marker_selection(model, markers: KeypointSeries, settings: IKSettings | None,
                      model_path: str) -> dict[str, float]:
    ms = model.getMarkerSet()
    in_model = {ms.get(i).getName() for i in range(ms.getSize())}
    data_names = set(markers.names)
    src = markers.source or "the marker data"
    if settings is None:
        weights = {n: 1.0 for n in markers.names if n in in_model}
        if not weights:
            raise InputError(f"none of the {len(markers.names)} markers of {src} is in the model "
                             f"{model_path}", markers.source)
        return weights
    weights = settings.marker_weights
    no_model = [n for n in weights if n not in in_model]
    no_data = [n for n in weights if n not in data_names]
    if no_model or no_data:
        parts = []
        if no_model:
            parts.append(f"{len(no_model)} not in the model {model_path}: {', '.join(no_model)}")
        if no_data:
            parts.append(f"{len(no_data)} not in the marker data {src}: {', '.join(no_data)}")
        raise InputError("IK marker tasks name markers that do not exist - " + "; ".join(parts)
                         + " (drop them with settings.without_markers(...) to ignore them, as "
                         "OpenSim's tool does)", settings.source)
    if not weights:
        raise InputError("the IK settings apply no marker task", settings.source)
    return weights


def _coordinate_tasks(model, settings: IKSettings | None, model_path: str):
    if settings is None:
        return ()
    cs = model.getCoordinateSet()
    names = {cs.get(i).getName() for i in range(cs.getSize())}
    tasks = settings.applied_coordinate_tasks
    bad = [t.name for t in tasks if t.name not in names]
    if bad:
        raise InputError(f"IK coordinate tasks name coordinates not in the model {model_path}: "
                         f"{', '.join(bad)}", settings.source)
    if any(t.value_type == "from_file" for t in tasks):
        from .storage import read_table
        table = read_table(settings.coordinate_file)
        missing = [t.name for t in tasks if t.value_type == "from_file" and t.name not in table]
        if missing:
            raise InputError(f"coordinate tasks take values from this file but it has no column "
                             f"for {', '.join(missing)}", settings.coordinate_file)
    return tuple((t.name, float(t.weight), t.value_type, float(t.value)) for t in tasks)


def _raise_remote(kind: str, problem: str, path):
    cls = getattr(_errors, kind, InputError)
    if not (isinstance(cls, type) and issubclass(cls, KinevidError)):
        cls = InputError
    raise cls(problem, path)


class _Run:
    """Solve ``problem`` here and in the workers; fills ``self.q`` and ``self.sq``."""

    def __init__(self, problem: IKProblem, workers, progress):
        self.p, self.workers, self.progress = problem, workers, progress
        n = len(problem.time)
        self.n = n
        self.q = None
        self.sq = None
        self.done = 0
        self.end = n
        self.k = 0
        self.run_id = os.urandom(8).hex()
        self.state = {}     # worker -> "setup" | "busy" | "idle"
        self.ranges = {}    # worker -> (start, stop)
        self.warm = {}      # start -> warm-up solutions
        self.orphans = []   # ranges whose worker failed; solved here at the end

    def _tick(self, n=1):
        self.done += n
        if self.progress is not None:
            self.progress(self.done, self.n)

    def _store(self, start, q, sq):
        if self.sq is None:
            self.sq = np.full((self.n, sq.shape[1]), np.nan)
        self.q[start:start + len(q)] = q
        self.sq[start:start + len(sq)] = sq

    def _pump(self, block: bool, timeout: float | None = None):
        live = [w for w, st in self.state.items() if st in ("setup", "busy")]
        if not live:
            return
        for conn in _wait([w.conn for w in live], timeout=(timeout if block else 0)):
            w = next(x for x in live if x.conn is conn)
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                w.alive = False
                self._lost(w)
                continue
            if msg[1] != self.run_id:
                continue  # left over from an earlier run
            kind = msg[0]
            if kind == "ready":
                self._assign(w)
            elif kind == "progress":
                self._tick(msg[2])
            elif kind == "result":
                start, stop = self.ranges.pop(w)
                self._store(start, msg[3], msg[4])
                self.warm[start] = msg[5]
                self.state[w] = "idle"
            elif kind == "error":
                if self.state[w] == "setup":
                    self.state[w] = "idle"  # this process will do the work
                else:
                    _raise_remote(*msg[2:5])

    def _lost(self, w):
        if w in self.ranges:
            self.orphans.append(self.ranges.pop(w))
        self.state[w] = "dead"

    def _assign(self, w):
        pending = sum(1 for st in self.state.values() if st == "setup")  # includes w
        share = (self.end - self.k - WARMUP_FRAMES) // (pending + 1)
        if share < MIN_WORKER_FRAMES:
            w.send(("done", self.run_id))
            self.state[w] = "idle"
            return
        start, stop = self.end - share, self.end
        if not w.send(("block", self.run_id, 0, max(0, start - WARMUP_FRAMES), start, stop)):
            self.state[w] = "dead"
            return
        self.end = start
        self.ranges[w] = (start, stop)
        self.state[w] = "busy"

    def start_workers(self):
        for w in self.workers:
            if w.send(("run", self.run_id, self.p)):
                self.state[w] = "setup"

    def run(self, solver: FrameSolver):
        self.solver = s = solver
        self.q = np.full((self.n, len(solver.coordinates)), np.nan)
        # Workers that are about ready are waited for (briefly), so that the frames are split
        # at the start: the same split every run, whatever the timing (with joint limits the
        # answer depends on where a process starts; see the module documentation).
        deadline = _time.perf_counter() + READY_WAIT_S
        while any(st == "setup" for st in self.state.values()):
            left = deadline - _time.perf_counter()
            if left <= 0:
                break
            self._pump(block=True, timeout=left)
        s.begin(0)
        while self.k < self.end:
            self._pump(block=False)
            if self.k >= self.end:
                break
            q, sq = s.track(self.k)
            self._store(self.k, q[None], sq[None])
            self.k += 1
            self._tick()
        for w, st in self.state.items():
            if st == "setup":  # not ready in time: tell it not to wait for work
                w.send(("done", self.run_id))
                self.state[w] = "idle"
        while any(st == "busy" for st in self.state.values()):
            self._pump(block=True)
        for start, stop in sorted(self.orphans):
            q, sq, wq = s.solve(start, stop, warm_from=max(0, start - WARMUP_FRAMES),
                                on_frame=lambda k: self._tick())
            self._store(start, q, sq)
            self.warm[start] = wq
        handoff = 0.0
        rot = np.array([c.getMotionType() == 1 for c in s.coordinates])
        for start, wq in self.warm.items():
            if len(wq):
                d = np.abs(wq[-1] - self.q[start - 1])
                d[rot] = np.degrees(d[rot])
                handoff = max(handoff, float(np.nanmax(d[rot])) if rot.any() else 0.0)
        return handoff


def run_ik(model: str | os.PathLike, markers: KeypointSeries, settings: IKSettings | None,
           out_dir: str | os.PathLike, *, jobs: int | None = None, start: float | None = None,
           end: float | None = None, joint_limits: bool = False, stride: int = 1,
           progress: Callable[[int, int], None] | None = None) -> IKResult:
    """Inverse kinematics of ``markers`` on the OpenSim model file ``model``.

    ``settings``: task weights etc. (:func:`ik_settings.load_ik_settings`); None = every marker
    common to model and data with weight 1, OpenSim's defaults otherwise. ``start``/``end``
    (seconds) override ``settings.time_range``. ``jobs``: processes (None = all cores).
    ``joint_limits``: keep every joint coordinate within its range in the model (see
    :func:`ik_solver.limited_coordinates`; OpenSim then solves with its bounded optimiser).
    ``stride``: solve every ``stride``-th frame (and the last) and fill the frames between by
    monotone cubic (PCHIP) interpolation of the coordinates, which never overshoots the solved
    values (so joint limits hold); their marker errors come from the model's forward kinematics
    at the interpolated pose, so they are errors of what is written, not estimates. Meant for
    markers low-passed well below the solving rate (kinevid filters keypoints at 6 Hz).
    ``progress(done, total)`` is called as frames are solved. Writes ``ik.mot``,
    ``ik_marker_errors.sto`` and ``ik_setup.xml`` (plus ``ik_markers.trc`` when the markers are
    not a TRC file on disk) into ``out_dir``, all or none.
    """
    t_start = _time.perf_counter()
    n_jobs = ik_pool.resolve_jobs(jobs)
    # Start workers first: their start-up then overlaps with everything below.
    workers = ik_pool.get_workers(n_jobs - 1)

    model_path = os.path.abspath(os.fspath(model))
    if not isinstance(markers, KeypointSeries):
        raise InputError(f"markers must be a KeypointSeries, not {type(markers).__name__}")
    if markers.dim != 3 or markers.units == "px":
        raise InputError("inverse kinematics needs 3D markers in length units", markers.source)
    markers = markers.to_metres()
    osim_model, _ = load_model(model_path)

    if start is None and end is None and settings is not None and settings.time_range:
        start, end = settings.time_range
    i0, i1 = _frame_range(markers, start, end)
    weights = _marker_selection(osim_model, markers, settings, model_path)
    coord_tasks = _coordinate_tasks(osim_model, settings, model_path)
    names = [n for n in markers.names if n in weights]
    sel = markers.select(names).frames(slice(i0, i1 + 1))
    stride = int(stride)
    if stride < 1:
        raise InputError(f"stride must be a whole number >= 1, got {stride}", markers.source)
    solved = np.unique(np.append(np.arange(0, len(sel), stride), len(sel) - 1))
    full = sel
    sel = sel.frames(solved) if len(solved) < len(full) else full
    w = np.array([weights[n] for n in names])
    usable = (~np.isnan(sel.data).any(axis=2)) & (w[None, :] > 0)
    if not usable.any():
        raise InputError(f"all {len(names)} weighted markers are missing (NaN) in every frame "
                         f"between {sel.time[0]:g} and {sel.time[-1]:g} s", markers.source)
    frame_weights = None if sel.confidence is None else sel.confidence.copy()

    accuracy = min(settings.accuracy if settings else 1e-5, MAX_ACCURACY)
    constraint_weight = settings.constraint_weight if settings else math.inf
    problem = IKProblem(model_path, sel.time.copy(), tuple(names), np.ascontiguousarray(sel.data),
                        tuple(float(x) for x in w), frame_weights, coord_tasks,
                        settings.coordinate_file if settings else None,
                        float(constraint_weight), float(accuracy),
                        limited_coordinates(osim_model) if joint_limits else ())

    n = len(sel)
    use = [wk for wk in workers] if n >= 2 * MIN_WORKER_FRAMES + WARMUP_FRAMES else []
    runner = _Run(problem, use, progress)
    runner.start_workers()          # they build their solvers while this process builds its own
    solver = FrameSolver(problem)
    handoff = runner.run(solver)

    q, sq = runner.q, runner.sq
    if sel is not full:
        q, sq = _fill_between(solver, full, solved, q, sq)
        sel = full
        n = len(sel)

    # ---------------------------------------------------------------- tables
    rot = np.array([c.getMotionType() == 1 for c in solver.coordinates])
    q = q.copy()
    q[:, rot] = np.degrees(q[:, rot])
    coords = Table(sel.time, solver.coordinate_names, q, in_degrees=True, name="Coordinates")
    nm = sq.shape[1]
    total = sq.sum(axis=1)
    rms = np.sqrt(total / nm) if nm else np.zeros(n)
    errors = Table(sel.time, ("total_squared_error", "marker_error_RMS", "marker_error_max"),
                   np.column_stack([total, rms, np.sqrt(sq.max(axis=1))]), in_degrees=False,
                   name="Model Marker Errors from IK")
    marker_names = tuple(solver.solver_marker_names)
    idx = [names.index(m) for m in marker_names]
    per_marker = np.sqrt(sq)
    per_marker[np.isnan(sel.data[:, idx]).any(axis=2)] = np.nan

    # ---------------------------------------------------------------- files, all or none
    out = Path(out_dir).resolve()
    files = {"motion": out / OUTPUT_MOTION, "marker_errors": out / OUTPUT_ERRORS,
             "setup": out / OUTPUT_SETUP}
    marker_file = _reusable_trc(markers, sel)
    with contextlib.ExitStack() as stack:
        tmp = {k: stack.enter_context(atomic_path(p)) for k, p in files.items()}
        if marker_file is None:
            files["markers"] = out / OUTPUT_MARKERS
            tmp["markers"] = stack.enter_context(atomic_path(files["markers"]))
            from .trc import write_trc
            write_trc(markers.frames(slice(i0, i1 + 1)), tmp["markers"])
            marker_file = files["markers"]
        write_table(coords, tmp["motion"])
        write_table(errors, tmp["marker_errors"])
        write_ik_setup(tmp["setup"], model_path=model_path, marker_file=marker_file,
                       weights=weights, coordinate_tasks=coord_tasks,
                       coordinate_file=problem.coordinate_file,
                       constraint_weight=constraint_weight, accuracy=accuracy,
                       time_range=(float(sel.time[0]), float(sel.time[-1])),
                       output_motion=files["motion"], results_dir=out,
                       per_frame_weights=frame_weights is not None, limited=problem.limited)
    return IKResult(coords, errors, marker_names, per_marker, files,
                    _time.perf_counter() - t_start, accuracy, 1 + len(use), handoff,
                    problem.limited)


def _fill_between(solver, full: KeypointSeries, solved: np.ndarray, q: np.ndarray,
                  sq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates and squared marker errors on every frame of ``full`` from the frames
    ``solved`` (indices into ``full``): PCHIP through the solutions, NaN between two solved
    frames of which one has no solution (the subject was not seen), errors by forward
    kinematics."""
    from scipy.interpolate import PchipInterpolator

    n = len(full)
    t_all, t_sol = full.time, full.time[solved]
    q_all = np.full((n, q.shape[1]), np.nan)
    sq_all = np.full((n, sq.shape[1]), np.nan)
    q_all[solved], sq_all[solved] = q, sq
    ok = np.isfinite(q).all(axis=1)
    if ok.sum() >= 2:
        fill = np.setdiff1d(np.arange(n), solved)
        # the solved frames on either side of each frame filled
        after = np.searchsorted(solved, fill)
        both = ok[after - 1] & ok[np.minimum(after, len(solved) - 1)]
        # a frame without any marker stays empty, as a solved one would
        seen = np.isfinite(full.data).all(axis=2).any(axis=1)
        fill = fill[both & seen[fill]]
        q_all[fill] = PchipInterpolator(t_sol[ok], q[ok], axis=0)(t_all[fill])
        model, state = solver.model, solver.state
        coords = solver.coordinates
        free = [j for j, c in enumerate(coords) if not c.getLocked(state)]
        mset = model.getMarkerSet()
        mk = [mset.get(m) for m in solver.solver_marker_names]
        data = full.select(solver.solver_marker_names).data
        for k in fill:
            for j in free:
                coords[j].setValue(state, float(q_all[k, j]), False)
            model.realizePosition(state)
            pos = np.array([m.getLocationInGround(state).to_numpy() for m in mk])
            d2 = np.sum((pos - data[k]) ** 2, axis=1)
            # missing markers count as the solver counts them: no error
            sq_all[k] = np.where(np.isfinite(d2), d2, 0.0)
    return q_all, sq_all


def _reusable_trc(markers: KeypointSeries, sel: KeypointSeries) -> Path | None:
    """The input TRC file, if it holds exactly the solved frames' data (so the setup can point
    at it); else None and a copy is written."""
    src = markers.source
    if not src or not src.lower().endswith(".trc") or not os.path.isfile(src):
        return None
    from .trc import read_trc
    try:
        disk = read_trc(src)
    except KinevidError:
        return None
    if not set(sel.names) <= set(disk.names):
        return None
    pos = np.searchsorted(disk.time, sel.time)
    if (pos >= len(disk.time)).any() or not np.allclose(disk.time[pos], sel.time, atol=1e-9):
        return None
    d = disk.select(sel.names).data[pos]
    if not np.allclose(d, sel.data, rtol=0, atol=1e-9, equal_nan=True):
        return None
    return Path(src).resolve()


def write_ik_setup(path, *, model_path, marker_file, weights: dict[str, float],
                   coordinate_tasks=(), coordinate_file=None, constraint_weight=math.inf,
                   accuracy=1e-5, time_range=None, output_motion=None, results_dir=None,
                   per_frame_weights: bool = False, limited: tuple[str, ...] = (),
                   name: str = "kinevid") -> Path:
    """An OpenSim InverseKinematicsTool setup file with absolute paths."""
    tasks = [object_element("IKMarkerTask", n, [("apply", True), ("weight", float(w))])
             for n, w in weights.items()]
    for cname, cw, vt, value in coordinate_tasks:
        tasks.append(object_element("IKCoordinateTask", cname,
                                    [("apply", True), ("weight", float(cw)), ("value_type", vt),
                                     ("value", float(value))]))
    tool = object_element("InverseKinematicsTool", name)
    add_property(tool, "results_directory", os.fspath(results_dir or Path(path).parent))
    add_property(tool, "model_file", os.fspath(model_path))
    add_property(tool, "constraint_weight", float(constraint_weight))
    add_property(tool, "accuracy", float(accuracy),
                 comment="kinevid solves at 1e-7 or tighter so the result does not depend "
                         "on the starting frame")
    tool.append(set_element("IKTaskSet", "kinevid_tasks", tasks))
    add_property(tool, "marker_file", os.fspath(marker_file))
    add_property(tool, "coordinate_file", os.fspath(coordinate_file) if coordinate_file
                 else "Unassigned")
    if time_range is not None:
        add_property(tool, "time_range", tuple(float(t) for t in time_range))
    add_property(tool, "report_errors", True)
    add_property(tool, "output_motion_file", os.fspath(output_motion) if output_motion else "")
    add_property(tool, "report_marker_locations", False)
    notes = []
    if per_frame_weights:
        notes.append("kinevid weighted markers per frame by keypoint confidence; an OpenSim "
                     "setup cannot express that, so this file reproduces the run only "
                     "approximately")
    if limited:
        notes.append("kinevid kept these coordinates within their ranges (as if clamped in the "
                     "model): " + ", ".join(limited) + "; set <clamped>true</clamped> on them in "
                     "the model to reproduce that in OpenSim")
    note = "\n".join(notes) or None
    return write_document(tool, path, header_comment=note)
