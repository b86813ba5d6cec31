"""The work queue never hands one key to two workers and collapses bursts."""

import asyncio

from bernini.reconcile.queue import WorkQueue


def test_bursts_collapse_and_a_busy_key_is_processed_once_more():
    async def scenario():
        queue = WorkQueue()
        for _ in range(5):
            queue.add("a")
        queue.add("b")
        assert len(queue) == 2
        key = await queue.get()
        assert key == "a"
        queue.add("a")  # arrives while "a" is processing
        assert await queue.get() == "b"
        queue.done("b")
        queue.done("a")  # the dirty mark re-queues it
        assert await asyncio.wait_for(queue.get(), 1) == "a"
        queue.done("a")
        assert len(queue) == 0

    asyncio.run(scenario())
