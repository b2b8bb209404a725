"""kinevid for Blender: import kinevid/OpenSim motion, run kinevid on a video, export BVH and
retarget. Registration only; see operators.py, panels.py, properties.py, preferences.py, and the
pure modules (motion_file, c3d_reader, bvh_export, retarget, runner, primitives)."""

bl_info = {  # for installation as a legacy add-on; Blender 4.2+ reads blender_manifest.toml
    "name": "kinevid",
    "author": "kinevid developers",
    "version": (0, 1, 0),
    "blender": (4, 2, 0),
    "location": "3D Viewport > Sidebar > kinevid",
    "description": "Import kinevid and OpenSim motion, run kinevid on a video, export BVH and retarget",
    "category": "Animation",
}

if "operators" in locals():  # reloading scripts inside Blender
    import importlib

    for _m in (motion_file, c3d_reader, bvh_export, retarget, runner, primitives,  # noqa: F821
               scene_import, preferences, properties, operators, panels):  # noqa: F821
        importlib.reload(_m)

try:
    import bpy
except ImportError:  # outside Blender (tests): only the pure modules are importable
    bpy = None

if bpy is not None:
    from . import (bvh_export, c3d_reader, motion_file, operators, panels, preferences,
                   primitives, properties, retarget, runner, scene_import)

    classes = (
        preferences.KINEVID_AP_preferences,
        properties.KinevidSceneSettings,
        operators.KINEVID_OT_import_result,
        operators.KINEVID_OT_import_c3d,
        operators.KINEVID_OT_export_bvh,
        operators.KINEVID_OT_retarget,
        operators.KINEVID_OT_run,
        operators.KINEVID_OT_cancel_run,
        panels.KINEVID_PT_main,
        panels.KINEVID_PT_import_options,
        panels.KINEVID_PT_run,
        panels.KINEVID_PT_lab,
        panels.KINEVID_PT_animators,
    )


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    properties.register_properties()


def unregister():
    operators.cancel_all_runs()
    properties.unregister_properties()
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
