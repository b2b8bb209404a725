"""``kinevid compare``: time alignment, agreement figures, rigid marker fit, files and CLI.

Real data: OpenSim's Gait2354 IK result and walking markers, Vicon Plug-in Gait C3D files, a
Vicon C3D and the TRC made from it. Known lags, noise, rotations and sign flips are applied to
real data (seeded), and the comparison must recover them.
"""
from __future__ import annotations

import argparse
import csv
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from conftest import data_path
from inference.commands.compare import add_compare_parser
from opensim_bridge import compare as C
from opensim_bridge.c3d_read import read_c3d
from opensim_bridge.errors import InputError
from opensim_bridge.markers import read_markers
from opensim_bridge.storage import Table, read_table, write_table

G2354 = ("opensim-models", "Pipelines", "Gait2354_Simbody")
IK_MOT = G2354 + ("OutputReference", "subject01_walk1_ik.mot")
WALK_TRC = G2354 + ("subject01_walk1.trc",)
SAMPLES = ("c3d-org-samples", "tests", "c3d_org_samples")
NOISE_DEG, NOISE_M = 1.0, 0.005


@pytest.fixture(scope="module")
def ik() -> Table:
    return read_table(data_path(*IK_MOT))


def _noisy_shifted(table: Table, frames: int, seed: int) -> tuple[Table, np.ndarray]:
    """``table`` delayed by ``frames`` frames (ours(t) = lab(t - lag)) plus seeded Gaussian noise:
    NOISE_DEG on angles, NOISE_M on translations. Returns the table and each column's noise SD."""
    units = C.channel_units(table)
    sd = np.array([NOISE_M if units[lab] == "m" else NOISE_DEG for lab in table.labels])
    rng = np.random.default_rng(seed)
    data = table.data + rng.normal(size=table.data.shape) * sd
    dt = 1.0 / C.sampling_rate(table.time)
    return table.copy(time=table.time + frames * dt, data=data, source="ours.mot"), sd


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="kinevid")
    add_compare_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


# --------------------------------------------------------------------------- channels
def test_ik_result_against_itself_is_exact(ik):
    res = C.compare_tables(ik, ik)
    assert len(res.pairs) == len(ik.labels) and not res.unpaired_ours and not res.unpaired_lab
    assert abs(res.alignment.lag_frames) < 0.01
    assert len(res.time) == len(ik.time)
    for s in res.stats:
        assert s.n == len(ik.time)
        assert s.rmse < 1e-9 and s.mae < 1e-9 and abs(s.bias) < 1e-9 and s.sd < 1e-9
        if np.ptp(ik.column(s.ours)) > 0:
            assert s.r == pytest.approx(1.0, abs=1e-9)
        else:  # a locked coordinate (mtp_angle): correlation undefined, not invented
            assert math.isnan(s.r)


@pytest.mark.parametrize("frames,seed", [(5, 11), (-7, 12)])
def test_lag_and_noise_recovered(ik, frames, seed):
    ours, sd = _noisy_shifted(ik, frames, seed)
    res = C.compare_tables(ours, ik)
    assert res.alignment.aligned
    assert res.alignment.rate == pytest.approx(60.0, rel=1e-3)
    assert res.alignment.lag_frames == pytest.approx(frames, abs=0.2)
    assert res.alignment.lag_s == pytest.approx(frames / 60.0, abs=0.2 / 60)
    assert not res.alignment.at_limit
    pooled = {p.units: p for p in res.pooled}
    assert set(pooled) == {"deg", "m"}
    assert pooled["deg"].rmse == pytest.approx(NOISE_DEG, rel=0.10)
    assert pooled["m"].rmse == pytest.approx(NOISE_M, rel=0.10)
    assert pooled["deg"].sd == pytest.approx(NOISE_DEG, rel=0.10)
    for s, noise in zip(res.stats, sd):
        # Per channel ~70 samples: RMSE within 35 %, bias within 4 standard errors of 0.
        assert s.rmse == pytest.approx(noise, rel=0.35), s.name
        assert abs(s.bias) < 4 * noise / math.sqrt(s.n), s.name
        assert s.mae < s.rmse
        signal_sd = np.std(ik.column(s.lab))
        if signal_sd > 10 * noise:  # channels whose motion dwarfs the noise
            assert s.r > 0.99, s.name
    # The aligned arrays are the native OURS samples: no interpolation smoothed the noise.
    keep = np.isin(ours.time, res.time)
    assert np.array_equal(res.ours, ours.data[keep])


