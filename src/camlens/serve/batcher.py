"""Micro-batching: many clients, one model, one worker thread.

Requests arrive from any thread as ``(key, item)``; the worker takes the first waiting one, waits
up to ``window`` seconds for more (at most ``max_batch``), groups them by key in arrival order and
runs ``run(key, items) -> results`` once per group. A group that fails is run again one item at a
time, so a bad request fails alone. At most ``max_pending`` requests wait; beyond that
:meth:`submit` raises :class:`Busy` at once instead of queueing without bound.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any

from camlens.errors import CamlensError


class Busy(CamlensError, RuntimeError):
    """The queue is full: the caller should answer "try again later"."""


class MicroBatcher:
    """``submit(key, item)``: a future of the item's result in ``run(key, [..., item, ...])``."""

    def __init__(
        self,
        run: Callable[[Hashable, list[Any]], list[Any]],
        *,
        max_batch: int = 8,
        window: float = 0.005,
        max_pending: int = 256,
    ) -> None:
        self._run = run
        self.max_batch = max_batch
        self.window = window
        self._queue: queue.Queue[tuple[Hashable, Any, Future] | None] = queue.Queue(max_pending)
        self.batches: list[int] = []  # the size of each group run, for tests and the health page
        self._thread = threading.Thread(target=self._work, name="camlens-batcher", daemon=True)
        self._thread.start()

    def submit(self, key: Hashable, item: Any) -> Future:
        future: Future = Future()
        try:
            self._queue.put_nowait((key, item, future))
        except queue.Full:
            raise Busy(
                f"the model queue is full ({self._queue.maxsize} requests waiting); try again"
            ) from None
        return future

    def close(self) -> None:
        """Finish the waiting requests, then stop the worker."""
        self._queue.put(None)
        self._thread.join()

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            pending = [first]
            deadline = time.monotonic() + self.window
            stop = False
            while len(pending) < self.max_batch:
                try:
                    more = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                pending.append(more)
            groups: dict[Hashable, list[tuple[Hashable, Any, Future]]] = {}
            for request in pending:
                groups.setdefault(request[0], []).append(request)
            for key, group in groups.items():
                self._answer(key, group)
            if stop:
                return

    def _answer(self, key: Hashable, group: list[tuple[Hashable, Any, Future]]) -> None:
        try:
            results = self._run(key, [item for _, item, _ in group])
            self.batches.append(len(group))
        except Exception as error:
            if len(group) > 1:
                for request in group:
                    self._answer(key, [request])
            else:
                group[0][2].set_exception(error)
            return
        for (_, _, future), result in zip(group, results):
            future.set_result(result)
