"""``camlens explain --target top2|output:K``: a row per (image, method, class), distinct files,
exactly once after a resume."""

from __future__ import annotations

import json

import torch
from torch import nn
from typer.testing import CliRunner

import camlens
from camlens.cli import app
from camlens.runs import report
from camlens.serve.runs import Filters, Runs

runner = CliRunner()


def tiny(tmp_path, outputs: int) -> list[str]:
    """A pickled random-weight net with ``outputs`` outputs at 64 px: fast, nothing downloaded."""
    torch.manual_seed(0)
    network = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, outputs),
    ).eval()  # fmt: skip
    torch.save(network, tmp_path / "tiny.pt")
    return ["--model", str(tmp_path / "tiny.pt"), "--trust-pickle", "--size", "64"]


def rows(out):
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return [line for line in lines if line["error"] is None]


def test_top2_writes_two_rows_per_image_with_distinct_files(images, tmp_path):
    out = tmp_path / "out"
    args = ["explain", str(images), *tiny(tmp_path, 5), "--target", "top2", "--out", str(out)]
    result = runner.invoke(app, [*args, "--method", "gradcam,cam"])
    assert result.exit_code == 1, result.output  # the corrupt file
    found = rows(out)
    assert len(found) == 3 * 2 * 2  # images x methods x classes
    for line in found:
        assert line["map"] == f"maps/{line['stem']}_{line['method']}_{line['target']}.png"
        assert (out / line["map"]).is_file() and 0 <= line["target_probability"] <= 1
    assert len({line["map"] for line in found}) == len({line["overlay"] for line in found}) == 12
    pairs = {(line["path"], line["method"]): [] for line in found}
    for line in found:
        pairs[(line["path"], line["method"])].append(line["target_probability"])
    assert all(len(p) == 2 and p[0] >= p[1] for p in pairs.values())  # best first
    loaded = camlens.load_run(out).results
    explained = loaded[loaded["error"].isna()]
    assert len(explained) == 12
    paths = list(explained["path"])  # grouped by image: each image's rows together
    assert [p for i, p in enumerate(paths) if i == 0 or p != paths[i - 1]] == list(
        dict.fromkeys(paths)
    )
    data = report.run_data(out, explained)
    assert len(data["overlay"]) == 12
    page = Runs([out]).rows(0, Filters(path=paths[0]))  # serve's run page: both maps of an image
    assert page["total"] == 4
    assert {(r["method"], r["target"]) for r in page["rows"]} == {
        (line["method"], line["target"]) for line in found if line["path"] == paths[0]
    }
    assert all(r["score"] is not None for r in page["rows"])


def test_resumed_run_keeps_one_row_per_image_method_class(images, tmp_path, interrupt):
    out = tmp_path / "out"
    args = ["explain", str(images), *tiny(tmp_path, 5), "--target", "top2", "--batch-size", "1"]
    args += ["--out", str(out)]
    assert runner.invoke(app, args).exit_code != 0
    assert len(rows(out)) == 2
    interrupt.undo()
    assert runner.invoke(app, [*args, "--resume"]).exit_code == 1
    loaded = camlens.load_run(out).results
    keys = list(zip(loaded["path"], loaded["method"], loaded["target"]))
    explained = [k for k, failed in zip(keys, loaded["error"].notna()) if not failed]
    assert len(explained) == len(set(explained)) == 6


def test_bad_target_and_activation_are_usage_errors(images, tmp_path):
    base = ["explain", str(images), *tiny(tmp_path, 5), "--out", str(tmp_path / "out")]
    result = runner.invoke(app, [*base, "--target", "top0"])
    assert result.exit_code == 2 and "pass topK with K >= 1" in result.output
    result = runner.invoke(app, [*base, "--activation", "relu"])
    assert result.exit_code == 2
    assert "--activation must be one of softmax, sigmoid, none, got 'relu'" in result.output


def test_output_value_rows_say_score_without_probabilities(images, tmp_path):
    out = tmp_path / "out"
    args = ["explain", str(images), *tiny(tmp_path, 1), "--target", "output:0"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 1, result.output  # the corrupt file
    found = rows(out)
    assert len(found) == 3
    for line in found:
        assert line["score"] is not None and line["target"] == 0
        assert line["probability"] is line["target_probability"] is line["predicted"] is None
        assert line["map"] == f"maps/{line['stem']}_gradcam.png"
