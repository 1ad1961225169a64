import json
from importlib.util import find_spec

import pytest
import torch
from needs import IN_CI

import camlens
from camlens.errors import CamlensValueError
from camlens.models.architectures import build_body
from camlens.models.checkpoint import Classifier, load_model, read_config, save_checkpoint

needs_timm = pytest.mark.skipif(
    find_spec("timm") is None and not IN_CI, reason="timm is not installed"
)  # CI installs it: there the test runs (and fails without it)


def tiny(backbone="camlens:smallcnn", size=32, labels=("cat", "dog"), **kwargs):
    torch.manual_seed(0)
    kwargs = kwargs or ({"width": 8} if backbone == "camlens:smallcnn" else None)
    body = build_body(backbone, None, kwargs, size)
    model = Classifier(
        body.module, body.features, labels, body.mean, body.std, (size, size), body.architecture
    )
    return model.eval()


def test_classifier_normalises_inside_and_takes_gray():
    model = tiny()
    x = torch.rand(2, 3, 32, 32)
    manual = model.backbone((x - 0.5) / 0.5)
    expected = model.fc(manual.mean(dim=(2, 3)))
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)
    gray = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(model(gray), model(gray.expand(-1, 3, -1, -1)))
    with pytest.raises(
        CamlensValueError, match=r"expected x with 3 channels .* got \(2, 2, 32, 32\)"
    ):
        model(torch.rand(2, 2, 32, 32))


def test_classifier_needs_two_labels():
    body = build_body("camlens:smallcnn", None, {"width": 8}, 32)
    with pytest.raises(CamlensValueError, match=r"at least 2 labels, got \['only'\]"):
        Classifier(body.module, body.features, ["only"], body.mean, body.std, (32, 32), {})


@pytest.mark.parametrize(
    ("backbone", "cam_layer"),
    [
        ("camlens:smallcnn", "backbone.block5"),
        ("resnet18", "backbone.layer4"),
        ("vgg11", "backbone.features"),  # the last max-pool is cut: the head averages conv5
        pytest.param("timm:resnet10t", "backbone.features", marks=needs_timm),
    ],
)
def test_auto_layer_is_the_recorded_cam_layer_and_cam_identity_holds(tmp_path, backbone, cam_layer):
    model = tiny(backbone, size=64)
    assert model.cam_layer == cam_layer
    save_checkpoint(model, tmp_path / "ckpt")
    assert read_config(tmp_path / "ckpt")["cam_layer"] == cam_layer
    loaded = load_model(tmp_path / "ckpt")
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    assert camlens.layers(loaded, x)[1] == cam_layer
    exp = camlens.explain(loaded, x, method="cam", relu=False)
    assert exp.layer == cam_layer
    # CAM's identity (Zhou et al. 2016): the mean of the raw map is the logit minus the bias
    logits = loaded(x).detach()
    expected = logits.gather(1, exp.targets[:, None])[:, 0] - loaded.fc.bias[exp.targets].detach()
    torch.testing.assert_close(exp.raw.mean(dim=(1, 2)), expected, rtol=1e-4, atol=1e-5)


def test_maps_identical_before_saving_and_after_reloading(tmp_path):
    model = tiny()
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    before = {name: camlens.explain(model, x, method=name) for name in camlens.methods(model)}
    save_checkpoint(model, tmp_path / "ckpt")
    loaded = camlens.load_model(tmp_path / "ckpt")
    assert isinstance(loaded, camlens.Classifier) and not loaded.training
    assert loaded.labels == ["cat", "dog"] and loaded.input_size == (32, 32)
    assert torch.equal(loaded(x), model(x))
    for name, exp in before.items():
        again = camlens.explain(loaded, x, method=name)
        assert torch.equal(again.maps, exp.maps), name
        assert torch.equal(again.raw, exp.raw), name
        # "auto" is block5 (refinecam: the last layers of the stages up to it, block5 last)
        assert again.layer == exp.layer
        assert again.layer.split("+")[-1] == "backbone.block5" or not again.layer


def test_checkpoint_files_are_safetensors_and_json(tmp_path):
    from safetensors.torch import load_file

    model = tiny()
    path = model.save(tmp_path / "ckpt", files={"notes.json": {"a": 1}})
    assert sorted(p.name for p in path.iterdir()) == [
        "camlens.json",
        "model.safetensors",
        "notes.json",
    ]
    state = load_file(str(path / "model.safetensors"))
    assert set(state) == set(model.state_dict())
    config = json.loads((path / "camlens.json").read_text())
    assert config["format"] == "camlens-checkpoint" and config["version"] == 1
    assert config["architecture"] == {
        "source": "camlens",
        "name": "smallcnn",
        "kwargs": {"width": 8},
    }
    assert config["labels"] == ["cat", "dog"] and config["input_size"] == [32, 32]
    assert config["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary folder left


def test_save_replaces_a_checkpoint_and_refuses_other_folders(tmp_path):
    first, second = tiny(labels=("a", "b")), tiny(labels=("x", "y"))
    save_checkpoint(first, tmp_path / "ckpt")
    save_checkpoint(second, tmp_path / "ckpt")
    assert load_model(tmp_path / "ckpt").labels == ["x", "y"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(CamlensValueError, match="exists and is not a camlens checkpoint"):
        save_checkpoint(first, tmp_path / "other")
    assert (tmp_path / "other" / "keep.txt").read_text() == "mine"


def test_a_failed_save_leaves_nothing_behind(tmp_path, monkeypatch):
    import safetensors.torch

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tiny(), tmp_path / "ckpt")
    assert list(tmp_path.iterdir()) == []


def test_load_errors(tmp_path):
    with pytest.raises(CamlensValueError, match=r"is not a camlens checkpoint: expected a folder"):
        load_model(tmp_path)
    path = save_checkpoint(tiny(), tmp_path / "ckpt")
    config = json.loads((path / "camlens.json").read_text())
    (path / "camlens.json").write_text(json.dumps({**config, "version": 99}))
    with pytest.raises(CamlensValueError, match=r"not a camlens checkpoint of version <= 1"):
        load_model(path)
    (path / "camlens.json").write_text(json.dumps({**config, "features": 16}))
    with pytest.raises(CamlensValueError, match=r"does not fit the architecture in camlens.json"):
        load_model(path)


def test_demo_model_is_small_and_right_on_its_samples():
    from camlens.datasets import read_boxes
    from camlens.models.checkpoint import demo_path

    assert (demo_path() / "model.safetensors").stat().st_size < 2_000_000
    model = camlens.load_model("demo")
    assert model.labels == [str(d) for d in range(10)]
    assert model.input_size == (64, 64) and model.cam_layer == "backbone.block5"
    paths, labels, boxes = read_boxes(demo_path() / "samples" / "boxes.csv")
    assert len(paths) == 16 and boxes.shape == (16, 4)
    x, _ = model.load_images(paths)
    assert x.shape == (16, 3, 64, 64)
    assert int((model(x).argmax(1) == labels).sum()) == 15  # one 6 is read as a 4
    for method in ("cam", "gradcam"):  # the pointing game: each map's maximum inside the box
        maps = camlens.explain(model, x, method=method, target=labels.tolist()).maps
        index = maps.flatten(1).argmax(1)
        y, x_ = index // 64, index % 64
        x0, y0, x1, y1 = boxes.unbind(1)
        assert bool(((x_ >= x0) & (x_ <= x1) & (y >= y0) & (y <= y1)).all()), method
