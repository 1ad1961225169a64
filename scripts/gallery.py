"""Render the documentation's gallery: every registered method on the same bundled images.

The demo model (``camlens.load_model("demo")``) explains four of its bundled samples with each
method in ``camlens.methods()``, with default options; each method's row of overlays (its
explained class and probability above each image) is written to
``docs/images/gallery/<method>.png``, the page to ``docs/gallery.md``, and a summary of every
map (``gallery.json``: per image, the map's mean and the pixel of its maximum) that
``tests/docs/test_gallery.py`` compares with fresh maps of the cheap methods. Nothing is
downloaded. Run: ``python scripts/gallery.py`` (about 10 s on two CPU cores).
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images" / "gallery"
PAGE = ROOT / "docs" / "gallery.md"
#: Which of the 16 bundled samples (sorted by path) are shown.
SAMPLES = (0, 4, 9, 13)


def sample_paths() -> list[Path]:
    from camlens.models.files import demo_path

    files = sorted((demo_path() / "samples").glob("*/*.png"))
    return [files[i] for i in SAMPLES]


def summary(maps) -> list[dict]:
    """Per image: the mean of the map and the (row, column) of its maximum."""
    width = maps.shape[-1]
    peaks = maps.flatten(1).argmax(dim=1).tolist()
    return [
        {"mean": round(float(m.mean()), 4), "peak": [p // width, p % width]}
        for m, p in zip(maps, peaks)
    ]


def explain_samples(methods: list[str]) -> tuple[list, dict]:
    """The sample images and each method's Explanation of them."""
    import torch

    import camlens

    model = camlens.load_model("demo")
    x, images = model.load_images(sample_paths())
    explained = {}
    for method in methods:
        torch.manual_seed(0)  # SmoothGrad's noise
        explained[method] = camlens.explain(model, x, method=method)
    return images, explained


def page(methods: list[str]) -> str:
    """The gallery page's Markdown."""
    from camlens.methods._registry import get

    figures = "\n".join(
        f'<figure markdown="span">\n  ![{m}](images/gallery/{m}.png)\n'
        f"  <figcaption><code>{m}</code>: {get(m).paper}</figcaption>\n</figure>"
        for m in methods
    )
    return (
        "# Gallery\n\n"
        "Every method camlens registers, on the same four bundled samples: the demo model\n"
        '(`camlens.load_model("demo")`, a small CNN trained on cluttered handwritten digits) '
        "explains\nits predicted class with default options; the map is blended over each image "
        "(`jet`,\nalpha 0.5) with the explained class and its probability above. The digit to "
        "find is the\nlarge one; the small fragments are clutter. Rendered by "
        "`python scripts/gallery.py`\n(`tests/docs/test_gallery.py` checks it is current). "
        "Formulas and papers:\n[Methods](methods.md).\n\n"
        f'<div class="gallery" markdown>\n{figures}\n</div>\n'
    )


def main() -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from PIL import Image

    import camlens
    from camlens.visualize.figures import figure_png, grid
    from camlens.visualize.overlay import label_text

    methods = camlens.methods(camlens.load_model("demo"))  # the attention methods need a ViT
    images, explained = explain_samples(methods)
    OUT.mkdir(parents=True, exist_ok=True)
    for stale in OUT.glob("*.png"):
        stale.unlink()
    for method, exp in explained.items():
        cells = [
            (
                label_text(f"class {int(t)}", float(p)),
                camlens.overlay(image, heat),
            )
            for image, heat, t, p in zip(images, exp.maps, exp.targets, exp.probs)
        ]
        picture = Image.open(io.BytesIO(figure_png(grid([cells], method, cell=2.0))))
        picture.convert("RGB").quantize(256).save(OUT / f"{method}.png", optimize=True)
    record = {
        "samples": [p.relative_to(ROOT / "src" / "camlens").as_posix() for p in sample_paths()],
        "methods": {m: summary(e.maps) for m, e in explained.items()},
    }
    (OUT / "gallery.json").write_text(json.dumps(record, indent=1) + "\n")
    PAGE.write_text(page(methods))
    print(f"{len(methods)} methods -> {OUT.relative_to(ROOT)}, {PAGE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
