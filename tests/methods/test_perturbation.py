"""Score-CAM and Ablation-CAM against pytorch-grad-cam, and their batching shortcuts."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from needs import need

import camlens
from camlens.backends.quantize import int8_supported
from camlens.methods.base import fuse


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return need("torchvision").models.resnet18().eval()


@pytest.fixture(scope="module")
def pgc():
    """pytorch-grad-cam, the reference implementation."""
    return need("pytorch_grad_cam")


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 3, 32, 32)


class Tiny(nn.Module):
    """conv-relu-conv-relu, global average pooling, linear: small enough for exhaustive checks."""

    def __init__(self, width: int = 6) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(width, 4)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fc(self.relu(self.conv2(self.relu(self.conv1(x)))).mean(dim=(2, 3)))


class BatchFromInput(Tiny):
    """Reads the batch size below the layer: running the layers below once cannot work."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        batch = x.shape[0]
        features = self.relu(self.conv2(self.relu(self.conv1(x))))
        return self.fc(features.reshape(batch, self.fc.in_features, -1).mean(dim=2))


def reference(cls, model, layer, x, targets, **kwargs):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = cls(model, [dict(model.named_modules())[layer]], **kwargs)
    return torch.from_numpy(cam(x, [ClassifierOutputTarget(int(t)) for t in targets]))


def test_scorecam_matches_pytorch_grad_cam(pgc, resnet, x):
    exp = camlens.explain(resnet, x, method="scorecam", layer="layer3", precision="fp32")
    expected = reference(pgc.ScoreCAM, resnet, "layer3", x, exp.targets)
    assert exp.maps.shape == (2, 32, 32) and exp.raw.shape == (2, 2, 2)
    assert float((exp.maps - expected).abs().max()) < 1e-3


@pytest.mark.skipif(not int8_supported(), reason="no x86 int8 engine in this build")
def test_scorecam_int8_within_1e_2_of_float32(resnet):
    # layer2 (128 channels, 8x8 at 64 px): 256 masked forwards per precision, a quarter of layer4's
    # at a third of 112 px's pixels, same bound (int8 moves these maps by 4.4e-3). camlens' float32
    # Score-CAM equals pytorch-grad-cam's (test_scorecam_matches_pytorch_grad_cam).
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    exp = camlens.explain(resnet, x, method="scorecam", layer="layer2", precision="int8")
    expected = camlens.explain(resnet, x, method="scorecam", layer="layer2", precision="fp32").maps
    assert 1e-4 < float((exp.maps - expected).abs().max()) < 1e-2


def test_ablationcam_matches_pytorch_grad_cam(pgc, resnet, x):
    exp = camlens.explain(resnet, x, method="ablationcam", layer="layer3", target=[3, 7])
    expected = reference(pgc.AblationCAM, resnet, "layer3", x, [3, 7])
    assert float((exp.maps - expected).abs().max()) < 1e-3


def tiny_weights(model, x, layer_out, target):
    """Ablation weights by brute force: the whole network re-run with one channel zeroed."""
    weights = []
    for channel in range(layer_out.shape[1]):

        def zero(module, args, output, channel=channel):
            output = output.clone()
            output[:, channel] = 0
            return output

        handle = model.conv2.register_forward_hook(zero)
        with torch.no_grad():
            weights.append(model(x)[:, target])
        handle.remove()
    with torch.no_grad():
        score = model(x)[:, target]
    return (score[:, None] - torch.stack(weights, dim=1)) / score[:, None]


@pytest.mark.parametrize(("cls", "forwards"), [(Tiny, 1 + 2 + 3), (BatchFromInput, 1 + 1 + 3)])
def test_ablationcam_runs_only_the_layers_above_and_falls_back(cls, forwards):
    torch.manual_seed(2)
    model = cls().eval()
    x = torch.randn(3, 3, 12, 12)
    with torch.no_grad():
        activations = model.relu(model.conv2(model.relu(model.conv1(x))))
    weights = tiny_weights(model, x, activations, target=2)
    model.calls = 0
    exp = camlens.explain(model, x, method="ablationcam", layer="conv2", target=2, relu=False)
    expected = (weights[..., None, None] * model.conv2(model.relu(model.conv1(x)))).sum(dim=1)
    assert torch.allclose(exp.raw, expected.detach(), atol=1e-5)
    # capture, the broadcast check (+ a plain forward where it passes), one forward per image
    # (below the layer on one row where the check passed, on 6 rows where not): not one per channel
    assert model.calls == forwards


def test_scorecam_top_k_equals_full_scorecam_restricted_to_those_channels():
    torch.manual_seed(3)
    model = Tiny(width=8).eval()
    x = torch.randn(2, 3, 16, 16)
    full = camlens.ScoreCAM(model, layer="conv2", precision="fp32")
    fast = camlens.ScoreCAM(model, layer="conv2", precision="fp32", top_k_channels=3)
    capture = full.adapter.capture(x, ["conv2"], None, gradients=False)
    activations = capture.activations[0]
    scores = full.masked_scores(x, activations, capture.target)  # (B, 8): every channel
    top = activations.mean(dim=(2, 3)).topk(3, dim=1).indices
    weights = torch.softmax(scores.gather(1, top), dim=1)
    chosen = activations.gather(1, top[..., None, None].expand(-1, -1, 8, 8))
    expected = (weights[..., None, None] * chosen).sum(dim=1)
    assert torch.allclose(fast(x).raw, expected, atol=1e-6)
    assert torch.allclose(
        full(x).raw, (torch.softmax(scores, 1)[..., None, None] * activations).sum(1)
    )


