"""Model specs: torchvision, timm, torch.export, TorchScript, pickles, factories, errors."""

from __future__ import annotations

import sys
import textwrap
import urllib.error

import pytest
import torch
import torchvision
from needs import need

from camlens.errors import CamlensValueError
from camlens.models.specs import class_names, kind_of, load_spec


@pytest.fixture
def tiny_module(tmp_path, monkeypatch):
    """An importable module ``tinynet`` with a small model class and a factory."""
    (tmp_path / "tinynet.py").write_text(
        textwrap.dedent(
            """
            import torch.nn as nn

            class Tiny(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
                    self.pool = nn.AdaptiveAvgPool2d(1)
                    self.fc = nn.Linear(4, 2)

                def forward(self, x):
                    return self.fc(self.pool(self.features(x)).flatten(1))

            def build():
                return Tiny()
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("tinynet", None)


def test_kinds(tmp_path):
    assert kind_of("torchvision:resnet18") == "torchvision"
    assert kind_of("timm:resnet18") == "timm"
    assert kind_of("demo") == "checkpoint"
    assert kind_of("model.keras") == "keras"
    assert kind_of("keras:ResNet50") == "keras"
    assert kind_of("my_pkg.models:build") == "factory"
    (tmp_path / "ckpt").mkdir()
    with pytest.raises(CamlensValueError, match="folder without camlens.json"):
        kind_of(str(tmp_path / "ckpt"))
    (tmp_path / "ckpt" / "camlens.json").write_text("{}")
    assert kind_of(str(tmp_path / "ckpt")) == "checkpoint"
    with pytest.raises(
        CamlensValueError, match="unknown model spec 'nonsense'; expected torchvision:NAME"
    ):
        kind_of("nonsense")


def test_torchvision_random_and_typo():
    model = load_spec("torchvision:resnet18", "none")
    assert isinstance(model, torchvision.models.ResNet) and not model.training
    with pytest.raises(CamlensValueError, match="close names: resnet18"):
        load_spec("torchvision:resnet81")


def test_default_weights_offline_says_how_to_pass_a_file(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torchvision.models, "get_model", offline)
    with pytest.raises(CamlensValueError) as error:
        load_spec("torchvision:resnet18", "DEFAULT")
    assert "could not download the DEFAULT weights of resnet18" in str(error.value)
    assert "--weights path/to/weights.pth" in str(error.value)


def test_local_state_dict(tmp_path):
    torch.manual_seed(0)
    source = torchvision.models.get_model("squeezenet1_1", weights=None)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    model = load_spec("torchvision:squeezenet1_1", str(tmp_path / "w.pth"))
    for a, b in zip(source.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(CamlensValueError, match="does not fit the model"):
        load_spec("torchvision:resnet18", str(tmp_path / "w.pth"))
    with pytest.raises(CamlensValueError, match="neither 'DEFAULT', 'none' nor an existing file"):
        load_spec("torchvision:resnet18", str(tmp_path / "missing.pth"))


def test_torchscript_file(tmp_path, tiny_module):
    import tinynet

    model = tinynet.build().eval()
    torch.jit.script(model).save(str(tmp_path / "tiny.pt"))
    loaded = load_spec(str(tmp_path / "tiny.pt"))
    x = torch.randn(1, 3, 8, 8)
    assert torch.allclose(loaded(x), model(x))


def test_full_pickle_needs_trust(tmp_path, tiny_module):
    import tinynet

    torch.save(tinynet.build(), tmp_path / "whole.pt")
    with pytest.raises(CamlensValueError, match="is a full pickle.*pass --trust-pickle"):
        load_spec(str(tmp_path / "whole.pt"))
    assert isinstance(load_spec(str(tmp_path / "whole.pt"), trust_pickle=True), tinynet.Tiny)
    torch.save(tinynet.build().state_dict(), tmp_path / "state.pt")
    with pytest.raises(CamlensValueError, match="weights without an architecture"):
        load_spec(str(tmp_path / "state.pt"))


@pytest.mark.parametrize(
    ("content", "cause"),
    [
        ("half", "RuntimeError: PytorchStreamReader failed reading zip archive"),
        (b"", "EOFError"),
        (b"not a model at all", "UnpicklingError: Unsupported operand 110"),
    ],
)
def test_a_damaged_model_file_says_what_failed(tmp_path, tiny_module, content, cause):
    """A model file torch cannot read is reported with torch's own error, even when trusted; it
    is no "full pickle"."""
    import tinynet

    path = tmp_path / "damaged.pt"
    torch.save(tinynet.build().state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if content == "half" else content)
    for trust in (False, True):
        with pytest.raises(CamlensValueError) as caught:
            load_spec(str(path), trust_pickle=trust)
        message = str(caught.value)
        assert message.startswith(f"model file {str(path)!r} cannot be loaded by torch ({cause}")
        assert "full pickle" not in message and caught.value.__cause__ is not None


def test_factory(tiny_module, tmp_path):
    import tinynet

    assert isinstance(load_spec("tinynet:build"), tinynet.Tiny)
    torch.save(tinynet.build().state_dict(), tmp_path / "w.pth")
    assert isinstance(load_spec("tinynet:build", str(tmp_path / "w.pth")), tinynet.Tiny)
    with pytest.raises(CamlensValueError, match="tinynet has no callable 'missing'"):
        load_spec("tinynet:missing")
    with pytest.raises(CamlensValueError, match="cannot import 'no_such_module_xyz'"):
        load_spec("no_such_module_xyz:build")


def test_timm_random():
    timm = need("timm")
    model = load_spec("timm:resnet18", "none")
    assert isinstance(model, timm.models.ResNet)
    names = class_names("timm:resnet18", model, 1000)
    assert len(names) == 1000 and (names[0], names[281]) == ("tench", "tabby")


def test_class_names():
    model = load_spec("torchvision:resnet18", "none")
    assert class_names("torchvision:resnet18", model, 1000)[281] == "tabby"
    assert class_names("torchvision:resnet18", model, 10) is None
    model.class_names = ["a", "b"]
    assert class_names("tinynet:build", model) == ["a", "b"]


def _export(model, path, dynamic: bool = True):
    x = torch.randn(2, 3, 8, 8)
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes=shapes), str(path))


def test_torch_export_program(tmp_path, tiny_module):
    import tinynet

    import camlens

    torch.manual_seed(0)
    model = tinynet.build().eval()
    _export(model, tmp_path / "tiny.pt2")
    loaded = load_spec(str(tmp_path / "tiny.pt2"))
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded(x), model(x))
    for method in ("gradcam", "eigencam", "saliency"):  # hooks on the unflattened modules
        ours = camlens.explain(loaded, x, method, target=[0, 1, 1])
        original = camlens.explain(model, x, method, target=[0, 1, 1])
        assert ours.layer == original.layer == ("features" if method != "saliency" else "")
        torch.testing.assert_close(ours.maps, original.maps)
    with pytest.raises(camlens.CamlensValueError) as error:
        camlens.explain(loaded, x, "guided-backprop")
    assert str(error.value) == (
        "guided backpropagation replaces the model's ReLU calls, which a torch.export program "
        "has compiled into its graph; use 'saliency' or 'gradcam', or the original nn.Module"
    )


def test_torch_export_program_needs_a_dynamic_batch(tmp_path, tiny_module):
    import tinynet

    _export(tinynet.build().eval(), tmp_path / "fixed.pt2", dynamic=False)
    with pytest.raises(CamlensValueError) as error:
        load_spec(str(tmp_path / "fixed.pt2"))
    assert str(error.value) == (
        f"model file {str(tmp_path / 'fixed.pt2')!r} is a torch.export program for batches of "
        "exactly 2 (input shape (2, 3, 8, 8)); camlens runs other batch sizes, so re-export it "
        "with a dynamic batch: torch.export.export(model, (x,), "
        "dynamic_shapes=({0: torch.export.Dim('batch')},))"
    )
