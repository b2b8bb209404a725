"""The ``kinevid run`` pipeline: settings, caching, resume, run.json.

The OpenSim part of the pipeline runs from 3D keypoints (``--from-keypoints``) made by forward
kinematics of the built-in model driven by the Gait2354 walk's reference IK, so these tests need
no video and no lifter weights.
"""
from __future__ import annotations

import argparse
import io
import json
import shutil

import numpy as np
import pytest

from inference.config import (
    SCHEMA,
    apply_overrides,
    default_config,
    load_config,
    parse_set,
    settings_dict,
)
from opensim_bridge.errors import InputError, KinevidError

from test_run_e2e import keypoint_series, source_motion

HEIGHT, MASS = 1.80, 72.6


def kinevid_run(argv: list[str]) -> int:
    """``kinevid run ARGS`` through the subcommand's own parser and function."""
    from inference.commands.run import add_run_parser

    parser = argparse.ArgumentParser(prog="kinevid")
    add_run_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["run", *argv])
    return args.func(args)


@pytest.fixture(scope="module")
def keypoints_trc(tmp_path_factory):
    from opensim_bridge.builtin_model import write_builtin_model
    from opensim_bridge.trc import write_trc

    d = tmp_path_factory.mktemp("synthetic")
    model = write_builtin_model(d / "truth.osim", height=HEIGHT, mass=MASS)
    return write_trc(keypoint_series(model, source_motion()), d / "walk_keypoints.trc")


def _run(out, trc, *extra):
    return kinevid_run(["--from-keypoints", str(trc), "--height", str(HEIGHT), "--mass",
                        str(MASS), *extra, "-o", str(out)])


def _stages(out) -> dict[str, str]:
    run = json.loads((out / "run.json").read_text())
    return {s["name"]: s["status"] for s in run["stages"]}


def _hashes(out) -> dict:
    return json.loads((out / ".kinevid" / "stage_hashes.json").read_text())["stages"]


# --------------------------------------------------------------------------- config
def test_defaults_cover_every_setting_and_validate():
    cfg = default_config()
    assert set(cfg.values) == set(SCHEMA)
    assert cfg["pose2d"]["pose"] == "auto" and cfg["lift"]["lifter"] == "kinevid"
    assert cfg["output"]["blender"] is True and cfg["subject"]["height"] is None


def test_config_file_then_options_then_set(tmp_path):
    toml = tmp_path / "kinevid.toml"
    toml.write_text('[subject]\nheight = 1.62\nmass = 55\nsex = "f"\n[ik]\njobs = 1\n'
                    '[grf]\nlowpass_hz = 12\n[grf.contact]\nheight_enter_m = 0.04\n')
    cfg = load_config(toml)
    assert cfg["subject"] == {"height": 1.62, "mass": 55.0, "sex": "f"}
    assert cfg["grf"]["contact"] == {"height_enter_m": 0.04}
    assert cfg.sources["ik.jobs"] == str(toml)

    from inference.commands.run import add_run_parser, config_from_args
    parser = argparse.ArgumentParser()
    add_run_parser(parser.add_subparsers())
    args = parser.parse_args(["run", "v.mp4", "--config", str(toml), "--mass", "60",
                              "--set", "subject.mass=61.5", "--set", "ik.weights={RHeel = 2}",
                              "--no-blender", "-o", "out"])
    cfg = config_from_args(args)
    assert cfg["subject"]["height"] == 1.62            # from the file
    assert cfg["subject"]["mass"] == 61.5              # --set wins over --mass
    assert cfg["ik"]["weights"] == {"RHeel": 2.0}
    assert cfg["output"]["blender"] is False
    assert cfg["grf"]["lowpass_hz"] == 12.0


