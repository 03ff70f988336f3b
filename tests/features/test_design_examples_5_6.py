"""Every documented example of saving, iteration, editing, stopping, barriers, caching, results,
batching and LanguageModel, run as written.

Adaptations (and only these): the model is the offline tiny GPT-2 (4 layers) or Llama (2 layers)
instead of the hub ids, so layer counts in loops are adapted (`range(5)` -> `range(3)`), and
`device_map`/`torch_dtype`/`attn_implementation` use CPU-friendly values. With transformers 5
decoder layers return a tensor, so `output[0]` is the first batch row (it was the hidden states of
the old tuple output); the examples run either way. Implementation snippets (nnsight internals,
C code) are not user code and are not run.

Two examples in 5.3 ask for a step that does not exist (step 3 of `max_new_tokens=3`, which
runs steps 0-2): they raise a MissedProviderError naming the step and the step count instead
of silently skipping code; the same examples with one more token run.
"""
import pytest
import torch

import nnsight
from nnsight import CONFIG, LanguageModel, MissedProviderError, NNsight


@pytest.fixture
def model(gpt2):
    yield gpt2
    gpt2.clear_edits()


# ============================================================================ 5.1 Saving Values


def test_5_1_the_problem(model):
    with model.trace("Hello"):
        hidden = model.transformer.h[0].output[0]  # This is a real tensor

    with pytest.raises(NameError):
        print(hidden)  # Error! hidden is no longer valid


def test_5_1_nnsight_save(model):
    import nnsight

    with model.trace("Hello"):
        hidden = nnsight.save(model.transformer.h[0].output[0])

    print(hidden)  # Works
    assert isinstance(hidden, torch.Tensor)


def test_5_1_method_save(model):
    with model.trace("Hello"):
        hidden = model.transformer.h[0].output[0].save()

    print(hidden)  # Works
    assert isinstance(hidden, torch.Tensor)


def test_5_1_configuration_pymount_off(model):
    from nnsight import CONFIG

    CONFIG.APP.PYMOUNT = False  # Disable obj.save(), use nnsight.save() instead
    try:
        with model.trace("Hello"):
            hidden = nnsight.save(model.transformer.h[0].output)
    finally:
        CONFIG.APP.PYMOUNT = True
    assert isinstance(hidden, torch.Tensor)


# ============================================================================ 5.2 Ad-hoc Module Calls


def test_5_2_logit_lens(model):
    prompt = "The Eiffel Tower is in"
    with model.trace(prompt) as tracer:
        # Get intermediate hidden states
        hidden_states = model.transformer.h[-1].output[0]

        # Apply ln_f and lm_head to decode hidden states
        logits = model.lm_head(model.transformer.ln_f(hidden_states)).save()

        # Get predicted tokens
        tokens = logits.argmax(dim=-1).save()

    print(model.tokenizer.decode(tokens[0]))

    with model.trace(prompt):
        final = model.output.logits.save()
    assert torch.allclose(logits, final[0], atol=1e-5)  # the last layer's lens is the model's logits


# ============================================================================ 5.3 Multi-Token Generation


def test_5_3_iter_all_steps(model):
    with model.generate("Hello", max_new_tokens=5) as tracer:
        logits = list().save()

        # Iterate over ALL generation steps
        for step in tracer.iter[:]:
            logits.append(model.lm_head.output.save())

    assert len(logits) == 5


def test_5_3_all(model):
    with model.generate("Hello", max_new_tokens=5) as tracer:
        for step in tracer.all():
            # Runs for every generation step
            model.transformer.h[0].output[0][:] = 0
        out = tracer.result.save()
    assert out.shape[1] > len(model.tokenizer("Hello")["input_ids"])  # (may stop early at EOS)


def test_5_3_next_as_written_asks_for_a_missing_step(model):
    with pytest.raises(MissedProviderError, match=r"lm_head\.output\.i3.*3 time\(s\)"):
        with model.generate("Hello", max_new_tokens=3) as tracer:
            # Step 0
            out0 = model.lm_head.output.save()

            tracer.next()  # Move cursor to step 1

            # Step 1
            out1 = model.lm_head.output.save()

            tracer.next(2)  # Skip ahead by 2

            # Step 3
            out3 = model.lm_head.output.save()


def test_5_3_next_with_enough_steps(model):
    with model.generate("Hello", max_new_tokens=4) as tracer:
        # Step 0
        out0 = model.lm_head.output.save()

        tracer.next()  # Move cursor to step 1

        # Step 1
        out1 = model.lm_head.output.save()

        tracer.next(2)  # Skip ahead by 2

        # Step 3
        out3 = model.lm_head.output.save()
    assert out1.shape[1] == 1 and out3.shape[1] == 1 and not torch.equal(out1, out3)


