"""C3D read (and write) throughput: kinevid vs ezc3d vs the c3d package, same files, same run.

Reads: whole file to arrays (kinevid: markers in metres, analogs scaled, force plates computed;
ezc3d: points and analogs, and with force platforms; c3d package: its frame loop, frames kept).
Write: kinevid's ``opensim_bridge.c3d_write.write_c3d`` of the markers just read.
Best of N repetitions; MB/s is file size over time, frames/s point frames over time.

    python benchmarks/c3d_speed.py [FILE ...]
"""
from __future__ import annotations

import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SAMPLES = ROOT.parent / "shared" / "data" / "c3d-org-samples" / "tests" / "c3d_org_samples"
DEFAULT = [SAMPLES / "sample_17" / "128analogchannels.c3d",   # 4038 frames, 128 analogs, float
           SAMPLES / "sample_34" / "AlbertoREAL.c3d",          # 4921 frames, 64 points
           SAMPLES / "sample_01" / "Eb015vi.c3d"]              # DEC integer, 2 plates


def best(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(files) -> None:
    import c3d
    import ezc3d

    from opensim_bridge.c3d_read import read_c3d

    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    try:
        from opensim_bridge.c3d_write import write_c3d
    except ImportError:
        write_c3d = None

    def c3d_package(path):
        class Lenient(c3d.Reader):
            def _check_metadata(self):
                pass
        with open(path, "rb") as fh:
            return list(Lenient(fh).read_frames(copy=True))

    print(f"{'file':28s} {'reader':24s} {'time ms':>9s} {'MB/s':>8s} {'frames/s':>10s}")
    for path in files:
        path = Path(path)
        size = path.stat().st_size / 1e6
        data = read_c3d(path)
        n = data.n_frames
        reps = 5
        rows = [
            ("kinevid read_c3d", lambda: read_c3d(path)),
            ("ezc3d", lambda: ezc3d.c3d(str(path))),
            ("ezc3d + force plates", lambda: ezc3d.c3d(str(path), extract_forceplat_data=True)),
            ("c3d package frames", lambda: c3d_package(path)),
        ]
        for name, fn in rows:
            try:
                t = best(fn, reps)
            except Exception as exc:  # a reader that cannot open this file
                print(f"{path.name[:28]:28s} {name:24s} failed: {type(exc).__name__}")
                continue
            print(f"{path.name[:28]:28s} {name:24s} {1e3 * t:9.2f} {size / t:8.1f} {n / t:10.0f}")
        if write_c3d is not None and data.markers is not None:
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "out.c3d"
                try:
                    t = best(lambda: write_c3d(out, markers=data.markers), reps)
                except Exception as exc:
                    print(f"{path.name[:28]:28s} {'kinevid write_c3d':24s} failed: {exc}")
                    continue
                mb = out.stat().st_size / 1e6
                print(f"{path.name[:28]:28s} {'kinevid write_c3d':24s} {1e3 * t:9.2f} "
                      f"{mb / t:8.1f} {n / t:10.0f}   ({mb:.2f} MB written, markers only)")


if __name__ == "__main__":
    main(sys.argv[1:] or DEFAULT)
