"""The Blender add-on's pure logic, without Blender: C3D reader, motion-file reader and pose
maths, BVH writer, retargeting, subprocess runner, primitives, zip build."""
from __future__ import annotations

import ast
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, data_path

sys.path.insert(0, str(REPO / "addon"))
from kinevid_blender import bvh_export, c3d_reader, motion_file as mf, primitives, retarget, runner  # noqa: E402

ADDON = REPO / "addon" / "kinevid_blender"
SAMPLES = ("c3d-org-samples", "tests", "c3d_org_samples")


# ------------------------------------------------------------------------------ packaging
def test_addon_imports_nothing_blender_lacks():
    """Blender's Python has numpy and bpy, not kinevid, OpenSim, torch or scipy."""
    banned = {"opensim", "torch", "scipy", "inference", "opensim_bridge", "models", "ezc3d", "c3d"}
    for path in ADDON.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for n in names:
                assert n.split(".")[0] not in banned, f"{path.name} imports {n}"


def test_build_zip(tmp_path):
    sys.path.insert(0, str(REPO))
    from addon.build import build_zip

    z = build_zip(tmp_path / "a.zip")
    with zipfile.ZipFile(z) as zf:
        names = zf.namelist()
    assert "kinevid_blender/blender_manifest.toml" in names
    assert "kinevid_blender/__init__.py" in names
    assert {f"kinevid_blender/{p.name}" for p in ADDON.glob("*.py")} <= set(names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert build_zip(tmp_path / "b.zip").read_bytes() == z.read_bytes()  # reproducible


# ------------------------------------------------------------------------------ C3D
@pytest.mark.parametrize("name", ["cmu_02_05.c3d", "nick_freeform_001.c3d",
                                  "cmu_dribble_shoot_basketball.c3d"])
def test_c3d_points_match_ezc3d(name):
    ezc3d = pytest.importorskip("ezc3d")
    path = data_path("nimblephysics", "data", "c3d", name)
    ours = c3d_reader.read_c3d(path)
    ref = ezc3d.c3d(str(path))
    pts = ref["data"]["points"][:3].transpose(2, 1, 0)
    assert ours.points.shape == pts.shape
    assert np.array_equal(np.isnan(ours.points), np.isnan(pts))
    assert np.nanmax(np.abs(ours.points - pts)) < 1e-4
    assert ours.labels == list(ref["parameters"]["POINT"]["LABELS"]["value"])[:len(ours.labels)]
    assert ours.rate == pytest.approx(ref["header"]["points"]["frame_rate"])


@pytest.mark.parametrize("folder,reference", [("sample_01", "Eb015pr.c3d"), ("sample_02", "pc_real.c3d")])
def test_c3d_processor_types_agree(folder, reference):
    """sample_01/02 hold the same data as Intel, DEC and MIPS, integer and float."""
    ref = c3d_reader.read_c3d(data_path(*SAMPLES, folder, reference))
    files = sorted(data_path(*SAMPLES, folder).glob("*.c3d"))
    seen = set()
    for f in files:
        m = c3d_reader.read_c3d(f)
        seen.add((m.processor, m.is_float))
        assert m.labels == ref.labels
        assert np.array_equal(np.isnan(m.points), np.isnan(ref.points))
        tol = 1e-6 if m.is_float else 0.5  # integer files are quantised (mm)
        assert np.nanmax(np.abs(m.points - ref.points)) < tol, f.name
    assert {p for p, _ in seen} == {"intel", "dec", "mips"}


def test_c3d_rejects_bad_files(tmp_path):
    bad = tmp_path / "x.c3d"
    bad.write_bytes(b"\x02\x00" + bytes(100))
    with pytest.raises(c3d_reader.C3DError, match="too short"):
        c3d_reader.read_c3d(bad)
    good = data_path(*SAMPLES, "sample_01", "Eb015pr.c3d").read_bytes()
    bad.write_bytes(good[:len(good) // 2])  # truncated data
    with pytest.raises(c3d_reader.C3DError, match="frames"):
        c3d_reader.read_c3d(bad)


def test_lab_up_axis():
    z_up = c3d_reader.read_c3d(data_path("nimblephysics", "data", "c3d", "cmu_02_05.c3d")).metres()
    assert c3d_reader.lab_up_axis(z_up) == "+Z"
    y_up = z_up[..., [0, 2, 1]] * [1, 1, -1]  # turn the same data to a Y-up lab (proper rotation)
    rot, up = c3d_reader.lab_to_blender(y_up)
    assert up == "+Y"
    assert np.allclose(rot @ [0, 1, 0], [0, 0, 1]) and np.isclose(np.linalg.det(rot), 1.0)


# ------------------------------------------------------------------------------ motion file
@pytest.fixture(scope="module")
def kvb(tmp_path_factory):
    from opensim_bridge.blender_export import export_blender

    pipe = data_path("opensim-models", "Pipelines", "Gait2354_Simbody")
    out = tmp_path_factory.mktemp("kvb") / "walk.kvb"
    export_blender(pipe / "OutputReference" / "subject01_simbody.osim",
                   pipe / "OutputReference" / "subject01_walk1_ik.mot", out,
                   grf=pipe / "subject01_walk1_grf.mot")
    return out


def test_read_motion_file(kvb):
    m = mf.read_motion_file(kvb)
    assert m.n_frames == 73 and len(m.bodies) == 12
    assert m.bodies[0].parent is None
    assert all(m.body_names.index(b.parent) < b.index for b in m.bodies if b.parent)
    assert mf.find_result_file(kvb.parent) == kvb


def test_motion_file_errors(tmp_path, kvb):
    with pytest.raises(mf.MotionFileError, match="not a ZIP"):
        bad = tmp_path / "a.kvb"
        bad.write_text("hello")
        mf.read_motion_file(bad)
    import json
    src = zipfile.ZipFile(kvb)
    manifest = json.loads(src.read("manifest.json"))
    manifest["version"] = 99
    newer = tmp_path / "v99.kvb"
    with zipfile.ZipFile(newer, "w") as zf:
        for n in src.namelist():
            zf.writestr(n, json.dumps(manifest) if n == "manifest.json" else src.read(n))
    with pytest.raises(mf.MotionFileError, match="version 99"):
        mf.read_motion_file(newer)


def test_pose_basis_reproduces_body_frames(kvb):
    """Blender's pose rule applied to pose_basis' output gives back every bone frame."""
    m = mf.read_motion_file(kvb)
    offsets, lengths = mf.bone_offsets(m)
    assert np.all(lengths > 0.01)
    bone_world = mf.body_matrices(m) @ offsets[None]
    rest = bone_world[0]
    parents = [-1 if b.parent is None else m.body_names.index(b.parent) for b in m.bodies]
    basis = mf.pose_basis(bone_world, rest, parents)
    pose = np.empty_like(basis)
    for b, p in enumerate(parents):
        base = rest[b] if p < 0 else pose[:, p] @ np.linalg.inv(rest[p]) @ rest[b]
        pose[:, b] = base @ basis[:, b]
    assert np.abs(pose - bone_world).max() < 1e-9
    q = mf.matrix_to_quat(basis[..., :3, :3])
    assert np.allclose(mf.quat_to_matrix(q), basis[..., :3, :3], atol=1e-9)
    assert np.all(np.sum(q[1:] * q[:-1], axis=-1) >= 0)  # no sign flips between frames
    # the femur bone points at the knee: the tibia's origin in the first frame
    fi, ti = m.body_names.index("femur_r"), m.body_names.index("tibia_r")
    tail = bone_world[0, fi] @ [0, lengths[fi], 0, 1]
    assert np.linalg.norm(tail[:3] - mf.body_matrices(m)[0, ti, :3, 3]) < 1e-9


def test_scene_timing():
    t = 0.4 + np.arange(73) / 60.0
    tm = mf.scene_timing(t, 59.99998)
    assert (tm.fps, tm.fps_base) == (60, 1.0)
    assert tm.frame_end - tm.frame_start + 1 == 73
    assert np.allclose(tm.key_frames, 1 + np.arange(73))
    # with a 30 fps video: the scene runs at 30, the 60 Hz keys on half frames
    tv = mf.scene_timing(t, 60.0, video_fps=30.0)
    assert tv.fps == 30 and np.allclose(tv.key_frames[:3], [1, 1.5, 2])
    assert tv.clip_frame_start(0.0) == 1 - 12  # the video started 0.4 s (12 frames) earlier
    ntsc = mf.scene_timing(t, 29.97)
    assert ntsc.fps == 30 and ntsc.rate == pytest.approx(29.97)


def test_grf_arrows():
    force = np.array([[0.0, 700.0, 0.0], [0.0, 5.0, 0.0], [100.0, 0.0, 0.0], [np.nan] * 3])
    point = np.array([[0.1, 0.0, 0.2]] * 4)
    loc, quat, scale = mf.grf_arrows(force, point, threshold_n=20.0, metres_per_newton=0.001)
    r = mf.quat_to_matrix(quat)
    assert np.allclose(r[0] @ [0, 0, 1], [0, 0, 1])  # OpenSim +Y is Blender +Z
    assert np.allclose(r[2] @ [0, 0, 1], [1, 0, 0])
    assert np.allclose(loc[0], [0.1, -0.2, 0.0])
    assert np.allclose(scale[:, 0], [0.7, 0.0, 0.1, 0.0])


# ------------------------------------------------------------------------------ BVH
def test_bvh_roundtrip_real_clip(tmp_path):
    clip = bvh_export.read_bvh(data_path("bvh11", "resources", "131_03.bvh"))
    rot, pos = bvh_export.bvh_world(clip)
    out = bvh_export.write_bvh(tmp_path / "a.bvh", clip.names, clip.parents, rot, pos,
                               clip.frame_time, translations=True)
    back = bvh_export.read_bvh(out)
    assert back.n_frames == clip.n_frames and back.names == clip.names
    rot2, pos2 = bvh_export.bvh_world(back)
    assert np.abs(rot2 - rot).max() < 1e-5 and np.abs(pos2 - pos).max() < 1e-4
    # rotations only: offsets are constant in that clip, so the motion is still exact
    rot3, pos3 = bvh_export.bvh_world(bvh_export.read_bvh(bvh_export.write_bvh(
        tmp_path / "b.bvh", clip.names, clip.parents, rot, pos, clip.frame_time)))
    assert np.abs(pos3 - pos).max() < 1e-3


def test_euler_zxy_roundtrip():
    rng = np.random.default_rng(1)
    ang = rng.uniform(-1.4, 1.4, (200, 3))
    assert np.allclose(bvh_export.euler_zxy(bvh_export.euler_zxy_to_matrix(ang)), ang)


# ------------------------------------------------------------------------------ retarget
def test_bone_matching():
    src = ["pelvis", "femur_r", "femur_l", "tibia_r", "hand_l"]
    tgt = ["Pelvis", "femur.R", "Femur.L", "shin.R", "mixamorig:LeftHand"]
    got = retarget.match_bones(src, tgt, retarget.parse_mapping("tibia_r = shin.R  # knee"))
    assert got == {"tibia_r": "shin.R", "pelvis": "Pelvis", "femur_r": "femur.R",
                   "femur_l": "Femur.L", "hand_l": "mixamorig:LeftHand"}
    with pytest.raises(ValueError, match="lacks"):
        retarget.match_bones(src, tgt, {"tibia_r": "nope"})
    with pytest.raises(ValueError, match="line 1"):
        retarget.parse_mapping("just one name")


def test_retarget_pose_copies_rotation_changes():
    rng = np.random.default_rng(0)

    def rigid(r, t):
        m = np.eye(4)
        m[:3, :3], m[:3, 3] = r, t
        return m

    def rand_rot(n):
        q = rng.normal(size=(n, 4))
        return mf.quat_to_matrix(q)

    # source: 3-bone chain; target: same chain with different bone axes and an object turned
    s_rest = np.stack([rigid(r, t) for r, t in zip(rand_rot(3), [[0, 0, 1], [0, 0.1, 0.6], [0, 0.1, 0.2]])])
    s_pose = np.stack([np.stack([rigid(r, s_rest[b, :3, 3] + [0.3 * f, 0, 0])
                                 for b, r in enumerate(rand_rot(3))]) for f in range(5)])
    t_rest = np.stack([rigid(r, t) for r, t in zip(rand_rot(3), [[0, 0, 2], [0, 0.2, 1.2], [0, 0.2, 0.4]])])
    obj = rigid(mf.quat_to_matrix(np.array([0.9, 0, 0, 0.3])), [1, 2, 0])
    basis = retarget.retarget_pose(s_rest, s_pose, t_rest, [-1, 0, 1], obj, [(0, 0), (1, 1), (2, 2)])
    pose = np.empty_like(basis)
    for b, p in enumerate([-1, 0, 1]):
        base = t_rest[b] if p < 0 else pose[:, p] @ np.linalg.inv(t_rest[p]) @ t_rest[b]
        pose[:, b] = base @ basis[:, b]
    world = obj @ pose
    t_rest_w = obj @ t_rest
    for b in range(3):
        want = s_pose[:, b, :3, :3] @ s_rest[b, :3, :3].T @ t_rest_w[b, :3, :3]
        assert np.abs(world[:, b, :3, :3] - want).max() < 1e-9
    # the root moves as the source's, scaled by the rest heights (2 / 1)
    assert np.allclose(world[:, 0, 0, 3] - t_rest_w[0, 0, 3], 2 * 0.3 * np.arange(5))


# ------------------------------------------------------------------------------ runner
_PROGRESS_SCRIPT = textwrap.dedent("""
    import sys, time
    from inference.progress import ProgressBar
    with ProgressBar("IK", unit="frames") as bar:
        for i in range(1, 21):
            bar.update(i, 20)
    print("wrote result")
""")


def test_runner_reads_progress_from_kinevid_progress_bar(tmp_path):
    proc = runner.KinevidProcess([sys.executable, "-c", _PROGRESS_SCRIPT], output=tmp_path,
                                 env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}).start()
    assert proc.wait(timeout=60) == 0
    assert proc.status == "done"
    assert proc.progress is not None and (proc.progress.done, proc.progress.total) == (20, 20)
    assert proc.progress.label == "IK" and proc.progress.fraction == 1.0
    assert "wrote result" in proc.lines
    assert proc.result() is None  # no .kvb there
    (tmp_path / "motion.kvb").write_bytes(b"")
    assert proc.result() == tmp_path / "motion.kvb"


def test_runner_reports_kinevid_errors(tmp_path):
    """The real kinevid CLI with a missing input: its one-line error reaches failure_message."""
    argv = [sys.executable, "-m", "inference.cli", "id", "--model", str(tmp_path / "no.osim"),
            "--motion", str(tmp_path / "no.mot"), "-o", str(tmp_path)]
    proc = runner.KinevidProcess(argv, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}).start()
    assert proc.wait(timeout=120) == 2
    assert proc.status == "failed"
    assert "no.osim" in proc.failure_message() or "no.mot" in proc.failure_message()


def test_runner_cancel_stops_process_group():
    script = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    proc = runner.KinevidProcess([sys.executable, "-c", script]).start()
    import time
    time.sleep(0.5)
    assert proc.status == "running"
    proc.cancel(grace_s=5)
    proc.wait(timeout=10)
    assert proc.status == "cancelled"


def test_run_command_and_find_kinevid(tmp_path):
    argv = runner.run_command("/x/kinevid", "/v/a.mp4", "/o", 1.8, 75, sex="f")
    assert argv == ["/x/kinevid", "run", "/v/a.mp4", "--height", "1.8", "--mass", "75",
                    "--sex", "f", "-o", "/o"]
    with pytest.raises(runner.RunnerError, match="height"):
        runner.run_command("k", "v", "o", 4.0, 70)
    venv_kinevid = Path(sys.executable).with_name("kinevid")
    if venv_kinevid.is_file():
        assert runner.find_kinevid(str(venv_kinevid.parent.parent)) == venv_kinevid
    with pytest.raises(runner.RunnerError, match="not found"):
        runner.find_kinevid(str(tmp_path / "none"))
    assert runner.parse_progress("ID: 3/10 frames (30%, 2.0/s)").fraction == pytest.approx(0.3)
    assert runner.parse_progress("wrote /a/b.mot") is None


# ------------------------------------------------------------------------------ primitives
@pytest.mark.parametrize("geom,volume", [
    ({"kind": "sphere", "radius": 0.1}, 4 / 3 * np.pi * 1e-3),
    ({"kind": "ellipsoid", "radii": [0.1, 0.2, 0.3]}, 4 / 3 * np.pi * 0.006),
    ({"kind": "cylinder", "radius": 0.05, "half_height": 0.2}, np.pi * 0.0025 * 0.4),
    ({"kind": "brick", "half_lengths": [0.1, 0.2, 0.3]}, 0.048),
    ({"kind": "cone", "origin": [0, 0, 0], "direction": [0, 1, 0], "base_radius": 0.1, "height": 0.3},
     np.pi * 0.01 * 0.1),
    ({"kind": "torus", "ring_radius": 0.2, "cross_section_radius": 0.05}, 2 * np.pi ** 2 * 0.2 * 0.0025),
])
def test_primitive_volumes_and_winding(geom, volume):
    v, f = primitives.primitive_mesh(geom)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    signed = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6  # > 0: faces point outwards
    assert signed == pytest.approx(volume, rel=0.06)  # faceting loses a few per cent