def test_5_3_step_index(model):
    with model.generate("Hello", max_new_tokens=5) as tracer:
        norms = nnsight.save([])
        for step_idx in tracer.iter[:]:
            if step_idx == 2:
                # Only intervene on step 2
                model.transformer.h[0].output[0][:] = 0
            norms.append(model.transformer.h[0].output[0].abs().sum().item())
    assert len(norms) == 5
    assert norms[2] == 0  # zeroed at step 2 only
    assert all(norm > 0 for i, norm in enumerate(norms) if i != 2)


def test_5_3_footgun_example_now_runs_the_code_after_the_loop(model):
    with model.generate("Hello", max_new_tokens=3) as tracer:
        for step in tracer.iter[:]:
            hidden = model.transformer.h[-1].output.save()

        # This line now executes: the loop ends after the last of the 3 steps
        final_logits = model.output.save()

    # After the trace:
    print(hidden)        # Works - defined inside iter
    print(final_logits)  # Works too: the output of the last step
    assert final_logits.logits.shape[1] == 1


def test_5_3_solution_1_separate_empty_invoker(model):
    with model.generate("Hello", max_new_tokens=3) as tracer:
        with tracer.invoke():  # First invoker - handles iteration
            for step in tracer.iter[:]:
                hidden = model.transformer.h[-1].output.save()

        with tracer.invoke():  # Second invoker - runs after generation
            final_logits = model.output.save()  # Now runs!
    assert hidden.shape[1] == 1 and final_logits.logits.shape[0] == 1


def test_5_3_solution_2_bounded_iteration(model):
    with model.generate("Hello", max_new_tokens=3) as tracer:
        for step in tracer.iter[:3]:  # Explicitly stop after 3 iterations
            hidden = model.transformer.h[-1].output.save()

        final_logits = model.output.save()  # Now runs!
    assert final_logits.logits.shape[1] == 1


def test_5_3_solution_3_next_as_written_asks_for_a_fourth_step(model):
    with pytest.raises(MissedProviderError, match=r"model\.output\.i3.*3 time\(s\)"):
        with model.generate("Hello", max_new_tokens=3) as tracer:
            for i in range(3):
                hidden = model.transformer.h[-1].output.save()
                tracer.next()

            final_logits = model.output.save()  # Runs after loop


def test_5_3_solution_3_with_one_more_token(model):
    with model.generate("Hello", max_new_tokens=4) as tracer:
        for i in range(3):
            hidden = model.transformer.h[-1].output.save()
            tracer.next()

        final_logits = model.output.save()  # Runs after loop
    assert final_logits.logits.shape[1] == 1


# ============================================================================ 5.4 Model Editing


def test_5_4_basic_usage(model):
    # Create an edited model (non-destructive)
    with model.edit() as model_edited:
        model.transformer.h[0].output[0][:] = 0

    # Original model is unchanged
    with model.trace("Hello"):
        out1 = model.transformer.h[0].output[0].save()  # Normal output

    # Edited model applies the intervention
    with model_edited.trace("Hello"):
        out2 = model_edited.transformer.h[0].output[0].save()  # Zeroed output

    assert not torch.all(out1 == 0)
    assert torch.all(out2 == 0)


def test_5_4_in_place_editing_and_clearing(model):
    with model.edit(inplace=True):
        model.transformer.h[0].output[0][:] = 0

    # Now ALL traces on model include this intervention
    with model.trace("Hello"):
        out = model.transformer.h[0].output[0].save()  # Always zeroed
    assert torch.all(out == 0)

    model.clear_edits()  # Remove all persistent interventions

    with model.trace("Hello"):
        out = model.transformer.h[0].output[0].save()
    assert not torch.all(out == 0)


# ============================================================================ 5.7 Early Stopping


def test_5_7_early_stopping(model):
    with model.trace("Hello") as tracer:
        # Only need first layers (the tiny GPT-2 has 4)
        for i in range(3):
            out = model.transformer.h[i].output[0].save()

        tracer.stop()  # Don't execute remaining layers
    assert isinstance(out, torch.Tensor)


# ============================================================================ 5.8 Barriers


def test_5_8_broken_without_barrier(model):
    # BROKEN - both invokes access transformer.h[1], clean_hs is undefined in invoke 2
    with pytest.raises(NameError, match="clean_hs"):
        with model.trace() as tracer:
            with tracer.invoke("Hello"):
                clean_hs = model.transformer.h[1].output[0]

            with tracer.invoke("World"):
                model.transformer.h[1].output[0] = clean_hs  # NameError: clean_hs is not defined


