"""Every documented example of envoys, module access, skipping, gradients, scanning and method
tracing, run as written.

Adaptations (and only these): the model is the offline tiny GPT-2 (4 layers, hidden size 64) or
Llama (2 layers) instead of the hub ids, so layer indices are adapted (`h[5]` -> `h[2]`) and
printed sizes differ (64, not 768). With transformers 5 decoder layers return a tensor, so
`output[0]` is the first batch row (it was the hidden states of the old tuple output): the
examples run as written either way, and the gradient example of 5.6, which needs the hidden
states themselves, reads `.output`. The attention function of the tiny models is SDPA, so the
recursive `.source` example names one of its operations for `some_inner_op`. Implementation
snippets (nnsight internals) are not user code and are not run; module classes they sketch
(`MyModel` in 4.6, an SAE in 4.8) are written out.
"""
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import nnsight
from nnsight import Envoy, LanguageModel, NNsight


@pytest.fixture(scope="module")
def model(gpt2_path):
    """A GPT-2 of this module's own (some examples add modules, sources or aliases to it)."""
    return LanguageModel(gpt2_path, dispatch=True)


# ======================================================================== 4 Envoy overview

def test_4_overview_envoys_wrap_modules(model):
    assert isinstance(model.transformer, Envoy)        # wraps the actual GPT2Model
    assert isinstance(model.transformer.h[0], Envoy)   # wraps the first GPT2Block
    assert isinstance(model.transformer.h[0].attn, Envoy)
    assert type(model.transformer.h[0]._module).__name__ == "GPT2Block"


# ===================================================================== 4.1 The Envoy tree

def test_4_1_tree_paths(model):
    assert model.path == "model"
    assert model.transformer.path == "model.transformer"
    assert model.transformer.wte.path == "model.transformer.wte"
    assert model.transformer.h.path == "model.transformer.h"
    assert model.transformer.h[0].path == "model.transformer.h.0"
    assert model.transformer.h[0].attn.path == "model.transformer.h.0.attn"
    assert model.transformer.h[0].mlp.path == "model.transformer.h.0.mlp"
    assert model.lm_head.path == "model.lm_head"


# =================================================================== 4.2 Accessing values

def test_4_2_how_value_access_works(model):
    with model.trace("Hello"):
        hidden = model.transformer.h[0].output  # What happens here?
        kept = hidden.save()
    assert kept.shape == (1, 1, 64)


def test_4_2_setting_values(model):
    with model.trace("Hello"):
        model.transformer.h[0].output[0][:] = 0  # Zero out activations
        out = model.transformer.h[0].output.save()
    assert torch.equal(out, torch.zeros_like(out))


def test_4_2_fake_values_for_scanning(gpt2_path):
    model = LanguageModel(gpt2_path)

    with model.scan("Hello"):
        # Runs with fake tensors, populates _fake_output
        # To persist a value outside the scan, use .save() or nnsight.save()
        shape = nnsight.save(model.transformer.h[0].output[0].shape)

    # After scanning, can also access _fake_output directly on the module
    print(model.transformer.h[0]._fake_output.shape)
    assert tuple(shape) == (1, 64) and model.transformer.h[0]._fake_output.shape == (1, 1, 64)


# ===================================================================== 4.3 Source tracing

def test_4_3_print_source(model, capsys):
    print(model.transformer.h[0].attn.source)
    printed = capsys.readouterr().out
    for line in ("attention_interface_0", "self_c_proj_0", "self_resid_dropout_0"):
        assert line in printed
    row = next(r for r in printed.splitlines() if r.lstrip().startswith("self_c_proj_0"))
    assert "attn_output = self.c_proj(attn_output)" in row


def test_4_3_access_operations(model):
    with model.trace("Hello"):
        # Access attention computation output
        attn_out = model.transformer.h[0].attn.source.attention_interface_0.output.save()

        # Access projection input/output
        proj_in = model.transformer.h[0].attn.source.self_c_proj_0.input.save()
    assert torch.allclose(attn_out[0].reshape(proj_in.shape), proj_in)


