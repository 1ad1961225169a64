"""The five tutorials' notebooks (docs/examples/*.ipynb) run from top to bottom, offline.

Each notebook checks its tutorial's numbers in its own cells (the CAM identity, the formula by
hand, the 0.2 threshold, the pre-softmax score); a failing cell fails its test. Each runs in a
fresh kernel in a scratch folder (Keras on TensorFlow), with random weights and a few bundled or
scikit-image pictures, so nothing is downloaded. ``python scripts/notebooks.py`` stores the
outputs the site shows.
"""

from __future__ import annotations

import importlib.util

import pytest
from needs import missing
from PIL import Image
from repo_scripts import load_script

notebooks = load_script("notebooks")
KERAS = importlib.util.find_spec("keras") is not None and importlib.util.find_spec("tensorflow")

#: The files each notebook writes, with their format and size.
WRITES = {
    "t1_keras_resnet50_cats_dogs": {"t1_cam.png": ("PNG", (900, 322))},
    "t2_resnet18_cam": {"t2_cam.png": ("PNG", (262, 262))},  # the crop at the photo's resolution
    "t3_keras_mobilenetv2_xray": {"t3_cam.jpg": ("JPEG", (96, 96)), "t3-out/report.html": None},
    "t4_keras_mnist_gradcam": {},
    "t5_resnet18_cats_dogs": {},
}


def test_every_notebook_is_tested():
    assert sorted(p.stem for p in notebooks.notebooks()) == sorted(WRITES)


@pytest.mark.parametrize("name", sorted(WRITES))
def test_notebook_runs(name, tmp_path):
    path = notebooks.EXAMPLES / f"{name}.ipynb"
    if "keras" in name and not KERAS:
        missing("keras and tensorflow are not installed (pip install -e '.[test]')")
    book = notebooks.execute(path, tmp_path)
    outputs = [o for cell in book.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # a figure was shown
    for file, expected in WRITES[name].items():
        assert (tmp_path / file).is_file(), file
        if expected is not None:
            with Image.open(tmp_path / file) as picture:
                assert (picture.format, picture.size) == expected, file
    if name == "t5_resnet18_cats_dogs":
        (saved,) = (tmp_path / "results").glob("cat.7_*.png")
        with Image.open(saved) as picture:
            assert picture.size == (120, 90)  # the original image's size, not the model's