def test_coordinate_priors_add_to_the_defaults(tmp_path):
    """A config that adds one coordinate prior keeps the default ones (the toe joints held near
    neutral, the lumbar split); weight 0 turns a default off; --set adds on top of the file."""
    default = default_config()["ik"]["coordinate_priors"]
    assert {"mtp_angle_r", "mtp_angle_l", "lumbar_extension"} <= set(default)
    toml = tmp_path / "kinevid.toml"
    toml.write_text("[ik.coordinate_priors]\nmtp_angle_r = 0\n"
                    "knee_angle_r = { weight = 0.5, value_deg = 10 }\n")
    cfg = load_config(toml)
    priors = cfg["ik"]["coordinate_priors"]
    assert priors["mtp_angle_r"] == 0 and priors["knee_angle_r"]["value_deg"] == 10
    assert priors["mtp_angle_l"] == default["mtp_angle_l"]
    assert priors["lumbar_extension"] == default["lumbar_extension"]
    cfg = apply_overrides(cfg, {"ik.coordinate_priors": {"hip_flexion_r": 0.1}})
    assert set(cfg["ik"]["coordinate_priors"]) == set(priors) | {"hip_flexion_r"}


@pytest.mark.parametrize("text, problem", [
    ("[ik]\njbos = 2\n", "unknown setting ik.jbos"),
    ("[iK]\njobs = 2\n", "unknown section [iK]"),
    ("[ik]\njobs = 'two'\n", "ik.jobs must be a whole number"),
    ("[subject]\nheight = 17.5\n", "subject.height must be <= 2.6"),
    ("[pose2d]\npose = 'openpose'\n", "pose2d.pose must be one of"),
    ("[output]\nc3d = 1\n", "output.c3d must be true or false"),
    ("[grf.contact]\nheight_enter = 0.04\n", "unknown setting grf.contact.height_enter"),
    ("[ik\n", "not a valid TOML file"),
])
def test_bad_config_names_the_file_and_the_setting(tmp_path, text, problem):
    toml = tmp_path / "bad.toml"
    toml.write_text(text)
    with pytest.raises(InputError) as exc:
        load_config(toml)
    assert problem in str(exc.value) and str(toml) in str(exc.value)


def test_parse_set_reads_toml_values():
    assert parse_set("ik.jobs=2") == ("ik", "jobs", 2)
    assert parse_set("pose2d.overlay=false") == ("pose2d", "overlay", False)
    assert parse_set("model.model=/data/my model.osim") == ("model", "model", "/data/my model.osim")
    with pytest.raises(InputError):
        parse_set("jobs=2")
    with pytest.raises(InputError, match="keypoints.lowpass_hz must be >= 0"):
        apply_overrides(default_config(), {"keypoints.lowpass_hz": -1})


def test_height_and_mass_are_required(tmp_path, keypoints_trc):
    with pytest.raises(InputError, match="height and mass must be given"):
        kinevid_run(["--from-keypoints", str(keypoints_trc), "-o", str(tmp_path / "o")])