def test_4_3_operation_envoy_interface(model):
    op = model.transformer.h[0].attn.source.self_c_proj_0
    with model.trace("Hello"):
        args, kwargs = op.inputs
        first = nnsight.save(args[0])
        same = op.input.save()
        out = op.output.save()
    assert torch.equal(first, same) and out.shape == same.shape


def test_4_3_recursive_source_tracing(model):
    with model.trace("Hello"):
        # Trace into the attention_interface function itself
        inner = model.transformer.h[0].attn.source.attention_interface_0.source.torch_nn_functional_scaled_dot_product_attention_0.output.save()
        whole = model.transformer.h[0].attn.source.attention_interface_0.output.save()
    assert torch.allclose(inner.transpose(1, 2), whole[0])


# ======================================================= 4.4 Method delegation and tracing

def test_4_4_transparent_access(model):
    assert model.transformer.h[0].attn.num_heads == 2  # Returns the actual value from the module


def test_4_4_methods_as_tracing_contexts(model):
    # model.generate is a method on the underlying module
    # But Envoy wraps it so it can be used as a trace context
    with model.generate("Hello", max_new_tokens=10) as tracer:
        output = model.generator.output.save()
    assert output.shape == (1, 11)

    # No with block - just calls the method directly
    direct = model.generate("Hello", max_new_tokens=10)
    assert torch.equal(direct, output)


# =========================================================================== 4.5 Aliasing

def test_4_5_the_problem(gpt2_path, llama_path):
    gpt2 = LanguageModel(gpt2_path, dispatch=True)
    llama = LanguageModel(llama_path, dispatch=True)
    # GPT-2
    gpt2_attn = gpt2.transformer.h[0].attn
    # LLaMA
    llama_attn = llama.model.layers[0].self_attn
    # the same component lives at different paths, under different names
    assert gpt2_attn.path == "model.transformer.h.0.attn"
    assert llama_attn.path == "model.model.layers.0.self_attn"
    assert type(gpt2_attn._module).__name__ == "GPT2Attention"
    assert type(llama_attn._module).__name__ == "LlamaAttention"
    with pytest.raises(AttributeError):
        llama.transformer  # GPT-2's path does not exist on Llama


def test_4_5_the_solution(gpt2_path):
    model = LanguageModel(
        gpt2_path,
        rename={
            ".transformer.h": ".layers",       # Mount to root
            ".transformer.wte": ".embed",
        }
    )

    # Now both work:
    model.transformer.h[0]  # Original path
    model.layers[0]         # Alias
    assert model.layers[0] is model.transformer.h[0] and model.embed is model.transformer.wte
    with model.trace("Hello"):
        out = model.layers[0].output.save()
    assert out.shape == (1, 1, 64)


def test_4_5_alias_types(gpt2_path, llama_path):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer1 = torch.nn.Linear(2, 2)

        def forward(self, x):
            return self.layer1(x)

    simple = NNsight(Net(), rename={"layer1": "first_layer"})
    assert simple.first_layer is simple.layer1
    mounted = LanguageModel(llama_path, rename={".model.layers": ".layers"})
    assert mounted.layers is mounted.model.layers
    multiple = LanguageModel(gpt2_path, rename={".transformer": ["model", "mdl"]})
    assert multiple.model is multiple.mdl is multiple.transformer
    assert multiple._alias.alias_to_name == {"model.model": "model.transformer", "model.mdl": "model.transformer"}
    assert multiple._alias.name_to_aliases == {"model.transformer": ["model.model", "model.mdl"]}


# ================================================================= 4.6 Handling conflicts

def test_4_6_output_child_module():
    # Hypothetical model with a module named "output"
    class MyModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.output = torch.nn.Linear(100, 10)  # Conflicts with Envoy.output!

        def forward(self, x):
            return self.output(x)

    with pytest.warns(UserWarning, match="Module has pre-defined `output` attribute. nnsight access mounted at `.nns_output` instead."):
        model = NNsight(MyModel())
    # Now:
    assert isinstance(model.output, Envoy)   # The child module's Envoy (as expected)
    x = torch.randn(2, 100)
    with model.trace(x):
        child_out = model.output.output.save()
        root_out = model.nns_output.save()    # The Envoy property for getting module outputs
    assert torch.equal(child_out, root_out) and root_out.shape == (2, 10)


