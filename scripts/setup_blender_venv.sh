#!/usr/bin/env bash
# Create .venv-blender/ at the repository root: Blender as a Python module (bpy==5.0.1, which needs
# Python 3.11) with numpy<2 and pytest, for the add-on's headless tests (tests/blender/).
# It is a separate environment because bpy pins its own numpy and Python, and because the add-on
# must work with nothing of kinevid's environment (no torch, no OpenSim) - as inside Blender.
# Idempotent: a stamp holding this script's hash makes a re-run return at once; the Debian
# libraries bpy loads even headless (X11 client libraries, libGL/EGL for Workbench rendering) are
# installed only when one is missing, with one `apt-get update`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
PY="${PYTHON_BLENDER:-python3.11}"
venv="$root/.venv-blender"
stamp="$venv/.kinevid-blender-stamp"
want="$(sha256sum scripts/setup_blender_venv.sh | cut -d' ' -f1)"

debs=(libx11-6 libxrender1 libxfixes3 libxi6 libxkbcommon0 libsm6 libice6 libxext6 libxcb1
      libgl1 libegl1 libegl-mesa0 libgl1-mesa-dri)
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for d in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$d" 2>/dev/null | grep -q "install ok installed" || missing+=("$d")
  done
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "kinevid blender setup: installing ${missing[*]}"
  as_root=()
  [ "$(id -u)" -eq 0 ] || as_root=(sudo)
  "${as_root[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/python" ]; then
  echo "kinevid blender setup: .venv-blender is up to date"
  exit 0
fi
command -v "$PY" >/dev/null 2>&1 || { echo "kinevid blender setup: $PY not found (bpy 5.0 needs Python 3.11)" >&2; exit 1; }
case "$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" in
  3.11) ;;
  *) echo "kinevid blender setup: $PY is not Python 3.11 (bpy 5.0.1 wheels are cp311 only)" >&2; exit 1 ;;
esac
[ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip
"${pip[@]}" install -q "bpy==5.0.1" "numpy<2" "pytest>=8"
# bpy must import headless (this also catches a missing system library now, not in the tests).
"$venv/bin/python" -c "import bpy; print('kinevid blender setup: bpy', bpy.app.version_string)"
echo "$want" > "$stamp"
echo "kinevid blender setup: done ($venv)"
