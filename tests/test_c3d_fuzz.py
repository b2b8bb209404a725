"""Corrupted real C3D files: only C3DError may escape, nothing hangs, nothing allocates from an
unchecked count.

Each corrupted file is read by a long-lived worker process (this file run as a script) whose
address space is capped at 1.5 GiB with ``resource.setrlimit(RLIMIT_AS)``: an allocation driven by
a lying count fails there with MemoryError (reported as a failure, since the reader must reject
such a file before allocating), and a hang is caught by a per-case timeout on its answer.
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "data" / "c3d-org-samples" / "tests" / "c3d_org_samples"
BASES = [SAMPLES / "sample_02" / "pc_real.c3d", SAMPLES / "sample_02" / "dec_int.c3d",
         SAMPLES / "sample_02" / "sgi_real.c3d", SAMPLES / "sample_10" / "TYPE-4.C3D"]
CASE_TIMEOUT_S = 10.0
MEMORY_CAP = 1536 << 20


class Worker:
    def __init__(self):
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker"], cwd=REPO, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def read(self, path: Path) -> dict:
        self.proc.stdin.write(f"{path}\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], CASE_TIMEOUT_S)
        if not ready:
            self.proc.kill()
            return {"outcome": "TIMEOUT"}
        line = self.proc.stdout.readline()
        if not line:
            return {"outcome": f"DIED rc={self.proc.wait()}"}
        return json.loads(line)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


@pytest.fixture(scope="module")
def bases():
    for b in BASES:
        assert b.is_file(), f"reference data missing: {b}"
    return [b.read_bytes() for b in BASES]


def _metadata_end(buf: bytes) -> int:
    """Bytes up to the end of the parameter section (header + parameters)."""
    start = (max(buf[0], 2) - 1) * 512
    return min(len(buf), start + 512 * max(buf[start + 2] if start + 2 < len(buf) else 1, 1))


def _check(worker, tmp_path, data: bytes, what: str):
    path = tmp_path / "case.c3d"
    path.write_bytes(data)
    r = worker.read(path)
    assert r["outcome"] in ("ok", "C3DError"), f"{what}: {r}"
    if r["outcome"] == "C3DError":
        assert str(path) in r["message"], r


mutation = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)),
                                        min_size=1, max_size=8)),
    st.tuples(st.just("word"), st.floats(0, 1),
              st.sampled_from([0, 1, 0x7FFF, 0x8000, 0xFFFF])),
)


@settings(max_examples=200, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(base=st.integers(0, len(BASES) - 1), mut=mutation)
def test_corrupted_files_raise_only_c3derror(worker, bases, tmp_path, base, mut):
    buf = bytearray(bases[base])
    meta = _metadata_end(bytes(buf))
    kind = mut[0]
    if kind == "truncate":
        data = bytes(buf[: int(mut[1] * len(buf))])
    elif kind == "flip":
        for where, xor in mut[1]:
            i = min(int(where * meta), meta - 1)
            buf[i] ^= xor
        data = bytes(buf)
    else:
        i = min(int(mut[1] * (meta // 2)), meta // 2 - 1) * 2
        buf[i:i + 2] = mut[2].to_bytes(2, "little")
        data = bytes(buf)
    _check(worker, tmp_path, data, f"{BASES[base].name} {mut}")


def test_worker_catches_an_unchecked_allocation(worker):
    """The harness itself can fail: a huge allocation in the worker is reported, not hidden."""
    r = worker.read(Path("--allocate-8GiB"))
    assert r["outcome"] == "MemoryError"


def _serve():
    import resource
    import warnings

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    warnings.simplefilter("ignore")
    import logging

    logging.disable(logging.WARNING)
    sys.path.insert(0, str(REPO))
    import numpy as np

    from opensim_bridge.c3d_read import C3DError, read_c3d

    for line in sys.stdin:
        path = line.rstrip("\n")
        try:
            if path == "--allocate-8GiB":
                np.ones(1 << 30)
            read_c3d(path)
            out = {"outcome": "ok"}
        except C3DError as exc:
            out = {"outcome": "C3DError", "message": str(exc)}
        except BaseException as exc:  # anything else is the bug this test looks for
            out = {"outcome": type(exc).__name__, "message": str(exc)[:300]}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


if __name__ == "__main__" and "--worker" in sys.argv:
    _serve()
