#!/usr/bin/env bash
# GPU check: the probe, a torch App's cold start and its matmul throughput through the router.
#
# Runs as it is on a GPU machine without network, from the repository root, in about a minute
# (well under 5): wheels from bench/gpu_wheels.sh in .whl/ go to /tmp/site, src/ goes on the
# path, and bench/gpu_check.py measures (its docstring says what). Everything it prints also
# goes to $OUT/gpu_check.txt when $OUT is set. Exit 0: measured; 1: no GPU found (or a failure).
#
#   bash bench/gpu_check.sh              # on the GPU machine (carry .whl)
#   bash bench/gpu_check.sh --dry-run    # anywhere: a CPU App, to check the plumbing
#
# PYTHON picks the interpreter (default python3: on the GPU machines, the one with torch).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

PYTHON=${PYTHON:-python3}
REPORT=/dev/null
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT" && REPORT="$OUT/gpu_check.txt"
fi

run() {
    echo "== gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) in $PWD (git $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
    if "$PYTHON" -c 'import pydantic, structlog, tenacity, httptools, nomad, consul' 2>/dev/null; then
        echo "$PYTHON already has yurt's packages"
    elif compgen -G ".whl/*.whl" >/dev/null; then
        echo "installing $(ls .whl/*.whl | wc -l) wheels from .whl/ into /tmp/site"
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl || return 1
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
    export PYTHONUNBUFFERED=1
    # The whole check stays well inside 5 minutes, whatever hangs.
    timeout -k 10 270 "$PYTHON" bench/gpu_check.py "$@"
}

run "$@" 2>&1 | tee "$REPORT"
