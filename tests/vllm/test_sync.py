"""VLLM (sync engine) against references: plain vLLM generation and an HF forward of the same weights."""
import pytest
import torch

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def model(llama_path):
    from nnsight.modeling.vllm import VLLM

    model = VLLM(llama_path, tensor_parallel_size=1, dispatch=True)
    yield model
    model.shutdown()


def hf_logits(hf, ids):
    with torch.no_grad():
        return hf(torch.tensor([ids])).logits[0]


def test_spec_example(model, hf_llama):
    """The documented sync vLLM usage, as written."""
    with model.trace("Hello", temperature=0.0, max_tokens=5) as tracer:
        logits = list().save()

        for step in tracer.iter[:]:
            logits.append(model.logits.output)

        output = tracer.result.save()

    print(output)
    tokens = list(output.outputs[0].token_ids)
    assert len(tokens) == 5 and len(logits) == 5
    assert [int(l.argmax(-1)) for l in logits] == tokens  # greedy: each step's logits chose its token
    assert tracer.result[0] is output  # `tracer.result` after the trace: every RequestOutput
    # the same tokens as vLLM without interventions, and as HF greedy decoding of the same weights
    from vllm import SamplingParams

    plain = model.llm.generate(["Hello"], SamplingParams(temperature=0.0, max_tokens=5), use_tqdm=False)
    assert list(plain[0].outputs[0].token_ids) == tokens
    prompt = list(output.prompt_token_ids)
    greedy = []
    for _ in range(5):  # HF greedy decoding, by hand (no generation-config surprises)
        greedy.append(int(hf_logits(hf_llama, prompt + greedy)[-1].argmax()))
    assert greedy == tokens
    # every step's logits are the logits of the sequence so far
    for k, step_logits in enumerate(logits):
        ref = hf_logits(hf_llama, prompt + tokens[:k])[-1]
        assert step_logits.shape == (1, ref.shape[-1])
        torch.testing.assert_close(step_logits[0], ref, atol=1e-4, rtol=1e-4)


def test_samples_and_bounded_iteration(model):
    with model.trace("The capital of France is", temperature=0.0, max_tokens=4) as tracer:
        samples = list().save()
        for step in tracer.iter[:]:
            samples.append(model.samples.output)
        middle = list().save()
        for step in tracer.iter[1:3]:
            middle.append(step)
    tokens = list(tracer.result[0].outputs[0].token_ids)
    assert [int(s.reshape(-1)[0]) for s in samples] == tokens
    assert samples[0].shape == (1, 1)
    assert middle == [1, 2]


