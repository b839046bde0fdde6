"""Stopping the tasks we own.

On Python 3.11, ``asyncio.wait_for`` swallows a cancellation that arrives just as the awaited
operation completes (CPython gh-86296, fixed in 3.12), and redis-py awaits ``wait_for`` on
every command. A single ``task.cancel()`` can therefore be lost, so owners cancel until the
task is really done.
"""

from __future__ import annotations

import asyncio
import contextlib


async def cancel_and_wait(task: asyncio.Task | None, *, retry_every: float = 0.05) -> None:
    """Cancel ``task`` and wait for it to finish, re-cancelling a cancellation that was lost."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=retry_every)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()


def raise_if_cancelled() -> None:
    """Re-raise a cancellation that an awaited call swallowed.

    The same CPython 3.11 ``wait_for`` bug as above: when a client disconnects just as a
    Redis reply arrives, Django's cancellation of the response task is lost, and an endless
    stream would go on writing to nobody (measured: 2 listeners leaked per 75,000 sessions in
    the churn soak). The request for cancellation is still counted on the task, so loops
    call this after their awaits."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()


async def settle(future: asyncio.Future, awaitable):
    """Await ``awaitable`` and hand its result or exception to ``future``, which other callers
    of the same single-flight load await (through ``asyncio.shield``). Returns the result or
    re-raises."""
    try:
        result = await awaitable
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # retrieved: waiters get it through the shield
        raise
    future.set_result(result)
    return result


class OwnedTasks:
    """Background tasks one owner starts and ends: each leaves the set when it finishes, and the
    owner's ``close()`` ends the rest with ``cancel()`` (cancelled and awaited) or ``wait()``
    (awaited as they are, for work that must finish, such as a disconnect in flight)."""

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()

    def start(self, coro, *, name: str | None = None) -> asyncio.Task:
        return self.add(asyncio.get_running_loop().create_task(coro, name=name))

    def add(self, task: asyncio.Task) -> asyncio.Task:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    async def cancel(self) -> None:
        """Cancel every task still running and wait until each is done."""
        await asyncio.gather(*(cancel_and_wait(t) for t in list(self._tasks)))

    async def wait(self) -> None:
        """Wait for every task still running; their exceptions are not raised here."""
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
