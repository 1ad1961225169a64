"""One lock per model, so that threads sharing a model take turns.

An explainer's call registers hooks on the model and sets its modules' train/eval flags for the
call's duration; two calls on one model at the same time would see each other's hooks fire and
flags flip. Every explainer call (and layer survey) holds its model's lock. The locks are
re-entrant (a method may call another inside its call) and weakly keyed by the model: a model
that is collected takes its lock with it.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

_LOCKS: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_BY_ID: dict[int, threading.RLock] = {}  # models that take no weak reference (or no hash)
_GUARD = threading.Lock()


def model_lock(model: Any) -> threading.RLock:
    """The re-entrant lock of ``model`` (the same object for the same model, in every thread)."""
    with _GUARD:
        try:
            lock = _LOCKS.get(model)
            if lock is None:
                lock = _LOCKS[model] = threading.RLock()
        except TypeError:
            lock = _BY_ID.setdefault(id(model), threading.RLock())
        return lock
