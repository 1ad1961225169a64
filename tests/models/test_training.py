import json

import numpy as np
import pytest
import torch
from needs import need
from PIL import Image
from training_data import FAST, gray_folder

import camlens
from camlens.errors import CamlensValueError
from camlens.models.training import augment, report, scan


def test_one_epoch_on_grayscale_pngs_writes_a_checkpoint(tmp_path):
    data = gray_folder(tmp_path / "data")
    result = camlens.train(data, tmp_path / "ckpt", **FAST)
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["camlens.json", "model.safetensors", "validation.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "data"]  # no temporary folder
    saved = json.loads((tmp_path / "ckpt" / "validation.json").read_text())
    assert saved["classes"] == ["abnormal", "normal"]
    assert set(saved["per_class"]["normal"]) == {"precision", "recall", "support"}
    assert np.array(saved["confusion"]).sum() == 2  # round(6 * 0.2) = 1 image per class
    assert saved["best_epoch"] == 1 and len(saved["history"]) == 1
    config = json.loads((tmp_path / "ckpt" / "camlens.json").read_text())
    assert config["training"]["seed"] == 0 and config["input_size"] == [32, 32]
    # maps of the trained model and of the reloaded checkpoint are identical
    loaded = camlens.load_model(tmp_path / "ckpt")
    x, _ = loaded.load_images(sorted((data / "normal").glob("*.png"))[:2])
    for method in ("cam", "gradcam"):
        a = camlens.explain(result.model, x, method=method)
        b = camlens.explain(loaded, x, method=method)
        assert torch.equal(a.maps, b.maps) and a.layer == b.layer == loaded.cam_layer


def test_training_is_seeded(tmp_path):
    data = gray_folder(tmp_path / "data", per_class=4)
    first = camlens.train(data, tmp_path / "a", **FAST).model.state_dict()
    second = camlens.train(data, tmp_path / "b", **FAST).model.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_stratified_split_and_train_val_folders(tmp_path):
    split = scan(gray_folder(tmp_path / "flat", per_class=10), val_split=0.2, seed=3)
    labels = [label for _, label in split.val]
    assert split.classes == ["abnormal", "normal"] and labels.count(0) == labels.count(1) == 2
    assert not {p for p, _ in split.train} & {p for p, _ in split.val}
    assert scan(tmp_path / "flat", 0.2, 3).val == split.val  # seeded
    gray_folder(tmp_path / "tv" / "train", per_class=3)
    gray_folder(tmp_path / "tv" / "val", per_class=2)
    split = scan(tmp_path / "tv")
    assert (len(split.train), len(split.val)) == (6, 4)


def test_one_class_is_refused_and_nothing_is_written(tmp_path):
    data = gray_folder(tmp_path / "data", classes=("only",))
    with pytest.raises(CamlensValueError) as info:
        camlens.train(data, tmp_path / "ckpt", **FAST)
    assert "has 1 class folder(s) ['only']; training needs at least 2" in str(info.value)
    assert not (tmp_path / "ckpt").exists()


def test_empty_class_folder_is_refused(tmp_path):
    data = gray_folder(tmp_path / "data")
    (data / "empty").mkdir()
    with pytest.raises(CamlensValueError, match=r"class folder '.*empty' has no readable images"):
        camlens.train(data, tmp_path / "ckpt", **FAST)
    assert not (tmp_path / "ckpt").exists()


def test_corrupt_image_is_skipped_and_reported(tmp_path):
    data = gray_folder(tmp_path / "data")
    (data / "normal" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = camlens.train(data, tmp_path / "ckpt", **FAST)
    assert result.report["skipped"] == [
        {
            "path": str(data / "normal" / "broken.png"),
            "reason": "not an image (Pillow cannot identify its format)",
        }
    ]


def test_a_truncated_jpeg_is_skipped_and_listed_as_explain_does(tmp_path, capsys):
    data = gray_folder(tmp_path / "data")
    noise = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "whole.jpg")
    cut = data / "abnormal" / "cut.jpg"  # a valid header: it passes a first look, not a decode
    cut.write_bytes((tmp_path / "whole.jpg").read_bytes()[:-200])
    (data / "normal" / "notes.txt").write_text("not an image file: not looked at")
    result = camlens.train(data, tmp_path / "ckpt", **{**FAST, "progress": True})
    (skipped,) = result.report["skipped"]
    assert skipped["path"] == str(cut)
    assert skipped["reason"].startswith("corrupt or truncated image (image file is truncated")
    assert f"skipped unreadable image {cut} (corrupt or truncated" in capsys.readouterr().out


def test_a_class_of_corrupt_images_is_refused(tmp_path):
    data = gray_folder(tmp_path / "data")
    (data / "bad").mkdir()
    (data / "bad" / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(CamlensValueError, match=r"'.*bad' has no readable images"):
        camlens.train(data, tmp_path / "ckpt", **FAST)
    assert not (tmp_path / "ckpt").exists()


def test_bad_arguments(tmp_path):
    with pytest.raises(CamlensValueError, match=r"DATA_DIR '.*missing' is not a folder"):
        camlens.train(tmp_path / "missing", tmp_path / "ckpt", **FAST)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file.txt").write_text("x")
    with pytest.raises(CamlensValueError, match="out '.*taken' exists and is not a camlens"):
        camlens.train(tmp_path, tmp_path / "taken", **FAST)
    with pytest.raises(CamlensValueError, match="epochs must be an int >= 1, got 0"):
        camlens.train(tmp_path, tmp_path / "ckpt", **{**FAST, "epochs": 0})
    data = gray_folder(tmp_path / "data")
    need("timm")
    vit = "timm:vit_tiny_patch16_224"
    with pytest.raises(CamlensValueError, match=rf"backbone '{vit}' has no convolutional"):
        camlens.train(data, tmp_path / "ckpt", **{**FAST, "backbone": vit})
    with pytest.raises(CamlensValueError, match=r"'resnet17'.*resnet18"):
        camlens.train(data, tmp_path / "ckpt", **{**FAST, "backbone": "resnet17"})


def test_augment_without_crop_is_identity_or_flip():
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    whole = {"scale": (1.0, 1.0), "ratio": (1.0, 1.0)}
    same = augment(x, torch.Generator().manual_seed(1), flip=False, **whole)
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    flipped = augment(x, torch.Generator().manual_seed(1), flip=True, **whole)
    kinds = []
    for image, out in zip(x, flipped):
        kinds.append(torch.allclose(out, image.flip(-1), atol=1e-5))
        assert kinds[-1] or torch.allclose(out, image, atol=1e-5)
    assert 0 < sum(kinds) < len(kinds)
    crops = augment(x, torch.Generator().manual_seed(1), (0.25, 0.25), False, (1.0, 1.0))
    assert crops.shape == x.shape and not torch.allclose(crops, x, atol=1e-2)


def test_images_are_read_whole_as_rgb_and_resized(tmp_path):
    from camlens.models.checkpoint import to_uint8

    image = np.zeros((20, 40), dtype=np.uint8)
    image[:, 20:] = 200  # the right half
    Image.fromarray(image, mode="L").save(tmp_path / "x.png")
    out = to_uint8(tmp_path / "x.png", 10)
    assert out.shape == (3, 10, 10) and out.dtype == torch.uint8
    assert (out[:, :, :4] == 0).all() and (out[:, :, 6:] == 200).all()  # antialiased edge


def test_report_golden_numbers():
    confusion = torch.tensor([[3, 1], [2, 4]])
    result = report(confusion, ["a", "b"])
    assert result["accuracy"] == 0.7
    assert result["per_class"]["a"] == {"precision": 0.6, "recall": 0.75, "support": 4}
    assert result["per_class"]["b"] == {"precision": 0.8, "recall": 4 / 6, "support": 6}
    assert result["confusion"] == [[3, 1], [2, 4]]


def test_an_unreadable_sub_folder_is_listed_with_the_reason(tmp_path, monkeypatch):
    import os

    data = gray_folder(tmp_path / "data", per_class=3)
    (data / "normal" / "locked").mkdir()
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    split = scan(data, size=32)
    assert split.skipped == [(data / "normal" / "locked", "permission denied")]
    assert len(split.train) + len(split.val) == 6
