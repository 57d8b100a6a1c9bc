#!/usr/bin/env bash
# The device check of issue 25, as one command: benchmarks/gpu_check.sh OUT_DIR [--smoke] [flags]
#
# On the GPU machine (Python 3.12, jax 0.11 with CUDA): installs the wheels of gpu_wheels/
# (`make gpu-wheels` here; the device call carries that folder) into /tmp/flam_site without
# an index, then runs benchmarks/gpu_check.py, which writes OUT_DIR/gpu_check.json and
# OUT_DIR/gpu_check.md; the log goes to OUT_DIR/gpu_check.log. --smoke runs the same code
# on the CPU at tiny sizes (CI, tests/test_gpu_check.py). Further flags go to gpu_check.py
# (--sections, --budget, --scratch). PYTHON picks the interpreter (default python3).
set -euo pipefail

if [[ $# -lt 1 || $1 == -* ]]; then
    echo "usage: $0 OUT_DIR [--smoke] [--sections a,b] [--budget SECONDS] [--scratch DIR]" >&2
    exit 2
fi
out=$1
shift
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}
smoke=0
for arg in "$@"; do
    if [[ $arg == --smoke ]]; then smoke=1; fi
done
mkdir -p "$out"

if ((smoke)); then
    export JAX_PLATFORMS=cpu
    # Tiny programs: XLA:CPU's cheapest code generation compiles the step ~25 % faster.
    export XLA_FLAGS="--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
elif [[ -d $root/gpu_wheels ]]; then
    site=/tmp/flam_site
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" "$root"/gpu_wheels/*.whl
    export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
else
    echo "warning: no gpu_wheels/ (make gpu-wheels): using the interpreter's own packages" >&2
fi
export PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
# Several section processes share the GPU: each takes memory as it needs it.
export XLA_PYTHON_CLIENT_PREALLOCATE=false

set -o pipefail
"$python" "$root/benchmarks/gpu_check.py" "$out" "$@" 2>&1 | tee "$out/gpu_check.log"
