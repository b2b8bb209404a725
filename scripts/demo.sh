#!/usr/bin/env bash
# The main job, on a fresh machine: set up, then scale -> IK -> ID on OpenSim's Gait2354 walking
# trial from ../shared/data. Until video input exists this is kinevid's end-to-end run.
# Usage: bash scripts/demo.sh [OUT_DIR]   (default out/gait2354)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
out="${1:-$root/out/gait2354}"
data="$root/../shared/data/opensim-models/Pipelines/Gait2354_Simbody"
kv="$root/.venv/bin/kinevid"
"$kv" scale --setup "$data/subject01_Setup_Scale.xml" -o "$out/scale"
"$kv" ik --model "$out/scale/model_scaled.osim" --markers "$data/subject01_walk1.trc" \
  --setup "$data/subject01_Setup_IK.xml" --start 0.4 --end 1.6 -o "$out/ik"
"$kv" id --model "$out/scale/model_scaled.osim" --motion "$out/ik/ik.mot" \
  --grf "$data/subject01_walk1_grf.mot" --loads "$data/subject01_walk1_grf.xml" --lowpass 6 -o "$out/id"
echo "results in $out"
