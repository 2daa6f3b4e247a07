#!/usr/bin/env bash
# The GPU suite (benchmarks/gpu_suite.py): run from anywhere; uses $PYTHON or python3, installs nothing.
#   benchmarks/gpu_suite.sh [--emulate] [--out DIR] [--budget SECONDS]     (see --help)
set -u
cd "$(dirname "$0")/.." || exit 2
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" benchmarks/gpu_suite.py "$@"
