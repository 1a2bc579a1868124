"""Admission of run requests: who computes now, who waits, who is told to come back.

A run is classed *light* or *heavy* by its cost (:func:`~.schemas.cost`: steps x starts x rule
cost) before any thread is taken. Each class has its own :class:`Pool`: a few slots (an asyncio
semaphore, so a waiting request holds no worker thread, only a suspended coroutine) and a bounded
waiting line. A request that finds the line full is answered 429 with ``Retry-After`` at once; one
still waiting when its time budget (counted from its arrival) runs out gets a 429 too. Light runs
never wait behind heavy ones, and the page's other routes (``/api/meta``, grids, static files)
never enter a pool.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

import anyio

from .compute import ApiError
from .schemas import Limits


class Pool:
    """``running`` slots and ``queue`` places to wait for one; bound lazily to the running loop."""

    def __init__(self, name: str, running: int, queue: int, retry_after_s: int, jitter: bool = False) -> None:
        if running < 1 or queue < 0:
            raise ValueError(f"{name} pool: running must be >= 1 and queue >= 0, got {running}, {queue}")
        self.name, self.running, self.capacity = name, running, running + queue
        self.retry_after_s = max(1, int(retry_after_s))
        self.jitter = jitter
        self.inside = 0  # running + waiting (only touched from the event loop)
        self._sem: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._sem is None or self._loop is not loop:
            self._sem, self._loop, self.inside = asyncio.Semaphore(self.running), loop, 0
        return self._sem

    def busy(self, why: str) -> ApiError:
        """A 429. With ``jitter`` the Retry-After is drawn from 1 .. 2 x the base: clients refused
        together do not all come back in the same second."""
        wait = random.randint(1, 2 * self.retry_after_s) if self.jitter else self.retry_after_s
        return ApiError(429, f"the server is busy with other {self.name} runs ({why}); try again in {wait} s",
                        headers={"Retry-After": str(wait)})

    @asynccontextmanager
    async def slot(self, deadline: float) -> AsyncIterator[float]:
        """Hold a slot; yields the seconds spent waiting for it."""
        sem = self._semaphore()
        if self.inside >= self.capacity:
            raise self.busy(f"{self.running} running, {self.capacity - self.running} waiting")
        self.inside += 1
        t0 = time.monotonic()
        try:
            try:
                if sem.locked():
                    await asyncio.wait_for(sem.acquire(), timeout=max(0.0, deadline - t0))
                else:
                    await sem.acquire()  # a free slot: no wait, whatever the budget
            except asyncio.TimeoutError:
                raise self.busy("it waited for a slot past its time budget") from None
            try:
                yield time.monotonic() - t0
            finally:
                sem.release()
        finally:
            self.inside -= 1


class Admission:
    """The light and heavy pools of one app."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.light = Pool("light", limits.light_running, limits.light_queue, 1)
        self.heavy = Pool("heavy", limits.heavy_running, limits.heavy_queue, math.ceil(limits.time_budget_s),
                          jitter=True)

    def pool(self, cost: int) -> Pool:
        return self.light if cost <= self.limits.light_cost else self.heavy

    async def compute(self, request: Any, cost: int, executor: list[Any], fn: Callable[..., str], *args: Any) -> str:
        """``fn(*args, limits, deadline, queued_s)`` in a slot of the pool for ``cost``, in the worker
        processes (``executor[0]``, once ready) or a thread; the time budget counts from the
        request's arrival (:class:`~.app.BodyLimit` stamps it)."""
        arrived = request.scope.get("state", {}).get("arrived", time.monotonic())
        deadline = arrived + self.limits.time_budget_s
        async with self.pool(cost).slot(deadline) as queued:
            if executor:
                return await asyncio.get_running_loop().run_in_executor(executor[0], fn, *args, self.limits,
                                                                        deadline, queued)
            return await anyio.to_thread.run_sync(fn, *args, self.limits, deadline, queued)
