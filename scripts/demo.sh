#!/usr/bin/env bash
# Creates the environment if needed, then runs the demo on SmolLM2-135M.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=$(bash "$ROOT/scripts/env.sh" | tail -1)
cd "$ROOT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false
exec "$PY" -m nnsight.demo "$@"