def test_two_invokes_narrowed_module_outputs(model, hf_llama):
    """Flat [total_tokens, hidden] tensors are cut per invoke; logits per request row."""
    prompts = ["Hello", "The capital of France is Paris and"]
    with model.trace(temperature=0.0, max_tokens=3) as tracer:
        with tracer.invoke(prompts[0]):
            mlp_a = model.model.layers[0].mlp.output.save()
            logits_a = model.logits.output.save()
        with tracer.invoke(prompts[1]):
            mlp_b = model.model.layers[0].mlp.output.save()
            logits_b = model.logits.output.save()
    out_a, out_b = tracer.result
    ids_a, ids_b = list(out_a.prompt_token_ids), list(out_b.prompt_token_ids)
    assert len(ids_a) != len(ids_b)
    assert mlp_a.shape == (len(ids_a), 64) and mlp_b.shape == (len(ids_b), 64)
    captured = {}
    hook = hf_llama.model.layers[0].mlp.register_forward_hook(lambda m, i, o: captured.setdefault("o", o))
    try:
        for ids, mlp, logits in ((ids_a, mlp_a, logits_a), (ids_b, mlp_b, logits_b)):
            captured.clear()
            ref = hf_logits(hf_llama, ids)
            torch.testing.assert_close(mlp, captured["o"][0], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(logits[0], ref[-1], atol=1e-4, rtol=1e-4)
    finally:
        hook.remove()


def test_zeroing_mlp_output_changes_logits(model, hf_llama):
    with model.trace("Hello world", temperature=0.0, max_tokens=1) as tracer:
        clean = model.logits.output.save()
    with model.trace("Hello world", temperature=0.0, max_tokens=1) as tracer:
        model.model.layers[0].mlp.output[:] = 0
        edited = model.logits.output.save()
    ids = list(tracer.result[0].prompt_token_ids)
    assert not torch.allclose(clean, edited)
    hook = hf_llama.model.layers[0].mlp.register_forward_hook(lambda m, i, o: torch.zeros_like(o))
    try:
        ref = hf_logits(hf_llama, ids)[-1]
    finally:
        hook.remove()
    torch.testing.assert_close(edited[0], ref, atol=1e-4, rtol=1e-4)


def test_logits_write_forces_tokens(model):
    with model.trace("Hello", temperature=0.0, max_tokens=4) as tracer:
        for step in tracer.iter[:]:
            logits = model.logits.output
            forced = torch.full_like(logits, -1e9)
            forced[:, 7] = 0
            model.logits.output = forced
    assert list(tracer.result[0].outputs[0].token_ids) == [7, 7, 7, 7]


def test_early_end_of_sequence_ends_the_loop(model):
    """The request stops at EOS before max_tokens: the loop ends and the code after it runs."""
    eos = model.tokenizer.eos_token_id
    with model.trace("Hello", temperature=0.0, max_tokens=6) as tracer:
        steps = list().save()
        for step in tracer.iter[:]:
            steps.append(step)
            if step == 1:
                model.logits.output[:, eos] = 1e9
        result = tracer.result.save()
    assert steps == [0, 1]
    assert list(result.outputs[0].token_ids)[-1] == eos and len(result.outputs[0].token_ids) == 2


def test_shared_saved_list_across_invokes(model):
    with model.trace(temperature=0.0, max_tokens=2) as tracer:
        rows = list().save()
        with tracer.invoke("Hello"):
            rows.append(("a", model.samples.output))
        with tracer.invoke("The cat sat on the mat."):
            rows.append(("b", model.samples.output))
    assert sorted(name for name, _ in rows) == ["a", "b"]
    firsts = {name: int(t.reshape(-1)[0]) for name, t in rows}
    assert firsts["a"] == tracer.result[0].outputs[0].token_ids[0]
    assert firsts["b"] == tracer.result[1].outputs[0].token_ids[0]


def test_loop_variable_of_the_body_is_each_invokes_own(model):
    prompts = ["Hello", "The cat sat on the mat."]
    with model.trace(temperature=0.0, max_tokens=1) as tracer:
        seen = list().save()
        for i, prompt in enumerate(prompts):
            with tracer.invoke(prompt):
                seen.append((i, prompt, int(model.samples.output.reshape(-1)[0])))
    assert sorted(seen) == [(i, p, tracer.result[i].outputs[0].token_ids[0]) for i, p in enumerate(prompts)]


def test_intervention_error_is_raised_with_its_type(model):
    with pytest.raises(IndexError) as info:
        with model.trace("Hello", temperature=0.0, max_tokens=2):
            model.logits.output[5]
    assert "vLLM worker" in "".join(getattr(info.value, "__notes__", []))
    # the engine is still usable
    with model.trace("Hello", temperature=0.0, max_tokens=1):
        ok = model.logits.output.save()
    assert ok.shape[0] == 1


def test_bad_sampling_argument(model):
    with pytest.raises(TypeError, match="sampling"):
        with model.trace("Hello", temprature=0.0):
            model.logits.output.save()


def test_head_dim_below_32_is_refused(tmp_path):
    import json

    from nnsight.modeling.vllm.config import engine_kwargs

    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": 32, "num_attention_heads": 2, "num_hidden_layers": 1,
        "intermediate_size": 64, "vocab_size": 100}))
    with pytest.raises(ValueError, match="head size 16"):
        engine_kwargs(str(tmp_path), {})
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": 64, "num_attention_heads": 2, "num_hidden_layers": 1,
        "intermediate_size": 64, "vocab_size": 100, "max_position_embeddings": 128}))
    kwargs = engine_kwargs(str(tmp_path), {})
    assert kwargs["kv_cache_memory_bytes"] >= 64 * 2 ** 20 and kwargs["enforce_eager"] is True


