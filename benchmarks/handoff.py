"""Cost of one request/response hand-off between the model and an intervention worker.

The runtime's mediators run in strict ping-pong with the model: every value an
intervention reads costs two hand-offs (worker → model → worker). This compares
a greenlet switch pair with OS threads synchronised by locks (the cheapest
thread primitive) and by ``queue.Queue`` (what a straightforward threaded
interleaver uses). Prints medians in microseconds and the ratios.

    python benchmarks/handoff.py [--rounds N]
"""
import argparse
import statistics
import threading
import time
from queue import Queue

from greenlet import greenlet

N = 2000


def greenlet_pair() -> float:
    def worker():
        main = worker_glet.parent
        while True:
            main.switch()

    worker_glet = greenlet(worker)
    worker_glet.switch()
    start = time.perf_counter_ns()
    for _ in range(N):
        worker_glet.switch()
    return (time.perf_counter_ns() - start) / N / 1000


def lock_pair() -> float:
    to_worker, to_main = threading.Lock(), threading.Lock()
    to_worker.acquire()
    to_main.acquire()
    stop = [False]

    def worker():
        while True:
            to_worker.acquire()
            if stop[0]:
                return
            to_main.release()

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    start = time.perf_counter_ns()
    for _ in range(N):
        to_worker.release()
        to_main.acquire()
    elapsed = (time.perf_counter_ns() - start) / N / 1000
    stop[0] = True
    to_worker.release()
    t.join()
    return elapsed


def queue_pair() -> float:
    to_worker, to_main = Queue(1), Queue(1)

    def worker():
        while True:
            item = to_worker.get()
            if item is None:
                return
            to_main.put(item)

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    start = time.perf_counter_ns()
    for _ in range(N):
        to_worker.put(1)
        to_main.get()
    elapsed = (time.perf_counter_ns() - start) / N / 1000
    to_worker.put(None)
    t.join()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    rounds = parser.parse_args().rounds
    results = {"greenlet": [], "thread+lock": [], "thread+queue": []}
    for _ in range(rounds):  # interleaved, so machine noise hits every variant alike
        results["greenlet"].append(greenlet_pair())
        results["thread+lock"].append(lock_pair())
        results["thread+queue"].append(queue_pair())
    base = statistics.median(results["greenlet"])
    for name, values in results.items():
        median = statistics.median(values)
        print(f"{name:13s} round trip {median:8.2f} us   x{median / base:6.1f} vs greenlet")


if __name__ == "__main__":
    main()
