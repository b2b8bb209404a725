"""The "kinevid" tab of the 3D Viewport's sidebar."""
from __future__ import annotations

import bpy


class _Panel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "kinevid"


class KINEVID_PT_main(_Panel, bpy.types.Panel):
    bl_label = "kinevid"

    def draw(self, context):
        s = context.scene.kinevid
        col = self.layout.column(align=True)
        col.prop(s, "result_path")
        col.prop(s, "frame_start")
        col.operator("kinevid.import_result", icon="IMPORT")


class KINEVID_PT_import_options(_Panel, bpy.types.Panel):
    bl_label = "Import options"
    bl_parent_id = "KINEVID_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        s = context.scene.kinevid
        col = self.layout.column()
        for prop in ("import_meshes", "import_markers", "import_experimental", "import_grf",
                     "import_video", "grf_scale"):
            col.prop(s, prop)


class KINEVID_PT_run(_Panel, bpy.types.Panel):
    bl_label = "Run on a video"
    bl_parent_id = "KINEVID_PT_main"

    def draw(self, context):
        s = context.scene.kinevid
        col = self.layout.column(align=True)
        col.prop(s, "video_path")
        col.prop(s, "output_path")
        row = col.row(align=True)
        row.prop(s, "height")
        row.prop(s, "mass")
        col.prop(s, "sex", expand=True)
        if s.running:
            col.progress(factor=s.progress / 100.0, text=s.status or "running")
            col.operator("kinevid.cancel_run", icon="CANCEL")
        else:
            if s.status:
                col.label(text=f"last run: {s.status}")
            col.operator("kinevid.run", icon="PLAY")


class KINEVID_PT_lab(_Panel, bpy.types.Panel):
    bl_label = "Lab markers (C3D)"
    bl_parent_id = "KINEVID_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        s = context.scene.kinevid
        col = self.layout.column(align=True)
        col.prop(s, "c3d_path")
        col.prop(s, "c3d_up")
        col.operator("kinevid.import_c3d", icon="EMPTY_AXIS")


class KINEVID_PT_animators(_Panel, bpy.types.Panel):
    bl_label = "BVH and retarget"
    bl_parent_id = "KINEVID_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        s = context.scene.kinevid
        col = self.layout.column(align=True)
        col.prop(s, "bvh_path")
        col.prop(s, "bvh_scale")
        col.prop(s, "bvh_translations")
        col.operator("kinevid.export_bvh", icon="EXPORT")
        col.separator()
        col.prop(s, "retarget_mapping")
        col.operator("kinevid.retarget", icon="ARMATURE_DATA")