# --------------------------------------------------------------------------- caching
def test_rerun_reuses_every_stage_and_a_changed_setting_reruns_only_later_stages(
        tmp_path, keypoints_trc, capsys):
    out = tmp_path / "out"
    assert _run(out, keypoints_trc) == 0
    first = _stages(out)
    assert first == {s: "ran" for s in ("lift", "scale", "ik", "id", "c3d", "blender")}
    for name in ("markers.trc", "model_scaled.osim", "ik.mot", "ik_marker_errors.sto", "grf.mot",
                 "external_loads.xml", "id.sto", "motion.c3d", "scale_setup.xml", "ik_setup.xml",
                 "id_setup.xml", "motion.kvb", "run.json"):
        assert (out / name).is_file(), name
    hashes = _hashes(out)
    ik_mtime = (out / "ik.mot").stat().st_mtime_ns

    # same inputs and settings: everything is reused, nothing is rewritten
    assert _run(out, keypoints_trc) == 0
    assert set(_stages(out).values()) == {"cached"}
    assert _hashes(out) == hashes
    assert (out / "ik.mot").stat().st_mtime_ns == ik_mtime
    err = capsys.readouterr().err
    assert "stages: 2/6 done (33%) - cached ik" in err

    # another IK weight: lifting and scaling are kept; IK and what depends on it rerun
    assert _run(out, keypoints_trc, "--set", "ik.weights={RHeel = 5.0, LHeel = 5.0}") == 0
    st = _stages(out)
    assert st["lift"] == st["scale"] == "cached"
    assert st["ik"] == st["id"] == st["c3d"] == st["blender"] == "ran"
    new = _hashes(out)
    assert new["scale"] == hashes["scale"] and new["ik"]["key"] != hashes["ik"]["key"]
    assert new["ik"]["outputs"]["ik.mot"] != hashes["ik"]["outputs"]["ik.mot"]
    run = json.loads((out / "run.json").read_text())
    assert run["settings"]["ik"]["weights"] == {"RHeel": 5.0, "LHeel": 5.0}
    assert run["settings_sources"]["ik.weights"] == "--set"
    assert run["versions"]["opensim"] and run["versions"]["numpy"] == np.__version__
    assert run["quality"]["ik_marker_rms_mm"]["median"] < 20
    ik_info = next(s for s in run["stages"] if s["name"] == "ik")["info"]
    assert "knee_angle_r" in ik_info["joint_limits"]          # on by default
    assert not any(c.startswith("pelvis") for c in ik_info["joint_limits"])

    # an output edited by hand is not trusted: its stage reruns
    (out / "id.sto").write_text("edited\n")
    assert _run(out, keypoints_trc, "--set", "ik.weights={RHeel = 5.0, LHeel = 5.0}") == 0
    st = _stages(out)
    assert st["ik"] == "cached" and st["id"] == "ran"

    # --force reruns everything
    assert _run(out, keypoints_trc, "--force", "--no-blender", "--no-c3d") == 0
    assert set(_stages(out).values()) == {"ran"}


def test_failed_stage_keeps_earlier_outputs_and_resume_continues(tmp_path, keypoints_trc):
    out = tmp_path / "out"
    # a cut-off above the 30 Hz Nyquist frequency of the 60 Hz motion: the id stage fails
    with pytest.raises(KinevidError, match="Nyquist"):
        _run(out, keypoints_trc, "--set", "grf.lowpass_hz=40")
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "failed" and run["error"]["stage"] == "id"
    assert "Nyquist" in run["error"]["message"]
    st = _stages(out)
    assert st["ik"] == "ran" and st["id"] == "failed" and st["c3d"] == "pending"
    assert (out / "ik.mot").is_file() and not (out / "id.sto").exists()
    assert "id" not in _hashes(out)
    ik_hash = _hashes(out)["ik"]["outputs"]["ik.mot"]

    # --resume takes the recorded inputs and settings; the override fixes the cut-off
    assert kinevid_run(["--resume", "--set", "grf.lowpass_hz=6", "-o", str(out)]) == 0
    st = _stages(out)
    assert st["lift"] == st["scale"] == st["ik"] == "cached"
    assert st["id"] == st["c3d"] == st["blender"] == "ran"
    assert _hashes(out)["ik"]["outputs"]["ik.mot"] == ik_hash
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and run["error"] is None
    assert run["request"]["inputs"]["from_keypoints"] == str(keypoints_trc)
    assert [e["name"] for e in run["stages"][3]["info"]["events"]].count("Foot Strike") >= 1


def test_stop_after_then_resume(tmp_path, keypoints_trc):
    out = tmp_path / "out"
    assert _run(out, keypoints_trc, "--stop-after", "scale") == 0
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "stopped"
    assert _stages(out)["ik"] == "skipped" and not (out / "ik.mot").exists()
    assert kinevid_run(["--resume", "-o", str(out)]) == 0
    st = _stages(out)
    assert st["scale"] == "cached" and st["ik"] == "ran" and st["blender"] == "ran"