def test_scorecam_masked_passes_run_in_inference_mode_without_hooks():
    torch.manual_seed(4)
    seen = []

    class Spy(Tiny):
        def forward(self, x):
            seen.append((torch.is_inference_mode_enabled(), bool(self.conv2._forward_hooks)))
            return super().forward(x)

    model = Spy().eval()
    camlens.explain(model, torch.randn(1, 3, 8, 8), method="scorecam", layer="conv2", batch_size=4)
    assert seen[0] == (False, True)  # the capture
    assert seen[1:] == [(True, False)] * 2  # 6 channels in batches of 4


@pytest.mark.skipif(not int8_supported(), reason="no x86 int8 engine in this build")
def test_scorecam_int8_masked_passes_run_a_calibrated_copy():
    torch.manual_seed(4)
    calls = []

    class Spy(Tiny):
        def forward(self, x):
            calls.append("traced" if isinstance(x, torch.fx.Proxy) else tuple(x.shape))
            return super().forward(x)

    model = Spy().eval()
    x = torch.randn(2, 3, 8, 8)
    int8 = camlens.explain(model, x, method="scorecam", layer="conv2", precision="int8")
    # the capture, the tracing of the int8 copy and the float32 check of the copy on its 12
    # calibration rows (2 images x 6 channels); the masked passes all run the copy
    assert calls == [(2, 3, 8, 8), "traced", (12, 3, 8, 8)]
    fp32 = camlens.explain(model, x, method="scorecam", layer="conv2", precision="fp32")
    assert 0 < float((int8.raw - fp32.raw).abs().max()) < 1e-2 * float(fp32.raw.abs().max())


@pytest.mark.parametrize("fast", [True, False])
def test_auto_precision_is_bf16_where_the_cpu_measures_it_fast(monkeypatch, fast):
    from camlens.backends import torch as backend

    monkeypatch.setattr(backend, "cpu_bf16_is_fast", lambda: fast)
    used = []
    infer = backend.TorchAdapter.infer

    def spy(self, x, *, precision="fp32"):
        used.append(precision)
        return infer(self, x, precision=precision)

    monkeypatch.setattr(backend.TorchAdapter, "infer", spy)
    camlens.explain(Tiny().eval(), torch.randn(1, 3, 8, 8), method="scorecam", layer="conv2")
    assert set(used) == {"bf16" if fast else "fp32"}


def test_the_bf16_speed_is_measured_once():
    from camlens.backends.torch import cpu_bf16_is_fast

    assert isinstance(cpu_bf16_is_fast(), bool)
    assert cpu_bf16_is_fast.cache_info().currsize == 1


def test_scorecam_bf16_close_to_fp32(resnet, x):
    fp32 = camlens.explain(
        resnet, x, method="scorecam", layer="layer3", top_k_channels=32, precision="fp32"
    )
    bf16 = camlens.explain(
        resnet, x, method="scorecam", layer="layer3", top_k_channels=32, precision="bf16"
    )
    assert float((fp32.maps - bf16.maps).abs().max()) < 1e-2


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_multi_layer_fusion(method):
    torch.manual_seed(5)
    model = Tiny().eval()
    x = torch.randn(2, 3, 12, 12)
    fused = camlens.explain(model, x, method=method, layer=["conv1", "conv2"], target=1)
    one = camlens.explain(model, x, method=method, layer="conv1", target=1)
    two = camlens.explain(model, x, method=method, layer="conv2", target=1)
    assert fused.layer == "conv1+conv2"
    assert torch.allclose(fused.raw, fuse([one.raw, two.raw]), atol=1e-6)


def test_augment_on_a_perturbation_cam_keeps_the_layer_grid():
    torch.manual_seed(6)
    model = Tiny().eval()
    x = torch.randn(1, 3, 20, 20)
    exp = camlens.explain(model, x, method="ablationcam", layer="conv2", augment=True)
    plain = camlens.explain(model, x, method="ablationcam", layer="conv2")
    assert exp.raw.shape == plain.raw.shape == (1, 10, 10)
    assert len(exp.extra["augmentations"]) == 6 and torch.equal(exp.targets, plain.targets)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"top_k_channels": 0}, "top_k_channels must be a positive int or None, got 0"),
        ({"precision": "fp16"}, "precision must be one of auto, fp32, bf16, int8, got 'fp16'"),
        ({"batch_size": 0}, "batch_size >= 1"),
    ],
)
def test_scorecam_option_errors(options, message):
    with pytest.raises(camlens.CamlensValueError, match=message):
        camlens.ScoreCAM(Tiny(), **options)


def test_progress_bar_appears_only_after_the_delay():
    from camlens.methods.perturbation import _Progress

    quick = _Progress(4, "Score-CAM", delay=60.0)
    quick.advance(2)
    assert quick.bar is None
    slow = _Progress(4, "Score-CAM", delay=0.0)
    slow.advance(2)
    assert slow.bar is not None and slow.done == 2
    slow.close()
    off = _Progress(4, "Score-CAM", enabled=False, delay=0.0)
    off.advance(2)
    assert off.bar is None


class FixedSize(Tiny):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-1] == 20, "input must be 20 pixels wide"
        return super().forward(x)


def test_augment_falls_back_to_flips_for_a_fixed_size_model():
    torch.manual_seed(7)
    model = FixedSize().eval()
    x = torch.randn(1, 3, 20, 20)
    with pytest.warns(camlens.CamlensWarning, match=r"rejects \(18, 18\) inputs"):
        exp = camlens.explain(model, x, method="gradcam", layer="conv2", augment=True, target=0)
    plain = camlens.GradCAM(model, layer="conv2")
    expected = (plain(x, target=0).raw + plain(x.flip(-1), target=0).raw.flip(-1)) / 2
    assert exp.extra["augmentations"] == ["x1.0", "flip x1.0"]
    assert torch.allclose(exp.raw, expected, atol=1e-6)
