"""Handles to objects of the model process in a sandboxed job's result, against a hostile child.

The test plays the child: it runs the real model through the model process's end of the channel,
then reports a result naming handles, legitimate or forged. The model process fills in only this
job's own objects, refuses every other handle, and never writes the hosted weights.
"""

import pytest
import torch

from compiler.ir.limits import DecodeLimits
from compiler.ir.request import decode_result, encode_result
from compiler.ir.values import decode_value, encode_value
from runtime.sandbox.channel import CALL, DONE_HOSTED, RETURN
from runtime.loader.hosted_memory import hosted_storages
from runtime.sandbox.host import ChildFailed
from runtime.sandbox.results import HostedResultError, fill_hosted
from runtime.sandbox.values import BoundaryError, HostedObject, HostSide, hosted_reference

from host_thread import serve_in_thread


@pytest.fixture(scope="module")
def model(gpt2_path):
    from nnsight import LanguageModel

    model = LanguageModel(gpt2_path, dispatch=True)
    model.requires_grad_(False)
    return model


@pytest.fixture
def job(model):
    """``(child channel, host session, run)``: ``run()`` serves the job in a thread, returns its outcome."""
    child, host, thread, outcome, close = serve_in_thread(model._module, lambda line: None)

    def finish():
        thread.join(30)
        assert not thread.is_alive()
        return outcome

    yield child, host, finish
    close()
    thread.join(10)


def _forward(child):
    """Run the model on three tokens; the handle of the KV cache in its output."""
    ids = torch.tensor([[1, 2, 3]])
    child.send(CALL, "", "forward", ["l"], ["d", ["input_ids", ["x", encode_value(ids)]]], [], False)
    frame = child.recv()
    assert frame[0] == RETURN and frame[1][0] == "M"
    fields = dict(frame[1][2:])
    assert fields["past_key_values"][0] == "o"
    return fields["past_key_values"][1]


def _resolve(ref):
    from transformers import cache_utils

    module, _, name = ref.partition(":")
    assert module == "transformers.cache_utils"
    return getattr(cache_utils, name)


def _decode(result):
    return decode_value(decode_result(result), resolve=_resolve)


def _child_tree(value):
    """The tree a sandbox child writes for its saved values (handles as references)."""
    return encode_value(value, where="the saved values", objref=hosted_reference, records=True)


def test_the_model_process_fills_in_this_jobs_cache(job, model):
    child, host, finish = job
    handle = _forward(child)
    cache = HostedObject(handle, "DynamicCache")
    shared = [1, 2]
    child.send(DONE_HOSTED, _child_tree({"cache": cache, "again": cache, "a": shared, "b": shared}))
    saved = _decode(finish()["result"])
    real = host.values.objects[0]
    assert type(saved["cache"]) is type(real) and saved["again"] is saved["cache"]
    assert saved["a"] is saved["b"] == [1, 2]  # the child's own shared ids still resolve
    assert len(saved["cache"].layers) == len(real.layers) > 0
    for got, want in zip(saved["cache"].layers, real.layers):
        assert torch.equal(got.keys, want.keys) and torch.equal(got.values, want.values)


def _forged_cases(handle):
    return [handle + 1, handle - 1, 0, 1, -1, 1 << 62, "0", None, [handle], 1.0 * handle]


@pytest.mark.parametrize("case", range(10))
def test_a_forged_handle_is_refused_and_nothing_is_written(job, case):
    child, host, finish = job
    handle = _forward(child)
    forged = _forged_cases(handle)[case]
    child.send(DONE_HOSTED, ["dict", ["stolen", ["objref", ["hosted", forged]]]])
    outcome = finish()
    assert "result" not in outcome
    assert isinstance(outcome["error"], BoundaryError) and "never sent" in str(outcome["error"])


def test_another_jobs_handle_is_refused(model):
    """Two jobs' tables: a handle of the first names nothing in the second, even where both jobs
    hold the same number of objects (a handle is a random per-job base plus an index)."""
    first, second = HostSide(DecodeLimits(), set()), HostSide(DecodeLimits(), set())
    theirs = first.export(object())
    ours = second.export(object())
    assert theirs[0] == ours[0] == "o" and theirs[1] != ours[1]
    tree = ["dict", ["stolen", ["objref", ["hosted", theirs[1]]]]]
    with pytest.raises(BoundaryError, match="never sent"):
        fill_hosted(tree, second, set())
    with pytest.raises(BoundaryError, match="never sent"):
        second.load(theirs)  # the same check for a handle sent back into the model


class Holder:
    """An object of the model process holding a weight (or a view of one, or a module)."""

    def __init__(self, held):
        self.held = held


def test_the_hosted_weights_and_modules_are_never_written(model):
    module = model._module
    side = HostSide(DecodeLimits(), set(hosted_storages(module)))
    for value, what in ((module.lm_head, "module"), (Holder(module.lm_head.weight), "weights"),
                        (Holder(module.transformer.wte.weight[:2]), "weights"),
                        (Holder(module.transformer.h[0]), "module")):
        handle = side.export(value)[1]
        with pytest.raises(HostedResultError, match=what):
            fill_hosted(["dict", ["x", ["objref", ["hosted", handle]]]], side, side.protected)


def test_an_unencodable_hosted_object_fails_the_job_with_the_users_error(job, model):
    child, host, finish = job
    _forward(child)
    handle = host.values.export(model._module.lm_head)[1]
    child.send(DONE_HOSTED, ["dict", ["head", ["objref", ["hosted", handle]]]])
    error = finish()["error"]
    assert isinstance(error, ChildFailed) and error.info["type"] == "UnencodableValueError"
    assert "module of the hosted model" in error.info["message"]


@pytest.mark.parametrize("tree", [
    ["dict", ["x", ["shared", 0, ["objref", ["hosted", "H"]]]]],  # a handle's node shared by the child
    ["dict", ["x", ["shared", 1 << 62, ["list"]]], ["y", ["objref", ["hosted", "H"]]]],  # ids out of room
])
def test_malformed_results_naming_a_real_handle_are_refused(job, tree):
    child, host, finish = job
    handle = _forward(child)

    def put(node):
        return handle if node == "H" else [put(x) for x in node] if type(node) is list else node

    child.send(DONE_HOSTED, put(tree))
    outcome = finish()
    assert "result" not in outcome and isinstance(outcome["error"], BoundaryError)


def test_a_result_without_handles_is_framed_as_usual(job):
    child, host, finish = job
    tree = _child_tree({"n": 3, "t": torch.arange(4)})
    child.send(DONE_HOSTED, tree)
    assert finish()["result"] == encode_result(tree)
