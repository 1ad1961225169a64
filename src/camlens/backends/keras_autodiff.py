"""Gradients through a Keras model on each Keras backend: ``tf.GradientTape``, ``jax.vjp`` or
torch autograd, behind one pullback (see :mod:`camlens.backends.keras`).

The target's score is computed in torch from the logits (:func:`score_cotangent`); its gradient
with respect to the logits is pulled back through the framework (a vector-Jacobian product).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from camlens import targets as targets_
from camlens.errors import CamlensValueError

#: Backends on which ``guided=True`` (guided backpropagation) is implemented.
GUIDED_BACKENDS = ("tensorflow", "torch", "jax")

#: A torch tensor as a tensor of the Keras backend.
ToBackend = Callable[[torch.Tensor], Any]


def vjp(
    backend: str, to_backend: ToBackend, function: Callable[[Any], Any], value: Any
) -> tuple[Any, Callable]:
    """``function(value)`` and its pullback: cotangent (torch) -> gradient (backend) or None."""
    if backend == "tensorflow":
        import tensorflow as tf

        value = tf.convert_to_tensor(value)
        with tf.GradientTape() as tape:
            tape.watch(value)
            out = function(value)
        return out, lambda cot: tape.gradient(out, value, output_gradients=to_backend(cot))
    if backend == "jax":
        import jax

        out, pull = jax.vjp(function, value)
        return out, lambda cot: pull(to_backend(cot).astype(out.dtype))[0]
    leaf = value.detach().requires_grad_()
    with torch.enable_grad():
        out = function(leaf)

    def pullback(cot: torch.Tensor) -> Any:
        if not out.requires_grad:
            return None
        return torch.autograd.grad(out, leaf, cot.to(out.dtype), allow_unused=True)[0]

    return out, pullback


def guided(backend: str, function: Callable[[Any], Any]) -> Callable[[Any], Any]:
    r"""``function`` (a ReLU) with guided backpropagation's gradient (Springenberg et al. 2015):
    :math:`\partial y / \partial x` applied to :math:`\mathrm{relu}(\delta)`, not to
    :math:`\delta`, so only positive gradients flow back."""
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.custom_gradient
        def guided_tf(x: Any) -> Any:
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = function(x)
            return y, lambda dy: tape.gradient(y, x, output_gradients=tf.nn.relu(dy))

        return guided_tf
    if backend == "torch":
        return lambda x: _GuidedTorch.apply(x, function)
    if backend == "jax":
        import jax

        @jax.custom_vjp
        def guided_jax(x: Any) -> Any:
            return function(x)

        def backward(pull: Any, dy: Any) -> Any:
            return pull(jax.numpy.maximum(dy, 0))

        guided_jax.defvjp(lambda x: jax.vjp(function, x), backward)
        return guided_jax
    raise CamlensValueError(
        f"guided backpropagation of Keras models is supported on the "
        f"{', '.join(GUIDED_BACKENDS)} backends, not on {backend!r}; set "
        "KERAS_BACKEND=tensorflow, or use method='saliency'"
    )


def score_cotangent(
    logits: torch.Tensor, target: targets_.Target
) -> tuple[targets_.ResolvedTarget, torch.Tensor, torch.Tensor]:
    """The resolved target, scores (B,) and d(sum of scores)/d(logits), in torch."""
    resolved = targets_.resolve(target, logits)
    leaf = logits.detach().clone().requires_grad_()
    with torch.enable_grad():
        score = targets_.scores(leaf, resolved)
    found = None
    if score.requires_grad:
        found = torch.autograd.grad(score.sum(), leaf, allow_unused=True)[0]
    cot = torch.zeros_like(leaf) if found is None else found
    return resolved, score.detach().float(), cot.detach()


class _GuidedTorch(torch.autograd.Function):
    """Guided backpropagation through one ReLU on Keras's torch backend."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, function: Callable) -> torch.Tensor:
        with torch.enable_grad():
            leaf = x.detach().requires_grad_()
            y = function(leaf)
        ctx.pair = (leaf, y)
        return y.detach()

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor, None]:
        leaf, y = ctx.pair
        (grad,) = torch.autograd.grad(y, leaf, dy.clamp_min(0))
        return grad, None
