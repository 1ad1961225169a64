"""The run row (issue 20: one Row type): the Parquet schema and the bytes of results.jsonl/.csv,
pinned as the code wrote them before the row had one definition."""

from __future__ import annotations

import pyarrow.parquet as pq

from camlens.images.decode import Failure
from camlens.runs.folder import schema
from camlens.runs.records import Record
from camlens.runs.writer import RunWriter

#: results.parquet's columns, in order, with their Arrow types.
SCHEMA = [
    ("path", "string"), ("stem", "string"), ("width", "int32"), ("height", "int32"),
    ("method", "string"), ("layer", "string"), ("predicted", "int64"),
    ("predicted_name", "string"), ("probability", "double"), ("target", "int64"),
    ("target_name", "string"), ("target_probability", "double"), ("score", "double"),
    ("true_label", "int64"), ("true_name", "string"), ("correct", "bool"),
    ("boxes", "list<item: list<item: int32>>"), ("map", "string"), ("overlay", "string"),
    ("panel", "string"), ("image", "string"), ("load_s", "double"), ("explain_s", "double"),
    ("render_s", "double"), ("precision", "string"), ("error", "string"),
]  # fmt: skip

ROW = {
    "path": "/x/a.png", "stem": "a", "width": 7, "height": 5, "method": "gradcam",
    "layer": "layer4", "predicted": 3, "predicted_name": "cat", "probability": 0.5,
    "target": 2, "target_name": "dog", "target_probability": 0.25, "score": -1.5,
    "true_label": 3, "true_name": "cat", "correct": True, "boxes": [[0, 1, 2, 3]],
    "map": "maps/a_gradcam.png", "overlay": "overlays/a_gradcam.jpg", "panel": None,
    "image": "images/a.png", "load_s": 0.01, "explain_s": 0.2, "render_s": 0.003,
    "precision": "fp32", "error": None,
}  # fmt: skip

JSONL = (
    '{"path": "/x/a.png", "stem": "a", "width": 7, "height": 5, "method": "gradcam", "layer": '
    '"layer4", "predicted": 3, "predicted_name": "cat", "probability": 0.5, "target": 2, '
    '"target_name": "dog", "target_probability": 0.25, "score": -1.5, "true_label": 3, '
    '"true_name": "cat", "correct": true, "boxes": [[0, 1, 2, 3]], "map": "maps/a_gradcam.png", '
    '"overlay": "overlays/a_gradcam.jpg", "panel": null, "image": "images/a.png", "load_s": 0.01, '
    '"explain_s": 0.2, "render_s": 0.003, "precision": "fp32", "error": null}\n'
    '{"path": "/x/b.png", "stem": null, "width": null, "height": null, "method": null, "layer": '
    'null, "predicted": null, "predicted_name": null, "probability": null, "target": null, '
    '"target_name": null, "target_probability": null, "score": null, "true_label": null, '
    '"true_name": null, "correct": null, "boxes": null, "map": null, "overlay": null, "panel": '
    'null, "image": null, "load_s": null, "explain_s": null, "render_s": null, "precision": null, '
    '"error": "empty '
    'file (0 bytes)"}\n'
)
CSV = (
    "path,stem,width,height,method,layer,predicted,predicted_name,probability,target,"
    "target_name,target_probability,score,true_label,true_name,correct,boxes,map,overlay,panel,"
    "image,load_s,explain_s,render_s,precision,error\n"
    '/x/a.png,a,7,5,gradcam,layer4,3,cat,0.5,2,dog,0.25,-1.5,3,cat,True,"[[0, 1, 2, 3]]",'
    "maps/a_gradcam.png,overlays/a_gradcam.jpg,,images/a.png,0.01,0.2,0.003,fp32,\n"
    "/x/b.png,,,,,,,,,,,,,,,,,,,,,,,,,empty file (0 bytes)\n"
)


def test_the_parquet_schema_is_pinned():
    assert [(f.name, str(f.type)) for f in schema()] == SCHEMA


def test_a_finished_run_writes_the_pinned_parquet_jsonl_and_csv(tmp_path):
    writer = RunWriter(tmp_path, {"methods": ["gradcam"]})
    writer.write([Record(dict(ROW))], [Failure("/x/b.png", "empty file (0 bytes)")])
    writer.finish()
    table = pq.read_table(tmp_path / "results.parquet")
    assert [(f.name, str(f.type)) for f in table.schema] == [
        (name, kind.replace("item", "element")) for name, kind in SCHEMA
    ]  # Parquet names a list's values "element"
    assert table.to_pylist()[0] == ROW
    assert (tmp_path / "results.jsonl").read_text() == JSONL
    assert (tmp_path / "results.csv").read_text() == CSV