def test_5_8_barrier(model):
    with model.trace() as tracer:
        barrier = tracer.barrier(2)  # Create barrier for 2 invokes

        with tracer.invoke("Hello"):
            clean_hs = model.transformer.h[1].output[0]
            barrier()  # Invoke 1 waits here - clean_hs is now materialized

        with tracer.invoke("World"):
            barrier()  # Invoke 2 waits until invoke 1 has passed its barrier
            model.transformer.h[1].output[0] = clean_hs  # Now available!
            output = model.lm_head.output.save()

    assert torch.allclose(output, _copy_row_reference(model, ["Hello", "World"], model._module.transformer.h[1]),
                          atol=1e-5)


def _copy_row_reference(model, prompts, module, index=None):
    """Plain torch: the batch with ``module``'s output row 1 replaced by row 0 (lm_head logits, row 1)."""
    def copy_row(m, a, o):
        o[1] = o[0]
        return o

    enc = model.tokenizer(prompts, return_tensors="pt", padding=True)
    handle = module.register_forward_hook(copy_row)
    try:
        with torch.no_grad():
            logits = model._module(**enc).logits
    finally:
        handle.remove()
    return logits[1:] if index is None else logits[1:, index]


def test_3_2_barrier_embeddings_example(model):
    llm = model
    with llm.trace() as tracer:

        barrier = tracer.barrier(2)  # Create barrier for 2 participants

        # First invoke: capture embeddings from "Paris" prompt
        with tracer.invoke("The Eiffel Tower is in"):
            paris_embeddings = llm.transformer.wte.output
            barrier()  # Wait here until both invokes reach this point

        # Second invoke: patch those embeddings into a different prompt!
        with tracer.invoke("_ _ _ _ _"):  # Dummy tokens (same length)
            barrier()  # Synchronize with first invoke
            llm.transformer.wte.output = paris_embeddings  # Now paris_embeddings is available!
            patched_output = llm.lm_head.output[:, -1].save()

    expected = _copy_row_reference(llm, ["The Eiffel Tower is in", "_ _ _ _ _"], llm._module.transformer.wte, -1)
    assert torch.allclose(patched_output, expected, atol=1e-5)


# ============================================================================ 5.10 Caching


def test_5_10_caching(model):
    with model.trace("Hello") as tracer:
        cache = tracer.cache()

    # Access cached values after the trace
    layer0_out = cache['model.transformer.h.0'].output
    # or
    layer0_out_too = cache.model.transformer.h[0].output[0]
    assert torch.equal(layer0_out[0], layer0_out_too)


def test_5_10_options(model):
    with model.trace("Hello") as tracer:
        cache = tracer.cache(
            include_inputs=True,   # Also cache inputs
            include_output=True,   # Cache outputs (default)
            modules=[model.transformer.h[0], model.transformer.h[1]],  # Specific modules only
        )
    assert sorted(cache.keys()) == ["model.transformer.h.0", "model.transformer.h.1"]
    assert cache.model.transformer.h[1].inputs is not None


# ============================================================================ 5.11 Trace Result


def test_5_11_trace_result(model):
    with model.trace("Hello") as tracer:
        hidden = model.transformer.h[0].output[0].save()

        # Get the final output of the trace (model forward output)
        result = tracer.result.save()

    print(result.logits.shape)
    enc = model.tokenizer("Hello", return_tensors="pt")
    with torch.no_grad():
        expected = model._module(**enc, output_hidden_states=True)
    torch.testing.assert_close(result.logits, expected.logits)
    block0 = expected.hidden_states[1]  # the output of block 0
    torch.testing.assert_close(hidden, block0[0] if hidden.dim() == 2 else block0)


def test_5_11_generation_result(model):
    with model.generate("Hello", max_new_tokens=5) as tracer:
        # Get the generated tokens
        output = tracer.result.save()

    print(model.tokenizer.decode(output[0]))
    assert output.shape[1] == len(model.tokenizer("Hello")["input_ids"]) + 5


# ============================================================================ 6.2 Batching


def test_6_2_input_and_empty_invokes(model):
    with model.trace() as tracer:
        # Input invoke: batch_group = [0, 1], sees only its own slice
        with tracer.invoke("Hello"):
            out1 = model.output.save()        # Shape: [1, ...]

        # Input invoke: batch_group = [1, 1], sees only its own slice
        with tracer.invoke("World"):
            out2 = model.output.save()        # Shape: [1, ...]

        # Empty invoke: batch_group = None, sees the FULL batch
        with tracer.invoke():
            out_all = model.output.save()     # Shape: [2, ...]

        # Another empty invoke: also sees the full batch
        with tracer.invoke():
            out_all2 = model.output.save()    # Shape: [2, ...]

    assert out1.logits.shape[0] == 1 and out2.logits.shape[0] == 1
    assert out_all.logits.shape[0] == 2 and out_all2.logits.shape[0] == 2


