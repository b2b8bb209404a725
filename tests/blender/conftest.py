"""Headless Blender tests: they need ``bpy`` (the .venv-blender environment made by
scripts/setup_blender_venv.sh). tests/test_addon_blender.py runs them there; in kinevid's own
environment (no bpy) they are not collected, and that runner test fails instead if
.venv-blender is missing."""
try:
    import bpy  # noqa: F401
except ImportError:
    collect_ignore_glob = ["test_*.py"]
