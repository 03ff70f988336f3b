#!/usr/bin/env bash
# Creates (once) one small client virtualenv per CPython version for the cross-version tests,
# and prints "VERSION PYTHON" for each usable one on stdout (one per line).
#   bash scripts/pyenvs.sh               # 3.9 3.10 3.11 3.12 3.13
#   bash scripts/pyenvs.sh 3.9 3.13      # only these
#
# Each env (default ~/.cache/nnsight-dev/py3X, override the folder with NNSIGHT_PYENVS) holds
# the compiler's dependencies (pyproject's [project].dependencies: libcst, msgpack, the pinned
# zstandard) plus hypothesis and pytest, and the remote client's httpx and websockets, installed
# from wheels only. The project is NOT
# installed: run it with PYTHONPATH=<checkout>, so any fresh clone works with the same envs.
# An env is rebuilt only when its stamp (the requirements, the interpreter, RECIPE below)
# changes: bump RECIPE when the way an env is built changes. Envs are built in parallel.
#
# 3.11: the project's main environment (scripts/env.sh, NNSIGHT_VENV) is reused when it exists
# and already has the compiler's dependencies; otherwise a py311 env is made like the others.
#
# Interpreters come from pyenv (${PYENV_ROOT:-~/.pyenv}/versions/3.X.*, newest patch) or from
# python3.X on PATH. A version with no interpreter is reported on stderr as
# "pyenvs.sh: MISSING 3.X (...)" and left out of stdout; any other failure exits non-zero.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${NNSIGHT_PYENVS:-$HOME/.cache/nnsight-dev}
MAIN_VENV=${NNSIGHT_VENV:-$HOME/.cache/nnsight-dev/venv311}
VERSIONS=("$@")
[ ${#VERSIONS[@]} -gt 0 ] || VERSIONS=(3.9 3.10 3.11 3.12 3.13)
EXTRA_REQS=("hypothesis>=6" "pytest>=8" "httpx" "websockets")  # + the remote client's (tests/server)
RECIPE=2

find_python() {  # newest pyenv 3.X.Y, else python3.X on PATH
  local v=$1 root=${PYENV_ROOT:-$HOME/.pyenv} best=""
  best=$(ls -d "$root"/versions/"$v".[0-9]* 2>/dev/null | grep -E "/$v\.[0-9]+$" | sort -V | tail -1 || true)
  if [ -n "$best" ] && [ -x "$best/bin/python" ]; then echo "$best/bin/python"; return; fi
  command -v "python$v" 2>/dev/null || true
}

# The compiler's runtime requirements, read from pyproject.toml (works on any Python 3).
compiler_reqs() {
  "$1" - "$ROOT/pyproject.toml" <<'PYEOF'
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
project = text.split("[project]", 1)[1]
block = re.search(r"^dependencies\s*=\s*\[(.*?)^\]", project, re.S | re.M).group(1)
for req in re.findall(r'"([^"]+)"', block):
    print(req)
PYEOF
}

setup_one() {  # setup_one VERSION BASE_PYTHON -> prints the env's python on stdout
  local v=$1 base=$2 venv="$DIR/py${1//./}"
  local reqs; mapfile -t reqs < <(compiler_reqs "$base")
  local want
  want=$( { printf '%s\n' "${reqs[@]}" "${EXTRA_REQS[@]}"; "$base" -c "import sys; print(sys.version)";
            echo "recipe $RECIPE"; } | sha256sum | cut -c1-16)
  if [ "$(cat "$venv/.stamp" 2>/dev/null || true)" != "$want" ]; then
    echo "pyenvs.sh: preparing $venv (one-time)" >&2
    rm -rf "$venv"
    "$base" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --only-binary :all: \
      "${reqs[@]}" "${EXTRA_REQS[@]}" >&2
    "$venv/bin/python" -c "import libcst, msgpack, zstandard, hypothesis, pytest, httpx, websockets" >&2
    echo "$want" > "$venv/.stamp"
  fi
  echo "$venv/bin/python"
}

main_venv_ok() {
  [ -x "$MAIN_VENV/bin/python" ] &&
    "$MAIN_VENV/bin/python" -c "import sys, libcst, msgpack, zstandard; assert sys.version_info[:2] == (3, 11)" 2>/dev/null
}

mkdir -p "$DIR"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pids=()
for v in "${VERSIONS[@]}"; do
  if [ "$v" = 3.11 ] && main_venv_ok; then
    echo "$MAIN_VENV/bin/python" > "$tmp/$v.out"
    continue
  fi
  base=$(find_python "$v")
  if [ -z "$base" ]; then
    echo "pyenvs.sh: MISSING $v (no ${PYENV_ROOT:-~/.pyenv}/versions/$v.* and no python$v on PATH; install it with: pyenv install $v)" >&2
    continue
  fi
  ( setup_one "$v" "$base" > "$tmp/$v.out" 2> "$tmp/$v.err" ) &
  pids+=("$!:$v")
done
failed=0
for entry in "${pids[@]}"; do
  pid=${entry%%:*}; v=${entry#*:}
  if ! wait "$pid"; then
    echo "pyenvs.sh: FAILED to prepare the $v environment:" >&2
    sed 's/^/    /' "$tmp/$v.err" >&2
    failed=1
  else
    grep -v "^WARNING: Location" "$tmp/$v.err" >&2 || true
  fi
done
[ "$failed" = 0 ] || exit 1
for v in "${VERSIONS[@]}"; do
  [ -s "$tmp/$v.out" ] && echo "$v $(tail -1 "$tmp/$v.out")"
done
exit 0
