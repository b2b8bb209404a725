"""One inverse-kinematics solver over one trial, usable in any process.

It is OpenSim's own ``InverseKinematicsSolver`` driven exactly as OpenSim's
InverseKinematicsTool drives it: ``assemble()`` at the first frame, then ``track()`` frame by
frame, each solve starting from the previous solution (the solver keeps that solution
internally; the q in the state passed to ``track`` is ignored). :class:`FrameSolver` adds only
what the tool cannot do: solve a sub-range (for the parallel runner), per-frame marker weights
(keypoint confidence), and a lean loop without reporters, logs or files.
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Callable

import numpy as np

from . import osim_model
from .errors import InputError

#: Frames solved before a chunk's first frame and discarded, so that the chunk's first solve
#: starts, like the serial run's, from the solution of the previous frame rather than from the
#: model's default pose. The runner checks the last of them against the neighbouring chunk.
WARMUP_FRAMES = 3

#: Smallest per-frame weight factor (confidence) given to a marker; see _set_frame_weights.
MIN_WEIGHT_FACTOR = 1e-6


@dataclasses.dataclass
class IKProblem:
    """Everything a solver needs; plain data so it pickles to worker processes."""

    model_path: str
    time: np.ndarray                  # (n,)
    marker_names: tuple[str, ...]     # markers with a task, in the data's order
    data: np.ndarray                  # (n, m, 3) metres, NaN = missing
    marker_weights: tuple[float, ...]  # task weight per marker
    frame_weights: np.ndarray | None  # (n, m) per-frame factors (confidence), or None
    coordinate_tasks: tuple[tuple[str, float, str, float], ...]  # name, weight, type, value
    coordinate_file: str | None
    constraint_weight: float
    accuracy: float
    #: Coordinates whose range the solver enforces (clamped in the solver's state), see
    #: :func:`limited_coordinates`.
    limited: tuple[str, ...] = ()


def _model_key(path: str) -> tuple:
    st = os.stat(path)
    return (os.path.realpath(path), st.st_mtime_ns, st.st_size)


_MODEL_CACHE: dict[tuple, tuple] = {}


def load_model(path: str | os.PathLike):
    """``(model, default_state)`` for an .osim file, loaded once per process and file version
    (a batch of trials, and the long-lived workers, reuse it). Errors as
    :func:`osim_model.load_model`.
    """
    path = os.fspath(path)
    key = _model_key(path) if Path(path).is_file() else None
    hit = _MODEL_CACHE.get(key) if key else None
    if hit is not None:
        return hit
    model = osim_model.load_model(path)
    entry = (model, model.getWorkingState())
    if len(_MODEL_CACHE) >= 4:
        _MODEL_CACHE.pop(next(iter(_MODEL_CACHE)))
    _MODEL_CACHE[key] = entry
    return entry


def limited_coordinates(model) -> tuple[str, ...]:
    """The coordinates joint limits apply to: every unlocked coordinate with a finite range,
    except those of joints attached to ground (the free pelvis: its range says nothing about
    anatomy) and coordinates that a constraint couples to another (their range follows)."""
    import opensim as osim

    free = set()
    joints = model.getJointSet()
    for i in range(joints.getSize()):
        j = joints.get(i)
        if j.getParentFrame().findBaseFrame().getName() == model.getGround().getName():
            free.update(j.get_coordinates(k).getName() for k in range(j.numCoordinates()))
    coupled = set()
    cons = model.getConstraintSet()
    for i in range(cons.getSize()):
        cc = osim.CoordinateCouplerConstraint.safeDownCast(cons.get(i))
        if cc is not None:
            coupled.add(cc.getDependentCoordinateName())
    state = model.getWorkingState()
    out = []
    cs = model.getCoordinateSet()
    for i in range(cs.getSize()):
        c = cs.get(i)
        lo, hi = c.getRangeMin(), c.getRangeMax()
        if c.getName() in free or c.getName() in coupled or c.getLocked(state):
            continue
        if math.isfinite(lo) and math.isfinite(hi) and lo < hi:
            out.append(c.getName())
    return tuple(out)


def frames_at_limits(values_deg: dict[str, np.ndarray], ranges_deg: dict[str, tuple[float, float]],
                     tolerance_deg: float = 0.5, neutral_deg: float = 1.0) -> dict[str, np.ndarray]:
    """Per coordinate, the frames (bool mask) where an IK result sits at an end of its range.

    A limited solve (joint limits) holds a coordinate at its bound where the keypoints ask for
    more: the model cannot take the pose shown there (Rajagopal2016's shoulder stops at 90 deg
    of flexion, an arm raised overhead does not). Bounds within ``neutral_deg`` of 0 are
    anatomical stops that a body often rests against (a straight knee or elbow) and are not
    reported. Coordinates without a range entry are skipped.
    """
    out = {}
    for name, v in values_deg.items():
        if name not in ranges_deg:
            continue
        lo, hi = ranges_deg[name]
        v = np.asarray(v, dtype=float)
        hit = np.zeros(v.shape, dtype=bool)
        if abs(lo) > neutral_deg:
            hit |= v <= lo + tolerance_deg
        if abs(hi) > neutral_deg:
            hit |= v >= hi - tolerance_deg
        out[name] = hit
    return out


def _markers_table(problem: IKProblem):
    import opensim as osim

    n, m = problem.data.shape[:2]
    flat = np.ascontiguousarray(problem.data.reshape(n, 3 * m))
    labels = [f"{name}{s}" for name in problem.marker_names for s in ("_x", "_y", "_z")]
    scalar = osim.TimeSeriesTable([float(t) for t in problem.time],
                                  osim.Matrix.createFromMat(flat), labels)
    table = scalar.packVec3(["_x", "_y", "_z"])
    table.addTableMetaDataString("Units", "m")
    return table


class FrameSolver:
    """OpenSim's IK solver for one problem in this process."""

    def __init__(self, problem: IKProblem):
        import opensim as osim

        self.problem = problem
        self.model, default_state = load_model(problem.model_path)
        # A fresh copy of the default state: every run starts from the model's default pose.
        self.state = osim.State(default_state)
        coords = self.model.getCoordinateSet()
        self.coordinates = [coords.get(i) for i in range(coords.getSize())]
        self.coordinate_names = [c.getName() for c in self.coordinates]
        # Clamping lives in the state: the solver reads it when it sets up its goals (at
        # assemble()), so the cached model itself stays as the file says.
        for c in self.coordinates:
            if c.getName() in problem.limited:
                c.setClamped(self.state, True)

        self._table = _markers_table(problem)
        weights = osim.SetMarkerWeights()
        for name, w in zip(problem.marker_names, problem.marker_weights):
            weights.cloneAndAppend(osim.MarkerWeight(name, float(w)))
        self._weight_set = weights
        self._mref = osim.MarkersReference(self._table, weights)
        self._crefs = osim.SimTKArrayCoordinateReference()
        self._keep = []  # OpenSim objects the references point into
        self._add_coordinate_references()
        self.solver = osim.InverseKinematicsSolver(self.model, self._mref, self._crefs,
                                                   float(problem.constraint_weight))
        self.solver.setAccuracy(float(problem.accuracy))
        self._assembled = False
        # Frames where no marker exists (the subject left the video): nothing to solve there;
        # the next frame with markers is assembled afresh, as OpenSim's tool does at its start.
        self._has_markers = np.isfinite(problem.data).all(axis=2).any(axis=1)
        self._lost = False
        self.solver_marker_index: list[int] | None = None

    def _add_coordinate_references(self):
        import opensim as osim

        p = self.problem
        if not p.coordinate_tasks:
            return
        coords = self.model.getCoordinateSet()
        functions = None
        if any(vt == "from_file" for _, _, vt, _ in p.coordinate_tasks):
            sto = osim.Storage(p.coordinate_file)
            if sto.isInDegrees():
                self.model.getSimbodyEngine().convertDegreesToRadians(sto)
            # Same fit as OpenSim's tool: a quintic GCV spline through each column.
            functions = osim.GCVSplineSet(5, sto)
            self._keep += [sto, functions]
        for name, weight, vt, value in p.coordinate_tasks:
            if vt == "from_file":
                fn = functions.get(name)
            elif vt == "manual_value":
                fn = osim.Constant(float(value))
            else:
                fn = osim.Constant(coords.get(name).getDefaultValue())
            self._keep.append(fn)
            ref = osim.CoordinateReference(name, fn)
            ref.setWeight(float(weight))
            self._crefs.push_back(ref)

    # ------------------------------------------------------------------ solving
    def _map_markers(self):
        names = [self.solver.getMarkerNameForIndex(i)
                 for i in range(self.solver.getNumMarkersInUse())]
        pos = {n: j for j, n in enumerate(self.problem.marker_names)}
        self.solver_marker_index = [pos[n] for n in names]
        self.solver_marker_names = names

    def _set_frame_weights(self, k: int):
        fw = self.problem.frame_weights
        if fw is None:
            return
        base = self.problem.marker_weights
        for name, j in zip(self.solver_marker_names, self.solver_marker_index):
            f = fw[k, j]
            f = f if math.isfinite(f) else 0.0
            # Simbody's marker goal treats a weight moving to or from exactly zero as a change of
            # the problem's structure and refuses to track() until assemble() runs again; a floor
            # far below any real weight keeps the solve a cheap track() and changes nothing.
            self.solver.updateMarkerWeight(name, float(base[j] * max(f, MIN_WEIGHT_FACTOR)))

    def begin(self, k: int):
        """Assemble at frame ``k`` from the model's default pose (as OpenSim's tool does at its
        first frame)."""
        if not self._has_markers[k]:
            self._lost = True
            return
        self._lost = False
        self.state.setTime(float(self.problem.time[k]))
        if self._assembled and self.solver_marker_index is not None:
            self._set_frame_weights(k)
        try:
            self.solver.assemble(self.state)
        except Exception as exc:
            raise InputError(f"OpenSim could not assemble the model at t={self.problem.time[k]:g} "
                             f"s: {str(exc).strip()}", self.problem.model_path) from None
        if self.solver_marker_index is None:
            self._map_markers()
        self._assembled = True
        if self.problem.frame_weights is not None:
            # The first assembly used the task weights; redo it with this frame's weights.
            self._set_frame_weights(k)
            self.solver.assemble(self.state)

    def track(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Solve frame ``k`` from the previous solution; return (coordinate values in model
        units, squared marker errors in solver marker order)."""
        if not self._has_markers[k]:
            self._lost = True
            n_markers = len(self.solver_marker_index or self.problem.marker_names)
            return np.full(len(self.coordinates), np.nan), np.full(n_markers, np.nan)
        if self._lost or not self._assembled:
            self.begin(k)
            return self._current()
        self.state.setTime(float(self.problem.time[k]))
        self._set_frame_weights(k)
        try:
            self.solver.track(self.state)
        except Exception as exc:
            raise InputError(f"OpenSim IK failed at t={self.problem.time[k]:g} s: "
                             f"{str(exc).strip()}", self.problem.model_path) from None
        return self._current()

    def _current(self) -> tuple[np.ndarray, np.ndarray]:
        import opensim as osim

        s = self.state
        q = np.array([c.getValue(s) for c in self.coordinates])
        sq = osim.SimTKArrayDouble()
        self.solver.computeCurrentSquaredMarkerErrors(sq)
        return q, np.array([sq.getElt(i) for i in range(sq.size())])

    def solve(self, start: int, stop: int | Callable[[], int], warm_from: int | None = None,
              on_frame: Callable[[int], None] | None = None):
        """Solve frames ``start`` .. ``stop-1`` (``stop`` may be a callable read before every
        frame, so another party can shorten the range while it runs).

        ``warm_from`` < ``start``: assemble there and track up to ``start`` first, discarding
        those frames except for returning their solutions (for the overlap check).
        Returns ``(q, sq, warm_q)``: (k, ncoord), (k, nmarkers), (start-warm_from, ncoord).
        """
        first = start if warm_from is None else warm_from
        self.begin(first)
        warm_q = []
        for k in range(first, start):
            warm_q.append(self.track(k)[0])
        qs, sqs = [], []
        k = start
        end = stop if not callable(stop) else stop()
        while k < end:
            q, sq = self.track(k)
            qs.append(q)
            sqs.append(sq)
            k += 1
            if on_frame is not None:
                on_frame(k)
            if callable(stop):
                end = stop()
        ncoord, nm = len(self.coordinates), len(self.solver_marker_index or ())
        return (np.array(qs).reshape(-1, ncoord), np.array(sqs).reshape(-1, nm),
                np.array(warm_q).reshape(-1, ncoord))
