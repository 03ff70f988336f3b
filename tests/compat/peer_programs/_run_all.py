"""Runs peer programs in this one process and prints one JSON object: name -> result.

    python _run_all.py prog1.py prog2.py ...

A result is {"out": <the program's emitted dict>} or {"error": "<ExceptionType>: <message>"}.
Used by tests/compat/test_peer_programs.py with this package and with nnsight 0.8.1.
"""
import contextlib
import io
import json
import os
import runpy
import sys
import traceback
import warnings

MARK = "PEER-PROGRAM-OUTPUT "


def run_one(path):
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runpy.run_path(path, run_name="__main__")
    except BaseException as exc:  # noqa: BLE001 - a program's failure is its result
        tb = traceback.format_exc(limit=-3)
        return {"error": f"{type(exc).__name__}: {exc}"[:600], "traceback": tb[-1500:]}
    lines = [l for l in buffer.getvalue().splitlines() if l.startswith(MARK)]
    if not lines:
        return {"error": "NoOutput: the program emitted nothing"}
    return {"out": json.loads(lines[-1][len(MARK):])}


def main(paths):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    results = {os.path.basename(p): run_one(p) for p in paths}
    sys.stdout.write("\n" + MARK + json.dumps(results) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
