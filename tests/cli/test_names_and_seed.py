"""``camlens explain``: a map per input whatever its name; the weights a run used on record."""

from __future__ import annotations

import hashlib
import json
import os

import torch
import torchvision
from PIL import Image
from typer.testing import CliRunner

import camlens
from camlens.cli import app

runner = CliRunner()


def test_names_that_sanitise_alike_and_non_utf8_names(tmp_path, model_args):
    folder = tmp_path / "images"
    folder.mkdir()
    for index, name in enumerate([b"a b.png", b"a_b.png", b"a<b.png", b"caf\xe9.png"]):
        Image.new("RGB", (40, 30), (60 * index, 10, 200)).save(
            os.path.join(os.fsencode(folder), name)
        )
    out = tmp_path / "out"
    args = ["explain", str(folder), *model_args, "--out", str(out), "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = camlens.load_run(out).results
    assert len(rows) == 4 and len(set(rows["map"])) == 4 and len(set(rows["overlay"])) == 4
    assert str(folder / "caf\\xe9.png") in set(rows["path"])
    assert all((out / name).is_file() for name in [*rows["map"], *rows["overlay"]])
    run = camlens.load_run(out)  # the stored text leads back to the file: its pixels come back
    (cafe,) = [i for i, p in enumerate(rows["path"]) if p.endswith("caf\\xe9.png")]
    assert run.image(cafe)[0, 0].tolist() == [180, 10, 200]
    again = runner.invoke(app, [*args, "--resume"])
    assert again.exit_code == 0, again.output
    assert f"resume: 4 image(s) already in {out}, 0 to do" in again.stderr
    assert len(camlens.load_run(out).results) == 4


def test_run_json_names_the_weights_their_hash_and_the_seed(images, tmp_path):
    base = ["explain", str(images / "ramp.png"), "--model", "torchvision:resnet18", "--size", "64"]
    out = tmp_path / "random"
    result = runner.invoke(app, [*base, "--weights", "none", "--seed", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    info = json.loads((out / "run.json").read_text())
    assert (info["weights"], info["weights_sha256"], info["seed"]) == ("none", None, 3)
    file = tmp_path / "w.pth"
    torch.save(torchvision.models.resnet18().state_dict(), file)
    out = tmp_path / "file"
    result = runner.invoke(app, [*base, "--weights", str(file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    info = json.loads((out / "run.json").read_text())
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    assert (info["weights"], info["weights_sha256"], info["seed"]) == (str(file), digest, 0)


def test_run_json_hashes_a_checkpoints_weights(images, tmp_path):
    from camlens.models.checkpoint import WEIGHTS, demo_path

    out = tmp_path / "demo"
    args = ["explain", str(images / "ramp.png"), "--model", "demo", "--method", "cam"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    info = json.loads((out / "run.json").read_text())
    digest = hashlib.sha256((demo_path() / WEIGHTS).read_bytes()).hexdigest()
    assert (info["model"], info["weights"], info["weights_sha256"]) == ("demo", None, digest)