def test_resume_without_a_run_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="nothing to resume"):
        kinevid_run(["--resume", "-o", str(tmp_path)])


def test_stage_headers_are_progress_lines_for_the_blender_addon(tmp_path, keypoints_trc):
    import sys

    from inference.config import apply_overrides
    from inference.pipeline import Pipeline, RunInputs

    REPO_ADDON = __import__("conftest").REPO / "addon"
    sys.path.insert(0, str(REPO_ADDON))
    try:
        from kinevid_blender.runner import parse_progress
    finally:
        sys.path.remove(str(REPO_ADDON))
    cfg = apply_overrides(default_config(), {"subject.height": HEIGHT, "subject.mass": MASS,
                                             "output.blender": False, "output.c3d": False})
    stream = io.StringIO()
    Pipeline(tmp_path / "o", cfg, RunInputs(from_keypoints=keypoints_trc), stream=stream,
             log=lambda m: None, stop_after="scale").run()
    headers = [parse_progress(line) for line in stream.getvalue().splitlines()
               if line.startswith("stages:")]
    assert [(p.done, p.total) for p in headers] == [(0, 4), (1, 4), (2, 4)]
    assert all(p.label == "stages" for p in headers)


def test_other_osim_model_is_retargeted_with_its_map(tmp_path, keypoints_trc, shared_data):
    """--model PATH.osim: Gait2354 gets its shipped keypoint map; ik.mot has its coordinates."""
    import opensim as osim

    from opensim_bridge.storage import read_table

    src = shared_data / "opensim-models" / "Models" / "Gait2354_Simbody"
    model = tmp_path / "gait2354_simbody.osim"
    shutil.copy(src / "gait2354_simbody.osim", model)   # meshes are not needed for the map
    out = tmp_path / "out"
    assert _run(out, keypoints_trc, "--model", str(model), "--no-blender") == 0
    run = json.loads((out / "run.json").read_text())
    assert "gait2354" in run["stages"][1]["info"]["keypoint_map"].lower()
    m = osim.Model(str(out / "model_scaled.osim"))
    m.initSystem()
    cs = m.getCoordinateSet()
    assert set(read_table(out / "ik.mot").labels) == {cs.get(i).getName()
                                                      for i in range(cs.getSize())}
    # the recovered knee flexion follows the source motion (gait2354: flexion negative)
    ref = source_motion()
    got = read_table(out / "ik.mot")
    knee = np.interp(ref.time, got.time, -got["knee_angle_r"])
    assert np.sqrt(np.mean((knee - ref["knee_angle_r"]) ** 2)) < 8.0


def test_tier_is_a_preset_under_the_file_and_the_options(tmp_path):
    from inference.commands.run import add_run_parser, config_from_args
    from inference.config import TIERS

    parser = argparse.ArgumentParser()
    add_run_parser(parser.add_subparsers())

    def cfg(*argv):
        return config_from_args(parser.parse_args(["run", "v.mp4", "-o", "out", *argv]))

    std = cfg()
    assert std["run"]["tier"] == "standard" and std["pose2d"]["max_people"] == 4
    light = cfg("--tier", "light")
    for dotted, value in TIERS["light"].items():
        section, key = dotted.split(".")
        assert light[section][key] == value
        assert light.sources[dotted] == "--tier light"
    assert light["run"]["tier"] == "light" and light["pose2d"]["overlay"] is False
    # the config file and the options win over the tier
    toml = tmp_path / "k.toml"
    toml.write_text("[pose2d]\nmax_fps = 60\n")
    mixed = cfg("--tier", "light", "--config", str(toml), "--set", "pose2d.overlay=true")
    assert mixed["pose2d"]["max_fps"] == 60.0 and mixed["pose2d"]["overlay"] is True
    assert mixed["pose2d"]["max_people"] == 1
    # a file can ask for the tier itself
    toml.write_text('[run]\ntier = "light"\n[pose2d]\nmax_people = 2\n')
    from_file = cfg("--config", str(toml))
    assert from_file["pose2d"]["max_fps"] == 30.0 and from_file["pose2d"]["max_people"] == 2
    # a resumed run keeps what was recorded (its tier's values and the changes made to them)
    recorded = settings_dict(mixed)
    resumed = config_from_args(parser.parse_args(["run", "-o", "out", "--resume"]), recorded)
    assert resumed["pose2d"]["overlay"] is True and resumed["run"]["tier"] == "light"
    # the command line's tier wins over the file's, preset and label alike
    toml.write_text('[run]\ntier = "light"\n')
    std2 = cfg("--config", str(toml), "--tier", "standard")
    assert std2["run"]["tier"] == "standard" and std2["pose2d"]["max_fps"] is None
    with pytest.raises(SystemExit):
        cfg("--tier", "fastest")


