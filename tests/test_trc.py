"""TRC reading/writing, checked against OpenSim's own TRCFileAdapter and IK on real data."""
from __future__ import annotations

import os
import warnings

import numpy as np
import opensim as osim
import pytest

from conftest import data_path
from opensim_bridge.errors import InputError
from opensim_bridge.storage import read_table
from opensim_bridge.timeseries import KeypointSeries
from opensim_bridge.trc import (plausible_units, read_trc, series_from_opensim_table,
                                series_to_opensim_table, write_trc)

G2354 = ("opensim-models", "Pipelines", "Gait2354_Simbody")
G10 = ("opensim-models", "Pipelines", "Gait10dof18musc")
RAJ = ("opensim-models", "Pipelines", "Rajagopal", "ExpData")
JA1 = ("nimblephysics", "data", "osim", "JA1GaitResults")

REAL_TRC = [
    (*G2354, "subject01_walk1.trc"),
    (*G2354, "subject01_static.trc"),
    (*RAJ, "motion_capture_walk.trc"),       # header values separated by double tabs
    (*RAJ, "motion_capture_run.trc"),        # frames start at 23, time at 0.23 s
    (*JA1, "JA1Gait35.trc"),                 # metres, sprint 6 m from the origin, empty cells
    (*G10, "ExperimentalData", "subject01_walk.trc"),
    ("opensim-models", "Pipelines", "Hamner", "subject02_running.trc"),
    ("nimblephysics", "data", "grf", "OpenCapUnfiltered", "MarkerData", "walking2.trc"),
]


