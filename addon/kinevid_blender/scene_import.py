"""Building Blender data from a kinevid motion file (and lab C3D markers). Needs bpy.

The numbers come from the pure modules (motion_file, primitives, c3d_reader); this module only
creates datablocks and writes keyframes. Keys are written straight into F-curves with
``foreach_set`` (one call per channel) rather than ``keyframe_insert`` per frame, which is two
orders of magnitude faster for a whole motion.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix

from . import motion_file as mf
from .c3d_reader import lab_to_blender, read_c3d
from .primitives import geometry_matrix, primitive_mesh

__all__ = ["ImportOptions", "ImportResult", "import_motion", "import_c3d", "action_fcurves",
           "set_keys", "armature_bone_order"]

SOURCE_TAG = "kinevid_source"  # custom property on the armature object: the .kvb it came from


@dataclass
class ImportOptions:
    meshes: bool = True
    markers: bool = True
    experimental_markers: bool = True
    grf: bool = True
    video: bool = True
    coordinates: bool = True
    confidence: bool = True
    frame_start: int = 1
    grf_metres_per_newton: float = 0.001


@dataclass
class ImportResult:
    armature: object
    collection: object
    timing: mf.Timing
    n_frames: int
    objects: int
    warnings: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------ animation
def action_fcurves(id_data):
    """The F-curve collection to add channels to for ``id_data``: Blender 4.4+ keeps them in a
    slot's channelbag of a layered action; 4.2/4.3 on the action itself."""
    ad = id_data.animation_data or id_data.animation_data_create()
    if ad.action is None:
        ad.action = bpy.data.actions.new(name=f"{id_data.name}Action")
    action = ad.action
    if not hasattr(action, "slots"):
        return action.fcurves
    from bpy_extras import anim_utils

    if ad.action_slot is None:
        ad.action_slot = action.slots.new(id_type=id_data.id_type, name=id_data.name)
    return anim_utils.action_ensure_channelbag_for_slot(action, ad.action_slot).fcurves


