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
