"""VLLM with tensor_parallel_size=2 (two CPU workers) against an HF forward of the same weights.

The tiny Llama has 2 attention heads and 1 KV head, so under TP=2 `qkv_proj` holds one query
head and a replicated KV head per rank, `gate_up_proj` half of the gate and half of the up
columns. Interventions must see the complete tensors and their writes must reach both ranks.
TP=1 equals the same HF references (tests/vllm/test_sync.py), so equal to HF is equal to TP=1.
"""
import os
import time

import pytest
import torch

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

PROMPT = "Hello world"
INTER = 128  # intermediate size of the tiny Llama: gate_up_proj is [gate (128) | up (128)]


def _ray_processes():
    import psutil

    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            name = " ".join(proc.cmdline()[:2]) or proc.name()
        except psutil.Error:
            continue
        if any(word in name for word in ("raylet", "gcs_server", "ray::", "ray/_private", "default_worker")):
            found.append(name)
    return found


@pytest.fixture(scope="module")
def engine_env():
    """Environment of the TP engines, restored afterwards.

    Our config sets VLLM_CPU_OMP_THREADS_BIND for TP > 1. TORCHDYNAMO_DISABLE=1 (workers only:
    torch is imported here already) saves each engine ~5 s: with TP > 1 vLLM's vocabulary-parallel
    embedding compiles a small masking function with inductor on the first request.
    """
    names = ("VLLM_CPU_OMP_THREADS_BIND", "TORCHDYNAMO_DISABLE")
    saved = {name: os.environ.get(name) for name in names}
    os.environ["TORCHDYNAMO_DISABLE"] = "1"
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def model(llama_path, engine_env):
    pytest.importorskip("ray", reason="ray is not installed")
    import ray
    from nnsight.modeling.vllm import VLLM

    assert not ray.is_initialized()
    # the design's example, as written
    model = VLLM(llama_path, tensor_parallel_size=2, distributed_executor_backend="ray", dispatch=True)
    yield model
    model.shutdown()
    # the executor started a local Ray cluster: it is gone with the engine
    assert not ray.is_initialized()
    deadline = time.time() + 20
    while _ray_processes() and time.time() < deadline:
        time.sleep(0.5)
    assert not _ray_processes()


class HFRef:
    """The HF model's values for a prompt: module outputs/inputs by hook, greedy tokens, edits."""

    def __init__(self, hf, ids):
        self.hf, self.ids = hf, list(ids)

    def capture(self, layer: int = 0):
        found = {}
        layer = self.hf.model.layers[layer]
        mods = {"q": layer.self_attn.q_proj, "k": layer.self_attn.k_proj, "v": layer.self_attn.v_proj,
                "o": layer.self_attn.o_proj, "gate": layer.mlp.gate_proj, "up": layer.mlp.up_proj,
                "down": layer.mlp.down_proj, "mlp": layer.mlp}
        hooks = [m.register_forward_hook(lambda m, i, o, n=n: found.__setitem__(n, (i[0][0], o[0])))
                 for n, m in mods.items()]
        try:
            with torch.no_grad():
                found["logits"] = self.hf(torch.tensor([self.ids])).logits[0]
        finally:
            for h in hooks:
                h.remove()
        return found

    def greedy(self, n: int, edits=()):
        """Greedy tokens (and the last step's logits rows) with forward hooks ``edits`` applied."""
        hooks = [m.register_forward_hook(fn) for m, fn in edits]
        out, logits = [], []
        try:
            with torch.no_grad():
                for _ in range(n):
                    row = self.hf(torch.tensor([self.ids + out])).logits[0, -1]
                    logits.append(row)
                    out.append(int(row.argmax()))
        finally:
            for h in hooks:
                h.remove()
        return out, logits


def close(actual, expected):
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


