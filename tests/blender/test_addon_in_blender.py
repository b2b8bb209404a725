"""The add-on inside Blender (bpy 5.0 as a module, headless): install the zip, enable, import a
kinevid result, check it against OpenSim's forward kinematics, import a C3D, export BVH,
retarget, render, disable. Inputs come from tests/test_addon_blender.py through a JSON file
named by KINEVID_BLENDER_INPUT (paths, the model's body count, frame count, and OpenSim body
positions computed in kinevid's environment)."""
from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import bpy
import numpy as np
import pytest
from mathutils import Matrix

CLASS_NAMES = ["KINEVID_AP_preferences", "KinevidSceneSettings", "KINEVID_OT_import_result",
               "KINEVID_OT_import_c3d", "KINEVID_OT_export_bvh", "KINEVID_OT_retarget",
               "KINEVID_OT_run", "KINEVID_OT_cancel_run", "KINEVID_PT_main",
               "KINEVID_PT_import_options", "KINEVID_PT_run", "KINEVID_PT_lab",
               "KINEVID_PT_animators"]
TO_BLENDER = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def inputs():
    path = os.environ.get("KINEVID_BLENDER_INPUT")
    if not path:
        pytest.fail("KINEVID_BLENDER_INPUT is not set: run these tests through "
                    "tests/test_addon_blender.py")
    return json.loads(Path(path).read_text())


@pytest.fixture(scope="module")
def addon(inputs):
    """Install the zip as an extension into a temporary user repository, enabled; yields the
    add-on's package; disables, uninstalls and checks nothing is left afterwards."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    repo_dir = tempfile.mkdtemp(prefix="kinevid_ext_")
    prefs = bpy.context.preferences
    repo = prefs.extensions.repos.new(name="kinevid_test", module="kinevid_test",
                                      custom_directory=repo_dir, source="USER")
    t0 = time.perf_counter()
    result = bpy.ops.extensions.package_install_files(filepath=inputs["zip"], repo=repo.module,
                                                      enable_on_install=True)
    TIMINGS["install_enable_s"] = time.perf_counter() - t0
    assert result == {"FINISHED"}
    module = f"bl_ext.{repo.module}.kinevid_blender"
    assert module in prefs.addons, [a.module for a in prefs.addons]
    pkg = importlib.import_module(module)
    yield pkg
    bpy.ops.preferences.addon_disable(module=module)
    leftovers = [n for n in CLASS_NAMES if hasattr(bpy.types, n)]
    assert leftovers == [], f"classes left registered after disable: {leftovers}"
    assert not hasattr(bpy.types.Scene, "kinevid")
    assert module not in prefs.addons
    prefs.extensions.repos.remove(repo)
    shutil.rmtree(repo_dir, ignore_errors=True)
    Path(inputs["artifacts"], "timings.json").write_text(json.dumps(TIMINGS, indent=1))


@pytest.fixture(scope="module")
def imported(addon, inputs):
    scene = bpy.context.scene
    assert hasattr(scene, "kinevid")
    t0 = time.perf_counter()
    result = bpy.ops.kinevid.import_result(filepath=inputs["kvb"])
    TIMINGS["import_s"] = time.perf_counter() - t0
    assert result == {"FINISHED"}
    arm = next(o for o in scene.objects if o.type == "ARMATURE" and "kinevid_source" in o)
    return arm


def test_armature_matches_model(imported, inputs):
    arm = imported
    assert len(arm.data.bones) == inputs["body_count"]
    names = {b.name for b in arm.data.bones}
    assert names == set(inputs["parents"])
    for child, parent in inputs["parents"].items():
        bone = arm.data.bones[child]
        assert (bone.parent.name if bone.parent else "ground") == parent


def test_animation_length_and_rate(imported, inputs):
    scene = bpy.context.scene
    assert scene.frame_end - scene.frame_start + 1 == inputs["frame_count"]
    assert abs(scene.render.fps / scene.render.fps_base - inputs["rate"]) < 1e-3
    action = imported.animation_data.action
    lo, hi = action.frame_range
    assert round(hi - lo) + 1 == inputs["frame_count"]


def test_bones_follow_opensim_forward_kinematics(imported, inputs):
    """Every body origin at the chosen frames, from the posed armature, against OpenSim's
    Body.getPositionInGround computed independently in kinevid's environment: within 1 mm."""
    scene = bpy.context.scene
    worst = 0.0
    for case in inputs["fk"]:
        scene.frame_set(scene.frame_start + case["frame"])
        for body, pos in case["bodies"].items():
            head = np.array(imported.matrix_world @ imported.pose.bones[body].head)
            err = np.linalg.norm(head - TO_BLENDER @ np.array(pos))
            worst = max(worst, err)
            assert err < 1e-3, f"{body} at frame {case['frame']}: {1000 * err:.3f} mm"
    TIMINGS["fk_worst_mm"] = 1000 * worst


