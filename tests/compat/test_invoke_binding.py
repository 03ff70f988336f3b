"""Each invoke sees the trace body's names as they were when its ``with`` was reached."""
import pytest
import torch

import nnsight
from nnsight import CONFIG, NNsight


@pytest.fixture
def model():
    torch.manual_seed(0)
    return NNsight(torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)))


XS = [torch.ones(1, 3), 2 * torch.ones(1, 3), 3 * torch.ones(1, 3)]


def test_loop_variable_has_each_iterations_value(model):
    with model.trace() as tracer:
        seen = nnsight.save([])
        for x in XS:
            with tracer.invoke(x):
                seen.append(x.sum().item())
    assert seen == [3.0, 6.0, 9.0]


def test_loop_variable_selects_each_invokes_module_and_rows(model):
    net = model._module
    with model.trace() as tracer:
        outs = nnsight.save([])
        for i, layer in enumerate([model[0], model[2]]):
            with tracer.invoke(XS[i]):
                outs.append((i, layer.output.clone()))
    expected0 = net[0](XS[0])
    expected1 = net(XS[1])
    assert [i for i, _ in outs] == [0, 1]
    torch.testing.assert_close(outs[0][1], expected0)
    torch.testing.assert_close(outs[1][1], expected1)


def test_name_rebound_between_invokes_keeps_each_invokes_value(model):
    net = model._module
    with model.trace() as tracer:
        scale = 2.0
        with tracer.invoke(XS[0]):
            first = (model[2].output * scale).save()
        scale = 10.0
        with tracer.invoke(XS[0]):
            second = (model[2].output * scale).save()
    torch.testing.assert_close(first, net(XS[0]) * 2.0)
    torch.testing.assert_close(second, net(XS[0]) * 10.0)


def test_values_set_by_one_invoke_are_still_shared_with_the_next(model):
    net = model._module
    assert CONFIG.APP.CROSS_INVOKER
    with model.trace() as tracer:
        with tracer.invoke(XS[0]):
            hidden = model[0].output
        with tracer.invoke(XS[1]):
            mixed = (model[2].output + hidden.sum()).save()
    torch.testing.assert_close(mixed, net(XS[1]) + net[0](XS[0]).sum())


def test_an_invoke_can_rebind_a_trace_body_name_for_itself(model):
    with model.trace() as tracer:
        seen = nnsight.save([])
        for x in XS[:2]:
            with tracer.invoke(x):
                x = x * 100
                _ = model[0].output
                seen.append(x.sum().item())
    assert seen == [300.0, 600.0]


def run_invoke(tracer, model, x, outs):
    with tracer.invoke(x):
        outs.append(model[2].output.save())


def test_invoke_opened_in_a_helper_function(model):
    net = model._module
    with model.trace() as tracer:
        outs = nnsight.save([])
        for x in XS[:2]:
            run_invoke(tracer, model, x, outs)
    assert len(outs) == 2
    for saved, x in zip(outs, XS[:2]):
        torch.testing.assert_close(saved, net(x))


def test_name_preset_by_the_body_and_set_by_an_invoke_flows_to_the_next(model):
    net = model._module
    with model.trace() as tracer:
        hidden = None
        with tracer.invoke(XS[0]):
            hidden = model[0].output
        with tracer.invoke(XS[1]):
            got = (model[2].output + hidden.sum()).save()
    torch.testing.assert_close(got, net(XS[1]) + net[0](XS[0]).sum())


def test_invokes_see_their_own_prompt_with_cross_invoker_off(model, monkeypatch):
    monkeypatch.setattr(CONFIG.APP, "CROSS_INVOKER", False)
    with model.trace() as tracer:
        seen = nnsight.save([])
        for x in XS[:2]:
            with tracer.invoke(x):
                seen.append(x.sum().item())
    assert seen == [3.0, 6.0]


def test_invoke_in_a_function_defined_in_the_trace_body(model):
    net = model._module
    with model.trace() as tracer:
        outs = nnsight.save([])

        def run_one(x):
            with tracer.invoke(x):
                outs.append(model[0].output)

        for x in XS[:2]:
            run_one(x)
    for saved, x in zip(outs, XS[:2]):
        torch.testing.assert_close(saved, net[0](x))


def test_comprehension_in_an_invoke_sees_the_invokes_value(model):
    with model.trace() as tracer:
        got = nnsight.save([])
        for k in [1, 2]:
            with tracer.invoke(XS[0]):
                got.append([k * j for j in range(3)])
    assert got == [[0, 1, 2], [0, 2, 4]]


def test_loop_variable_binding_under_remote_local(model):
    with model.trace(remote="local") as tracer:
        seen = nnsight.save([])
        for x in XS:
            with tracer.invoke(x):
                seen.append(x.sum().item())
    assert seen == [3.0, 6.0, 9.0]


@pytest.mark.parametrize("before", ["unbound", "other"])
@pytest.mark.parametrize("action", ["nothing", "rebind", "delete", "set_other_name"])
def test_one_binding_fast_path_matches_the_general_switch(before, action):
    """The one-binding switch leaves the namespace and the bindings as the general one does."""
    from runtime.mediator import Mediator

    def run(extra_binding: bool):
        ns = {} if before == "unbound" else {"x": "outer"}
        bindings = {"x": "mine", "pad": 0} if extra_binding else {"x": "mine"}
        mediator = Mediator(compile("pass", "<t>", "exec"), ns, bindings=bindings)
        seen = []

        def method(arg):
            seen.append(ns.get("x"))
            if action == "rebind":
                ns["x"] = "rebound"
            elif action == "delete":
                del ns["x"]
            elif action == "set_other_name":
                ns["y"] = 1
            return arg

        assert mediator._switch(None, method, "answer") == "answer"
        ns.pop("pad", None)
        bindings.pop("pad", None)
        return ns, bindings, seen

    assert run(extra_binding=False) == run(extra_binding=True)
