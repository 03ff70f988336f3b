"""compiler/lru.py: the bounded LRU map the process-wide caches share."""
import threading

from compiler.lru import BoundedLRU


def test_a_hit_keeps_an_entry_and_an_insert_past_the_bound_drops_the_oldest():
    cache = BoundedLRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # now the newest
    cache.put("c", 3)
    assert (cache.get("b"), cache.get("a"), cache.get("c"), len(cache)) == (None, 1, 3, 2)
    cache.put("a", 10)  # a new value for a key: no growth
    assert (cache.get("a"), len(cache)) == (10, 2)
    assert cache.pop("a") == 10 and cache.pop("a", "gone") == "gone" and len(cache) == 1
    cache.clear()
    assert len(cache) == 0 and cache.get("c") is None


def test_threads_never_push_it_past_its_bound():
    cache = BoundedLRU(16)
    errors = []

    def work(offset):
        try:
            for i in range(2000):
                cache.put((offset, i), i)
                cache.get((offset, i - 1))
                assert len(cache) <= 16
        except BaseException as error:  # noqa: B902
            errors.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(cache) == 16
