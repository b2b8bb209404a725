"""The lifter evaluation's own arithmetic: unmeasured points, Procrustes, segment angles."""
from __future__ import annotations

import numpy as np
import pytest

from models import evaluate_lifter as E
from models import lifter_data as D

IDX = D.OUTPUT_MARKERS.index


def _rot_x(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


def test_unmeasured_points_count_nowhere():
    rng = np.random.default_rng(0)
    gt = rng.normal(size=(6, 30, 3))
    measured = np.ones((6, 30), bool)
    arms = [IDX(n) for n in ("RWrist", "LWrist", "RElbow")]
    measured[:3, arms] = False
    # a similarity transform of the truth on the measured points, garbage on the others
    pred = 1.3 * gt @ _rot_x(25.0).T + 0.4
    pred[:3, arms] += 50.0
    e, pa = E.measured_errors(pred, gt, measured)
    assert np.isnan(e[:3, arms]).all() and np.isnan(pa[:3, arms]).all()
    assert np.isfinite(e[measured]).all() and np.isfinite(pa[measured]).all()
    # Procrustes fitted on the measured points only: the garbage does not tilt the alignment
    np.testing.assert_allclose(pa[measured], 0.0, atol=1e-6)
    assert (e[measured] > 1.0).all()          # unaligned, the transform is an error


def test_segment_angle_errors_are_the_rotation_applied():
    b = D._builtin_default("m")
    pose = np.stack([[b[n] for n in D.OUTPUT_MARKERS]] * 4).astype(float)
    bent = pose.copy()
    # turn the right shank and foot 12 deg about the knee, in the sagittal plane (z axis)
    c, s = np.cos(np.radians(12.0)), np.sin(np.radians(12.0))
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    knee = pose[:, IDX("RKnee")][:, None]
    low = [IDX(n) for n in ("RAnkle", "RHeel", "RBigToe", "RSmallToe")]
    bent[:, low] = (pose[:, low] - knee) @ R.T + knee
    err = E.angle_errors(bent, pose, np.ones((4, 30), bool))
    assert err["knee_r"] == pytest.approx(12.0, abs=1e-6)
    # the foot turned with the shank: the ankle angle did not change, nor did the others
    for k, v in err.items():
        if k != "knee_r":
            assert v == pytest.approx(0.0, abs=1e-6), k
    # an angle whose points were never measured is NaN, not 0
    m = np.ones((4, 30), bool)
    m[:, IDX("RElbow")] = False
    assert np.isnan(E.angle_errors(bent, pose, m)["elbow_r"])


def test_report_gives_the_human36m_like_subset():
    """The H36M-like row is the mean over exactly the 16 points that have a Human3.6M
    counterpart (root included, hands and feet out), next to the every-point MPJPE."""
    from models.evaluate_lifter import H36M_LIKE, report
    J = len(D.OUTPUT_MARKERS)
    mpjpe = np.arange(J, dtype=float) + 10.0
    res = {"1.5%": {"mpjpe": mpjpe, "pmpjpe": mpjpe / 2, "n": 5, "excluded": 0,
                    "groups": {"g": (1.0, 2.0)}, "angles": {"knee_r": 3.0}}}
    lines = []
    report(res, print_=lines.append)
    row = next(x for x in lines if x.startswith("H36M-like"))
    want = np.mean([mpjpe[D.OUTPUT_MARKERS.index(m)] for m in H36M_LIKE])
    assert float(row.split()[2]) == pytest.approx(want, abs=0.05)
    assert len(H36M_LIKE) == 16 and "Hip" in H36M_LIKE and "RBigToe" not in H36M_LIKE
    overall = next(x for x in lines if x.startswith("MPJPE"))
    assert float(overall.split()[1]) == pytest.approx(mpjpe.mean(), abs=0.05)
