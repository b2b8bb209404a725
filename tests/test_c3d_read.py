"""kinevid's C3D reader on every C3D file of the reference data, against ezc3d and the c3d
package, plus force plates, events, model outputs, lying headers and the conversion to OpenSim."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tracemalloc
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from opensim_bridge.c3d_read import C3DError, read_c3d
from opensim_bridge.errors import KinevidError

from conftest import DATA, data_path

SAMPLES = DATA / "c3d-org-samples" / "tests" / "c3d_org_samples"
JA1 = DATA / "nimblephysics" / "data" / "osim" / "JA1GaitResults"
WORKER = Path(__file__).resolve().parent / "c3d_reference.py"

# Files whose ezc3d reading is wrong or impossible; the c3d package's frame loop is the reference.
C3D_PACKAGE_REFERENCE = {
    "sample_01/Eb015si.c3d": "ezc3d does not read MIPS files",
    "sample_01/Eb015sr.c3d": "ezc3d does not read MIPS files",
    "sample_02/sgi_int.c3d": "ezc3d does not read MIPS files",
    "sample_02/sgi_real.c3d": "ezc3d does not read MIPS files",
    "sample_06/MACsample.c3d": "ezc3d does not read MIPS files",
    "sample_13/Dance.c3d": "ezc3d rejects its float ANALOG:OFFSET",
    "sample_13/golfswing.c3d": "ezc3d rejects its float ANALOG:OFFSET",
    "sample_13/Dance1.c3d": "no ANALOG group: ezc3d negates the raw analog values",
    "sample_13/golfswing1.c3d": "no ANALOG group: ezc3d negates the raw analog values",
    "sample_17/128analogchannels.c3d": "ezc3d shifts some negative ANALOG:OFFSET values",
    "sample_20/phasespace_sample.c3d": "ezc3d ignores TRIAL:ACTUAL_*_FIELD and reads 0 frames",
    "sample_22/BKINtechnologies.c3d": "ezc3d fails (std::bad_alloc)",
    "sample_28/dynamic.C3D": "no ANALOG:RATE: ezc3d skips the analog words, misaligning points",
    "sample_28/standing.C3D": "no ANALOG:RATE: ezc3d skips the analog words, misaligning points",
    "sample_28/type1.C3D": "no ANALOG:RATE: ezc3d skips the analog words, misaligning points",
}
# Files neither reference reads right: kinevid's reading must give smooth marker paths.
NO_REFERENCE = {
    "sample_27/kyowadengyo.c3d": "POINT:USED 12 but the data hold the header's 11 points; "
                                 "ezc3d and c3d read 12 and get jumps of metres",
    "sample_29/Facial-Sing.c3d": "POINT:LABELS truncated; ezc3d and c3d refuse the file",
    "sample_18/bad_parameter_section.c3d": "parameter section corrupt after FORCE_PLATFORM; "
                                           "ezc3d and c3d refuse the file",
}
# Points equal to ezc3d; analogs not compared.
POINTS_ONLY = {"sample_11/evart.c3d": "ezc3d returns denormal garbage for analog channels 25-28"}
EXPECTED_REJECTED = {"C3DRotationExample.c3d": "neither points nor analog channels"}


def _all_files(tmp_path_factory) -> list[Path]:
    files = sorted(p for p in DATA.rglob("*") if p.suffix.lower() == ".c3d")
    tmp = tmp_path_factory.mktemp("walk")
    with zipfile.ZipFile(data_path("kineticstoolkit", "data", "walk.c3d.zip")) as z:
        z.extractall(tmp)
    return files + sorted(tmp.glob("*.c3d"))


def _key(path: Path) -> str:
    return "/".join(path.parts[-2:])


def _run_worker(path: Path, reference: str) -> dict:
    try:
        r = subprocess.run([sys.executable, str(WORKER), str(path), reference],
                           capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return {"path": str(path), "mine": "TIMEOUT"}
    lines = r.stdout.strip().splitlines()
    if not lines:
        return {"path": str(path), "mine": f"DIED rc={r.returncode}", "stderr": r.stderr[-500:]}
    return json.loads(lines[-1])


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    files = _all_files(tmp_path_factory)
    jobs = [(f, "none" if _key(f) in NO_REFERENCE else
             "c3d" if _key(f) in C3D_PACKAGE_REFERENCE else "ezc3d") for f in files]
    with ThreadPoolExecutor(2) as ex:
        results = list(ex.map(lambda j: _run_worker(*j), jobs))
    return dict(zip(files, results))


def test_every_c3d_file_is_read_like_the_references_or_rejected(sweep):
    assert len(sweep) >= 100
    problems, rejected = [], []
    for path, r in sweep.items():
        key = _key(path)
        if r["mine"] == "rejected":
            rejected.append(f"{key}: {r['reason']}")
            if not r.get("names_file") or path.name not in EXPECTED_REJECTED:
                problems.append(f"{key}: unexpectedly rejected: {r['reason']}")
            continue
        if r["mine"] != "ok":
            problems.append(f"{key}: {r}")
            continue
        if key in NO_REFERENCE:
            continue  # checked by the smoothness test below
        if r.get("ref") != "ok":
            problems.append(f"{key}: reference {r['reference']} failed: {r.get('ref')}")
            continue
        diffs = r["diff"]
        if key in POINTS_ONLY:
            diffs = [d for d in diffs if not d.startswith("analog")]
        if diffs:
            problems.append(f"{key} vs {r['reference']}: {diffs}")
    assert not problems, "\n".join(problems)
    assert len(rejected) == len(EXPECTED_REJECTED), rejected


def test_documented_bad_files_are_rejected_or_read_consistently(sweep):
    text = data_path("c3d-org-samples", "tests", "incorrect-test-files.txt").read_text()
    listed = re.findall(r"Sample (\d+): ([^\s].*?\.c3d)", text, flags=re.IGNORECASE)
    by_name = {p.name.lower(): r for p, r in sweep.items()}
    checked = 0
    for _, name in listed:
        r = by_name.get(name.lower())
        if r is None:
            continue  # not in the staged subset
        checked += 1
        assert r["mine"] in ("ok", "rejected"), r
    assert checked >= 3


def test_files_without_a_reference_give_smooth_marker_paths():
    for key in NO_REFERENCE:
        d = read_c3d(SAMPLES / key)
        step = np.nanmedian(np.abs(np.diff(d.points, 2, axis=0)))
        # mm per frame^2 of a human marker at 50-200 Hz; a misread layout gives 100s of mm
        assert step < 5.0, (key, step)
        assert d.markers.valid.mean() > 0.5


def test_rejection_names_the_file_and_reason(tmp_path):
    src = data_path("kineticstoolkit", "data", "c3d_test_suite", "others", "C3DRotationExample.c3d")
    with pytest.raises(C3DError) as err:
        read_c3d(src)
    assert str(src) in str(err.value) and "neither points nor analog" in str(err.value)
    assert isinstance(err.value, KinevidError)
    with pytest.raises(C3DError, match="not found"):
        read_c3d(tmp_path / "nope.c3d")
    junk = tmp_path / "junk.c3d"
    junk.write_bytes(b"\x02P" + b"\x00" * 100)
    with pytest.raises(C3DError, match="shorter than a C3D header"):
        read_c3d(junk)


@pytest.mark.parametrize("folder,files,reference", [
    ("sample_01", ["Eb015pi", "Eb015pr", "Eb015si", "Eb015sr", "Eb015vi", "Eb015vr"], "Eb015pr"),
    ("sample_02", ["dec_int", "dec_real", "pc_int", "pc_real", "sgi_int", "sgi_real"], "pc_real"),
])
def test_processor_and_format_variants_read_equal(folder, files, reference):
    ref = read_c3d(SAMPLES / folder / f"{reference}.c3d")
    kinds = set()
    for name in files:
        d = read_c3d(SAMPLES / folder / f"{name}.c3d")
        kinds.add((d.processor, d.format))
        assert d.point_labels == ref.point_labels and d.n_frames == ref.n_frames
        both = ~np.isnan(d.points) & ~np.isnan(ref.points)
        # sample_02's files differ in which samples are flagged invalid (c3d.org's note)
        assert both.mean() > 0.9 * (~np.isnan(ref.points)).mean()
        quantum = abs(d.point_scale) if d.format == "integer" else 1e-4
        assert np.abs(d.points[both] - ref.points[both]).max() <= quantum, name
        assert d.analog.data.shape == ref.analog.data.shape
        span = np.abs(ref.analog.data).max()
        assert np.abs(d.analog.data - ref.analog.data).max() <= 1e-3 * span, name
        np.testing.assert_allclose(d.markers.data, d.markers.to_metres().data)
        assert d.markers.units == "m"
    assert {p for p, _ in kinds} == {"Intel", "DEC", "MIPS"}
    assert {f for _, f in kinds} == {"integer", "float"}


@pytest.mark.parametrize("name", ["TYPE-2.C3D", "TYPE-2a.c3d", "TYPE-3.c3d", "TYPE-4.C3D",
                                  "TYPE-4a.c3d"])
def test_force_plates_match_ezc3d(name):
    import ezc3d

    path = SAMPLES / "sample_10" / name
    d = read_c3d(path, zero_baseline=False)
    c = ezc3d.c3d(str(path), extract_forceplat_data=True)
    assert len(d.force_plates) == len(c["data"]["platform"]) > 0
    for mine, ref in zip(d.force_plates, c["data"]["platform"]):
        f = ref["force"].T
        full = np.abs(f).max()
        assert np.abs(mine.force - f).max() <= 1e-3 * full
        m = ref["moment"].T / 1000
        assert np.abs(mine.moment - m).max() <= 1e-3 * np.abs(m).max()
        tz = ref["Tz"].T / 1000
        assert np.abs(mine.free_moment - tz)[np.abs(f[:, 2]) > 20].max() <= 1e-3 * np.abs(m).max()
        loaded = np.abs(f[:, 2]) > 0.05 * full
        cop = ref["center_of_pressure"].T / 1000
        size = np.ptp(mine.corners, axis=0).max()
        assert np.abs(mine.cop[loaded] - cop[loaded]).max() <= 1e-3 * size
        assert np.isnan(mine.cop[np.abs(f[:, 2]) < 20]).all()
    assert {p.type for p in d.force_plates} <= {2, 3, 4}


def test_events_labels_and_model_outputs_match_ezc3d():
    import ezc3d

    path = SAMPLES / "sample_23" / "Vicon_analysis.c3d"
    d = read_c3d(path)
    c = ezc3d.c3d(str(path))
    ev = c["parameters"]["EVENT"]
    times = 60 * ev["TIMES"]["value"][0] + ev["TIMES"]["value"][1]
    want = sorted(zip(times, ev["LABELS"]["value"], ev["CONTEXTS"]["value"]))
    assert [(e.name, e.context) for e in d.events] == [(n, c_) for _, n, c_ in want]
    np.testing.assert_allclose([e.time for e in d.events], [t for t, _, _ in want], atol=1e-6)
    angles = list(c["parameters"]["POINT"]["ANGLES"]["value"])
    assert set(d.model_outputs["angles"]) == set(angles)
    assert not set(angles) & set(d.markers.names)
    labels = list(c["parameters"]["POINT"]["LABELS"]["value"])
    pts = c["data"]["points"][:3].transpose(2, 1, 0)
    k = labels.index(angles[0])
    np.testing.assert_allclose(d.model_outputs["angles"][angles[0]], pts[:, k], atol=1e-4)
    m = labels.index(d.markers.names[0])
    np.testing.assert_allclose(d.markers.data[:, 0], pts[:, m] / 1000, atol=1e-7)
    assert d.model_output_units["angles"] == "deg"
    t0 = c["header"]["points"]["first_frame"] / c["header"]["points"]["frame_rate"]
    assert d.markers.time[0] == pytest.approx(t0)


def test_label_continuations_and_duplicates(caplog):
    import ezc3d

    many = data_path("kineticstoolkit", "data", "c3d_test_suite", "others", "many_analogs.c3d")
    d = read_c3d(many)
    c = ezc3d.c3d(str(many))
    assert d.analog.data.shape[1] == 922
    labels = list(c["parameters"]["ANALOG"]["LABELS"]["value"])
    assert list(d.analog.labels[:len(labels)]) == [s.strip() for s in labels]
    dup = many.parent / "duplicate_labels.c3d"
    with caplog.at_level("WARNING"):
        d = read_c3d(dup)
    assert len(set(d.point_labels)) == len(d.point_labels)
    assert any("duplicate labels renamed" in r.getMessage() for r in caplog.records)


def test_units_are_converted_to_metres_once():
    metres = read_c3d(SAMPLES / "sample_22" / "BKINtechnologies.c3d")
    assert metres.point_units.lower().startswith("m") and metres.point_units != "mm"
    np.testing.assert_allclose(metres.markers.data, metres.points)
    mm = read_c3d(SAMPLES / "sample_23" / "Vicon_analysis.c3d")
    idx = [mm.point_labels.index(n) for n in mm.markers.names]
    np.testing.assert_allclose(mm.markers.data, mm.points[:, idx] / 1000)


def _with_header_word(src: Path, dst: Path, word: int, value: int) -> Path:
    buf = bytearray(src.read_bytes())
    buf[2 * word:2 * word + 2] = int(value).to_bytes(2, "little")
    dst.write_bytes(bytes(buf))
    return dst


def test_lying_header_is_rejected_without_allocating(tmp_path):
    src = SAMPLES / "sample_02" / "pc_real.c3d"
    bad = _with_header_word(src, tmp_path / "frames.c3d", 4, 65535)  # last frame
    tracemalloc.start()
    try:
        with pytest.raises(C3DError, match="truncated or corrupt"):
            read_c3d(bad)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * src.stat().st_size
    # a parameter section pointing past the end of the file
    buf = bytearray(src.read_bytes())
    buf[0] = 200
    (tmp_path / "params.c3d").write_bytes(bytes(buf))
    with pytest.raises(C3DError, match="beyond the end"):
        read_c3d(tmp_path / "params.c3d")


def test_truncated_file_is_rejected(tmp_path):
    src = SAMPLES / "sample_02" / "pc_int.c3d"
    cut = tmp_path / "cut.c3d"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(C3DError, match="cut.c3d.*truncated"):
        read_c3d(cut)


# ----------------------------------------------------------------------------- to OpenSim
@pytest.fixture(scope="module")
def ja1(tmp_path_factory):
    from opensim_bridge.c3d_opensim import c3d_to_opensim

    out = tmp_path_factory.mktemp("ja1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return c3d_to_opensim(data_path("nimblephysics", "data", "osim", "JA1GaitResults",
                                        "original.c3d"), out)


def test_ja1_markers_match_the_repository_trc(ja1):
    from opensim_bridge.trc import read_trc

    assert str(ja1.mapping) == "y,z,x"  # detected: walking along lab +y, z up
    ref = read_trc(JA1 / "JA1Gait35.trc")
    mine = read_trc(ja1.trc)
    # The repository's TRC is C3D frames 3..324 (of 324) with time restarted at 0.
    offset = 2
    assert mine.time[offset] == pytest.approx((ja1.data.first_frame - 1 + offset) / 250)
    names = [n for n in ref.names if n in mine.names]
    assert len(names) >= 50
    a = mine.select(names).data[offset:offset + len(ref)]
    assert np.nanmax(np.abs(a - ref.select(names).data)) < 1e-3
    np.testing.assert_allclose(np.diff(mine.time[offset:offset + len(ref)]), np.diff(ref.time),
                               atol=1e-9)


def test_ja1_grf_matches_the_repository_grf(ja1):
    from opensim_bridge.storage import read_table

    ref = read_table(JA1 / "JA1Gait35_grf.mot")
    mine = read_table(ja1.grf)
    assert set(ref.labels) == set(mine.labels)
    per = ja1.data.analog.samples_per_frame
    # reference rows = first analog sample of C3D frames 3..324
    rows = slice(2 * per, (2 + len(ref)) * per, per)
    assert mine.time[rows][0] - ref.time[0] == pytest.approx(ja1.data.point_time[2])
    plates = sorted({int(m.group(1)) for m in map(re.compile(r"ground_force_(\d+)_").match,
                                                 ref.labels)})
    loaded_any = 0
    for i in plates:
        col = lambda t, stem: np.stack([t[f"ground_force_{i}_{stem}{a}"] for a in "xyz"], 1)
        f_ref, f = col(ref, "v"), col(mine, "v")[rows]
        loaded = (f_ref[:, 1] > 50) & (f[:, 1] > 50)
        loaded_any += loaded.sum()
        assert np.abs(f - f_ref)[loaded].max(initial=0) < 1.0
        assert np.abs(col(mine, "m")[rows] - col(ref, "m"))[loaded].max(initial=0) < 1e-3
        # The repository's CoP ignores FORCE_PLATFORM:ORIGIN's 69 mm transducer depth:
        # its CoP = ours - depth * horizontal force / vertical force.
        depth = abs(ja1.data.force_plates[i - 1].origin[2])
        shifted = col(mine, "p")[rows].copy()
        with np.errstate(all="ignore"):
            shifted[:, [0, 2]] -= depth * f[:, [0, 2]] / f[:, [1]]
        assert np.abs(shifted - col(ref, "p"))[loaded].max(initial=0) < 1e-3
    assert loaded_any > 100


def test_ja1_cop_matches_ezc3d_and_loads_assign_the_right_feet(ja1):
    import ezc3d
    import opensim as osim

    c = ezc3d.c3d(str(JA1 / "original.c3d"), extract_forceplat_data=True)
    for mine, ref in zip(ja1.data.force_plates, c["data"]["platform"]):
        loaded = ref["force"][2] > 50
        if loaded.any():
            cop = ref["center_of_pressure"].T[loaded] / 1000
            assert np.abs(mine.cop[loaded] - cop).max() < 1e-6
    xml = (JA1 / "JA1Gait35_external_forces.xml").read_text()
    ref_bodies = {int(k): v for v, k in re.findall(
        r"<applied_to_body>(\w+)</applied_to_body>.*?<force_identifier>ground_force_(\d+)_v",
        xml, flags=re.S)}
    used = {k: v for k, v in ja1.assignments.items() if v is not None}
    assert sorted(used) == [2, 4, 7, 8]
    assert all(ref_bodies[k] == v for k, v in used.items())
    loads = osim.ExternalLoads(str(ja1.external_loads), True)
    assert loads.getSize() == 4
    info = json.loads(ja1.axes_json.read_text())
    assert info["axes"] == "y,z,x" and info["plates"]["2"] == "calcn_r"


def test_cli_info_and_to_opensim(tmp_path, capsys):
    import argparse

    from inference.commands.c3d_import import add_info_parser, add_to_opensim_parser

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_info_parser(sub)
    add_to_opensim_parser(sub)
    args = parser.parse_args(["info", str(SAMPLES / "sample_23" / "Vicon_analysis.c3d")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "markers: 55" in out and "force plates: 3" in out and "events: 17" in out
    assert "angles (deg): 12" in out and "Intel" in out and "Motion Lab Systems" in out
    args = parser.parse_args(["to-opensim", str(SAMPLES / "sample_10" / "TYPE-2a.c3d"), "-o",
                              str(tmp_path), "--axes", "x,z,-y", "--lowpass-grf", "15"])
    assert args.func(args) == 0
    assert (tmp_path / "markers.trc").is_file() and (tmp_path / "grf.mot").is_file()
    args = parser.parse_args(["to-opensim", str(tmp_path / "grf.mot"), "-o", str(tmp_path)])
    with pytest.raises(KinevidError):
        args.func(args)
    args = parser.parse_args(["to-opensim", str(SAMPLES / "sample_10" / "TYPE-2a.c3d"), "-o",
                              str(tmp_path), "--axes", "x,y,-z"])
    with pytest.raises(KinevidError, match="reflection"):
        args.func(args)
