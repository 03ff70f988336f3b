"""The per-step path of the vLLM worker: which modules take part, and how interventions are resumed.

* A module takes part in a step only while some live request's hook plan (read from its program's
  IR) names it; a request whose plan can't be named statically makes every module take part, and
  that fallback is counted (``vllm.watch_all``).
* Interventions run on the interleaver's hub thread: the engine hands a provider's value over once
  for all of the step's mediators waiting for it, not once per mediator.
"""
import pytest
import torch

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

PROMPTS = ["Hello", "The cat sat on the mat.", "A river runs", "One two three"]


@pytest.fixture(scope="module")
def model(llama_path):
    from nnsight.modeling.vllm import VLLM

    model = VLLM(llama_path, tensor_parallel_size=1, dispatch=True)
    yield model
    model.shutdown()


def _hub_calls(model) -> int:
    """Thread hand-offs to the worker's hub so far (the local engine runs in this process)."""
    replies = model.llm.collective_rpc(lambda worker: worker.model_runner.nnsight_model.interleaver.hub.calls)
    return next(r for r in replies if r is not None)


def test_a_request_watching_a_layer_and_one_watching_none_share_the_steps(model):
    """The layer is offered to the request that names it at every step, with its own counter; the
    other request's logits are those of a trace without the first."""
    with model.trace(temperature=0.0, max_tokens=4, ignore_eos=True) as tracer:
        mlp = list().save()
        logits = list().save()
        with tracer.invoke(PROMPTS[0]):
            for step in tracer.iter[:]:
                mlp.append(model.model.layers[0].mlp.output)
        with tracer.invoke(PROMPTS[1]):
            for step in tracer.iter[:]:
                logits.append(model.logits.output)
    with model.trace(PROMPTS[0], temperature=0.0, max_tokens=4, ignore_eos=True) as tracer:
        mlp_alone = list().save()
        for step in tracer.iter[:]:
            mlp_alone.append(model.model.layers[0].mlp.output)
    with model.trace(PROMPTS[1], temperature=0.0, max_tokens=4, ignore_eos=True) as tracer:
        logits_alone = list().save()
        for step in tracer.iter[:]:
            logits_alone.append(model.logits.output)
    assert len(mlp) == len(mlp_alone) == 4 and len(logits) == len(logits_alone) == 4
    assert mlp[0].shape[0] > 1 and [m.shape[0] for m in mlp[1:]] == [1, 1, 1]  # prompt, then one token a step
    for got, want in zip(mlp + logits, mlp_alone + logits_alone):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_a_dynamic_module_access_makes_every_module_take_part_and_is_counted(model):
    from compiler.fallbacks import FALLBACKS

    before = FALLBACKS.counts()["vllm.watch_all"]
    index = 0
    with model.trace(PROMPTS[2], temperature=0.0, max_tokens=2, ignore_eos=True) as tracer:
        dynamic = list().save()
        for step in tracer.iter[:]:
            dynamic.append(model.model.layers[index].mlp.output)
    assert FALLBACKS.counts()["vllm.watch_all"] == before + 1
    with model.trace(PROMPTS[2], temperature=0.0, max_tokens=2, ignore_eos=True) as tracer:
        static = list().save()
        for step in tracer.iter[:]:
            static.append(model.model.layers[0].mlp.output)
    assert FALLBACKS.counts()["vllm.watch_all"] == before + 1  # a static plan: no fallback
    assert len(dynamic) == len(static) == 2
    for got, want in zip(dynamic, static):
        torch.testing.assert_close(got, want)


def test_one_hand_off_per_provider_for_all_waiting_requests(model):
    """Four requests each waiting for the logits at every step: the engine hands the value over to
    the hub once per step, not once per request; the loops' wait for each step's start is answered
    in that same hand-off (their plans name nothing before the logits)."""
    steps = 6
    start = _hub_calls(model)
    with model.trace(temperature=0.0, max_tokens=steps, ignore_eos=True) as tracer:
        saved = list().save()
        for prompt in PROMPTS:
            with tracer.invoke(prompt):
                for step in tracer.iter[:]:
                    saved.append(model.logits.output)
    calls = _hub_calls(model) - start
    assert len(saved) == steps * len(PROMPTS)
    # per request: its start, and when it finishes the step loop's end and its finish
    per_request = 3
    assert calls <= steps + per_request * len(PROMPTS), calls


