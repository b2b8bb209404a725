"""C3D marker reading (checked against ezc3d) and the format-dispatching read_markers."""
from __future__ import annotations

import os

import ezc3d
import numpy as np
import pytest

from conftest import data_path
from opensim_bridge.c3d_markers import read_c3d_markers
from opensim_bridge.errors import InputError
from opensim_bridge.axes import AxisMapping, apply_axes
from opensim_bridge.markers import read_markers, read_markers_with_info, write_markers
from opensim_bridge.trc import read_trc

SAMPLES = ("c3d-org-samples", "tests", "c3d_org_samples")
JA1 = ("nimblephysics", "data", "osim", "JA1GaitResults")
JA1_C3D = (*JA1, "original.c3d")
JA1_TRC = (*JA1, "JA1Gait35.trc")


def ezc3d_markers(path):
    """ezc3d's reading in metres: labels, times, (n, m, 3) with NaN for invalid samples."""
    c = ezc3d.c3d(os.fspath(path))
    unit = c["parameters"]["POINT"]["UNITS"]["value"][0].strip(" \x00")
    factor = {"mm": 1e-3, "cm": 1e-2, "m": 1.0}[unit]
    points = c["data"]["points"][:3].transpose(2, 1, 0) * factor
    points[(points == 0).all(axis=2)] = np.nan  # our reader also drops (0, 0, 0): a lost marker
    labels = [s.strip() for s in c["parameters"]["POINT"]["LABELS"]["value"]]
    rate = c["header"]["points"]["frame_rate"]
    first = c["header"]["points"]["first_frame"]  # 0-based in ezc3d
    time = (first + np.arange(points.shape[0])) / rate
    return labels, time, points


@pytest.mark.parametrize("parts", [
    JA1_C3D,                                                    # Vicon float, 250 Hz, t0 = 3.3 s
    ("nimblephysics", "data", "c3d", "cmu_02_05.c3d"),          # CMU, gaps
    (*SAMPLES, "sample_02", "pc_int.c3d"),                      # integer format, gaps
    (*SAMPLES, "sample_32", "vicon_zerowire.c3d"),
], ids=lambda p: p[-1])
def test_agrees_with_ezc3d(parts):
    path = data_path(*parts)
    series = read_c3d_markers(path)
    labels, time, points = ezc3d_markers(path)
    assert list(series.names) == labels[:points.shape[1]]
    np.testing.assert_allclose(series.time, time, rtol=0, atol=1e-9)
    assert np.array_equal(np.isnan(series.data), np.isnan(points))
    np.testing.assert_allclose(series.data, points, rtol=0, atol=1e-6, equal_nan=True)
    assert series.units == "m" and series.source == os.fspath(path)


def test_integer_and_float_files_hold_the_same_markers():
    a = read_c3d_markers(data_path(*SAMPLES, "sample_02", "pc_int.c3d"))
    b = read_c3d_markers(data_path(*SAMPLES, "sample_02", "dec_real.c3d"))  # DEC floats
    assert a.names == b.names
    assert np.array_equal(np.isnan(a.data), np.isnan(b.data))
    # Integer storage quantises to POINT:SCALE (well under a millimetre).
    assert np.nanmax(np.abs(a.data - b.data)) < 1e-3


def test_big_endian_file_reads_like_the_intel_one():
    intel = read_c3d_markers(data_path(*SAMPLES, "sample_01", "Eb015pr.c3d"))
    mips = read_c3d_markers(data_path(*SAMPLES, "sample_01", "Eb015sr.c3d"))  # ezc3d cannot
    assert intel.names == mips.names
    np.testing.assert_array_equal(intel.data, mips.data)


def test_c3d_and_trc_of_the_same_trial_have_the_same_labels_and_frames():
    c3d = read_c3d_markers(data_path(*JA1_C3D))
    trc = read_trc(data_path("nimblephysics", "data", "osim", "JA1GaitResults", "JA1Gait35.trc"))
    # The TRC was made from this C3D; its maker renamed the unlabelled '*52' to 'x52'.
    assert len(trc.names) == len(c3d.names)
    assert {n for n in c3d.names if not n.startswith("*")} <= set(trc.names)
    assert c3d.rate == pytest.approx(trc.rate)