def test_joint_angles_are_animated_properties(imported, inputs):
    scene = bpy.context.scene
    name, frame, value = inputs["coordinate_check"]
    scene.frame_set(scene.frame_start + frame)
    assert abs(imported[name] - value) < 1e-3


def test_meshes_markers_and_forces(imported, inputs):
    meshes = [o for o in imported.children if o.type == "MESH"]
    assert len(meshes) == inputs["geometry_count"]
    assert all(o.parent_type == "BONE" for o in meshes)
    col = imported.users_collection[0]
    model_markers = col.children["model markers"].objects
    assert len(model_markers) == inputs["marker_count"]
    # a model marker's position at a frame equals the file's forward kinematics
    scene = bpy.context.scene
    name, frame, pos = inputs["marker_check"]
    scene.frame_set(scene.frame_start + frame)
    got = np.array(model_markers[name].matrix_world.translation)
    assert np.linalg.norm(got - TO_BLENDER @ np.array(pos)) < 1e-4
    arrows = col.children["ground reaction forces"].objects
    assert len(arrows) == inputs["grf_count"]


def test_c3d_import(addon, inputs):
    t0 = time.perf_counter()
    assert bpy.ops.kinevid.import_c3d(filepath=inputs["c3d"]["path"]) == {"FINISHED"}
    TIMINGS["c3d_import_s"] = time.perf_counter() - t0
    col = bpy.data.collections[f"C3D {Path(inputs['c3d']['path']).stem}"]
    assert len(col.objects) == inputs["c3d"]["markers"]
    # a marker's position at a frame: the file's value (read by ezc3d in kinevid's
    # environment), in metres, turned to Z-up, at the scene frame of its time
    scene = bpy.context.scene
    label, frame_index, xyz_mm = inputs["c3d"]["check"]
    obj = col.objects[label]
    rate = scene.render.fps / scene.render.fps_base
    t = inputs["c3d"]["times"][frame_index]
    f = scene.frame_start + (t - scene.get("kinevid_time_origin", 0.0)) * rate
    fcurves = addon.scene_import.action_fcurves(obj)
    got = np.array([fcurves.find("location", index=i).evaluate(f) for i in range(3)])
    pts = addon.c3d_reader.read_c3d(inputs["c3d"]["path"]).metres()
    rot, up = addon.c3d_reader.lab_to_blender(pts)
    assert up == inputs["c3d"]["up"]
    assert np.linalg.norm(got - rot @ (np.array(xyz_mm) / 1000.0)) < 1e-5


def test_bvh_export_reads_back(imported, inputs, addon):
    bvh = addon.bvh_export
    out = Path(inputs["artifacts"]) / "motion.bvh"
    scene = bpy.context.scene
    bpy.context.view_layer.objects.active = imported
    scene.kinevid.bvh_translations = True
    assert bpy.ops.kinevid.export_bvh(filepath=str(out)) == {"FINISHED"}
    data = bvh.read_bvh(out)
    assert data.n_frames == inputs["frame_count"]
    assert sorted(data.names) == sorted(inputs["parents"])
    assert abs(1 / data.frame_time - inputs["rate"]) < 1e-3
    rot, pos = bvh.bvh_world(data)
    case = inputs["fk"][0]
    for body, p in case["bodies"].items():
        j = data.names.index(body)
        assert np.linalg.norm(pos[case["frame"], j] - np.array(p)) < 1e-3, body
    # default: rotations only below the root, still the same joint count and frames
    scene.kinevid.bvh_translations = False
    out2 = Path(inputs["artifacts"]) / "motion_rotations.bvh"
    assert bpy.ops.kinevid.export_bvh(filepath=str(out2)) == {"FINISHED"}
    data2 = bvh.read_bvh(out2)
    assert data2.n_frames == data.n_frames and data2.names == data.names
    assert sum(len(c) for c in data2.channels) == 6 + 3 * (len(data2.names) - 1)


