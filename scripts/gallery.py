"""Render the documentation's gallery: every registered method on the same bundled images.

Each bundled model, the demo CNN (``camlens.load_model("demo")``) and the demo vision
transformer (``"demo-vit"``, which the attention methods apply to), explains four of the bundled
samples with each method in ``camlens.methods(model)``, with default options; each method's row
of overlays (its explained class and probability above each image) is written to
``docs/images/gallery/<method>.png`` (the ViT's to ``docs/images/gallery/demo-vit/``), the page
to ``docs/gallery.md``, and per model a summary of every map (``gallery.json``: per image, the
map's mean and the pixel of its maximum) that ``tests/docs/test_gallery.py`` compares with fresh
maps. Nothing is downloaded. Run: ``python scripts/gallery.py`` (about 30 s on two CPU cores).
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
#: The bundled models shown, each with its pictures' folder (the page's first section: demo).
MODELS = {"demo": OUT, "demo-vit": OUT / "demo-vit"}


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


def explain_samples(methods: list[str], name: str = "demo") -> tuple[list, dict]:
    """The sample images and each method's Explanation of them by bundled model ``name``."""
    import torch

    import camlens

    model = camlens.load_model(name)
    x, images = model.load_images(sample_paths())
    explained = {}
    for method in methods:
        torch.manual_seed(0)  # SmoothGrad's noise
        explained[method] = camlens.explain(model, x, method=method)
    return images, explained


def figures(methods: list[str], folder: str) -> str:
    """The gallery's figures, one per method, pictures under ``docs/`` + ``folder``."""
    from camlens.methods._registry import get

    return "\n".join(
        f'<figure markdown="span">\n  ![{m}]({folder}/{m}.png)\n'
        f"  <figcaption><code>{m}</code>: {get(m).paper}</figcaption>\n</figure>"
        for m in methods
    )


def page(methods: list[str], vit_methods: list[str]) -> str:
    """The gallery page's Markdown: the demo CNN's ``methods``, then the demo ViT's."""
    return (
        "# Gallery\n\n"
        "Every method camlens registers, on the same four bundled samples: the demo model\n"
        '(`camlens.load_model("demo")`, a small CNN trained on cluttered handwritten digits) '
        "explains\nits predicted class with default options; the map is blended over each image "
        "(`jet`,\nalpha 0.5) with the explained class and its probability above. The digit to "
        "find is the\nlarge one; the small fragments are clutter. Rendered by "
        "`python scripts/gallery.py`\n(`tests/docs/test_gallery.py` checks it is current). "
        "Formulas and papers:\n[Methods](methods.md).\n\n"
        f'<div class="gallery" markdown>\n{figures(methods, "images/gallery")}\n</div>\n\n'
        "## A vision transformer\n\n"
        "The same samples explained by the demo vision transformer\n"
        '(`camlens.load_model("demo-vit")`, `--model demo-vit`: camlens:smallvit, 8x8 patches of\n'
        "8 px, four encoder blocks, no class token, its tokens' mean read by the same GAP +\n"
        "Linear head, trained on the same digits):\n"
        "the attention methods (`rollout`, `transformer-attribution`, `legrad`) apply to it, and\n"
        'the methods for maps read its 8x8 token grid (`layer="auto"`: `backbone.grid`, the\n'
        "tokens the head averages). By the last block every token has mixed in the whole image,\n"
        "so the maps read there spread over the background; `rollout` and\n"
        "`transformer-attribution`, which follow the attention back through the blocks, find the\n"
        "digit. The model is right on about 70 %\n"
        "of held-out digits (the CNN: 97 %).\n\n"
        f'<div class="gallery" markdown>\n{figures(vit_methods, "images/gallery/demo-vit")}\n'
        "</div>\n"
    )


def main() -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from PIL import Image

    import camlens
    from camlens.visualize.figures import figure_png, grid
    from camlens.visualize.overlay import label_text

    shown = {}
    for name, folder in MODELS.items():
        methods = camlens.methods(camlens.load_model(name))  # the attention methods need a ViT
        images, explained = explain_samples(methods, name)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.png"):
            stale.unlink()
        for method, exp in explained.items():
            cells = [
                (label_text(f"class {int(t)}", float(p)), camlens.overlay(image, heat))
                for image, heat, t, p in zip(images, exp.maps, exp.targets, exp.probs)
            ]
            picture = Image.open(io.BytesIO(figure_png(grid([cells], method, cell=2.0))))
            picture.convert("RGB").quantize(256).save(folder / f"{method}.png", optimize=True)
        record = {
            "samples": [p.relative_to(ROOT / "src" / "camlens").as_posix() for p in sample_paths()],
            "methods": {m: summary(e.maps) for m, e in explained.items()},
        }
        (folder / "gallery.json").write_text(json.dumps(record, indent=1) + "\n")
        shown[name] = methods
        print(f"{name}: {len(methods)} methods -> {folder.relative_to(ROOT)}")
    PAGE.write_text(page(shown["demo"], shown["demo-vit"]))
    print(f"page -> {PAGE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
