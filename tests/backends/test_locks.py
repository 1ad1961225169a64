"""camlens.backends.locks: concurrent explainer calls on one model give the serial maps."""

from __future__ import annotations

import gc
import threading

import torch
from toy_models import SmallCNN

import camlens
from camlens.backends.locks import model_lock


def test_eight_threads_on_one_model_give_the_serial_maps() -> None:
    model = SmallCNN(seed=3).eval()
    torch.manual_seed(0)
    x = torch.rand(8, 3, 32, 32)
    methods = ["gradcam", "layercam", "gradcam", "saliency"] * 2
    serial = [camlens.explain(model, x[i : i + 1], method=m).maps for i, m in enumerate(methods)]
    start = threading.Barrier(8)
    results: list[torch.Tensor | BaseException | None] = [None] * 8

    def work(i: int) -> None:
        start.wait()
        try:
            for _ in range(3):
                results[i] = camlens.explain(model, x[i : i + 1], method=methods[i]).maps
        except BaseException as error:  # reported below with the thread's index
            results[i] = error

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, (got, want) in enumerate(zip(results, serial)):
        assert isinstance(got, torch.Tensor), f"thread {i}: {got!r}"
        assert torch.equal(got, want), f"thread {i} ({methods[i]}) differs from the serial map"
    assert not model.training


def test_one_reentrant_lock_per_model_weakly_kept() -> None:
    model, other = SmallCNN(), SmallCNN()
    lock = model_lock(model)
    assert model_lock(model) is lock and model_lock(other) is not lock
    with lock, model_lock(model):  # re-entrant: a method may call another inside its call
        pass
    from camlens.backends import locks

    gc.collect()  # other tests' models go first, so that only this one is counted below
    count = len(locks._LOCKS)
    del model, lock
    gc.collect()
    assert len(locks._LOCKS) == count - 1 and other in locks._LOCKS