def test_retarget_onto_renamed_armature(imported, addon):
    """A second rig with other bone names (a mapping gives them) and other bone axes (every
    bone vertical) takes the motion: each mapped bone turns as its source bone does."""
    scene = bpy.context.scene
    src = imported
    names = [b.name for b in src.data.bones]
    data = bpy.data.armatures.new("target")
    tgt = bpy.data.objects.new("target", data)
    scene.collection.objects.link(tgt)
    bpy.context.view_layer.objects.active = tgt
    scene.frame_set(scene.frame_start)
    bpy.ops.object.mode_set(mode="EDIT")
    for b in src.data.bones:
        eb = data.edit_bones.new("T_" + b.name)
        head = b.head_local
        eb.head = head
        eb.tail = (head[0], head[1], head[2] + 0.1)
    for b in src.data.bones:
        if b.parent:
            data.edit_bones["T_" + b.name].parent = data.edit_bones["T_" + b.parent.name]
    bpy.ops.object.mode_set(mode="OBJECT")
    scene.kinevid.retarget_mapping = "; ".join(f"{n} = T_{n}" for n in names)
    assert bpy.ops.kinevid.retarget(source=src.name) == {"FINISHED"}
    frame = scene.frame_start + 30
    scene.frame_set(frame)
    for n in names:
        s_rest = np.array(src.data.bones[n].matrix_local)[:3, :3]
        t_rest = np.array(tgt.data.bones["T_" + n].matrix_local)[:3, :3]
        s_now = np.array(src.pose.bones[n].matrix)[:3, :3]
        t_now = np.array(tgt.pose.bones["T_" + n].matrix)[:3, :3]
        assert np.abs(t_now - s_now @ s_rest.T @ t_rest).max() < 1e-4, n
    root = next(b.name for b in src.data.bones if b.parent is None)
    assert np.linalg.norm(np.array(tgt.pose.bones["T_" + root].head)
                          - np.array(src.pose.bones[root].head)) < 1e-4


def test_operator_errors_are_reported(addon):
    """A bad path is reported (RuntimeError from bpy.ops carries the report), not a traceback
    inside Blender only."""
    with pytest.raises(RuntimeError, match="kinevid: .*no kinevid motion file"):
        bpy.ops.kinevid.import_result(filepath=tempfile.mkdtemp())


def test_render_workbench_png(imported, inputs):
    scene = bpy.context.scene
    scene.frame_set(scene.frame_start + inputs["fk"][0]["frame"])
    heads = np.array([imported.matrix_world @ pb.head for pb in imported.pose.bones])
    centre = heads.mean(axis=0)
    cam_data = bpy.data.cameras.new("test camera")
    cam_data.lens = 35
    cam = bpy.data.objects.new("test camera", cam_data)
    scene.collection.objects.link(cam)
    # side view: from -Y looking along +Y, at the body's height
    cam.matrix_world = Matrix.Translation((centre[0], centre[1] - 3.2, 0.9)) @ \
        Matrix.Rotation(np.pi / 2, 4, "X")
    scene.camera = cam
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.display.shading.color_type = "MATERIAL"
    scene.render.resolution_x, scene.render.resolution_y = 480, 640
    scene.render.resolution_percentage = 100
    out = Path(inputs["artifacts"]) / "kinevid_blender_render.png"
    scene.render.filepath = str(out)
    t0 = time.perf_counter()
    bpy.ops.render.render(write_still=True)
    TIMINGS["render_s"] = time.perf_counter() - t0
    assert out.is_file()
    img = bpy.data.images.load(str(out))
    px = np.array(img.pixels[:]).reshape(img.size[1], img.size[0], 4)[..., :3]
    # the body is lighter than Workbench's grey background, and covers a fair area
    background = np.median(px[:10, :10].reshape(-1, 3), axis=0)
    differs = np.abs(px - background).sum(axis=-1) > 0.15
    assert differs.mean() > 0.01, f"rendered image shows almost nothing ({differs.mean():.4f})"
