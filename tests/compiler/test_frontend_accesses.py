"""compiler.frontend.accesses: static envoy chains and dynamic uses."""
import pytest

from compiler.frontend import envoy_chains, scan_accesses


def test_chains():
    src = (
        "h = model.transformer.h[0].output.save()\n"
        "model.transformer.h[-1].mlp.output[0][:] = 0\n"
        "y = model.lm_head.next().output\n"
        "g = model.transformer.wte.weight_in.input\n"
        "k = model.layers['attn'].inputs\n"
        "s = model.transformer.h[0x1].attn.source\n"
        "model.transformer.h[0].output.grad\n"
        "o = model.output\n"
    )
    assert envoy_chains(src) == [
        ("model", ("transformer", "h", "0"), "output"),
        ("model", ("transformer", "h", "-1", "mlp"), "output"),
        ("model", ("lm_head",), "next"),
        ("model", ("transformer", "wte", "weight_in"), "input"),
        ("model", ("layers", "attn"), "inputs"),
        ("model", ("transformer", "h", "1", "attn"), "source"),
        ("model", (), "output"),
    ]
    report = scan_accesses(src)
    assert not report.dynamic_for(["model"])
    assert report.envoy_paths(["model"])[:2] == ("model.transformer.h.0", "model.transformer.h.-1.mlp")


def test_several_sources_and_roots():
    report = scan_accesses(["a = model.x.output\n", "b = other.y[1].input\n"])
    assert report.chains == (("model", ("x",), "output"), ("other", ("y", "1"), "input"))
    assert report.envoy_paths(["other"]) == ("other.y.1",)


@pytest.mark.parametrize(
    "src",
    [
        "z = model.transformer.h[i].output\n",  # non-constant index
        "z = model.transformer.h[0:2]\n",  # slice
        "layer = model.transformer.h[0]\nlayer.output\n",  # stored in a variable
        "for layer in model.transformer.h:\n    layer.output.save()\n",  # iterated
        "f(model)\n",  # passed to a function
        "f(x=model.transformer)\n",
        "model.transformer.h[0].mlp(x)\n",  # called before a terminal
        "lst = [model.transformer.h[j].output for j in range(3)]\n",
    ],
)
def test_dynamic(src):
    report = scan_accesses(src)
    assert "model" in report.dynamic_roots and report.dynamic_for(["model"])


@pytest.mark.parametrize(
    "src",
    [
        'with model.trace("x") as t:\n    pass\n',
        "ids = model.tokenizer.encode(text)\nn = model.config.n_layer\n",
        "f(model=1)\ndef g(model):\n    pass\n",
        "import model\n",
        "x = model.transformer.h[0].output[i]\n",  # indexing after the terminal is fine
        "model.transformer.h[0].output = f(model.transformer.h[1].output)\n",
    ],
)
def test_static(src):
    assert not scan_accesses(src).dynamic_for(["model"])


def test_nested_expressions_are_scanned():
    src = "x = f(model.a.output)[model.b[k].output]\n"
    report = scan_accesses(src)
    assert report.chains == (("model", ("a",), "output"),)
    assert report.dynamic_for(["model"]) and {"f", "k"} <= report.dynamic_roots