def test_bland_altman_limits(ik):
    ours, _ = _noisy_shifted(ik, 3, 5)
    res = C.compare_tables(ours, ik)
    inside = total = 0
    for j, s in enumerate(res.stats):
        d = res.ours[:, j] - res.lab[:, j]
        d = d[np.isfinite(d)]
        assert s.bias == pytest.approx(d.mean(), abs=1e-12)
        assert s.sd == pytest.approx(np.std(d, ddof=1), rel=1e-9)
        assert s.loa_low == pytest.approx(s.bias - 1.96 * s.sd)
        assert s.loa_high == pytest.approx(s.bias + 1.96 * s.sd)
        inside += int(np.sum((d >= s.loa_low) & (d <= s.loa_high)))
        total += d.size
    # Gaussian differences: ~95 % inside the limits of agreement.
    assert 0.92 < inside / total < 0.98


def test_agreement_figures_on_known_differences():
    rng = np.random.default_rng(0)
    lab = rng.normal(size=400) * 10
    diff = 0.5 + rng.normal(size=400) * 0.2
    ours = lab + diff
    ours[[3, 50]] = np.nan
    lab[[50, 70, 71]] = np.nan
    s = C.agreement(ours, lab, "x", units="deg")
    ok = np.isfinite(ours) & np.isfinite(lab)
    d = (ours - lab)[ok]
    assert s.n == 400 - 4
    assert s.rmse == pytest.approx(np.sqrt(np.mean(d ** 2)))
    assert s.mae == pytest.approx(np.mean(np.abs(d)))
    assert s.bias == pytest.approx(0.5, abs=0.05)
    assert s.sd == pytest.approx(0.2, rel=0.1)
    assert s.r == pytest.approx(np.corrcoef(ours[ok], lab[ok])[0, 1])


def test_missing_samples_excluded_pairwise(ik):
    ours = ik.copy(source="ours.mot")
    lab = ik.copy()
    j = ik.index("knee_angle_r")
    ours.data[[5, 6, 7], j] = np.nan
    lab.data[[7, 20], j] = np.nan
    lab.data[:, ik.index("hip_flexion_r")] = np.nan   # a channel missing throughout
    res = C.compare_tables(ours, lab, align=False)
    stats = {s.name: s for s in res.stats}
    assert stats["knee_angle_r"].n == len(ik.time) - 4
    assert stats["knee_angle_r"].rmse < 1e-12
    assert stats["hip_flexion_r"].n == 0 and math.isnan(stats["hip_flexion_r"].rmse)
    assert stats["ankle_angle_r"].n == len(ik.time)


def test_no_align_keeps_the_lag_as_error(ik):
    ours, _ = _noisy_shifted(ik, 4, 3)
    res = C.compare_tables(ours, ik, align=False)
    assert not res.alignment.aligned and res.alignment.lag_s == 0.0
    knee = next(s for s in res.stats if s.name == "knee_angle_r")
    aligned = next(s for s in C.compare_tables(ours, ik).stats if s.name == "knee_angle_r")
    assert knee.rmse > 3 * aligned.rmse


def test_radians_reported_in_degrees(ik):
    rad = ik.to_radians(lab for lab in ik.labels if lab not in ("pelvis_tx", "pelvis_ty", "pelvis_tz"))
    res = C.compare_tables(rad, ik)
    assert {s.units for s in res.stats} == {"deg", "m"}
    assert max(s.rmse for s in res.stats) < 1e-9


def test_no_pairs_lists_both_sides(ik):
    other = Table(ik.time, ["a_x", "b_y"], np.zeros((len(ik.time), 2)), source="lab.mot")
    with pytest.raises(InputError) as err:
        C.compare_tables(ik, other)
    msg = str(err.value)
    assert "no channels pair up" in msg and "knee_angle_r" in msg and "a_x" in msg and "b_y" in msg


def test_lag_beyond_the_search_range_is_flagged(ik):
    res = C.compare_tables(ik.copy(time=ik.time + 0.2), ik, max_lag_s=0.1)
    assert res.alignment.at_limit and res.alignment.lag_s == pytest.approx(0.1)
    assert any("edge of the lags searched" in w for w in res.warnings)
    assert not C.compare_tables(ik.copy(time=ik.time + 0.2), ik, max_lag_s=0.5).alignment.at_limit


def test_short_or_disjoint_overlap_is_an_error(ik):
    late = ik.copy(time=ik.time + 10.0, source="late.mot")
    with pytest.raises(InputError, match="do not overlap"):
        C.compare_tables(late, ik)
    with pytest.raises(InputError, match="overlap by only"):
        C.compare_tables(ik.copy(time=ik.time + (len(ik.time) - 4) / 60.0), ik, align=False)


