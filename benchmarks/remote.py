"""Remote execution overhead on the tiny GPT-2: a local trace, ``remote='local'`` and a loopback
``remote=True`` round trip side by side (1 save, p50/p99), then jobs/s with 1, 4 and 16 clients,
then the untrusted tier (``--tiers``, on by default): the same round trip with the job's code in
a sandbox process against the trusted tier (1 save and 12 saves), and the sandbox's start time.

    python benchmarks/remote.py [--repeat 300] [--jobs 32] [--no-tiers]
    python benchmarks/remote.py --ray [--jobs 64]    # jobs/s on Ray, 1 and 2 replicas, 16 clients

Starts ``nnsight-server serve --no-auth`` on a free loopback port with a temporary data dir
(stopped at the end). Target: the loopback round trip adds at most 5 ms p50 over the local trace.

Each remote path is timed interleaved with the local trace (local, remote=True, local, ...; then
local, remote='local', ...), so a burst of load from other processes hits both alike. The two
remote paths get a loop each: ``remote='local'`` runs the server's side in this process, and its
garbage (about 0.7 collections a round) was collected inside the next ``remote=True`` timing when
the three took turns (+0.25-0.35 ms p50). The default is 300 rounds: at 50, a few slow rounds
moved the p50 by tenths of a millisecond from run to run; torch runs one intra-op thread on both sides
(``--threads``): on a loaded 2-core machine two OpenMP threads per process wait for each other
and a 3 ms forward takes 10-100 ms at random. The saved value is assigned (``logits = ...``), so
the round trip carries the tensor back. ``remote=True`` takes the one-round-trip path
(``POST /v1/requests?stream=1``, docs/protocol.md), and so do the jobs/s clients.
"""
import argparse
import os
import shutil
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
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=32, help="jobs per concurrency level")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads, client and server")
    parser.add_argument("--ray", action="store_true", help="only jobs/s on a two-node Ray cluster on this machine")
    parser.add_argument("--no-tiers", dest="tiers", action="store_false",
                        help="skip the trusted-vs-untrusted comparison and the sandbox start time")
    parser.add_argument("--only-tiers", action="store_true", help="run only the tier comparison")
    args = parser.parse_args()
    if args.ray:
        return ray_jobs_per_second(args)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the server subprocess inherits it
    import torch

    torch.set_num_threads(args.threads)

    from serverproc import ServerProcess  # tests/server: starts the server subprocess

    from nnsight import CONFIG, LanguageModel
    from nnsight.remote.client import Client
    from nnsight.testing.tiny_models import build_gpt2

    path = build_gpt2()
    if args.only_tiers:
        return tiers(path, args)
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
        rows = []
        for name, fn in (("remote=True (loopback)", remote), ("remote='local'", simulated)):
            samples = timed_interleaved({"local trace": local, name: fn}, args.repeat)
            rows.append((name, percentiles(samples["local trace"]), percentiles(samples[name])))
        print("%-24s %10s %10s %16s   (torch threads: %d, %d rounds, each interleaved with a local trace)"
              % ("1 save, tiny GPT-2", "p50 ms", "p99 ms", "its local p50", args.threads, args.repeat))
        print("%-24s %10.2f %10.2f" % ("local trace", rows[0][1][0], rows[0][1][1]))
        for name, base, (p50, p99) in rows:
            print("%-24s %10.2f %10.2f %16.2f" % (name, p50, p99, base[0]))
        added = rows[0][2][0] - rows[0][1][0]
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
    return tiers(path, args) if args.tiers else 0


