"""camlens.serve.batcher: grouping by key, a failing request fails alone, a full queue says so."""

from __future__ import annotations

import threading

import pytest

from camlens.serve.batcher import Busy, MicroBatcher


def test_groups_by_key_in_arrival_order_and_isolates_failures() -> None:
    calls: list[tuple[str, list[int]]] = []
    gate = threading.Event()

    def run(key, items):
        gate.wait(10)
        calls.append((key, list(items)))
        if -1 in items:
            raise ValueError(f"bad item among {items}")
        return [10 * item for item in items]

    batcher = MicroBatcher(run, max_batch=8, window=0.2)
    try:
        futures = [batcher.submit(key, item) for key, item in
                   [("a", 1), ("b", 2), ("a", 3), ("a", -1), ("b", 4)]]  # fmt: skip
        gate.set()
        assert [f.result(10) for f in futures[:3]] + [futures[4].result(10)] == [10, 20, 30, 40]
        with pytest.raises(ValueError, match=r"bad item among \[-1\]"):
            futures[3].result(10)
    finally:
        batcher.close()
    # one batch of five: group a (three, failing), then group b; a again one at a time
    assert calls == [("a", [1, 3, -1]), ("a", [1]), ("a", [3]), ("a", [-1]), ("b", [2, 4])]
    assert batcher.batches == [1, 1, 2]


def test_a_full_queue_answers_busy() -> None:
    release = threading.Event()
    started = threading.Event()

    def run(key, items):
        started.set()
        release.wait(10)
        return items

    batcher = MicroBatcher(run, max_batch=1, window=0.0, max_pending=2)
    try:
        first = batcher.submit("k", 0)
        started.wait(10)  # the worker holds the first; two more may wait
        waiting = [batcher.submit("k", 1), batcher.submit("k", 2)]
        with pytest.raises(
            Busy, match=r"the model queue is full \(2 requests waiting\); try again"
        ):
            batcher.submit("k", 3)
        release.set()
        assert [first.result(10)] + [f.result(10) for f in waiting] == [0, 1, 2]
    finally:
        batcher.close()
