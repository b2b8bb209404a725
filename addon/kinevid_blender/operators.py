"""Operators. Each one's work sits behind one error boundary (``_Reporting``): any failure reaches
the user through ``self.report({'ERROR'}, ...)`` and the operator is cancelled, never a
traceback in the console only."""
from __future__ import annotations

import traceback
from pathlib import Path

import bpy
import numpy as np
from bpy.props import BoolProperty, StringProperty

from . import motion_file as mf
from .bvh_export import write_bvh
from .preferences import get_preferences
from .retarget import match_bones, parse_mapping, retarget_pose
from .runner import KinevidProcess, RunnerError, find_kinevid, run_command
from .scene_import import (SOURCE_TAG, ImportOptions, action_fcurves, armature_bone_order,
                           import_c3d, import_motion, set_keys)

VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
_RUNS: dict[str, KinevidProcess] = {}  # scene name -> the kinevid run in progress


def default_output(video: Path) -> Path:
    return video.with_name(f"{video.stem}_kinevid")


def resolve_result(path_text: str) -> Path:
    """A .kvb file from what the user picked: the file, a result folder, or the video whose
    result folder (``<video>_kinevid``) sits beside it."""
    if not path_text:
        raise ValueError("choose a kinevid result folder, a .kvb file or a video first")
    p = Path(bpy.path.abspath(path_text))
    if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
        p = default_output(p)
    found = mf.find_result_file(p)
    if found is None:
        raise ValueError(f"{p}: no kinevid motion file (.kvb) found there")
    return found


class _Reporting:
    """The error boundary shared by the operators: subclasses implement ``run(context)``."""

    def execute(self, context):
        try:
            return self.run(context)
        except Exception as exc:  # the boundary: every failure becomes a report
            traceback.print_exc()
            self.report({"ERROR"}, f"kinevid: {exc}")
            return {"CANCELLED"}


class KINEVID_OT_import_result(_Reporting, bpy.types.Operator):
    """Import a kinevid result: armature, geometry, markers, ground forces, video"""
    bl_idname = "kinevid.import_result"
    bl_label = "Import kinevid result"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(name="File", subtype="FILE_PATH", default="",
                             description="Empty: the scene's kinevid result path")

    def run(self, context):
        s = context.scene.kinevid
        path = resolve_result(self.filepath or s.result_path)
        opts = ImportOptions(meshes=s.import_meshes, markers=s.import_markers,
                             experimental_markers=s.import_experimental, grf=s.import_grf,
                             video=s.import_video, frame_start=s.frame_start,
                             grf_metres_per_newton=s.grf_scale / 1000.0)
        res = import_motion(path, opts, context)
        for w in res.warnings[:3]:
            self.report({"WARNING"}, w)
        self.report({"INFO"}, f"kinevid: imported {res.n_frames} frames of {res.armature.name} "
                              f"at {res.timing.rate:g} fps")
        return {"FINISHED"}


class KINEVID_OT_import_c3d(_Reporting, bpy.types.Operator):
    """Import lab markers from a C3D file as animated empties, on the motion's timeline"""
    bl_idname = "kinevid.import_c3d"
    bl_label = "Import C3D markers"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(name="File", subtype="FILE_PATH", default="")

    def run(self, context):
        s = context.scene.kinevid
        path = Path(bpy.path.abspath(self.filepath or s.c3d_path))
        if not path.is_file():
            raise ValueError(f"{path}: C3D file not found")
        col, c3d, up = import_c3d(path, context, up=s.c3d_up)
        self.report({"INFO"}, f"kinevid: {len(c3d.labels)} markers, {c3d.n_frames} frames at "
                              f"{c3d.rate:g} Hz (up axis {up})")
        return {"FINISHED"}


def _kinevid_armature(context):
    obj = context.active_object
    if obj is not None and obj.type == "ARMATURE":
        return obj
    for o in context.scene.objects:
        if o.type == "ARMATURE" and SOURCE_TAG in o:
            return o
    raise ValueError("select an armature (import a kinevid result first)")


def sample_bones(context, arm, names: list[str]) -> np.ndarray:
    """World matrices (F, n, 4, 4) of ``names`` over the scene's frame range."""
    scene = context.scene
    frames = range(scene.frame_start, scene.frame_end + 1)
    out = np.empty((len(frames), len(names), 4, 4))
    current = scene.frame_current
    try:
        for f_i, f in enumerate(frames):
            scene.frame_set(f)
            mw = np.array(arm.matrix_world)
            for j, n in enumerate(names):
                out[f_i, j] = mw @ np.array(arm.pose.bones[n].matrix)
    finally:
        scene.frame_set(current)
    return out


