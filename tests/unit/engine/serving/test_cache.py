from __future__ import annotations

import asyncio

import pytest

from engine.serving.cache import Lookup, ModelCache


class Sized:
    def __init__(self, key: str, nbytes: int) -> None:
        self.key, self.nbytes = key, nbytes


def make_cache(budget: int, delay: float = 0.0, sizes: dict[str, int] | None = None):
    calls: list[str] = []
    evicted: list[str] = []

    async def load(key: str) -> Sized:
        calls.append(key)
        await asyncio.sleep(delay)
        if key.startswith("bad"):
            raise RuntimeError(f"cannot load {key}")
        return Sized(key, (sizes or {}).get(key, 10))

    cache = ModelCache(budget, load, sizeof=lambda v: v.nbytes,
                       on_evict=lambda k, v: evicted.append(k))
    return cache, calls, evicted


def test_concurrent_misses_share_one_load() -> None:
    async def main() -> None:
        cache, calls, _ = make_cache(100, delay=0.05)
        results = await asyncio.gather(*(cache.get("a") for _ in range(20)))
        assert calls == ["a"]
        assert [how for _, how in results] == [Lookup.MISS] + [Lookup.COALESCED] * 19
        assert len({id(v) for v, _ in results}) == 1
        value, how = await cache.get("a")
        assert how is Lookup.HIT and value is results[0][0]

    asyncio.run(main())


def test_loads_of_different_keys_run_in_parallel_and_hits_do_not_wait() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        started: list[str] = []

        async def load(key: str) -> Sized:
            started.append(key)
            if key != "warm":
                await gate.wait()  # held until the test lets every slow load finish
            return Sized(key, 10)

        cache = ModelCache(100, load, sizeof=lambda v: v.nbytes)
        await cache.get("warm")
        slow = [asyncio.create_task(cache.get(k)) for k in ("x", "y", "z")]
        for _ in range(100):  # a few loop turns: each task reaches its loader
            if len(started) == 4:
                break
            await asyncio.sleep(0)
        assert started == ["warm", "x", "y", "z"]  # all three loads under way at once
        _, how = await cache.get("warm")  # must not wait for x/y/z
        assert how is Lookup.HIT and not any(t.done() for t in slow)
        gate.set()
        assert [how for _, how in await asyncio.gather(*slow)] == [Lookup.MISS] * 3

    asyncio.run(main())


def test_byte_budget_evicts_least_recently_used() -> None:
    async def main() -> None:
        cache, _, evicted = make_cache(30)
        for k in ("a", "b", "c"):
            await cache.get(k)
        await cache.get("a")  # a is now most recent
        await cache.get("d")
        assert evicted == ["b"]
        assert cache.nbytes == 30 and len(cache) == 3
        assert "a" in cache and "b" not in cache

    asyncio.run(main())


def test_failed_load_is_not_cached_and_every_waiter_sees_it() -> None:
    async def main() -> None:
        cache, calls, _ = make_cache(100, delay=0.01)
        results = await asyncio.gather(*(cache.get("bad1") for _ in range(5)),
                                       return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)
        assert calls == ["bad1"] and "bad1" not in cache
        with pytest.raises(RuntimeError):
            await cache.get("bad1")
        assert calls == ["bad1", "bad1"]

    asyncio.run(main())


def test_value_larger_than_budget_is_served_not_kept() -> None:
    async def main() -> None:
        cache, _, _ = make_cache(50, sizes={"huge": 80})
        value, how = await cache.get("huge")
        assert value.key == "huge" and how is Lookup.MISS and "huge" not in cache

    asyncio.run(main())


def test_evict_where_counts_evictions() -> None:
    async def main() -> None:
        cache, _, evicted = make_cache(100)
        for k in ("a1", "a2", "b1"):
            await cache.get(k)
        assert cache.evict_where(lambda k: k.startswith("a")) == 2
        assert sorted(evicted) == ["a1", "a2"] and cache.keys() == ["b1"]

    asyncio.run(main())
