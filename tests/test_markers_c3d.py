"""C3D marker reading (checked against ezc3d) and the format-dispatching read_markers."""
from __future__ import annotations

import os

import ezc3d
import numpy as np
import pytest

from conftest import data_path
from opensim_bridge.c3d_markers import read_c3d_markers
from opensim_bridge.errors import InputError
from opensim_bridge.markers import read_markers, write_markers
from opensim_bridge.trc import read_trc

SAMPLES = ("c3d-org-samples", "tests", "c3d_org_samples")
JA1_C3D = ("nimblephysics", "data", "osim", "JA1GaitResults", "original.c3d")


def ezc3d_markers(path):
    """ezc3d's reading in metres: labels, times, (n, m, 3) with NaN for invalid samples."""
    c = ezc3d.c3d(os.fspath(path))
    unit = c["parameters"]["POINT"]["UNITS"]["value"][0].strip(" \x00")
    factor = {"mm": 1e-3, "cm": 1e-2, "m": 1.0}[unit]
    points = c["data"]["points"][:3].transpose(2, 1, 0) * factor
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
    ((*SAMPLES, "sample_18", "bad_parameter_section.c3d"), "cannot read the C3D file"),
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
    np.testing.assert_array_equal(read_markers(data_path(*JA1_C3D)).data,
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
    series = read_markers(data_path(*JA1_C3D))
    out = write_markers(series, tmp_path / "from_c3d.trc")
    back = read_markers(out)
    np.testing.assert_allclose(back.data, series.data, rtol=1e-15, equal_nan=True)
    np.testing.assert_array_equal(back.time, series.time)
    with pytest.raises(InputError, match="use .trc"):
        write_markers(series, tmp_path / "x.c3d")
    assert not (tmp_path / "x.c3d").exists()
