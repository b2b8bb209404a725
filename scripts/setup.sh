#!/usr/bin/env bash
# Create .venv/ at the repository root and install everything kinevid and its tests need.
# Idempotent: a stamp file holding the hash of this script and pyproject.toml makes a re-run
# with nothing changed return in well under a second.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# Blender's headless test environment (bpy==5.0.1 needs numpy<2, so it lives in .venv-blender);
# it has its own stamp and returns at once when up to date.
bash "$root/scripts/setup_blender_venv.sh"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
venv="$root/.venv"
stamp="$venv/.kinevid-setup-stamp"
want="$(cat scripts/setup.sh pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/kinevid" ]; then
  echo "kinevid setup: .venv is up to date"
  exit 0
fi
[ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip
# torch==2.13.0 pinned exactly: pip then takes the CPU wheel on this machine's disk instead of
# downloading a multi-GB CUDA build.
"${pip[@]}" install -q "torch==2.13.0"
"${pip[@]}" install -q "numpy>=2.1,<3" "scipy>=1.13" "opensim==4.6" "c3d==0.6.0" "ezc3d" "av>=12" \
  "matplotlib>=3.8" "pytest>=8" "pytest-xdist" "hypothesis" "defusedxml" "tomli-w"
# mediapipe 0.10.21 carries the BlazePose weights in its wheel and works with numpy 2, but its
# metadata pins numpy<2: install it without dependencies, then the few it needs at run time.
# (Newer mediapipe releases dropped the `solutions` API kinevid uses.)
"${pip[@]}" install -q --no-deps "mediapipe==0.10.21"
"${pip[@]}" install -q "absl-py" "attrs>=19.1" "flatbuffers>=2.0" "protobuf>=4.25.3,<5" \
  "opencv-python-headless>=4.10" "sentencepiece"
"${pip[@]}" install -q --no-deps -e .
echo "$want" > "$stamp"
echo "kinevid setup: done ($venv)"
