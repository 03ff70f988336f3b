"""A reply is the server's word: it may bind only the names the trace body sets.

The client writes a result's saved variables into the caller's frame. A reply that names any other
variable (the model, an input, ``__builtins__``) is refused before anything is written, and the
caller's variables stay as they were. The server is the in-process one of ``remote='local'`` with
its answer replaced by hand-written result bytes.
"""
import pytest
import torch

from compiler.ir.errors import IRDecodeError
from compiler.ir.request import encode_result
from compiler.ir.values import encode_value
from nnsight.tracing import remote as remote_tracing


def _answer_with(monkeypatch, saved):
    reply = encode_result(encode_value(saved))
    monkeypatch.setattr(remote_tracing.LocalServer, "handle", lambda self, payload, local=None: reply)


@pytest.mark.parametrize("extra", ["model", "x", "__builtins__", "never_assigned"])
def test_a_reply_binding_a_name_the_body_never_set_is_refused_and_binds_nothing(mlp, monkeypatch, extra):
    model = mlp
    x = torch.randn(2, 8)
    original_x = x
    _answer_with(monkeypatch, {"out": 1, extra: "from the server"})
    with pytest.raises(IRDecodeError, match="binds %r, which this trace never assigns" % extra):
        with model.trace(x, remote="local"):
            out = model[0].output.save()
    assert model is mlp and x is original_x
    with pytest.raises(UnboundLocalError):
        out  # noqa: B018  (nothing of the reply was written)
    assert "never_assigned" not in locals() and "never_assigned" not in globals()


def test_a_reply_whose_keys_are_not_names_is_refused(mlp, monkeypatch):
    model = mlp
    _answer_with(monkeypatch, {"out": 1, 7: "seven"})
    with pytest.raises(IRDecodeError, match="binds 7"):
        with model.trace(torch.randn(2, 8), remote="local"):
            out = model[0].output.save()  # noqa: F841


def test_a_reply_binding_only_the_body_s_names_is_written_back(mlp, monkeypatch):
    model = mlp
    _answer_with(monkeypatch, {"out": "from the server"})
    with model.trace(torch.randn(2, 8), remote="local"):
        out = model[0].output.save()
    assert out == "from the server"
