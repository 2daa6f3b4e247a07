#!/usr/bin/env bash
# Copy the golden data of the real Caffe (with the full-width M6R6 case, ~34 MB) and golden_check.py
# from ../shared into .gpu_data/ (git-ignored), so that a device call can carry them:
#   benchmarks/gpu_data.sh [SHARED_DIR]      (default: ../shared next to this checkout)
# The device tool carries at most 64 MiB (checkout + carried folders): this leaves ~25 MiB for the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${1:-../shared}"
if [ ! -f "$shared/golden/index.json" ] || [ ! -f "$shared/tools/golden_check.py" ]; then
  echo "gpu_data.sh: $shared/golden/index.json or $shared/tools/golden_check.py is missing" >&2
  exit 1
fi
rm -rf .gpu_data
mkdir -p .gpu_data
cp -r "$shared/golden" .gpu_data/golden
cp "$shared/tools/golden_check.py" .gpu_data/golden_check.py
chmod -R u+w .gpu_data
echo "gpu_data.sh: .gpu_data holds $(du -sh .gpu_data | cut -f1) ($(ls .gpu_data/golden | wc -l) golden files + golden_check.py)"
