"""Add-on preferences: where the user's kinevid is."""
from __future__ import annotations

import bpy
from bpy.props import StringProperty


class KINEVID_AP_preferences(bpy.types.AddonPreferences):
    # The root package's name: "kinevid_blender" as a legacy add-on,
    # "bl_ext.<repo>.kinevid_blender" as an extension.
    bl_idname = __package__

    kinevid_path: StringProperty(
        name="kinevid",
        description="The kinevid executable, or the virtual environment it is installed in. "
                    "Empty: kinevid on PATH",
        subtype="FILE_PATH", default="")

    def draw(self, context):
        self.layout.prop(self, "kinevid_path")
        self.layout.label(text="kinevid runs outside Blender: Blender needs neither OpenSim nor torch.")


def get_preferences(context) -> KINEVID_AP_preferences | None:
    addon = context.preferences.addons.get(__package__)
    return addon.preferences if addon is not None else None
