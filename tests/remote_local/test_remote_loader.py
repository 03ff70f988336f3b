"""The server side: user modules are blocked, and the policy is enforced again on load and at run time."""
import importlib
import sys
import textwrap

import pytest
import torch

from compiler.closure import close_program
from compiler.frontend import lower
from compiler.ir import decode, encode, parse_program, print_program
from compiler.ir.errors import IRDecodeError
from compiler.ir.request import (
    Request,
    decode_request,
    decode_result,
    encode_request,
    encode_result,
    print_request,
)
from nnsight.tracing.remote import LocalServer, model_key
from runtime.loader import LoadError, Loader, ServerImportError, ServerRefusal, block_user_modules


def request_for(model, x, body, values, remote=False):
    """A request for ``with model.trace(x): <body>``, closed WITHOUT the client's checks by default
    (what a modified client could send): the server must refuse on its own."""
    src = "with model.trace(x):\n" + textwrap.indent(textwrap.dedent(body), "    ")
    program = lower(src, "crafted.py", 1)
    closure = close_program(program, dict(values, model=model), remote=remote,
                            model_path=lambda o: "model" if o is model else None)
    args = closure.inputs
    from compiler.ir.values import encode_value

    return Request(closure.program, model_key(model), "trace", encode_value((x,)), encode_value({}))


def serve(model, request, key=None):
    server = LocalServer()
    server.host(key or request.model, model)
    reply = server.handle(encode_request(request))
    from compiler.ir.values import decode_value

    return decode_value(decode_result(reply))


# -- blocking ----------------------------------------------------------------------------------------


def test_block_user_modules_hides_and_restores(mm, mytools):
    import mytools.core

    with block_user_modules() as hidden:
        assert {"mymethods", "mytools", "mytools.core"} <= set(hidden)
        assert "mymethods" not in sys.modules and "torch" in sys.modules and "nnsight" in sys.modules
        with pytest.raises(ModuleNotFoundError, match="hides your own modules"):
            importlib.import_module("mymethods")
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module("mytools.helpers")
        importlib.import_module("json")  # server modules import as usual
        assert test_block_user_modules_hides_and_restores.__module__ not in sys.modules  # this test file too
    assert sys.modules["mymethods"] is mm and sys.modules["mytools.core"] is mytools.core


def test_a_reference_leak_fails_as_on_a_server(mlp, x, mm):
    """A value naming a user class by reference (as cloudpickle would) cannot be loaded on the server."""
    from compiler.ir.values import encode_value

    request = request_for(mlp, x, "out = stats.save()\n", {"stats": None})
    leaked = encode_value(mm.RunningStats())  # default classref: "mymethods:RunningStats"
    assert leaked[1] == "mymethods:RunningStats"
    program = request.program
    from dataclasses import replace

    from compiler.ir.nodes import Binding

    program = replace(program, bindings=tuple(
        Binding("stats", "value", leaked) if b.name == "stats" else b for b in program.bindings))
    with pytest.raises(IRDecodeError, match="mymethods"):
        serve(mlp, replace(request, program=program))
    import mymethods  # noqa: F401  (and the client is unaffected)


# -- the server enforces the policy itself -------------------------------------------------------------


def test_server_refuses_a_dangerous_module_binding(mlp, x):
    import os

    request = request_for(mlp, x, "out = (model.output * len(os.sep)).save()\n", {"os": os})
    assert request.program.binding("os").kind == "module"
    with pytest.raises(ServerImportError, match="module 'os' is not available on the server"):
        serve(mlp, request)


def test_server_refuses_an_installed_module_binding(mlp, x):
    import yaml

    request = request_for(mlp, x, "out = model.output.save()\nyaml.safe_load('a: 1')\n", {"yaml": yaml})
    with pytest.raises(ServerImportError, match="'yaml'"):
        serve(mlp, request)


def test_dangerous_builtins_refuse_at_run_time(mlp, x):
    request = request_for(mlp, x, "out = (model.output * eval('2')).save()\n", {})
    assert request.program.binding("eval").kind == "builtin"
    with pytest.raises(ServerRefusal, match=r"eval\(\) is not available on the server"):
        serve(mlp, request)
    request = request_for(mlp, x, "import subprocess\nout = model.output.save()\n", {})
    with pytest.raises(ServerImportError, match="subprocess"):
        serve(mlp, request)
    request = request_for(mlp, x, "from torch import hub\nout = model.output.save()\n", {})
    with pytest.raises(ServerImportError, match="torch.hub"):
        serve(mlp, request)


def test_dangerous_code_in_a_captured_function_refuses_at_run_time(mlp, x, badlib):
    request = request_for(mlp, x, "out = fn(model.output).save()\n", {"fn": badlib.copy_later})
    with pytest.raises(ServerImportError, match="shutil"):
        serve(mlp, request)


def test_a_clean_request_runs(mlp, x, mm):
    request = request_for(mlp, x, "out = normalize(model.output).save()\n", {"normalize": mm.normalize},
                          remote=True)
    out = serve(mlp, request)["out"]
    with mlp.trace(x):
        expected = mlp.output.save()
    assert torch.allclose(out, mm.normalize(expected))


def test_min_python_and_unknown_model_are_refused(mlp, x):
    from dataclasses import replace

    request = request_for(mlp, x, "out = model.output.save()\n", {})
    newer = replace(request, program=replace(request.program, header=replace(
        request.program.header, min_python=(3, 99), features=(("future syntax", 2),))))
    from runtime.gate import LanguageLevelError

    with pytest.raises(LanguageLevelError, match=r"Python 3\.99"):
        serve(mlp, newer)  # refused before anything is loaded
    with pytest.raises(LoadError, match="not hosted"):
        serve(mlp, replace(request, model="nnsight.modeling.base.NNsight:{}"), key=request.model)


def test_loader_refuses_by_value_modules_named_like_server_modules(mlp, x, mm):
    from dataclasses import replace

    request = request_for(mlp, x, "out = normalize(model.output).save()\n", {"normalize": mm.normalize},
                          remote=True)
    defs = tuple(replace(d, name="torch", module="torch") if d.kind == "module" else d
                 for d in request.program.definitions)
    with pytest.raises(LoadError, match="belongs to the server"):
        Loader(replace(request.program, definitions=defs))


# -- encodings ---------------------------------------------------------------------------------------


def test_request_and_result_encodings_round_trip(mlp, x, mm):
    request = request_for(mlp, x, "out = scale(model.output).save()\n", {"scale": mm.make_scaler(2.0)},
                          remote=True)
    data = encode_request(request)
    assert data[:4] == b"NNRQ" and encode_request(request) == data
    back = decode_request(data)
    assert back == request
    program = request.program
    assert parse_program(print_program(program)) == program  # kind=local, cells, attrs in text form
    assert decode(encode(program)) == program
    assert "kind=local" in print_request(request) and "  cell k value 2.0" in print_request(request)
    with pytest.raises(IRDecodeError):
        decode_request(b"NNIR" + data[4:])
    with pytest.raises(IRDecodeError):
        decode_request(data[:-5])
    reply = encode_result(["dict", ["a", 1]])
    assert decode_result(reply) == ["dict", ["a", 1]]
    with pytest.raises(IRDecodeError):
        decode_result(b"XXXX")
