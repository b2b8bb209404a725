"""The add-on's settings, stored on the scene (``scene.kinevid``)."""
from __future__ import annotations

import bpy
from bpy.props import (BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty,
                       StringProperty)


class KinevidSceneSettings(bpy.types.PropertyGroup):
    result_path: StringProperty(
        name="Result", subtype="FILE_PATH",
        description="A kinevid result folder, or a .kvb motion file (kinevid export-blender)")
    import_meshes: BoolProperty(name="Bones' geometry", default=True)
    import_markers: BoolProperty(name="Model markers", default=True)
    import_experimental: BoolProperty(name="Measured markers", default=True)
    import_grf: BoolProperty(name="Ground forces", default=True)
    import_video: BoolProperty(name="Video background", default=True)
    grf_scale: FloatProperty(name="Arrow length (m per kN)", default=1.0, min=0.01, max=10.0)

    video_path: StringProperty(name="Video", subtype="FILE_PATH",
                               description="The video kinevid analyses")
    output_path: StringProperty(name="Output", subtype="DIR_PATH",
                                description="Result folder (empty: beside the video)")
    height: FloatProperty(name="Height", default=1.75, min=0.5, max=2.5, unit="LENGTH")
    mass: FloatProperty(name="Mass (kg)", default=70.0, min=10.0, max=300.0)
    sex: EnumProperty(name="Sex", items=[("m", "Male", ""), ("f", "Female", "")], default="m")

    # Progress of a kinevid run started from Blender (written by the modal operator).
    running: BoolProperty(default=False, options={"SKIP_SAVE"})
    progress: FloatProperty(name="Progress", subtype="PERCENTAGE", min=0, max=100, default=0,
                            options={"SKIP_SAVE"})
    status: StringProperty(default="", options={"SKIP_SAVE"})

    c3d_path: StringProperty(name="C3D", subtype="FILE_PATH", description="Lab markers (.c3d)")
    c3d_up: EnumProperty(name="Up axis", default="auto", items=[
        ("auto", "Auto", "Find the vertical axis from the markers"),
        ("+Z", "+Z", ""), ("+Y", "+Y", ""), ("+X", "+X", ""),
        ("-Z", "-Z", ""), ("-Y", "-Y", ""), ("-X", "-X", "")])

    bvh_path: StringProperty(name="BVH", subtype="FILE_PATH", default="//motion.bvh")
    bvh_scale: FloatProperty(name="Units per metre", default=1.0, min=0.001, max=1000.0,
                             description="1 = metres, 100 = centimetres")
    bvh_translations: BoolProperty(name="All joint translations", default=False,
                                   description="Position channels on every joint (exact motion, "
                                               "fewer programs read it)")
    retarget_mapping: StringProperty(
        name="Mapping", default="",
        description="Bone mapping: a Text datablock's name, or 'source=target; ...'. Empty: "
                    "matching names")
    frame_start: IntProperty(name="Start frame", default=1)


def register_properties():
    bpy.types.Scene.kinevid = PointerProperty(type=KinevidSceneSettings)


def unregister_properties():
    del bpy.types.Scene.kinevid
