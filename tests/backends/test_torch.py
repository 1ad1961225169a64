"""The PyTorch adapter: hooks live one call, modes and flags restored, odd models accepted."""

from __future__ import annotations

import gc
import warnings

import pytest
import torch
import torch.nn as nn
from toy_models import SmallCNN

import camlens
from camlens.backends import adapter_for


def hooks_left(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


class Exploding(SmallCNN):
    def forward(self, x):
        features = self.features(x)
        raise RuntimeError(f"boom after {tuple(features.shape)}")


def test_the_whole_adapter_protocol(small_cnn, images):
    """TorchAdapter has every member of camlens.backends.Adapter, device and outputs included."""
    from camlens.backends import Adapter

    adapter = adapter_for(small_cnn)
    members = set(Adapter.__annotations__) | {n for n in vars(Adapter) if not n.startswith("_")}
    assert {"device", "outputs"} <= members and all(hasattr(adapter, n) for n in members)
    assert adapter.device == torch.device("cpu")
    assert torch.equal(adapter.outputs(images), small_cnn(images))


@pytest.mark.parametrize("method", ["cam", "gradcam", "eigencam"])
def test_no_hook_left_and_state_restored(small_cnn, images, method):
    small_cnn.train()
    small_cnn.features[0].weight.requires_grad_(False)
    flags = [p.requires_grad for p in small_cnn.parameters()]
    camlens.explain(small_cnn, images, method=method)
    assert hooks_left(small_cnn) == 0
    assert all(m.training for m in small_cnn.modules())
    assert [p.requires_grad for p in small_cnn.parameters()] == flags
    assert all(p.grad is None for p in small_cnn.parameters())


def test_no_hook_left_after_an_exception_in_forward(images):
    model = Exploding()
    model.train()
    model.features[3].eval()  # a mixed state must come back exactly
    with pytest.raises(RuntimeError, match="boom"):
        camlens.explain(model, images, method="gradcam", layer="features")
    assert hooks_left(model) == 0
    assert [m.training for m in model.modules()] == [True, True, True, True, True, False, True]


def test_train_mode_model_is_explained_in_eval_mode(small_cnn, images):
    expected = camlens.explain(small_cnn, images).maps
    small_cnn.train()
    torch.testing.assert_close(camlens.explain(small_cnn, images).maps, expected)
    assert small_cnn.training


def test_works_inside_no_grad_and_inference_mode(small_cnn, images):
    expected = camlens.explain(small_cnn, images).maps
    with torch.no_grad():
        torch.testing.assert_close(camlens.explain(small_cnn, images).maps, expected)
        assert not torch.is_grad_enabled()
    with torch.inference_mode():
        x = images.clone()
        torch.testing.assert_close(camlens.explain(small_cnn, x).maps, expected)


def test_inplace_op_after_the_layer_does_not_leak_into_activations(images):
    # SmallCNN applies F.relu(features, inplace=True) after the explained layer, like DenseNet.
    inplace, plain = SmallCNN(inplace=True).eval(), SmallCNN(inplace=False).eval()
    a = adapter_for(inplace).capture(images, ["features"], 1)
    b = adapter_for(plain).capture(images, ["features"], 1)
    assert (a.activations[0] < 0).any()  # pre-ReLU values survived the in-place ReLU
    torch.testing.assert_close(a.activations[0], b.activations[0], rtol=0, atol=0)
    torch.testing.assert_close(a.gradients[0], b.gradients[0], rtol=0, atol=0)
    for method in ("gradcam", "gradcam++", "hirescam", "layercam", "xgradcam"):
        torch.testing.assert_close(
            camlens.explain(inplace, images, method=method).maps,
            camlens.explain(plain, images, method=method).maps,
        )


def test_torchvision_densenet_inplace_relu():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.densenet121(num_classes=4).eval()

    class OutOfPlace(torchvision.models.DenseNet):
        def forward(self, x):
            out = torch.relu(self.features(x))
            return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))

    plain = OutOfPlace(32, (6, 12, 24, 16), 64, num_classes=4).eval()
    plain.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    a = camlens.explain(model, x, method="gradcam", target=2)
    b = camlens.explain(plain, x, method="gradcam", target=2)
    assert a.layer == b.layer == "features"
    torch.testing.assert_close(a.raw, b.raw, rtol=1e-5, atol=1e-7)


def test_memory_is_flat_over_repeated_calls(small_cnn, images):
    explainer = camlens.GradCAM(small_cnn)
    explainer(images)
    gc.collect()
    before = sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))
    for _ in range(200):
        explainer(images)
    gc.collect()
    after = sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))
    assert after <= before
    assert hooks_left(small_cnn) == 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models_compute_maps_in_float32(images, dtype):
    model = SmallCNN().eval()
    reference = camlens.explain(model, images, method="gradcam")
    exp = camlens.explain(model.to(dtype), images, method="gradcam")
    assert exp.maps.dtype == exp.raw.dtype == exp.scores.dtype == torch.float32
    assert exp.targets.tolist() == reference.targets.tolist()
    assert (exp.maps - reference.maps).abs().max() < 0.1