# ============================================================== 4.7 Dispatching and updates

def test_4_7_dispatch_updates_the_tree(gpt2_path):
    model = LanguageModel(gpt2_path)
    meta_block = model.transformer.h[0]._module
    assert model.transformer.h[0].attn.source is not None   # accessed before dispatch: re-injected
    model.dispatch()
    assert model.transformer.h[0]._module is not meta_block
    assert model.transformer.h[0]._module is model._module.transformer.h[0]
    with model.trace("Hello"):
        proj = model.transformer.h[0].attn.source.self_c_proj_0.output.save()
    assert proj.device == torch.device("cpu") and proj.isfinite().all()


# ================================================================= 4.8 Ad-hoc module calls

def test_4_8_logit_lens(model):
    prompt = "The Eiffel Tower is in"
    with model.trace(prompt) as tracer:
        # Get intermediate hidden states
        hidden_states = model.transformer.h[-1].output[0]

        # Apply ln_f and lm_head to decode hidden states
        logits = model.lm_head(model.transformer.ln_f(hidden_states)).save()
        final = model.lm_head.output.save()
    assert torch.allclose(logits, final[0], atol=1e-5)


def test_4_8_hook_true_for_auxiliary_modules(gpt2_path):
    model = LanguageModel(gpt2_path, dispatch=True)

    class SAE(torch.nn.Module):
        def __init__(self, d=64, k=128):
            super().__init__()
            self.encoder = torch.nn.Linear(d, k)
            self.decoder = torch.nn.Linear(k, d)

        def forward(self, x):
            return self.decoder(torch.relu(self.encoder(x)))

    torch.manual_seed(0)
    model.sae = SAE()   # an auxiliary SAE module you've added

    with model.trace() as tracer:
        # First invoke: apply the SAE with hooks enabled
        with tracer.invoke("Hello"):
            hidden = model.transformer.h[2].output[0]
            # Use hook=True so we can access .input/.output on the SAE later
            reconstructed = model.sae(hidden, hook=True)
            model.transformer.h[2].output[0] = reconstructed

        # Second invoke: access the SAE's activations
        with tracer.invoke("Hello"):
            sae_activations = model.sae.output.save()  # Works because we used hook=True
    assert sae_activations.shape == (1, 64)


# ===================================================================== 4.9 Device utilities

def test_4_9_device_utilities(model):
    # Get the device of the first parameter
    device = model.device  # e.g., torch.device('cuda:0')

    # Get all devices (for models spread across multiple GPUs)
    devices = model.devices  # e.g., {torch.device('cuda:0'), torch.device('cuda:1')}

    # Move the module to a specific device
    model.to(torch.device("cpu"))
    model.cpu()
    assert device == torch.device("cpu") and devices == {torch.device("cpu")}
    if torch.cuda.is_available():  # pragma: no cover
        model.cuda()
        model.cpu()


# =============================================================== 4.10 Envoy tree navigation

def test_4_10_iterating_over_modules(model, capsys):
    # Get all Envoys
    all_envoys = model.modules()

    # Get all Envoys with their paths
    for path, envoy in model.named_modules():
        print(path)  # e.g., "model.transformer.h.0.attn"

    # Filter modules
    attention_envoys = model.modules(
        include_fn=lambda e: "attn" in e.path
    )
    assert "model.transformer.h.0.attn\n" in capsys.readouterr().out
    assert all(isinstance(e, Envoy) for e in all_envoys)
    assert model.transformer.h[0].attn in attention_envoys and model.lm_head not in attention_envoys


