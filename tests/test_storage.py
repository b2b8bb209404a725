""".mot/.sto tables: reading checked against OpenSim's readers, writing checked by OpenSim."""
from __future__ import annotations

import os

import numpy as np
import opensim as osim
import pytest

from conftest import DATA, data_path
from opensim_bridge.errors import InputError, ModelError
from opensim_bridge.storage import Table, read_table, rotational_coordinates, write_table

G2354 = ("opensim-models", "Pipelines", "Gait2354_Simbody")
G10 = ("opensim-models", "Pipelines", "Gait10dof18musc")
JA1 = ("nimblephysics", "data", "osim", "JA1GaitResults")

REAL_TABLES = [
    (*G2354, "OutputReference", "subject01_walk1_ik.mot"),          # free-text header lines
    (*G2354, "OutputReference", "ResultsInverseDynamics", "inverse_dynamics.sto"),
    (*G2354, "subject01_walk1_grf.mot"),                            # trailing tabs in header
    (*JA1, "JA1Gait35_id_output.sto"),
    (*G10, "OutputReference", "IK", "subject01_walk_IK.mot"),
    (*G10, "OutputReference", "ID", "Results", "subject01_walk_ID.sto"),
    ("opensim-models", "Pipelines", "Rajagopal", "ExpData", "grf_run.mot"),  # SIMM header
    ("nimblephysics", "data", "grf", "OpenCapUnfiltered", "ID", "walking2_grf.mot"),  # k=v first
]


def opensim_table(path):
    table = osim.TimeSeriesTable(os.fspath(path))
    return (tuple(table.getColumnLabels()), np.array(table.getIndependentColumn()),
            np.array(table.getMatrix().to_numpy()))


@pytest.mark.parametrize("parts", REAL_TABLES, ids=lambda p: p[-1])
def test_reader_agrees_with_opensim(parts):
    path = data_path(*parts)
    table = read_table(path)
    labels, time, values = opensim_table(path)
    assert table.labels == labels
    np.testing.assert_array_equal(table.time, time)
    np.testing.assert_array_equal(table.data, values)
    assert table.source == os.fspath(path)


def test_header_fields():
    ik = read_table(data_path(*G2354, "OutputReference", "subject01_walk1_ik.mot"))
    assert ik.in_degrees is True and ik.name == "Coordinates"
    assert ik.meta["nRows"] == "73" and "Angles are in degrees." in ik.meta["notes"]
    idt = read_table(data_path(*JA1, "JA1Gait35_id_output.sto"))
    assert idt.in_degrees is False
    old = read_table(data_path("opensim-models", "Pipelines", "Rajagopal", "ExpData", "grf_run.mot"))
    assert old.in_degrees is None and old.name == "grf_run.mot"
    assert old.meta["datacolumns"] == "19" and len(old.labels) == 18
    assert old.labels[0] == "R_ground_force_vx"  # padding spaces stripped


def test_header_row_count_mismatch_warns():
    path = data_path("opensim-models", "Pipelines", "Hamner", "subject02_running_grf.mot")
    with pytest.warns(UserWarning, match="901 rows"):
        table = read_table(path)
    assert len(table) == len(opensim_table(path)[1])


def test_write_round_trip_and_opensim_reads_it(tmp_path):
    src = read_table(data_path(*G10, "OutputReference", "IK", "subject01_walk_IK.mot"))
    data = src.data.copy()
    data[3, 2] = np.nan
    table = src.copy(data=data * np.pi / 3.0)  # values with full-precision digits
    path = write_table(table, tmp_path / "out.mot")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mot"]
    back = read_table(path)
    assert back.labels == table.labels and back.in_degrees is True and back.name == table.name
    np.testing.assert_array_equal(back.time, table.time)
    np.testing.assert_array_equal(back.data, table.data)  # bit-exact, NaN included

    labels, time, values = opensim_table(path)
    assert labels == table.labels
    np.testing.assert_array_equal(time, table.time)
    np.testing.assert_array_equal(values, table.data)

    storage = osim.Storage(os.fspath(path))  # the NaN row must not end its reading
    assert storage.getSize() == len(table) and storage.isInDegrees()
    assert list(storage.getColumnLabels().get(i) for i in range(storage.getColumnLabels().getSize())) \
        == ["time", *table.labels]
    column = osim.ArrayDouble()
    storage.getDataColumn(table.labels[5], column)
    np.testing.assert_array_equal([column.get(i) for i in range(column.getSize())], table.data[:, 5])


def test_radians_conversion_matches_opensim(tmp_path):
    root = data_path(*G10)
    model = osim.Model(os.fspath(root / "OutputReference" / "subject01.osim"))
    rot = rotational_coordinates(model)
    assert "knee_angle_r" in rot and "pelvis_tilt" in rot and "pelvis_tx" not in rot
    path = root / "OutputReference" / "IK" / "subject01_walk_IK.mot"
    ours = read_table(path).to_radians(rot)
    assert ours.in_degrees is False
    storage = osim.Storage(os.fspath(path))
    model.initSystem()
    model.getSimbodyEngine().convertDegreesToRadians(storage)
    for label in ("knee_angle_r", "pelvis_tx", "pelvis_tilt"):
        column = osim.ArrayDouble()
        storage.getDataColumn(label, column)
        np.testing.assert_allclose(ours[label], [column.get(i) for i in range(column.getSize())],
                                   rtol=1e-14, atol=0)
    np.testing.assert_allclose(ours.to_degrees(rot).data, read_table(path).data, rtol=1e-14)
    assert rotational_coordinates(root / "OutputReference" / "subject01.osim") == rot


