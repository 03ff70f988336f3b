#!/usr/bin/env bash
# Creates the environment if needed, then runs the demo on SmolLM2-135M; it ends by hosting the
# same model with nnsight-server on loopback (a free port, --no-auth, a temporary data directory)
# and sending the prediction trace to it with remote=True: the same numbers as the local run.
# NNSIGHT_PYTHON=/path/to/python uses that environment as it is (no env.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${NNSIGHT_PYTHON:-$(bash "$ROOT/scripts/env.sh" | tail -1)}
cd "$ROOT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false
# MKL GEMMs bit-for-bit reproducible, so the remote run equals the local one exactly.
export MKL_CBWR=${MKL_CBWR:-AUTO,STRICT}
"$PY" -m nnsight.demo "$@"

# -- the same trace on a server -----------------------------------------------------------------
DATA=$(mktemp -d)
SERVER_PID=
stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$DATA"
}
trap stop_server EXIT
trap 'exit 130' INT TERM

MODEL=$("$PY" -c "from nnsight.testing.smollm2 import smollm2_path; print(smollm2_path())")
PORT=$("$PY" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
echo
echo "5. Hosting the same model: nnsight-server serve --model smollm2=$MODEL --port $PORT --no-auth"
"$PY" -m runtime.server serve --model "smollm2=$MODEL" --host 127.0.0.1 --port "$PORT" --no-auth \
  --data-dir "$DATA" >"$DATA/server.log" 2>&1 &
SERVER_PID=$!
"$PY" - "$PORT" "$SERVER_PID" "$DATA/server.log" <<'PYEOF'
import os, sys, time
import httpx
port, pid, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("nnsight-server exited:\n" + open(log).read()[-3000:])
    try:
        if httpx.get("http://127.0.0.1:%s/ping" % port, timeout=1).status_code == 200:
            sys.exit(0)
    except httpx.TransportError:
        pass
    time.sleep(0.2)
sys.exit("nnsight-server did not answer in 120 s:\n" + open(log).read()[-3000:])
PYEOF
"$PY" -m nnsight.demo --remote "127.0.0.1:$PORT"
