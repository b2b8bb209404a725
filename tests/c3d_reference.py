"""Cross-check kinevid's C3D reader against ezc3d and the ``c3d`` package on one file.

Run as ``python tests/c3d_reference.py FILE [ezc3d|c3d]``: prints one JSON line. A separate
process per file, because a corrupt file can crash ezc3d's C++ code or make it allocate without
bound; the address space is capped so that an over-allocation fails instead of swapping.
"""
from __future__ import annotations

import json
import resource
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _ezc3d(path):
    import ezc3d

    c = ezc3d.c3d(path)
    pts = c["data"]["points"][:3].transpose(2, 1, 0)
    an = c["data"]["analogs"]
    return pts, (an[0].T if an.size else None)


def _c3d_package(path):
    """Points (NaN where the residual is negative) and analogs from the c3d package's own frame
    loop, its header/parameter consistency assertions switched off."""
    import c3d

    class Lenient(c3d.Reader):
        def _check_metadata(self):
            pass

    with open(path, "rb") as fh:
        r = Lenient(fh)
        pts, an = [], []
        for _, p, a in r.read_frames(copy=True, check_nan=False):
            q = p[:, :3].astype(np.float64)
            q[p[:, 3] < 0] = np.nan
            pts.append(q)
            if np.size(a):
                an.append(np.asarray(a).T)
    return np.stack(pts), (np.concatenate(an) if an else None)


def compare(path: str, reference: str = "ezc3d") -> dict:
    from opensim_bridge.c3d_read import C3DError, read_c3d

    out = {"path": path, "reference": reference}
    try:
        d = read_c3d(path, zero_baseline=False)
        out["mine"] = "ok"
    except C3DError as exc:
        out.update(mine="rejected", reason=exc.problem, names_file=path in str(exc))
        return out
    except Exception as exc:  # the failure this test exists to catch
        out.update(mine="CRASH", reason=f"{type(exc).__name__}: {exc}")
        return out
    out["frames"] = d.n_frames
    if reference == "none":
        return out
    try:
        pts, an = (_ezc3d if reference == "ezc3d" else _c3d_package)(path)
        out["ref"] = "ok"
    except Exception as exc:
        out["ref"] = f"fail: {type(exc).__name__}: {str(exc)[:100]}"
        return out
    diffs = []
    if pts.shape != d.points.shape:
        diffs.append(f"points shape {d.points.shape} vs {pts.shape}")
    else:
        nan_m, nan_r = np.isnan(d.points).any(axis=2), np.isnan(pts).any(axis=2)
        if (nan_m != nan_r).any():
            diffs.append(f"missing-sample masks differ in {int((nan_m != nan_r).sum())} samples")
        both = ~nan_m & ~nan_r
        quantum = abs(d.point_scale) * 0.51 if d.format == "integer" else 0.0
        err = np.abs(d.points[both] - pts[both])
        tol = 1e-6 * np.maximum(1.0, np.abs(pts[both])) + quantum
        if (err > tol).any():
            diffs.append(f"points differ by up to {err.max():.3g}")
        out["points_max_err"] = float(err.max()) if err.size else 0.0
    mine_an = d.analog.data if d.analog is not None else None
    if an is None or an.size == 0:
        if mine_an is not None and mine_an.size:
            diffs.append(f"analogs: kinevid {mine_an.shape}, reference none")
    elif mine_an is None or an.shape != mine_an.shape:
        diffs.append(f"analog shape {None if mine_an is None else mine_an.shape} vs {an.shape}")
    else:
        err = np.abs(mine_an - an)
        if (err > 1e-6 * np.maximum(1.0, np.abs(an))).any():
            diffs.append(f"analogs differ by up to {np.nanmax(err):.3g}")
    out["diff"] = diffs
    out["frames"] = d.n_frames
    return out


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
    warnings.simplefilter("ignore")
    import logging
    logging.disable(logging.WARNING)
    print(json.dumps(compare(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "ezc3d")))
