"""Client-side compile driver for the cross-version tests (runs on CPython 3.9-3.13, no torch).

Started once per client Python by the tests (``PYTHONPATH=<checkout> python client_driver.py``)
and kept running for the session. Protocol, one JSON object per line each way:

request::

    {"programs": [{"source": "...", "filename": "p1.py", "line": 7, "closure": false}, ...]}

reply::

    {"python": "3.9.18", "torch": false,
     "results": [{"ir": "<base64 IR binary>", "error": null}, ...]}

For each program, the with-block whose header is on ``line`` of ``source`` is lowered by
``compiler.frontend.lower``. With ``"closure": true`` the script's module-level code before the
with-statement (its helper functions and classes) is run in a fresh module and the program is
closed over by ``compiler.closure.close_program``, so helpers travel by value as Definitions;
``model`` is a stand-in recognised as the model's envoy and ``torch`` a stand-in module (the
client has no torch: the server provides it by name). ``torch`` in the reply tells whether torch
got imported (it must not be). An empty line or EOF ends the driver.
"""
import base64
import json
import linecache
import sys
import traceback
import types


class _Model(object):
    """Stands for the traced model on the client (duck-typed envoy, path ``model``)."""

    __nnsight_envoy_path__ = "model"


def _fake_torch():
    if "torch" in sys.modules:
        return sys.modules["torch"]
    mod = types.ModuleType("torch")
    mod.__path__ = []  # a package: "import torch.nn" style names resolve by name only
    sys.modules["torch"] = mod
    return mod


def compile_one(req):
    from compiler.frontend import lower
    from compiler.ir import encode

    source, filename, line = req["source"], req["filename"], req["line"]
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    program = lower(source, filename, line)
    if req.get("closure"):
        from compiler.closure import close_program

        # A real client runs the script, so CPython compiles all of it first: same here.
        compile(source, filename, "exec", dont_inherit=True)
        _fake_torch()
        modname = filename.rsplit("/", 1)[-1].rsplit(".", 1)[0]  # the script's module, "xv_<digest>"
        module = types.ModuleType(modname)
        module.__file__ = filename
        sys.modules[modname] = module
        prelude = "".join(source.splitlines(True)[: line - 1])
        exec(compile(prelude, filename, "exec"), module.__dict__)
        values = {}
        for b in program.bindings:
            if b.name in module.__dict__:
                values[b.name] = module.__dict__[b.name]
        values["model"] = _Model()
        closure = close_program(program, values, remote=True, frame_module=modname,
                                frame_globals=module.__dict__, global_names=list(values))
        program = closure.program
    return base64.b64encode(encode(program)).decode("ascii")


def main():
    sys.setrecursionlimit(10000)
    real_torch = "torch" in sys.modules
    for raw in sys.stdin:
        if not raw.strip():
            break
        request = json.loads(raw)
        results = []
        for req in request["programs"]:
            try:
                results.append({"ir": compile_one(req), "error": None})
            except Exception as e:  # reported per program; the driver keeps going
                results.append({"ir": None, "error": "%s: %s\n%s" % (
                    type(e).__name__, e, traceback.format_exc(limit=8))})
        torch = real_torch or getattr(sys.modules.get("torch"), "__file__", None) is not None
        reply = {"python": "%d.%d.%d" % sys.version_info[:3], "torch": torch, "results": results}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