@pytest.mark.parametrize("parts,match", [
    ((*SAMPLES, "sample_30", "emgwl.c3d"), "no markers"),
    ((*SAMPLES, "sample_16", "golf.c3d"), "no marker has any valid sample"),
], ids=lambda p: p[-1] if isinstance(p, tuple) else p)
def test_bad_c3d_files_raise_input_error(parts, match):
    path = data_path(*parts)
    with pytest.raises(InputError, match=match) as err:
        read_c3d_markers(path)
    assert err.value.path == os.fspath(path)


def test_truncated_c3d_raises_input_error(tmp_path):
    path = tmp_path / "cut.c3d"
    path.write_bytes(data_path(*JA1_C3D).read_bytes()[:3000])
    with pytest.raises(InputError) as err:
        read_c3d_markers(path)
    assert err.value.path == os.fspath(path)


# ----------------------------------------------------------------------------- read_markers
def test_read_markers_dispatches_by_suffix(tmp_path):
    trc_path = data_path("opensim-models", "Pipelines", "Gait2354_Simbody", "subject01_walk1.trc")
    np.testing.assert_array_equal(read_markers(trc_path).data, read_trc(trc_path).data)
    np.testing.assert_array_equal(read_markers(data_path(*JA1_C3D), axes="none").data,
                                  read_c3d_markers(data_path(*JA1_C3D)).data)
    upper = tmp_path / "TRIAL.TRC"
    upper.write_bytes(trc_path.read_bytes())
    assert read_markers(upper).names == read_trc(trc_path).names


def test_read_markers_errors(tmp_path):
    with pytest.raises(InputError, match="unknown marker file type '.csv'") as err:
        read_markers(tmp_path / "markers.csv")
    assert err.value.path == str(tmp_path / "markers.csv")
    with pytest.raises(InputError, match="not found") as err:
        read_markers(tmp_path / "absent.c3d")
    assert err.value.path == str(tmp_path / "absent.c3d")


def test_write_markers_trc_only(tmp_path):
    series = read_markers(data_path(*JA1_C3D), axes="none")
    out = write_markers(series, tmp_path / "from_c3d.trc")
    back = read_markers(out)
    np.testing.assert_allclose(back.data, series.data, rtol=1e-15, equal_nan=True)
    np.testing.assert_array_equal(back.time, series.time)
    with pytest.raises(InputError, match="use .trc"):
        write_markers(series, tmp_path / "x.c3d")
    assert not (tmp_path / "x.c3d").exists()


# ----------------------------------------------------------------------------- axes
def _best_rotation(a, b):
    """Least-squares rotation or reflection R with b ~ R @ a (Kabsch without the det fix), so a
    mirrored relation would show up as det -1 rather than be hidden."""
    u, _, vt = np.linalg.svd((a - a.mean(0)).T @ (b - b.mean(0)))
    return (u @ vt).T


def _ja1_pair():
    """JA1's C3D (lab frame) and the TRC its authors made from it for OpenSim, common markers,
    with the TRC's first frame located in the C3D by matching the marker cloud's shape."""
    c3d = read_c3d_markers(data_path(*JA1_C3D))
    trc = read_trc(data_path(*JA1_TRC))
    common = [n for n in trc.names if n in c3d.names]
    c, t = c3d.select(common), trc.select(common)

    def shape(p):  # inter-marker distances: independent of the frame
        return np.linalg.norm(p[:, None] - p[None], axis=2)

    cost = [np.nanmean(np.abs(shape(c.data[i]) - shape(t.data[0]))) for i in range(len(c))]
    first = int(np.argmin(cost))
    return c3d, trc, common, first


def test_ja1_trc_is_the_c3d_turned_into_opensims_frame():
    c3d, trc, common, first = _ja1_pair()
    c = c3d.select(common).data
    t = trc.select(common).data
    n = len(trc)
    assert first + n <= len(c3d)                   # the TRC is a sub-range of the capture
    # same sampling; the TRC's clock starts at its own first frame
    np.testing.assert_allclose(np.diff(trc.time), np.diff(c3d.time[first:first + n]), atol=1e-6)
    assert trc.time[0] == 0 and c3d.time[first] > 3.0
    a, b = c[first:first + n].reshape(-1, 3), t.reshape(-1, 3)
    ok = ~np.isnan(a).any(1) & ~np.isnan(b).any(1)
    rot = _best_rotation(a[ok], b[ok])
    assert np.abs(np.abs(rot).round() - np.abs(rot)).max() < 1e-6     # an axis permutation
    assert np.linalg.det(rot) == pytest.approx(1.0)                   # not a mirror
    relation = AxisMapping.from_matrix(rot)
    # ... and it is what auto detection finds from the C3D alone
    series, info = read_markers_with_info(data_path(*JA1_C3D))
    assert info == {"axes": str(relation), "detected": True, "lab_frame": False}
    mapped = series.select(common).data[first:first + n]
    # no translation either: the TRC's markers are the C3D's, in mm rounded to the TRC's digits
    diff = mapped - t
    assert np.array_equal(np.isnan(mapped), np.isnan(t))   # the same gaps (RTOE's (0, 0, 0))
    assert np.isnan(t).any(axis=2).sum() < 0.001 * t.shape[0] * t.shape[1]
    assert np.abs(np.nanmean(diff, axis=(0, 1))).max() < 1e-5
    assert np.nanmax(np.abs(diff)) < 1e-3
    np.testing.assert_allclose(series.time[first:first + n] - series.time[first], trc.time,
                               atol=1e-9)


