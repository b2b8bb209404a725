#!/usr/bin/env bash
# The main job, on a fresh machine: set up, then `kinevid run` on a real video from
# ../shared/data (Pose2Sim's demo, camera 1: 1080x1920, 60 fps, 100 frames; subject 1.72 m,
# 70 kg), offline: 2D pose (BlazePose) -> 3D lift -> scaled model -> IK -> estimated ground forces
# and ID -> C3D and the Blender file. Then the OpenSim core alone on OpenSim's Gait2354 lab trial
# (scale -> IK -> ID from markers and force plates).
# Usage: bash scripts/demo.sh [OUT_DIR]   (default out/)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
out="${1:-$root/out}"
data="$root/../shared/data"
kv="$root/.venv/bin/kinevid"

"$kv" run "$data/pose2sim/Pose2Sim/Demo_SinglePerson/videos/cam01.mp4" --height 1.72 --mass 70 \
  -o "$out/video_cam01"

lab="$data/opensim-models/Pipelines/Gait2354_Simbody"
"$kv" scale --setup "$lab/subject01_Setup_Scale.xml" \
  --model "$data/opensim-models/Models/Gait2354_Simbody/gait2354_simbody.osim" -o "$out/gait2354/scale"
"$kv" ik --model "$out/gait2354/scale/model_scaled.osim" --markers "$lab/subject01_walk1.trc" \
  --setup "$lab/subject01_Setup_IK.xml" --start 0.4 --end 1.6 -o "$out/gait2354/ik"
"$kv" id --model "$out/gait2354/scale/model_scaled.osim" --motion "$out/gait2354/ik/ik.mot" \
  --grf "$lab/subject01_walk1_grf.mot" --loads "$lab/subject01_walk1_grf.xml" --lowpass 6 \
  -o "$out/gait2354/id"
echo "results in $out"