class Wrapped(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.inner = SmallCNN()
        self.kind = kind

    def forward(self, x):
        logits = self.inner(x)
        if self.kind == "tuple":
            return logits, torch.zeros(1)
        if self.kind == "dict":
            return {"logits": logits, "aux": torch.zeros(1)}

        class Output:  # HuggingFace-style
            pass

        output = Output()
        output.logits = logits
        return output


@pytest.mark.parametrize("kind", ["tuple", "dict", "object"])
def test_tuple_dict_and_object_outputs(images, kind):
    model = Wrapped(kind).eval()
    expected = camlens.explain(model.inner, images, method="gradcam")
    exp = camlens.explain(model, images, method="gradcam")
    torch.testing.assert_close(exp.maps, expected.maps)
    assert exp.layer == "inner.features"


def test_softmax_at_the_end_is_skipped_with_a_warning(small_cnn, images):
    model = nn.Sequential(small_cnn, nn.Softmax(dim=1)).eval()
    expected = camlens.explain(small_cnn, images, method="gradcam", target=[1, 2])
    with pytest.warns(camlens.CamlensWarning, match=r"ends in Softmax \('1'\).*pre-softmax"):
        exp = camlens.explain(model, images, method="gradcam", target=[1, 2])
    torch.testing.assert_close(exp.maps, expected.maps)
    torch.testing.assert_close(exp.scores, expected.scores)
    torch.testing.assert_close(exp.probs, expected.probs)


def test_bad_inputs_name_the_problem(small_cnn, images):
    with pytest.raises(camlens.CamlensValueError, match=r"got \(3, 32, 32\); add a batch"):
        camlens.explain(small_cnn, images[0])
    with pytest.raises(
        camlens.CamlensTypeError,
        match=r"x must be a preprocessed tensor .* got ndarray .*; pass torch.as_tensor\(x\) if",
    ):
        camlens.explain(small_cnn, images.numpy())
    with pytest.raises(camlens.CamlensTypeError, match="got dtype torch.uint8"):
        camlens.explain(small_cnn, images.to(torch.uint8))
    with pytest.raises(camlens.CamlensTypeError, match="model must be a torch.nn.Module"):
        camlens.explain("resnet", images)


def test_layer_that_runs_twice_is_refused(images):
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(self.conv(self.conv(x)).mean(dim=(2, 3)))

    with pytest.raises(camlens.CamlensValueError, match="'conv' runs more than once"):
        camlens.explain(Twice().eval(), images, layer="conv")


def test_unused_layer_is_refused(images):
    model = SmallCNN().eval()
    model.unused = nn.Conv2d(3, 3, 1)
    with pytest.raises(camlens.CamlensValueError, match="'unused' did not run"):
        camlens.explain(model, images, layer="unused")


def test_no_warnings_on_a_plain_call(small_cnn, images):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        camlens.explain(small_cnn, images)


def test_one_shot_calls_share_the_layer_survey_until_the_model_changes(monkeypatch):
    import gc
    import weakref

    from toy_models import SmallCNN

    import camlens
    import camlens.backends.torch as backend

    calls = []
    real = backend.survey
    monkeypatch.setattr(backend, "survey", lambda *a: calls.append(1) or real(*a))
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    first = camlens.explain(model, x, method="gradcam")
    second = camlens.explain(model, x, method="gradcam++")
    assert len(calls) == 1 and first.layer == second.layer == "features"
    camlens.explain(model, torch.randn(1, 3, 24, 24), method="gradcam")
    assert len(calls) == 2  # a new input shape is surveyed
    model.features[3] = torch.nn.BatchNorm2d(16).eval()  # a module replaced: surveyed again
    again = camlens.explain(model, x, method="gradcam")
    assert len(calls) == 3 and again.layer == "features"
    # the cache holds the model weakly: dropping it frees it
    ref = weakref.ref(model)
    del model, first, second, again
    gc.collect()
    assert ref() is None


def test_int8_copy_is_made_once_and_again_after_the_weights_change(monkeypatch):
    from toy_models import SmallCNN

    import camlens
    import camlens.backends.torch as backend

    made = []
    real = backend.quantize_int8
    monkeypatch.setattr(backend, "quantize_int8", lambda *a: made.append(1) or real(*a))
    model = SmallCNN().eval()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    first = camlens.explain(model, x, method="scorecam", precision="int8")
    second = camlens.explain(model, x, method="scorecam", precision="int8")
    assert len(made) == 1 and torch.equal(first.maps, second.maps)
    with torch.no_grad():
        model.fc.weight.mul_(2.0)  # an in-place update: the copy no longer matches the weights
    camlens.explain(model, x, method="scorecam", precision="int8")
    assert len(made) == 2
