import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from camlens.cli import app

runner = CliRunner()
ARGS = ["--backbone", "camlens:smallcnn", "--weights", "none", "--epochs", "1"]
ARGS += ["--image-size", "32", "--batch-size", "4", "--no-augment"]


def folder(root, classes):
    for index, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((24, 24), 30 * i + 120 * index, np.uint8)).save(
                root / name / f"{i}.png"
            )
    return root


def test_train_writes_a_checkpoint_and_prints_the_report(tmp_path):
    data = folder(tmp_path / "xrays", ["abnormal", "normal"])
    result = runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "ckpt"), *ARGS])
    assert result.exit_code == 0, result.output
    assert "10 classes" not in result.output and "2 classes, 8 training and 2 validation" in (
        result.output
    )
    assert "epoch 1/1" in result.output and "validation accuracy" in result.output
    config = json.loads((tmp_path / "ckpt" / "camlens.json").read_text())
    assert config["labels"] == ["abnormal", "normal"]
    assert config["cam_layer"] == "backbone.block5"
    assert (tmp_path / "ckpt" / "validation.json").is_file()


def test_one_class_exits_2_with_a_clear_message(tmp_path):
    data = folder(tmp_path / "data", ["cats"])
    result = runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "ckpt"), *ARGS])
    assert result.exit_code == 2
    assert "has 1 class folder(s) ['cats']; training needs at least 2" in result.output
    assert not (tmp_path / "ckpt").exists()
