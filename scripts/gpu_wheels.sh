#!/usr/bin/env bash
# Collect, on a machine with network access, the wheels that the offline GPU image lacks, for
# scripts/gpu_check.sh to install there without a network.
#
# Usage: scripts/gpu_wheels.sh [DEST]          DEST defaults to .whl (git-ignored)
#        PRINT_ONLY=1 scripts/gpu_wheels.sh     print the pip commands, download nothing
#
# The image (Python 3.12, torch 2.11 cu130, lightning, triton, einops, safetensors,
# huggingface_hub, numpy, scipy, scikit-learn, matplotlib, pyyaml, rich) lacks:
#   * nothing the GPU tests need for sure: the image we checked has pytest 9.1.1, but not among
#     its listed packages, so pytest and its own dependencies pluggy and iniconfig come along
#     (pygments and packaging come with rich and lightning);
#   * hydra-core, omegaconf, antlr4-python3-runtime: the configs, so that neurofound's command
#     line and config tests import there too.
# The GPU tests (tests/nn) and scripts/bench_mfu.py need nothing else beyond the image
# (tests/test_gpu_check.py checks that they import without hydra, pynwb, mne, brian2, datasets).
# Versions are those of the development venv (`pip show NAME`).
set -euo pipefail

DEST="${1:-.whl}"

# Pure-Python packages published as wheels.
WHEELS=(
    pytest==9.2.0
    pluggy==1.7.0
    iniconfig==2.3.1
    hydra-core==1.3.8
    omegaconf==2.3.1
)
# Pure-Python packages published as source only: built into a py3-none-any wheel here.
SDISTS=(
    antlr4-python3-runtime==4.9.3  # what omegaconf 2.3 and hydra 1.3 pin
)

download=(
    python3 -m pip download --no-deps --only-binary=:all:
    --python-version 3.12 --implementation cp
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
    --platform manylinux2014_x86_64 --platform any
    -d "$DEST" "${WHEELS[@]}"
)
build=(python3 -m pip wheel --no-deps --no-binary=:all: -w "$DEST" "${SDISTS[@]}")

if [[ "${PRINT_ONLY:-0}" == 1 ]]; then
    printf '%q ' "${download[@]}"; echo
    printf '%q ' "${build[@]}"; echo
    exit 0
fi

mkdir -p "$DEST"
"${download[@]}"
"${build[@]}"
echo "Wheels in $DEST:"
ls -1 "$DEST"/*.whl
