"""The model process's end of the sandbox channel against a hostile child (this test plays it).

Everything a child sends is attacker-written: malformed frames, modules the model does not
have, references to values never sent, writes into the weights, classes never sent, forged
error reports. Each is refused, and the hosted model is left exactly as it was.
"""
import struct

import pytest
import torch

from compiler.ir import framing
from compiler.ir.limits import DecodeLimits
from compiler.ir.values import encode_value
from runtime.sandbox.channel import CALL, DONE, FAILED, HOOK, RAISE, RETURN, ChannelError
from runtime.loader.hosted_memory import hosted_storages
from runtime.sandbox.host import ChildFailed, ProtocolViolation
from runtime.sandbox.values import BoundaryError, HostSide

from host_thread import serve_in_thread


@pytest.fixture(scope="module")
def model(gpt2_path):
    from nnsight import LanguageModel

    model = LanguageModel(gpt2_path, dispatch=True)
    model.requires_grad_(False)
    return model


@pytest.fixture
def session(model):
    """``(child channel, run)``: run() serves the model side in a thread and returns its outcome."""
    module = model._module
    logs = []
    child, host, thread, outcome, close = serve_in_thread(module, logs.append)
    yield child, thread, outcome
    close()
    thread.join(10)
    assert all("forward" not in m.__dict__ for m in module.modules())  # no hook left on the model


def _finish(thread, outcome):
    thread.join(30)
    assert not thread.is_alive()
    return outcome


def _weights(model):
    return {k: v.clone() for k, v in model._module.state_dict().items()}


def test_a_call_to_a_module_the_model_lacks_is_a_protocol_violation(session):
    child, thread, outcome = session
    child.send(CALL, "transformer.h.99", "forward", ["l"], ["d"], [], False)
    assert isinstance(_finish(thread, outcome)["error"], ProtocolViolation)


def test_hooks_on_modules_the_model_lacks_are_refused(session):
    child, thread, outcome = session
    child.send(CALL, "", "forward", ["l"], ["d"], ["__class__", "transformer"], False)
    assert isinstance(_finish(thread, outcome)["error"], ProtocolViolation)


def test_an_oversized_frame_is_refused_before_it_is_read(session):
    child, thread, outcome = session
    child.sock.sendall(struct.pack(">I", (1 << 31)))
    assert isinstance(_finish(thread, outcome)["error"], ChannelError)


def test_a_corrupt_frame_is_refused(session):
    child, thread, outcome = session
    body = b"\xc1\xc1\xc1"
    child.sock.sendall(struct.pack(">I", len(body)) + body)
    assert isinstance(_finish(thread, outcome)["error"], ChannelError)


