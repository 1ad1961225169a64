"""Ground-truth boxes from files: a CSV or Pascal VOC XML, and their geometry.

A CSV holds ``path,x0,y0,x1,y1[,label]`` rows (pixels of the original image, both corners inside
the box, several rows per image allowed; a header line is skipped). Pascal VOC XML comes as a file
or a folder of them; VOC's 1-based pixel coordinates are shifted to 0-based. Boxes are mapped to
the model's input the way the image is: the whole image resized to it.
"""

from __future__ import annotations

import csv
import math
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

from camlens.errors import CamlensValueError

BoxRecord = dict[str, Any]  # {"boxes": [(x0, y0, x1, y1)], "label": int | None}


def read_boxes(path: Path) -> dict[str, BoxRecord]:
    """Boxes per image name from a CSV file, a VOC XML file or a folder of VOC XML files."""
    if path.is_dir():
        records: dict[str, BoxRecord] = {}
        for file in sorted(path.glob("*.xml")):
            records.update(_read_voc(file))
        return records
    if not path.is_file():
        raise CamlensValueError(f"--boxes {str(path)!r} is neither a file nor a folder")
    if path.suffix.lower() == ".xml":
        return _read_voc(path)
    return _read_csv(path)


def _read_csv(path: Path) -> dict[str, BoxRecord]:
    records: dict[str, BoxRecord] = {}
    with open(path, newline="") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or row[0].startswith("#"):
                continue
            if number == 1 and not _is_number(row[1] if len(row) > 1 else ""):
                continue  # a header
            if len(row) < 5:
                raise CamlensValueError(
                    f"{path}:{number}: expected path,x0,y0,x1,y1[,label], got {','.join(row)}"
                )
            try:
                box = tuple(int(round(float(v))) for v in row[1:5])
                label = int(row[5]) if len(row) > 5 and row[5].strip() else None
            except ValueError as error:
                raise CamlensValueError(
                    f"{path}:{number}: box coordinates and label must be numbers, got "
                    f"{','.join(row)}"
                ) from error
            record = records.setdefault(row[0].strip(), {"boxes": [], "label": label})
            record["boxes"].append(box)
    return records


def _read_voc(path: Path) -> dict[str, BoxRecord]:
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        raise CamlensValueError(f"{path} is not a Pascal VOC XML file: {error}") from error
    name = root.findtext("filename") or path.with_suffix(".jpg").name
    boxes = []
    for item in root.iter("object"):
        corners = item.find("bndbox")
        if corners is None:
            continue
        values = [float(corners.findtext(k, "nan")) for k in ("xmin", "ymin", "xmax", "ymax")]
        if any(math.isnan(v) for v in values):
            raise CamlensValueError(f"{path}: a bndbox lacks xmin, ymin, xmax or ymax")
        boxes.append(tuple(int(round(v)) - 1 for v in values))
    return {name.strip(): {"boxes": boxes, "label": None}}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def to_input_box(
    box: tuple[int, int, int, int], original: tuple[int, int], out: tuple[int, int]
) -> tuple[int, int, int, int]:
    """A box in the original image's pixels (height, width = ``original``) in the pixels of the
    model's input (H, W) = ``out``, the whole image resized to it: every pixel the box touches."""
    height, width = original
    sy, sx = out[0] / height, out[1] / width
    x0, y0 = max(math.floor(box[0] * sx), 0), max(math.floor(box[1] * sy), 0)
    x1 = min(math.ceil((box[2] + 1) * sx) - 1, out[1] - 1)
    y1 = min(math.ceil((box[3] + 1) * sy) - 1, out[0] - 1)
    return x0, y0, x1, y1