def test_stop_aborts_the_request_and_keeps_saves(model):
    """tracer.stop(): the intervention ends, its request is aborted, the other invoke runs on."""
    from vllm import SamplingParams

    plain = model.llm.generate(["Hello", "The cat"], SamplingParams(temperature=0.0, max_tokens=6), use_tqdm=False)
    plain = [list(p.outputs[0].token_ids) for p in plain]
    with model.trace(temperature=0.0, max_tokens=6) as tracer:
        steps = list().save()
        with tracer.invoke("Hello"):
            for step in tracer.iter[:]:
                steps.append(step)
                if step == 1:
                    tracer.stop()
                    steps.append("not reached")
        with tracer.invoke("The cat"):
            other = list().save()
            for step in tracer.iter[:]:
                other.append(int(model.samples.output.reshape(-1)[0]))
    stopped, full = tracer.result
    assert steps == [0, 1]
    # the stopped request has the tokens of its steps up to the one that stopped, then was aborted
    assert list(stopped.outputs[0].token_ids) == plain[0][:2]
    assert stopped.outputs[0].finish_reason == "abort" and stopped.finished
    assert list(full.outputs[0].token_ids) == plain[1] == other
    assert full.outputs[0].finish_reason == "length"
    assert not model.llm.llm_engine.has_unfinished_requests()
    # the engine is usable afterwards
    with model.trace("Hello", temperature=0.0, max_tokens=6) as tracer:
        pass
    assert list(tracer.result[0].outputs[0].token_ids) == plain[0]


def test_stop_before_the_first_step(model):
    with model.trace("Hello", temperature=0.0, max_tokens=6) as tracer:
        after = list().save()
        first = model.logits.output.save()
        tracer.stop()
        after.append(model.logits.output)
    assert first.shape[0] == 1 and after == []
    out = tracer.result[0]
    assert len(out.outputs[0].token_ids) == 1 and out.outputs[0].finish_reason == "abort"
    assert int(first.argmax(-1)) == out.outputs[0].token_ids[0]


def test_n_greater_than_one_is_refused_at_trace_time(model):
    with pytest.raises(ValueError, match=r"n > 1 .*not supported.*one invoke per sample"):
        with model.trace("Hello", n=2, temperature=0.8, seed=0, max_tokens=3):
            logits = model.logits.output.save()
    assert not model.llm.llm_engine.has_unfinished_requests()
    # the alternative the error names: one request per sample, each running the intervention
    with model.trace(temperature=0.8, max_tokens=3) as tracer:
        rows = list().save()
        with tracer.invoke(["Hello"] * 2):
            for step in tracer.iter[:]:
                rows.append(model.samples.output)
    assert len(tracer.result) == 2 and len(rows) == 6
    samples = sorted(int(r.reshape(-1)[0]) for r in rows)
    assert samples == sorted(t for out in tracer.result for t in out.outputs[0].token_ids)


def test_empty_invoke_is_refused_at_trace_time(model):
    with pytest.raises(ValueError, match=r"Empty invokes .* not supported"):
        with model.trace(temperature=0.0, max_tokens=2) as tracer:
            with tracer.invoke("Hello"):
                a = model.logits.output.save()
            with tracer.invoke():
                everything = model.logits.output.save()
    assert not model.llm.llm_engine.has_unfinished_requests()


def test_stop_in_the_trace_body_is_refused(model):
    with pytest.raises(NotImplementedError, match=r"tracer.stop\(\) inside"):
        with model.trace(temperature=0.0, max_tokens=2) as tracer:
            with tracer.invoke("Hello"):
                a = model.logits.output.save()
            tracer.stop()
    assert not model.llm.llm_engine.has_unfinished_requests()


def _halt(tracer):
    tracer.stop()


def test_stop_called_from_a_user_function(model):
    with model.trace("Hello", temperature=0.0, max_tokens=6) as tracer:
        first = model.logits.output.save()
        _halt(tracer)
    out = tracer.result[0]
    assert len(out.outputs[0].token_ids) == 1 and out.outputs[0].finish_reason == "abort"