def test_6_2_how_batching_works(model):
    with model.trace() as tracer:
        with tracer.invoke("Hello"):    # Input invoke
            hello = model.transformer.wte.input.save()
        with tracer.invoke("World"):    # Input invoke (triggers _batch)
            world = model.transformer.wte.input.save()
        with tracer.invoke():           # Empty invoke (no _batch needed)
            batch = model.transformer.wte.input.save()
    # one batch of both prompts; each input invoke sees its own row, the empty one both
    assert batch.shape[0] == 2
    assert torch.equal(batch[0:1], hello) and torch.equal(batch[1:2], world)
    assert hello[0, -1].item() == model.tokenizer("Hello")["input_ids"][-1]
    assert world[0, -1].item() == model.tokenizer("World")["input_ids"][-1]


def test_6_2_custom_batchable_model():
    class Model(NNsight):
        def _prepare_input(self, *inputs, **kwargs):
            """Normalize user input. Returns (args, kwargs, batch_size).
            batch_size=0 for empty invokes."""
            if inputs or kwargs:
                return inputs, kwargs, len(inputs[0])
            return inputs, kwargs, 0

        def _batch(self, batched_input, *args, **kwargs):
            """Combine multiple invokes' inputs into one batch."""
            return (torch.cat([batched_input[0][0], args[0]]),), kwargs

    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh())
    model = Model(net)
    a, b = torch.randn(1, 4), torch.randn(2, 4)
    with model.trace() as tracer:
        with tracer.invoke(a):
            out_a = model.output.save()
        with tracer.invoke(b):
            out_b = model.output.save()
        with tracer.invoke():
            out_all = model.output.save()
    assert torch.allclose(out_all, net(torch.cat([a, b])))
    assert out_a.shape == (1, 4) and out_b.shape == (2, 4)


# ============================================================================ 6.3 LanguageModel


def test_6_3_kwargs_forwarding(llama_path):
    import importlib.util

    # device_map needs `accelerate`, which the test environment doesn't install
    placement = {"device_map": "cpu"} if importlib.util.find_spec("accelerate") else {}
    model = LanguageModel(
        llama_path,
        **placement,                              # (the doc uses device_map="auto" on GPUs)
        torch_dtype=torch.float32,                # Model precision
        trust_remote_code=True,                   # For custom model architectures
        attn_implementation="eager",              # Attention backend (flash_attention_2 needs CUDA)
        dispatch=True,                            # NNsight-specific: load immediately
    )
    assert model._module.config._attn_implementation == "eager"
    with model.trace("Hello"):
        out = model.lm_head.output.save()
    assert out.dtype == torch.float32


def test_6_3_input_formats(model):
    tokenizer = model.tokenizer
    tensor = torch.tensor([[1, 2, 3]])
    mask = torch.ones_like(tensor)
    inputs = [
        "Hello",                                             # String
        ["Hello", "World"],                                  # List of strings
        [1, 2, 3, 4],                                        # Token IDs
        torch.tensor([[1, 2, 3]]),
        tokenizer("Hello", return_tensors="pt"),             # BatchEncoding (pre-tokenized)
        {"input_ids": tensor, "attention_mask": mask},       # Dict
    ]
    rows = []
    for value in inputs:
        with model.trace(value):
            logits = model.lm_head.output.save()
        rows.append(logits.shape[0])
    assert rows == [1, 2, 1, 1, 1, 1]


def test_6_3_tokenizer_defaults(model):
    assert model.tokenizer.padding_side == "left"
    assert model.tokenizer.pad_token is not None


def test_6_3_generation(model):
    with model.generate("Hello", max_new_tokens=5) as tracer:
        for step in tracer.iter[:]:
            logits = model.lm_head.output.save()

        output = tracer.result.save()
    assert logits.shape[1] == 1 and output.shape[1] == len(model.tokenizer("Hello")["input_ids"]) + 5


def test_6_3_generator_module(model):
    # 4.4 / 6.3: model.generate as a trace context, and the generator's output
    with model.generate("Hello", max_new_tokens=10) as tracer:
        output = model.generator.output.save()
    assert torch.equal(output, model.generate("Hello", max_new_tokens=10))
