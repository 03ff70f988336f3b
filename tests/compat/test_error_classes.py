"""The errors user code catches are nnsight 0.8's classes (or subclasses), importable where 0.8 has them."""
import transformers  # noqa: F401  (import before nnsight mounts `.save`)
import pytest
import torch

import nnsight
from nnsight import LanguageModel

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def gpt2(gpt2_path):
    return LanguageModel(gpt2_path, dispatch=True)


@pytest.mark.parametrize("how", ["method", "function"])
@pytest.mark.parametrize("caught", [RuntimeError, ValueError])
def test_save_outside_a_trace_is_both_runtime_and_value_error(caught, how):
    value = torch.ones(2)
    with pytest.raises(caught, match="outside of a trace"):
        value.save() if how == "method" else nnsight.save(value)


def test_out_of_order_error_is_importable_where_08_has_it_and_is_raised(gpt2):
    from nnsight.intervention.interleaver import OutOfOrderError as From08
    from runtime.errors import OutOfOrderError as Runtime

    assert From08 is nnsight.OutOfOrderError is Runtime
    with pytest.raises(From08, match="model.transformer.h.0.output"):
        with gpt2.trace("Hello world"):
            later = gpt2.transformer.h[1].output.save()
            earlier = gpt2.transformer.h[0].output.save()  # already went by
    # Caught inside the trace, the code after it goes on, as in plain Python.
    with gpt2.trace("Hello world"):
        later = gpt2.transformer.h[1].output.save()
        caught = False
        try:
            gpt2.transformer.h[0].output
        except From08:
            caught = True
        caught = nnsight.save(caught)
        logits = gpt2.lm_head.output.save()
    assert caught is True and logits.shape[:2] == later.shape[:2]


def test_early_stop_exception_is_importable_where_08_has_it():
    from nnsight.intervention.interleaver import EarlyStopException
    from runtime.errors import EarlyStopException as Runtime

    assert EarlyStopException is Runtime


def test_source_errors_are_source_not_available_and_value_error(gpt2):
    from nnsight.intervention.source import SourceNotAvailable

    assert issubclass(SourceNotAvailable, ValueError)
    attn = gpt2.transformer.h[0].attn
    with pytest.raises(SourceNotAvailable, match="within a trace"):
        attn.source.attention_interface_0.source  # recursive .source needs the running call
    with pytest.raises(SourceNotAvailable, match="outside of a trace"):
        attn.source.self_c_proj_0.output
    with pytest.raises(SourceNotAvailable, match="on a module"):
        with gpt2.trace("Hello"):
            attn.source.self_c_proj_0.source  # a submodule: use its own envoy's .source
    with pytest.raises(SourceNotAvailable, match="can't be traced into"):
        with gpt2.trace("Hello"):
            attn.source.attention_interface_0.source.torch_nn_functional_scaled_dot_product_attention_0.source
    with pytest.raises(ValueError):  # the same errors, caught as before
        attn.source.self_c_proj_0.output


def test_a_module_without_python_source_is_source_not_available():
    from nnsight.intervention.source import SourceNotAvailable

    class Compiled(torch.nn.Module):
        forward = staticmethod(torch.relu)  # a builtin: no Python source

    model = nnsight.NNsight(torch.nn.Sequential(Compiled()))
    with pytest.raises(SourceNotAvailable):
        model[0].source