def test_table_selection_and_time_window():
    table = read_table(data_path(*G10, "OutputReference", "ID", "Results", "subject01_walk_ID.sto"))
    part = table.select(["knee_angle_r_moment", "pelvis_tx_force"]).between(0.5, 1.0)
    assert part.labels == ("knee_angle_r_moment", "pelvis_tx_force")
    assert part.time[0] >= 0.5 - 1e-6 and part.time[-1] <= 1.0 + 1e-6
    np.testing.assert_array_equal(part.column("pelvis_tx_force"),
                                  table.column("pelvis_tx_force")[(table.time >= 0.5 - 1e-6)
                                                                  & (table.time <= 1.0 + 1e-6)])
    with pytest.raises(InputError, match="outside the data") as err:
        table.between(3.0, 4.0)
    assert err.value.path == table.source
    with pytest.raises(InputError, match="no column named 'nope'"):
        table.column("nope")


def test_unknown_angle_unit_refuses_conversion():
    table = read_table(data_path("opensim-models", "Pipelines", "Rajagopal", "ExpData", "grf_run.mot"))
    with pytest.raises(InputError, match="inDegrees"):
        table.to_radians({"x"})


# ----------------------------------------------------------------------------- bad input
def _copy_with(tmp_path, parts, edit, name="bad.mot"):
    lines = data_path(*parts).read_text().splitlines()
    edit(lines)
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


IK_MOT = (*G10, "OutputReference", "IK", "subject01_walk_IK.mot")


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(InputError, match="not found") as err:
        read_table(tmp_path / "none.sto")
    assert err.value.path == str(tmp_path / "none.sto")
    junk = tmp_path / "junk.sto"
    junk.write_bytes(os.urandom(500))
    with pytest.raises(InputError, match="endheader") as err:
        read_table(junk)
    assert err.value.path == str(junk)


def _find(lines, start):
    return next(i for i, ln in enumerate(lines) if ln.strip().startswith(start))


def test_bad_cell_names_the_line(tmp_path):
    def edit(lines):
        i = _find(lines, "time") + 4
        cells = lines[i].split("\t")
        cells[3] = "x1y"
        lines[i] = "\t".join(cells)
    path = _copy_with(tmp_path, IK_MOT, edit)
    line_no = _find(path.read_text().splitlines(), "time") + 5
    with pytest.raises(InputError, match=f"line {line_no}: .*'x1y'"):
        read_table(path)


def test_truncated_row(tmp_path):
    path = _copy_with(tmp_path, IK_MOT, lambda lines: lines.__setitem__(-1, lines[-1][:40]))
    with pytest.raises(InputError, match="truncated"):
        read_table(path)


def test_time_not_increasing_and_missing_time_column(tmp_path):
    def swap(lines):
        lines[-1], lines[-2] = lines[-2], lines[-1]
    with pytest.raises(InputError, match="not increasing"):
        read_table(_copy_with(tmp_path, IK_MOT, swap))

    def rename(lines):
        i = _find(lines, "time")
        lines[i] = lines[i].replace("time", "frame", 1)
    with pytest.raises(InputError, match="first column must be 'time'"):
        read_table(_copy_with(tmp_path, IK_MOT, rename, "notime.mot"))


def test_table_validation():
    with pytest.raises(InputError, match="duplicate column labels: a"):
        Table([0.0, 1.0], ["a", "a"], np.zeros((2, 2)), source="x.sto")
    with pytest.raises(InputError, match="shape"):
        Table([0.0, 1.0], ["a"], np.zeros((3, 1)))
    with pytest.raises(InputError, match="strictly increasing"):
        Table([0.0, 0.0], ["a"], np.zeros((2, 1)))


def test_rotational_coordinates_of_missing_model(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        rotational_coordinates(tmp_path / "none.osim")


def test_repeated_column_labels_are_kept_renamed():
    """Gait2392's reference IK repeats its nine GRF column labels (two plates); OpenSim reads it,
    and so must kinevid, keeping both plates' values."""
    import opensim as osim

    path = DATA / "opensim-models" / "Pipelines" / "Gait2392_Simbody" / "OutputReference" / "subject01_walk1_ik.mot"
    with pytest.warns(UserWarning, match="renamed repeated column labels"):
        table = read_table(path)
    assert "ground_force_vy_2" in table.labels and "ground_force_py_2" in table.labels
    ref = osim.TimeSeriesTable(str(path))
    flat = ref.getMatrix().to_numpy()
    assert table.data.shape == flat.shape
    np.testing.assert_allclose(table.data, flat, rtol=0, atol=1e-12)
