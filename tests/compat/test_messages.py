"""Day-one mistakes get messages that say how to fix them; envoys are truthy."""
import pytest
import torch

from nnsight import CONFIG, LanguageModel, NNsight


@pytest.fixture
def model():
    torch.manual_seed(0)
    return NNsight(torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)))


@pytest.fixture(scope="module")
def gpt2(gpt2_path):
    return LanguageModel(gpt2_path)


def test_every_envoy_is_truthy(model, gpt2):
    assert model[1]  # a leaf module (no children) used to be falsy
    assert gpt2.lm_head and gpt2.transformer.h[0].mlp.act
    taken = "yes" if model[0] else "no"
    assert taken == "yes"


def test_misspelled_envoy_attribute_suggests_the_name(gpt2):
    with pytest.raises(AttributeError) as info:
        gpt2.transformer.h[0].atn
    message = str(info.value)
    assert "Did you mean 'attn'?" in message
    assert "model.transformer.h.0" in message
    assert "GPT2Block" in message and "c_attn" not in message  # not the whole module tree
    with pytest.raises(AttributeError, match="Did you mean 'lm_head'"):
        gpt2.lm_haed


def test_misspelled_attribute_inside_a_trace(gpt2):
    with pytest.raises(AttributeError, match="Did you mean 'transformer'"):
        with gpt2.trace("Hello"):
            gpt2.transfomer.h[0].output.save()


def test_value_used_after_the_trace_without_save_says_to_save(model):
    x = torch.ones(1, 3)
    with model.trace(x):
        hidden = model[0].output
    with pytest.raises(NameError, match=r"`hidden` was set inside the trace at .*test_messages.py:\d+ "
                                        r"but not saved.*`hidden = \.\.\.\.save\(\)`"):
        print(hidden)
    with pytest.raises(NameError, match="not saved"):
        hidden.shape


def test_unsaved_name_does_not_replace_an_existing_variable(model):
    hidden = "before"
    with model.trace(torch.ones(1, 3)):
        hidden = model[0].output
    assert hidden == "before"


def test_name_set_in_another_invoke_hints_at_barrier(model):
    x = torch.ones(1, 3)
    with pytest.raises(NameError, match=r"`clean` is set in another invoke .*tracer\.barrier\(2\)"):
        with model.trace() as tracer:
            with tracer.invoke(x):
                clean = model[0].output
            with tracer.invoke(x):
                model[0].output = clean


def test_barrier_fixes_it(model):
    x = torch.ones(1, 3)
    with model.trace() as tracer:
        barrier = tracer.barrier(2)
        with tracer.invoke(x):
            clean = model[0].output
            barrier()
        with tracer.invoke(2 * x):
            barrier()
            model[0].output = clean
            patched = model[2].output.save()
    net = model._module
    torch.testing.assert_close(patched, net[2](net[1](net[0](x))))


def test_name_from_another_invoke_with_cross_invoker_off(model, monkeypatch):
    monkeypatch.setattr(CONFIG.APP, "CROSS_INVOKER", False)
    x = torch.ones(1, 3)
    with pytest.raises(NameError, match="CROSS_INVOKER is False"):
        with model.trace() as tracer:
            with tracer.invoke(x):
                first = model[0].output
            with tracer.invoke(x):
                second = model[2].output + first


def test_name_the_failing_invoke_sets_itself_is_an_ordinary_name_error(model):
    with pytest.raises(NameError) as info:
        with model.trace() as tracer:
            with tracer.invoke(torch.ones(1, 3)):
                total = total + model[0].output  # noqa: F821 - the user's own mistake
    assert "another invoke" not in str(info.value)