def set_keys(fcurves, data_path: str, index: int, frames, values, group: str = "") -> None:
    """One F-curve with a key per (frame, value); NaN values are left out (a gap)."""
    frames = np.asarray(frames, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(values)
    if not ok.any():
        return
    fc = fcurves.find(data_path, index=index)
    if fc is not None:
        fcurves.remove(fc)
    try:
        fc = fcurves.new(data_path, index=index, group_name=group)
    except TypeError:  # the pre-4.4 Action.fcurves API
        fc = fcurves.new(data_path, index=index, action_group=group)
    co = np.column_stack([frames[ok], values[ok]]).ravel()
    fc.keyframe_points.add(int(ok.sum()))
    fc.keyframe_points.foreach_set("co", co)
    # Linear: every frame is keyed, and Bezier would overshoot between samples.
    interp = bpy.types.Keyframe.bl_rna.properties["interpolation"].enum_items["LINEAR"].value
    fc.keyframe_points.foreach_set("interpolation", [interp] * int(ok.sum()))
    fc.update()


def _key_vector(fcurves, path: str, frames, values, group: str = "") -> None:
    for i in range(values.shape[1]):
        set_keys(fcurves, path, i, frames, values[:, i], group)


# ------------------------------------------------------------------------------ helpers
def _collection(name: str, parent=None):
    col = bpy.data.collections.new(name)
    (parent or bpy.context.scene.collection).children.link(col)
    return col


def _material(cache: dict, colour, opacity: float):
    key = (tuple(round(float(c), 3) for c in colour), round(float(opacity), 3))
    if key not in cache:
        mat = bpy.data.materials.new(f"kinevid {key[0]}")
        mat.diffuse_color = (*key[0], key[1])
        cache[key] = mat
    return cache[key]


def _mesh_data(name: str, verts: np.ndarray, tris: np.ndarray):
    me = bpy.data.meshes.new(name)
    me.vertices.add(len(verts))
    me.vertices.foreach_set("co", np.asarray(verts, dtype=np.float32).ravel())
    me.loops.add(3 * len(tris))
    me.loops.foreach_set("vertex_index", np.asarray(tris, dtype=np.int32).ravel())
    me.polygons.add(len(tris))
    me.polygons.foreach_set("loop_start", np.arange(0, 3 * len(tris), 3, dtype=np.int32))
    me.update()
    me.validate(clean_customdata=False)
    return me


def armature_bone_order(arm_obj) -> list[str]:
    """Bone names of an armature, every parent before its children."""
    out: list[str] = []

    def visit(bone):
        out.append(bone.name)
        for c in bone.children:
            visit(c)

    for b in arm_obj.data.bones:
        if b.parent is None:
            visit(b)
    return out


def _np(m) -> np.ndarray:
    return np.array([list(r) for r in m], dtype=np.float64)


# ------------------------------------------------------------------------------ import
def import_motion(path, options: ImportOptions | None = None, context=None) -> ImportResult:
    """Build the armature, meshes, markers, GRF arrows and video background of a .kvb file and
    set the scene's frame range and rate from it."""
    options = options or ImportOptions()
    context = context or bpy.context
    scene = context.scene
    motion = mf.read_motion_file(path)
    warnings = list(motion.manifest.get("warnings") or [])
    name = motion.manifest.get("model_name") or Path(path).stem

    video = motion.video_path() if options.video else None
    clip = None
    if video is not None:
        clip = bpy.data.movieclips.load(str(video), check_existing=True)
    timing = mf.scene_timing(motion.time, motion.fps, options.frame_start,
                             video_fps=(clip.fps if clip is not None and clip.fps > 0 else None))
    scene.render.fps = timing.fps
    scene.render.fps_base = timing.fps_base
    scene.frame_start = timing.frame_start
    scene.frame_end = timing.frame_end
    scene["kinevid_time_origin"] = timing.time_origin
    frames = timing.key_frames

    col = _collection(f"kinevid {name}")
    # -- armature: rest pose = the first frame, each bone in its body's frame (see bone_offsets)
    arm_data = bpy.data.armatures.new(name)
    arm = bpy.data.objects.new(name, arm_data)
    col.objects.link(arm)
    arm.show_in_front = True
    arm[SOURCE_TAG] = str(Path(path).resolve())
    offsets, lengths = mf.bone_offsets(motion)
    bodies = mf.body_matrices(motion)                   # (F, B, 4, 4) world, Z-up
    bone_world = bodies @ offsets[None]                 # bone frames
    parents = [-1 if b.parent is None else motion.body_names.index(b.parent) for b in motion.bodies]
    view_layer = context.view_layer
    prev_active = view_layer.objects.active
    view_layer.objects.active = arm
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        for i, b in enumerate(motion.bodies):
            eb = arm_data.edit_bones.new(b.name)
            eb.head = (0.0, 0.0, 0.0)
            eb.tail = (0.0, float(lengths[i]), 0.0)
            eb.matrix = Matrix(bone_world[0, i].tolist())
            if parents[i] >= 0:
                eb.parent = arm_data.edit_bones[motion.bodies[parents[i]].name]
                eb.use_connect = False
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
    # The rest matrices as Blender stored them (float32, roll conventions), for exact posing.
    rest = np.stack([_np(arm_data.bones[b.name].matrix_local) for b in motion.bodies])
    basis = mf.pose_basis(bone_world, rest, parents)
    loc = basis[..., :3, 3]
    quat = mf.matrix_to_quat(basis[..., :3, :3])
    fcurves = action_fcurves(arm)
    for i, b in enumerate(motion.bodies):
        pb = arm.pose.bones[b.name]
        pb.rotation_mode = "QUATERNION"
        _key_vector(fcurves, f'pose.bones["{b.name}"].location', frames, loc[:, i], b.name)
        _key_vector(fcurves, f'pose.bones["{b.name}"].rotation_quaternion', frames, quat[:, i], b.name)

    # -- joint angles as animated custom properties (Graph Editor curves)
    if options.coordinates:
        for j, info in enumerate(motion.coordinate_info):
            cname = info["name"]
            arm[cname] = float(motion.coordinates[0, j])
            ui = arm.id_properties_ui(cname)
            rng = info.get("range") or [None, None]
            ui.update(description=f"{info.get('motion_type', '')} coordinate of joint "
                                  f"{info.get('joint', '')} ({info.get('unit', '')})",
                      **({"soft_min": float(rng[0]), "soft_max": float(rng[1])}
                         if None not in rng else {}))
            set_keys(fcurves, f'["{cname}"]', 0, frames, motion.coordinates[:, j], "coordinates")

    # -- per-joint confidence: a custom property per pose bone and the bone's colour
    conf = mf.body_confidence(motion) if options.confidence else None
    if conf is not None:
        for i, b in enumerate(motion.bodies):
            if not np.isfinite(conf[:, i]).any():
                continue
            pb = arm.pose.bones[b.name]
            pb["confidence"] = float(np.nanmean(conf[:, i]))
            set_keys(fcurves, f'pose.bones["{b.name}"]["confidence"]', 0, frames, conf[:, i], b.name)
            pb.color.palette = "CUSTOM"
            rgb = np.array([mf.confidence_colour(c) for c in conf[:, i]])
            _key_vector(fcurves, f'pose.bones["{b.name}"].color.custom.normal', frames, rgb, b.name)

    n_objects = 1
    # -- geometry, parented to bones
    if options.meshes:
        mats: dict = {}
        meshes: dict = {}
        for i, b in enumerate(motion.bodies):
            bone_from_body = np.linalg.inv(offsets[i])
            for g in b.geometry:
                if g.get("missing") or not g.get("visible", True) or g.get("representation") == "hide":
                    continue
                if g.get("kind") == "mesh":
                    if not g.get("mesh"):
                        continue
                    key = g["mesh"]
                    if key not in meshes:
                        meshes[key] = _mesh_data(key, *motion.mesh(key))
                else:
                    prim = primitive_mesh(g)
                    if prim is None:
                        continue
                    key = f"{g.get('kind')}:{g.get('name')}"
                    meshes[key] = _mesh_data(g.get("name") or g["kind"], *prim)
                obj = bpy.data.objects.new(g.get("name") or key, meshes[key])
                col.objects.link(obj)
                obj.parent = arm
                obj.parent_type = "BONE"
                obj.parent_bone = b.name
                obj.matrix_parent_inverse = Matrix.Identity(4)
                # A bone child hangs at the bone's tail: step back to the head, then into the
                # body frame, then to the geometry's own frame.
                back = np.eye(4)
                back[1, 3] = -arm_data.bones[b.name].length
                obj.matrix_basis = Matrix((back @ bone_from_body @ geometry_matrix(g)).tolist())
                obj.data.materials.append(_material(mats, g.get("color", (0.9, 0.9, 0.85)),
                                                    g.get("opacity", 1.0)))
                n_objects += 1

    # -- markers
    def marker_empties(title: str, names: list[str], xyz: np.ndarray, size: float, colour):
        nonlocal n_objects
        mcol = _collection(title, col)
        pts = xyz @ mf.TO_BLENDER.T
        for k, mname in enumerate(names):
            e = bpy.data.objects.new(mname, None)
            e.empty_display_type = "SPHERE"
            e.empty_display_size = size
            e.color = colour
            mcol.objects.link(e)
            _key_vector(action_fcurves(e), "location", frames, pts[:, k])
            n_objects += 1

    if options.markers and motion.array("model_markers") is not None:
        marker_empties("model markers", [m["name"] for m in motion.manifest.get("model_markers", [])],
                       motion.array("model_markers"), 0.012, (0.9, 0.2, 0.9, 1.0))
    if options.experimental_markers and motion.array("experimental_markers") is not None:
        marker_empties("experimental markers", list(motion.manifest.get("experimental_markers", [])),
                       motion.array("experimental_markers"), 0.015, (0.2, 0.6, 1.0, 1.0))

    # -- ground reaction forces: arrows at the centre of pressure
    force, point = motion.array("grf_force"), motion.array("grf_point")
    if options.grf and force is not None and point is not None:
        gcol = _collection("ground reaction forces", col)
        thr = float(motion.manifest.get("grf_threshold_n", 20.0))
        for k, plate in enumerate(motion.manifest.get("grf", [])):
            e = bpy.data.objects.new(f"GRF {plate.get('name', k)}", None)
            e.empty_display_type = "SINGLE_ARROW"
            e.empty_display_size = 1.0
            e.rotation_mode = "QUATERNION"
            gcol.objects.link(e)
            loc_k, quat_k, scale_k = mf.grf_arrows(force[:, k], point[:, k], thr,
                                                   options.grf_metres_per_newton)
            fc = action_fcurves(e)
            _key_vector(fc, "location", frames, loc_k)
            _key_vector(fc, "rotation_quaternion", frames, quat_k)
            _key_vector(fc, "scale", frames, scale_k)
            n_objects += 1

    # -- the source video as the camera's background, in sync
    if clip is not None:
        offset = float((motion.manifest.get("video") or {}).get("offset_s", 0.0))
        clip.frame_start = timing.clip_frame_start(offset)
        cam = scene.camera
        if cam is None:
            cam = bpy.data.objects.new("kinevid camera", bpy.data.cameras.new("kinevid camera"))
            col.objects.link(cam)
            scene.camera = cam
        cam.data.show_background_images = True
        bg = cam.data.background_images.new()
        bg.source = "MOVIE_CLIP"
        bg.clip = clip
        bg.alpha = 0.8
    elif options.video and motion.manifest.get("video"):
        warnings.append("the source video named in the motion file was not found")

    view_layer.objects.active = arm if prev_active is None else prev_active
    scene.frame_set(timing.frame_start)
    return ImportResult(arm, col, timing, motion.n_frames, n_objects, warnings)


def import_c3d(path, context=None, up: str = "auto", frame_start: int | None = None):
    """Lab markers of a C3D file as animated empties, on the scene's timeline (time 0 of the
    C3D at the motion time kinevid's import put at the scene's first frame). Returns
    (collection, markers, up axis used)."""
    context = context or bpy.context
    scene = context.scene
    c3d = read_c3d(path)
    pts = c3d.metres()
    matrix, up_used = lab_to_blender(pts, up)
    pts = pts @ matrix.T
    rate = scene.render.fps / scene.render.fps_base
    origin = float(scene.get("kinevid_time_origin", 0.0))
    start = scene.frame_start if frame_start is None else frame_start
    frames = start + (c3d.times - origin) * rate
    col = _collection(f"C3D {Path(path).stem}")
    for k, label in enumerate(c3d.labels):
        e = bpy.data.objects.new(label, None)
        e.empty_display_type = "PLAIN_AXES"
        e.empty_display_size = 0.02
        col.objects.link(e)
        _key_vector(action_fcurves(e), "location", frames, pts[:, k])
    return col, c3d, up_used
