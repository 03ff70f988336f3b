"""remote='local': user code from a module that is not installed runs as on a server.

Every trace here runs twice -- locally and with remote='local' -- and must give
the same saved values; remote='local' must also show only what a server sends
back (saved values), never the server's changes to the client's objects.
"""
import pytest
import torch

import nnsight
from compiler.ir.request import decode_request, print_request


def same(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.allclose(a, b, atol=1e-6)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(p, q) for p, q in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


# -- the seeds' scenario ------------------------------------------------------------------------


def test_imported_function_on_gpt2(gpt2, mm):
    """The seeds' test_imported_function, with ``normalize`` from a module that is not installed."""
    normalize = mm.normalize

    def run(remote):
        with gpt2.trace("Hello", remote=remote) as tracer:
            hidden = gpt2.transformer.h[0].output[0]
            normed = normalize(hidden)
            result = normed.save()
        return result, tracer

    local, _ = run(None)
    result, tracer = run("local")
    norms = result.norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    assert torch.allclose(result, local, atol=1e-6)
    text = print_request(decode_request(tracer.remote_payload))
    assert 'binding normalize function' in text and "def normalize(x, dim=-1, eps=EPS):" in text
    assert 'request model "nnsight.modeling.language.LanguageModel:' in text


def test_running_stats_and_probe_state_stays_on_the_server(mlp, x, mm):
    """Server-side changes (a probe's optimizer step, RunningStats.count) come back only as saved values."""
    stats = mm.RunningStats()
    probe = mm.Probe(8)
    before = probe.linear.weight.detach().clone()
    with mlp.trace(x, remote="local"):
        h = mlp[1].output
        stats.add(h)
        stats.add(h * 2)
        count = nnsight.save(stats.count)
        mean = stats.mean.save()
        opt = torch.optim.SGD(probe.parameters(), lr=0.5)
        loss = (probe(h.detach()) - 1.0).pow(2).mean()
        loss.backward()
        opt.step()
        weight = probe.linear.weight.detach().clone().save()
        server_stats = stats.save()
        server_probe = probe.save()
    assert count == 2 and stats.count == 0 and stats.mean is None  # the client's object is untouched
    assert type(server_stats) is mm.RunningStats and server_stats.count == 2
    assert torch.allclose(mean, server_stats.mean)
    assert not torch.equal(weight, before) and torch.equal(probe.linear.weight, before)
    assert type(server_probe) is mm.Probe and torch.equal(server_probe.linear.weight.detach(), weight)

    # the same code run locally changes the client's objects (that's the difference a server makes)
    with mlp.trace(x):
        h = mlp[1].output
        stats.add(h)
        opt = torch.optim.SGD(probe.parameters(), lr=0.5)
        (probe(h.detach()) - 1.0).pow(2).mean().backward()
        opt.step()
    assert stats.count == 1 and torch.allclose(probe.linear.weight, weight)


def test_results_equal_local_trace(mlp, x, mm):
    cfg = mm.SteerConfig(layer=1, scale=0.5, tags=["a"])
    vector = torch.linspace(-1, 1, 8)

    def run(remote):
        with mlp.trace(x, remote=remote):
            h = mlp[cfg.layer].output
            mlp[cfg.layer].output = mm.steer(h, vector, cfg)
            pooled = mm.pool(mm.noisy(mlp[3].output), mm.Mode.MAX).save()  # noisy() logs to a module logger
            out = mlp.output.save()
        return pooled, out

    assert same(run(None), run("local"))


# -- closures, lambdas, recursion, decorators ---------------------------------------------------------


def test_closures_and_lambdas(mlp, x, mm):
    scale3 = mm.make_scaler(3.0)
    plus, times = mm.make_ops(2.0)  # two closures made on one line
    local_pair = (lambda t: t - 0.5, lambda t: t * 0.25)  # two lambdas on one line, in this test

    def run(remote):
        with mlp.trace(x, remote=remote):
            h = mlp[1].output
            a = scale3(h).save()
            b = plus(h).save()
            c = times(h).save()
            d = mm.add_one(h).save()
            e = mm.times_two(h).save()
            f = [op(h) for op in mm.OPS]
            g = [add(h) for add in mm.ADDERS]
            k = [op(h) for op in local_pair]
            res = (f, g, k)
            res = nnsight.save(res)
        return a, b, c, d, e, res

    local, remote = run(None), run("local")
    assert same(local, remote)
    h = local[0] / 3.0
    assert torch.allclose(remote[1], h + 2) and torch.allclose(remote[2], h * 2)
    assert torch.allclose(remote[5][2][0], h - 0.5) and torch.allclose(remote[5][2][1], h * 0.25)
    assert torch.allclose(remote[5][1][2], h + 2)  # the lambda's own default (i=2) travelled


def test_stateful_closure_keeps_its_state(mlp, x, mm):
    tick = mm.make_counter()
    tick(torch.zeros(1))
    tick(torch.zeros(1))  # the cell now holds count == 2
    with mlp.trace(x, remote="local"):
        first = tick(torch.zeros(1)).save()
        second = tick(torch.zeros(1)).save()
    assert first.item() == 3 and second.item() == 4  # nonlocal writes work on the server
    assert tick(torch.zeros(1)).item() == 3  # and stay there


def test_recursion_and_mutual_recursion(mlp, x, mm):
    fact, is_even = mm.fact, mm.is_even
    with mlp.trace(x, remote="local"):
        n = fact(5)
        flags = [is_even(k) for k in range(5)]
        out = (mlp.output * n).save()
        flags = nnsight.save(flags)
    assert flags == [True, False, True, False, True]
    with mlp.trace(x):
        expected = (mlp.output * 120).save()
    assert torch.allclose(out, expected)


def test_decorators_are_rerun_from_source(mlp, x, mm):
    calls_before = mm.clamp_norm.calls

    def run(remote):
        with mlp.trace(x, remote=remote):
            h = mlp[1].output
            a = mm.clamp_norm(h, limit=0.5).save()
            b = mm.shifted(h).save()
            c = mm.from_registry("center", h).save()
            calls = nnsight.save(mm.clamp_norm.calls)
        return a, b, c, calls

    local_result = run(None)
    calls_after_local = mm.clamp_norm.calls
    remote_result = run("local")
    assert same(local_result[:3], remote_result[:3])
    assert calls_after_local == calls_before + 1 and mm.clamp_norm.calls == calls_after_local
    assert remote_result[3] == 1  # the server's wrapper is a fresh one, re-made by @traced
    assert torch.allclose(remote_result[1], local_result[1])  # +100 from the undocumented decorator


def test_dataclasses_enums_and_inheritance(mlp, x, mm):
    cfg = mm.SteerConfig(layer=0, mode=mm.Mode.MAX, tags=["x", "y"], note="n")
    shifter = mm.ShiftDoubler(1.5)
    with mlp.trace(x, remote="local"):
        h = mlp[1].output
        y = shifter.apply(h).save()
        kind = mm.Doubler().apply(h).save()
        out_cfg = cfg.save()
        made = mm.SteerConfig(scale=3.0).save()
        mode = mm.Mode("mean").save()
    with mlp.trace(x):
        h_local = mlp[1].output.save()
    assert torch.allclose(y, (h_local + 1.5) * 2) and torch.allclose(kind, h_local * 2)
    assert type(out_cfg) is mm.SteerConfig and out_cfg == cfg
    assert made == mm.SteerConfig(scale=3.0) and mode is mm.Mode.MEAN


def test_module_globals_are_shared_by_the_module_code(mlp, x, mm):
    """Functions of one module share its namespace on the server (HISTORY is one list)."""
    before = list(mm.HISTORY)
    with mlp.trace(x, remote="local"):
        mm.remember(mlp.output)
        n = nnsight.save(mm.remember(mlp.output))
        history = nnsight.save(mm.HISTORY)
    assert n == len(before) + 2 and history == before + [3, 3]
    assert mm.HISTORY == before  # the client's list is untouched


def test_package_with_relative_imports(mlp, x, mytools):
    from mytools.core import project_lazily

    direction = torch.ones(8)

    def run(remote):
        with mlp.trace(x, remote=remote):
            h = mlp[1].output
            p = mytools.project(h, direction).save()
            q = project_lazily(h, direction).save()
            r = mytools.helpers.rms(h)
            r = nnsight.save(r)
        return p, q, r

    assert same(run(None), run("local"))


def test_import_of_a_user_module_inside_the_trace(mlp, x, libdir):
    with mlp.trace(x, remote="local") as tracer:
        import mymethods
        from mytools import project

        out = project(mymethods.normalize(mlp.output), mlp.output[0]).save()
    assert out.shape == (3, 8)
    text = print_request(decode_request(tracer.remote_payload))
    assert 'definition' in text and '"mymethods" kind=module' in text and '"mytools" kind=module' in text


def test_tracer_invokes_and_envoys_held_in_variables(mlp, x, mm):
    layer = mlp[1]
    layers = [mlp[1], mlp[3]]  # envoys inside data travel as references to the hosted model
    normalize = mm.normalize  # (a user function in the namespace makes every module hooked)

    def run(remote):
        with mlp.trace(remote=remote) as tracer:
            with tracer.invoke(x[:2]):
                a = normalize(layer.output).save()
            with tracer.invoke(x[2:]):
                b = [l.output.sum() for l in layers]
                b = nnsight.save(b)
        return a, b

    assert same(run(None), run("local"))


def test_exceptions_point_at_library_lines(mlp, x, mm, libdir):
    with pytest.raises(ValueError, match="fails on purpose") as info:
        with mlp.trace(x, remote="local"):
            mm.fails(mlp.output)
    frames = [(tb.tb_frame.f_code.co_filename, tb.tb_lineno) for tb in _walk(info.value.__traceback__)]
    line = next(i for i, text in enumerate(mm.__loader__.get_source("mymethods").splitlines(), 1)
                if 'raise ValueError("fails on purpose")' in text)
    assert (str(libdir / "mymethods.py"), line) in frames


def _walk(tb):
    while tb is not None:
        yield tb
        tb = tb.tb_next


def test_sessions_run_as_one_request(mlp, x, mm):
    def run(remote):
        with mlp.session(remote=remote):
            with mlp.trace(x):
                hs = mlp[1].output
            with mlp.trace(x):
                mlp[1].output = mm.normalize(hs) * 2
                out = mlp.output.save()
        return out

    assert same(run(None), run("local"))


def test_llama_trace(llama_path, mm):
    from nnsight import LanguageModel

    model = LanguageModel(llama_path)

    def run(remote):
        with model.trace("The Eiffel Tower is in", remote=remote):
            h = mm.normalize(model.model.layers[0].output[0])
            model.model.layers[1].output[0][:] = h
            logits = model.lm_head.output.save()
        return logits

    assert same(run(None), run("local"))


def test_remote_argument_values(mlp, x):
    assert mlp.trace(x, remote=True)._remote is True  # the server's tests are in tests/server
    with pytest.raises(ValueError, match="remote="):
        mlp.trace(x, remote="ndif")


def test_server_objects_go_by_qualified_name(mlp, x):
    import math

    import einops
    import torch.nn.functional as F

    relu = torch.nn.functional.relu
    sqrt = math.sqrt
    rearrange = einops.rearrange

    def run(remote):
        with mlp.trace(x, remote=remote) as tracer:
            h = relu(F.gelu(mlp[0].output)) * sqrt(4.0)
            out = rearrange(h, "b d -> d b").save()
            n = nnsight.save(len(out))
        return out, n, tracer

    local, remote = run(None), run("local")
    assert same(local[:2], remote[:2])
    program = decode_request(remote[2].remote_payload).program
    kinds = {b.name: (b.kind, b.value) for b in program.bindings}
    assert kinds["relu"] == ("object", "torch.nn.functional:relu")
    assert kinds["sqrt"] == ("object", "math:sqrt")
    assert kinds["rearrange"][0] == "object" and kinds["rearrange"][1].startswith("einops")
    assert kinds["F"] == ("module", "torch.nn.functional") and kinds["len"] == ("builtin", "len")
    assert kinds["mlp"] == ("model", "model")
    assert not program.definitions  # nothing of the user's to send


def test_functions_defined_in_the_calling_function(mlp, x):
    k = 3.0

    def scale(t):
        return t * k

    def twice(t):
        return scale(scale(t))

    def run(remote):
        with mlp.trace(x, remote=remote):
            out = twice(mlp.output).save()
        return out

    assert same(run(None), run("local"))


def test_class_defined_in_a_function_is_refused(mlp, x):
    from compiler.diagnostics import DiagnosticError

    class Local:
        factor = 2

    obj = Local()
    with pytest.raises(DiagnosticError) as info:
        with mlp.trace(x, remote="local"):
            out = (mlp.output * obj.factor).save()
    (d,) = info.value.diagnostics
    assert d.code == "NN503" and "defined inside a function" in d.message and "module level" in d.hint
    assert d.path == __file__ and d.source_line[d.col:].startswith("obj")
