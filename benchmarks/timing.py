"""The one wall-clock timer of the small cost benchmarks (a median over repetitions)."""
import statistics
import time


def median_us(fn, reps: int) -> float:
    """Median wall time of ``fn()`` over ``reps`` calls, in microseconds."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e6)
    return statistics.median(times)