def test_4_10_path_based_access(model):
    # These are equivalent:
    mlp = model.transformer.h[0].mlp
    mlp2 = model.get('transformer.h.0.mlp')
    assert mlp is mlp2

    # Useful for dynamic access
    layer_idx = 3
    layer = model.get(f'transformer.h.{layer_idx}')
    assert layer is model.transformer.h[3]


# ======================================================= 4.11 Accessing the underlying module

def test_4_11_underlying_module(model):
    # Get the actual torch.nn.Module
    real_module = model.transformer.h[0]._module
    assert isinstance(real_module, torch.nn.Module) and not isinstance(real_module, Envoy)

    # These are equivalent:
    weights = model.lm_head.weight
    weights2 = model.lm_head._module.weight
    assert weights is weights2


# ====================================================================== 5.5 Module skipping

def test_5_5_usage(model):
    with model.trace("Hello"):
        # Get layer 0's output
        layer0_out = model.transformer.h[0].output

        # Skip layer 1 entirely, use layer 0's output as layer 1's output
        model.transformer.h[1].skip(layer0_out)

        result = model.output.save()

    with model.trace("Hello"):
        layer0 = model.transformer.h[0].output.save()
        layer1 = model.transformer.h[1].output.save()
    assert not torch.allclose(layer0, layer1)
    ref = model._module
    tok = model.tokenizer("Hello", return_tensors="pt")
    handle = ref.transformer.h[1].register_forward_hook(lambda m, a, o: a[0])
    try:
        with torch.no_grad():
            expected = ref(**tok).logits
    finally:
        handle.remove()
    assert torch.allclose(result.logits, expected, atol=1e-5)


def test_5_5_constraint_skip_in_every_invoke(model):
    some_value = torch.zeros(1, 1, 64)
    other_value = torch.ones(1, 1, 64)
    with model.trace() as tracer:
        with tracer.invoke("Hello"):
            model.transformer.h[1].skip(some_value)  # Must skip in all invokes
            a = model.transformer.h[1].output.save()

        with tracer.invoke("World"):
            model.transformer.h[1].skip(other_value)  # Must also skip here
            b = model.transformer.h[1].output.save()
    assert torch.equal(a, some_value) and torch.equal(b, other_value)


# ============================================================================ 5.6 Gradients

def test_5_6_basic_usage(model):
    with model.trace("Hello"):
        hs = model.transformer.h[-1].output   # the hidden states (`output[0]` before transformers 5)
        hs.requires_grad_(True)

        logits = model.lm_head.output
        loss = logits.sum()

        # Backward is a separate trace!
        with loss.backward():
            grad = hs.grad.save()

            # Modify gradients
            hs.grad[:] = 0

    print(grad.shape)
    assert grad.shape == (1, 1, 64)


def test_5_6_gradient_access_order(model):
    with model.trace("Hello"):
        layer1 = model.transformer.h[1].output
        layer3 = model.transformer.h[3].output
        loss = model.lm_head.output.sum()
        with loss.backward():
            g3 = layer3.grad.save()   # later layer first
            g1 = layer1.grad.save()
    assert g3.shape == g1.shape == (1, 1, 64)


def test_5_6_standalone_usage():
    torch.manual_seed(0)
    some_tensor = torch.randn(3, 4, requires_grad=True)
    hidden = some_tensor * 2
    loss = (hidden ** 2).sum()

    # No forward trace needed
    with loss.backward():
        grad = hidden.grad.save()
    assert torch.allclose(grad, 2 * hidden.detach())


