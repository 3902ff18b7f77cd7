"""The work queue: one worker per key, nothing lost, and backoff kept across re-adds."""

from __future__ import annotations

import asyncio

from kubenova.kube import workqueue


def test_a_key_added_while_it_fails_still_waits_out_its_backoff() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        runs: list[float] = []

        async def handler(key: str) -> float | None:
            runs.append(loop.time())
            if len(runs) == 1:
                queue.add(key)  # a watch event for the same key while it is processed
                raise RuntimeError("the API server said no")
            return None

        queue = workqueue.WorkQueue(handler, workers=2)
        task = asyncio.create_task(queue.run())
        queue.add("default/demo")
        async with asyncio.timeout(5):
            while len(runs) < 2:
                await asyncio.sleep(0.01)
        task.cancel()
        return runs

    first, second = asyncio.run(main())
    assert second - first >= workqueue.FAILURE_BACKOFF[0] * 0.9


def test_a_key_added_while_it_succeeds_runs_again_at_once_and_never_twice_at_a_time() -> None:
    async def main() -> tuple[int, int]:
        runs = 0
        active = 0
        most = 0

        async def handler(key: str) -> float | None:
            nonlocal runs, active, most
            runs += 1
            active += 1
            most = max(most, active)
            if runs == 1:
                queue.add(key)
                queue.add(key)
            await asyncio.sleep(0.01)
            active -= 1
            return None

        queue = workqueue.WorkQueue(handler, workers=4)
        task = asyncio.create_task(queue.run())
        queue.add("default/demo")
        async with asyncio.timeout(5):
            while runs < 2 or not queue.idle:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        task.cancel()
        return runs, most

    runs, most = asyncio.run(main())
    assert (runs, most) == (2, 1)