def test_frame_step_keeps_at_most_max_fps(tmp_path):
    import av

    from inference.pipeline import frame_step

    def video(rate):
        path = tmp_path / f"v{rate}.mp4"
        with av.open(str(path), "w") as c:
            s = c.add_stream("libx264", rate=rate)
            s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
            for i in range(5):
                for p in s.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8),
                                                             format="rgb24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
        return path

    assert frame_step(video(60), 30.0) == 2
    assert frame_step(video(50), 30.0) == 2          # 25 fps: never above the limit
    assert frame_step(video(120), 30.0) == 4
    assert frame_step(video(30), 30.0) == 1
    assert frame_step(video(25), 30.0) == 1
    assert frame_step(video(60), None) == 1


def test_frames_at_joint_limits_skip_neutral_stops():
    from opensim_bridge.ik_solver import frames_at_limits
    v = {"arm_add_r": np.array([-100.0, -179.8, -180.0, 0.0]),
         "knee_angle_r": np.array([0.0, 0.2, 60.0, 119.9]),
         "hip_flexion_r": np.array([10.0, 20.0, 30.0, 40.0])}
    ranges = {"arm_add_r": (-180.0, 90.0), "knee_angle_r": (0.0, 120.0)}
    hits = frames_at_limits(v, ranges)
    assert set(hits) == {"arm_add_r", "knee_angle_r"}          # no range given: skipped
    np.testing.assert_array_equal(hits["arm_add_r"], [False, True, True, False])
    # a straight knee rests on its 0 deg stop and is not reported; 120 deg is
    np.testing.assert_array_equal(hits["knee_angle_r"], [False, False, False, True])


def test_quality_flags_joints_held_at_their_range(tmp_path):
    """The at_joint_limits flag reads ik.mot and the model's own ranges: a shoulder at its
    abduction stop is reported with its frame count; a straight knee and a forearm at its
    rotation stop (weakly seen from keypoints) are not."""
    from inference.pipeline import _limit_flags_for
    from opensim_bridge.builtin_model import write_builtin_model
    from opensim_bridge.storage import Table, write_table

    model = write_builtin_model(tmp_path / "m.osim", height=1.75, mass=70)
    t = np.arange(6) / 30.0
    cols = {"arm_add_r": [-90, -150, -180, -180, -179.9, -90], "knee_angle_r": [0.0] * 6,
            "pro_sup_r": [90.0] * 6, "hip_flexion_r": [20.0] * 6}
    table = Table(t, list(cols), np.column_stack([np.array(c, float) for c in cols.values()]),
                  in_degrees=True, name="Coordinates")
    write_table(table, tmp_path / "ik.mot")
    flag = _limit_flags_for(tmp_path / "ik.mot", model, ["arm_add_r", "knee_angle_r",
                                                         "pro_sup_r", "hip_flexion_r"])
    assert flag["n_frames"] == 3 and flag["of_frames"] == 6
    assert flag["coordinates"] == {"arm_add_r": 3}
    assert flag["time_ranges_s"] == [[pytest.approx(2 / 30), pytest.approx(4 / 30)]]