# --------------------------------------------------------------------------- C3D model outputs
def test_read_c3d_model_outputs_plug_in_gait():
    table = C.read_c3d_model_outputs(data_path(*SAMPLES, "sample_03", "gait-pig.c3d"))
    # The file labels every output "A22:..."; the subject prefix is dropped.
    assert not any(":" in lab for lab in table.labels)
    for comp in "XYZ":
        assert f"LKneeAngles_{comp}" in table.labels
    assert table.rate == pytest.approx(50.0)
    units = C.channel_units(table)
    assert units["LKneeAngles_X"] == "deg" and units["LKneeMoment_X"] == "Nmm"
    knee = table.column("RKneeAngles_X")
    assert np.nanmax(knee) - np.nanmin(knee) > 30  # knee flexion over a gait cycle
    with pytest.raises(InputError, match="no model outputs"):
        C.read_c3d_model_outputs(data_path("nimblephysics", "data", "osim", "JA1GaitResults",
                                           "original.c3d"))


def test_two_plug_in_gait_exports_agree():
    """Vicon's Plug-in and Polygon exports of one trial: compared as channels, identical."""
    folder = data_path(*SAMPLES, "sample_09")
    res = C.compare_files(folder / "PlugInC3D.c3d", folder / "PolygonC3D.c3d")
    assert isinstance(res, C.ChannelComparison)
    assert len(res.pairs) == 96
    assert abs(res.alignment.lag_frames) < 0.01
    assert max(s.rmse for s in res.stats if s.n) < 1e-6


def test_mot_against_c3d_with_mapping_cli(tmp_path):
    """An OpenSim-style .mot (knee flexion negative, starting 0.25 s later) against Vicon angles,
    paired by a mapping file with a sign flip, through the CLI."""
    c3d_path = data_path(*SAMPLES, "sample_23", "Vicon_analysis.c3d")
    pig = C.read_c3d_model_outputs(c3d_path)
    rows = slice(40, 400)
    mot = Table(pig.time[rows] + 0.25, ["hip_flexion_r", "knee_angle_r"],
                np.column_stack([pig.column("RHipAngles_X")[rows],
                                 -pig.column("RKneeAngles_X")[rows]]), in_degrees=True)
    write_table(mot, tmp_path / "ours.mot")
    mapping = tmp_path / "pairs.toml"
    mapping.write_text('[pairs]\nhip_flexion_r = "RHipAngles_X"\n'
                       'knee_angle_r = { lab = "RKneeAngles_X", scale = -1 }\n')
    out = tmp_path / "cmp"
    assert _cli(["compare", str(tmp_path / "ours.mot"), str(c3d_path), "--map", str(mapping),
                 "-o", str(out), "--no-plots"]) == 0
    rows_csv = list(csv.DictReader((out / "channels.csv").open()))
    by = {r["channel"]: r for r in rows_csv}
    assert set(by) == {"hip_flexion_r~RHipAngles_X", "knee_angle_r~RKneeAngles_X", "(all deg)"}
    for r in rows_csv:
        assert float(r["rmse"]) < 0.01 and r["units"] == "deg"   # knee ROM ~60 deg
    assert float(by["knee_angle_r~RKneeAngles_X"]["r"]) > 0.9999
    summary = (out / "summary.txt").read_text()
    assert "late by 0.2500 s" in summary
    assert not list(out.glob("*.png"))
    # Without the mapping nothing pairs: a clear error naming both sides' channels.
    with pytest.raises(InputError, match="RKneeAngles_X"):
        _cli(["compare", str(tmp_path / "ours.mot"), str(c3d_path), "-o", str(out)])
    bad = tmp_path / "bad.toml"
    bad.write_text('[pairs]\nknee_angle_r = "NoSuchAngle_X"\n')
    with pytest.raises(InputError, match="NoSuchAngle_X"):
        _cli(["compare", str(tmp_path / "ours.mot"), str(c3d_path), "--map", str(bad)])


