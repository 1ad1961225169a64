"""Tutorial T5: a ResNet-18 trained from scratch on cats vs dogs, CAM per image with its label.

The tutorial reads labels from file names (``cat.*`` -> 0, ``dog.*`` -> 1), replaces ``fc`` by
``nn.Linear(512, 2)``, trains one epoch on the CPU (Adam lr 0.01, batch 64), then for each image
takes the softmax's predicted class and probability, ``fc.weight[idx] @ features``, min-max,
resizes the map to the original image, blends ``heatmap * 0.5 + img * 0.5``, writes "dog 97.31%"
on it and saves it under ``results/`` with the class in the file name. In camlens the CAM, the
blend at the original size and the label are three calls.
CLI (folder-per-class data): ``camlens train data/ --weights none --lr 0.01 --batch-size 64
--epochs 1 --out model/`` then ``camlens explain test/ --model model/ --method cam --out results/``.
Run: ``python docs/examples/t5_resnet18_cats_dogs.py train_folder/ test_folder/``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torchvision.transforms import functional as TF

import camlens
from camlens.render import draw_label

CLASSES = ("cat", "dog")


def load(paths: list[Path], size: int) -> torch.Tensor:
    return torch.stack(
        [TF.to_tensor(Image.open(p).convert("RGB").resize((size, size))) for p in paths]
    )


def main(train_dir: str, test_dir: str, out: str = "results", size: int = 224, epochs: int = 1):
    files = sorted(Path(train_dir).glob("*.*"))
    labels = torch.tensor([CLASSES.index(f.name.split(".")[0]) for f in files])  # cat.* / dog.*
    data = torch.utils.data.TensorDataset(load(files, size), labels)
    model = torchvision.models.resnet18(weights=None)
    model.fc = torch.nn.Linear(512, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(epochs):
        for x, y in torch.utils.data.DataLoader(data, batch_size=64, shuffle=True):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    model.eval()
    tests = sorted(Path(test_dir).glob("*.*"))
    # predicted class, layer4; relu=False: the tutorial min-max scales the signed map
    exp = camlens.explain(model, load(tests, size), method="cam", relu=False)
    Path(out).mkdir(parents=True, exist_ok=True)
    saved = []
    for path, cam, idx, prob in zip(tests, exp.maps, exp.targets, exp.probs):
        original = Image.open(path).convert("RGB")  # the map is resized to the original size
        picture = camlens.overlay(original, cam, colormap="jet", alpha=0.5)
        picture = draw_label(picture, f"{CLASSES[idx]} {prob.item() * 100:.2f}%")
        saved.append(Path(out) / f"{path.stem}_{CLASSES[idx]}.png")
        Image.fromarray(picture).save(saved[-1])
    return model, exp, saved


if __name__ == "__main__":
    print(main(sys.argv[1], sys.argv[2])[2])