def test_values_never_sent_and_lying_tensors_are_answered_with_errors_and_the_job_goes_on(session, model):
    child, thread, outcome = session
    before = _weights(model)
    ids = torch.tensor([[1, 2, 3]])
    child.send(CALL, "transformer.wte", "forward", ["l", ["r", 12345, None]], ["d"], [], False)
    assert child.recv()[0] == RAISE
    child.send(CALL, "transformer.wte", "forward", ["l", ["o", 7, "DynamicCache"]], ["d"], [], False)
    assert child.recv()[0] == RAISE
    lying = encode_value(ids)
    lying[2] = [1 << 40, 1 << 40]  # a shape whose bytes are not there
    child.send(CALL, "transformer.wte", "forward", ["l", ["x", lying]], ["d"], [], False)
    assert child.recv()[0] == RAISE
    child.send(CALL, "", "forward", ["l"], ["d", ["input_ids", ["x", encode_value(ids)]]], [], False)
    frame = child.recv()
    assert frame[0] == RAISE or frame[0] == RETURN
    child.send(CALL, "lm_head", "forward", ["l", ["M", "transformers.modeling_outputs:CausalLMOutput"]], ["d"], [],
               False)
    assert child.recv()[0] == RAISE  # a ModelOutput class this job was never sent
    grad = torch.ones(1, 3, 64, requires_grad=True)
    child.send(CALL, "lm_head", "forward", ["l", ["x", encode_value(grad)]], ["d"], [], False)
    assert child.recv()[0] == RAISE
    child.send(DONE, b"result bytes")
    assert _finish(thread, outcome)["result"] == b"result bytes"
    after = _weights(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_hook_answer_that_changes_a_tensors_dtype_in_place_is_refused(session, model):
    child, thread, outcome = session
    before = _weights(model)
    ids = torch.tensor([[1, 2, 3]])
    child.send(CALL, "", "forward", ["l"], ["d", ["input_ids", ["x", encode_value(ids)]]], ["transformer.wte"], False)
    frame = child.recv()
    assert frame[0] == HOOK and frame[1] == "transformer.wte"
    # hand back tensor 0 (the ids the hook sent) "changed in place" to floats
    child.send(RETURN, ["r", 0, encode_value(torch.zeros(1, 3))])
    frame = child.recv()
    assert frame[0] == RAISE  # the forward pass failed cleanly
    child.send(DONE, b"")
    _finish(thread, outcome)
    after = _weights(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_host_side_refuses_in_place_writes_to_weights(model):
    side = HostSide(DecodeLimits(), set(hosted_storages(model._module)))
    weight = model._module.lm_head.weight
    before = weight.clone()
    node = side.export(weight)
    with pytest.raises(BoundaryError, match="weights"):
        side.load(["r", node[1], encode_value(torch.zeros_like(weight))])
    assert torch.equal(weight, before)


def test_a_forged_error_report_is_reduced_to_plain_fields(session):
    child, thread, outcome = session
    child.send(FAILED, {"type": "X" * 100000, "message": ["not", "text"], "frames": [["f", "1", 2, 3], ["a.py", 3,
                                                                                                        "f", "x"]],
                        "extra": "dropped"})
    error = _finish(thread, outcome)["error"]
    assert isinstance(error, ChildFailed)
    assert set(error.info) == {"type", "message", "hint", "frames"}
    assert len(error.info["type"]) <= 65536 and error.info["message"] == ""
    assert error.info["frames"] == [["a.py", 3, "f", "x"]]


@pytest.fixture
def sides():
    from runtime.sandbox import arena

    fd = arena.create(1 << 20)
    model_side, child_side = arena.Arena(fd, 1 << 20, 0), arena.Arena(fd, 1 << 20, 1)
    import os

    os.close(fd)
    from runtime.sandbox.values import SandboxSide

    return HostSide(DecodeLimits(), set(), model_side), SandboxSide(child_side)


def test_tensors_cross_through_the_arena_and_in_place_edits_come_back(sides):
    from runtime.sandbox.values import SandboxSide  # noqa: F401

    host, child = sides
    t = torch.arange(12.0).reshape(3, 4)
    node = host.export((t, {"row": t[0]}))
    assert node[1][2][0] == "A"  # the bytes are in the arena, not in the frame
    seen = child.load(node)
    seen[0][0, 0] = 100.0  # the job edits the first tensor in place (the second is untouched)
    back = host.load(child.export(seen))
    assert back[0] is t and t[0, 0].item() == 100.0
    assert back[1]["row"].data_ptr() == t[0].data_ptr()  # unchanged: the model's own tensor, no copy
    fresh = host.load(child.export(torch.ones(2)))
    assert torch.equal(fresh, torch.ones(2))


@pytest.mark.parametrize("node", [
    ["A", "float32", [1 << 20], 1 << 19],  # past the end of the sandbox's half
    ["A", "float32", [4], 0],  # in the model's half
    ["A", "float32", [4], (1 << 19) + 3],  # misaligned
    ["A", "object", [4], 1 << 19],  # not a torch dtype
    ["A", "float32", [-1], 1 << 19],  # negative dimension
    ["A", "float32", [2] * 65, 1 << 19],  # too many dimensions
    ["r", 0, "A"],  # an arena copy the model never made
])
def test_arena_references_out_of_bounds_are_refused(sides, node):
    host, _ = sides
    with pytest.raises(BoundaryError):
        host.load(node)