@pytest.mark.parametrize("text,problem", [
    ("[pairs\n", "not valid TOML"),
    ("[other]\na = 1\n", "unknown section"),
    ("[pairs]\nknee = { lab = \"K\", scale = 0 }\n", "non-zero"),
    ("[pairs]\nknee = { lab = \"K\", sign = -1 }\n", "unknown keys"),
    ("[pairs]\nknee = 3\n", "expected a LAB channel name"),
    ("[pairs]\nknee = \"K\"\n[options]\nmatch_names = \"no\"\n", "true or false"),
])
def test_bad_mapping_files(tmp_path, text, problem):
    path = tmp_path / "map.toml"
    path.write_text(text)
    with pytest.raises(InputError, match=problem) as err:
        C.read_mapping(path)
    assert str(path) in str(err.value)


def test_mapping_only_pairs_when_asked(ik, tmp_path):
    path = tmp_path / "map.toml"
    path.write_text('[pairs]\nknee_angle_r = { lab = "knee_angle_l", offset = 2.5 }\n'
                    "[options]\nmatch_names = false\n")
    pairs, match = C.read_mapping(path)
    assert match is False and pairs == [C.Pair("knee_angle_r", "knee_angle_l", 1.0, 2.5)]
    res = C.compare_tables(ik, ik, pairs, match, align=False)
    assert [s.name for s in res.stats] == ["knee_angle_r~knee_angle_l"]
    d = ik.column("knee_angle_r") - (ik.column("knee_angle_l") + 2.5)
    assert res.stats[0].bias == pytest.approx(d.mean())


# --------------------------------------------------------------------------- markers
def test_markers_rigidly_moved_with_noise():
    lab = read_markers(data_path(*WALK_TRC))
    rng = np.random.default_rng(7)
    rot = Rotation.from_euler("xyz", [90.0, 15.0, -40.0], degrees=True).as_matrix()
    shift = np.array([1.5, -0.3, 2.2])
    noise = 0.003
    moved = lab.data @ rot.T + shift + rng.normal(size=lab.data.shape) * noise
    ours = lab.copy(time=lab.time + 4 / 60.0, data=moved, source="ours.trc")
    res = C.compare_markers(ours, lab)
    assert res.alignment.lag_frames == pytest.approx(4.0, abs=0.2)
    # OURS -> LAB undoes the applied motion: R_fit = rot^T, t_fit = -rot^T shift.
    assert np.abs(res.rotation @ rot - np.eye(3)).max() < 1e-3
    assert np.allclose(res.translation, -rot.T @ shift, atol=2e-3)
    expected_mm = 1000 * noise * math.sqrt(3)   # 3D distance of isotropic noise
    assert res.overall.rmse_mm == pytest.approx(expected_mm, rel=0.10)
    assert len(res.stats) == len(lab.names)
    for s in res.stats:
        assert s.rmse_mm == pytest.approx(expected_mm, rel=0.3), s.name
    # Without the rigid fit the frames differ by metres.
    assert C.compare_markers(ours, lab, rigid=False).overall.rmse_mm > 500


def test_c3d_markers_against_trc_made_from_it(tmp_path, capsys):
    """A Vicon C3D and the TRC exported from it: the TRC starts at 0 s, the C3D at its first
    frame, so the lag is the C3D's start time; the positions agree to the TRC's precision."""
    folder = data_path("nimblephysics", "data", "osim", "JA1GaitResults")
    out = tmp_path / "m"
    assert _cli(["compare", str(folder / "original.c3d"), str(folder / "JA1Gait35.trc"),
                 "--max-lag", "4", "-o", str(out)]) == 0
    c3d_start = read_markers(folder / "original.c3d").time[0]
    rows = list(csv.DictReader((out / "markers.csv").open()))
    overall = rows[-1]
    assert overall["marker"] == "(all markers)" and float(overall["rmse_mm"]) < 0.1
    assert len(rows) - 1 >= 50
    summary = (out / "summary.txt").read_text()
    printed = capsys.readouterr().out
    n_markers = len(rows) - 1
    # The printed summary lists the 25 worst markers; the file lists all.
    assert f"({n_markers - 25} rows with smaller RMSE not listed" in printed
    assert all(f"\n{r['marker']} " in summary for r in rows)
    lag_s = float(summary.split("late by ")[1].split(" s")[0])
    assert lag_s >= c3d_start and lag_s - c3d_start < 0.05
    _check_png(out / "markers.png")
    # Too small a search range cannot bridge the 3.3 s offset.
    with pytest.raises(InputError, match="do not overlap"):
        C.compare_files(folder / "original.c3d", folder / "JA1Gait35.trc")


