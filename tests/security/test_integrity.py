"""runtime/integrity.py on a real tiny GPT-2: each kind of change a job could leave is named and undone.

The changes are made here directly (as a job that got past the loader would leave them), between
:func:`snapshot` and :func:`enforce`; the accept path and the server's job runner call the same two.
"""
import pytest
import torch

from runtime import integrity
from runtime.integrity import IntegrityError


@pytest.fixture(scope="module")
def gpt2(gpt2_path):
    from nnsight import LanguageModel

    model = LanguageModel(gpt2_path, dispatch=True)
    model._module.requires_grad_(False)
    return model


def _enforce_fails(before, *words):
    with pytest.raises(IntegrityError) as info:
        integrity.enforce(before)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert info.value.restored, str(info.value)
    assert before.changes() == [], "not undone: %s" % before.changes()
    return info.value


def test_an_untouched_model_passes(gpt2):
    before = integrity.snapshot(gpt2)
    with gpt2.trace("Hello"):
        gpt2.transformer.h[0].output[0].sum().save()
    integrity.enforce(before)  # a legitimate trace changes nothing the check sees


def test_an_in_place_write_is_named_and_reloaded_from_the_files(gpt2):
    weight = gpt2._module.transformer.h[1].attn.c_attn.weight
    pristine = weight.detach().clone()
    before = integrity.snapshot(gpt2)
    weight.mul_(3.0)
    error = _enforce_fails(before, "transformer.h.1.attn.c_attn.weight", "written in place")
    assert error.changes and torch.equal(weight, pristine)


def test_a_replaced_parameter_is_put_back(gpt2):
    module = gpt2._module.transformer.h[0].mlp.c_proj
    original = module.weight
    before = integrity.snapshot(gpt2)
    module._parameters["weight"] = torch.nn.Parameter(torch.zeros_like(original), requires_grad=False)
    _enforce_fails(before, "parameter 'weight' rebound")
    assert module.weight is original


def test_a_moved_weight_gets_its_values_back(gpt2):
    weight = gpt2._module.transformer.wpe.weight
    pristine = weight.detach().clone()
    before = integrity.snapshot(gpt2)
    weight.data = torch.zeros(3)
    _enforce_fails(before, "transformer.wpe.weight", "replaced")
    assert torch.equal(weight, pristine)


def test_hooks_left_registered_are_removed(gpt2):
    layer = gpt2._module.transformer.h[0]
    before = integrity.snapshot(gpt2)
    layer.register_forward_hook(lambda m, i, o: None)
    torch.nn.modules.module.register_module_forward_pre_hook(lambda m, i: None)
    _enforce_fails(before, "_forward_hooks", "global module hook")
    assert len(layer._forward_hooks) == 0
    assert integrity.snapshot(gpt2).changes() == []


def test_module_attributes_added_removed_or_rebound_are_undone(gpt2):
    layer = gpt2._module.transformer.h[1]
    before = integrity.snapshot(gpt2)
    layer.__dict__["extra"] = 1
    layer.__dict__["training"] = True
    submodule = layer._modules.pop("ln_2")
    _enforce_fails(before, "'extra' added", "'training' rebound", "submodule 'ln_2' removed")
    assert "extra" not in layer.__dict__ and layer.training is False and layer.ln_2 is submodule


def test_server_modules_and_classes_are_restored(gpt2):
    add = torch.add
    before = integrity.snapshot(gpt2)
    torch.add = print
    torch.Tensor.__len__, old_len = (lambda self: 0), torch.Tensor.__len__
    torch.nn.Module.__injected__ = 1
    try:
        _enforce_fails(before, "server module torch: 'add' rebound", "'__len__' rebound", "'__injected__' added")
    finally:
        torch.add = add
        torch.Tensor.__len__ = old_len
    assert torch.add is add and not hasattr(torch.nn.Module, "__injected__")