def test_read_markers_axes_options(tmp_path, caplog):
    c3d_path = data_path(*JA1_C3D)
    raw = read_c3d_markers(c3d_path)
    with caplog.at_level("INFO", logger="opensim_bridge.markers"):
        auto = read_markers(c3d_path)
    assert "axes mapped to OpenSim's frame as" in caplog.text
    explicit = read_markers(c3d_path, axes=read_markers_with_info(c3d_path)[1]["axes"])
    np.testing.assert_array_equal(auto.data, explicit.data)
    np.testing.assert_array_equal(read_markers(c3d_path, axes="none").data, raw.data)
    np.testing.assert_array_equal(read_markers(c3d_path, axes="x,z,-y").data,
                                  apply_axes(raw, "x,z,-y").data)
    trc_path = data_path(*JA1_TRC)
    trc, info = read_markers_with_info(trc_path)                # TRC: left as it is
    assert info == {"axes": "x,y,z", "detected": False, "lab_frame": True}
    np.testing.assert_array_equal(trc.data, read_trc(trc_path).data)
    assert read_markers_with_info(trc_path, axes="auto")[1]["axes"] == "x,y,z"  # already Y-up
    np.testing.assert_array_equal(read_markers(trc_path, axes="z,x,y").data,
                                  apply_axes(read_trc(trc_path), "z,x,y").data)
    for path in (c3d_path, trc_path):
        with pytest.raises(InputError, match="reflection") as err:
            read_markers(path, axes="x,y,-z")
        assert err.value.path == os.fspath(path)


def test_ik_from_c3d_equals_ik_from_its_trc(tmp_path):
    """IK on the C3D read with auto axes gives the joint angles IK gives on the authors' TRC."""
    from opensim_bridge.ik import run_ik
    from opensim_bridge.ik_settings import load_ik_settings

    c3d, trc, _, first = _ja1_pair()
    settings = load_ik_settings(data_path(*JA1, "JA1Gait35_ik_setup.xml"))
    settings = settings.without_markers([n for n in settings.marker_weights if n not in trc.names])
    model = data_path(*JA1, "rescaled.osim")
    k = 12  # frames after the first: 0.048 s at 250 Hz; ends on samples of both files
    t0 = c3d.time[first]
    from_trc = run_ik(model, read_markers(data_path(*JA1_TRC)), settings, tmp_path / "trc",
                      jobs=1, start=trc.time[0], end=trc.time[k]).coordinates
    from_c3d = run_ik(model, read_markers(data_path(*JA1_C3D)), settings, tmp_path / "c3d",
                      jobs=1, start=t0, end=c3d.time[first + k]).coordinates
    assert len(from_c3d) == len(from_trc) == k + 1
    np.testing.assert_allclose(from_c3d.time - t0, from_trc.time, atol=1e-9)
    assert from_c3d.labels == from_trc.labels
    rot = [j for j, lab in enumerate(from_trc.labels) if not lab.endswith(("_tx", "_ty", "_tz"))]
    diff = np.abs(from_c3d.data - from_trc.data).max(axis=0)
    # The inputs differ by the TRC's rounding (< 5 um). No marker pins the toes (mtp angles)
    # down, so those wander a little with the solver's path (see test_ik); all else agrees.
    loose = [j for j in rot if from_trc.labels[j].startswith("mtp_angle")]
    assert len(loose) == 2
    assert all(diff[j] < 0.05 for j in rot if j not in loose), diff   # degrees
    assert all(diff[j] < 0.5 for j in loose), diff
    trans = [j for j in range(len(from_trc.labels)) if j not in rot]
    assert diff[trans].max() < 1e-4  # metres