def test_c3d_model_outputs_are_not_markers():
    path = data_path(*SAMPLES, "sample_23", "Vicon_analysis.c3d")
    markers = C.load_markers(path)
    c3d = read_c3d(path)
    outputs = {lab for group in c3d.model_outputs.values() for lab in group}
    assert outputs and markers.names and not set(markers.names) & outputs
    assert "LKneeAngles" in c3d.model_outputs["angles"]
    table = C.read_c3d_model_outputs(path)
    assert len(table.labels) == 3 * len(outputs)
    assert C.channel_units(table)["LKneeAngles_X"] == "deg"
    np.testing.assert_array_equal(table.time, c3d.point_time)
    np.testing.assert_array_equal(table.column("LKneeAngles_Y"),
                                  c3d.model_outputs["angles"]["LKneeAngles"][:, 1])


def test_c3d_without_unit_parameters_gets_plug_in_gait_units(tmp_path):
    """A file that names no moment or angle units: Plug-in Gait's (N mm, deg) are assumed."""
    raw = data_path(*SAMPLES, "sample_03", "gait-pig.c3d").read_bytes()
    for name in (b"MOMENT_UNITS", b"ANGLE_UNITS"):
        assert raw.count(name) == 1
        raw = raw.replace(name, name[:-1] + b"Q")   # same length: the parameter is unknown
    path = tmp_path / "no_units.c3d"
    path.write_bytes(raw)
    assert not read_c3d(path).model_output_units.get("moments")
    units = C.channel_units(C.read_c3d_model_outputs(path))
    assert units["LKneeMoment_X"] == "Nmm" and units["RKneeAngles_Z"] == "deg"


def test_c3d_files_with_model_outputs_only(ik, tmp_path):
    """C3D files of Plug-in Gait angles and no markers (as kinevid writes from an IK result) are
    compared as channels; asked for as markers, they are a clear error."""
    from opensim_bridge.c3d_write import write_c3d

    lab, ours = tmp_path / "lab.c3d", tmp_path / "ours.c3d"
    write_c3d(lab, angles=ik)
    write_c3d(ours, angles=ik.copy(time=ik.time + 3 / 60.0))
    assert read_c3d(lab).markers is None
    assert C.detect_mode(ours, lab) == "channels"
    res = C.compare_files(ours, lab)
    assert isinstance(res, C.ChannelComparison)
    assert len(res.pairs) == 3 * len(read_c3d(lab).model_outputs["angles"])
    assert res.alignment.lag_frames == pytest.approx(3.0, abs=0.05)
    assert max(s.rmse for s in res.stats if s.n) < 1e-3
    with pytest.raises(InputError, match="no markers") as err:
        C.compare_files(ours, lab, mode="markers")
    assert "ours.c3d" in str(err.value)


# --------------------------------------------------------------------------- files and plots
def _check_png(path):
    import matplotlib.image as mpimg

    assert path.is_file()
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert 200 < img.shape[0] < 5000 and 200 < img.shape[1] < 5000
    assert img[..., :3].std() > 0.01  # something was drawn


def test_cli_writes_csv_summary_and_pngs(ik, tmp_path, capsys):
    ours, _ = _noisy_shifted(ik, 5, 21)
    write_table(ours, tmp_path / "ours.mot")
    out = tmp_path / "out"
    assert _cli(["compare", str(tmp_path / "ours.mot"), str(data_path(*IK_MOT)), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "late by" in printed and "knee_angle_r" in printed and "channels.csv" in printed
    rows = list(csv.DictReader((out / "channels.csv").open()))
    assert [r["channel"] for r in rows[:len(ik.labels)]] == list(ik.labels)
    assert {r["channel"] for r in rows[len(ik.labels):]} == {"(all deg)", "(all m)"}
    knee = next(r for r in rows if r["channel"] == "knee_angle_r")
    assert float(knee["loa_high"]) - float(knee["loa_low"]) == pytest.approx(
        2 * 1.96 * float(knee["sd"]), rel=1e-4)
    # 23 channels, 12 per page: two pages of each plot.
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["bland_altman_01.png", "bland_altman_02.png", "overlay_01.png", "overlay_02.png"]
    for name in pngs:
        _check_png(out / name)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_cli_input_errors(ik, tmp_path):
    with pytest.raises(InputError, match="not found"):
        _cli(["compare", str(tmp_path / "nope.mot"), str(data_path(*IK_MOT))])
    with pytest.raises(InputError, match="cannot compare a table"):
        _cli(["compare", str(data_path(*IK_MOT)), str(data_path(*WALK_TRC))])
    with pytest.raises(InputError, match="--max-lag"):
        _cli(["compare", str(data_path(*IK_MOT)), str(data_path(*IK_MOT)), "--max-lag", "-1"])