def test_design_example_runs_and_matches_greedy(model, hf_llama):
    """`VLLM(path, tensor_parallel_size=2, distributed_executor_backend="ray", dispatch=True)`."""
    assert not model.engine_in_process  # (Ray workers: the saves and outputs travel as bytes)
    with model.trace(PROMPT, temperature=0.0, max_tokens=3) as tracer:
        logits = list().save()
        for step in tracer.iter[:]:
            logits.append(model.logits.output)
        output = tracer.result.save()
    tokens = list(output.outputs[0].token_ids)
    ref_tokens, ref_logits = HFRef(hf_llama, output.prompt_token_ids).greedy(3)
    assert tokens == ref_tokens
    assert len(logits) == 3
    for got, ref in zip(logits, ref_logits):
        assert got.shape == (1, ref.shape[-1])
        close(got[0], ref)


def test_column_parallel_outputs_are_full_width(model, hf_llama):
    """`qkv_proj` / `gate_up_proj` outputs: gathered over the ranks, in the unsharded layout, per invoke."""
    prompts = [PROMPT, "The capital of France is"]
    with model.trace(temperature=0.0, max_tokens=2) as tracer:
        with tracer.invoke(prompts[0]):
            qkv_a = model.model.layers[0].self_attn.qkv_proj.output[0].save()
            gate_up_a = model.model.layers[0].mlp.gate_up_proj.output[0].save()
        with tracer.invoke(prompts[1]):
            qkv_b = model.model.layers[0].self_attn.qkv_proj.output[0].save()
            gate_up_b = model.model.layers[0].mlp.gate_up_proj.output[0].save()
    for result, qkv, gate_up in zip(tracer.result, (qkv_a, qkv_b), (gate_up_a, gate_up_b)):
        ref = HFRef(hf_llama, result.prompt_token_ids).capture()
        n = len(result.prompt_token_ids)
        assert qkv.shape == (n, 64 + 32 + 32)  # q: 2 heads, k and v: 1 head each (replicated per rank)
        assert gate_up.shape == (n, 2 * INTER)
        close(qkv, torch.cat([ref["q"][1], ref["k"][1], ref["v"][1]], dim=-1))
        close(gate_up, torch.cat([ref["gate"][1], ref["up"][1]], dim=-1))


def test_row_parallel_inputs_and_outputs(model, hf_llama):
    """`o_proj` / `down_proj`: their sharded inputs are gathered; their reduced outputs are complete."""
    with model.trace(PROMPT, temperature=0.0, max_tokens=1) as tracer:
        o_in = model.model.layers[1].self_attn.o_proj.input.save()
        o_out = model.model.layers[1].self_attn.o_proj.output[0].save()
        down_in = model.model.layers[1].mlp.down_proj.input.save()
        down_out = model.model.layers[1].mlp.down_proj.output[0].save()
        mlp = model.model.layers[1].mlp.output.save()
    ref = HFRef(hf_llama, tracer.result[0].prompt_token_ids).capture(layer=1)
    n = len(tracer.result[0].prompt_token_ids)
    assert o_in.shape == (n, 64) and down_in.shape == (n, INTER)
    close(o_in, ref["o"][0])
    close(o_out, ref["o"][1])
    close(down_in, ref["down"][0])
    close(down_out, ref["down"][1])
    close(mlp, ref["mlp"][1])