def test_modes_left_active_are_popped(gpt2):
    before = integrity.snapshot(gpt2)
    torch.overrides.TorchFunctionMode().__enter__()  # its __torch_function__ would break every later call
    torch.autograd.graph.saved_tensors_hooks(print, print).__enter__()
    torch.autocast("cpu").__enter__()
    _enforce_fails(before, "__torch_function__ mode", "saved-tensor hooks", "autocast")
    assert not torch.is_autocast_enabled("cpu")
    assert torch.ones(2).sum().item() == 2.0


def test_the_config_and_default_dtype_are_restored(gpt2):
    before = integrity.snapshot(gpt2)
    gpt2._module.config.__dict__["n_layer"] = 99
    torch.set_default_dtype(torch.float64)
    try:
        _enforce_fails(before, "config: 'n_layer' rebound", "default dtype")
    finally:
        torch.set_default_dtype(torch.float32)
    assert gpt2._module.config.n_layer != 99 and torch.get_default_dtype() == torch.float32


def test_a_model_without_files_is_restored_from_a_copy():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    model.register_buffer("scale", torch.ones(4), persistent=False)
    pristine = model[0].weight.detach().clone()
    before = integrity.snapshot(model)  # the first snapshot makes the copies (no files to read)
    layout = integrity._LAYOUTS[model]
    assert set(layout.pristine.copies) == {"0.weight", "0.bias", "1.weight", "1.bias", "scale"}
    with torch.no_grad():
        model[0].weight.zero_()
        model.scale.add_(1)
    _enforce_fails(before, "'0.weight'", "buffer 'scale'")
    assert torch.equal(model[0].weight, pristine) and torch.equal(model.scale, torch.ones(4))


def test_a_model_not_loaded_yet_is_not_checked(gpt2_path):
    from nnsight import LanguageModel

    model = LanguageModel(gpt2_path)  # meta weights until its first trace loads them
    before = integrity.snapshot(model)
    assert before.layout is None
    model.dispatch()
    integrity.enforce(before)  # loading the weights is no violation


class _Loud:
    """A value that says it equals everything, and records that it was asked."""

    asked = 0

    def __eq__(self, other):
        _Loud.asked += 1
        return True

    __hash__ = object.__hash__


def test_the_flat_check_sees_any_change_across_dictionaries_by_identity_only():
    """FlatState (one pass over many dictionaries) against the per-dictionary states, for random
    edits: rebinding, adding, removing, and moving an entry across a dictionary boundary."""
    import random

    from runtime.identity_state import DictState, FlatState

    rng = random.Random(0)
    for trial in range(300):
        dicts = [{"k%d" % j: object() for j in range(rng.randrange(0, 6))} for _ in range(rng.randrange(1, 5))]
        states = [DictState(d) for d in dicts]
        flat = FlatState(states)
        assert flat.same()
        edit = rng.choice(["rebind", "equal impostor", "add", "remove", "move", "none"])
        full = [d for d in dicts if d]
        if edit == "rebind" and full:
            d = rng.choice(full)
            d[rng.choice(list(d))] = object()
        elif edit == "equal impostor" and full:
            d = rng.choice(full)
            d[rng.choice(list(d))] = _Loud()  # equal by __eq__, not the same object
        elif edit == "add":
            rng.choice(dicts)["new%d" % trial] = object()
        elif edit == "remove" and full:
            d = rng.choice(full)
            del d[rng.choice(list(d))]
        elif edit == "move" and len(full) >= 1 and len(dicts) >= 2:
            src = rng.choice(full)
            dst = rng.choice([d for d in dicts if d is not src])
            key = list(src)[-1]
            dst[key] = src.pop(key)  # same total, same values in the same order: boundaries moved
        else:
            edit = "none"
        assert flat.same() == all(s.same() for s in states) == (edit == "none"), (trial, edit)
    assert _Loud.asked == 0  # never compared by equality