class KINEVID_OT_export_bvh(_Reporting, bpy.types.Operator):
    """Export the armature's motion over the scene's frame range as BVH"""
    bl_idname = "kinevid.export_bvh"
    bl_label = "Export BVH"

    filepath: StringProperty(name="File", subtype="FILE_PATH", default="")

    def run(self, context):
        s = context.scene.kinevid
        arm = _kinevid_armature(context)
        path = Path(bpy.path.abspath(self.filepath or s.bvh_path))
        if path.suffix.lower() != ".bvh":
            path = path.with_suffix(".bvh")
        path.parent.mkdir(parents=True, exist_ok=True)
        names = armature_bone_order(arm)
        parents = [names.index(arm.data.bones[n].parent.name) if arm.data.bones[n].parent else -1
                   for n in names]
        world = sample_bones(context, arm, names)
        # BVH is Y-up (as OpenSim): back from Blender's Z-up.
        to_y_up = mf.TO_BLENDER.T
        rot = to_y_up @ world[..., :3, :3]
        pos = world[..., :3, 3] @ to_y_up.T
        tips = {n: np.array([0.0, arm.data.bones[n].length, 0.0]) for n in names}
        rate = context.scene.render.fps / context.scene.render.fps_base
        write_bvh(path, names, parents, rot, pos, 1.0 / rate, scale=s.bvh_scale,
                  translations=s.bvh_translations, end_sites=tips)
        self.report({"INFO"}, f"kinevid: wrote {path} ({world.shape[0]} frames)")
        return {"FINISHED"}


def _mapping_from(text: str) -> dict[str, str]:
    text = text.strip()
    if not text:
        return {}
    if text in bpy.data.texts:
        return parse_mapping(bpy.data.texts[text].as_string())
    return parse_mapping(text.replace(";", "\n"))


class KINEVID_OT_retarget(_Reporting, bpy.types.Operator):
    """Copy the kinevid armature's motion onto the active armature (matching bone names or the
    mapping)"""
    bl_idname = "kinevid.retarget"
    bl_label = "Retarget onto active armature"
    bl_options = {"REGISTER", "UNDO"}

    source: StringProperty(name="Source", default="",
                           description="The kinevid armature object (empty: the imported one)")

    def run(self, context):
        target = context.active_object
        if target is None or target.type != "ARMATURE":
            raise ValueError("make the armature to animate the active object")
        if self.source:
            source = bpy.data.objects.get(self.source)
        else:
            source = next((o for o in context.scene.objects
                           if o.type == "ARMATURE" and SOURCE_TAG in o and o is not target), None)
        if source is None or source.type != "ARMATURE":
            raise ValueError("no kinevid armature to take the motion from: import a result first")
        s_names = armature_bone_order(source)
        t_names = armature_bone_order(target)
        pairs_named = match_bones(s_names, t_names, _mapping_from(context.scene.kinevid.retarget_mapping))
        if not pairs_named:
            raise ValueError(f"no bone of {target.name} matches a bone of {source.name}: give a "
                             "mapping (source = target)")
        t_parents = [t_names.index(target.data.bones[n].parent.name) if target.data.bones[n].parent
                     else -1 for n in t_names]
        s_rest = np.stack([np.array(source.matrix_world) @ np.array(source.data.bones[n].matrix_local)
                           for n in s_names])
        t_rest = np.stack([np.array(target.data.bones[n].matrix_local) for n in t_names])
        s_pose = sample_bones(context, source, s_names)
        pairs = [(s_names.index(a), t_names.index(b)) for a, b in pairs_named.items()]
        basis = retarget_pose(s_rest, s_pose, t_rest, t_parents, np.array(target.matrix_world), pairs)
        scene = context.scene
        frames = np.arange(scene.frame_start, scene.frame_end + 1, dtype=float)
        fcurves = action_fcurves(target)
        for j, n in enumerate(t_names):
            pb = target.pose.bones[n]
            pb.rotation_mode = "QUATERNION"
            quat = mf.matrix_to_quat(basis[:, j, :3, :3])
            for i in range(3):
                set_keys(fcurves, f'pose.bones["{n}"].location', i, frames, basis[:, j, i, 3], n)
            for i in range(4):
                set_keys(fcurves, f'pose.bones["{n}"].rotation_quaternion', i, frames, quat[:, i], n)
        self.report({"INFO"}, f"kinevid: retargeted {len(pairs)} bones onto {target.name}")
        return {"FINISHED"}