def test_writes_change_tokens_as_unsharded(model, hf_llama):
    """Writes on every step reach both ranks: the tokens and logits of HF with the same edit."""
    hf = HFRef(hf_llama, model.tokenizer(PROMPT)["input_ids"])
    clean, _ = hf.greedy(3)
    layer = hf_llama.model.layers[0]

    # a sharded value (gathered, edited in place, re-sharded): scale the gate half of gate_up_proj
    with model.trace(PROMPT, temperature=0.0, max_tokens=3) as tracer:
        logits = list().save()
        for step in tracer.iter[:]:
            model.model.layers[0].mlp.gate_up_proj.output[0][:, :INTER] *= 3
            logits.append(model.logits.output)
    tokens = list(tracer.result[0].outputs[0].token_ids)
    ref_tokens, ref_logits = hf.greedy(3, [(layer.mlp.gate_proj, lambda m, i, o: o * 3)])
    assert ref_tokens != clean and tokens == ref_tokens
    for got, ref in zip(logits, ref_logits):
        close(got[0], ref)

    # a complete value (the MLP's reduced output), zeroed on both ranks
    with model.trace(PROMPT, temperature=0.0, max_tokens=3) as tracer:
        for step in tracer.iter[:]:
            model.model.layers[0].mlp.output[:] = 0
    tokens = list(tracer.result[0].outputs[0].token_ids)
    ref_tokens, _ = hf.greedy(3, [(layer.mlp, lambda m, i, o: torch.zeros_like(o))])
    assert ref_tokens != clean and tokens == ref_tokens

    # a swap of a sharded input: the attention output entering o_proj, halved
    with model.trace(PROMPT, temperature=0.0, max_tokens=1) as tracer:
        model.model.layers[1].self_attn.o_proj.input = model.model.layers[1].self_attn.o_proj.input / 2
        edited = model.logits.output.save()
    _, ref_logits = hf.greedy(1, [(hf_llama.model.layers[1].self_attn.o_proj,
                                   lambda m, i, o: torch.nn.functional.linear(i[0] / 2, m.weight))])
    close(edited[0], ref_logits[0])


def test_skip_column_parallel_layer_with_a_full_width_value(model, hf_llama):
    """`.skip(value)` of `gate_up_proj` takes the unsharded value; each rank keeps its part."""
    with model.trace(PROMPT, temperature=0.0, max_tokens=1) as tracer:
        x = model.model.layers[0].mlp.gate_up_proj.input
        model.model.layers[0].mlp.gate_up_proj.skip((torch.zeros(x.shape[0], 2 * INTER), None))
        mlp = model.model.layers[0].mlp.output.save()
        edited = model.logits.output.save()
    hf = HFRef(hf_llama, tracer.result[0].prompt_token_ids)
    assert not mlp.any()  # down_proj(silu(0) * 0)
    _, ref_logits = hf.greedy(1, [(hf_llama.model.layers[0].mlp, lambda m, i, o: torch.zeros_like(o))])
    close(edited[0], ref_logits[0])


def test_errors_come_back_typed_and_the_engine_survives(model, hf_llama):
    with pytest.raises(IndexError) as info:
        with model.trace(PROMPT, temperature=0.0, max_tokens=2):
            model.model.layers[0].mlp.gate_up_proj.output[0][:, 4 * INTER]
    assert "vLLM worker" in "".join(getattr(info.value, "__notes__", []))
    # a sharded value swapped for one of the wrong width can't be split over the ranks
    with pytest.raises(ValueError, match="full width"):
        with model.trace(PROMPT, temperature=0.0, max_tokens=1):
            out = model.model.layers[0].mlp.gate_up_proj.output
            model.model.layers[0].mlp.gate_up_proj.output = (out[0][:, :10], out[1])
    # both ranks are still in step: a gathered read and the tokens are right
    with model.trace(PROMPT, temperature=0.0, max_tokens=2) as tracer:
        gate_up = model.model.layers[0].mlp.gate_up_proj.output[0].save()
    hf = HFRef(hf_llama, tracer.result[0].prompt_token_ids)
    ref = hf.capture()
    close(gate_up, torch.cat([ref["gate"][1], ref["up"][1]], dim=-1))
    assert list(tracer.result[0].outputs[0].token_ids) == hf.greedy(2)[0]


