"""The Blender add-on's source (kinevid_blender/) and its zip builder (build.py)."""
