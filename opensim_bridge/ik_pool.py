"""Worker processes for parallel inverse kinematics.

On Linux workers are forked: a forked worker inherits the imported OpenSim libraries and the
models this process already loaded, so it is solving within ~10 ms, where a spawned one spends
~0.3 s importing Python and OpenSim (a third of a typical trial's IK). Forking is safe here because
a worker only builds its own solver objects and never touches state shared with the parent; it
happens when the pool is first used, before kinevid starts any thread of its own. Elsewhere, or
with ``KINEVID_IK_START_METHOD=spawn``, workers are spawned. Either way they stay alive between
runs so a batch of trials pays the start-up once, and keep the models they loaded
(:func:`ik_solver.load_model` caches by file path, modification time and size).

Protocol, over one duplex pipe per worker, every message tagged with the run id:
parent -> worker ``("run", id, problem)``; worker -> parent ``("ready", id)`` once its solver is
built; parent -> worker ``("block", id, b, warm_from, start, stop)`` or ``("done", id)``;
worker -> parent ``("progress", id, 1)`` per frame and ``("result", id, b, q, sq, warm_q)``;
``("error", id, kind, problem, path)`` when something fails. Messages of older runs are ignored.
"""
from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import sys
import threading

_LOCK = threading.Lock()
_POOL: "WorkerPool | None" = None


def _worker_main(conn) -> None:
    import opensim as osim  # the expensive part of start-up, done before any task arrives

    osim.Logger.setLevelString("error")
    from .errors import KinevidError
    from .ik_solver import FrameSolver

    solver, run_id = None, None
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        kind = msg[0]
        if kind == "quit":
            return
        try:
            if kind == "run":
                run_id, problem = msg[1], msg[2]
                solver = None
                solver = FrameSolver(problem)
                conn.send(("ready", run_id))
            elif kind == "block" and msg[1] == run_id and solver is not None:
                _, rid, b, warm_from, start, stop = msg
                q, sq, wq = solver.solve(start, stop, warm_from=warm_from,
                                         on_frame=lambda k: conn.send(("progress", rid, 1)))
                conn.send(("result", rid, b, q, sq, wq))
            elif kind == "done":
                solver = None
        except (BrokenPipeError, EOFError, OSError):
            return  # the parent has gone away
        except KinevidError as exc:
            conn.send(("error", msg[1], type(exc).__name__, exc.problem, exc.path))
        except Exception as exc:  # anything else: report, stay alive for the next run
            conn.send(("error", msg[1], "InputError", f"{type(exc).__name__}: {exc}", None))


class Worker:
    def __init__(self, ctx):
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_main, args=(child,), daemon=True,
                                   name="kinevid-ik-worker")
        self.process.start()
        child.close()
        self.alive = True

    def send(self, msg) -> bool:
        try:
            self.conn.send(msg)
            return True
        except (OSError, ValueError, BrokenPipeError):
            self.alive = False
            return False

    def close(self):
        if self.alive:
            self.send(("quit",))
        self.conn.close()
        self.process.join(timeout=2)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=2)


class WorkerPool:
    def __init__(self):
        self.ctx = mp.get_context(start_method())
        self.workers: list[Worker] = []

    def ensure(self, n: int) -> list[Worker]:
        self.workers = [w for w in self.workers if w.alive and w.process.is_alive()]
        while len(self.workers) < n:
            self.workers.append(Worker(self.ctx))
        return self.workers[:n]

    def close(self):
        for w in self.workers:
            w.close()
        self.workers = []


def get_workers(n: int) -> list[Worker]:
    """``n`` live worker processes, started now if needed (returns at once: they finish
    starting in the background)."""
    global _POOL
    if n <= 0:
        return []
    with _LOCK:
        if _POOL is None:
            _POOL = WorkerPool()
        return _POOL.ensure(n)


def prestart(jobs: int | None = None) -> None:
    """Start the IK worker processes now (e.g. before reading input files), so that their
    start-up overlaps with other work. ``jobs``: total processes including this one."""
    get_workers(resolve_jobs(jobs) - 1)


def shutdown() -> None:
    global _POOL
    with _LOCK:
        if _POOL is not None:
            _POOL.close()
            _POOL = None


def start_method() -> str:
    method = os.environ.get("KINEVID_IK_START_METHOD", "")
    if method:
        if method not in mp.get_all_start_methods():
            raise ValueError(f"KINEVID_IK_START_METHOD={method!r} is not available here "
                             f"(choose from {', '.join(mp.get_all_start_methods())})")
        return method
    return "fork" if sys.platform.startswith("linux") else "spawn"


def resolve_jobs(jobs: int | None) -> int:
    if jobs is None:
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else (os.cpu_count() or 1))
    return max(1, int(jobs))


atexit.register(shutdown)
