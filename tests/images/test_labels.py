"""Class names: ImageNet's offline, and label files in text and JSON."""

from __future__ import annotations

import json

import pytest

from camlens.errors import CamlensValueError
from camlens.images.labels import class_name, imagenet_classes, load_labels


def test_imagenet_names_offline():
    names = imagenet_classes()
    assert len(names) == 1000
    assert (names[0], names[281], names[999]) == ("tench", "tabby", "toilet tissue")


def test_text_file(tmp_path):
    file = tmp_path / "classes.txt"
    file.write_text("normal\n pneumonia \n\n")
    assert load_labels(file) == ["normal", "pneumonia"]


@pytest.mark.parametrize(
    "data",
    [["cat", "dog"], {"1": "dog", "0": "cat"}, {"0": ["n02123045", "cat"], "1": ["n0", "dog"]}],
)
def test_json_forms(tmp_path, data):
    file = tmp_path / "classes.json"
    file.write_text(json.dumps(data))
    assert load_labels(file) == ["cat", "dog"]


def test_bad_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 1}')
    with pytest.raises(CamlensValueError, match="expected a JSON list of names"):
        load_labels(bad)
    with pytest.raises(CamlensValueError, match="cannot be read"):
        load_labels(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(CamlensValueError, match="is empty"):
        load_labels(tmp_path / "empty.txt")


def test_class_name_falls_back_to_the_index():
    assert class_name(["cat"], 0) == "cat"
    assert class_name(["cat"], 3) == "3"
    assert class_name(None, 7) == "7"
