"""The method registry: one name per method, filled by the ``@register`` decorator.

A leaf module: it imports none of the methods it registers (importing ``camlens`` registers the
built-in ones), and it warns when a name is registered twice."""

from __future__ import annotations

import inspect
import warnings
from typing import TYPE_CHECKING, Any

from camlens.errors import CamlensValueError, CamlensWarning

if TYPE_CHECKING:
    from camlens.explanation import Explanation
    from camlens.methods.base import Explainer

_METHODS: dict[str, type[Explainer]] = {}
_ALIASES: dict[str, str] = {}


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def register(name: str, *aliases: str):
    """Class decorator: register an :class:`Explainer` under ``name`` (and ``aliases``)."""

    def decorate(cls: type[Explainer]) -> type[Explainer]:
        if name in _METHODS and _METHODS[name] is not cls:
            warnings.warn(
                f"method {name!r} is registered twice; the later class "
                f"{cls.__module__}.{cls.__qualname__} replaces the earlier",
                CamlensWarning,
                stacklevel=2,
            )
        cls.name = name
        _METHODS[name] = cls
        for alias in (name, *aliases):
            _ALIASES[_key(alias)] = name
        return cls

    return decorate


def methods(model: Any = None) -> list[str]:
    """The registered method names, in registration order; with ``model``, those that apply to
    it (the attention methods only to vision transformers)."""
    if model is None:
        return list(_METHODS)
    return [name for name, cls in _METHODS.items() if cls.applies_to(model)]


def applicable(names: list[str], model: Any) -> tuple[list[str], list[str]]:
    """``names`` to run on ``model`` and those skipped: when ``names`` is every registered
    method (``--method all``), the methods that do not apply to ``model`` are skipped; a list
    naming fewer is kept whole (a method that does not apply then refuses with its reason)."""
    if names != list(_METHODS):
        return names, []
    kept = methods(model)
    return kept, [name for name in names if name not in kept]


def get(name: str) -> type[Explainer]:
    """The class registered as ``name`` (or an alias); an unknown name lists the valid ones."""
    if not isinstance(name, str) or _key(name) not in _ALIASES:
        raise CamlensValueError(f"unknown method {name!r}; valid methods: {', '.join(_METHODS)}")
    return _METHODS[_ALIASES[_key(name)]]


def options_for(name: str, **options: Any) -> dict[str, Any]:
    """The ``options`` that method ``name``'s constructor takes as keywords, the others dropped
    (``precision`` reaches Score-CAM only); a constructor's ``**options`` passes on to its base
    class's."""
    taken: set[str] = set()
    for cls in get(name).__mro__:
        if "__init__" not in vars(cls):
            continue
        parameters = list(inspect.signature(vars(cls)["__init__"]).parameters.values())
        taken.update(p.name for p in parameters if p.kind is not p.VAR_KEYWORD)
        if all(p.kind is not p.VAR_KEYWORD for p in parameters):
            break
    return {key: value for key, value in options.items() if key in taken}


def explain(
    model: Any,
    x: Any,
    method: str = "gradcam",
    target: Any = None,
    layer: Any = "auto",
    activation: str | None = None,
    **options: Any,
) -> Explanation:
    """Explain ``model`` on the batch ``x`` with ``method``; see :class:`camlens.Explanation`.

    ``x`` is a preprocessed float batch (B, C, H, W): ``x, images = camlens.load_images(paths)``
    makes one. ``target``: None (the predicted class), an int, a sequence of B ints, or a callable
    ``logits -> (B,) scores``; several per image: ``"top3"``, ``"above:0.5"``, one list of classes
    per image, and ``"output:K"`` for a model that is not a classifier
    (:meth:`~camlens.methods.base.Explainer.__call__`, with ``activation`` "softmax", "sigmoid" or
    "none"). ``layer``: "auto", a dotted module name, a module or a list of them.
    ``options`` go to the method (``relu``, ``upsample``, ``normalize`` and the method's own).

    Refused with a :class:`~camlens.CamlensError` before the model runs: file names or pictures
    (a ``CamlensTypeError`` showing the ``load_images`` call), an empty batch, and NaN or inf in
    ``x`` (naming the images). An image whose logits hold NaN or inf gets a NaN map and a
    :class:`~camlens.CamlensWarning`; its target is still reported. float16 and bfloat16 models
    work with every method (maps computed in float32).
    """
    return get(method)(model, layer=layer, **options)(x, target=target, activation=activation)