def test_stop_aborts_the_request_on_every_rank(model, hf_llama):
    """tracer.stop() under TP: the request is aborted on all ranks and the engine goes on."""
    with model.trace(PROMPT, temperature=0.0, max_tokens=4) as tracer:
        steps = list().save()
        for step in tracer.iter[:]:
            steps.append(model.model.layers[0].mlp.gate_up_proj.output[0].clone())  # gathered
            if step == 1:
                tracer.stop()
    out = tracer.result[0]
    hf = HFRef(hf_llama, out.prompt_token_ids)
    assert len(steps) == 2 and steps[0].shape[-1] == 2 * INTER
    assert out.outputs[0].finish_reason == "abort"
    assert list(out.outputs[0].token_ids) == hf.greedy(4)[0][:2]
    with model.trace(PROMPT, temperature=0.0, max_tokens=2) as tracer:
        pass
    assert list(tracer.result[0].outputs[0].token_ids) == hf.greedy(2)[0]


@pytest.fixture
def mp_model(llama_path, engine_env):
    from nnsight.modeling.vllm import VLLM

    model = VLLM(llama_path, tensor_parallel_size=2, dispatch=True)  # vLLM's default TP backend: "mp"
    yield model
    model.shutdown()


def test_default_mp_backend(mp_model, hf_llama):
    """The same gather / re-shard with vLLM's multiprocessing workers: a read and a write."""
    model = mp_model
    hf = HFRef(hf_llama, model.tokenizer(PROMPT)["input_ids"])
    with model.trace(PROMPT, temperature=0.0, max_tokens=3) as tracer:
        qkv = model.model.layers[0].self_attn.qkv_proj.output[0].save()
        for step in tracer.iter[:]:
            model.model.layers[0].mlp.gate_up_proj.output[0][:, :INTER] *= 3
    ref = hf.capture()
    close(qkv, torch.cat([ref["q"][1], ref["k"][1], ref["v"][1]], dim=-1))
    tokens = list(tracer.result[0].outputs[0].token_ids)
    assert tokens == hf.greedy(3, [(hf_llama.model.layers[0].mlp.gate_proj, lambda m, i, o: o * 3)])[0]


def test_shard_layouts_round_trip(monkeypatch):
    """Scatter then gather is the identity for plain, merged and KV-replicated QKV layouts (no engine)."""
    from nnsight.modeling.vllm import tensor_parallel as tp

    full = torch.arange(2 * 40, dtype=torch.float32).reshape(2, 40)
    layouts = [([20], [1], 2), ([4, 6], [1, 1], 2),  # plain; merged [gate | up]
               ([2, 3, 3], [1, 2, 2], 2),  # qkv: 2 query heads, 1 kv head replicated on both ranks
               ([1, 2, 2], [1, 2, 2], 4)]  # qkv over 4 ranks, kv heads shared by pairs of ranks
    for parts, replicas, size in layouts:
        full_width = sum(p * size // r for p, r in zip(parts, replicas))
        value = full[:, :full_width]
        ranks = [tp.SplitShard("output", r, size, parts, replicas) for r in range(size)]
        locals_ = [s.scatter((value, None))[0] for s in ranks]
        assert all(t.shape == (2, sum(parts)) for t in locals_)

        class Group:
            def all_gather(self, tensor, dim=-1):
                return torch.cat(locals_, dim=dim)

        monkeypatch.setattr(tp, "_group", lambda: Group())
        for shard, local in zip(ranks, locals_):
            torch.testing.assert_close(shard.gather((local, None))[0], value)
    # the plain layout is vLLM's own split: rank r keeps split_tensor_along_last_dim(...)[r]
    plain = tp.SplitShard("input", 1, 2, [20], [1]).scatter(((full,), {}))[0][0]
    torch.testing.assert_close(plain, full.split(20, dim=-1)[1])


def test_cpu_binding_splits_the_allowed_cpus(monkeypatch):
    from nnsight.modeling.vllm import config

    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert config.cpu_binding(2) == "0|1"
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert config.cpu_binding(2) == "0,1,2,3|4,5,6,7"
    assert config.cpu_binding(3) == "0,1|2,3|4,5"
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert config.cpu_binding(2) == "nobind"
