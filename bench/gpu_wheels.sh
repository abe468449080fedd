#!/usr/bin/env bash
# Download into .whl/ the wheels a GPU machine lacks for running yurt's local path.
#
# The GPU machines have Python 3.12 (x86_64) with torch, aiohttp, cloudpickle, uvloop, requests
# and nvidia-ml-py, but no network and none of the packages below. Run this once, here, with
# network, from the repository root; bench/gpu_check.sh installs .whl/*.whl into /tmp/site there.
#
#   bash bench/gpu_wheels.sh            # then carry .whl with the working tree
#
# Versions are those yurt is tested with; one version of each (two would stop the install).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
WHEELS=(
    pydantic==2.14.4
    pydantic-core==2.50.5
    annotated-types==0.8.0
    typing-inspection==0.4.5
    typing-extensions==4.16.0
    structlog==26.1.0
    tenacity==9.2.1
    httptools==0.9.0
    python-nomad==2.1.0
    py-consul==1.8.0
    prometheus-client==0.26.0
)

grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
rm -rf .whl
mkdir -p .whl
# --no-deps: each needed wheel is named above; requests, aiohttp and the rest are already there.
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 \
    -d .whl "${WHEELS[@]}"

ls -1 .whl
du -sh .whl
