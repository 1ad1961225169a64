"""Int8 copies for the many-forward methods: close to float32, the user's model left alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from toy_models import SmallCNN

from camlens.backends import adapter_for
from camlens.backends.quantize import calibration_rows, int8_supported, quantize_int8, run_int8
from camlens.errors import CamlensValueError

pytestmark = pytest.mark.skipif(not int8_supported(), reason="no x86 int8 engine in this build")


def test_calibration_rows_spread_from_first_to_last():
    assert calibration_rows(5).tolist() == [0, 1, 2, 3, 4]
    rows = calibration_rows(311)
    assert len(rows) == 32 and rows[0] == 0 and rows[-1] == 310
    assert set(torch.diff(rows).tolist()) <= {9, 10, 11}


@torch.no_grad()
def test_the_int8_copy_is_close_and_the_model_untouched(images):
    model = SmallCNN().eval()
    state = {name: value.clone() for name, value in model.state_dict().items()}
    before = model(images)
    quantized = quantize_int8(model, images)
    logits = run_int8(quantized, images)
    # int8 steps of about 1/128 of each tensor's range: within 2% of the logits' spread
    spread = float(before.max() - before.min())
    assert float((logits - before).abs().max()) < 0.02 * spread
    assert torch.equal(logits.argmax(dim=1), before.argmax(dim=1))
    assert all(torch.equal(state[name], value) for name, value in model.state_dict().items())
    assert [type(m) for m in model.modules()][1:5] == [nn.Sequential, nn.Conv2d, nn.ReLU, nn.Conv2d]
    assert torch.equal(model(images), before)


@torch.no_grad()
def test_a_final_softmax_is_dropped_from_the_copy(images):
    torch.manual_seed(0)
    head = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4))
    model = nn.Sequential(head, nn.Softmax(dim=1)).eval()
    logits = run_int8(quantize_int8(model, images), images)
    assert torch.allclose(logits, head(images), atol=0.05 * float(head(images).abs().max()))
    assert not torch.allclose(logits.sum(dim=1), torch.ones(2), atol=0.1)


def test_errors_name_the_fix(images):
    class Branching(SmallCNN):
        def forward(self, x):
            return super().forward(x) if x.sum() > 0 else super().forward(-x)

    with pytest.raises(
        CamlensValueError,
        match=r"precision='int8' needs a model torch.fx can trace, and tracing Branching failed "
        r"\(TraceError: .*\); use precision='fp32'",
    ):
        quantize_int8(Branching().eval(), images)
    with pytest.raises(
        CamlensValueError,
        match=r"precision='int8' runs on the CPU only \(PyTorch's x86 int8 kernels\) and the model "
        r"is on meta; use precision='bf16' or 'fp32' there",
    ):
        quantize_int8(SmallCNN().to("meta"), images)
    with pytest.raises(
        CamlensValueError, match=r"precision='int8' is only valid inside adapter.int8\(...\)"
    ):
        adapter_for(SmallCNN()).infer(images, precision="int8")


@torch.no_grad()
def test_the_adapter_block_runs_the_copy_and_forgets_it(images):
    model = SmallCNN().eval()
    adapter = adapter_for(model)
    with adapter.int8(images):
        inside = adapter.infer(images, precision="int8")
        assert adapter._int8 is not None
        assert 0 < adapter.int8_gap < 0.05  # checked on the calibration batch, no warning
    assert adapter._int8 is None
    exact = adapter.infer(images)
    assert torch.allclose(exact, model(images), atol=1e-6)  # channels-last: rounding only
    assert 0 < float((inside - exact).abs().max()) < 0.02 * float(exact.max() - exact.min())