def test_deferred_step_starts_keep_invoke_order_and_miss_no_input(model):
    """Loops woken late for their step start still run in invoke order before anything else of the
    step, and one that reads a module's *input* (before the logits) is woken in time for it."""
    steps = 3
    with model.trace(temperature=0.0, max_tokens=steps, ignore_eos=True) as tracer:
        order = list().save()
        inputs = list().save()
        logits = list().save()
        with tracer.invoke(PROMPTS[0]):
            for step in tracer.iter[:]:
                order.append(("logits", step))
                logits.append(model.logits.output)
        with tracer.invoke(PROMPTS[1]):
            for step in tracer.iter[:]:
                order.append(("input", step))
                inputs.append(model.model.layers[1].mlp.input)
                order.append(("samples", step))
                model.samples.output
    assert order == [item for step in range(steps)
                     for item in (("logits", step), ("input", step), ("samples", step))]
    with model.trace(PROMPTS[1], temperature=0.0, max_tokens=steps, ignore_eos=True) as tracer:
        alone = list().save()
        for step in tracer.iter[:]:
            alone.append(model.model.layers[1].mlp.input)
    assert len(inputs) == len(alone) == steps and len(logits) == steps
    for got, want in zip(inputs, alone):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_errors_thrown_by_torch_at_later_steps_leave_the_engine_running(model):
    """C++ exceptions (they record a backtrace, unwinding the stack) raised by interventions
    resumed at different steps: each trace fails with the error, the engine goes on."""
    for bad_step in (0, 2):
        with pytest.raises(RuntimeError):
            with model.trace(temperature=0.0, max_tokens=4, ignore_eos=True) as tracer:
                out = list().save()
                for prompt in PROMPTS[:3]:
                    with tracer.invoke(prompt):
                        for step in tracer.iter[:]:
                            model.model.layers[0].output
                            if step == bad_step and prompt == PROMPTS[1]:
                                torch.zeros(2) + torch.zeros(3)
                            out.append(model.logits.output)
        with pytest.raises(IndexError):
            with model.trace(PROMPTS[2], temperature=0.0, max_tokens=4, ignore_eos=True) as tracer:
                for step in tracer.iter[:]:
                    if step == bad_step + 1:
                        model.logits.output[1000]
    with model.trace(PROMPTS[0], temperature=0.0, max_tokens=3) as tracer:
        ok = list().save()
        for step in tracer.iter[:]:
            ok.append(model.logits.output)
    assert len(ok) == 3


class _Pair:
    """A user class: its instances come back as this class, through the bytes."""

    def __init__(self, a, b):
        self.a, self.b = a, b


def _logits_and_more(model, prompt):
    with model.trace(prompt, temperature=0.0, max_tokens=3, ignore_eos=True) as tracer:
        logits = list().save()
        nested = dict().save()
        for step in tracer.iter[:]:
            logits.append(model.logits.output)
        nested["first"] = (logits[0], [1, "two", None, 3.5])
    return logits, nested


def test_an_in_process_engine_hands_plain_saves_over_without_the_bytes(model, monkeypatch):
    """Tensors and plain containers saved on an engine in this process come back as copies, not
    through encoding and decoding; the values equal the bytes path's, the tensors are the caller's own
    (a later step cannot write them), and nothing falls back."""
    from compiler.fallbacks import FALLBACKS
    from nnsight.modeling.vllm import transport

    assert model.engine_in_process  # (VLLM_ENABLE_V1_MULTIPROCESSING=0, one worker: this process)
    shared_calls = []
    real_share = transport.share_saves
    monkeypatch.setattr(transport, "share_saves", lambda saved: shared_calls.append(1) or real_share(saved))
    before = FALLBACKS.counts()["vllm.shared_saves"]
    logits, nested = _logits_and_more(model, PROMPTS[0])
    assert shared_calls and FALLBACKS.counts()["vllm.shared_saves"] == before
    monkeypatch.setattr(transport, "share_saves", lambda saved: None)  # the bytes path, as between processes
    logits_bytes, nested_bytes = _logits_and_more(model, PROMPTS[0])
    assert len(logits) == len(logits_bytes) == 3
    for got, want in zip(logits, logits_bytes):
        assert type(got) is torch.Tensor and got.device.type == "cpu" and not got.requires_grad
        torch.testing.assert_close(got, want, atol=0, rtol=0)
    assert nested["first"][1] == nested_bytes["first"][1] == [1, "two", None, 3.5]
    torch.testing.assert_close(nested["first"][0], logits[0], atol=0, rtol=0)
    kept = logits[0].clone()
    _logits_and_more(model, PROMPTS[1])  # the engine runs on: what was handed over stays as it was
    assert torch.equal(logits[0], kept)


def test_a_save_that_is_not_plain_data_takes_the_bytes_and_is_counted(model):
    from compiler.fallbacks import FALLBACKS

    before = FALLBACKS.counts()["vllm.shared_saves"]
    with model.trace(PROMPTS[2], temperature=0.0, max_tokens=2, ignore_eos=True) as tracer:
        pair = _Pair(1, "x").save()
        result = tracer.result.save()
    assert FALLBACKS.counts()["vllm.shared_saves"] == before + 1
    assert type(pair) is _Pair and (pair.a, pair.b) == (1, "x")  # the user's own class, as before
    assert type(result).__name__ == "RequestOutput" and len(result.outputs[0].token_ids) == 2


def test_saved_values_from_the_runners_reused_buffers_keep_their_steps_values(model):
    """A decoder layer's input is the runner's `positions` buffer, refilled every step: what was
    saved at an earlier step must still hold that step's positions when the trace collects it."""
    steps = 3
    with model.trace(PROMPTS[1], temperature=0.0, max_tokens=steps, ignore_eos=True) as tracer:
        positions = list().save()
        for step in tracer.iter[:]:
            positions.append(model.model.layers[1].input)
    prompt_len = positions[0].shape[0]
    assert positions[0].tolist() == list(range(prompt_len))
    assert [p.tolist() for p in positions[1:]] == [[prompt_len + i] for i in range(steps - 1)]

