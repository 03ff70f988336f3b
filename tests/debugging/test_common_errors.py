"""One test per common error a new user commonly makes: its message, and a traceback that ends at the user's line.

The messages must stay at least as helpful as the ones quoted in the design;
``scripts/errors.py`` renders the same errors for the golden files.
"""
import sys
import traceback

import pytest
import torch

from compiler.frontend import SourceNotFoundError, WithBlockNotFoundError
from dbg_helpers import assert_clean, frames, normalise
from nnsight import MissedProviderError, NNsight, OutOfOrderError
from nnsight.tracing import tracebacks

HERE = "<ROOT>/tests/debugging/test_common_errors.py"


def make_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


class WithUnused(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = make_net()
        self.unused = torch.nn.Linear(4, 4)

    def forward(self, x):
        return self.body(x)


@pytest.fixture
def net():
    return make_net()


@pytest.fixture
def model(net):
    return NNsight(net)


@pytest.fixture
def x():
    torch.manual_seed(1)
    return torch.randn(2, 4)


def rendered(info) -> str:
    exc = info.value
    text = normalise("".join(traceback.format_exception(type(exc), exc, tracebacks.for_display(exc))))
    assert_clean(text)
    return text


def last_frame(info):
    return frames(rendered(info))[-1]


def test_out_of_order(model, x):
    with pytest.raises(OutOfOrderError) as info:
        with model.trace(x):
            later = model[2].output
            earlier = model[0].output  # noqa: F841
    msg = str(info.value)
    assert msg.startswith("Value was missed for model.0.output.i0. Did you call an Envoy out of order?")
    assert "forward-pass order" in msg
    assert last_frame(info)[0::3] == (HERE, "earlier = model[0].output  # noqa: F841")


def test_dangling_mediator_module_never_called(x):
    model = NNsight(WithUnused())
    with pytest.raises(MissedProviderError) as info:
        with model.trace(x):
            out = model.unused.output  # noqa: F841
    assert isinstance(info.value, ValueError)
    msg = str(info.value)
    assert msg.startswith("Execution complete but `model.unused.output.i0` was not provided. "
                          "Did you call an Envoy out of order?")
    assert "Investigate why this module was not called" in msg
    assert last_frame(info)[3] == "out = model.unused.output  # noqa: F841"


def test_dangling_mediator_gradients_out_of_order(model, x):
    with pytest.raises(ValueError) as info:
        with model.trace(x):
            first = model[0].output
            last = model[2].output
            loss = last.sum()
            with loss.backward():
                grad_first = first.grad  # noqa: F841
                grad_last = last.grad  # noqa: F841
    msg = str(info.value)
    assert msg.startswith("Execution complete but `")
    assert ".grad.i0` was not provided" in msg
    assert "reverse order of the forward pass" in msg and "id()" in msg
    got = frames(rendered(info))
    assert [f[3] for f in got[-3:]] == ["with model.trace(x):", "with loss.backward():",
                                        "grad_last = last.grad  # noqa: F841"]


def test_no_input(model):
    with pytest.raises(ValueError) as info:
        with model.trace():
            out = model[0].output.save()  # noqa: F841
    msg = str(info.value)
    assert "Cannot return output of Envoy `model.0` that is not interleaving nor has a fake output set" in msg
    assert "with model.trace(input):" in msg
    assert last_frame(info)[3] == "out = model[0].output.save()  # noqa: F841"


def test_empty_invokes_without_any_input(model):
    with pytest.raises(ValueError) as info:
        with model.trace() as tracer:
            with tracer.invoke():
                out = model[0].output.save()  # noqa: F841
    assert "The trace has no input" in str(info.value)
    assert last_frame(info)[3] == "with model.trace() as tracer:"


def test_nonexistent_module_shows_the_model(model, net, x):
    with pytest.raises(AttributeError) as info:
        with model.trace(x):
            out = model.fake_layer.output.save()  # noqa: F841
    msg = str(info.value)
    assert msg == "Sequential at `model` has no attribute 'fake_layer'. Its submodules: 0, 1, 2. " \
                  "`print(model)` shows the module tree."
    assert last_frame(info)[3] == "out = model.fake_layer.output.save()  # noqa: F841"


def test_nested_invoke(model, x):
    with pytest.raises(ValueError) as info:
        with model.trace() as tracer:
            with tracer.invoke(x):
                with tracer.invoke(x):
                    out = model[0].output  # noqa: F841
    assert str(info.value).startswith("Cannot invoke during an active model execution / interleaving.")
    got = frames(rendered(info))
    assert [f[3] for f in got[-3:]] == ["with model.trace() as tracer:", "with tracer.invoke(x):",
                                        "with tracer.invoke(x):"]
    assert got[-1][1] == got[-2][1] + 1


def test_output_inside_backward(model, x):
    with pytest.raises(ValueError) as info:
        with model.trace(x):
            hidden = model[0].output  # noqa: F841
            loss = model.output.sum()
            with loss.backward():
                other = model[2].output  # noqa: F841
    assert str(info.value).startswith(
        "Cannot request `model.2.output.i0` in a backwards tracer. You can only request `.grad`. "
        "Please define your Tensors before the Backwards Tracer")
    assert last_frame(info)[3] == "other = model[2].output  # noqa: F841"


def test_with_block_not_found(model, x):
    tracer = model.trace(x)
    with pytest.raises(WithBlockNotFoundError) as info:
        tracer.__enter__()
    line = sys._getframe().f_lineno - 1
    msg = str(info.value)
    assert msg.startswith("With block not found at line %d" % line)
    assert "We looked here:" in msg
    assert "%d |         tracer.__enter__()    <--- HERE" % line in msg
    assert "tracer = model.trace(x)" in msg  # context above
    assert last_frame(info)[1:] == (line, "test_with_block_not_found", "tracer.__enter__()")


def test_source_not_found(model, x):
    code = compile("with model.trace(x):\n    out = model[0].output\n", "<generated>", "exec")
    with pytest.raises(SourceNotFoundError) as info:
        exec(code, {"model": model, "x": x})
    msg = str(info.value)
    assert "Could not find the source code of <generated> (line 1)" in msg
    assert "linecache.cache['<generated>']" in msg
    assert last_frame(info)[0:2] == ("<generated>", 1)


def test_invoke_outside_a_trace(model, x):
    invoker = model.trace().invoke(x)
    with pytest.raises(RuntimeError) as info:
        invoker.__enter__()
    assert "`tracer.invoke(...)` must be used as a with-statement inside a trace block" in str(info.value)
