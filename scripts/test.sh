#!/usr/bin/env bash
# Creates the environment if needed, then runs the whole test suite (what CI runs).
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh -m "not slow"   # quick loop; any pytest arguments work
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=$(bash "$ROOT/scripts/env.sh" | tail -1)
# One client env per CPython 3.9-3.13 for the cross-version tests (cached; seconds when warm).
bash "$ROOT/scripts/pyenvs.sh" >/dev/null
cd "$ROOT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false
# Bitwise-reproducible MKL GEMMs: tests compare a server's values with local ones exactly.
export MKL_CBWR=${MKL_CBWR:-AUTO,STRICT}
exec "$PY" -m pytest -p no:cacheprovider "$@"