def test_7_7_dangling_mediator_for_gradient_order():
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer1 = torch.nn.Linear(5, 10)
            self.layer2 = torch.nn.Linear(10, 2)

        def forward(self, x):
            return self.layer2(self.layer1(x))

    model = NNsight(Net())
    with pytest.raises(ValueError, match=r"Execution complete but `\d+\.grad(\.i0)?` was not provided"):
        with model.trace(torch.randn(1, 5)):
            out1 = model.layer1.output
            out2 = model.layer2.output
            loss = model.output.sum()

            with loss.backward():
                # Wrong order! Gradients flow backwards: layer2 → layer1
                grad1 = out1.grad.save()  # Waits...
                grad2 = out2.grad.save()  # layer2 grad already passed!

    with pytest.raises(ValueError, match=r"Cannot request `model.layer2.output.i0` in a backwards tracer"):
        with model.trace(torch.randn(1, 5)):
            out = model.layer1.output
            loss = model.output.sum()

            with loss.backward():
                # WRONG: Accessing .output inside backward
                another_out = model.layer2.output  # Error!

    with model.trace(torch.randn(1, 5)):
        out1 = model.layer1.output  # Get tensors BEFORE backward
        out2 = model.layer2.output
        loss = model.output.sum()

        with loss.backward():
            grad2 = out2.grad.save()  # Access .grad INSIDE backward (layer 2's comes first)
            grad1 = out1.grad.save()
    assert grad1.shape == (1, 10) and grad2.shape == (1, 2)


# ============================================================================= 5.9 Scanning

def test_5_9_usage(gpt2_path):
    model = LanguageModel(gpt2_path)

    with model.scan("Hello"):
        # Access shapes without running real computation
        # Must use .save() to persist values outside the scan context
        dim = nnsight.save(model.transformer.h[0].output[0].shape[-1])

        # Validate slicing
        model.transformer.h[0].output[0][:, 10] = 0  # Will fail if seq_len < 11

    print(dim)  # 768
    assert dim == 64

    # After scanning
    print(model.transformer.h[0]._fake_output[0].shape)  # [1, seq_len, hidden_dim]
    assert model.transformer.h[0]._fake_output[0].shape == (1, 64)
    assert not model.dispatched


def test_5_9_validation_fails_on_a_bad_index(gpt2_path):
    model = LanguageModel(gpt2_path)
    with pytest.raises(IndexError):
        with model.scan("Hello"):
            model.transformer.h[0].output[0][:, 100] = 0


# ====================================================================== 6.1 Mixin architecture

def test_6_1_load_or_wrap(gpt2_path):
    # Load from HuggingFace
    model = LanguageModel(gpt2_path)

    # Wrap existing model
    my_model = AutoModelForCausalLM.from_pretrained(gpt2_path)
    tokenizer = AutoTokenizer.from_pretrained(gpt2_path)
    wrapped = LanguageModel(my_model, tokenizer=tokenizer)
    with wrapped.trace("Hello"):
        out = wrapped.lm_head.output.save()
    assert out.shape == (1, 1, 768) and not model.dispatched


def test_6_1_missing_tokenizer(gpt2_path):
    # WRONG - tokenizer not provided
    my_model = AutoModelForCausalLM.from_pretrained(gpt2_path)
    model = LanguageModel(my_model)  # Error!
    with pytest.raises(AttributeError, match="Tokenizer not found. If you passed a pre-loaded model to `LanguageModel`, you need to provide a tokenizer when initializing: `LanguageModel\\(model, tokenizer=tokenizer\\)`."):
        with model.trace("Hello"):
            out = model.output.save()

    # Fix:
    tokenizer = AutoTokenizer.from_pretrained(gpt2_path)
    model = LanguageModel(my_model, tokenizer=tokenizer)  # OK!
    with model.trace("Hello"):
        out = model.output.save()


def test_6_1_meta_loading_and_dispatch(gpt2_path):
    # Lazy loading - fast initialization, no memory
    model = LanguageModel(gpt2_path)
    assert model.device == torch.device("meta")

    # Dispatch loads real weights
    model.dispatch()
    assert model.device == torch.device("cpu") and model.dispatched

    # Or auto-dispatch on first trace
    lazy = LanguageModel(gpt2_path)
    with lazy.trace("Hello"):  # Automatically dispatches
        out = lazy.output.save()
    assert lazy.dispatched


def test_6_1_nnsight_method_pattern(model):
    assert hasattr(type(model), "__nnsight_generate__")
    with model.generate("Hello", max_new_tokens=2) as tracer:
        tokens = model.generator.output.save()
    assert tokens.shape == (1, 3)
