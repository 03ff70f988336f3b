"""VLLM(mode="async"): streaming with saves on every output. AsyncLLM runs its engine core in a
separate process, so this also checks that interventions travel and come back as bytes only."""
import asyncio

import pytest
import torch

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def model(gpt2_path):
    from nnsight.modeling.vllm import VLLM

    model = VLLM(gpt2_path, tensor_parallel_size=1, dispatch=True, mode="async")
    yield model
    model.shutdown()


def test_spec_async_example(model, capsys):
    """The documented async (streaming) vLLM usage, as written."""
    async def main():
        with model.trace("Hello", temperature=0.0, max_tokens=5) as tracer:
            logits = model.logits.output.save()

        async for output in tracer.backend():
            print(f"finished={output.finished}, saves={list(output.saves.keys())}")

    asyncio.run(main())
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines and all(line.endswith("saves=['logits']") for line in lines)
    assert lines[-1].startswith("finished=True") and all(l.startswith("finished=False") for l in lines[:-1])


def test_streamed_saves_follow_the_generation(model, gpt2_path):
    from transformers import AutoModelForCausalLM

    async def main():
        with model.trace(temperature=0.0, max_tokens=4) as tracer:
            steps = list().save()
            with tracer.invoke("The capital of France is"):
                for step in tracer.iter[:]:
                    steps.append(model.logits.output)
                result = tracer.result.save()
        return [output async for output in tracer.backend()]

    outputs = asyncio.run(main())
    assert all("steps" in o.saves for o in outputs)
    final = outputs[-1]
    assert final.finished and len(final.saves["steps"]) == 4
    assert final.saves["result"].outputs[0].token_ids == final.outputs[0].token_ids
    tokens = list(final.outputs[0].token_ids)
    assert [int(l.argmax()) for l in final.saves["steps"]] == tokens
    hf = AutoModelForCausalLM.from_pretrained(gpt2_path, dtype=torch.float32).eval()
    prompt = list(final.prompt_token_ids)
    with torch.no_grad():
        ref = hf(torch.tensor([prompt])).logits[0, -1]
    torch.testing.assert_close(final.saves["steps"][0][0], ref, atol=1e-4, rtol=1e-4)


def test_async_intervention_write(model):
    async def main():
        with model.trace("Hello", temperature=0.0, max_tokens=3) as tracer:
            for step in tracer.iter[:]:
                model.logits.output[:] = -1e9
                model.logits.output[:, 11] = 0
        return [output async for output in tracer.backend()]

    outputs = asyncio.run(main())
    assert list(outputs[-1].outputs[0].token_ids) == [11, 11, 11]


def test_async_stop_aborts_only_its_request(model):
    """tracer.stop() ends the intervention and aborts its request; vLLM streams its "abort" output."""
    async def main():
        with model.trace(temperature=0.0, max_tokens=8, ignore_eos=True) as tracer:
            steps = list().save()
            with tracer.invoke("Hello"):
                for step in tracer.iter[:]:
                    steps.append(step)
                    if step == 1:
                        tracer.stop()
            with tracer.invoke("The cat"):
                pass
        return [output async for output in tracer.backend()]

    outputs = asyncio.run(main())
    finals = {o.request_id[-1]: o for o in outputs if o.finished}
    stopped, full = finals["0"], finals["1"]
    assert stopped.outputs[0].finish_reason == "abort"
    # the step that stopped, and at most what the engine core had already started
    assert 2 <= len(stopped.outputs[0].token_ids) < 8
    assert full.outputs[0].finish_reason == "length" and len(full.outputs[0].token_ids) == 8
    assert outputs[-1].saves["steps"] == [0, 1]
    assert asyncio.run(_one_token_trace(model)) == 1  # the engine goes on


async def _one_token_trace(model):
    with model.trace("Hello", temperature=0.0, max_tokens=1) as tracer:
        logits = model.logits.output.save()
    outputs = [output async for output in tracer.backend()]
    return len(outputs[-1].outputs[0].token_ids)