def opensim_markers_in_metres(path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """OpenSim's reading of a TRC: names, times and (n, 3m) values converted to metres."""
    table = osim.TimeSeriesTableVec3(os.fspath(path))
    factor = {"mm": 1e-3, "m": 1.0, "cm": 1e-2}[table.getTableMetaDataString("Units").strip()]
    flat = table.flatten()  # keep alive while numpy reads its matrix
    values = np.array(flat.getMatrix().to_numpy()) * factor
    return list(table.getColumnLabels()), np.array(table.getIndependentColumn()), values


@pytest.mark.parametrize("parts", REAL_TRC, ids=lambda p: p[-1])
def test_reader_agrees_with_opensim_adapter(parts):
    path = data_path(*parts)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # these well-formed files must read without complaint
        series = read_trc(path)
    names, time, values = opensim_markers_in_metres(path)
    assert series.units == "m"
    assert list(series.names) == names
    np.testing.assert_allclose(series.time, time, rtol=0, atol=1e-12)
    ours = series.data.reshape(len(series), -1)
    assert np.array_equal(np.isnan(ours), np.isnan(values))
    np.testing.assert_allclose(ours, values, rtol=0, atol=1e-9, equal_nan=True)
    assert series.source == os.fspath(path)


def test_double_tab_header_and_first_row_of_rajagopal_walk():
    path = data_path(*RAJ, "motion_capture_walk.trc")
    series = read_trc(path)
    lines = path.read_text().splitlines()
    rows = [ln for ln in lines[5:] if ln.strip()]
    assert len(series) == len(rows)
    assert series.rate == pytest.approx(100.0)
    first = [float(c) for c in rows[0].split("\t")[2:5]]  # the file is in mm
    np.testing.assert_allclose(series.data[0, 0], np.array(first) / 1000.0, rtol=1e-12)


def test_frames_not_starting_at_one_keep_the_file_times():
    series = read_trc(data_path(*RAJ, "motion_capture_run.trc"))
    assert series.time[0] == pytest.approx(0.23)
    assert series.rate == pytest.approx(100.0)


def test_real_files_show_plausible_units():
    raw = read_trc(data_path(*G2354, "subject01_walk1.trc")).to_units("mm").data
    ok, likely = plausible_units(raw)
    assert ok == ["mm"] and likely == "mm"
    ok, likely = plausible_units(raw / 1000.0)
    assert ok == ["m"] and likely == "m"


# ----------------------------------------------------------------------------- quirky files
def _lines(parts=(*G2354, "subject01_walk1.trc")) -> list[str]:
    return data_path(*parts).read_text().splitlines()


def _first_row(lines: list[str]) -> int:
    return next(i for i in range(5, len(lines)) if lines[i].strip())


def _write(tmp_path, lines, name="quirky.trc"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_empty_cells_short_rows_and_trailing_tabs_are_missing(tmp_path):
    lines = _lines()
    original = read_trc(data_path(*G2354, "subject01_walk1.trc"))
    d = _first_row(lines)
    row = lines[d + 1].split("\t")
    row[2:5] = ["", "", ""]                 # first marker of the 2nd frame missing
    lines[d + 1] = "\t".join(row) + "\t\t"  # and trailing tabs
    lines[d + 2] = "\t".join(lines[d + 2].rstrip("\t").split("\t")[:-6])  # 3rd frame: last two markers cut
    series = read_trc(_write(tmp_path, lines))
    assert np.isnan(series.data[1, 0]).all()
    assert np.isnan(series.data[2, -2:]).all()
    keep = ~np.isnan(series.data)
    np.testing.assert_array_equal(series.data[keep], original.data[keep])
    assert keep.sum() == original.data.size - 3 - 6


def test_numframes_mismatch_trusts_the_rows(tmp_path):
    lines = _lines()
    lines[2] = lines[2].replace("151", "200")
    with pytest.warns(UserWarning, match="NumFrames=200"):
        series = read_trc(_write(tmp_path, lines))
    assert len(series) == 151


def test_space_separated_file_reads_the_same(tmp_path):
    original = read_trc(data_path(*G2354, "subject01_walk1.trc"))
    lines = [" ".join(c for c in ln.split("\t") if c) for ln in _lines()]
    series = read_trc(_write(tmp_path, lines))
    assert series.names == original.names
    np.testing.assert_array_equal(series.data, original.data)


def test_rounded_duplicate_times_are_rebuilt_from_frames(tmp_path):
    lines = _lines((*JA1, "JA1Gait35.trc"))  # 250 Hz
    for i in range(_first_row(lines), len(lines)):
        cells = lines[i].split("\t")
        cells[1] = f"{float(cells[1]):.2f}"  # 0.00 0.00 0.01 0.01 ... not increasing
        lines[i] = "\t".join(cells)
    with pytest.warns(UserWarning, match="rebuilding time"):
        series = read_trc(_write(tmp_path, lines))
    np.testing.assert_allclose(np.diff(series.time), 1 / 250.0, rtol=1e-12)


@pytest.mark.parametrize("label,factor", [("millimeters", 1e-3), ("MM", 1e-3), ("cm", 1e-2)])
def test_unit_spellings(tmp_path, label, factor):
    lines = _lines()
    raw = read_trc(data_path(*G2354, "subject01_walk1.trc")).to_units("mm").data
    if label == "cm":  # rewrite the data in centimetres so the labels stay truthful
        series = read_trc(data_path(*G2354, "subject01_walk1.trc"))
        write_trc(series, tmp_path / "cm.trc", units="cm")
        path = tmp_path / "cm.trc"
    else:
        lines[2] = lines[2].replace("\tmm\t", f"\t{label}\t")
        path = _write(tmp_path, lines)
    series = read_trc(path)
    np.testing.assert_allclose(series.data, raw * 1e-3, rtol=1e-12)


# ----------------------------------------------------------------------------- bad input
def test_mm_data_labelled_metres_is_rejected_naming_the_likely_unit(tmp_path):
    lines = _lines()
    lines[2] = lines[2].replace("\tmm\t", "\tm\t")
    path = _write(tmp_path, lines, "mislabelled.trc")
    with pytest.raises(InputError) as err:
        read_trc(path)
    msg = str(err.value)
    assert str(path) in msg and "'m'" in msg and "'mm'" in msg
    # The user can override a known mislabelling.
    series = read_trc(path, assume_units="mm")
    np.testing.assert_allclose(series.data, read_trc(data_path(*G2354, "subject01_walk1.trc")).data)


def test_metre_data_labelled_mm_is_rejected(tmp_path):
    lines = _lines((*JA1, "JA1Gait35.trc"))
    lines[2] = lines[2].replace("\tm\t", "\tmm\t")
    path = _write(tmp_path, lines)
    with pytest.raises(InputError, match=r"data look like 'm'") as err:
        read_trc(path)
    assert err.value.path == str(path)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.trc"
    with pytest.raises(InputError, match="not found") as err:
        read_trc(path)
    assert err.value.path == str(path)


def test_garbage_names_file_and_line(tmp_path):
    path = tmp_path / "garbage.trc"
    path.write_bytes(os.urandom(300).replace(b"\n", b"x"))
    with pytest.raises(InputError, match="line 1") as err:
        read_trc(path)
    assert err.value.path == str(path)

    lines = _lines()
    lines[9] = lines[9].replace("\t", "\tabc", 1)
    with pytest.raises(InputError, match="line 10: cannot read"):
        read_trc(_write(tmp_path, lines))


@pytest.mark.filterwarnings("ignore:.*NumFrames")
def test_all_nan_file_is_rejected(tmp_path):
    lines = _lines()[:5] + [f"{i + 1}\t{i / 60:.6f}" + "\t" * 123 for i in range(10)]
    with pytest.raises(InputError, match="no marker has any data") as err:
        read_trc(_write(tmp_path, lines))
    assert str(tmp_path) in str(err.value)


def test_one_empty_marker_is_kept_with_a_warning(tmp_path):
    series = read_trc(data_path(*G2354, "subject01_walk1.trc"))
    data = series.data.copy()
    data[:, 4] = np.nan
    write_trc(series.copy(data=data), tmp_path / "gap.trc")
    with pytest.warns(UserWarning, match=series.names[4]):
        back = read_trc(tmp_path / "gap.trc")
    assert back.names == series.names and not back.valid[:, 4].any() and back.valid[:, 3].all()


def test_time_range_outside_data_names_the_file():
    path = data_path(*G2354, "subject01_walk1.trc")
    with pytest.raises(InputError, match="outside the data") as err:
        read_trc(path).between(5.0, 6.0)
    assert err.value.path == os.fspath(path)


# ----------------------------------------------------------------------------- writing
def _with_gaps(series: KeypointSeries) -> KeypointSeries:
    data = series.data.copy()
    data[10:14, 2] = np.nan
    data[0, 0] = np.nan
    # The last marker missing: a row that ends in missing cells. OpenSim's reader drops a
    # row's trailing empty cells and then rejects the row as short.
    data[20:23, -1] = np.nan
    return series.copy(data=data)


@pytest.mark.parametrize("units", ["m", "mm"])
def test_write_round_trip_through_ours_and_opensim(tmp_path, units):
    series = _with_gaps(read_trc(data_path(*G2354, "subject01_walk1.trc")))
    path = write_trc(series, tmp_path / "out.trc", units=units)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.trc"]  # no temp file left
    back = read_trc(path)
    assert back.names == series.names
    np.testing.assert_array_equal(back.time, series.time)
    np.testing.assert_allclose(back.data, series.data, rtol=1e-15, atol=1e-15, equal_nan=True)
    names, time, values = opensim_markers_in_metres(path)
    assert names == list(series.names)
    np.testing.assert_allclose(time, series.time, rtol=0, atol=1e-15)
    flat = series.data.reshape(len(series), -1)
    assert np.array_equal(np.isnan(values), np.isnan(flat))
    np.testing.assert_allclose(values, flat, rtol=1e-14, atol=1e-15, equal_nan=True)
    table = osim.TimeSeriesTableVec3(os.fspath(path))
    assert float(table.getTableMetaDataString("DataRate")) == pytest.approx(60.0)
    assert table.getTableMetaDataString("Units") == units


def test_write_rejects_2d_series_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "keep.trc"
    target.write_text("earlier result")
    flat = KeypointSeries([0.0, 0.1], ["a"], np.zeros((2, 1, 2)), units="px", source="kp.json")
    with pytest.raises(InputError, match="2D"):
        write_trc(flat, target)
    assert target.read_text() == "earlier result"


def test_opensim_table_bridge_round_trip():
    series = _with_gaps(read_trc(data_path(*JA1, "JA1Gait35.trc")))
    table = series_to_opensim_table(series)
    assert table.getNumRows() == len(series) and table.getNumColumns() == len(series.names)
    assert table.getTableMetaDataString("Units") == "m"
    assert float(table.getTableMetaDataString("DataRate")) == pytest.approx(250.0)
    row = table.getRowAtIndex(10)
    assert np.isnan(row[2].get(0))
    np.testing.assert_allclose([row[5].get(k) for k in range(3)], series.data[10, 5], rtol=0, atol=0)
    back = series_from_opensim_table(table)
    np.testing.assert_array_equal(back.time, series.time)
    np.testing.assert_array_equal(back.data, series.data)
    # OpenSim accepts it as IK input.
    ref = osim.MarkersReference(table, osim.SetMarkerWeights())
    assert ref.getNumRefs() == len(series.names)


def test_mm_series_is_converted_for_opensim():
    series = read_trc(data_path(*G2354, "subject01_walk1.trc"))
    table = series_to_opensim_table(series.to_units("mm"))
    assert table.getTableMetaDataString("Units") == "m"
    np.testing.assert_allclose(series_from_opensim_table(table).data, series.data, rtol=1e-14)


def _run_ik(trc_path, out_dir, name):
    root = data_path(*G10)
    tool = osim.InverseKinematicsTool(os.fspath(root / "IK" / "walk_Setup_IK.xml"))
    # The tool keeps a raw pointer: the model must outlive run().
    model = osim.Model(os.fspath(root / "OutputReference" / "subject01.osim"))
    tool.setModel(model)
    tool.setMarkerDataFileName(os.fspath(trc_path))
    tool.setStartTime(0.4)
    tool.setEndTime(0.6)
    tool.setResultsDir(os.fspath(out_dir))
    tool.setOutputMotionFileName(os.fspath(out_dir / name))
    assert tool.run()
    return read_table(out_dir / name)


def test_opensim_ik_uses_written_trc(tmp_path):
    original = data_path(*G10, "ExperimentalData", "subject01_walk.trc")
    series = read_trc(original)
    write_trc(series, tmp_path / "same.trc")
    data = series.data.copy()
    marker = series.index("R.Toe.Tip") if "R.Toe.Tip" in series.names else 5
    data[25:30, marker] = np.nan  # 0.42-0.48 s: inside the IK window
    write_trc(series.copy(data=data), tmp_path / "gap.trc")

    reference = _run_ik(original, tmp_path, "ref.mot")
    same = _run_ik(tmp_path / "same.trc", tmp_path, "same.mot")
    gap = _run_ik(tmp_path / "gap.trc", tmp_path, "gap.mot")
    assert same.labels == reference.labels and len(same) == 13
    np.testing.assert_allclose(same.data, reference.data, rtol=0, atol=1e-8)
    assert np.isfinite(gap.data).all()
    # One missing marker shifts the solution a little, not wildly.
    assert 0 < np.abs(gap.data - reference.data).max() < 5.0


def test_windows_line_endings_and_byte_order_mark(tmp_path):
    path = data_path(*G2354, "subject01_walk1.trc")
    original = read_trc(path)
    text = path.read_text().replace("\n", "\r\n")
    dos = tmp_path / "dos.trc"
    dos.write_bytes(b"\xef\xbb\xbf" + text.encode())
    series = read_trc(dos)
    assert series.names == original.names
    np.testing.assert_array_equal(series.data, original.data)


def test_unnamed_extra_columns_warn_and_infinity_is_rejected(tmp_path):
    lines = _lines()
    d = _first_row(lines)
    lines[d] = lines[d].rstrip("\t") + "\t1.0\t2.0\t3.0"
    with pytest.warns(UserWarning, match="3 more coordinate column"):
        series = read_trc(_write(tmp_path, lines))
    assert len(series.names) == 41
    lines = _lines()
    cells = lines[d + 3].split("\t")
    cells[4] = "inf"
    lines[d + 3] = "\t".join(cells)
    with pytest.raises(InputError, match=f"line {d + 4}: infinite"):
        read_trc(_write(tmp_path, lines, "inf.trc"))