class KINEVID_OT_run(bpy.types.Operator):
    """Run kinevid on the video (in the background) and import the result when done"""
    bl_idname = "kinevid.run"
    bl_label = "Run kinevid"

    wait: BoolProperty(default=False, options={"SKIP_SAVE", "HIDDEN"},
                       description="Block until done (scripts, background mode)")
    _timer = None

    def _start(self, context) -> KinevidProcess:
        s = context.scene.kinevid
        if context.scene.name in _RUNS and _RUNS[context.scene.name].running:
            raise RunnerError("kinevid is already running for this scene")
        video = Path(bpy.path.abspath(s.video_path))
        if not video.is_file():
            raise RunnerError(f"{video}: video not found")
        out = Path(bpy.path.abspath(s.output_path)) if s.output_path else default_output(video)
        prefs = get_preferences(context)
        exe = find_kinevid(prefs.kinevid_path if prefs is not None else "")
        proc = KinevidProcess(run_command(exe, video, out, s.height, s.mass, s.sex), out).start()
        _RUNS[context.scene.name] = proc
        s.running, s.progress, s.status = True, 0.0, "starting kinevid"
        return proc

    def execute(self, context):
        try:
            proc = self._start(context)
        except Exception as exc:
            self.report({"ERROR"}, f"kinevid: {exc}")
            return {"CANCELLED"}
        if self.wait or context.window is None:
            proc.wait()
            return self._finish(context, proc)
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.25, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        proc = _RUNS.get(context.scene.name)
        if proc is None:
            return self._end_modal(context, {"CANCELLED"})
        if event.type == "ESC":
            proc.cancel()
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        proc.poll()
        s = context.scene.kinevid
        if proc.progress is not None:
            s.progress = 100.0 * proc.progress.fraction
            s.status = f"{proc.progress.label}: {proc.progress.done}/{proc.progress.total} {proc.progress.unit}"
        for area in context.screen.areas if context.screen else ():
            if area.type == "VIEW_3D":
                area.tag_redraw()
        if proc.running:
            return {"RUNNING_MODAL"}
        return self._end_modal(context, self._finish(context, proc))

    def _end_modal(self, context, result):
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        return result

    def _finish(self, context, proc: KinevidProcess):
        s = context.scene.kinevid
        s.running = False
        _RUNS.pop(context.scene.name, None)
        status = proc.status
        if status == "cancelled":
            s.status = "cancelled"
            self.report({"WARNING"}, "kinevid: run cancelled")
            return {"CANCELLED"}
        if status != "done":
            s.status = "failed"
            self.report({"ERROR"}, f"kinevid: {proc.failure_message()}")
            return {"CANCELLED"}
        result = proc.result()
        if result is None:
            s.status = "no result"
            self.report({"ERROR"}, f"kinevid: finished, but no .kvb motion file in {proc.output}")
            return {"CANCELLED"}
        s.result_path = str(result)
        s.progress, s.status = 100.0, "done"
        try:
            import_motion(result, ImportOptions(frame_start=s.frame_start), context)
        except Exception as exc:
            traceback.print_exc()
            self.report({"ERROR"}, f"kinevid: {exc}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"kinevid: imported {result}")
        return {"FINISHED"}


class KINEVID_OT_cancel_run(_Reporting, bpy.types.Operator):
    """Stop the kinevid run in progress"""
    bl_idname = "kinevid.cancel_run"
    bl_label = "Cancel"

    def run(self, context):
        proc = _RUNS.get(context.scene.name)
        if proc is None or not proc.running:
            raise ValueError("no kinevid run in progress")
        proc.cancel()
        return {"FINISHED"}


def cancel_all_runs() -> None:
    """On unregister: no kinevid left running without a UI to stop it."""
    for proc in list(_RUNS.values()):
        proc.cancel()
    _RUNS.clear()


# Kept for scripts: keyed curves of any ID (e.g. tests building their own animation).
__all__ = ["KINEVID_OT_import_result", "KINEVID_OT_import_c3d", "KINEVID_OT_export_bvh",
           "KINEVID_OT_retarget", "KINEVID_OT_run", "KINEVID_OT_cancel_run", "resolve_result",
           "cancel_all_runs", "set_keys"]
