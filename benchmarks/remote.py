"""Remote execution overhead on the tiny GPT-2: a local trace, ``remote='local'`` and a loopback
``remote=True`` round trip side by side (1 save, p50/p99), then jobs/s with 1, 4 and 16 clients.

    python benchmarks/remote.py [--repeat 50] [--jobs 32]

Starts ``nnsight-server serve --no-auth`` on a free loopback port with a temporary data dir
(stopped at the end). Target: the loopback round trip adds at most 5 ms p50 over the local trace.

The three are timed interleaved (local, remote='local', remote=True, local, ...), so a burst of
load from other processes hits all of them alike; torch runs one intra-op thread on both sides
(``--threads``): on a loaded 2-core machine two OpenMP threads per process wait for each other
and a 3 ms forward takes 10-100 ms at random. The saved value is assigned (``logits = ...``), so
the round trip carries the tensor back. ``remote=True`` takes the one-round-trip path
(``POST /v1/requests?stream=1``, docs/protocol.md), and so do the jobs/s clients.
"""
import argparse
import os
import statistics
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "server"))

PROMPT = "The Eiffel Tower is in the city of"


def percentiles(samples):
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return statistics.median(ordered) * 1e3, p99 * 1e3


def timed_interleaved(fns, repeat):
    """``{name: [seconds, ...]}``: each round runs every function once, in turn."""
    for fn in fns.values():
        fn()  # warm-up (the first trace at a call site compiles it; the first remote one connects)
        fn()
    samples = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=32, help="jobs per concurrency level")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads, client and server")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the server subprocess inherits it
    import torch

    torch.set_num_threads(args.threads)

    from serverproc import ServerProcess  # tests/server: starts the server subprocess

    from nnsight import CONFIG, LanguageModel
    from nnsight.remote.client import Client
    from nnsight.testing.tiny_models import build_gpt2

    path = build_gpt2()
    data = tempfile.mkdtemp(prefix="nnsight-bench-")
    server = ServerProcess(data, ["gpt2=%s" % path], "--no-auth").start()
    try:
        CONFIG.API.HOST, CONFIG.APP.REMOTE_LOGGING = server.host, False
        model = LanguageModel(path)

        def local():
            with model.trace(PROMPT):
                logits = model.lm_head.output.save()
            return logits

        def simulated():
            with model.trace(PROMPT, remote="local"):
                logits = model.lm_head.output.save()
            return logits

        def remote():
            with model.trace(PROMPT, remote=True):
                logits = model.lm_head.output.save()
            return logits

        assert torch.equal(local(), remote()) and torch.equal(local(), simulated())
        fns = {"local trace": local, "remote='local'": simulated, "remote=True (loopback)": remote}
        samples = timed_interleaved(fns, args.repeat)
        rows = [(name, percentiles(samples[name])) for name in fns]
        print("%-24s %10s %10s   (torch threads: %d, %d rounds, interleaved)"
              % ("1 save, tiny GPT-2", "p50 ms", "p99 ms", args.threads, args.repeat))
        for name, (p50, p99) in rows:
            print("%-24s %10.2f %10.2f" % (name, p50, p99))
        added = rows[2][1][0] - rows[0][1][0]
        print("loopback round trip adds %.2f ms p50 over the local trace (target <= 5 ms): %s"
              % (added, "PASS" if added <= 5.0 else "MISS"))

        with model.trace(PROMPT, remote="local") as tracer:
            logits = model.lm_head.output.save()
        payload = tracer.remote_payload
        print("\n%-10s %10s" % ("clients", "jobs/s"))
        for clients in (1, 4, 16):
            per_client = max(1, args.jobs // clients)

            def client_loop():
                with Client(server.host, "") as client:
                    for _ in range(per_client):  # the path remote=True takes: one streamed round trip
                        for frame in client.submit_stream(payload):
                            pass
                        if frame["status"] != "COMPLETED":
                            raise RuntimeError("job %s ended %s" % (frame["id"], frame["status"]))
                        if "result" not in frame:  # over the inline limit: fetched by GET
                            client.result(frame["id"])

            threads = [threading.Thread(target=client_loop) for _ in range(clients)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - start
            print("%-10d %10.1f" % (clients, clients * per_client / elapsed))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
