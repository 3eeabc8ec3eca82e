"""Request tasks and shared upstream calls, started straight on the loop.

Every cache miss starts two tasks (the request, and the shared upstream call
it leads) and every request over the socket one. anyio's `start_soon` costs
~14 us a task with its wake-up, `loop.create_task` ~3 us (measured with
uvloop, bench/bench_transport.py's note): on a miss of ~300 us that was a
tenth of the time. These tasks are therefore plain asyncio tasks, kept in a
`TaskSet` so that shutdown can cancel them and wait for them, as a task
group would. anyio's cancel scopes work inside them as in any task (the
request's deadline and Cancel frames, a flight's cancellation).

A task that fails is logged with its traceback; unlike a task group's child,
it takes nothing else down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog

__all__ = ["TaskSet"]

log = structlog.get_logger("claifd.tasks")


class TaskSet:
    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self.tasks)

    def __repr__(self) -> str:
        return f"<TaskSet running={len(self.tasks)}>"

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `coro` as a task of its own, from now on (within the running loop)."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("task failed", task=task.get_coro().__qualname__,  # type: ignore[union-attr]
                      exc_info=(type(exc), exc, exc.__traceback__))

    async def cancel_all(self) -> None:
        """Cancel every task and wait until each has ended."""
        while self.tasks:
            pending = list(self.tasks)
            for task in pending:
                task.cancel()
            await asyncio.wait(pending)
