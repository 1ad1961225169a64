"""Per-call hooks (camlens/backends/torch_hooks.py): registered for one block, removed after it."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from camlens.backends.torch_hooks import Keeper, hooked, replacing
from camlens.backends.torch_layers import layout_of
from camlens.errors import CamlensValueError


def test_hooked_removes_its_hooks_when_the_block_raises():
    layer = nn.ReLU()
    calls = []
    with pytest.raises(RuntimeError, match="inside"), hooked([(layer, lambda *a: calls.append(1))]):
        layer(torch.ones(1))
        raise RuntimeError("inside")
    layer(torch.ones(1))
    assert calls == [1] and not layer._forward_hooks


def test_keeper_keeps_a_leaf_and_hands_the_network_a_copy():
    conv = nn.Conv2d(1, 2, 1)
    keeper = Keeper(["conv"], gradients=True)
    with hooked([(conv, keeper.hook(0))]), torch.no_grad():
        out = conv(torch.ones(1, 1, 2, 2))
    (kept,) = keeper.tensors()
    assert kept.requires_grad and kept is not out and torch.equal(kept, out)


def test_keeper_refuses_a_layer_that_runs_twice_or_never():
    conv = nn.Conv2d(1, 1, 1)
    keeper = Keeper(["conv", "unused"], gradients=False)
    with hooked([(conv, keeper.hook(0))]):
        conv(torch.ones(1, 1, 2, 2))
        with pytest.raises(CamlensValueError, match="'conv' runs more than once"):
            conv(torch.ones(1, 1, 2, 2))
    with pytest.raises(CamlensValueError, match="'unused' did not run"):
        keeper.tensors()


def test_replacing_puts_the_rows_after_the_original_output():
    conv = nn.Conv2d(1, 2, 1)
    x = torch.ones(1, 1, 3, 3)
    rows = torch.zeros(2, 2, 3, 3)
    seen: list[torch.Tensor] = []
    hook = replacing("conv", lambda t: layout_of(tuple(t.shape), (3, 3)), rows, True, seen)
    with hooked([(conv, hook)]), torch.no_grad():
        out = conv(x)
        plain = conv.weight.view(1, 2, 1, 1) + conv.bias.view(1, 2, 1, 1)
    assert out.shape == (3, 2, 3, 3) and torch.equal(out[1:], rows)
    torch.testing.assert_close(out[:1], plain.expand(1, 2, 3, 3))
    torch.testing.assert_close(seen[0], out[:1])