def tiers(path: str, args) -> int:
    """The untrusted tier (a sandbox process per job) against the trusted tier (in the model's process)."""
    import torch

    from serverproc import ServerProcess

    from nnsight import CONFIG, LanguageModel

    trusted = ServerProcess(tempfile.mkdtemp(prefix="nnsight-bench-"), ["gpt2=%s" % path], "--no-auth",
                            "--sandbox", "never").start()
    untrusted = ServerProcess(tempfile.mkdtemp(prefix="nnsight-bench-"), ["gpt2=%s" % path], "--no-auth",
                              "--sandbox", "always").start()
    try:
        CONFIG.APP.REMOTE_LOGGING = False
        model = LanguageModel(path)
        blocks = model.transformer.h

        def one_save(host):
            def run():
                CONFIG.API.HOST = host
                with model.trace(PROMPT, remote=True):
                    logits = model.lm_head.output.save()
                return logits
            return run

        def twelve_saves(host):
            def run():
                CONFIG.API.HOST = host
                with model.trace(PROMPT, remote=True):
                    a0 = blocks[0].attn.output[0].save()
                    m0 = blocks[0].mlp.output.save()
                    h0 = blocks[0].output[0].save()
                    a1 = blocks[1].attn.output[0].save()
                    m1 = blocks[1].mlp.output.save()
                    h1 = blocks[1].output[0].save()
                    a2 = blocks[2].attn.output[0].save()
                    m2 = blocks[2].mlp.output.save()
                    h2 = blocks[2].output[0].save()
                    a3 = blocks[3].attn.output[0].save()
                    m3 = blocks[3].mlp.output.save()
                    logits = model.lm_head.output.save()
                return a0, m0, h0, a1, m1, h1, a2, m2, h2, a3, m3, logits
            return run

        for make in (one_save, twelve_saves):
            a, b = make(trusted.host)(), make(untrusted.host)()
            a, b = (a,) if torch.is_tensor(a) else a, (b,) if torch.is_tensor(b) else b
            assert all(torch.equal(x, y) for x, y in zip(a, b)), "the tiers disagree"
        fns = {"trusted, 1 save": one_save(trusted.host), "untrusted, 1 save": one_save(untrusted.host),
               "trusted, 12 saves": twelve_saves(trusted.host), "untrusted, 12 saves": twelve_saves(untrusted.host)}
        samples = timed_interleaved(fns, args.repeat)
        rows = {name: percentiles(samples[name]) for name in fns}
        print("\n%-24s %10s %10s   (loopback round trips, %d rounds, interleaved)" % (
            "tiers, tiny GPT-2", "p50 ms", "p99 ms", args.repeat))
        for name, (p50, p99) in rows.items():
            print("%-24s %10.2f %10.2f" % (name, p50, p99))
        for saves in ("1 save", "12 saves"):
            added = rows["untrusted, " + saves][0] - rows["trusted, " + saves][0]
            print("untrusted tier adds %.2f ms p50 over trusted (%s)" % (added, saves))
        starts = sandbox_starts(path, args.repeat)
        p50, p99 = percentiles(starts)
        print("sandbox start (warm template: fork + confinement to a ready child): p50 %.2f ms, p99 %.2f ms "
              "(target < 20 ms): %s" % (p50, p99, "PASS" if p50 < 20.0 else "MISS"))
    finally:
        trusted.stop()
        untrusted.stop()
    return 0


def _jobs_per_second(host, payload, clients, jobs):
    from nnsight.remote.client import Client

    per_client = max(1, jobs // clients)

    def client_loop():
        with Client(host, "") as client:
            for _ in range(per_client):
                job = client.submit(payload)["id"]
                for frame in client.events(job):
                    pass
                client.result(job)

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return clients * per_client / (time.perf_counter() - start)


def ray_jobs_per_second(args) -> int:
    """``serve --ray`` with 1 and 2 replicas of the tiny GPT-2 on a two-node Ray cluster on this
    machine (one CPU per node), 16 concurrent clients; the embedded server in the same run."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "ray"))
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
    from raycluster import RayCluster, ray_env  # tests/ray: a head and a second node, stopped at the end
    from serverproc import ServerProcess

    from nnsight import CONFIG, LanguageModel
    from nnsight.testing.tiny_models import build_gpt2

    path = build_gpt2()
    model = LanguageModel(path)
    with model.trace(PROMPT, remote="local") as tracer:
        model.lm_head.output.save()
    payload = tracer.remote_payload
    CONFIG.APP.REMOTE_LOGGING = False
    cluster = RayCluster("/tmp/nnsight-ray-bench-%d" % os.getpid()).start()
    os.environ.update({k: v for k, v in ray_env().items() if k.startswith("RAY_")})
    rows = []
    try:
        for label, extra in (("embedded", ()), ("ray, 1 replica", ("--replicas", "1")),
                             ("ray, 2 replicas", ("--replicas", "2"))):
            if extra:
                extra = ("--ray", "--address", cluster.address, "--resources", "gpt2:num_cpus=1") + extra
            server = ServerProcess(tempfile.mkdtemp(prefix="nnsight-bench-"), ["gpt2=%s" % path], "--no-auth",
                                   *extra).start(timeout=300)
            try:
                _jobs_per_second(server.host, payload, 16, 32)  # warm-up: every replica loads its model
                rows.append((label, _jobs_per_second(server.host, payload, 16, args.jobs)))
            finally:
                server.stop()
    finally:
        cluster.stop()
        shutil.rmtree(cluster.temp_dir, ignore_errors=True)
    print("%-18s %10s   (16 clients, %d jobs, tiny GPT-2, 1 save; one CPU per Ray node)" % ("server", "jobs/s", args.jobs))
    for label, rate in rows:
        print("%-18s %10.1f" % (label, rate))
    return 0


def sandbox_starts(path: str, repeat: int):
    """Seconds from asking the warm template for a child to the child saying it is confined."""
    import signal

    from runtime.sandbox import arena
    from runtime.sandbox.channel import READY, Channel
    from runtime.sandbox.confine import Limits
    from runtime.sandbox.warm import WarmTemplate

    template = WarmTemplate(["gpt2=%s" % path], Limits())
    template.wait_ready()
    samples = []
    try:
        for i in range(repeat + 2):
            start = time.perf_counter()
            fd = arena.create(1 << 30)
            pid, sock = template.fork(fd)
            os.close(fd)
            frame = Channel(sock).recv()
            elapsed = time.perf_counter() - start
            assert frame[0] == READY
            sock.close()
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            template.reap(pid)
            if i >= 2:
                samples.append(elapsed)
    finally:
        template.close()
    return samples


if __name__ == "__main__":
    sys.exit(main())
