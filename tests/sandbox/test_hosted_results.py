"""Saved objects of the model process (the KV cache in ``model.output``) as results of the untrusted tier.

The sandbox only ever holds a handle to the cache; the model process fills the real object into the
result. These jobs run through the real sandboxed server: the result equals the local one, a handle
the job fabricates is refused without leaking anything, and the key's result-size limit counts the
filled-in cache.
"""
import pytest
import torch

import nnsight
from serverproc import create_key

PROMPT = "The Eiffel Tower is in the city of"


def _layers(cache):
    return [(layer.keys, layer.values) for layer in cache.layers]


def _same_cache(got, want):
    assert type(got) is type(want)
    pairs = list(zip(_layers(got), _layers(want)))
    assert len(pairs) == len(want.layers) > 0
    for (gk, gv), (wk, wv) in pairs:
        assert torch.equal(gk, wk) and torch.equal(gv, wv)


def _run(gpt2, remote):
    with gpt2.trace(PROMPT, remote=remote):
        gpt2.transformer.h[1].mlp.output[:, -1] = 0  # an intervention the cache of later layers reflects
        output = gpt2.output.save()
        both = nnsight.save({"cache": gpt2.output.past_key_values, "logits": gpt2.output.logits[:, -1]})
    return output, both


def test_the_whole_output_and_a_dict_holding_the_cache_equal_the_local_results(gpt2, remote_config):
    (output, both), (want, want_both) = _run(gpt2, True), _run(gpt2, None)
    assert type(output) is type(want) and list(output.keys()) == list(want.keys())
    assert torch.equal(output.logits, want.logits)
    _same_cache(output.past_key_values, want.past_key_values)
    assert output.past_key_values is output["past_key_values"]  # one object, as locally
    _same_cache(both["cache"], want_both["cache"])
    assert torch.equal(both["logits"], want_both["logits"])
    assert both["cache"] is output.past_key_values  # saved twice, one object (as locally)
    assert (want_both["cache"] is want.past_key_values) is True


def test_the_cache_of_a_generation_equals_the_local_one(gpt2, remote_config):
    def run(remote):
        with gpt2.generate(PROMPT, max_new_tokens=3, do_sample=False, remote=remote) as tracer:
            with tracer.all():
                cache = nnsight.save({"cache": gpt2.output.past_key_values})
            tokens = gpt2.generator.output.save()
        return cache, tokens

    (cache, tokens), (want, want_tokens) = run(True), run(None)
    assert torch.equal(tokens, want_tokens)
    _same_cache(cache["cache"], want["cache"])


@pytest.mark.parametrize("forged", [0, 1, 7, (1 << 20) + 1, -1, 1 << 62])
def test_a_handle_the_job_fabricates_is_refused_and_leaks_nothing(gpt2, remote_config, forged):
    """The job builds a HostedObject with a handle of its choosing (another job's, a guess) and
    saves it: the model process refuses the handle; nothing of any cache comes back, and the next
    job's result is exactly right."""
    with pytest.raises(Exception) as caught:
        with gpt2.trace(PROMPT, remote=True):
            real = gpt2.output.past_key_values
            fake = type(real)(forged, "DynamicCache")
            stolen = nnsight.save({"cache": fake})  # noqa: F841
    text = str(caught.value)
    assert "SandboxProtocolError" in text and "hosted object" in text, text
    assert "DynamicLayer" not in text and "tensor" not in text
    output, _ = _run(gpt2, True)
    want, _ = _run(gpt2, None)
    _same_cache(output.past_key_values, want.past_key_values)


def test_a_fabricated_handle_passed_to_the_model_is_refused(gpt2, remote_config):
    with pytest.raises(Exception, match="never sent"):
        with gpt2.trace(PROMPT, remote=True):
            fake = type(gpt2.output.past_key_values)(3, "DynamicCache")
            out = gpt2.lm_head(fake).save()  # noqa: F841


@pytest.fixture(scope="module")
def small_key(server, server_data):
    """A key whose result-size limit fits the logits of one position but not the cache."""
    return create_key(server_data, "small-results", "--max-result-bytes", "4000")


def test_the_result_size_limit_counts_the_filled_in_cache(gpt2, remote_config, small_key):
    from nnsight import CONFIG

    CONFIG.API.APIKEY = small_key  # (remote_config restores the test key afterwards)
    with gpt2.trace(PROMPT, remote=True):
        small = gpt2.output.logits[0, -1, :8].save()
    assert small.shape == (8,)
    with pytest.raises(Exception) as caught:
        with gpt2.trace(PROMPT, remote=True):
            kept = nnsight.save({"cache": gpt2.output.past_key_values})  # noqa: F841
    text = str(caught.value)
    assert "ResultTooLargeError" in text and "4000" in text, text
